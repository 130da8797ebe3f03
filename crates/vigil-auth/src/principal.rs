//! Who is making a request: the outcome of authentication.

use std::fmt;

use serde::Serialize;
use vigil_event::TenantId;

use crate::error::AuthError;
use crate::scope::{Scope, Scopes};

/// The tenant that root credentials created at bootstrap belong to. Root administers every
/// tenant, but events it writes (like any credential's) go to its own tenant: this one.
pub const SYSTEM_TENANT: &str = "system";

/// [`SYSTEM_TENANT`] as a `TenantId`.
pub fn system_tenant() -> TenantId {
    TenantId::parse(SYSTEM_TENANT).unwrap_or_else(|_| unreachable!("\"system\" is a valid tenant"))
}

/// Which stored credential a principal stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum CredentialRef {
    /// An API key, by its public id.
    Key(String),
    /// A user, by username.
    User(String),
}

impl CredentialRef {
    /// The id used in JWT `sub`, `created_by` and rate limiting: the key id, or
    /// `user:<name>` (key ids never contain `:`, so the two cannot collide).
    pub fn id(&self) -> String {
        match self {
            Self::Key(id) => id.clone(),
            Self::User(name) => format!("user:{name}"),
        }
    }
}

impl fmt::Display for CredentialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => f.write_str(id),
            Self::User(name) => write!(f, "user:{name}"),
        }
    }
}

/// An authenticated caller. The tenant always comes from here, never from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    /// Key name or username: the default `source` of the events it writes.
    pub name: String,
    pub credential: CredentialRef,
    /// What this request may do. For a JWT, the token's scopes (a subset of the credential's).
    pub scopes: Scopes,
}

impl Principal {
    /// Ok when the principal holds `scope` or a scope implying it (`admin` implies
    /// `events:*` and `schemas:write`; `root` implies everything).
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!("missing scope {scope}")))
        }
    }

    /// Whether the principal may manage the keys and users of `tenant`: root anywhere, admin
    /// in its own tenant only.
    pub fn can_admin(&self, tenant: &TenantId) -> bool {
        self.scopes.allows(Scope::Root)
            || (self.scopes.allows(Scope::Admin) && self.tenant == *tenant)
    }

    /// See [`CredentialRef::id`].
    pub fn credential_id(&self) -> String {
        self.credential.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: &str, scopes: &str) -> Principal {
        Principal {
            tenant: TenantId::parse(tenant).unwrap(),
            name: "svc".into(),
            credential: CredentialRef::Key("abcdefghijkl".into()),
            scopes: Scopes::parse_list(scopes).unwrap(),
        }
    }

    #[test]
    fn require_follows_the_implication_table() {
        let writer = principal("acme", "events:write");
        assert!(writer.require(Scope::EventsWrite).is_ok());
        let err = writer.require(Scope::EventsRead).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string().as_str()),
            ("forbidden", "missing scope events:read")
        );

        let admin = principal("acme", "admin");
        for s in [
            Scope::EventsWrite,
            Scope::EventsRead,
            Scope::SchemasWrite,
            Scope::Admin,
        ] {
            assert!(admin.require(s).is_ok(), "{s}");
        }
        assert!(admin.require(Scope::Root).is_err());
        assert!(
            principal("system", "root")
                .require(Scope::SchemasWrite)
                .is_ok()
        );
    }

    #[test]
    fn can_admin_only_own_tenant_unless_root() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        assert!(principal("acme", "admin").can_admin(&acme));
        assert!(!principal("acme", "admin").can_admin(&globex));
        assert!(!principal("acme", "events:write,events:read,schemas:write").can_admin(&acme));
        assert!(principal("system", "root").can_admin(&globex));
    }

    #[test]
    fn credential_ids() {
        assert_eq!(principal("acme", "").credential_id(), "abcdefghijkl");
        let user = CredentialRef::User("alice@example.com".into());
        assert_eq!(user.id(), "user:alice@example.com");
        assert_eq!(user.to_string(), user.id());
        assert_eq!(system_tenant().as_str(), "system");
    }
}
