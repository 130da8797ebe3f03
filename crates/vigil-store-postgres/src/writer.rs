//! Group commit into PostgreSQL.
//!
//! Appends queue to one writer task, which takes everything queued (up to
//! `max_group_events`) as one group and writes it in one transaction:
//!
//! 1. lock the head row of every tenant in the group (`vigil_tenants`, in tenant order, so two
//!    nodes never deadlock): the lock serialises writers of a tenant across nodes, and the row
//!    holds the last seq, the chain hash and the Merkle tree's frontier (a frontier behind the
//!    seq — events written by an older vigil — is first extended from the stored events, see
//!    [`crate::merkle`]);
//! 2. look up every id of the group (`vigil_event_ids`) and let [`vigil_store::commit::decide`]
//!    say, request by request, which events are new, which are duplicates (same id and content)
//!    and which requests conflict (same id, other content: that request fails whole, the others
//!    go on), and the seq and chain hash of each new event;
//! 3. push each new event's leaf onto its tenant's tree, `COPY … (FORMAT binary)` the events
//!    and their ids in;
//! 4. move the heads (seq, chain hash, frontier) and insert the trees' new stored hashes
//!    (about two per event) in one statement, and commit. With `synchronous_commit` on (the
//!    default, never changed here), the commit returns once the WAL is flushed: only then are
//!    requests answered.
//!
//! A transient failure (connection lost, server restarting, deadlock) retries the whole group
//! from step 1 with back-off; nothing of a failed attempt is visible, Merkle hashes included.
//! If the connection broke during COMMIT the outcome is unknown; the retry then finds the
//! group's ids already stored with the same content and answers with their seqs, so nothing is
//! lost or written twice (and the tree, moved in the same transaction, gets each leaf once).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use vigil_event::{EventId, Hash, Prepared, TenantId};
use vigil_store::commit::{self, Prior, StoreState};
use vigil_store::telemetry::GroupCommitted;
use vigil_store::{Appended, StoreError};

use crate::error::{PgError, Result};
use crate::merkle::{HashRows, TreeEdge};
use crate::row::{Derived, RawJsonb, to_hash, to_i64, to_seq};

pub(crate) type Reply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// One append call waiting for its group.
pub(crate) struct Job {
    pub events: Vec<Prepared>,
    /// The indexed columns of each event, derived by the caller (in event order).
    pub derived: Vec<Derived>,
    pub reply: Reply,
}

/// How the writer task behaves.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub max_group_events: usize,
    /// How long a group keeps retrying transient failures before its requests get 503.
    pub retry_for: Duration,
}

