//! vigil's PostgreSQL store: the events in the database an operator already runs.
//!
//! Same [`Store`] contract as the embedded store, for deployments where several stateless vigil
//! nodes share one database:
//! - **append** ([`writer`]): one writer task per node commits everything queued as one
//!   transaction — tenant heads locked (`SELECT … FOR UPDATE`, so seq stays gap-free and the
//!   chain linear across nodes), ids checked, events and ids streamed in with binary `COPY`,
//!   heads moved, committed with `synchronous_commit` on. A reply means committed.
//! - **query** ([`sql`]): the query language compiled to parameterised SQL over envelope
//!   columns and `fields`, the event flattened to `{"path": [scalars]}` under a GIN index;
//!   newest first on `(tenant, time_ns, seq)`, cursors as keyset pagination.
//! - **layout** ([`schema`]): embedded, versioned migrations applied at start; events
//!   partitioned by UTC day, created ahead and on demand; retention drops whole partitions;
//!   credentials and schemas in `vigil_meta` with compare-and-swap versions.
//! - **tamper evidence** ([`merkle`]): each tenant's log is an RFC 6962 Merkle tree (leaf `i`
//!   = the event with seq `i + 1`), grown by the writer in the append's own transaction under
//!   the same head lock. Its stored hashes (`vigil_integrity::tree` layout) live in
//!   `vigil_tree_hashes (tenant, idx, hash)`, never partitioned nor touched by retention; its
//!   right edge in `vigil_tenants.frontier`; signed checkpoints in
//!   `vigil_checkpoints (tenant, size, root, time_ns, note)`, the first per size kept. Logs
//!   written before the tree existed get theirs built when the store opens.
//! - **audit** ([`PgStore::connect_read_only`], [`PgStore::log_range`]): `vigil verify` opens
//!   the database without writing to it (no migration, partition, tree or writer; sessions
//!   read-only) and replays each tenant's log in seq order on the `(tenant, seq)` index.
//!
//! # Example
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use vigil_event::{normalize, Limits, TenantId, Timestamp};
//! use vigil_store::Store;
//! use vigil_store_postgres::{PgConfig, PgStore};
//!
//! let store = PgStore::connect(PgConfig::new("postgres://vigil@127.0.0.1/vigil")).await.unwrap();
//! let tenant = TenantId::parse("acme").unwrap();
//! let event = normalize(serde_json::json!({"type": "login.failed", "severity": 8}), &Limits::default())
//!     .unwrap()
//!     .prepare(&tenant, Timestamp::now(), "docs");
//! let appended = store.append(vec![event]).await.unwrap();
//! store.shutdown().await.unwrap();
//! # }
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod error;
mod merkle;
mod row;
mod schema;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::TryStreamExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp};
use vigil_query::{Expr, Order, Query};
use vigil_store::{
    Appended, MAX_PAGE_READ_BYTES, MetaVersion, Page, Store, StoreError, StoredCheckpoint,
    StoredEvent,
};

pub use error::PgError;

use crate::error::Result;
use crate::merkle::TreeEdge;
use crate::row::Derived;
use crate::schema::{NANOS_PER_DAY, day_of};
use crate::sql::{Param, Sql, compile};
use crate::writer::{Job, WriterConfig, to_hash, to_i64, to_seq};

/// The days that have a partition (maintenance's view; writes never need it).
type Partitions = Arc<Mutex<BTreeSet<i64>>>;

