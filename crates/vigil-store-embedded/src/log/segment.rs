//! Segments: what every part of the log looks like to a query, and the sealed, immutable form.
//!
//! A sealed segment is two files named by the segment id:
//! - `log/<id>.seg` — the log itself (source of truth): the segment's records, in the same
//!   CRC-checked encoding as the write-ahead file, in zstd-compressed blocks of up to
//!   [`BLOCK_DOCS`] records, so a point read decompresses one small block. Its header names the
//!   first segment id it covers: a merged segment takes the id of the last segment of its run
//!   and supersedes the others.
//! - `index/<id>.idx` — derived and rebuildable from the `.seg` (`vigil reindex`): a sorted term
//!   dictionary (`fst`) mapping each term that occurs in several docs to its postings
//!   (`roaring`); terms that occur once (ids, timestamps, IPs: about a quarter of all terms, and
//!   most of the dictionary's build time) go to a sorted table of `(term, doc)` instead, which
//!   still answers exact, range and prefix lookups by binary search; per-doc columns (time, seq, tenant); per-block time bounds; and
//!   each tenant's last seq and chain hash, so opening the store does not rescan old events.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fst::{IntoStreamer, Streamer};
use memmap2::Mmap;
use roaring::RoaringBitmap;
use vigil_event::Hash;

use crate::error::{EmbeddedError, Result};
use crate::log::record::{self, Record};

/// zstd level of sealed blocks: fast to write (sealing competes with ingest for the CPU), and
/// blocks of 32 similar events still compress several-fold.
const ZSTD_LEVEL: i32 = 1;

/// Records per compressed block: small blocks keep point reads cheap.
pub(crate) const BLOCK_DOCS: u32 = 32;
const SEG_MAGIC: &[u8; 8] = b"VGLSEG01";
/// Magic + first covered segment id.
const SEG_HEADER_LEN: usize = 16;
const SEG_FOOTER_MAGIC: &[u8; 8] = b"VGLSEGF1";
const SEG_FOOTER_LEN: usize = 8 + 4 + 4 + 4 + 8;
const IDX_MAGIC: &[u8; 8] = b"VGLIDX01";
const IDX_FOOTER_MAGIC: &[u8; 8] = b"VGLIDXF1";
const IDX_SECTIONS: usize = 10;
const IDX_FOOTER_LEN: usize = (IDX_SECTIONS + 1) * 8 + 4 + 4 + 8 + 8 + 8 + 4 + 8;

/// The bytes of a term up to its path separator.
pub(crate) fn path_of(term: &[u8]) -> &[u8] {
    let end = term.iter().position(|&b| b == 0).unwrap_or(term.len());
    term.get(..end).unwrap_or_default()
}

/// Sort and filter fields of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DocRef {
    pub time: i64,
    pub seq: u64,
    pub tenant: u32,
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

/// What a query needs from any segment, sealed or not.
pub(crate) trait SegmentView: Send + Sync {
    fn doc_count(&self) -> u32;
    /// Smallest and largest event time in the segment.
    fn time_range(&self) -> Option<(i64, i64)>;
    /// Adds the docs containing `term` to `out`.
    fn lookup(&self, term: &[u8], out: &mut RoaringBitmap);
    /// Adds the docs of every term `t` with `lo <= t < hi` and `keep(t)` to `out`. `lo` and `hi`
    /// share one path.
    fn scan(
        &self,
        lo: &[u8],
        hi: &[u8],
        keep: &mut dyn FnMut(&[u8]) -> bool,
        out: &mut RoaringBitmap,
    );
    fn doc(&self, doc: u32) -> Option<DocRef>;
    /// Doc ranges with their time bounds, when the segment keeps them.
    fn time_blocks(&self) -> Option<&[TimeBlock]> {
        None
    }
    fn tenant_ordinal_of(&self, tenant: &str) -> Option<u32>;
    fn read(&self, doc: u32) -> Result<OwnedRecord>;
}

/// A tenant's position at the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantTail {
    pub name: String,
    pub last_seq: u64,
    pub last_chain: Hash,
}

/// Everything about a segment's index but its terms.
#[derive(Debug)]
pub(crate) struct IndexMeta {
    /// First segment id the `.seg` covers (see the module docs).
    pub first_id: u64,
    pub docs: Vec<DocRef>,
    pub tenants: Vec<TenantTail>,
    pub block_times: Vec<(i64, i64)>,
}

