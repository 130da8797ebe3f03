//! Sealing: turning a full memtable into an immutable segment, on its own thread.
//!
//! The `.seg` (compressed log blocks) and `.idx` (term dictionary, postings, columns) are
//! written to temporary files, fsynced and renamed; then the sealed segment replaces the
//! memtable in the segment set and the `.wal` is deleted. A crash at any point leaves either the
//! `.wal` (replayed on open) or a complete `.seg` (and the `.wal` is removed on open).

use std::path::Path;
use std::sync::{Arc, RwLock};

use vigil_event::{Hash, Scalar, Term, flatten};
use vigil_store::telemetry::SegmentSealed;

use crate::error::{EmbeddedError, Result};
use crate::index::lookup::{DocRef, SegmentView};
use crate::index::memtable::Memtable;
use crate::index::merge;
use crate::index::sealed::{self, Docs, IndexMeta, Sealed, TenantTail};
use crate::log::record::Record;
use crate::log::{segment, wal};
use crate::state::Shared;

/// Consecutive seal failures after which `/readyz` reports the store unavailable.
pub(crate) const UNREADY_AFTER_FAILURES: u32 = 3;

/// Seals memtables strictly in order (a failed seal is retried, with back-off, before any newer
/// segment is sealed: the log's segments never go sealed out of order), and merges after each.
pub(crate) fn run(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<Arc<RwLock<Memtable>>>) {
    let stopping = || shared.stopping.load(std::sync::atomic::Ordering::SeqCst);
    while let Ok(mem) = rx.recv() {
        let mut backoff = std::time::Duration::from_millis(500);
        while !seal_one(&shared, &mem) {
            shared
                .seal_failures
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if stopping() {
                return;
            }
            // Sleep in short steps so shutdown is not held up by the back-off.
            let until = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < until && !stopping() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
        }
        shared
            .seal_failures
            .store(0, std::sync::atomic::Ordering::SeqCst);
        // Merge until nothing is due (each step is bounded by the merge size limit).
        loop {
            if stopping() || !merge_once(&shared) {
                break;
            }
        }
    }
}

/// Picks the run of `MERGE_FACTOR` adjacent sealed segments with the fewest events whose sum
/// stays within `max_segment_events`, merges it and swaps it in. False when nothing is due.
fn merge_once(shared: &Shared) -> bool {
    let set = shared.snapshot();
    let limit = shared.config.max_segment_events;
    // Only runs older than every unsealed segment: a merged segment covers the id range of its
    // run, and a segment whose sealing failed must never fall inside such a range.
    let oldest_unsealed = set
        .memtables
        .iter()
        .map(|m| m.read().unwrap_or_else(|e| e.into_inner()).id)
        .min()
        .unwrap_or(u64::MAX);
    let best = set
        .sealed
        .windows(MERGE_FACTOR)
        .filter(|w| w.last().is_some_and(|s| s.id < oldest_unsealed))
        .map(|w| (w.iter().map(|s| u64::from(s.doc_count())).sum::<u64>(), w))
        .filter(|(total, _)| *total <= limit)
        .min_by_key(|(total, _)| *total);
    let Some((total, run)) = best else {
        return false;
    };
    let started = std::time::Instant::now();
    match merge::merge(&shared.dir, run) {
        Ok(merged) => {
            let ids: Vec<u64> = run.iter().map(|s| s.id).collect();
            shared.replace_sealed(&ids, Arc::new(merged));
            for id in ids.iter().take(ids.len().saturating_sub(1)) {
                remove_segment_files(&shared.dir, *id);
            }
            tracing::info!(segments = ?ids, events = total, elapsed_ms = started.elapsed().as_millis() as u64, "segments merged");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "merging segments failed; they stay as they are");
            false
        }
    }
}

/// Segments merged per step.
const MERGE_FACTOR: usize = 4;

/// Deletes a superseded segment's files (a reader still holding its maps keeps them alive).
pub(crate) fn remove_segment_files(dir: &Path, id: u64) {
    for p in [segment::seg_path(dir, id), sealed::idx_path(dir, id)] {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, path = %p.display(), "could not remove a superseded segment file");
        }
    }
}

/// Seals one memtable and swaps the result in. False when sealing failed: the memtable stays
/// queryable and its `.wal` stays on disk, so nothing is lost; the caller retries.
fn seal_one(shared: &Shared, mem: &Arc<RwLock<Memtable>>) -> bool {
    let id = mem.read().unwrap_or_else(|e| e.into_inner()).id;
    let started = std::time::Instant::now();
    match seal(&shared.dir, mem) {
        Ok(sealed) => {
            let docs = sealed.doc_count();
            shared.replace_memtable(id, Arc::new(sealed));
            let wal = wal::wal_path(&shared.dir, id);
            if let Err(e) = std::fs::remove_file(&wal) {
                tracing::warn!(error = %e, path = %wal.display(), "could not remove sealed log file");
            }
            SegmentSealed {
                segment: id,
                events: u64::from(docs),
                bytes: file_len(&segment::seg_path(&shared.dir, id))
                    + file_len(&sealed::idx_path(&shared.dir, id)),
                elapsed: started.elapsed(),
            }
            .emit();
            true
        }
        Err(e) => {
            tracing::error!(error = %e, segment = id, "sealing failed; retrying");
            false
        }
    }
}

