//! Reading a data directory's log exactly as it is on disk, for `vigil verify`.
//!
//! Nothing is recovered, truncated or rebuilt: the scan takes the directory lock (so no server
//! writes meanwhile), walks the segments in log order and hands every event, with the chain
//! hash stored beside it, to a [`LogVisitor`]. Damage (a checksum mismatch, an unreadable block)
//! is reported and the scan goes on with the next segment, so one bad spot does not hide the
//! state of the rest of the log.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use vigil_event::Hash;
use vigil_store::StoredCheckpoint;

use crate::error::Result;
use crate::log::segment::{self, RawSegment};
use crate::log::wal;
use crate::recovery::{list_segments, lock_dir};
use crate::trees;

/// One event as stored.
#[derive(Debug, Clone, Copy)]
pub struct LogEvent<'a> {
    pub tenant: &'a str,
    pub seq: u64,
    /// The chain hash stored with the event.
    pub chain: &'a Hash,
    /// The event's canonical bytes (its Merkle leaf is their RFC 6962 leaf hash).
    pub canonical: &'a [u8],
}

/// Receives the log, in order: each tenant's events in the order they are stored.
pub trait LogVisitor {
    fn event(&mut self, event: LogEvent<'_>);
    /// A part of the log could not be read; `message` names the file and offset.
    fn damaged(&mut self, message: String);
    /// `bytes` more of the log's files were read.
    fn progress(&mut self, bytes: u64);
}

/// What a scan covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    pub segments: u64,
    pub events: u64,
    pub bytes: u64,
    /// Bytes at the end of the newest write-ahead file that no commit marker closes: a write
    /// interrupted by a crash, never acknowledged (the next start removes them).
    pub unacknowledged_bytes: u64,
}

/// The log's files in order: `(id, sealed)`; segments a merge superseded are left out, as
/// opening the store would leave them out.
fn segments_in_order(data_dir: &Path) -> Result<Vec<(u64, bool)>> {
    let (sealed, wals, _) = list_segments(&data_dir.join("log"))?;
    let mut ranges = Vec::new();
    for &id in &sealed {
        // An unreadable footer is reported when the segment itself is read.
        let first = RawSegment::open(&segment::seg_path(data_dir, id)).map_or(id, |s| s.first_id);
        ranges.push((first, id));
    }
    let covered_by_other = |id: u64, own: Option<u64>| {
        ranges
            .iter()
            .any(|&(first, last)| Some(last) != own && (first..=last).contains(&id))
    };
    let mut order: Vec<(u64, bool)> = sealed
        .iter()
        .filter(|&&id| !covered_by_other(id, Some(id)))
        .map(|&id| (id, true))
        .collect();
    order.extend(
        wals.iter()
            .filter(|&&id| !covered_by_other(id, None))
            .map(|&id| (id, false)),
    );
    order.sort_unstable();
    Ok(order)
}

/// Total size of the log's files, for a progress bar.
pub fn log_bytes(data_dir: &Path) -> Result<u64> {
    let mut total = 0;
    for (id, sealed) in segments_in_order(data_dir)? {
        let path = if sealed {
            segment::seg_path(data_dir, id)
        } else {
            wal::wal_path(data_dir, id)
        };
        total += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    }
    Ok(total)
}

/// Reads the whole log of a data directory no process has open. Fails only when the directory
/// cannot be read at all; damage inside it goes to [`LogVisitor::damaged`].
pub fn scan_log(data_dir: &Path, visitor: &mut impl LogVisitor) -> Result<ScanSummary> {
    let _lock = lock_dir(data_dir)?;
    let order = segments_in_order(data_dir)?;
    let newest_wal = order.iter().rev().find(|(_, s)| !s).map(|&(id, _)| id);
    let mut summary = ScanSummary::default();
    for (id, sealed) in order {
        summary.segments += 1;
        if sealed {
            let path = segment::seg_path(data_dir, id);
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let read = RawSegment::open(&path).and_then(|seg| {
                seg.for_each_record(|_, rec| {
                    summary.events += 1;
                    visitor.event(LogEvent {
                        tenant: rec.tenant,
                        seq: rec.seq,
                        chain: &rec.chain,
                        canonical: rec.canonical,
                    });
                    Ok(())
                })
            });
            if let Err(e) = read {
                visitor.damaged(format!("{e}; the rest of this segment is unreadable"));
            }
            summary.bytes += bytes;
            visitor.progress(bytes);
        } else {
            let path = wal::wal_path(data_dir, id);
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let replay = wal::replay(&path, |_, _, rec| {
                summary.events += 1;
                visitor.event(LogEvent {
                    tenant: rec.tenant,
                    seq: rec.seq,
                    chain: &rec.chain,
                    canonical: rec.canonical,
                });
                Ok(())
            });
            match replay {
                Ok(r) if r.dropped > 0 && Some(id) == newest_wal => {
                    summary.unacknowledged_bytes = r.dropped;
                }
                Ok(r) if r.dropped > 0 => visitor.damaged(format!(
                    "{}: {} damaged bytes after offset {} in a completed log",
                    path.display(),
                    r.dropped,
                    r.valid_len
                )),
                Ok(_) => {}
                Err(e) => visitor.damaged(format!("{e}; the rest of this log is unreadable")),
            }
            summary.bytes += bytes;
            visitor.progress(bytes);
        }
    }
    Ok(summary)
}

/// Every signed checkpoint kept in a data directory, by tenant, smallest size first.
pub fn checkpoints(data_dir: &Path) -> Result<BTreeMap<String, Vec<StoredCheckpoint>>> {
    trees::read_all_checkpoints(data_dir)
}
