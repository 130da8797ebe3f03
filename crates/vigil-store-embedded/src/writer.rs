//! The single writer thread: takes a group of queued requests, has
//! [`vigil_store::commit::decide`] say which events are new and what seq and chain hash each
//! gets, appends them to the log and acknowledges the whole group with one fsync (group commit).
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
use vigil_event::{EventId, Hash, Prepared, Scalar, TenantId, Term};
use vigil_store::commit::{self, Decision, Head, NewEvent, Prior, StoreState};
use vigil_store::telemetry::{GroupCommitted, LogSynced};
use vigil_store::{Appended, StoreError};

use crate::error::{EmbeddedError, Result};
use crate::fsync;
use crate::index::memtable::Memtable;
use crate::log::record::{self, Record};
use crate::log::wal::{self, WalWriter};
use crate::state::{SegRef, Shared, TenantState};

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

/// Record bytes besides the canonical JSON: version, tenant, seq, time, hashes, id.
const RECORD_OVERHEAD: usize = 1 + 1 + 255 + 8 + 8 + 32 + 32 + 1 + 255;

/// What a group's decision reads from the embedded store: the durable segments (the group's own
/// events are not in them yet) and the writer's tenant heads.
struct Durable<'s> {
    views: &'s [SegRef],
    tenants: &'s HashMap<String, TenantState>,
}

impl StoreState for Durable<'_> {
    fn admit(&self, event: &Prepared) -> Result<(), StoreError> {
        let bytes = event.canonical_len_hint();
        if bytes + RECORD_OVERHEAD > record::MAX_PAYLOAD {
            return Err(EmbeddedError::TooLarge {
                bytes,
                max: record::MAX_PAYLOAD - RECORD_OVERHEAD,
            }
            .into());
        }
        Ok(())
    }

    fn stored(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Prior>, StoreError> {
        let found = crate::index::lookup::find_id(self.views, tenant.as_str(), id.as_str())?;
        Ok(found.map(|r| Prior {
            seq: r.seq,
            digest: r.digest,
            retried: false,
        }))
    }

    fn head(&self, tenant: &TenantId) -> Head {
        self.tenants
            .get(tenant.as_str())
            .map_or_else(Head::default, |s| Head {
                seq: s.last_seq,
                chain: s.last_chain,
            })
    }
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
        let requests = group.len();
        let events = group.iter().map(|(events, _)| events.len()).sum();
        let answered = |written: u64| GroupCommitted {
            requests,
            events,
            written,
            elapsed: started.elapsed(),
        };
        if self.shared.poisoned.load(Ordering::SeqCst) {
            for (_, reply) in group {
                let _ = reply.send(Err(EmbeddedError::Poisoned.into()));
            }
            answered(0).emit();
            return;
        }
        buf.clear();
        // Durable events, for the id checks. Released before the memtable is written to.
        let views = self.shared.refs();
        let decision = commit::decide(
            group.iter().map(|(events, _)| events.as_slice()),
            &Durable {
                views: &views,
                tenants: &self.tenants,
            },
        );
        drop(views);
        let Decision {
            results,
            new,
            heads,
        } = decision;

        if !new.is_empty() {
            // Where each new event's record sits in `buf`.
            let mut records: Vec<(usize, u32)> = Vec::with_capacity(new.len());
            for n in &new {
                let offset = buf.len();
                record::encode(
                    &Record {
                        tenant: n.event.tenant.as_str(),
                        seq: n.seq,
                        time: n.event.time.as_nanos(),
                        chain: n.chain,
                        digest: n.event.content_digest,
                        id: n.event.id.as_str(),
                        canonical: &n.canonical,
                    },
                    buf,
                );
                records.push((offset, (buf.len() - offset) as u32));
            }
            record::encode_commit(new.len() as u32, buf);
            let write = self.wal.append(buf).and_then(|base| {
                let t = Instant::now();
                self.wal.sync()?;
                LogSynced {
                    bytes: buf.len() as u64,
                    elapsed: t.elapsed(),
                }
                .emit();
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
                    drop(new);
                    for (_, reply) in group {
                        let _ = reply.send(Err(EmbeddedError::Poisoned.into()));
                    }
                    answered(0).emit();
                    return;
                }
            };
            for (tenant, head) in heads {
                let state = TenantState {
                    last_seq: head.seq,
                    last_chain: head.chain,
                };
                match self.tenants.get_mut(tenant.as_str()) {
                    Some(s) => *s = state,
                    None => {
                        self.tenants.insert(tenant.as_str().to_owned(), state);
                    }
                }
            }
            // Into the trees before the events become visible: whoever reads an event can get
            // its proof.
            self.extend_trees(&new);
            let mut mem = self.active.write().unwrap_or_else(|e| e.into_inner());
            let mut seq_term = Vec::with_capacity(16);
            for (n, &(offset, len)) in new.iter().zip(&records) {
                let raw = buf.get(offset..offset + len as usize).unwrap_or_default();
                let Ok((rec, _)) = record::decode(raw) else {
                    continue;
                };
                debug_assert_eq!(rec.seq, n.seq);
                seq_term.clear();
                Term::encode_into("seq", Scalar::Number(n.seq as f64), &mut seq_term);
                mem.insert(
                    base + offset as u64,
                    len,
                    &rec,
                    n.event.terms().chain(std::iter::once(seq_term.as_slice())),
                );
            }
        }
        let written = new.len() as u64;
        drop(new);
        for ((_, reply), result) in group.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        answered(written).emit();
    }

    /// Adds a durable group's leaves to their tenants' Merkle trees, before the group is
    /// answered. The events are in the log already: a failed hash write poisons the writer
    /// (recovery recomputes the hashes from the log) but does not fail this group.
    fn extend_trees(&mut self, new: &[NewEvent<'_>]) {
        // Per tenant: the first new seq and the leaves from it.
        let mut by_tenant: Vec<(&str, u64, Vec<Hash>)> = Vec::new();
        for n in new {
            let tenant = n.event.tenant.as_str();
            match by_tenant.iter_mut().find(|(t, _, _)| *t == tenant) {
                Some((_, _, leaves)) => leaves.push(n.leaf),
                None => by_tenant.push((tenant, n.seq, vec![n.leaf])),
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