/// The docs of one term, in whatever form the caller has them.
#[derive(Debug)]
pub(crate) enum Docs<'a> {
    Sorted(&'a [u32]),
    Bitmap(&'a RoaringBitmap),
}

/// Feeds every raw record, in doc order, to the sink.
pub(crate) type RecordSource<'a> =
    &'a mut dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;

/// Feeds every `(term, docs)` in ascending term order to the sink.
pub(crate) type TermSource<'a> =
    &'a mut dyn FnMut(&mut dyn FnMut(&[u8], Docs<'_>) -> Result<()>) -> Result<()>;

pub(crate) fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("log").join(format!("{id:020}.seg"))
}

pub(crate) fn idx_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("index").join(format!("{id:020}.idx"))
}

pub(crate) fn wal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("log").join(format!("{id:020}.wal"))
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `p` through a temporary file: complete and fsynced, or absent.
pub(crate) fn write_atomic(
    p: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(p);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(EmbeddedError::io("creating", &tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w).map_err(EmbeddedError::io("writing", &tmp))?;
    let file = w
        .into_inner()
        .map_err(|e| EmbeddedError::io("writing", &tmp)(e.into_error()))?;
    file.sync_all()
        .map_err(EmbeddedError::io("syncing", &tmp))?;
    fs::rename(&tmp, p).map_err(EmbeddedError::io("renaming", p))?;
    if let Some(parent) = p.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(EmbeddedError::io("syncing directory", dir))
}

/// Writes the `.seg` file from raw records in doc order; returns each block's time bounds.
pub(crate) fn write_data(
    path: &Path,
    first_id: u64,
    records: RecordSource<'_>,
) -> Result<Vec<(i64, i64)>> {
    // Compress first (into memory: a segment is bounded), then write atomically.
    let mut out: Vec<u8> = SEG_MAGIC.to_vec();
    out.extend_from_slice(&first_id.to_le_bytes());
    let mut table: Vec<(u64, u32, u32)> = Vec::new();
    let mut block_times = Vec::new();
    let mut block = Vec::new();
    let mut in_block = 0u32;
    let mut bounds: Option<(i64, i64)> = None;
    // One compression context for the whole segment, not one per block.
    let mut compressor =
        zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(EmbeddedError::io("compressing", path))?;
    let mut flush = |block: &mut Vec<u8>,
                     n: &mut u32,
                     bounds: &mut Option<(i64, i64)>,
                     out: &mut Vec<u8>|
     -> Result<()> {
        if *n == 0 {
            return Ok(());
        }
        let compressed = compressor
            .compress(block)
            .map_err(EmbeddedError::io("compressing", path))?;
        table.push((out.len() as u64, compressed.len() as u32, *n));
        out.extend_from_slice(&compressed);
        block_times.push(bounds.take().unwrap_or_default());
        block.clear();
        *n = 0;
        Ok(())
    };
    records(&mut |raw: &[u8]| {
        let (rec, _) = record::decode(raw)
            .map_err(|_| EmbeddedError::corrupt(path, "unreadable record while sealing"))?;
        bounds = Some(match bounds {
            None => (rec.time, rec.time),
            Some((lo, hi)) => (lo.min(rec.time), hi.max(rec.time)),
        });
        block.extend_from_slice(raw);
        in_block += 1;
        if in_block == BLOCK_DOCS {
            flush(&mut block, &mut in_block, &mut bounds, &mut out)?;
        }
        Ok(())
    })?;
    flush(&mut block, &mut in_block, &mut bounds, &mut out)?;
    finish_data(path, out, &table)?;
    Ok(block_times)
}

/// Appends the block table and footer to `out` (header and blocks) and writes the file.
fn finish_data(path: &Path, mut out: Vec<u8>, table: &[(u64, u32, u32)]) -> Result<()> {
    let table_offset = out.len() as u64;
    let mut table_bytes = Vec::with_capacity(table.len() * 16);
    let mut n_docs = 0u32;
    for (off, len, n) in table {
        table_bytes.extend_from_slice(&off.to_le_bytes());
        table_bytes.extend_from_slice(&len.to_le_bytes());
        table_bytes.extend_from_slice(&n.to_le_bytes());
        n_docs += n;
    }
    out.extend_from_slice(&table_bytes);
    out.extend_from_slice(&table_offset.to_le_bytes());
    out.extend_from_slice(&(table.len() as u32).to_le_bytes());
    out.extend_from_slice(&n_docs.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&table_bytes).to_le_bytes());
    out.extend_from_slice(SEG_FOOTER_MAGIC);
    write_atomic(path, |w| w.write_all(&out))
}

