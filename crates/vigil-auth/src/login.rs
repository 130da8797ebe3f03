//! Guards around password logins: argon2id is deliberately expensive, so an open login endpoint
//! must bound both how many verifications run at once and how many guesses one username gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AuthError;
use crate::password::USERNAME_MAX_LEN;
use crate::rate::RateLimit;

/// What a login answers when every verification slot is taken and the queue is full.
pub(crate) const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Bounds on password logins (`POST /v1/auth/token` with a username and password).
#[derive(Debug, Clone, PartialEq)]
pub struct LoginLimits {
    /// Password verifications that may run at once. Each takes 19 MiB and tens of
    /// milliseconds of one core, so more than the cores can serve only adds memory. Default:
    /// the machine's available parallelism, at least 1.
    pub max_concurrent: usize,
    /// Logins that may wait for a verification slot (default 64). Beyond it a login is refused
    /// at once with 429 `rate_limited` and `Retry-After: 1`, instead of queueing without end.
    pub max_waiting: usize,
    /// Failed logins per username: `burst` failures, refilled at `per_second` (default 10,
    /// then one a minute). Once spent, logins of that username are refused with 429 without
    /// checking the password — unknown usernames alike, so the answer does not reveal which
    /// users exist.
    pub failures: RateLimit,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_concurrent: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_waiting: 64,
            failures: RateLimit {
                per_second: 1.0 / 60.0,
                burst: 10,
            },
        }
    }
}

impl LoginLimits {
    pub(crate) fn validate(&self) -> Result<(), AuthError> {
        if self.max_concurrent == 0 {
            return Err(AuthError::invalid(
                "invalid_config",
                "login max_concurrent must be at least 1",
            ));
        }
        self.failures.validate()
    }
}

/// The verification slots and the bounded queue in front of them.
#[derive(Debug)]
pub(crate) struct LoginGate {
    slots: Arc<Semaphore>,
    /// Logins currently waiting for a slot; never more than `max_waiting` are let in.
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Leaves the queue when dropped, including when the waiting login is cancelled.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LoginGate {
    pub(crate) fn new(limits: &LoginLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.max_waiting,
        }
    }

    /// A verification slot, at once or after waiting in a queue of at most `max_waiting`;
    /// `RateLimited { retry_after: 1s }` when the queue is full. The permit must be held until
    /// the verification has finished (it is moved into the blocking task), so cancelled
    /// requests cannot push the number of running verifications past the bound.
    pub(crate) async fn enter(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _in_queue = InQueue(&self.waiting);
        if ahead >= self.max_waiting {
            return Err(AuthError::RateLimited {
                retry_after: BUSY_RETRY_AFTER,
            });
        }
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal("login semaphore closed".into()))
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }
}

/// The failure bucket a login attempt for `username` counts against. Valid usernames are their
/// own key; anything else (which no user can have) is keyed by its SHA-256, so an attacker
/// cannot fill the bounded bucket map with megabyte-long keys.
pub(crate) fn failure_key(username: &str) -> String {
    if crate::password::validate_username(username).is_ok() {
        debug_assert!(username.len() <= USERNAME_MAX_LEN);
        username.to_owned()
    } else {
        // `!` is not a username character, so this never collides with a real username.
        format!("!{}", hex::encode(Sha256::digest(username.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_concurrent: usize, max_waiting: usize) -> LoginGate {
        LoginGate::new(&LoginLimits {
            max_concurrent,
            max_waiting,
            ..LoginLimits::default()
        })
    }

    /// Lets spawned tasks run until `done` holds (single-threaded test runtime, no sleeping).
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn slots_then_a_bounded_queue_then_refusal() {
        let gate = Arc::new(gate(2, 1));
        let first = gate.enter().await.unwrap();
        let _second = gate.enter().await.unwrap();

        // Both slots taken: the next login waits.
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.enter().await.map(drop) }
        });
        until(|| gate.waiting() == 1).await;

        // The queue is full: refused at once, and the refused login leaves no trace.
        match gate.enter().await {
            Err(AuthError::RateLimited { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(1))
            }
            other => panic!("expected rate limited, got {other:?}"),
        }
        assert_eq!(gate.waiting(), 1);

        // A slot frees up: the waiting login gets it.
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let gate = Arc::new(gate(1, 1));
        let _held = gate.enter().await.unwrap();
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.enter().await.map(drop) }
        });
        until(|| gate.waiting() == 1).await;
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.waiting(), 0);
        // Its place is free again.
        let again = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.enter().await.map(drop) }
        });
        until(|| gate.waiting() == 1).await;
        again.abort();
    }

    #[test]
    fn defaults_and_validation() {
        let limits = LoginLimits::default();
        assert!(limits.max_concurrent >= 1);
        assert_eq!(limits.max_waiting, 64);
        assert_eq!(limits.failures.burst, 10);
        assert!(limits.validate().is_ok());
        let none = LoginLimits {
            max_concurrent: 0,
            ..LoginLimits::default()
        };
        assert_eq!(none.validate().unwrap_err().code(), "invalid_config");
    }

    #[test]
    fn failure_keys_are_bounded() {
        assert_eq!(failure_key("alice@example.com"), "alice@example.com");
        let long = failure_key(&"x".repeat(1 << 20));
        assert_eq!(long.len(), 65);
        assert!(long.starts_with('!'));
        assert_ne!(failure_key("not a name"), failure_key("not a name!"));
    }
}
