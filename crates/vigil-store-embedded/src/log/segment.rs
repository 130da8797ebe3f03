//! The sealed segment *file* (`log/<id>.seg`): the log itself, the source of truth, once a
//! segment is sealed.
//!
//! ```text
//! seg    = magic "VGLSEG01" | first_id: u64 LE | block* | table | footer
//! block  = zstd frame of up to BLOCK_DOCS records, in the write-ahead file's encoding
//! table  = (offset: u64 LE | len: u32 LE | docs: u32 LE)* , one per block
//! footer = table_offset: u64 LE | blocks: u32 LE | docs: u32 LE | crc32(table): u32 LE
//!        | magic "VGLSEGF1"
//! ```
//!
//! Records keep the same CRC-checked encoding as in the write-ahead file, in zstd-compressed
//! blocks of up to [`BLOCK_DOCS`] records, so a point read decompresses one small block. The
//! header names the first segment id the file covers: a merged segment takes the id of the
//! last segment of its run and supersedes the others. The index built over it is
//! [`crate::index::sealed`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{EmbeddedError, Result};
use crate::fsync::write_atomic;
use crate::log::record::{self, OwnedRecord, Record};

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

/// Feeds every raw record, in doc order, to the sink.
pub(crate) type RecordSource<'a> =
    &'a mut dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;

pub(crate) fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("log").join(format!("{id:020}.seg"))
}

/// The start of a `.seg`: magic and the first segment id it covers; blocks follow.
pub(crate) fn header(first_id: u64) -> Vec<u8> {
    let mut out: Vec<u8> = SEG_MAGIC.to_vec();
    out.extend_from_slice(&first_id.to_le_bytes());
    out
}

/// Writes the `.seg` file from raw records in doc order; returns each block's time bounds.
pub(crate) fn write_data(
    path: &Path,
    first_id: u64,
    records: RecordSource<'_>,
) -> Result<Vec<(i64, i64)>> {
    // Compress first (into memory: a segment is bounded), then write atomically.
    let mut out = header(first_id);
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
pub(crate) fn finish_data(path: &Path, mut out: Vec<u8>, table: &[(u64, u32, u32)]) -> Result<()> {
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

pub(crate) fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = File::open(path).map_err(EmbeddedError::io("opening", path))?;
    // SAFETY: sealed segment and index files are immutable once renamed into place: vigil
    // never writes to or truncates them (one process owns the data directory, enforced by the
    // lock file). A merge replaces a file by rename, which leaves existing maps on the old inode.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(EmbeddedError::io("mapping", path))?;
    Ok(Arc::new(map))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
}

pub(crate) fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    u64_at(b, at).map(|v| v as i64)
}

/// One compressed block of a `.seg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    offset: u64,
    pub len: u32,
    /// Doc id of the block's first record.
    pub first_doc: u32,
    pub docs: u32,
}

/// The log part of a sealed segment (`.seg`), memory-mapped.
#[derive(Debug)]
pub(crate) struct RawSegment {
    path: PathBuf,
    data: Arc<Mmap>,
    pub first_id: u64,
    pub blocks: Vec<Block>,
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

    pub(crate) fn compressed(&self, b: &Block) -> Result<&[u8]> {
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

    pub(crate) fn read(&self, doc: u32) -> Result<OwnedRecord> {
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
