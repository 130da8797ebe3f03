//! The bound on `POST /v1/events` bodies in flight, so memory stays bounded however many
//! clients send at once.
//!
//! A request reserves its body's size (from `Content-Length`, or the largest body allowed when
//! the length is not declared) before reading it, and holds the reservation until its append
//! returns: the parsed and prepared batch lives that long, and it is a few times the body.
//! Room is counted in KiB on a semaphore; a request that finds none waits up to
//! [`WAIT`], then is turned away with 503 `overloaded`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Bytes per semaphore permit.
const UNIT: usize = 1024;
/// How long a request waits for room before it is turned away.
pub(crate) const WAIT: Duration = Duration::from_secs(1);

/// The budget of ingest bytes in flight.
#[derive(Debug)]
pub(crate) struct InflightBudget {
    /// One permit per KiB of the budget.
    semaphore: Arc<Semaphore>,
    /// Permits in all; a request never asks for more, so one larger than the whole budget
    /// runs alone rather than never.
    total: u32,
}

/// Room held for one request; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl InflightBudget {
    /// A budget of `max_bytes` (at least 1 KiB).
    pub(crate) fn new(max_bytes: usize) -> Self {
        let units = max_bytes
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let total = u32::try_from(units).unwrap_or(u32::MAX);
        Self {
            semaphore: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Reserves room for a body of `bytes`, waiting up to [`WAIT`] for it.
    pub(crate) async fn reserve(&self, bytes: usize) -> Result<Reservation, ApiError> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.total);
        let acquire = Arc::clone(&self.semaphore).acquire_many_owned(units);
        match tokio::time::timeout(WAIT, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation { _permit: permit }),
            // Timed out, or the semaphore was closed (it never is).
            Ok(Err(_)) | Err(_) => Err(ApiError::Overloaded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_share_the_budget_and_wait_for_room() {
        let budget = InflightBudget::new(10 * UNIT);
        let a = budget.reserve(6 * UNIT).await.unwrap();
        let _b = budget.reserve(4 * UNIT - 100).await.unwrap();
        let started = tokio::time::Instant::now();
        let e = budget.reserve(1).await.unwrap_err();
        assert_eq!(e.code(), "overloaded");
        assert_eq!(started.elapsed(), WAIT);

        // Room freed while a request waits is given to it.
        let waiting = budget.reserve(5 * UNIT);
        let release = async {
            tokio::time::sleep(WAIT / 2).await;
            drop(a);
        };
        let (got, ()) = tokio::join!(waiting, release);
        assert!(got.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_budget_runs_alone() {
        let budget = InflightBudget::new(4 * UNIT);
        let all = budget.reserve(100 * UNIT).await.unwrap();
        assert_eq!(budget.reserve(1).await.unwrap_err().code(), "overloaded");
        drop(all);
        assert!(budget.reserve(1).await.is_ok());
        assert!(InflightBudget::new(0).reserve(usize::MAX).await.is_ok());
    }
}
