//! The in-memory index of a segment that is not sealed yet: fresh events are queryable the
//! moment their append is acknowledged.
//!
//! Terms are interned once per segment in a hash table of term ids (no boxed key per posting);
//! a term seen in one event keeps its single doc inline. Per path, the list of its term ids
//! serves range and prefix scans.

use std::collections::HashMap;
use std::path::Path;

use std::hash::BuildHasher;

use hashbrown::HashTable;
use roaring::RoaringBitmap;

use crate::error::{EmbeddedError, Result};
use crate::index::lookup::{DocRef, SegmentView, TimeBlock, path_of};
use crate::log::record::OwnedRecord;
use crate::log::record::{self, Record};
use crate::log::segment::BLOCK_DOCS;
use crate::log::wal::WalReader;

/// Where a document's record lives in the log, and the fields queries sort and filter by.
#[derive(Debug, Clone, Copy)]
struct DocMeta {
    offset: u64,
    len: u32,
    tenant: u32,
    seq: u64,
    time: i64,
}

#[derive(Debug)]
enum Postings {
    One(u32),
    Many(Vec<u32>),
}

impl Postings {
    fn push(&mut self, doc: u32) {
        match self {
            Self::One(d) if *d == doc => {}
            Self::One(d) => *self = Self::Many(vec![*d, doc]),
            Self::Many(v) => {
                if v.last() != Some(&doc) {
                    v.push(doc)
                }
            }
        }
    }

    fn add_to(&self, out: &mut RoaringBitmap) {
        match self {
            Self::One(d) => {
                out.insert(*d);
            }
            Self::Many(v) => {
                out.extend(v.iter().copied());
            }
        }
    }
}

