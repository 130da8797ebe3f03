//! The schema registry: one JSON Schema (draft 2020-12) per tenant and event type.
//!
//! Once a schema is registered for a type, events of that type from that tenant are validated
//! against it at ingest; a tenant's schemas never affect another tenant. The schemas live in
//! one meta document of the store (`schemas`), so a deployment has one place of truth; the
//! compiled validators are kept in memory, because ingest consults them for every event.
//!
//! A schema is tenant-supplied work for the server: compiling and applying one runs on the
//! blocking pool (here and in `ingest`), a tenant has at most
//! [`SchemaLimits::max_per_tenant`] of them, and a `pattern` may backtrack at most
//! [`PATTERN_BACKTRACK_LIMIT`] steps per match.

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
/// Backtracking steps one `pattern` match may take (the regex engine's default is 1 000 000).
/// Patterns that need backtracking (backreferences, look-around) can take exponential time on
/// crafted input; past the limit the match fails and the event is refused as a
/// `schema_violation`, so a pattern costs at most a few milliseconds per value.
pub(crate) const PATTERN_BACKTRACK_LIMIT: usize = 10_000;

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
    /// CPU work of the tenant's choosing: call it off the async runtime.
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

    /// Whether a schema is registered for `event_type`.
    pub(crate) fn has(&self, event_type: &EventType) -> bool {
        self.by_type.contains_key(event_type)
    }

    fn to_map(&self) -> BTreeMap<&str, &Value> {
        self.by_type
            .iter()
            .map(|(t, e)| (t.as_str(), e.schema.as_ref()))
            .collect()
    }

    /// A set of one schema with a validator built by the test (custom formats and the like).
    #[cfg(test)]
    pub(crate) fn with_validator(
        ty: &str,
        schema: Value,
        validator: jsonschema::Validator,
    ) -> Self {
        let mut set = Self::default();
        set.by_type.insert(
            EventType::parse(ty).unwrap_or_else(|e| panic!("{e:?}")),
            Entry {
                schema: Arc::new(schema),
                validator: Arc::new(validator),
            },
        );
        set
    }
}

/// Bounds on what one tenant may register.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchemaLimits {
    /// Most schemas per tenant: 422 `too_many_schemas` for one more.
    pub max_per_tenant: usize,
}

/// Every tenant's schemas, loaded from and saved to the store.
pub(crate) struct SchemaRegistry {
    inner: Arc<Registry>,
}

struct Registry {
    store: Arc<dyn Store>,
    limits: SchemaLimits,
    /// Current snapshot per tenant; read on every ingest request, replaced by PUT and DELETE.
    tenants: RwLock<HashMap<TenantId, Arc<TenantSchemas>>>,
    /// Serialises changes: each one rewrites the whole persisted document, so two concurrent
    /// changes must not both start from the same old version.
    write: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Whether a PUT created a schema or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    Created,
    Replaced,
}

/// Persisted form: `{"tenants": {"<tenant>": {"<type>": <schema>}}}`.
#[derive(serde::Deserialize, Default)]
struct Document {
    tenants: BTreeMap<String, BTreeMap<String, Value>>,
}

/// [`Document`] as written, borrowing the schemas rather than copying them.
#[derive(serde::Serialize)]
struct DocumentView<'a> {
    tenants: BTreeMap<&'a str, BTreeMap<&'a str, &'a Value>>,
}

/// Compiles a schema as JSON Schema draft 2020-12 (the default when it names no `$schema`),
/// checking it against the meta-schema, with `pattern` backtracking bounded by
/// [`PATTERN_BACKTRACK_LIMIT`]. External references are not fetched. CPU work of the tenant's
/// choosing: call it off the async runtime.
pub(crate) fn compile(schema: &Value) -> Result<jsonschema::Validator, ApiError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::InvalidSchema(
            "a schema must be a JSON object or a boolean".to_owned(),
        ));
    }
    jsonschema::draft202012::options()
        .with_pattern_options(
            jsonschema::PatternOptions::fancy_regex().backtrack_limit(PATTERN_BACKTRACK_LIMIT),
        )
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

/// Runs schema work (compiling, serialising the document) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("schema task failed: {e}")))?
}

/// Compiles every schema of a stored document.
fn compile_document(doc: Document) -> Result<HashMap<TenantId, Arc<TenantSchemas>>, ApiError> {
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
    Ok(tenants)
}