pub(crate) async fn run(pool: Pool, config: WriterConfig, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.events.len();
        let mut group = vec![first];
        while count < config.max_group_events {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut outcome = commit_with_retry(&pool, &config, &group).await;
        if matches!(&outcome, Err(e) if !e.is_transient()) && group.len() > 1 {
            // Something in the group fails for good: commit each request on its own, so only
            // the one that carries it fails.
            let mut results = Vec::with_capacity(group.len());
            for job in &group {
                let one = commit_with_retry(&pool, &config, std::slice::from_ref(job)).await;
                results.push(match one {
                    Ok(mut r) => r.pop().unwrap_or_else(|| Ok(Vec::new())),
                    Err(e) => {
                        tracing::warn!(error = %e, events = job.events.len(), "append failed");
                        Err(e.into())
                    }
                });
            }
            outcome = Ok(results);
        }
        let requests = group.len();
        let mut written = 0u64;
        match outcome {
            Ok(results) => {
                for (job, result) in group.into_iter().zip(results) {
                    if let Ok(appended) = &result {
                        written += appended.iter().filter(|a| !a.duplicate).count() as u64;
                    }
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, events = count, "append group failed");
                let err: StoreError = e.into();
                for job in group {
                    let _ = job.reply.send(Err(clone_error(&err)));
                }
            }
        }
        GroupCommitted {
            requests,
            events: count,
            written,
            elapsed: started.elapsed(),
        }
        .emit();
    }
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(c) => StoreError::Conflict(c.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

async fn commit_with_retry(
    pool: &Pool,
    config: &WriterConfig,
    group: &[Job],
) -> Result<Vec<Result<Vec<Appended>, StoreError>>> {
    let deadline = Instant::now() + config.retry_for;
    let mut backoff = Duration::from_millis(50);
    // Seqs this group gave its new ids in attempts whose outcome is unknown.
    let mut attempted: HashMap<(String, String), u64> = HashMap::new();
    loop {
        match commit(pool, group, &mut attempted).await {
            Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, retry_in = ?backoff, "append failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// An event the group writes, with its derived columns.
struct NewEvent<'a> {
    ev: &'a Prepared,
    derived: &'a Derived,
    seq: u64,
    hash: Hash,
    canonical: Vec<u8>,
}

/// A tenant's head row as the group moves it.
struct Head {
    seq: u64,
    /// Chain hash of the event at `seq`.
    hash: Hash,
    tree: TreeEdge,
}

/// What a group's decision reads, all fetched under the heads' locks: the group's ids as
/// stored, the heads, and the seqs earlier attempts of this group gave its new ids.
struct Locked<'s> {
    stored: &'s HashMap<(String, String), (u64, Hash)>,
    heads: &'s HashMap<String, Head>,
    attempted: &'s HashMap<(String, String), u64>,
}

impl StoreState for Locked<'_> {
    fn stored(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Prior>, StoreError> {
        let key = (tenant.as_str().to_owned(), id.as_str().to_owned());
        Ok(self.stored.get(&key).map(|&(seq, digest)| Prior {
            seq,
            digest,
            // Committed by an earlier attempt whose outcome was unknown (same seq as that
            // attempt gave it).
            retried: self.attempted.get(&key) == Some(&seq),
        }))
    }

    fn head(&self, tenant: &TenantId) -> commit::Head {
        self.heads
            .get(tenant.as_str())
            .map_or_else(commit::Head::default, |h| commit::Head {
                seq: h.seq,
                chain: h.hash,
            })
    }
}

async fn commit(
    pool: &Pool,
    group: &[Job],
    attempted: &mut HashMap<(String, String), u64>,
) -> Result<Vec<Result<Vec<Appended>, StoreError>>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;

    // 1. Lock the heads, in tenant order.
    let tenants: BTreeSet<&str> = group
        .iter()
        .flat_map(|j| j.events.iter().map(|e| e.tenant.as_str()))
        .collect();
    let tenant_list: Vec<&str> = tenants.iter().copied().collect();
    // A new head starts at seq 0 and the empty tree (the frontier column's default).
    tx.execute(
        "INSERT INTO vigil_tenants (tenant, seq, hash)
         SELECT t, 0, $2 FROM unnest($1::text[]) AS t ORDER BY t
         ON CONFLICT (tenant) DO NOTHING",
        &[&tenant_list, &vec![0u8; 32]],
    )
    .await?;
    let mut heads: HashMap<String, Head> = HashMap::new();
    for row in tx
        .query(
            "SELECT tenant, seq, hash, frontier FROM vigil_tenants WHERE tenant = ANY($1)
             ORDER BY tenant FOR UPDATE",
            &[&tenant_list],
        )
        .await?
    {
        let tenant: String = row.get(0);
        let seq = to_seq(row.get(1))?;
        let mut tree = TreeEdge::decode(&tenant, row.get(3))?;
        if tree.size() != seq {
            tree.catch_up(&tx, &tenant, seq).await?;
        }
        let head = Head {
            seq,
            hash: to_hash(row.get(2))?,
            tree,
        };
        heads.insert(tenant, head);
    }

    // 2. What is already stored under the group's ids.
    let (id_tenants, ids): (Vec<&str>, Vec<&str>) = group
        .iter()
        .flat_map(|j| j.events.iter().map(|e| (e.tenant.as_str(), e.id.as_str())))
        .unzip();
    let mut stored: HashMap<(String, String), (u64, Hash)> = HashMap::new();
    for row in tx
        .query(
            "SELECT i.tenant, i.id, i.seq, i.digest
               FROM vigil_event_ids i
               JOIN unnest($1::text[], $2::text[]) AS k(tenant, id)
                 ON i.tenant = k.tenant AND i.id = k.id",
            &[&id_tenants, &ids],
        )
        .await?
    {
        let seq: i64 = row.get(2);
        stored.insert(
            (row.get(0), row.get(1)),
            (to_seq(seq)?, to_hash(row.get(3))?),
        );
    }

    // 3. Decide each request (see `vigil_store::commit`); push each new event's leaf onto its
    // tenant's tree.
    let decision = commit::decide(
        group.iter().map(|j| j.events.as_slice()),
        &Locked {
            stored: &stored,
            heads: &heads,
            attempted: &*attempted,
        },
    );
    let mut rows: Vec<NewEvent<'_>> = Vec::with_capacity(decision.new.len());
    for n in decision.new {
        let tenant = n.event.tenant.as_str();
        let head = heads
            .get_mut(tenant)
            .ok_or_else(|| PgError::Corrupt(format!("no head row for tenant {tenant}")))?;
        head.tree.push(n.leaf);
        debug_assert_eq!(head.tree.size(), n.seq, "Merkle tree and log out of step");
        let derived = group
            .get(n.request)
            .and_then(|j| j.derived.get(n.index))
            .ok_or_else(|| PgError::Corrupt(format!("no derived columns for seq {}", n.seq)))?;
        rows.push(NewEvent {
            ev: n.event,
            derived,
            seq: n.seq,
            hash: n.chain,
            canonical: n.canonical,
        });
    }
    for (tenant, moved) in &decision.heads {
        if let Some(head) = heads.get_mut(tenant.as_str()) {
            head.seq = moved.seq;
            head.hash = moved.chain;
        }
    }
    let results = decision.results;

    if !rows.is_empty() {
        copy_events(&tx, &rows).await?;
        copy_ids(&tx, &rows).await?;
    }
    // Heads whose tree grew: by this group's events, or by catching up with events an older
    // vigil wrote (then possibly with no new event of this group).
    let moved: Vec<(&str, &Head)> = heads
        .iter()
        .filter(|(_, h)| h.tree.grew())
        .map(|(t, h)| (t.as_str(), h))
        .collect();
    if !moved.is_empty() {
        let mut t: Vec<&str> = Vec::with_capacity(moved.len());
        let mut s: Vec<i64> = Vec::with_capacity(moved.len());
        let mut h: Vec<&[u8]> = Vec::with_capacity(moved.len());
        let mut f: Vec<Vec<u8>> = Vec::with_capacity(moved.len());
        let mut hashes = HashRows::default();
        for &(tenant, head) in &moved {
            t.push(tenant);
            s.push(to_i64(head.seq));
            h.push(&head.hash);
            f.push(head.tree.frontier_bytes());
            hashes.add(tenant, &head.tree);
        }
        // The new stored hashes ride on the statement that moves the heads.
        tx.execute(
            "WITH hashes AS (
                 INSERT INTO vigil_tree_hashes (tenant, idx, hash)
                 SELECT * FROM unnest($5::text[], $6::int8[], $7::bytea[])
             )
             UPDATE vigil_tenants AS h SET seq = u.seq, hash = u.hash, frontier = u.frontier
               FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::bytea[])
                    AS u(tenant, seq, hash, frontier)
              WHERE h.tenant = u.tenant",
            &[
                &t,
                &s,
                &h,
                &f,
                &hashes.tenants,
                &hashes.idxs,
                &hashes.hashes,
            ],
        )
        .await?;
    }
    for r in &rows {
        attempted.insert(
            (r.ev.tenant.as_str().to_owned(), r.ev.id.as_str().to_owned()),
            r.seq,
        );
    }
    tx.commit().await?;
    Ok(results)
}