/// Writes the `.idx` file.
pub(crate) fn write_index(path: &Path, input: &IndexMeta, terms: TermSource<'_>) -> Result<()> {
    let mut postings: Vec<u8> = Vec::new();
    let mut builder = fst::MapBuilder::memory();
    let mut single_keys: Vec<u8> = Vec::new();
    let mut single_offsets: Vec<u8> = 0u32.to_le_bytes().to_vec();
    let mut single_docs: Vec<u8> = Vec::new();
    terms(&mut |term, docs| {
        let single = match docs {
            Docs::Sorted([one]) => Some(*one),
            Docs::Bitmap(b) if b.len() == 1 => b.min(),
            _ => None,
        };
        if let Some(doc) = single {
            single_keys.extend_from_slice(term);
            let end = u32::try_from(single_keys.len())
                .map_err(|_| EmbeddedError::corrupt(path, "single-term table over 4 GiB"))?;
            single_offsets.extend_from_slice(&end.to_le_bytes());
            single_docs.extend_from_slice(&doc.to_le_bytes());
            return Ok(());
        }
        let at = postings.len() as u64;
        let owned;
        let bitmap = match docs {
            Docs::Bitmap(b) => b,
            Docs::Sorted(many) => {
                owned = RoaringBitmap::from_sorted_iter(many.iter().copied())
                    .map_err(|_| EmbeddedError::corrupt(path, "postings out of order"))?;
                &owned
            }
        };
        bitmap
            .serialize_into(&mut postings)
            .map_err(EmbeddedError::io("encoding postings", path))?;
        builder
            .insert(term, at)
            .map_err(|e| EmbeddedError::corrupt(path, format!("building term dictionary: {e}")))
    })?;
    let fst_bytes = builder
        .into_inner()
        .map_err(|e| EmbeddedError::corrupt(path, format!("building term dictionary: {e}")))?;

    let mut times = Vec::with_capacity(input.docs.len() * 8);
    let mut seqs = Vec::with_capacity(input.docs.len() * 8);
    let mut tenants = Vec::with_capacity(input.docs.len() * 4);
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    for d in &input.docs {
        times.extend_from_slice(&d.time.to_le_bytes());
        seqs.extend_from_slice(&d.seq.to_le_bytes());
        tenants.extend_from_slice(&d.tenant.to_le_bytes());
        min_time = min_time.min(d.time);
        max_time = max_time.max(d.time);
    }
    let mut block_times = Vec::with_capacity(input.block_times.len() * 16);
    for (lo, hi) in &input.block_times {
        block_times.extend_from_slice(&lo.to_le_bytes());
        block_times.extend_from_slice(&hi.to_le_bytes());
    }
    let mut tenant_table = Vec::new();
    for t in &input.tenants {
        tenant_table.push(t.name.len() as u8);
        tenant_table.extend_from_slice(t.name.as_bytes());
        tenant_table.extend_from_slice(&t.last_seq.to_le_bytes());
        tenant_table.extend_from_slice(&t.last_chain);
    }

    let mut out: Vec<u8> = IDX_MAGIC.to_vec();
    let mut offsets = Vec::with_capacity(IDX_SECTIONS + 1);
    for section in [
        &fst_bytes,
        &postings,
        &times,
        &seqs,
        &tenants,
        &block_times,
        &tenant_table,
        &single_keys,
        &single_offsets,
        &single_docs,
    ] {
        offsets.push(out.len() as u64);
        out.extend_from_slice(section);
    }
    offsets.push(out.len() as u64);
    for o in &offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(&(input.docs.len() as u32).to_le_bytes());
    out.extend_from_slice(&BLOCK_DOCS.to_le_bytes());
    out.extend_from_slice(&min_time.to_le_bytes());
    out.extend_from_slice(&max_time.to_le_bytes());
    out.extend_from_slice(&input.first_id.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(IDX_FOOTER_MAGIC);
    write_atomic(path, |w| w.write_all(&out))
}

/// A read-only view of part of a memory map.
#[derive(Debug, Clone)]
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.map.get(self.start..self.end).unwrap_or_default()
    }
}

fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = File::open(path).map_err(EmbeddedError::io("opening", path))?;
    // SAFETY: sealed segment and index files are immutable once renamed into place: vigil
    // never writes to or truncates them (one process owns the data directory, enforced by the
    // lock file). A merge replaces a file by rename, which leaves existing maps on the old inode.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(EmbeddedError::io("mapping", path))?;
    Ok(Arc::new(map))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
}

fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    u64_at(b, at).map(|v| v as i64)
}

/// One compressed block of a `.seg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    offset: u64,
    len: u32,
    /// Doc id of the block's first record.
    first_doc: u32,
    docs: u32,
}

/// The log part of a sealed segment (`.seg`), memory-mapped.
#[derive(Debug)]
pub(crate) struct RawSegment {
    path: PathBuf,
    data: Arc<Mmap>,
    pub first_id: u64,
    blocks: Vec<Block>,
}

impl RawSegment {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let data = map_file(path)?;
        let (first_id, blocks) = read_seg_footer(path, &data)?;
        Ok(Self {
            path: path.to_owned(),
            data,
            first_id,
            blocks,
        })
    }

    pub(crate) fn doc_count(&self) -> u32 {
        self.blocks.last().map_or(0, |b| b.first_doc + b.docs)
    }

    /// Index of the block holding `doc`.
    pub(crate) fn block_of(&self, doc: u32) -> usize {
        self.blocks.partition_point(|b| b.first_doc + b.docs <= doc)
    }

    fn compressed(&self, b: &Block) -> Result<&[u8]> {
        self.data
            .get(b.offset as usize..b.offset as usize + b.len as usize)
            .ok_or_else(|| EmbeddedError::corrupt(&self.path, "block out of range"))
    }

    /// Decompresses block `b` (its raw records).
    fn block(&self, b: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| EmbeddedError::corrupt(&self.path, format!("block {b}: {e}")))?;
        self.block_into(b, &mut dctx, &mut out)?;
        Ok(out)
    }

    /// Decompresses block `b` into `out` (cleared first) with `dctx`, reusing both.
    fn block_into(
        &self,
        b: usize,
        dctx: &mut zstd::bulk::Decompressor<'_>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let block = self
            .blocks
            .get(b)
            .ok_or_else(|| EmbeddedError::corrupt(&self.path, "block out of range"))?;
        let compressed = self.compressed(block)?;
        // Records are at most MAX_PAYLOAD each: a frame claiming more is corrupt. The frame
        // header states its size (blocks are compressed whole), so the buffer is sized exactly
        // rather than to that bound, which would map and unmap gigabytes per block.
        let bound = block.docs as usize * (record::MAX_PAYLOAD + record::HEADER_LEN);
        let size = match zstd::zstd_safe::get_frame_content_size(compressed) {
            Ok(Some(n)) => usize::try_from(n).unwrap_or(usize::MAX),
            _ => bound,
        };
        if size > bound {
            return Err(EmbeddedError::corrupt(
                &self.path,
                format!("block {b}: claims {size} bytes for {} records", block.docs),
            ));
        }
        out.clear();
        out.reserve(size);
        dctx.decompress_to_buffer(compressed, out)
            .map_err(|e| EmbeddedError::corrupt(&self.path, format!("block {b}: {e}")))?;
        Ok(())
    }

    /// Calls `f` with every record in doc order (for reindex and verify).
    pub(crate) fn for_each_record(
        &self,
        mut f: impl FnMut(u32, Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut doc = 0u32;
        let mut dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| EmbeddedError::corrupt(&self.path, format!("decompressor: {e}")))?;
        let mut block = Vec::new();
        for b in 0..self.blocks.len() {
            self.block_into(b, &mut dctx, &mut block)?;
            let mut pos = 0;
            while let Some(rest) = block.get(pos..).filter(|r| !r.is_empty()) {
                let (rec, n) = record::decode(rest).map_err(|_| {
                    EmbeddedError::corrupt(&self.path, format!("record {doc} unreadable"))
                })?;
                f(doc, rec)?;
                doc += 1;
                pos += n;
            }
        }
        Ok(())
    }

    fn read(&self, doc: u32) -> Result<OwnedRecord> {
        let b = self.block_of(doc);
        let first = self.blocks.get(b).map(|b| b.first_doc).unwrap_or_default();
        let block = self.block(b)?;
        let mut pos = 0;
        for _ in first..doc {
            let (_, n) = record::decode(block.get(pos..).unwrap_or_default()).map_err(|_| {
                EmbeddedError::corrupt(&self.path, format!("record in block {b} unreadable"))
            })?;
            pos += n;
        }
        let (rec, _) = record::decode(block.get(pos..).unwrap_or_default())
            .map_err(|_| EmbeddedError::corrupt(&self.path, format!("record {doc} unreadable")))?;
        Ok(OwnedRecord::from(&rec))
    }
}

