//! Opaque pagination cursors: a position `(time, seq)` in the result order, and the time range
//! of the query they continue.
//!
//! Encoding: URL-safe base64 without padding of 35 bytes — a version byte (2), the order
//! (0 = desc, 1 = asc), the event time as big-endian i64 nanoseconds, the event `seq` as
//! big-endian u64, a range byte (bit 0: the range is pinned; bit 1: it has a `from`; bit 2: it
//! has a `to`), then `from` and `to` as big-endian i64 nanoseconds (zero when absent). Clients
//! must treat the text as opaque; the version byte lets the layout change without misreading
//! cursors issued before (version 1 cursors, which had no range, are refused).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vigil_event::Timestamp;

const VERSION: u8 = 2;
const ENCODED_BYTES: usize = 35;
/// Base64 length of [`ENCODED_BYTES`] without padding.
const ENCODED_CHARS: usize = 47;
const RANGE_PINNED: u8 = 0b001;
const RANGE_HAS_FROM: u8 = 0b010;
const RANGE_HAS_TO: u8 = 0b100;

/// Result order by event time, ties broken by `seq`. Newest first by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// The last event a page returned; the next page starts strictly after it in the query's
/// order, so events arriving meanwhile never cause a skip or a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub order: Order,
    pub time: Timestamp,
    pub seq: u64,
}