async fn copy_events(tx: &tokio_postgres::Transaction<'_>, rows: &[NewEvent<'_>]) -> Result<()> {
    let sink = tx
        .copy_in(
            "COPY vigil_events (tenant, seq, time_ns, received_ns, id, type, severity, actor,
                                actor_multi, hash, canonical, fields)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let types = [
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::INT2,
        Type::TEXT,
        Type::BOOL,
        Type::BYTEA,
        Type::BYTEA,
        Type::JSONB,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(writer);
    let mut fields = Vec::with_capacity(1024);
    for r in rows {
        r.derived.fields(r.seq, &mut fields);
        let derived = r.derived;
        let severity = i16::from(r.ev.severity.get());
        writer
            .as_mut()
            .write(&[
                &r.ev.tenant.as_str(),
                &to_i64(r.seq),
                &r.ev.time.as_nanos(),
                &r.ev.received_at.as_nanos(),
                &r.ev.id.as_str(),
                &r.ev.event_type.as_str(),
                &severity,
                &derived.actor,
                &derived.actor_multi,
                &r.hash.as_slice(),
                &r.canonical.as_slice(),
                &RawJsonb(&fields),
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_ids(tx: &tokio_postgres::Transaction<'_>, rows: &[NewEvent<'_>]) -> Result<()> {
    let sink = tx
        .copy_in(
            "COPY vigil_event_ids (tenant, id, seq, time_ns, digest) FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::BYTEA],
    );
    tokio::pin!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.ev.tenant.as_str(),
                &r.ev.id.as_str(),
                &to_i64(r.seq),
                &r.ev.time.as_nanos(),
                &r.ev.content_digest.as_slice(),
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}
