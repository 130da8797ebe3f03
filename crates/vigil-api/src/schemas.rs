//! The schema registry: one JSON Schema (draft 2020-12) per tenant and event type.
//!
//! Once a schema is registered for a type, events of that type from that tenant are validated
//! against it at ingest; a tenant's schemas never affect another tenant. The schemas live in
//! one meta document of the store (`schemas`), so a deployment has one place of truth; the
//! compiled validators are kept in memory, because ingest consults them for every event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::{Map, Value};
use vigil_event::{EventType, FieldError, FieldErrorCode, TenantId};
use vigil_store::Store;

use crate::error::ApiError;

/// Name of the store meta document holding every tenant's schemas.
const META_NAME: &str = "schemas";
/// Errors reported per failing event at most: a schema that rejects every field of a large
/// event would otherwise make the error response larger than the request.
const MAX_ERRORS_PER_EVENT: usize = 32;

/// One registered schema: the document as sent (returned by `GET`) and its compiled form.
#[derive(Clone)]
struct Entry {
    schema: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

/// The schemas of one tenant, by event type. Immutable: a change builds a new snapshot, so
/// ingest validates against a consistent set without holding a lock.
#[derive(Clone, Default)]
pub(crate) struct TenantSchemas {
    by_type: BTreeMap<EventType, Entry>,
}

impl std::fmt::Debug for TenantSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_type.keys()).finish()
    }
}

impl TenantSchemas {
    /// Validates a normalised event body against the schema of its type, if one is registered.
    /// Paths in the errors are dotted instance paths (`details.amount`, `details.items.0.sku`).
    pub(crate) fn validate(
        &self,
        event_type: &EventType,
        body: &Value,
    ) -> Result<(), Vec<FieldError>> {
        let Some(entry) = self.by_type.get(event_type) else {
            return Ok(());
        };
        let errors: Vec<FieldError> = entry
            .validator
            .iter_errors(body)
            .take(MAX_ERRORS_PER_EVENT)
            .map(|e| {
                let path: Vec<String> = e.instance_path().iter().map(|s| s.to_string()).collect();
                FieldError::new(
                    path.join("."),
                    FieldErrorCode::SchemaViolation,
                    e.masked().to_string(),
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }
}

/// Every tenant's schemas, loaded from and saved to the store.
pub(crate) struct SchemaRegistry {
    store: Arc<dyn Store>,
    /// Current snapshot per tenant; read on every ingest request, replaced by PUT and DELETE.
    tenants: RwLock<HashMap<TenantId, Arc<TenantSchemas>>>,
    /// Serialises changes: each one rewrites the whole persisted document, so two concurrent
    /// changes must not both start from the same old version.
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry").finish_non_exhaustive()
    }
}

/// Whether a PUT created a schema or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    Created,
    Replaced,
}

/// Persisted form: `{"tenants": {"<tenant>": {"<type>": <schema>}}}`.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Document {
    tenants: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Compiles a schema as JSON Schema draft 2020-12 (the default when it names no `$schema`),
/// checking it against the meta-schema. External references are not fetched.
pub(crate) fn compile(schema: &Value) -> Result<jsonschema::Validator, ApiError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::InvalidSchema(
            "a schema must be a JSON object or a boolean".to_owned(),
        ));
    }
    jsonschema::draft202012::options()
        .build(schema)
        .map_err(|e| {
            let at = e.instance_path().as_str();
            if at.is_empty() {
                ApiError::InvalidSchema(e.masked().to_string())
            } else {
                ApiError::InvalidSchema(format!("{} (at {at})", e.masked()))
            }
        })
}

