//! Migrations and daily partitions.
//!
//! Migrations are embedded SQL files, applied in order inside one transaction under an
//! advisory lock, each recorded in `vigil_migrations`: idempotent, and safe when several vigil
//! nodes start at once. A database migrated by a newer vigil is refused rather than misread.
//! Version 1 holds the events, their ids, the tenant heads and the meta documents; version 2
//! adds each tenant's Merkle tree (`vigil_tree_hashes`, `vigil_tenants.frontier`) and signed
//! checkpoints (`vigil_checkpoints`). The trees of logs written before version 2 are built
//! when the store opens (`crate::merkle::build_missing`), not by the migration.
//!
//! `vigil_events` is range-partitioned on `time_ns`, one partition per UTC day named
//! `vigil_events_pYYYYMMDD`, created ahead of time (today and the next `partitions_ahead`
//! days). Events for a day without a partition (back-filled history, far-future clocks) land
//! in `vigil_events_default`; when their day's partition is created later, they move into it.
//! So a write never creates tables, and clients cannot make the database create them.
//! Retention drops whole partitions (and deletes old rows of the default one).

use std::collections::BTreeSet;

use chrono::DateTime;
use tokio_postgres::GenericClient;

use crate::error::{PgError, Result};

/// `(version, sql)`, in order. A released migration is never edited; changes are new files.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_events.sql")),
    (2, include_str!("../migrations/0002_merkle.sql")),
    (
        3,
        include_str!("../migrations/0003_constraints_and_comments.sql"),
    ),
];

/// Advisory lock keys (an arbitrary constant per purpose, shared by every vigil node).
const MIGRATION_LOCK: i64 = 0x7669_6769_6c00_0001;
const PARTITION_LOCK: i64 = 0x7669_6769_6c00_0002;

pub(crate) const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// Applies every migration the database lacks.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vigil_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: BTreeSet<i32> = tx
        .query("SELECT version FROM vigil_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(&found) = applied.last()
        && found > known
    {
        return Err(PgError::SchemaTooNew { found, known });
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO vigil_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "database migration applied");
    }
    tx.commit().await?;
    Ok(())
}

/// Checks, changing nothing, that every migration this vigil knows is applied and none newer:
/// what a store opened read-only needs, since it never migrates.
pub(crate) async fn check_current(client: &impl GenericClient) -> Result<()> {
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    // `to_regclass` answers NULL for a missing table where a query on it would fail.
    let tracked: bool = client
        .query_one("SELECT to_regclass('vigil_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !tracked {
        return Err(PgError::SchemaNotCurrent { found: 0, known });
    }
    let applied: BTreeSet<i32> = client
        .query("SELECT version FROM vigil_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let found = applied.last().copied().unwrap_or(0);
    if found > known {
        return Err(PgError::SchemaTooNew { found, known });
    }
    // The version reached is the one before the first migration missing.
    match MIGRATIONS.iter().find(|(v, _)| !applied.contains(v)) {
        Some((missing, _)) => Err(PgError::SchemaNotCurrent {
            found: missing - 1,
            known,
        }),
        None => Ok(()),
    }
}

/// The UTC day (days since 1970-01-01) an event time falls in.
pub(crate) fn day_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(NANOS_PER_DAY)
}

/// The partition table holding `day`.
pub(crate) fn partition_name(day: i64) -> String {
    let date = DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y%m%d").to_string())
        .unwrap_or_else(|| format!("d{day}"));
    format!("vigil_events_p{date}")
}

/// The day a partition name stands for (`None` for tables that are not ours).
fn day_of_partition(name: &str) -> Option<i64> {
    let date = name.strip_prefix("vigil_events_p")?;
    let date = chrono::NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    Some(midnight.div_euclid(86_400))
}

/// The days that have a partition.
pub(crate) async fn existing_partitions(client: &impl GenericClient) -> Result<BTreeSet<i64>> {
    let rows = client
        .query(
            "SELECT c.relname::text
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'vigil_events'::regclass",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| day_of_partition(r.get::<_, &str>(0)))
        .collect())
}