/// Doc range and time bounds of one block, for time filters that take or skip whole blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeBlock {
    pub start: u32,
    pub end: u32,
    pub min: i64,
    pub max: i64,
}

/// A sealed segment: its log and its index, memory-mapped.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub id: u64,
    pub raw: RawSegment,
    idx: Arc<Mmap>,
    fst: fst::Map<MapSlice>,
    sections: [(usize, usize); IDX_SECTIONS],
    n_docs: u32,
    time_range: Option<(i64, i64)>,
    time_blocks: Vec<TimeBlock>,
    pub tenants: Vec<TenantTail>,
}

const S_FST: usize = 0;
const S_POSTINGS: usize = 1;
const S_TIMES: usize = 2;
const S_SEQS: usize = 3;
const S_TENANTS: usize = 4;
const S_BLOCK_TIMES: usize = 5;
const S_TENANT_TABLE: usize = 6;
const S_SINGLE_KEYS: usize = 7;
const S_SINGLE_OFFSETS: usize = 8;
const S_SINGLE_DOCS: usize = 9;

impl Sealed {
    /// Opens a sealed segment: checks both files' footers and checksums, and that the index was
    /// built from this very `.seg`.
    pub(crate) fn open(dir: &Path, id: u64) -> Result<Self> {
        let raw = RawSegment::open(&seg_path(dir, id))?;
        let idx_path = idx_path(dir, id);
        let idx = map_file(&idx_path)?;
        let bad = |d: &str| EmbeddedError::corrupt(&idx_path, d.to_owned());
        let len = idx.len();
        if len < IDX_MAGIC.len() + IDX_FOOTER_LEN || idx.get(..8) != Some(IDX_MAGIC.as_slice()) {
            return Err(bad("not an index file"));
        }
        let footer = idx
            .get(len - IDX_FOOTER_LEN..)
            .ok_or_else(|| bad("short footer"))?;
        if footer.get(IDX_FOOTER_LEN - 8..) != Some(IDX_FOOTER_MAGIC.as_slice()) {
            return Err(bad("bad footer magic"));
        }
        let body = idx.get(..len - 12).ok_or_else(|| bad("short file"))?;
        if u32_at(footer, IDX_FOOTER_LEN - 12) != Some(crc32fast::hash(body)) {
            return Err(bad("checksum mismatch"));
        }
        let mut offsets = [0usize; IDX_SECTIONS + 1];
        for (i, o) in offsets.iter_mut().enumerate() {
            *o = u64_at(footer, i * 8).ok_or_else(|| bad("short footer"))? as usize;
        }
        let mut sections = [(0usize, 0usize); IDX_SECTIONS];
        for (i, s) in sections.iter_mut().enumerate() {
            let (a, b) = (
                offsets.get(i).copied().unwrap_or(0),
                offsets.get(i + 1).copied().unwrap_or(0),
            );
            if a > b || b > len {
                return Err(bad("section out of range"));
            }
            *s = (a, b);
        }
        let base = (IDX_SECTIONS + 1) * 8;
        let n_docs = u32_at(footer, base).ok_or_else(|| bad("short footer"))?;
        let min_time = i64_at(footer, base + 8).ok_or_else(|| bad("short footer"))?;
        let max_time = i64_at(footer, base + 16).ok_or_else(|| bad("short footer"))?;
        let first_id = u64_at(footer, base + 24).ok_or_else(|| bad("short footer"))?;
        let (fst_start, fst_end) = sections.get(S_FST).copied().unwrap_or((0, 0));
        let fst = fst::Map::new(MapSlice {
            map: idx.clone(),
            start: fst_start,
            end: fst_end,
        })
        .map_err(|e| bad(&format!("term dictionary: {e}")))?;
        let mut seg = Self {
            id,
            raw,
            idx,
            fst,
            sections,
            n_docs,
            time_range: (n_docs > 0).then_some((min_time, max_time)),
            time_blocks: Vec::new(),
            tenants: Vec::new(),
        };
        if seg.raw.doc_count() != n_docs
            || seg.raw.first_id != first_id
            || seg.section(S_TIMES).len() != n_docs as usize * 8
            || seg.section(S_BLOCK_TIMES).len() != seg.raw.blocks.len() * 16
            || seg.section(S_SINGLE_OFFSETS).len() != seg.section(S_SINGLE_DOCS).len() + 4
        {
            return Err(bad("index does not match its segment"));
        }
        seg.tenants =
            parse_tenants(seg.section(S_TENANT_TABLE)).ok_or_else(|| bad("tenant table"))?;
        let times = seg.section(S_BLOCK_TIMES);
        seg.time_blocks = seg
            .raw
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| TimeBlock {
                start: b.first_doc,
                end: b.first_doc + b.docs,
                min: i64_at(times, i * 16).unwrap_or(i64::MIN),
                max: i64_at(times, i * 16 + 8).unwrap_or(i64::MAX),
            })
            .collect();
        Ok(seg)
    }

    fn section(&self, i: usize) -> &[u8] {
        let (a, b) = self.sections.get(i).copied().unwrap_or((0, 0));
        self.idx.get(a..b).unwrap_or_default()
    }

    /// Adds the postings at `offset` of the postings section.
    fn add_postings(&self, offset: u64, out: &mut RoaringBitmap) {
        if let Some(bytes) = self.section(S_POSTINGS).get(offset as usize..)
            && let Ok(b) = RoaringBitmap::deserialize_unchecked_from(bytes)
        {
            *out |= b;
        }
    }

    fn single_count(&self) -> usize {
        self.section(S_SINGLE_DOCS).len() / 4
    }

    fn single_key(&self, i: usize) -> &[u8] {
        let offsets = self.section(S_SINGLE_OFFSETS);
        match (u32_at(offsets, i * 4), u32_at(offsets, i * 4 + 4)) {
            (Some(a), Some(b)) => self
                .section(S_SINGLE_KEYS)
                .get(a as usize..b as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    fn single_doc(&self, i: usize) -> Option<u32> {
        u32_at(self.section(S_SINGLE_DOCS), i * 4)
    }

    /// Index of the first single-doc term `>= key`.
    fn single_lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.single_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.single_key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub(crate) fn doc_count(&self) -> u32 {
        self.n_docs
    }
}

/// Merges a run of adjacent sealed segments (oldest first) into one that takes the id of the
/// last: compressed blocks are copied as they are, term dictionaries unioned with doc ids
/// shifted, columns concatenated. No record is re-parsed.
pub(crate) fn merge(dir: &Path, run: &[Arc<Sealed>]) -> Result<Sealed> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Err(EmbeddedError::corrupt(dir, "empty merge"));
    };
    let id = last.id;
    let seg_path = seg_path(dir, id);
    let first_id = first.raw.first_id;

    // Log: copy every block, shifting offsets and doc ids.
    let mut out: Vec<u8> = SEG_MAGIC.to_vec();
    out.extend_from_slice(&first_id.to_le_bytes());
    let mut table = Vec::new();
    let mut block_times = Vec::new();
    let mut bases = Vec::with_capacity(run.len());
    let mut base = 0u32;
    for seg in run {
        bases.push(base);
        for (b, t) in seg.raw.blocks.iter().zip(&seg.time_blocks) {
            let bytes = seg.raw.compressed(b)?;
            table.push((out.len() as u64, b.len, b.docs));
            out.extend_from_slice(bytes);
            block_times.push((t.min, t.max));
        }
        base = base.checked_add(seg.n_docs).ok_or_else(|| {
            EmbeddedError::corrupt(dir, "merged segment would exceed 2^32 events")
        })?;
    }
    finish_data(&tmp_merge_path(&seg_path), out, &table)?;

    // Columns and tenants, remapped to the union of tenant names.
    let mut tenants: Vec<TenantTail> = Vec::new();
    let mut remaps: Vec<Vec<u32>> = Vec::with_capacity(run.len());
    for seg in run {
        let mut remap = Vec::with_capacity(seg.tenants.len());
        for t in &seg.tenants {
            match tenants.iter().position(|x| x.name == t.name) {
                Some(i) => {
                    if let Some(x) = tenants.get_mut(i)
                        && t.last_seq > x.last_seq
                    {
                        *x = t.clone();
                    }
                    remap.push(i as u32);
                }
                None => {
                    tenants.push(t.clone());
                    remap.push((tenants.len() - 1) as u32);
                }
            }
        }
        remaps.push(remap);
    }
    let mut docs = Vec::with_capacity(base as usize);
    for (seg, remap) in run.iter().zip(&remaps) {
        for d in 0..seg.n_docs {
            let mut r = seg
                .doc(d)
                .ok_or_else(|| EmbeddedError::corrupt(dir, "doc column out of range"))?;
            r.tenant = remap.get(r.tenant as usize).copied().unwrap_or(r.tenant);
            docs.push(r);
        }
    }
    let meta = IndexMeta {
        first_id,
        docs,
        tenants,
        block_times,
    };

    // Terms: a streaming k-way merge of every segment's dictionary and single-doc table.
    let idx_path = idx_path(dir, id);
    // A run has a handful of segments: a linear scan for the smallest current term beats a heap
    // and needs no allocation per term.
    let mut cursors: Vec<TermCursor<'_>> = run.iter().map(|s| TermCursor::new(s)).collect();
    for c in &mut cursors {
        c.advance();
    }
    write_index(&tmp_merge_path(&idx_path), &meta, &mut |sink| {
        let mut docs = RoaringBitmap::new();
        let mut term = Vec::new();
        while let Some(min) = cursors.iter().filter_map(|c| c.term()).min() {
            term.clear();
            term.extend_from_slice(min);
            docs.clear();
            for (c, &shift) in cursors.iter_mut().zip(&bases) {
                if c.term() == Some(term.as_slice()) {
                    c.add_current(shift, &mut docs);
                    c.advance();
                }
            }
            sink(&term, Docs::Bitmap(&docs))?;
        }
        Ok(())
    })?;
    // Index first: a crash between the renames leaves the old .seg with a new .idx, which
    // fails the first-id check and is rebuilt from the log.
    rename_into_place(&tmp_merge_path(&idx_path), &idx_path)?;
    rename_into_place(&tmp_merge_path(&seg_path), &seg_path)?;
    Sealed::open(dir, id)
}

