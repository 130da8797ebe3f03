//! The log record: one event as it sits in a segment, length-prefixed and CRC-checked.
//!
//! ```text
//! record  = len: u32 LE | crc32(payload): u32 LE | payload (len bytes)
//! payload = version: u8 (1) | tenant_len: u8 | tenant | seq: u64 LE | time: i64 LE (ns)
//!         | chain: [u8; 32] | digest: [u8; 32] | id_len: u8 | id | canonical JSON (rest)
//! ```
//! The fixed fields duplicate what the canonical JSON says so recovery, dedupe and sealing can
//! work without parsing JSON.
//!
//! In a write-ahead file every commit group ends with a **commit marker**, a record whose payload
//! is `version: u8 (2) | records: u32 LE`. Replay applies only groups closed by their marker, so
//! a group whose write or fsync did not complete — never acknowledged — leaves no event behind,
//! even when some of its pages reached the disk.

use vigil_event::Hash;

pub(crate) const HEADER_LEN: usize = 8;
const VERSION: u8 = 1;
const COMMIT_VERSION: u8 = 2;
/// Largest payload accepted when reading: anything longer is a torn or corrupt length.
pub(crate) const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// A decoded record borrowing from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub tenant: &'a str,
    pub seq: u64,
    pub time: i64,
    pub chain: Hash,
    pub digest: Hash,
    pub id: &'a str,
    pub canonical: &'a [u8],
}

/// A record read back, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedRecord {
    pub tenant: String,
    pub seq: u64,
    pub time: i64,
    pub chain: Hash,
    pub digest: Hash,
    pub id: String,
    pub canonical: Vec<u8>,
}

impl From<&Record<'_>> for OwnedRecord {
    fn from(r: &Record<'_>) -> Self {
        Self {
            tenant: r.tenant.to_owned(),
            seq: r.seq,
            time: r.time,
            chain: r.chain,
            digest: r.digest,
            id: r.id.to_owned(),
            canonical: r.canonical.to_vec(),
        }
    }
}

/// Appends the encoded record to `out`.
pub(crate) fn encode(r: &Record<'_>, out: &mut Vec<u8>) {
    let payload_len = 1 + 1 + r.tenant.len() + 8 + 8 + 32 + 32 + 1 + r.id.len() + r.canonical.len();
    out.reserve(HEADER_LEN + payload_len);
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.push(VERSION);
    out.push(r.tenant.len() as u8);
    out.extend_from_slice(r.tenant.as_bytes());
    out.extend_from_slice(&r.seq.to_le_bytes());
    out.extend_from_slice(&r.time.to_le_bytes());
    out.extend_from_slice(&r.chain);
    out.extend_from_slice(&r.digest);
    out.push(r.id.len() as u8);
    out.extend_from_slice(r.id.as_bytes());
    out.extend_from_slice(r.canonical);
    let crc = crc32fast::hash(out.get(start + HEADER_LEN..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Appends a commit marker closing a group of `records` records.
pub(crate) fn encode_commit(records: u32, out: &mut Vec<u8>) {
    let mut payload = [0u8; 5];
    payload[0] = COMMIT_VERSION;
    payload[1..].copy_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// One entry of a write-ahead file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    Event(Record<'a>),
    /// Closes the group of the preceding `records` events.
    Commit {
        records: u32,
    },
}

/// Decodes the entry at the start of `buf`; returns it and its encoded length.
pub(crate) fn decode_entry(buf: &[u8]) -> Result<(Entry<'_>, usize), DecodeError> {
    let header = buf.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
    let len = u32_at(header, 0) as usize;
    if len == 5 {
        let payload = buf
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(DecodeError::Truncated)?;
        if payload.first() == Some(&COMMIT_VERSION) {
            if crc32fast::hash(payload) != u32_at(header, 4) {
                return Err(DecodeError::Corrupt("commit marker checksum mismatch"));
            }
            return Ok((
                Entry::Commit {
                    records: u32_at(payload, 1),
                },
                HEADER_LEN + len,
            ));
        }
    }
    decode(buf).map(|(r, n)| (Entry::Event(r), n))
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the header or the declared length: a torn write at the end of a log.
    Truncated,
    /// The checksum or structure is wrong.
    Corrupt(&'static str),
}

/// Decodes the record at the start of `buf`; returns it and its total encoded length.
pub(crate) fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    let header = buf.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
    let len = u32_at(header, 0) as usize;
    let crc = u32_at(header, 4);
    if len > MAX_PAYLOAD || len == 0 {
        return Err(DecodeError::Corrupt("record length out of range"));
    }
    let payload = buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(DecodeError::Truncated)?;
    if crc32fast::hash(payload) != crc {
        return Err(DecodeError::Corrupt("record checksum mismatch"));
    }
    let mut c = Cursor {
        buf: payload,
        pos: 0,
    };
    if c.u8()? != VERSION {
        return Err(DecodeError::Corrupt("unknown record version"));
    }
    let tenant_len = c.u8()? as usize;
    let tenant = c.str(tenant_len)?;
    let seq = u64::from_le_bytes(c.array()?);
    let time = i64::from_le_bytes(c.array()?);
    let chain = c.array()?;
    let digest = c.array()?;
    let id_len = c.u8()? as usize;
    let id = c.str(id_len)?;
    let canonical = c
        .buf
        .get(c.pos..)
        .ok_or(DecodeError::Corrupt("record too short"))?;
    Ok((
        Record {
            tenant,
            seq,
            time,
            chain,
            digest,
            id,
            canonical,
        },
        HEADER_LEN + len,
    ))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(DecodeError::Corrupt("record too short"))?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn str(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| DecodeError::Corrupt("record text is not utf-8"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> Record<'static> {
        Record {
            tenant: "acme",
            seq: 42,
            time: -5,
            chain: [7; 32],
            digest: [9; 32],
            id: "evt-1",
            canonical: br#"{"type":"x"}"#,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        let (r, n) = decode(&buf).unwrap();
        assert_eq!(r, sample());
        assert_eq!(n, buf.len());
    }

    #[test]
    fn every_truncation_is_detected() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]).unwrap_err(),
                DecodeError::Truncated,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn commit_markers_round_trip_and_are_not_events() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        let first = buf.len();
        encode_commit(1, &mut buf);
        assert_eq!(decode_entry(&buf).unwrap().0, Entry::Event(sample()));
        let (entry, n) = decode_entry(&buf[first..]).unwrap();
        assert_eq!(entry, Entry::Commit { records: 1 });
        assert_eq!(first + n, buf.len());
        assert!(
            decode(&buf[first..]).is_err(),
            "a marker is not an event record"
        );
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&bad).is_err() || decode(&bad).unwrap().0 != sample(),
                "flip at {i}"
            );
        }
    }
}