/// Distinct term bytes stored end to end; a term id indexes `ends`.
#[derive(Debug, Default)]
struct TermArena {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl TermArena {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Stores a term and returns its id.
    fn push(&mut self, term: &[u8]) -> u32 {
        self.bytes.extend_from_slice(term);
        self.ends.push(self.bytes.len());
        (self.ends.len() - 1) as u32
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        self.bytes.get(start..end)
    }
}

/// The index of one unsealed segment.
#[derive(Debug)]
pub(crate) struct Memtable {
    /// The segment's id (its file name).
    pub id: u64,
    wal: WalReader,
    docs: Vec<DocMeta>,
    /// Every distinct term's bytes, end to end: one growing buffer instead of one allocation
    /// per term (a segment holds over a million distinct terms).
    terms: TermArena,
    postings: Vec<Postings>,
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Term ids of each path, for range and prefix scans.
    by_path: HashMap<Box<[u8]>, Vec<u32>, foldhash::fast::RandomState>,
    tenants: Vec<String>,
    time_range: Option<(i64, i64)>,
    /// Time bounds of every run of `BLOCK_DOCS` docs, as sealed segments keep them.
    blocks: Vec<TimeBlock>,
}

impl Memtable {
    pub(crate) fn new(id: u64, wal_path: &Path) -> Result<Self> {
        Ok(Self {
            id,
            wal: WalReader::open(wal_path)?,
            docs: Vec::new(),
            terms: TermArena::default(),
            postings: Vec::new(),
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            by_path: HashMap::default(),
            tenants: Vec::new(),
            time_range: None,
            blocks: Vec::new(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    fn tenant_ordinal(&mut self, tenant: &str) -> u32 {
        match self.tenants.iter().position(|t| t == tenant) {
            Some(i) => i as u32,
            None => {
                self.tenants.push(tenant.to_owned());
                (self.tenants.len() - 1) as u32
            }
        }
    }

    /// Adds one durable record (at `offset`, `len` bytes in the log) with its terms.
    pub(crate) fn insert<'t>(
        &mut self,
        offset: u64,
        len: u32,
        rec: &Record<'_>,
        terms: impl IntoIterator<Item = &'t [u8]>,
    ) {
        let doc = self.docs.len() as u32;
        let tenant = self.tenant_ordinal(rec.tenant);
        self.docs.push(DocMeta {
            offset,
            len,
            tenant,
            seq: rec.seq,
            time: rec.time,
        });
        match self.blocks.last_mut() {
            Some(b) if b.end - b.start < BLOCK_DOCS => {
                b.end = doc + 1;
                b.min = b.min.min(rec.time);
                b.max = b.max.max(rec.time);
            }
            _ => self.blocks.push(TimeBlock {
                start: doc,
                end: doc + 1,
                min: rec.time,
                max: rec.time,
            }),
        }
        self.time_range = Some(match self.time_range {
            None => (rec.time, rec.time),
            Some((lo, hi)) => (lo.min(rec.time), hi.max(rec.time)),
        });
        for term in terms {
            self.add_term(term, doc);
        }
    }

    fn add_term(&mut self, term: &[u8], doc: u32) {
        let hash = self.hasher.hash_one(term);
        let terms = &self.terms;
        if let Some(&id) = self.table.find(hash, |&id| terms.get(id) == Some(term)) {
            if let Some(p) = self.postings.get_mut(id as usize) {
                p.push(doc);
            }
            return;
        }
        let id = self.terms.push(term);
        self.postings.push(Postings::One(doc));
        let (terms, hasher) = (&self.terms, &self.hasher);
        self.table.insert_unique(hash, id, |&id| {
            hasher.hash_one(terms.get(id).unwrap_or_default())
        });
        let path = path_of(term);
        match self.by_path.get_mut(path) {
            Some(ids) => ids.push(id),
            None => {
                self.by_path.insert(path.into(), vec![id]);
            }
        }
    }

    /// Every distinct term with its ascending doc ids, in term order (for sealing). Borrows:
    /// nothing is copied but the list itself.
    pub(crate) fn sorted_terms(&self) -> Vec<(&[u8], &[u32])> {
        let mut out: Vec<(&[u8], &[u32])> = (0..self.terms.len())
            .zip(&self.postings)
            .map(|(id, p)| {
                let docs = match p {
                    Postings::One(d) => std::slice::from_ref(d),
                    Postings::Many(v) => v.as_slice(),
                };
                (self.terms.get(id as u32).unwrap_or_default(), docs)
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Reads every record of the segment in doc order (for sealing).
    pub(crate) fn for_each_record(
        &self,
        mut f: impl FnMut(u32, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (doc, meta) in self.docs.iter().enumerate() {
            self.wal.read_at(meta.offset, meta.len, &mut buf)?;
            f(doc as u32, &buf)?;
        }
        Ok(())
    }

    pub(crate) fn tenant_names(&self) -> &[String] {
        &self.tenants
    }
}

impl SegmentView for Memtable {
    fn doc_count(&self) -> u32 {
        self.docs.len() as u32
    }

    fn time_range(&self) -> Option<(i64, i64)> {
        self.time_range
    }

    fn lookup(&self, term: &[u8], out: &mut RoaringBitmap) {
        let hash = self.hasher.hash_one(term);
        if let Some(&id) = self
            .table
            .find(hash, |&id| self.terms.get(id) == Some(term))
            && let Some(p) = self.postings.get(id as usize)
        {
            p.add_to(out);
        }
    }

    fn scan(
        &self,
        lo: &[u8],
        hi: &[u8],
        keep: &mut dyn FnMut(&[u8]) -> bool,
        out: &mut RoaringBitmap,
    ) {
        let Some(ids) = self.by_path.get(path_of(lo)) else {
            return;
        };
        for &id in ids {
            let (Some(term), Some(p)) = (self.terms.get(id), self.postings.get(id as usize)) else {
                continue;
            };
            if term >= lo && term < hi && keep(term) {
                p.add_to(out);
            }
        }
    }

    fn time_blocks(&self) -> Option<&[TimeBlock]> {
        Some(&self.blocks)
    }

    fn doc(&self, doc: u32) -> Option<DocRef> {
        self.docs.get(doc as usize).map(|m| DocRef {
            time: m.time,
            seq: m.seq,
            tenant: m.tenant,
        })
    }

    fn tenant_ordinal_of(&self, tenant: &str) -> Option<u32> {
        self.tenants
            .iter()
            .position(|t| t == tenant)
            .map(|i| i as u32)
    }

    fn read(&self, doc: u32) -> Result<OwnedRecord> {
        let meta = self.docs.get(doc as usize).ok_or_else(|| {
            EmbeddedError::corrupt(format!("segment {}", self.id), "doc id out of range")
        })?;
        let mut buf = Vec::new();
        self.wal.read_at(meta.offset, meta.len, &mut buf)?;
        let (rec, _) = record::decode(&buf).map_err(|_| {
            EmbeddedError::corrupt(format!("segment {}", self.id), "unreadable record in log")
        })?;
        Ok(OwnedRecord::from(&rec))
    }
}
