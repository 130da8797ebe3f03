//! The index of a sealed segment (`index/<id>.idx`): immutable, memory-mapped, derived.
//!
//! Rebuildable from the segment's `.seg` ([`crate::log::segment`], `vigil reindex`): a sorted
//! term dictionary (`fst`) mapping each term that occurs in several docs to its postings
//! (`roaring`); terms that occur once (ids, timestamps, IPs: about a quarter of all terms, and
//! most of the dictionary's build time) go to a sorted table of `(term, doc)` instead, which
//! still answers exact, range and prefix lookups by binary search; per-doc columns (time, seq,
//! tenant); per-block time bounds; and each tenant's last seq and chain hash, so opening the
//! store does not rescan old events. [`Sealed`] pairs the index with its `.seg`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fst::{IntoStreamer, Streamer};
use memmap2::Mmap;
use roaring::RoaringBitmap;
use vigil_event::Hash;

use crate::error::{EmbeddedError, Result};
use crate::fsync::write_atomic;
use crate::index::lookup::{DocRef, SegmentView, TimeBlock};
use crate::log::record::OwnedRecord;
use crate::log::segment::{BLOCK_DOCS, RawSegment, i64_at, map_file, seg_path, u32_at, u64_at};

const IDX_MAGIC: &[u8; 8] = b"VGLIDX01";
const IDX_FOOTER_MAGIC: &[u8; 8] = b"VGLIDXF1";
const IDX_SECTIONS: usize = 10;
const IDX_FOOTER_LEN: usize = (IDX_SECTIONS + 1) * 8 + 4 + 4 + 8 + 8 + 8 + 4 + 8;

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

/// Feeds every `(term, docs)` in ascending term order to the sink.
pub(crate) type TermSource<'a> =
    &'a mut dyn FnMut(&mut dyn FnMut(&[u8], Docs<'_>) -> Result<()>) -> Result<()>;

pub(crate) fn idx_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("index").join(format!("{id:020}.idx"))
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
pub(crate) struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.map.get(self.start..self.end).unwrap_or_default()
    }
}

/// A sealed segment: its log and its index, memory-mapped.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub id: u64,
    pub raw: RawSegment,
    idx: Arc<Mmap>,
    pub(crate) fst: fst::Map<MapSlice>,
    sections: [(usize, usize); IDX_SECTIONS],
    pub(crate) n_docs: u32,
    time_range: Option<(i64, i64)>,
    pub(crate) time_blocks: Vec<TimeBlock>,
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
    pub(crate) fn add_postings(&self, offset: u64, out: &mut RoaringBitmap) {
        if let Some(bytes) = self.section(S_POSTINGS).get(offset as usize..)
            && let Ok(b) = RoaringBitmap::deserialize_unchecked_from(bytes)
        {
            *out |= b;
        }
    }

    pub(crate) fn single_count(&self) -> usize {
        self.section(S_SINGLE_DOCS).len() / 4
    }

    pub(crate) fn single_key(&self, i: usize) -> &[u8] {
        let offsets = self.section(S_SINGLE_OFFSETS);
        match (u32_at(offsets, i * 4), u32_at(offsets, i * 4 + 4)) {
            (Some(a), Some(b)) => self
                .section(S_SINGLE_KEYS)
                .get(a as usize..b as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    pub(crate) fn single_doc(&self, i: usize) -> Option<u32> {
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
