//! Opaque pagination cursors: a position `(time, seq)` in the result order.
//!
//! Encoding: URL-safe base64 without padding of 18 bytes — a version byte (1), the order
//! (0 = desc, 1 = asc), the event time as big-endian i64 nanoseconds, the event `seq` as
//! big-endian u64. Clients must treat the text as opaque; the version byte lets the layout
//! change without misreading cursors issued before.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vigil_event::Timestamp;

const VERSION: u8 = 1;
const ENCODED_BYTES: usize = 18;
/// Base64 length of [`ENCODED_BYTES`] without padding.
const ENCODED_CHARS: usize = 24;

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

impl Cursor {
    /// URL-safe opaque text.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; ENCODED_BYTES];
        bytes[0] = VERSION;
        bytes[1] = match self.order {
            Order::Desc => 0,
            Order::Asc => 1,
        };
        bytes[2..10].copy_from_slice(&self.time.as_nanos().to_be_bytes());
        bytes[10..18].copy_from_slice(&self.seq.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor made by [`Cursor::encode`]; anything else is
    /// [`QueryError::InvalidCursor`](crate::QueryError::InvalidCursor).
    pub fn decode(s: &str) -> Result<Self, crate::QueryError> {
        let invalid = || crate::QueryError::InvalidCursor;
        if s.len() != ENCODED_CHARS {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
        let bytes: [u8; ENCODED_BYTES] = bytes.try_into().map_err(|_| invalid())?;
        let [version, order, rest @ ..] = bytes;
        if version != VERSION {
            return Err(invalid());
        }
        let order = match order {
            0 => Order::Desc,
            1 => Order::Asc,
            _ => return Err(invalid()),
        };
        let (time, seq) = rest.split_at(8);
        let time = i64::from_be_bytes(time.try_into().map_err(|_| invalid())?);
        let seq = u64::from_be_bytes(seq.try_into().map_err(|_| invalid())?);
        Ok(Self {
            order,
            time: Timestamp::from_nanos(time),
            seq,
        })
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

    #[test]
    fn encodes_as_url_safe_text() {
        let c = cursor(Order::Desc, 1_714_557_600_000_000_000, 42);
        let text = c.encode();
        assert_eq!(text.len(), 24);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        assert_eq!(Cursor::decode(&text), Ok(c));
    }

    #[test]
    fn rejects_malformed_text() {
        let good = cursor(Order::Asc, -5, u64::MAX).encode();
        let mut wrong_version = URL_SAFE_NO_PAD.decode(&good).expect("own encoding");
        wrong_version[0] = 2;
        let mut wrong_order = URL_SAFE_NO_PAD.decode(&good).expect("own encoding");
        wrong_order[1] = 7;
        for bad in [
            String::new(),
            "not a cursor".to_string(),
            format!("{good}="),
            format!("{good}A"),
            good[..23].to_string(),
            good.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
            URL_SAFE_NO_PAD.encode(wrong_version),
            URL_SAFE_NO_PAD.encode(wrong_order),
            URL_SAFE_NO_PAD.encode([1u8; 17]),
            URL_SAFE_NO_PAD.encode([1u8; 19]),
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
        fn round_trips(order in any_order(), time in any::<i64>(), seq in any::<u64>()) {
            let c = cursor(order, time, seq);
            prop_assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,40}") {
            let _ = Cursor::decode(&s);
        }

        #[test]
        fn decode_never_panics_on_base64(bytes in proptest::collection::vec(any::<u8>(), 0..30)) {
            let _ = Cursor::decode(&URL_SAFE_NO_PAD.encode(bytes));
        }
    }
}