impl SchemaRegistry {
    /// Loads and compiles every stored schema. Fails when one no longer compiles, rather than
    /// silently accepting events it was registered to refuse.
    pub(crate) async fn load(store: Arc<dyn Store>) -> Result<Self, ApiError> {
        let doc: Document = match store.load_meta(META_NAME).await? {
            None => Document::default(),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Internal(format!("stored schema document is corrupt: {e}"))
            })?,
        };
        let mut tenants = HashMap::new();
        for (tenant, types) in doc.tenants {
            let tenant_id = TenantId::parse(&tenant)
                .map_err(|e| ApiError::Internal(format!("stored schema document: {e}")))?;
            let mut set = TenantSchemas::default();
            for (ty, schema) in types {
                let event_type = EventType::parse(&ty)
                    .map_err(|e| ApiError::Internal(format!("stored schema document: {e}")))?;
                let validator = compile(&schema).map_err(|e| {
                    ApiError::Internal(format!(
                        "stored schema for {tenant}/{ty} does not compile: {e}"
                    ))
                })?;
                set.by_type.insert(
                    event_type,
                    Entry {
                        schema: Arc::new(schema),
                        validator: Arc::new(validator),
                    },
                );
            }
            tenants.insert(tenant_id, Arc::new(set));
        }
        Ok(Self {
            store,
            tenants: RwLock::new(tenants),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The tenant's current schemas (possibly none).
    pub(crate) fn for_tenant(&self, tenant: &TenantId) -> Arc<TenantSchemas> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants.get(tenant).cloned().unwrap_or_default()
    }

    /// The schema document registered for a type.
    pub(crate) fn get(&self, tenant: &TenantId, event_type: &EventType) -> Option<Arc<Value>> {
        self.for_tenant(tenant)
            .by_type
            .get(event_type)
            .map(|e| Arc::clone(&e.schema))
    }

    /// Every schema of the tenant, ordered by type.
    pub(crate) fn list(&self, tenant: &TenantId) -> Vec<(EventType, Arc<Value>)> {
        self.for_tenant(tenant)
            .by_type
            .iter()
            .map(|(t, e)| (t.clone(), Arc::clone(&e.schema)))
            .collect()
    }

    /// Registers or replaces a schema; durable when this returns.
    pub(crate) async fn put(
        &self,
        tenant: &TenantId,
        event_type: EventType,
        schema: Value,
    ) -> Result<PutOutcome, ApiError> {
        let validator = compile(&schema)?;
        let entry = Entry {
            schema: Arc::new(schema),
            validator: Arc::new(validator),
        };
        let _guard = self.write.lock().await;
        let mut set = (*self.for_tenant(tenant)).clone();
        let outcome = match set.by_type.insert(event_type, entry) {
            None => PutOutcome::Created,
            Some(_) => PutOutcome::Replaced,
        };
        self.commit(tenant, set).await?;
        Ok(outcome)
    }

    /// Removes a schema; `false` when none was registered. Durable when this returns.
    pub(crate) async fn delete(
        &self,
        tenant: &TenantId,
        event_type: &EventType,
    ) -> Result<bool, ApiError> {
        let _guard = self.write.lock().await;
        let mut set = (*self.for_tenant(tenant)).clone();
        if set.by_type.remove(event_type).is_none() {
            return Ok(false);
        }
        self.commit(tenant, set).await?;
        Ok(true)
    }

    /// Saves the document with `tenant`'s new set, then publishes the set. The caller holds
    /// the write lock.
    async fn commit(&self, tenant: &TenantId, set: TenantSchemas) -> Result<(), ApiError> {
        let doc = {
            let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
            let mut doc = Document::default();
            for (t, s) in tenants.iter().filter(|(t, _)| *t != tenant) {
                doc.tenants.insert(t.as_str().to_owned(), s.to_map());
            }
            if !set.is_empty() {
                doc.tenants.insert(tenant.as_str().to_owned(), set.to_map());
            }
            doc
        };
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| ApiError::Internal(format!("serialising schemas: {e}")))?;
        self.store.save_meta(META_NAME, &bytes).await?;
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if set.is_empty() {
            tenants.remove(tenant);
        } else {
            tenants.insert(tenant.clone(), Arc::new(set));
        }
        Ok(())
    }
}

impl TenantSchemas {
    fn to_map(&self) -> BTreeMap<String, Value> {
        self.by_type
            .iter()
            .map(|(t, e)| (t.as_str().to_owned(), (*e.schema).clone()))
            .collect()
    }
}

/// Validates `body` (taken out of and put back into the map) against the tenant's schema.
pub(crate) fn validate_body(
    schemas: &TenantSchemas,
    event_type: &EventType,
    body: &mut Map<String, Value>,
) -> Result<(), Vec<FieldError>> {
    if schemas.is_empty() {
        return Ok(());
    }
    let value = Value::Object(std::mem::take(body));
    let result = schemas.validate(event_type, &value);
    if let Value::Object(map) = value {
        *body = map;
    }
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schemas_with(ty: &str, schema: Value) -> TenantSchemas {
        let validator = compile(&schema).unwrap();
        let mut set = TenantSchemas::default();
        set.by_type.insert(
            EventType::parse(ty).unwrap(),
            Entry {
                schema: Arc::new(schema),
                validator: Arc::new(validator),
            },
        );
        set
    }

    #[test]
    fn violations_name_the_instance_path_without_echoing_values() {
        let set = schemas_with(
            "billing.charged",
            json!({
                "type": "object",
                "required": ["details"],
                "properties": {"details": {"type": "object", "properties": {
                    "amount": {"type": "number"},
                    "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
                }}}
            }),
        );
        let ty = EventType::parse("billing.charged").unwrap();
        let mut body =
            json!({"type": "billing.charged", "details": {"amount": "secret-ish", "items": [{}]}})
                .as_object()
                .cloned()
                .unwrap();
        let errors = validate_body(&set, &ty, &mut body).unwrap_err();
        let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["details.amount", "details.items.0"]);
        assert!(
            errors
                .iter()
                .all(|e| e.code == FieldErrorCode::SchemaViolation)
        );
        assert!(
            errors.iter().all(|e| !e.message.contains("secret-ish")),
            "{errors:?}"
        );
        // The body is given back intact.
        assert_eq!(body["details"]["amount"], "secret-ish");

        let other = EventType::parse("login.failed").unwrap();
        assert!(validate_body(&set, &other, &mut body).is_ok());
    }

    #[test]
    fn invalid_schemas_are_refused() {
        for bad in [
            json!({"type": "no-such-type"}),
            json!({"minimum": "five"}),
            json!(42),
            json!("x"),
        ] {
            assert!(
                matches!(compile(&bad), Err(ApiError::InvalidSchema(_))),
                "{bad}"
            );
        }
        assert!(compile(&json!(true)).is_ok());
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
    }
}
