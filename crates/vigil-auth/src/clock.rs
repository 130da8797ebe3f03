//! Time, behind a trait so tests can move it (key and token expiry, rate limiting).

use std::fmt::Debug;
use std::time::Instant;

use chrono::{DateTime, Utc};

pub(crate) trait Clock: Send + Sync + Debug + 'static {
    /// Wall-clock time, for expiry (`exp`, `expires_at`).
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time, for rate limiting.
    fn instant(&self) -> Instant;
}

#[derive(Debug)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
pub(crate) use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A clock that only moves when told to.
    #[derive(Debug)]
    pub(crate) struct ManualClock {
        start: (DateTime<Utc>, Instant),
        elapsed: Mutex<Duration>,
    }

    impl ManualClock {
        pub(crate) fn new() -> Self {
            Self {
                start: (Utc::now(), Instant::now()),
                elapsed: Mutex::new(Duration::ZERO),
            }
        }

        pub(crate) fn advance(&self, by: Duration) {
            *self.elapsed.lock().unwrap() += by;
        }

        fn elapsed(&self) -> Duration {
            *self.elapsed.lock().unwrap()
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            self.start.0 + self.elapsed()
        }

        fn instant(&self) -> Instant {
            self.start.1 + self.elapsed()
        }
    }
}