/// The resolved time bounds of a query (`from` inclusive, `to` exclusive), as a cursor carries
/// them from the first page to the next: a relative bound such as `from=-1h` is resolved once,
/// when the first page is served, so later pages cover the same range instead of one that has
/// moved on (and silently dropped the events it moved past).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl Cursor {
    /// URL-safe opaque text for this position and the `range` of the query it continues. This
    /// is what `next_cursor` should carry; [`crate::Query::encode_cursor`] fills in the range.
    pub fn encode_with_range(&self, range: TimeRange) -> String {
        self.encode_text(Some(range))
    }

    /// URL-safe opaque text for the position alone: the next page takes `from`/`to` from its
    /// own parameters, re-resolving relative ones. Prefer [`Cursor::encode_with_range`].
    pub fn encode(&self) -> String {
        self.encode_text(None)
    }

    fn encode_text(&self, range: Option<TimeRange>) -> String {
        let mut bytes = [0u8; ENCODED_BYTES];
        bytes[0] = VERSION;
        bytes[1] = match self.order {
            Order::Desc => 0,
            Order::Asc => 1,
        };
        bytes[2..10].copy_from_slice(&self.time.as_nanos().to_be_bytes());
        bytes[10..18].copy_from_slice(&self.seq.to_be_bytes());
        if let Some(range) = range {
            let mut flags = RANGE_PINNED;
            if let Some(from) = range.from {
                flags |= RANGE_HAS_FROM;
                bytes[19..27].copy_from_slice(&from.as_nanos().to_be_bytes());
            }
            if let Some(to) = range.to {
                flags |= RANGE_HAS_TO;
                bytes[27..35].copy_from_slice(&to.as_nanos().to_be_bytes());
            }
            bytes[18] = flags;
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads the position of a cursor made by [`Cursor::encode_with_range`] or
    /// [`Cursor::encode`]; anything else is
    /// [`QueryError::InvalidCursor`](crate::QueryError::InvalidCursor).
    pub fn decode(s: &str) -> Result<Self, crate::QueryError> {
        Self::decode_with_range(s).map(|(cursor, _)| cursor)
    }

    /// Reads a cursor and the time range it pins (`None` when it was made by
    /// [`Cursor::encode`] and pins none).
    pub fn decode_with_range(s: &str) -> Result<(Self, Option<TimeRange>), crate::QueryError> {
        let invalid = || crate::QueryError::InvalidCursor;
        if s.len() != ENCODED_CHARS {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
        let bytes: [u8; ENCODED_BYTES] = bytes.try_into().map_err(|_| invalid())?;
        let (head, rest) = bytes.split_at(2);
        let (time, rest) = rest.split_at(8);
        let (seq, rest) = rest.split_at(8);
        let (flags, rest) = rest.split_at(1);
        let (from, to) = rest.split_at(8);
        if head[0] != VERSION {
            return Err(invalid());
        }
        let order = match head[1] {
            0 => Order::Desc,
            1 => Order::Asc,
            _ => return Err(invalid()),
        };
        let int = |b: &[u8]| b.try_into().map(i64::from_be_bytes).map_err(|_| invalid());
        let cursor = Self {
            order,
            time: Timestamp::from_nanos(int(time)?),
            seq: u64::from_be_bytes(seq.try_into().map_err(|_| invalid())?),
        };
        let flags = flags[0];
        // One text per cursor: unknown bits, bounds without a pinned range, or bytes of an
        // absent bound are all refused rather than ignored.
        let bound = |present: u8, b: &[u8]| -> Result<Option<Timestamp>, crate::QueryError> {
            let nanos = int(b)?;
            match (flags & present != 0, nanos) {
                (true, nanos) => Ok(Some(Timestamp::from_nanos(nanos))),
                (false, 0) => Ok(None),
                (false, _) => Err(invalid()),
            }
        };
        if flags & !(RANGE_PINNED | RANGE_HAS_FROM | RANGE_HAS_TO) != 0
            || (flags & RANGE_PINNED == 0 && flags != 0)
        {
            return Err(invalid());
        }
        let range = TimeRange {
            from: bound(RANGE_HAS_FROM, from)?,
            to: bound(RANGE_HAS_TO, to)?,
        };
        Ok((cursor, (flags & RANGE_PINNED != 0).then_some(range)))
    }

    /// True when an event at `(time, seq)` comes after this cursor in its order.
    pub fn admits(&self, time: Timestamp, seq: u64) -> bool {
        match self.order {
            Order::Desc => (time, seq) < (self.time, self.seq),
            Order::Asc => (time, seq) > (self.time, self.seq),
        }
    }
}

impl Order {
    /// `desc` or `asc`, as the `order` parameter spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desc => "desc",
            Self::Asc => "asc",
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::QueryError;

    fn cursor(order: Order, time: i64, seq: u64) -> Cursor {
        Cursor {
            order,
            time: Timestamp::from_nanos(time),
            seq,
        }
    }

    fn range(from: Option<i64>, to: Option<i64>) -> TimeRange {
        TimeRange {
            from: from.map(Timestamp::from_nanos),
            to: to.map(Timestamp::from_nanos),
        }
    }

    #[test]
    fn encodes_as_url_safe_text() {
        let c = cursor(Order::Desc, 1_714_557_600_000_000_000, 42);
        let pinned = range(Some(1_714_554_000_000_000_000), None);
        for text in [c.encode(), c.encode_with_range(pinned)] {
            assert_eq!(text.len(), 47);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(Cursor::decode(&text), Ok(c));
        }
        assert_eq!(Cursor::decode_with_range(&c.encode()), Ok((c, None)));
        assert_eq!(
            Cursor::decode_with_range(&c.encode_with_range(pinned)),
            Ok((c, Some(pinned)))
        );
        // A pinned range without bounds is still pinned: later pages stay unbounded too.
        assert_eq!(
            Cursor::decode_with_range(&c.encode_with_range(TimeRange::default())),
            Ok((c, Some(TimeRange::default())))
        );
    }

    #[test]
    fn rejects_malformed_text() {
        let good = cursor(Order::Asc, -5, u64::MAX).encode_with_range(range(Some(1), None));
        let decoded = || URL_SAFE_NO_PAD.decode(&good).expect("own encoding");
        let altered = |at: usize, byte: u8| {
            let mut bytes = decoded();
            bytes[at] = byte;
            URL_SAFE_NO_PAD.encode(bytes)
        };
        // A version 1 cursor (the layout before ranges were pinned).
        let mut v1 = vec![1u8, 1];
        v1.extend_from_slice(&(-5i64).to_be_bytes());
        v1.extend_from_slice(&u64::MAX.to_be_bytes());
        for bad in [
            String::new(),
            "not a cursor".to_string(),
            format!("{good}="),
            format!("{good}A"),
            good[..46].to_string(),
            good.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
            URL_SAFE_NO_PAD.encode(v1),
            altered(0, 1),
            altered(0, 3),
            altered(1, 7),
            // Unknown range bits, bounds without a pinned range, bytes of an absent bound.
            altered(18, 0b1000 | RANGE_PINNED),
            altered(18, RANGE_HAS_FROM),
            altered(34, 9),
            URL_SAFE_NO_PAD.encode([2u8; 34]),
            URL_SAFE_NO_PAD.encode([2u8; 36]),
        ] {
            assert_eq!(
                Cursor::decode(&bad),
                Err(QueryError::InvalidCursor),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn admits_strictly_after_the_cursor_in_its_order() {
        let desc = cursor(Order::Desc, 100, 5);
        assert!(desc.admits(Timestamp::from_nanos(100), 4));
        assert!(desc.admits(Timestamp::from_nanos(99), 9));
        assert!(!desc.admits(Timestamp::from_nanos(100), 5));
        assert!(!desc.admits(Timestamp::from_nanos(101), 0));
        let asc = cursor(Order::Asc, 100, 5);
        assert!(asc.admits(Timestamp::from_nanos(100), 6));
        assert!(!asc.admits(Timestamp::from_nanos(100), 5));
        assert!(!asc.admits(Timestamp::from_nanos(99), 9));
    }

    fn any_order() -> impl Strategy<Value = Order> {
        prop_oneof![Just(Order::Desc), Just(Order::Asc)]
    }

    proptest! {
        #[test]
        fn round_trips(
            order in any_order(),
            time in any::<i64>(),
            seq in any::<u64>(),
            from in proptest::option::of(any::<i64>()),
            to in proptest::option::of(any::<i64>()),
        ) {
            let c = cursor(order, time, seq);
            prop_assert_eq!(Cursor::decode_with_range(&c.encode()), Ok((c, None)));
            let r = range(from, to);
            prop_assert_eq!(Cursor::decode_with_range(&c.encode_with_range(r)), Ok((c, Some(r))));
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,60}") {
            let _ = Cursor::decode(&s);
        }

        #[test]
        fn decode_never_panics_on_base64(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Cursor::decode(&URL_SAFE_NO_PAD.encode(bytes));
        }

        #[test]
        fn every_accepted_text_is_the_one_encoding(
            order in 0u8..3,
            position in proptest::collection::vec(any::<u8>(), 16),
            flags in 0u8..9,
            bounds in proptest::collection::vec(any::<u8>(), 16),
        ) {
            let mut bytes = vec![VERSION, order];
            bytes.extend(position);
            bytes.push(flags);
            bytes.extend(bounds);
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            if let Ok((c, r)) = Cursor::decode_with_range(&text) {
                let again = match r {
                    Some(r) => c.encode_with_range(r),
                    None => c.encode(),
                };
                prop_assert_eq!(again, text);
            }
        }
    }
}
