//! Reads of events: get by id, query pages, count, and the seq-ordered log range of audits.
//!
//! A query page is planned ([`Plan`]): an unfiltered page walks the `(tenant, time_ns, seq)`
//! index; a filter the SQL states exactly ([`crate::sql`]) first probes the newest rows in time
//! order and turns to the filter's own indexes only when those hold too few matches; a filter
//! the SQL can only narrow has each candidate confirmed with the query evaluator. Every read
//! stops at a byte cap, and a page then hands back a keyset cursor to go on.

use futures::TryStreamExt;
use tokio_postgres::types::ToSql;
use vigil_event::{EventId, TenantId, Timestamp};
use vigil_query::{Expr, Order, Query};
use vigil_store::{MAX_PAGE_READ_BYTES, Page, StoreError, StoredEvent};

use crate::PgStore;
use crate::error::{PgError, Result};
use crate::row::{event_of, to_hash, to_i64, to_seq};
use crate::sql::{Param, Sql, compile};

/// What a read asks for, besides its position, size and plan.
#[derive(Debug, Clone, Copy)]
struct Scan<'a> {
    tenant: &'a TenantId,
    filter: &'a Expr,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    order: Order,
    /// Resolves relative times in the filter.
    now: Timestamp,
}

/// How a page is read (see `query_inner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// In time order on the `(tenant, time_ns, seq)` index, filtering as it goes.
    Ordered,
    /// The newest (or oldest) this many rows in time order, then filtered.
    Probe(i64),
    /// By the filter's own indexes, then sorted.
    Unordered,
}

/// Rows a filtered query reads in time order before it turns to the filter's indexes.
const PROBE_ROWS: i64 = 2_000;

/// Rows fetched per round trip when a filter has to be confirmed event by event.
const CONFIRM_CHUNK: i64 = 1_000;