/// Walks one segment's terms in order: its dictionary and its single-doc table interleaved.
struct TermCursor<'a> {
    seg: &'a Sealed,
    stream: fst::map::Stream<'a>,
    /// Next dictionary entry not yet returned (key buffer reused).
    multi: Vec<u8>,
    multi_value: Option<u64>,
    next_single: usize,
    /// The current term (key buffer reused) and where its docs are.
    term: Vec<u8>,
    current: Option<Current>,
}

#[derive(Debug, Clone, Copy)]
enum Current {
    Postings(u64),
    Single(u32),
}

impl<'a> TermCursor<'a> {
    fn new(seg: &'a Sealed) -> Self {
        let mut c = Self {
            seg,
            stream: seg.fst.stream(),
            multi: Vec::new(),
            multi_value: None,
            next_single: 0,
            term: Vec::new(),
            current: None,
        };
        c.pull_multi();
        c
    }

    fn pull_multi(&mut self) {
        self.multi.clear();
        self.multi_value = self.stream.next().map(|(k, v)| {
            self.multi.extend_from_slice(k);
            v
        });
    }

    /// The current term; `None` once exhausted.
    fn term(&self) -> Option<&[u8]> {
        self.current.map(|_| self.term.as_slice())
    }

    /// Moves to the next term.
    fn advance(&mut self) {
        let single = (self.next_single < self.seg.single_count())
            .then(|| self.seg.single_key(self.next_single));
        let take_single = match (self.multi_value, single) {
            (Some(_), Some(single)) => single < self.multi.as_slice(),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        self.term.clear();
        if take_single {
            self.term.extend_from_slice(single.unwrap_or_default());
            self.current = self.seg.single_doc(self.next_single).map(Current::Single);
            self.next_single += 1;
        } else if let Some(offset) = self.multi_value {
            std::mem::swap(&mut self.term, &mut self.multi);
            self.current = Some(Current::Postings(offset));
            self.pull_multi();
        } else {
            self.current = None;
        }
    }

    /// Adds the current term's docs, shifted by `shift`, to `out`.
    fn add_current(&self, shift: u32, out: &mut RoaringBitmap) {
        match self.current {
            Some(Current::Postings(offset)) => {
                let mut part = RoaringBitmap::new();
                self.seg.add_postings(offset, &mut part);
                if shift == 0 {
                    *out |= part;
                } else {
                    out.extend(part.iter().map(|d| d + shift));
                }
            }
            Some(Current::Single(doc)) => {
                out.insert(doc + shift);
            }
            None => {}
        }
    }
}

fn tmp_merge_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".merge");
    PathBuf::from(s)
}

