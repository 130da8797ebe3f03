//! Absolute and relative time bounds.

use vigil_event::Timestamp;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const NANOS_PER_MILLI: i64 = 1_000_000;

/// Epoch integers at or above this are milliseconds, below it seconds.
/// 10^11 seconds is the year 5138; 10^11 milliseconds is March 1973, so every plausible
/// timestamp of either unit lands on the right side.
const EPOCH_MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Parses `from`/`to` values: RFC 3339 (`2024-05-01T00:00:00Z`), a date (`2024-05-01`,
/// midnight UTC), relative to `now` (`-15m`, `-24h`, `-7d`, `-30s`, `now`), or Unix epoch
/// seconds / milliseconds as an integer.
///
/// Relative times also accept `w` (weeks). Epoch integers are non-negative; below 10^11 they
/// are seconds, from 10^11 on milliseconds. Times outside what [`Timestamp`] can hold give `None`.
pub fn parse_time_bound(s: &str, now: Timestamp) -> Option<Timestamp> {
    TimeLiteral::parse(s)?.resolve(now)
}

/// A time as written, before `now` is known: what a range literal like `time>-15m` holds until
/// it is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeLiteral {
    Absolute(Timestamp),
    /// Nanoseconds before `now` (`now` itself is 0).
    Ago(i64),
}

impl TimeLiteral {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if s == "now" {
            return Some(Self::Ago(0));
        }
        if let Some(rest) = s.strip_prefix('-')
            && let Some(ago) = parse_duration(rest)
        {
            return Some(Self::Ago(ago));
        }
        if is_digits(s) {
            let n: i64 = s.parse().ok()?;
            let nanos = if n < EPOCH_MILLIS_THRESHOLD {
                n.checked_mul(NANOS_PER_SEC)?
            } else {
                n.checked_mul(NANOS_PER_MILLI)?
            };
            return Some(Self::Absolute(Timestamp::from_nanos(nanos)));
        }
        if is_date(s) {
            return Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z")).map(Self::Absolute);
        }
        Timestamp::parse_rfc3339(s).map(Self::Absolute)
    }

    pub(crate) fn resolve(self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Absolute(t) => Some(t),
            Self::Ago(nanos) => now.as_nanos().checked_sub(nanos).map(Timestamp::from_nanos),
        }
    }
}

/// `15m`, `24h`, `7d`, `30s`, `2w` → nanoseconds.
fn parse_duration(s: &str) -> Option<i64> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() {
        return None;
    }
    let per_unit = match unit {
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        "w" => 7 * 86_400 * NANOS_PER_SEC,
        _ => return None,
    };
    digits.parse::<i64>().ok()?.checked_mul(per_unit)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD` (calendar validity is checked by the RFC 3339 parser).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).expect("test timestamp")
    }

    #[test]
    fn rfc3339_with_any_offset() {
        let now = ts("2030-01-01T00:00:00Z");
        assert_eq!(
            parse_time_bound("2024-05-01T10:00:00Z", now),
            Some(ts("2024-05-01T10:00:00Z"))
        );
        assert_eq!(
            parse_time_bound("2024-05-01T12:00:00+02:00", now),
            Some(ts("2024-05-01T10:00:00Z"))
        );
        assert_eq!(
            parse_time_bound("2024-05-01T10:00:00.250Z", now),
            Some(ts("2024-05-01T10:00:00.25Z"))
        );
    }

    #[test]
    fn dates_are_midnight_utc() {
        let now = ts("2030-01-01T00:00:00Z");
        assert_eq!(
            parse_time_bound("2024-05-01", now),
            Some(ts("2024-05-01T00:00:00Z"))
        );
        assert_eq!(parse_time_bound("2024-02-30", now), None);
        assert_eq!(parse_time_bound("2024-5-01", now), None);
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = ts("2024-05-02T00:00:00Z");
        assert_eq!(parse_time_bound("now", now), Some(now));
        assert_eq!(
            parse_time_bound("-30s", now),
            Some(ts("2024-05-01T23:59:30Z"))
        );
        assert_eq!(
            parse_time_bound("-15m", now),
            Some(ts("2024-05-01T23:45:00Z"))
        );
        assert_eq!(
            parse_time_bound("-24h", now),
            Some(ts("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            parse_time_bound("-7d", now),
            Some(ts("2024-04-25T00:00:00Z"))
        );
        assert_eq!(
            parse_time_bound("-1w", now),
            Some(ts("2024-04-25T00:00:00Z"))
        );
        assert_eq!(parse_time_bound("-0m", now), Some(now));
    }

    #[test]
    fn epoch_seconds_and_milliseconds() {
        let now = ts("2030-01-01T00:00:00Z");
        assert_eq!(
            parse_time_bound("1714557600", now),
            Some(ts("2024-05-01T10:00:00Z"))
        );
        assert_eq!(
            parse_time_bound("1714557600000", now),
            Some(ts("2024-05-01T10:00:00Z"))
        );
        assert_eq!(parse_time_bound("0", now), Some(Timestamp::from_nanos(0)));
    }

    #[test]
    fn rejects_everything_else() {
        let now = ts("2030-01-01T00:00:00Z");
        for bad in [
            "",
            " ",
            "15m",
            "-15",
            "-m",
            "-15x",
            "-15M",
            "--15m",
            "+15m",
            "yesterday",
            "NOW",
            "1.5",
            "1e9",
            "2024-05-01T10:00:00",
            "99999999999999999999",
            "-9999999999999999d",
            "-١٥m",
        ] {
            assert_eq!(parse_time_bound(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn out_of_range_is_none_not_a_panic() {
        assert_eq!(
            parse_time_bound("-1d", Timestamp::from_nanos(i64::MIN)),
            None
        );
        assert_eq!(
            parse_time_bound("9999999999999999", Timestamp::from_nanos(0)),
            None
        );
        assert_eq!(
            parse_time_bound("9999-12-31T23:59:59Z", Timestamp::from_nanos(0)),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,30}", now in proptest::num::i64::ANY) {
            let _ = parse_time_bound(&s, Timestamp::from_nanos(now));
        }
    }
}
