//! Scopes: what a credential may do inside its tenant.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AuthError;

/// One permission. Least privilege: a scope implies nothing but itself, except
/// `admin` (implies `events:write`, `events:read`, `schemas:write` within its tenant) and
/// `root` (implies everything, in every tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `events:write` — append events.
    EventsWrite,
    /// `events:read` — query, count, stream and prove events.
    EventsRead,
    /// `schemas:write` — register and delete event schemas.
    SchemasWrite,
    /// `admin` — manage the keys and users of the credential's own tenant.
    Admin,
    /// `root` — administer every tenant; only root may grant root.
    Root,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::EventsWrite,
        Scope::EventsRead,
        Scope::SchemasWrite,
        Scope::Admin,
        Scope::Root,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::EventsRead => "events:read",
            Self::SchemasWrite => "schemas:write",
            Self::Admin => "admin",
            Self::Root => "root",
        }
    }

    /// Whether holding `self` grants `wanted`.
    pub fn implies(self, wanted: Scope) -> bool {
        match self {
            Self::Root => true,
            Self::Admin => wanted != Self::Root,
            other => other == wanted,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                AuthError::invalid(
                    "invalid_scope",
                    format!(
                        "unknown scope {s:?}; expected one of events:write, events:read, \
                     schemas:write, admin, root"
                    ),
                )
            })
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of scopes, ordered as [`Scope::ALL`]. Serialised as a JSON array of strings
/// (`["events:write","events:read"]`); displayed comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list: `"events:write, events:read"`. Whitespace around items
    /// and empty items are ignored; an unknown scope is an `invalid_scope` error.
    pub fn parse_list(s: &str) -> Result<Self, AuthError> {
        s.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(Scope::from_str)
            .collect()
    }

    /// Whether the set holds exactly this scope (no implication; see [`Scopes::allows`]).
    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// Whether some scope of the set implies `wanted` (`admin` allows `events:read`).
    pub fn allows(&self, wanted: Scope) -> bool {
        self.0.iter().any(|held| held.implies(wanted))
    }

    pub fn insert(&mut self, scope: Scope) -> bool {
        self.0.insert(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every scope of `self` is also in `other` (literally, without implication).
    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for Scopes {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::parse_list(s)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<const N: usize> From<[Scope; N]> for Scopes {
    fn from(scopes: [Scope; N]) -> Self {
        scopes.into_iter().collect()
    }
}

impl IntoIterator for Scopes {
    type Item = Scope;
    type IntoIter = std::collections::btree_set::IntoIter<Scope>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = Scope;
    type IntoIter = std::iter::Copied<std::collections::btree_set::Iter<'a, Scope>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_lists_with_spaces_and_duplicates() {
        let s = Scopes::parse_list(" events:write , events:read,events:write,").unwrap();
        assert_eq!(s, Scopes::from([Scope::EventsWrite, Scope::EventsRead]));
        assert_eq!(s.to_string(), "events:write,events:read");
        assert!(Scopes::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn unknown_scope_is_a_clear_error() {
        let err = Scopes::parse_list("events:write,events:delete").unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        assert!(err.to_string().contains("\"events:delete\""), "{err}");
        assert!(err.to_string().contains("expected one of"), "{err}");
        // Case matters: scopes are identifiers, not prose.
        assert!("Admin".parse::<Scope>().is_err());
    }

    #[test]
    fn serde_is_an_array_of_strings() {
        let s = Scopes::from([Scope::Admin, Scope::EventsRead]);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["events:read","admin"]"#
        );
        let back: Scopes = serde_json::from_str(r#"["admin","events:read"]"#).unwrap();
        assert_eq!(back, s);
        let err = serde_json::from_str::<Scopes>(r#"["admin","everything"]"#).unwrap_err();
        assert!(err.to_string().contains("unknown scope"), "{err}");
        assert!(serde_json::from_str::<Scopes>(r#""admin""#).is_err());
    }

    /// The whole implication table: rows are held scopes, columns wanted scopes.
    #[test]
    fn implication_table() {
        use Scope::*;
        let table = [
            (EventsWrite, [true, false, false, false, false]),
            (EventsRead, [false, true, false, false, false]),
            (SchemasWrite, [false, false, true, false, false]),
            (Admin, [true, true, true, true, false]),
            (Root, [true, true, true, true, true]),
        ];
        for (held, row) in table {
            for (wanted, expected) in Scope::ALL.into_iter().zip(row) {
                assert_eq!(held.implies(wanted), expected, "{held} implies {wanted}");
                assert_eq!(
                    Scopes::from([held]).allows(wanted),
                    expected,
                    "{held} allows {wanted}"
                );
            }
        }
        assert!(!Scopes::new().allows(EventsRead));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(mask in 0u8..32) {
            let scopes: Scopes =
                Scope::ALL.into_iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| s).collect();
            prop_assert_eq!(Scopes::parse_list(&scopes.to_string()).unwrap(), scopes);
        }

        #[test]
        fn parse_never_panics_and_accepts_only_known(s in "\\PC{0,40}") {
            if let Ok(scopes) = Scopes::parse_list(&s) {
                for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    prop_assert!(Scope::ALL.iter().any(|k| k.as_str() == item));
                }
                prop_assert!(scopes.len() <= Scope::ALL.len());
            }
        }
    }
}