impl PgStore {
    /// The events of `tenant` with `seq > after_seq`, in seq order, at most `limit`: its log
    /// read front to back by keyset (pass the last seq read as the next `after_seq`; an empty
    /// answer means nothing follows), as an audit replays it. Reads the `(tenant, seq)` index,
    /// so a call costs what it returns wherever in the log it starts.
    ///
    /// Like a query page it stops early once it holds 32 MiB of events, but always returns at
    /// least one event when one follows, however large, so a reader always progresses. Seqs
    /// come as stored: a gap is an event missing. Rows sharing a seq (which only tampering
    /// makes) are never split between two calls, even beyond `limit`, so a keyset reader sees
    /// every one of them.
    pub async fn log_range(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self.log_range_inner(tenant, after_seq, limit).await?)
    }

    async fn log_range_inner(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let params: [&(dyn ToSql + Sync); 3] = [&tenant.as_str(), &to_i64(after_seq), &limit];
        let rows = client.query_raw(LOG_RANGE_SQL, params).await?;
        let mut rows = std::pin::pin!(rows);
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut bytes = 0;
        while let Some(r) = rows.try_next().await? {
            let event = event_of(&r)?;
            // At the byte cap, stop where the seq changes: the next call starts after it.
            if bytes >= MAX_PAGE_READ_BYTES && events.last().is_some_and(|l| l.seq != event.seq) {
                break;
            }
            bytes += event.canonical.len();
            events.push(event);
        }
        Ok(events)
    }

    /// Rows of `scan` after `after`, at most `limit`, read as `plan` says. The flag is true
    /// when reading stopped at the byte cap.
    async fn fetch(
        &self,
        scan: &Scan<'_>,
        after: Option<(i64, u64)>,
        limit: i64,
        plan: Plan,
    ) -> Result<(Vec<StoredEvent>, bool)> {
        let Scan {
            tenant,
            filter,
            from,
            to,
            order,
            now,
        } = *scan;
        let mut sql = Sql::default();
        let t = sql.bind(Param::Text(tenant.as_str().to_owned()));
        let predicate = compile(filter, now, &mut sql);
        let dir = match order {
            Order::Desc => "DESC",
            Order::Asc => "ASC",
        };
        let mut text = String::new();
        match plan {
            Plan::Ordered | Plan::Unordered => {
                text.push_str(&format!(
                    "SELECT seq, time_ns, canonical, hash FROM vigil_events WHERE tenant = {t} AND {}",
                    predicate.text
                ));
                push_range(&mut sql, &mut text, from, to, order, after);
            }
            Plan::Probe(rows) => {
                // The newest `rows` rows in order (an index scan), filtered: a prefix of the
                // answer whatever the filter's selectivity, pulled lazily until `limit` match.
                text.push_str(&format!(
                    "SELECT seq, time_ns, canonical, hash FROM
                       (SELECT * FROM vigil_events WHERE tenant = {t}"
                ));
                push_range(&mut sql, &mut text, from, to, order, after);
                let n = sql.bind(Param::Int(rows));
                text.push_str(&format!(
                    " ORDER BY time_ns {dir}, seq {dir} LIMIT {n}) AS newest WHERE {}",
                    predicate.text
                ));
            }
        }
        let lim = sql.bind(Param::Int(limit));
        // `+ 0` keeps the planner off the time index's order: it then narrows by the filter's
        // own indexes (GIN, actor, type) and sorts the few matches.
        let zero = if plan == Plan::Unordered { " + 0" } else { "" };
        text.push_str(&format!(
            " ORDER BY time_ns{zero} {dir}, seq{zero} {dir} LIMIT {lim}"
        ));
        let client = self.client().await?;
        let rows = client.query_raw(&text, sql.refs()).await?;
        let mut rows = std::pin::pin!(rows);
        let mut events = Vec::new();
        let mut bytes = 0;
        // Stop reading at the byte cap: the caller resumes after the last row it got.
        while bytes < MAX_PAGE_READ_BYTES
            && let Some(r) = rows.try_next().await?
        {
            let event = event_of(&r)?;
            bytes += event.canonical.len();
            events.push(event);
        }
        Ok((events, bytes >= MAX_PAGE_READ_BYTES))
    }

    pub(crate) async fn query_inner(&self, tenant: &TenantId, q: &Query) -> Result<Page> {
        let now = Timestamp::now();
        let limit = q.limit;
        let want = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let mut after = q.cursor.map(|c| (c.time.as_nanos(), c.seq));
        let scan = Scan {
            tenant,
            filter: &q.filter,
            from: q.from,
            to: q.to,
            order: q.order,
            now,
        };
        let exact = compile(&q.filter, now, &mut Sql::default()).exact;
        let mut out: Vec<StoredEvent> = Vec::new();
        // True when the page ends early at the byte cap: more may follow.
        let mut cut = false;
        if exact && matches!(q.filter, Expr::All) {
            (out, cut) = self.fetch(&scan, after, want, Plan::Ordered).await?;
        } else if exact {
            // PostgreSQL cannot estimate how selective a filter on `fields` is, so it picks
            // the wrong plan either way round (walking the time index for a rare value, or
            // sorting a third of the table for a common one). Decide by trying: the newest
            // PROBE_ROWS rows answer any filter that is not rare; only if they hold too few
            // matches does the query go to the filter's indexes for the rows after them.
            (out, cut) = self
                .fetch(&scan, after, want, Plan::Probe(PROBE_ROWS))
                .await?;
            let found = i64::try_from(out.len()).unwrap_or(i64::MAX);
            if !cut
                && found < want
                && let Some(probed) = self.nth_position(&scan, after, PROBE_ROWS).await?
            {
                let more;
                (more, cut) = self
                    .fetch(&scan, Some(probed), want - found, Plan::Unordered)
                    .await?;
                out.extend(more);
            }
        } else {
            // Confirm each candidate; fetch on until `want` matched, the byte cap is reached
            // or no candidates are left.
            let chunk = want.max(CONFIRM_CHUNK);
            let mut bytes = 0;
            loop {
                let (rows, chunk_cut) = self.fetch(&scan, after, chunk, Plan::Ordered).await?;
                let exhausted = !chunk_cut && i64::try_from(rows.len()).unwrap_or(0) < chunk;
                if let Some(last) = rows.last() {
                    after = Some((last.time.as_nanos(), last.seq));
                }
                for ev in confirm_all(&q.filter, rows, now).await? {
                    bytes += ev.canonical.len();
                    out.push(ev);
                    if out.len() > limit {
                        break;
                    }
                    if bytes >= MAX_PAGE_READ_BYTES {
                        cut = true;
                        break;
                    }
                }
                if exhausted || cut || out.len() > limit {
                    break;
                }
            }
        }
        let more = out.len() > limit || cut;
        out.truncate(limit);
        Ok(Page::new(out, q.order, more))
    }

    /// The position of the `n`-th event of `tenant` in the range after `after`, in `order`;
    /// `None` when there are fewer.
    async fn nth_position(
        &self,
        scan: &Scan<'_>,
        after: Option<(i64, u64)>,
        n: i64,
    ) -> Result<Option<(i64, u64)>> {
        let Scan {
            tenant,
            from,
            to,
            order,
            ..
        } = *scan;
        let mut sql = Sql::default();
        let t = sql.bind(Param::Text(tenant.as_str().to_owned()));
        let mut text = format!("SELECT time_ns, seq FROM vigil_events WHERE tenant = {t}");
        push_range(&mut sql, &mut text, from, to, order, after);
        let dir = match order {
            Order::Desc => "DESC",
            Order::Asc => "ASC",
        };
        let skip = sql.bind(Param::Int(n - 1));
        text.push_str(&format!(
            " ORDER BY time_ns {dir}, seq {dir} OFFSET {skip} LIMIT 1"
        ));
        let client = self.client().await?;
        let row = client.query_opt(&text, &sql.refs()).await?;
        row.map(|r| Ok((r.get(0), to_seq(r.get(1))?))).transpose()
    }

    pub(crate) async fn count_inner(
        &self,
        tenant: &TenantId,
        filter: &Expr,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<u64> {
        let now = Timestamp::now();
        let mut sql = Sql::default();
        let t = sql.bind(Param::Text(tenant.as_str().to_owned()));
        let predicate = compile(filter, now, &mut sql);
        if predicate.exact {
            let mut text = format!(
                "SELECT count(*) FROM vigil_events WHERE tenant = {t} AND {}",
                predicate.text
            );
            push_range(&mut sql, &mut text, from, to, Order::Asc, None);
            let client = self.client().await?;
            let n: i64 = client.query_one(&text, &sql.refs()).await?.get(0);
            return Ok(u64::try_from(n).unwrap_or(0));
        }
        let scan = Scan {
            tenant,
            filter,
            from,
            to,
            order: Order::Asc,
            now,
        };
        let mut after = None;
        let mut n = 0u64;
        loop {
            let (rows, cut) = self
                .fetch(&scan, after, CONFIRM_CHUNK, Plan::Ordered)
                .await?;
            let done = !cut && i64::try_from(rows.len()).unwrap_or(0) < CONFIRM_CHUNK;
            if let Some(last) = rows.last() {
                after = Some((last.time.as_nanos(), last.seq));
            }
            n += confirm_all(filter, rows, now).await?.len() as u64;
            if done {
                return Ok(n);
            }
        }
    }

    pub(crate) async fn get_inner(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<StoredEvent>> {
        let client = self.client().await?;
        let Some(at) = client
            .query_opt(
                "SELECT seq, time_ns FROM vigil_event_ids WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id.as_str()],
            )
            .await?
        else {
            return Ok(None);
        };
        let (seq, time): (i64, i64) = (at.get(0), at.get(1));
        let row = client
            .query_opt(
                "SELECT canonical, hash FROM vigil_events
                  WHERE tenant = $1 AND time_ns = $2 AND seq = $3",
                &[&tenant.as_str(), &time, &seq],
            )
            .await?;
        // The id entry outlives its event only between a retention drop and the id cleanup.
        row.map(|r| {
            Ok(StoredEvent {
                seq: to_seq(seq)?,
                time: Timestamp::from_nanos(time),
                canonical: r.get(0),
                hash: to_hash(r.get(1))?,
            })
        })
        .transpose()
    }
}

/// A tenant's events after a seq, in seq order (`PgStore::log_range`). A plain `bigint`
/// comparison on `seq`, so each partition's `(tenant, seq)` index yields the rows in order from
/// the position (no sort, no scan from seq 1); `WITH TIES` completes a run of rows sharing the
/// last seq.
const LOG_RANGE_SQL: &str = "SELECT seq, time_ns, canonical, hash FROM vigil_events
                              WHERE tenant = $1 AND seq > $2
                              ORDER BY seq FETCH FIRST $3 ROWS WITH TIES";

/// Appends the time range and the cursor position to a `WHERE` clause.
fn push_range(
    sql: &mut Sql,
    text: &mut String,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    order: Order,
    after: Option<(i64, u64)>,
) {
    if let Some(from) = from {
        let p = sql.bind(Param::Int(from.as_nanos()));
        text.push_str(&format!(" AND time_ns >= {p}"));
    }
    if let Some(to) = to {
        let p = sql.bind(Param::Int(to.as_nanos()));
        text.push_str(&format!(" AND time_ns < {p}"));
    }
    if let Some((time, seq)) = after {
        let t = sql.bind(Param::Int(time));
        let s = sql.bind(Param::Int(to_i64(seq)));
        // The plain bound lets the planner prune partitions; the row comparison is the
        // exact keyset position.
        let (bound, row) = match order {
            Order::Desc => ("<=", "<"),
            Order::Asc => (">=", ">"),
        };
        text.push_str(&format!(
            " AND time_ns {bound} {t} AND (time_ns, seq) {row} ({t}, {s})"
        ));
    }
}

/// The candidates `filter` really matches, checked off the async runtime (JSON parsing).
async fn confirm_all(
    filter: &Expr,
    rows: Vec<StoredEvent>,
    now: Timestamp,
) -> Result<Vec<StoredEvent>> {
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || {
        let mut kept = Vec::with_capacity(rows.len());
        for ev in rows {
            if confirm(&filter, &ev, now)? {
                kept.push(ev);
            }
        }
        Ok(kept)
    })
    .await
    .map_err(|e| PgError::Corrupt(format!("confirming events failed: {e}")))?
}

/// A stored event that is not a JSON object is corruption here: PostgreSQL checked it on the way
/// in.
fn confirm(filter: &Expr, ev: &StoredEvent, now: Timestamp) -> Result<bool> {
    vigil_store::confirm(filter, &ev.canonical, now)
        .map_err(|e| PgError::Corrupt(format!("event seq {} is not JSON: {e}", ev.seq)))
}

#[cfg(all(test, feature = "testing"))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use serde_json::json;
    use tokio_postgres::NoTls;
    use vigil_event::{Limits, normalize};
    use vigil_store::Store;

    use super::*;
    use crate::PgConfig;
    use crate::testing::TestDatabase;

    /// `vigil verify` replayed PostgreSQL logs through queries filtered on `seq::float8`, which
    /// no index serves: every batch read the tenant from its first event, so an audit took time
    /// quadratic in the log. The log read must be an index range scan starting at its position,
    /// on every partition, in seq order without a sort.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_range_is_an_index_range_scan_in_seq_order() {
        let db = TestDatabase::create().await;
        let store = PgStore::connect(PgConfig {
            pool_size: 2,
            ..PgConfig::new(db.url())
        })
        .await
        .unwrap();
        let tenant = TenantId::parse("plan").unwrap();
        // Today's partition and the default one (a day without a partition).
        let events = ["2001-02-03T04:05:06Z", "2001-02-03T04:05:07Z"]
            .into_iter()
            .map(|t| json!({"type": "plan.test", "time": t}))
            .chain((0..20).map(|_| json!({"type": "plan.test"})))
            .map(|e| {
                normalize(e, &Limits::default())
                    .unwrap()
                    .prepare(&tenant, Timestamp::now(), "plan")
            })
            .collect();
        store.append(events).await.unwrap();
        let (client, conn) = tokio_postgres::connect(db.url(), NoTls).await.unwrap();
        tokio::spawn(conn);
        // With sequential scans priced out, the plan shows whether an index serves the
        // position: a filter no index can serve still ends in a (disabled) scan or a sort.
        client
            .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .await
            .unwrap();
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN {LOG_RANGE_SQL}"),
                &[&"plan", &5i64, &10i64],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let text = plan.join("\n");
        let nodes: Vec<&str> = plan
            .iter()
            .filter_map(|line| match line.split_once("->  ") {
                Some((_, node)) => Some(node),
                None if !line.starts_with(' ') => Some(line.as_str()),
                None => None,
            })
            .collect();
        let scans: Vec<&&str> = nodes.iter().filter(|n| n.contains("Scan")).collect();
        // One index scan per partition: today's and the ones ahead, and the default one.
        assert!(scans.len() >= 2, "{text}");
        for node in &nodes {
            assert!(
                node.starts_with("Limit")
                    || node.starts_with("Merge Append")
                    || (node.starts_with("Index Scan using ") && node.contains("_tenant_seq_")),
                "unexpected plan node {node:?}:\n{text}"
            );
        }
        let conditions: Vec<&String> = plan.iter().filter(|l| l.contains("Index Cond:")).collect();
        assert_eq!(conditions.len(), scans.len(), "{text}");
        for cond in conditions {
            assert!(cond.contains("seq > '5'::bigint"), "{cond}\n{text}");
        }
        store.shutdown().await.unwrap();
    }
}