fn rename_into_place(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(EmbeddedError::io("renaming", to))?;
    match to.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn read_seg_footer(path: &Path, data: &[u8]) -> Result<(u64, Vec<Block>)> {
    let bad = |d: &str| EmbeddedError::corrupt(path, d.to_owned());
    let len = data.len();
    if len < SEG_HEADER_LEN + SEG_FOOTER_LEN || data.get(..8) != Some(SEG_MAGIC.as_slice()) {
        return Err(bad("not a segment file"));
    }
    let first_id = u64_at(data, 8).ok_or_else(|| bad("short header"))?;
    let footer = data
        .get(len - SEG_FOOTER_LEN..)
        .ok_or_else(|| bad("short footer"))?;
    if footer.get(SEG_FOOTER_LEN - 8..) != Some(SEG_FOOTER_MAGIC.as_slice()) {
        return Err(bad("bad footer magic"));
    }
    let table_offset = u64_at(footer, 0).ok_or_else(|| bad("short footer"))? as usize;
    let n_blocks = u32_at(footer, 8).ok_or_else(|| bad("short footer"))? as usize;
    let crc = u32_at(footer, 16).ok_or_else(|| bad("short footer"))?;
    let table = data
        .get(table_offset..table_offset + n_blocks * 16)
        .filter(|_| table_offset + n_blocks * 16 == len - SEG_FOOTER_LEN)
        .ok_or_else(|| bad("block table out of range"))?;
    if crc32fast::hash(table) != crc {
        return Err(bad("block table checksum mismatch"));
    }
    let mut blocks = Vec::with_capacity(n_blocks);
    let mut first_doc = 0u32;
    for i in 0..n_blocks {
        let offset = u64_at(table, i * 16).ok_or_else(|| bad("block table"))?;
        let clen = u32_at(table, i * 16 + 8).ok_or_else(|| bad("block table"))?;
        let docs = u32_at(table, i * 16 + 12).ok_or_else(|| bad("block table"))?;
        if (offset as usize) < SEG_HEADER_LEN
            || offset as usize + clen as usize > table_offset
            || docs == 0
        {
            return Err(bad("block out of range"));
        }
        blocks.push(Block {
            offset,
            len: clen,
            first_doc,
            docs,
        });
        first_doc = first_doc
            .checked_add(docs)
            .ok_or_else(|| bad("too many docs"))?;
    }
    Ok((first_id, blocks))
}

fn parse_tenants(mut b: &[u8]) -> Option<Vec<TenantTail>> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = b.split_first() {
        let n = n as usize;
        let name = std::str::from_utf8(rest.get(..n)?).ok()?.to_owned();
        let last_seq = u64_at(rest, n)?;
        let last_chain: Hash = rest.get(n + 8..n + 40)?.try_into().ok()?;
        out.push(TenantTail {
            name,
            last_seq,
            last_chain,
        });
        b = rest.get(n + 40..)?;
    }
    Some(out)
}