/// `[start, end)` of a day in nanoseconds; `None` for the first and last days a `Timestamp`
/// can hold, whose bounds overflow (their events stay in the default partition).
pub(crate) fn day_bounds(day: i64) -> Option<(i64, i64)> {
    Some((
        day.checked_mul(NANOS_PER_DAY)?,
        day.checked_add(1)?.checked_mul(NANOS_PER_DAY)?,
    ))
}

/// How long partition DDL waits for its table locks before giving up until the next
/// maintenance round, so it never queues every query and write behind it.
const DDL_LOCK_TIMEOUT: &str = "5s";

/// Creates the partitions for `days` that do not exist yet; returns the days that exist now.
///
/// Each day is created as a plain table, filled with the rows the default partition holds for
/// that day, then attached: attaching takes a lighter lock on `vigil_events` than
/// `CREATE TABLE … PARTITION OF`, so queries and writes go on meanwhile. Serialised across
/// nodes by an advisory lock.
pub(crate) async fn create_partitions(
    client: &mut tokio_postgres::Client,
    days: &BTreeSet<i64>,
) -> Result<BTreeSet<i64>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        .await?;
    let existing = existing_partitions(&tx).await?;
    let mut created = BTreeSet::new();
    for &day in days.difference(&existing) {
        let Some((lo, hi)) = day_bounds(day) else {
            continue;
        };
        // DDL takes no bind parameters; the name and bounds are integers we computed.
        let name = partition_name(day);
        tx.batch_execute(&format!(
            "CREATE TABLE \"{name}\" (LIKE vigil_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             WITH moved AS (
                 DELETE FROM vigil_events_default WHERE time_ns >= {lo} AND time_ns < {hi}
                 RETURNING *
             )
             INSERT INTO \"{name}\" SELECT * FROM moved;
             ALTER TABLE vigil_events ATTACH PARTITION \"{name}\" FOR VALUES FROM ({lo}) TO ({hi});"
        ))
        .await?;
        created.insert(day);
    }
    tx.commit().await?;
    for &day in &created {
        tracing::info!(partition = %partition_name(day), "partition created");
    }
    Ok(existing.union(&created).copied().collect())
}

/// Rows deleted per statement when retention clears the default partition and the id table,
/// so no single statement runs long or holds many locks.
const DELETE_BATCH: i64 = 10_000;

/// Retention: drops every daily partition whose whole day lies before `cutoff_ns`, deletes
/// older events from the default partition, then the id entries of everything dropped.
/// Returns the names of the dropped partitions.
pub(crate) async fn drop_partitions_before(
    client: &mut tokio_postgres::Client,
    cutoff_ns: i64,
) -> Result<Vec<String>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        .await?;
    let mut dropped = Vec::new();
    for day in existing_partitions(&tx).await? {
        match day_bounds(day) {
            Some((_, end)) if end <= cutoff_ns => {}
            _ => break,
        }
        let name = partition_name(day);
        tx.batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .await?;
        dropped.push(name);
    }
    tx.commit().await?;
    for name in &dropped {
        tracing::info!(partition = %name, "partition dropped by retention");
    }
    for table in ["vigil_events_default", "vigil_event_ids"] {
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN
                 (SELECT ctid FROM {table} WHERE time_ns < $1 LIMIT $2)"
        );
        while client.execute(&sql, &[&cutoff_ns, &DELETE_BATCH]).await? > 0 {}
    }
    Ok(dropped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_utc_dates_and_read_back() {
        let t = vigil_event::Timestamp::parse_rfc3339("2024-05-01T23:59:59.999Z").unwrap();
        let day = day_of(t.as_nanos());
        assert_eq!(partition_name(day), "vigil_events_p20240501");
        assert_eq!(day_of_partition("vigil_events_p20240501"), Some(day));
        let before_epoch = vigil_event::Timestamp::parse_rfc3339("1969-12-31T23:00:00Z").unwrap();
        assert_eq!(
            partition_name(day_of(before_epoch.as_nanos())),
            "vigil_events_p19691231"
        );
        assert_eq!(day_of_partition("vigil_events"), None);
        assert_eq!(day_of_partition("vigil_events_pnotadate"), None);
    }
}
