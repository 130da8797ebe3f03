//! Merging: a run of adjacent sealed segments becomes one, without decoding any event.
//!
//! The sealer ([`crate::seal`]) decides when and which run; this module writes the merged
//! `.seg` and `.idx` next to the originals (`*.merge`), then renames them into place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fst::Streamer;
use roaring::RoaringBitmap;

use crate::error::{EmbeddedError, Result};
use crate::fsync::rename_into_place;
use crate::index::lookup::SegmentView;
use crate::index::sealed::{Docs, IndexMeta, Sealed, TenantTail, idx_path, write_index};
use crate::log::segment::{finish_data, header, seg_path};

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
    let mut out = header(first_id);
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
