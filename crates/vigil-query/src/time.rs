//! Absolute and relative time bounds.

use vigil_event::Timestamp;

/// Parses `from`/`to` values: RFC 3339 (`2024-05-01T00:00:00Z`), a date (`2024-05-01`,
/// midnight UTC), relative to `now` (`-15m`, `-24h`, `-7d`, `-30s`, `now`), or Unix epoch
/// seconds / milliseconds as an integer.
pub fn parse_time_bound(s: &str, now: Timestamp) -> Option<Timestamp> {
    todo!()
}
