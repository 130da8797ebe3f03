//! The single writer thread: assigns seq and chain hashes, appends to the log, and acknowledges
//! a whole group of requests with one fsync (group commit).
//!
//! Requests queue in a bounded channel while the previous group's fsync runs; the next loop
//! iteration takes everything queued (up to `max_commit_events`) as one group. A request is
//! answered only after the fsync that covers it and after its events are in the active
//! segment's index, so an acknowledged event is durable and immediately queryable. A failed
//! write or fsync poisons the writer: every later request gets `Unavailable` until restart, when
//! recovery trusts only what the log proves.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use vigil_event::{Hash, Prepared, Scalar, Term, chain_hash, leaf_hash};
use vigil_store::{Appended, Conflict, StoreError};

use crate::error::{EmbeddedError, Result};
use crate::fsync;
use crate::index::memtable::Memtable;
use crate::log::record::{self, Record};
use crate::log::wal::{self, WalWriter};
use crate::state::{Shared, TenantState};

pub(crate) type AppendReply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

#[derive(Debug)]
pub(crate) enum Command {
    Append {
        events: Vec<Prepared>,
        reply: AppendReply,
    },
    /// Periodic wake-up: seal an old, idle segment.
    Tick,
    /// Finish what is queued, then stop.
    Shutdown { done: oneshot::Sender<()> },
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<Command>,
    pub wal: WalWriter,
    pub active: Arc<RwLock<Memtable>>,
    pub tenants: HashMap<String, TenantState>,
    pub segment_started: Instant,
    pub seal_tx: std::sync::mpsc::Sender<Arc<RwLock<Memtable>>>,
    pub sealer: Option<std::thread::JoinHandle<()>>,
    /// Scratch for a tenant's new stored hashes.
    pub hash_buf: Vec<u8>,
}

/// `(tenant, id)` → something, hashed fast (the keys are authenticated clients' ids; foldhash is
/// randomly seeded, so they cannot aim for collisions).
type IdMap<'a, V> = HashMap<(&'a str, &'a str), V, foldhash::fast::RandomState>;

/// Record bytes besides the canonical JSON: version, tenant, seq, time, hashes, id.
const RECORD_OVERHEAD: usize = 1 + 1 + 255 + 8 + 8 + 32 + 32 + 1 + 255;