impl SchemaRegistry {
    /// Loads and compiles every stored schema. Fails when one no longer compiles, rather than
    /// silently accepting events it was registered to refuse. Schemas stored before a lower
    /// [`SchemaLimits::max_per_tenant`] was configured are all kept.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        limits: SchemaLimits,
    ) -> Result<Self, ApiError> {
        let doc: Document = match store.load_meta(META_NAME).await? {
            None => Document::default(),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Internal(format!("stored schema document is corrupt: {e}"))
            })?,
        };
        let tenants = blocking(move || compile_document(doc)).await?;
        Ok(Self {
            inner: Arc::new(Registry {
                store,
                limits,
                tenants: RwLock::new(tenants),
                write: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// The tenant's current schemas (possibly none).
    pub(crate) fn for_tenant(&self, tenant: &TenantId) -> Arc<TenantSchemas> {
        self.inner.snapshot(tenant)
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

    /// Registers or replaces a schema; durable and in force when this returns, and in force
    /// whenever it is durable, even if the caller stops waiting.
    pub(crate) async fn put(
        &self,
        tenant: &TenantId,
        event_type: EventType,
        schema: Arc<Value>,
    ) -> Result<PutOutcome, ApiError> {
        let max = self.inner.limits.max_per_tenant;
        let current = self.for_tenant(tenant);
        if current.by_type.len() >= max && !current.has(&event_type) {
            // Refused before paying for the compilation; checked again under the write lock.
            return Err(ApiError::TooManySchemas { limit: max });
        }
        let compiled = Arc::clone(&schema);
        let validator = blocking(move || compile(&compiled)).await?;
        let entry = Entry {
            schema,
            validator: Arc::new(validator),
        };
        self.mutate(tenant, move |set| {
            let created = !set.by_type.contains_key(&event_type);
            if created && set.by_type.len() >= max {
                return Err(ApiError::TooManySchemas { limit: max });
            }
            set.by_type.insert(event_type, entry);
            let outcome = if created {
                PutOutcome::Created
            } else {
                PutOutcome::Replaced
            };
            Ok((outcome, true))
        })
        .await
    }

    /// Removes a schema; `false` when none was registered. Durable and in force when this
    /// returns, and in force whenever it is durable, even if the caller stops waiting.
    pub(crate) async fn delete(
        &self,
        tenant: &TenantId,
        event_type: &EventType,
    ) -> Result<bool, ApiError> {
        let event_type = event_type.clone();
        self.mutate(tenant, move |set| {
            let removed = set.by_type.remove(&event_type).is_some();
            Ok((removed, removed))
        })
        .await
    }

    /// Applies `change` to the tenant's set, saves the whole document, then publishes the new
    /// set, all in a task of its own: a request dropped halfway (client gone, timeout) cannot
    /// leave the document saved but not in force, nor the other way round. `change` returns
    /// its result and whether it changed anything (nothing is saved when not).
    async fn mutate<T, F>(&self, tenant: &TenantId, change: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut TenantSchemas) -> Result<(T, bool), ApiError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let _serialised = Arc::clone(&inner.write).lock_owned().await;
            let mut next = (*inner.snapshot(&tenant)).clone();
            let (out, changed) = change(&mut next)?;
            if !changed {
                return Ok(out);
            }
            let others: Vec<(TenantId, Arc<TenantSchemas>)> = inner
                .tenants
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(t, _)| **t != tenant)
                .map(|(t, s)| (t.clone(), Arc::clone(s)))
                .collect();
            let next = Arc::new(next);
            let written = Arc::clone(&next);
            let key = tenant.clone();
            let bytes = blocking(move || serialise(&others, &key, &written)).await?;
            inner.store.save_meta(META_NAME, &bytes).await?;
            let mut tenants = inner
                .tenants
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if next.is_empty() {
                tenants.remove(&tenant);
            } else {
                tenants.insert(tenant, next);
            }
            Ok(out)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("schema update task failed: {e}")))?
    }
}

impl Registry {
    fn snapshot(&self, tenant: &TenantId) -> Arc<TenantSchemas> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants.get(tenant).cloned().unwrap_or_default()
    }
}

/// The persisted document: every other tenant's set as it is, and `tenant`'s new `set`.
fn serialise(
    others: &[(TenantId, Arc<TenantSchemas>)],
    tenant: &TenantId,
    set: &TenantSchemas,
) -> Result<Vec<u8>, ApiError> {
    let mut view = DocumentView {
        tenants: others
            .iter()
            .map(|(t, s)| (t.as_str(), s.to_map()))
            .collect(),
    };
    if !set.is_empty() {
        view.tenants.insert(tenant.as_str(), set.to_map());
    }
    serde_json::to_vec(&view).map_err(|e| ApiError::Internal(format!("serialising schemas: {e}")))
}

/// Validates `body` (taken out of and put back into the map) against the tenant's schema.
pub(crate) fn validate_body(
    schemas: &TenantSchemas,
    event_type: &EventType,
    body: &mut Map<String, Value>,
) -> Result<(), Vec<FieldError>> {
    if !schemas.has(event_type) {
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

    /// Regression: patterns ran with the regex engine's default backtracking budget (1 000 000
    /// steps per match), so one crafted value against a tenant's backtracking pattern cost
    /// ~100 ms of CPU, and a batch of them minutes. The budget is now
    /// [`PATTERN_BACKTRACK_LIMIT`]: this value needs more, so the match fails (the event is
    /// refused) instead of running to its end.
    #[test]
    fn pattern_backtracking_is_bounded() {
        let set = schemas_with(
            "probe",
            json!({"properties": {"details": {"properties": {"v": {"pattern": "^(a*)*\\1b"}}}}}),
        );
        let ty = EventType::parse("probe").unwrap();
        let mut body = json!({"details": {"v": "a".repeat(16)}})
            .as_object()
            .cloned()
            .unwrap();
        let errors = validate_body(&set, &ty, &mut body).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, FieldErrorCode::SchemaViolation);
        assert_eq!(errors[0].path, "details.v");
        assert!(errors[0].message.contains("backtracking"), "{errors:?}");

        let mut fine = json!({"details": {"v": "aab"}})
            .as_object()
            .cloned()
            .unwrap();
        assert!(validate_body(&set, &ty, &mut fine).is_ok());
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
