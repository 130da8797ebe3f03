//! Partition maintenance: the daily partitions kept created ahead, and retention, which drops
//! the partitions whose whole day is older than [`PgConfig::retention`].
//!
//! One round ([`maintain`]) runs when the store opens and then every `maintenance_interval`
//! (started by [`crate::open`]); [`PgStore::run_maintenance`] and
//! [`PgStore::drop_partitions_before`] run it, or a drop, on demand. The DDL itself is in
//! [`crate::schema`].

use std::collections::BTreeSet;

use deadpool_postgres::Pool;
use vigil_event::Timestamp;
use vigil_store::StoreError;

use crate::config::PgConfig;
use crate::error::{PgError, Result};
use crate::schema::{self, NANOS_PER_DAY, day_of};
use crate::{Partitions, PgStore};

impl PgStore {
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
}

/// Creates the partitions for today and the days ahead; applies retention. The database work
/// runs without holding the partition list (only maintenance and retention use it).
pub(crate) async fn maintain(
    pool: &Pool,
    partitions: &Partitions,
    config: &PgConfig,
) -> Result<()> {
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
