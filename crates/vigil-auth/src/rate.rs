//! Per-credential token buckets.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// A request budget per credential: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    pub(crate) fn validate(&self) -> Result<(), AuthError> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) || self.burst == 0 {
            return Err(AuthError::invalid(
                "invalid_config",
                "rate limit needs per_second > 0 and burst >= 1",
            ));
        }
        Ok(())
    }
}

/// How many credentials' buckets are kept at most. Past it, buckets that have refilled
/// completely go first (forgetting them changes nothing), then the least recently used.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by credential id. The caller passes the time, so tests drive it with
/// a controllable clock.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    capacity: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit, capacity: usize) -> Self {
        Self {
            limit,
            capacity: capacity.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.capacity {
            self.evict(&mut buckets, now);
        }
        let burst = f64::from(self.limit.burst);
        let bucket = buckets.entry(key.to_owned()).or_insert_with(|| Bucket {
            tokens: burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = bucket.updated.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.limit.per_second,
            ))
        }
    }

    /// Whether `key` has a token left, without taking it: `Err(wait)` when its bucket is
    /// empty. Unknown keys have a full bucket and are not added.
    pub(crate) fn peek(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match buckets.get(key) {
            Some(bucket) => {
                let tokens = self.refilled(bucket, now);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64(
                        (1.0 - tokens) / self.limit.per_second,
                    ))
                }
            }
            None => Ok(()),
        }
    }

    /// Gives back one token a [`check`](Self::check) took, when what it paid for turned out
    /// not to count (a login that succeeded). Never fills a bucket past `burst`.
    pub(crate) fn refund(&self, key: &str, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (self.refilled(bucket, now) + 1.0).min(f64::from(self.limit.burst));
            bucket.updated = bucket.updated.max(now);
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst))
    }

    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let burst = f64::from(self.limit.burst);
        buckets.retain(|_, bucket| self.refilled(bucket, now) < burst);
        while buckets.len() >= self.capacity {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => buckets.remove(&key),
                None => break,
            };
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, capacity: usize) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst }, capacity)
    }

    #[test]
    fn burst_then_refill() {
        let l = limiter(2.0, 3, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("k", t0), Ok(()));
        }
        assert_eq!(l.check("k", t0), Err(Duration::from_millis(500)));
        // Half a token later: still refused, a quarter second to go.
        assert_eq!(
            l.check("k", t0 + Duration::from_millis(250)),
            Err(Duration::from_millis(250))
        );
        // One token refilled after 500 ms: exactly one request passes.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.check("k", t1), Ok(()));
        assert!(l.check("k", t1).is_err());
        // A long pause refills to `burst`, never more.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check("k", t2), Ok(()));
        }
        assert!(l.check("k", t2).is_err());
    }

    #[test]
    fn buckets_are_per_credential() {
        let l = limiter(1.0, 1, 10);
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        assert!(l.check("a", t0).is_err());
        assert_eq!(l.check("b", t0), Ok(()));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let l = limiter(1.0, 1, 10);
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(l.check("k", t0), Ok(()));
        assert!(l.check("k", t0 - Duration::from_secs(5)).is_err());
        assert_eq!(l.check("k", t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn map_stays_bounded_and_evicts_idle_buckets_first() {
        let l = limiter(1.0, 2, 3);
        let t0 = Instant::now();
        // "busy" is drained; "idle-1" and "idle-2" used one token each.
        l.check("busy", t0).unwrap();
        l.check("busy", t0).unwrap();
        l.check("idle-1", t0).unwrap();
        l.check("idle-2", t0).unwrap();
        assert_eq!(l.len(), 3);
        // 1.5 s later the idle buckets are full again, "busy" is not (1.5 of 2 tokens).
        let t1 = t0 + Duration::from_millis(1500);
        l.check("new", t1).unwrap();
        assert_eq!(l.len(), 2, "full buckets were evicted");
        // "busy" kept its state: one token left, then refused.
        l.check("busy", t1).unwrap();
        assert!(l.check("busy", t1).is_err());

        // With no idle bucket to drop, the least recently used one goes.
        let l = limiter(1.0, 5, 2);
        l.check("a", t0).unwrap();
        l.check("b", t0 + Duration::from_millis(1)).unwrap();
        l.check("c", t0 + Duration::from_millis(2)).unwrap();
        assert_eq!(l.len(), 2);
        for i in 0..100 {
            l.check(&format!("k{i}"), t0 + Duration::from_millis(3))
                .unwrap();
        }
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn peek_takes_nothing() {
        let l = limiter(1.0, 2, 10);
        let t0 = Instant::now();
        assert_eq!(l.peek("k", t0), Ok(()));
        assert_eq!(l.len(), 0, "peeking adds no bucket");
        l.check("k", t0).unwrap();
        for _ in 0..10 {
            assert_eq!(l.peek("k", t0), Ok(()));
        }
        l.check("k", t0).unwrap();
        assert_eq!(l.peek("k", t0), Err(Duration::from_secs(1)));
        assert_eq!(l.peek("k", t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn refund_returns_one_token_up_to_the_burst() {
        let l = limiter(1.0, 2, 10);
        let t0 = Instant::now();
        l.check("k", t0).unwrap();
        l.check("k", t0).unwrap();
        assert!(l.check("k", t0).is_err());
        l.refund("k", t0);
        assert_eq!(l.check("k", t0), Ok(()));
        assert!(l.check("k", t0).is_err());
        // Refunds never exceed the burst, and an unknown key is left alone.
        for _ in 0..5 {
            l.refund("k", t0);
        }
        l.refund("other", t0);
        assert_eq!(l.len(), 1);
        l.check("k", t0).unwrap();
        l.check("k", t0).unwrap();
        assert!(l.check("k", t0).is_err());
    }

    #[test]
    fn invalid_limits_are_rejected() {
        for (per_second, burst) in [
            (0.0, 1),
            (-1.0, 1),
            (f64::NAN, 1),
            (f64::INFINITY, 1),
            (1.0, 0),
        ] {
            let err = RateLimit { per_second, burst }.validate().unwrap_err();
            assert_eq!(err.code(), "invalid_config");
        }
        assert!(
            RateLimit {
                per_second: 0.5,
                burst: 1
            }
            .validate()
            .is_ok()
        );
    }
}