impl SegmentView for Sealed {
    fn doc_count(&self) -> u32 {
        self.n_docs
    }

    fn time_range(&self) -> Option<(i64, i64)> {
        self.time_range
    }

    fn lookup(&self, term: &[u8], out: &mut RoaringBitmap) {
        if let Some(v) = self.fst.get(term) {
            self.add_postings(v, out);
            return;
        }
        let i = self.single_lower_bound(term);
        if i < self.single_count()
            && self.single_key(i) == term
            && let Some(doc) = self.single_doc(i)
        {
            out.insert(doc);
        }
    }

    fn scan(
        &self,
        lo: &[u8],
        hi: &[u8],
        keep: &mut dyn FnMut(&[u8]) -> bool,
        out: &mut RoaringBitmap,
    ) {
        let mut stream = self.fst.range().ge(lo).lt(hi).into_stream();
        while let Some((term, v)) = stream.next() {
            if keep(term) {
                self.add_postings(v, out);
            }
        }
        for i in self.single_lower_bound(lo)..self.single_count() {
            let term = self.single_key(i);
            if term >= hi {
                break;
            }
            if keep(term)
                && let Some(doc) = self.single_doc(i)
            {
                out.insert(doc);
            }
        }
    }

    fn doc(&self, doc: u32) -> Option<DocRef> {
        let i = doc as usize;
        Some(DocRef {
            time: i64_at(self.section(S_TIMES), i * 8)?,
            seq: u64_at(self.section(S_SEQS), i * 8)?,
            tenant: u32_at(self.section(S_TENANTS), i * 4)?,
        })
    }

    fn tenant_ordinal_of(&self, tenant: &str) -> Option<u32> {
        self.tenants
            .iter()
            .position(|t| t.name == tenant)
            .map(|i| i as u32)
    }

    fn time_blocks(&self) -> Option<&[TimeBlock]> {
        Some(&self.time_blocks)
    }

    fn read(&self, doc: u32) -> Result<OwnedRecord> {
        self.raw.read(doc)
    }
}