/// A file's size, for telemetry (0 when it cannot be read).
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Writes the sealed files of a memtable and opens them.
pub(crate) fn seal(dir: &Path, mem: &RwLock<Memtable>) -> Result<Sealed> {
    let mem = mem.read().unwrap_or_else(|e| e.into_inner());
    let block_times = segment::write_data(&segment::seg_path(dir, mem.id), mem.id, &mut |sink| {
        mem.for_each_record(|_, raw| sink(raw))
    })?;
    let mut docs = Vec::with_capacity(mem.len());
    for d in 0..mem.doc_count() {
        docs.push(
            mem.doc(d)
                .ok_or_else(|| EmbeddedError::corrupt(dir, "memtable doc out of range"))?,
        );
    }
    let tenants = tails(mem.tenant_names(), &docs, |doc| Ok(mem.read(doc)?.chain))?;
    let meta = IndexMeta {
        first_id: mem.id,
        docs,
        tenants,
        block_times,
    };
    let terms = mem.sorted_terms();
    sealed::write_index(&sealed::idx_path(dir, mem.id), &meta, &mut |sink| {
        terms
            .iter()
            .try_for_each(|(term, docs)| sink(term, Docs::Sorted(docs)))
    })?;
    Sealed::open(dir, mem.id)
}

/// Each tenant's last seq and chain in a segment.
fn tails(
    names: &[String],
    docs: &[DocRef],
    chain_of: impl Fn(u32) -> Result<Hash>,
) -> Result<Vec<TenantTail>> {
    let mut last: Vec<Option<(u64, u32)>> = vec![None; names.len()];
    for (i, d) in docs.iter().enumerate() {
        if let Some(slot) = last.get_mut(d.tenant as usize)
            && slot.is_none_or(|(seq, _)| d.seq > seq)
        {
            *slot = Some((d.seq, i as u32));
        }
    }
    names
        .iter()
        .zip(last)
        .map(|(name, l)| {
            let (last_seq, doc) = l.unwrap_or((0, 0));
            Ok(TenantTail {
                name: name.clone(),
                last_seq,
                last_chain: chain_of(doc)?,
            })
        })
        .collect()
}

/// Appends the terms of a stored event (its canonical JSON) to `out`, length-prefixed like
/// `Prepared::terms`, and calls `f` per term. Used when rebuilding an index from the log.
pub(crate) fn terms_of_canonical(canonical: &[u8], mut f: impl FnMut(&[u8])) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(canonical)
    else {
        return false;
    };
    let mut buf = Vec::with_capacity(64);
    flatten(&map, |path, value: Scalar<'_>| {
        buf.clear();
        Term::encode_into(path, value, &mut buf);
        f(&buf);
    });
    true
}

/// Rebuilds the `.idx` of a sealed segment from its `.seg` (the log).
pub(crate) fn rebuild_index(dir: &Path, id: u64) -> Result<u64> {
    let seg_path = segment::seg_path(dir, id);
    let data = segment::RawSegment::open(&seg_path)?;
    let mut terms: std::collections::HashMap<Vec<u8>, Vec<u32>> = std::collections::HashMap::new();
    let mut docs = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut chains: Vec<Hash> = Vec::new();
    let mut block_times: Vec<(i64, i64)> = Vec::new();
    data.for_each_record(|doc, rec: Record<'_>| {
        let tenant = match names.iter().position(|n| n == rec.tenant) {
            Some(i) => i as u32,
            None => {
                names.push(rec.tenant.to_owned());
                (names.len() - 1) as u32
            }
        };
        docs.push(DocRef {
            time: rec.time,
            seq: rec.seq,
            tenant,
        });
        chains.push(rec.chain);
        let block = data.block_of(doc);
        if block_times.len() <= block {
            block_times.push((rec.time, rec.time));
        } else if let Some(b) = block_times.get_mut(block) {
            *b = (b.0.min(rec.time), b.1.max(rec.time));
        }
        let ok = terms_of_canonical(rec.canonical, |t| {
            let list = terms.entry(t.to_vec()).or_default();
            if list.last() != Some(&doc) {
                list.push(doc);
            }
        });
        if ok {
            Ok(())
        } else {
            Err(EmbeddedError::corrupt(
                &seg_path,
                format!("record {doc}: canonical bytes are not a JSON object"),
            ))
        }
    })?;
    let tenants = tails(&names, &docs, |doc| {
        chains
            .get(doc as usize)
            .copied()
            .ok_or_else(|| EmbeddedError::corrupt(&seg_path, "doc out of range"))
    })?;
    let mut sorted: Vec<(&[u8], Vec<u32>)> = terms
        .iter()
        .map(|(k, v)| (k.as_slice(), v.clone()))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let n = docs.len() as u64;
    let meta = IndexMeta {
        first_id: data.first_id,
        docs,
        tenants,
        block_times,
    };
    sealed::write_index(&sealed::idx_path(dir, id), &meta, &mut |sink| {
        sorted
            .iter()
            .try_for_each(|(term, docs)| sink(term, Docs::Sorted(docs)))
    })?;
    Ok(n)
}