/// Where one new event sits in the group's buffer.
struct Pending {
    request: usize,
    index: usize,
    offset: usize,
    len: u32,
    seq: u64,
    leaf: Hash,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut buf = Vec::with_capacity(4 << 20);
        while let Some(first) = self.rx.blocking_recv() {
            let mut group = Vec::new();
            let mut events = 0usize;
            let mut shutdown = None;
            let push = |cmd: Command,
                        group: &mut Vec<(Vec<Prepared>, AppendReply)>,
                        events: &mut usize| match cmd {
                Command::Append { events: ev, reply } => {
                    *events += ev.len();
                    group.push((ev, reply));
                    None
                }
                Command::Tick => None,
                Command::Shutdown { done } => Some(done),
            };
            shutdown = shutdown.or(push(first, &mut group, &mut events));
            while events < self.shared.config.max_commit_events && shutdown.is_none() {
                match self.rx.try_recv() {
                    Ok(cmd) => shutdown = shutdown.or(push(cmd, &mut group, &mut events)),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(group, &mut buf);
            }
            if let Err(e) = self.maybe_rotate() {
                tracing::error!(error = %e, "rotating segment failed; writer poisoned");
                self.shared.poisoned.store(true, Ordering::SeqCst);
            }
            if let Some(done) = shutdown {
                self.stop();
                // Release the data directory (our share of the lock) before confirming.
                drop(self);
                let _ = done.send(());
                return;
            }
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Closing the channel ends the sealer after its current segment.
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.seal_tx, tx));
        if let Some(h) = self.sealer.take() {
            let _ = h.join();
        }
        if !self.shared.poisoned.load(Ordering::SeqCst)
            && let Err(e) = self.shared.trees.close_clean()
        {
            tracing::error!(error = %e, "making Merkle hashes durable at shutdown failed; the next start recomputes them");
        }
    }

    fn commit(&mut self, group: Vec<(Vec<Prepared>, AppendReply)>, buf: &mut Vec<u8>) {
        let started = Instant::now();
        if self.shared.poisoned.load(Ordering::SeqCst) {
            for (_, reply) in group {
                let _ = reply.send(Err(EmbeddedError::Poisoned.into()));
            }
            return;
        }
        buf.clear();
        let mut pending: Vec<Pending> = Vec::new();
        let mut results: Vec<Option<Result<Vec<Appended>, StoreError>>> =
            Vec::with_capacity(group.len());
        // Ids written by this group, not yet visible in the index.
        let mut fresh: IdMap<'_, (u64, Hash)> = IdMap::default();
        let mut canonical = Vec::with_capacity(4096);
        // Durable events, for the id checks. Released before the memtable is written to.
        let views = self.shared.refs();

        for (ri, (events, _)) in group.iter().enumerate() {
            // Phase 1: decide duplicate / conflict / new without changing any state.
            let mut decided: Vec<Option<u64>> = Vec::with_capacity(events.len());
            let mut conflicts = Vec::new();
            let mut local: IdMap<'_, (usize, Hash)> = IdMap::default();
            let mut failed = None;
            for (i, ev) in events.iter().enumerate() {
                if ev.canonical_len_hint() + RECORD_OVERHEAD > record::MAX_PAYLOAD {
                    failed = Some(EmbeddedError::TooLarge {
                        bytes: ev.canonical_len_hint(),
                        max: record::MAX_PAYLOAD - RECORD_OVERHEAD,
                    });
                    break;
                }
                let key = (ev.tenant.as_str(), ev.id.as_str());
                let prior = if let Some(&(seq, digest)) = fresh.get(&key) {
                    Some((Some(seq), digest))
                } else if let Some(&(_, digest)) = local.get(&key) {
                    Some((None, digest))
                } else {
                    match crate::query::find_id(&views, key.0, key.1) {
                        Ok(found) => found.map(|r| (Some(r.seq), r.digest)),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                };
                match prior {
                    Some((seq, digest)) if digest == ev.content_digest => {
                        decided.push(seq.or(Some(0)))
                    }
                    Some(_) => conflicts.push(Conflict {
                        index: i,
                        id: ev.id.clone(),
                    }),
                    None => {
                        local.insert(key, (i, ev.content_digest));
                        decided.push(None);
                    }
                }
            }
            if let Some(e) = failed {
                results.push(Some(Err(e.into())));
                continue;
            }
            if !conflicts.is_empty() {
                results.push(Some(Err(StoreError::Conflict(conflicts))));
                continue;
            }
            // Phase 2: assign seqs and chain hashes, encode records.
            let mut appended = Vec::with_capacity(events.len());
            let mut first_of: IdMap<'_, u64> = IdMap::default();
            for (i, (ev, prior)) in events.iter().zip(decided).enumerate() {
                let key = (ev.tenant.as_str(), ev.id.as_str());
                if let Some(seq) = prior {
                    // seq 0 marks a repeat inside this request: the first copy's seq.
                    let seq = if seq == 0 {
                        first_of.get(&key).copied().unwrap_or(0)
                    } else {
                        seq
                    };
                    appended.push(Appended {
                        id: ev.id.clone(),
                        seq,
                        duplicate: true,
                    });
                    continue;
                }
                let state = self
                    .tenants
                    .entry(ev.tenant.as_str().to_owned())
                    .or_default();
                let seq = state.last_seq + 1;
                canonical.clear();
                ev.write_canonical(seq, &mut canonical);
                let leaf = leaf_hash(&canonical);
                let chain = chain_hash(&state.last_chain, &leaf);
                state.last_seq = seq;
                state.last_chain = chain;
                let offset = buf.len();
                record::encode(
                    &Record {
                        tenant: ev.tenant.as_str(),
                        seq,
                        time: ev.time.as_nanos(),
                        chain,
                        digest: ev.content_digest,
                        id: ev.id.as_str(),
                        canonical: &canonical,
                    },
                    buf,
                );
                pending.push(Pending {
                    request: ri,
                    index: i,
                    offset,
                    len: (buf.len() - offset) as u32,
                    seq,
                    leaf,
                });
                first_of.insert(key, seq);
                fresh.insert(key, (seq, ev.content_digest));
                appended.push(Appended {
                    id: ev.id.clone(),
                    seq,
                    duplicate: false,
                });
            }
            results.push(Some(Ok(appended)));
        }

        drop(views);
        if !pending.is_empty() {
            record::encode_commit(pending.len() as u32, buf);
            let write = self.wal.append(buf).and_then(|base| {
                let t = Instant::now();
                self.wal.sync()?;
                metrics::histogram!("vigil_fsync_seconds").record(t.elapsed().as_secs_f64());
                Ok(base)
            });
            let base = match write {
                Ok(base) => base,
                Err(e) => {
                    // Cut what reached the file (best effort): recovery would drop this
                    // uncommitted group anyway, but a clean file is easier to reason about.
                    self.wal.rollback();
                    tracing::error!(error = %e, path = %self.wal.path().display(), "log write failed; writer poisoned");
                    self.shared.poisoned.store(true, Ordering::SeqCst);
                    for (_, reply) in group {
                        let _ = reply.send(Err(EmbeddedError::Poisoned.into()));
                    }
                    return;
                }
            };
            // Into the trees before the events become visible: whoever reads an event can get
            // its proof.
            self.extend_trees(&group, &pending);
            let mut mem = self.active.write().unwrap_or_else(|e| e.into_inner());
            let mut seq_term = Vec::with_capacity(16);
            for p in &pending {
                let Some(ev) = group
                    .get(p.request)
                    .and_then(|(events, _)| events.get(p.index))
                else {
                    continue;
                };
                let raw = buf
                    .get(p.offset..p.offset + p.len as usize)
                    .unwrap_or_default();
                let Ok((rec, _)) = record::decode(raw) else {
                    continue;
                };
                debug_assert_eq!(rec.seq, p.seq);
                seq_term.clear();
                Term::encode_into("seq", Scalar::Number(p.seq as f64), &mut seq_term);
                mem.insert(
                    base + p.offset as u64,
                    p.len,
                    &rec,
                    ev.terms().chain(std::iter::once(seq_term.as_slice())),
                );
            }
            drop(mem);
            metrics::counter!("vigil_store_events_appended_total").increment(pending.len() as u64);
            metrics::histogram!("vigil_commit_group_events").record(pending.len() as f64);
        }
        for ((_, reply), result) in group.into_iter().zip(results) {
            if let Some(r) = result {
                let _ = reply.send(r);
            }
        }
        metrics::histogram!("vigil_commit_seconds").record(started.elapsed().as_secs_f64());
    }

    /// Adds a durable group's leaves to their tenants' Merkle trees, before the group is
    /// answered. The events are in the log already: a failed hash write poisons the writer
    /// (recovery recomputes the hashes from the log) but does not fail this group.
    fn extend_trees(&mut self, group: &[(Vec<Prepared>, AppendReply)], pending: &[Pending]) {
        // Per tenant: the first new seq and the leaves from it.
        let mut by_tenant: Vec<(&str, u64, Vec<Hash>)> = Vec::new();
        for p in pending {
            let Some(ev) = group
                .get(p.request)
                .and_then(|(events, _)| events.get(p.index))
            else {
                continue;
            };
            let tenant = ev.tenant.as_str();
            match by_tenant.iter_mut().find(|(t, _, _)| *t == tenant) {
                Some((_, _, leaves)) => leaves.push(p.leaf),
                None => by_tenant.push((tenant, p.seq, vec![p.leaf])),
            }
        }
        for (tenant, first_seq, leaves) in by_tenant {
            if let Err(e) = self
                .shared
                .trees
                .append(tenant, first_seq, &leaves, &mut self.hash_buf)
            {
                tracing::error!(error = %e, tenant, "writing Merkle hashes failed; writer poisoned");
                self.shared.poisoned.store(true, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Seals the active segment when it is full, or old and idle-ish.
    fn maybe_rotate(&mut self) -> Result<()> {
        let len = self.active.read().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let cfg = &self.shared.config;
        let due = len >= cfg.segment_max_events
            || (len > 0 && self.segment_started.elapsed() >= cfg.seal_interval);
        if !due || self.shared.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        let old_id = self.active.read().unwrap_or_else(|e| e.into_inner()).id;
        let new_id = old_id + 1;
        let path = wal::wal_path(&self.shared.dir, new_id);
        let wal = WalWriter::open(&path, 0)?;
        fsync::sync_dir(&self.shared.dir.join("log"))?;
        let mem = Arc::new(RwLock::new(Memtable::new(new_id, &path)?));
        let old = std::mem::replace(&mut self.active, mem.clone());
        self.wal = wal;
        self.segment_started = Instant::now();
        {
            let mut set = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let mut next = (**set).clone();
            next.memtables.push(mem);
            *set = Arc::new(next);
        }
        if self.seal_tx.send(old).is_err() {
            tracing::warn!(
                segment = old_id,
                "sealer stopped; segment stays in the log until restart"
            );
        }
        Ok(())
    }
}

/// How often the writer wakes when idle, to seal a segment older than `seal_interval`.
pub(crate) const TICK: Duration = Duration::from_secs(1);