/// How to reach and use the database. Every field has a default ([`PgConfig::new`]).
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database?…` (libpq URL or key=value form). Holds a
    /// password: never printed (`Debug` redacts it).
    pub url: String,
    /// Connections per node. The writer uses one at a time; queries the rest.
    pub pool_size: usize,
    /// Limit on establishing a connection, and on waiting for a free one.
    pub connect_timeout: Duration,
    /// `statement_timeout` of every connection: a statement running longer is cancelled and
    /// the request answered 503.
    pub statement_timeout: Duration,
    /// Daily partitions kept created ahead of today.
    pub partitions_ahead: u32,
    /// Drop partitions whose whole day is older than this. `None` keeps everything.
    pub retention: Option<Duration>,
    /// Upper bound on events per write transaction (a group of queued appends).
    pub max_group_events: usize,
    /// How long an append keeps retrying transient database failures (connection lost,
    /// server restarting) before answering 503.
    pub retry_for: Duration,
    /// How often partitions ahead are created and retention applied.
    pub maintenance_interval: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            partitions_ahead: 3,
            retention: None,
            max_group_events: 20_000,
            retry_for: Duration::from_secs(10),
            maintenance_interval: Duration::from_secs(600),
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("partitions_ahead", &self.partitions_ahead)
            .field("retention", &self.retention)
            .field("max_group_events", &self.max_group_events)
            .field("retry_for", &self.retry_for)
            .field("maintenance_interval", &self.maintenance_interval)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if url.contains("password") {
        // A password as a URL parameter (`?password=…`) or in key=value form: drop everything
        // after the host rather than parse it.
        let shown = url.split(['?', ' ']).next().unwrap_or("");
        let shown = if shown.contains("password") {
            ""
        } else {
            shown
        };
        return format!("{} (with password)", redact_userinfo(shown));
    }
    redact_userinfo(url)
}

fn redact_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.rsplit_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        let masked = if userinfo.contains(':') {
            format!("{user}:***")
        } else {
            user.to_owned()
        };
        return format!("{scheme}://{masked}@{host}");
    }
    url.to_owned()
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    /// Queries, meta documents, maintenance.
    pool: Pool,
    /// The writer's own connection, so reads can never starve writes. `None` when read-only.
    write_pool: Option<Pool>,
    /// `None` once shut down, and always when read-only.
    jobs: StdMutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// `None` when read-only.
    maintenance: Option<JoinHandle<()>>,
    partitions: Partitions,
    /// Opened by [`PgStore::connect_read_only`]: every write is refused before it reaches the
    /// database, whose sessions refuse them too.
    read_only: bool,
    config: PgConfig,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.config)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

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
    /// Connects, applies migrations, creates the partitions ahead, builds the Merkle trees of
    /// logs written before the database had them (once, on the first start after an upgrade;
    /// see [`merkle`]) and starts the writer.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        Self::connect_inner(config).await.map_err(open_error)
    }

    /// Opens the store to read only, for auditing a database without changing it: checks that
    /// the schema is exactly this vigil's (refusing, never migrating, when it is older or
    /// newer) and that every tenant's Merkle tree is built (refusing when one lags its log,
    /// as after an upgrade no server of this version has opened yet: an audit bounded by the
    /// tree sizes would silently stop short). Creates no partition, builds no tree, starts
    /// neither writer nor maintenance; its sessions run with `default_transaction_read_only`,
    /// so the database itself refuses writes too (and a hot standby can be audited).
    ///
    /// Reads work as on a writable store; `append`, `save_checkpoint`, `save_meta`,
    /// `save_meta_if`, [`run_maintenance`](Self::run_maintenance) and
    /// [`drop_partitions_before`](Self::drop_partitions_before) fail with
    /// [`StoreError::Unavailable`] ("opened read-only …"). `pool_size` connections are all
    /// readers, made when first needed.
    pub async fn connect_read_only(config: PgConfig) -> Result<Self, StoreError> {
        Self::open_read_only(config).await.map_err(open_error)
    }

    async fn open_read_only(config: PgConfig) -> Result<Self> {
        if config.pool_size < 1 {
            return Err(PgError::Config("pool_size must be at least 1".into()));
        }
        let session = session_config(&config, true)?;
        let pool = build_pool(&session, config.pool_size, &config)?;
        {
            let client = pool.get().await?;
            schema::check_current(&**client).await?;
            if let Some(lag) = merkle::lagging(&**client).await?.into_iter().next() {
                return Err(if lag.leaves > lag.events {
                    PgError::Corrupt(format!(
                        "tenant {}: Merkle tree of {} leaves is ahead of its log at seq {}",
                        lag.tenant, lag.leaves, lag.events
                    ))
                } else {
                    PgError::TreeIncomplete {
                        tenant: lag.tenant,
                        leaves: lag.leaves,
                        events: lag.events,
                    }
                });
            }
        }
        tracing::info!(database = %redact_url(&config.url), "postgres store opened read-only");
        Ok(Self {
            pool,
            write_pool: None,
            jobs: StdMutex::new(None),
            writer: Mutex::new(None),
            maintenance: None,
            partitions: Partitions::default(),
            read_only: true,
            config,
        })
    }

    /// Whether the store was opened with [`connect_read_only`](Self::connect_read_only).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Refuses `what` (a write) on a read-only store.
    fn writable(&self, what: &str) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Unavailable(format!(
                "opened read-only (for auditing): {what} refused"
            )));
        }
        Ok(())
    }

    async fn connect_inner(config: PgConfig) -> Result<Self> {
        if config.pool_size < 2 {
            return Err(PgError::Config(
                "pool_size must be at least 2 (one writer, one reader)".into(),
            ));
        }
        let session = session_config(&config, false)?;
        let pool = build_pool(&session, config.pool_size - 1, &config)?;
        let write_pool = build_pool(&session, 1, &config)?;

        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        let existing = schema::existing_partitions(&**client).await?;
        drop(client);
        let partitions: Partitions = Arc::new(Mutex::new(existing));
        maintain(&pool, &partitions, &config).await?;
        merkle::build_missing(&pool).await?;

        let (tx, rx) = mpsc::channel(1024);
        let writer = tokio::spawn(writer::run(
            write_pool.clone(),
            WriterConfig {
                max_group_events: config.max_group_events,
                retry_for: config.retry_for,
            },
            rx,
        ));
        let maintenance = {
            let (pool, partitions, config) =
                (pool.clone(), Arc::clone(&partitions), config.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(config.maintenance_interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = maintain(&pool, &partitions, &config).await {
                        tracing::warn!(error = %e, "partition maintenance failed; retrying later");
                    }
                }
            })
        };
        tracing::info!(database = %redact_url(&config.url), "postgres store ready");
        Ok(Self {
            pool,
            write_pool: Some(write_pool),
            jobs: StdMutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            maintenance: Some(maintenance),
            partitions,
            read_only: false,
            config,
        })
    }

    /// Drops every partition whose whole day lies before `before` (retention), with the id
    /// entries of its events. Returns the dropped partitions' names.
    pub async fn drop_partitions_before(
        &self,
        before: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.writable("dropping partitions")?;
        let mut client = self.pool.get().await.map_err(PgError::from)?;
        let dropped = schema::drop_partitions_before(&mut client, before.as_nanos()).await?;
        *self.partitions.lock().await = schema::existing_partitions(&**client).await?;
        Ok(dropped)
    }

    /// One maintenance round now (it also runs every `maintenance_interval`): creates the
    /// partitions ahead, moving rows the default partition holds for those days into them, and
    /// applies retention.
    pub async fn run_maintenance(&self) -> Result<(), StoreError> {
        self.writable("partition maintenance")?;
        Ok(maintain(&self.pool, &self.partitions, &self.config).await?)
    }

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

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
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

    async fn query_inner(&self, tenant: &TenantId, q: &Query) -> Result<Page> {
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

    async fn count_inner(
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

    async fn get_inner(&self, tenant: &TenantId, id: &EventId) -> Result<Option<StoredEvent>> {
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

    async fn tree_size_inner(&self, tenant: &TenantId) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT frontier FROM vigil_tenants WHERE tenant = $1",
                &[&tenant.as_str()],
            )
            .await?;
        // The frontier's size, not the head's seq: the two differ only while the tree of a
        // log an older vigil wrote to is being built, and the size then says what is readable.
        row.map_or(Ok(0), |r| {
            Ok(TreeEdge::decode(tenant.as_str(), r.get(0))?.size())
        })
    }

    async fn tree_sizes_inner(&self) -> Result<Vec<(TenantId, u64)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, frontier FROM vigil_tenants WHERE seq > 0 ORDER BY tenant",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let name: &str = r.get(0);
                let tenant = TenantId::parse(name).map_err(|e| {
                    PgError::Corrupt(format!("stored tenant name {name:?} is invalid: {e}"))
                })?;
                Ok((tenant, TreeEdge::decode(name, r.get(1))?.size()))
            })
            .collect()
    }

    async fn read_hashes_inner(
        &self,
        tenant: &TenantId,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        // An index past i64 can never be stored: left out here, reported missing below.
        let wanted: Vec<i64> = indexes
            .iter()
            .filter_map(|&i| i64::try_from(i).ok())
            .collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT idx, hash FROM vigil_tree_hashes WHERE tenant = $1 AND idx = ANY($2)",
                &[&tenant.as_str(), &wanted],
            )
            .await
            .map_err(PgError::from)?;
        let mut found: HashMap<u64, Hash> = HashMap::with_capacity(rows.len());
        for r in &rows {
            found.insert(to_seq(r.get(0))?, to_hash(r.get(1))?);
        }
        indexes
            .iter()
            .map(|i| {
                found.get(i).copied().ok_or_else(|| {
                    StoreError::Internal(format!(
                        "Merkle hash {i} of tenant {} is not stored",
                        tenant.as_str()
                    ))
                })
            })
            .collect()
    }

    async fn save_checkpoint_inner(
        &self,
        tenant: &TenantId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let size = i64::try_from(checkpoint.size).map_err(|_| {
            StoreError::Internal(format!(
                "checkpoint size {} is out of range",
                checkpoint.size
            ))
        })?;
        // The hashes a checkpoint covers were committed (so made durable) by the appends that
        // wrote them: nothing to flush first.
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO vigil_checkpoints (tenant, size, root, time_ns, note)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, size) DO NOTHING",
                &[
                    &tenant.as_str(),
                    &size,
                    &checkpoint.root.as_slice(),
                    &checkpoint.timestamp.as_nanos(),
                    &checkpoint.note,
                ],
            )
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn checkpoint_inner(
        &self,
        tenant: &TenantId,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>> {
        let client = self.client().await?;
        let row = match size {
            None => {
                client
                    .query_opt(
                        "SELECT size, root, time_ns, note FROM vigil_checkpoints
                          WHERE tenant = $1 ORDER BY size DESC LIMIT 1",
                        &[&tenant.as_str()],
                    )
                    .await?
            }
            Some(size) => {
                let Ok(size) = i64::try_from(size) else {
                    return Ok(None);
                };
                client
                    .query_opt(
                        "SELECT size, root, time_ns, note FROM vigil_checkpoints
                          WHERE tenant = $1 AND size = $2",
                        &[&tenant.as_str(), &size],
                    )
                    .await?
            }
        };
        row.as_ref().map(checkpoint_of).transpose()
    }

    async fn checkpoints_inner(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT size, root, time_ns, note FROM vigil_checkpoints
                  WHERE tenant = $1 ORDER BY size",
                &[&tenant.as_str()],
            )
            .await?;
        rows.iter().map(checkpoint_of).collect()
    }

    async fn load_meta_inner(&self, name: &str) -> Result<Option<(MetaVersion, Vec<u8>)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, doc FROM vigil_meta WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| {
            let version: i64 = r.get(0);
            (version.unsigned_abs(), r.get(1))
        }))
    }

    async fn save_meta_if_inner(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>> {
        let client = self.client().await?;
        let row = match expected {
            None => {
                client
                    .query_opt(
                        "INSERT INTO vigil_meta (name, version, doc) VALUES ($1, 1, $2)
                         ON CONFLICT (name) DO NOTHING RETURNING version",
                        &[&name, &bytes],
                    )
                    .await?
            }
            Some(v) => {
                let v = i64::try_from(v).unwrap_or(-1);
                client
                    .query_opt(
                        "UPDATE vigil_meta SET doc = $2, version = version + 1, updated_at = now()
                          WHERE name = $1 AND version = $3 RETURNING version",
                        &[&name, &bytes, &v],
                    )
                    .await?
            }
        };
        Ok(row.map(|r| r.get::<_, i64>(0).unsigned_abs()))
    }
}

/// A `vigil_checkpoints` row (`size, root, time_ns, note`).
fn checkpoint_of(row: &tokio_postgres::Row) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: to_seq(row.get(0))?,
        root: to_hash(row.get(1))?,
        timestamp: Timestamp::from_nanos(row.get(2)),
        note: row.get(3),
    })
}

/// An event of a `SELECT seq, time_ns, canonical, hash` row.
fn event_of(row: &tokio_postgres::Row) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: to_seq(row.get(0))?,
        time: Timestamp::from_nanos(row.get(1)),
        canonical: row.get(2),
        hash: to_hash(row.get(3))?,
    })
}

/// A tenant's events after a seq, in seq order (`PgStore::log_range`). A plain `bigint`
/// comparison on `seq`, so each partition's `(tenant, seq)` index yields the rows in order from
/// the position (no sort, no scan from seq 1); `WITH TIES` completes a run of rows sharing the
/// last seq.
const LOG_RANGE_SQL: &str = "SELECT seq, time_ns, canonical, hash FROM vigil_events
                              WHERE tenant = $1 AND seq > $2
                              ORDER BY seq FETCH FIRST $3 ROWS WITH TIES";

/// How opening a store failed, as the `Store` interface says it.
fn open_error(e: PgError) -> StoreError {
    if e.is_transient() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.to_string())
    }
}

/// The connection settings of every session of a store: `config`'s URL with vigil's session
/// options, and for a read-only store `default_transaction_read_only`.
fn session_config(config: &PgConfig, read_only: bool) -> Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| PgError::Config(format!("invalid database URL: {e}")))?;
    pg.connect_timeout(config.connect_timeout);
    // Durability does not depend on the server's or the role's defaults: a commit returns
    // once the WAL is flushed. A transaction left idle (a node cut off mid-write) releases
    // its tenant locks after a minute instead of blocking other nodes for hours.
    let mut options = format!(
        "{} -c statement_timeout={} -c synchronous_commit=on \
         -c idle_in_transaction_session_timeout=60000",
        pg.get_options().unwrap_or(""),
        config.statement_timeout.as_millis()
    );
    if read_only {
        // The database refuses any write of these sessions, whatever a bug might send.
        options.push_str(" -c default_transaction_read_only=on");
    }
    pg.options(options.trim());
    if pg.get_application_name().is_none() {
        pg.application_name(if read_only { "vigil-audit" } else { "vigil" });
    }
    Ok(pg)
}

/// A pool of at most `size` sessions configured as `session`, made when first needed.
fn build_pool(session: &tokio_postgres::Config, size: usize, config: &PgConfig) -> Result<Pool> {
    let manager = Manager::from_config(
        session.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

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

/// Creates the partitions for today and the days ahead; applies retention. The database work
/// runs without holding the partition list (only maintenance and retention use it).
async fn maintain(pool: &Pool, partitions: &Partitions, config: &PgConfig) -> Result<()> {
    let today = day_of(Timestamp::now().as_nanos());
    let ahead: BTreeSet<i64> =
        (today..=today.saturating_add(i64::from(config.partitions_ahead))).collect();
    let missing = !ahead.is_subset(&*partitions.lock().await);
    let mut client = pool.get().await?;
    if missing {
        let now = schema::create_partitions(&mut client, &ahead).await?;
        *partitions.lock().await = now;
    }
    if let Some(keep) = config.retention {
        let keep_ns = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = Timestamp::now().as_nanos().saturating_sub(keep_ns);
        // Whole days only: a day goes when its last instant is older than the cutoff.
        let cutoff = cutoff
            .div_euclid(NANOS_PER_DAY)
            .saturating_mul(NANOS_PER_DAY);
        schema::drop_partitions_before(&mut client, cutoff).await?;
        *partitions.lock().await = schema::existing_partitions(&**client).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, events: Vec<Prepared>) -> Result<Vec<Appended>, StoreError> {
        self.writable("append")?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sender = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is shutting down".into()))?;
        // Flattening every event is CPU work: off the async runtime for anything but a few.
        let (events, derived) = if events.len() > 16 {
            tokio::task::spawn_blocking(move || derive_all(events))
                .await
                .map_err(|e| StoreError::Internal(format!("deriving columns failed: {e}")))?
        } else {
            derive_all(events)
        };
        let derived = derived?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Job {
                events,
                derived,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.get_inner(tenant, id).await?)
    }

    async fn query(&self, tenant: &TenantId, query: &Query) -> Result<Page, StoreError> {
        Ok(self.query_inner(tenant, query).await?)
    }

    async fn count(
        &self,
        tenant: &TenantId,
        filter: &Expr,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        Ok(self.count_inner(tenant, filter, from, to).await?)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        // A read-only store has no writer: it is ready to read until shut down.
        let shut_down = if self.read_only {
            self.pool.is_closed()
        } else {
            self.jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none()
        };
        if shut_down {
            return Err(StoreError::Unavailable("the store is shut down".into()));
        }
        if let Some(writer) = self.writer.lock().await.as_ref()
            && writer.is_finished()
        {
            return Err(StoreError::Unavailable("the writer stopped".into()));
        }
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.load_meta_inner(name).await?.map(|(_, doc)| doc))
    }

    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.writable("saving meta documents")?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO vigil_meta (name, version, doc) VALUES ($1, 1, $2)
                 ON CONFLICT (name) DO UPDATE
                   SET doc = EXCLUDED.doc, version = vigil_meta.version + 1, updated_at = now()",
                &[&name, &bytes],
            )
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(MetaVersion, Vec<u8>)>, StoreError> {
        Ok(self.load_meta_inner(name).await?)
    }

    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>, StoreError> {
        self.writable("saving meta documents")?;
        Ok(self.save_meta_if_inner(name, expected, bytes).await?)
    }

    async fn meta_version(&self, name: &str) -> Result<Option<MetaVersion>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT version FROM vigil_meta WHERE name = $1", &[&name])
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| r.get::<_, i64>(0).unsigned_abs()))
    }

    async fn tree_size(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        Ok(self.tree_size_inner(tenant).await?)
    }

    async fn tree_sizes(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        Ok(self.tree_sizes_inner().await?)
    }

    async fn read_hashes(
        &self,
        tenant: &TenantId,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError> {
        self.read_hashes_inner(tenant, indexes).await
    }

    async fn save_checkpoint(
        &self,
        tenant: &TenantId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        self.writable("saving checkpoints")?;
        self.save_checkpoint_inner(tenant, checkpoint).await
    }

    async fn checkpoint(
        &self,
        tenant: &TenantId,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoint_inner(tenant, size).await?)
    }

    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints_inner(tenant).await?)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        // Closing the queue lets the writer finish what is queued, then stop.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
        if let Some(maintenance) = &self.maintenance {
            maintenance.abort();
        }
        self.pool.close();
        if let Some(write_pool) = &self.write_pool {
            write_pool.close();
        }
        Ok(())
    }
}

fn derive_all(events: Vec<Prepared>) -> (Vec<Prepared>, Result<Vec<Derived>, StoreError>) {
    let derived = events
        .iter()
        .map(|e| {
            Derived::of(&e.canonical_bytes(0))
                .ok_or_else(|| StoreError::Internal("an event is not a JSON object".into()))
        })
        .collect();
    (events, derived)
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(maintenance) = &self.maintenance {
            maintenance.abort();
        }
    }
}

#[cfg(all(test, feature = "testing"))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use serde_json::json;
    use vigil_event::{Limits, normalize};

    use super::*;
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
