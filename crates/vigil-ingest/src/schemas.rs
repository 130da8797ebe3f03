//! The schema registry: one JSON Schema (draft 2020-12) per tenant and event type.
//!
//! Once a schema is registered for a type, events of that type from that tenant are validated
//! against it at ingest; a tenant's schemas never affect another tenant. The schemas live in
//! one meta document of the store (`schemas`), so a deployment has one place of truth; the
//! compiled validators are kept in memory, because ingest consults them for every event.
//!
//! Several vigil processes may share one store: the document is a [`SharedDocument`]. A change
//! is applied to the latest stored document and saved with [`Store::save_meta_if`] only if
//! nobody changed the document meanwhile (else applied again to the newer one), so concurrent
//! changes on different nodes are all kept; and every process reloads the document every
//! `refresh_interval` given to [`SchemaRegistry::load`], so a schema registered on one node is
//! enforced on the others within that interval.
//!
//! The HTTP handlers of `/v1/schemas` (in `vigil-api`) change the registry; admission
//! ([`crate::Admitter`]) reads it for every event, whether it came over HTTP or the bus.
//!
//! A schema is tenant-supplied work for the server: compiling and applying one runs on the
//! blocking pool (here, and where the edges run admission), a tenant has at most
//! [`SchemaLimits::max_per_tenant`] of them, and a `pattern` may backtrack at most
//! [`PATTERN_BACKTRACK_LIMIT`] steps per match.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use vigil_event::{EventType, FieldError, FieldErrorCode, TenantId};
use vigil_store::Store;
use vigil_store::shared::{Document, SharedDocument};

use crate::error::IngestError;

/// Name of the store meta document holding every tenant's schemas.
const META_NAME: &str = "schemas";
/// Errors reported per failing event at most: a schema that rejects every field of a large
/// event would otherwise make the error response larger than the request.
const MAX_ERRORS_PER_EVENT: usize = 32;
/// Backtracking steps one `pattern` match may take (the regex engine's default is 1 000 000).
/// Patterns that need backtracking (backreferences, look-around) can take exponential time on
/// crafted input; past the limit the match fails and the event is refused as a
/// `schema_violation`, so a pattern costs at most a few milliseconds per value.
pub const PATTERN_BACKTRACK_LIMIT: usize = 10_000;

/// One registered schema: the document as sent (returned by `GET`) and its compiled form.
#[derive(Clone)]
struct Entry {
    schema: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

/// The schemas of one tenant, by event type. Immutable: a change builds a new snapshot, so
/// ingest validates against a consistent set without holding a lock.
#[derive(Clone, Default)]
pub struct TenantSchemas {
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
    pub fn validate(&self, event_type: &EventType, body: &Value) -> Result<(), Vec<FieldError>> {
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

    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// Whether a schema is registered for `event_type`.
    pub fn has(&self, event_type: &EventType) -> bool {
        self.by_type.contains_key(event_type)
    }

    fn to_map(&self) -> BTreeMap<&str, &Value> {
        self.by_type
            .iter()
            .map(|(t, e)| (t.as_str(), e.schema.as_ref()))
            .collect()
    }

    /// A set of one schema whose validator the caller built (custom formats and the like,
    /// as tests use), outside any registry.
    pub fn with_validator(
        event_type: EventType,
        schema: Value,
        validator: jsonschema::Validator,
    ) -> Self {
        let mut set = Self::default();
        set.by_type.insert(
            event_type,
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
pub struct SchemaLimits {
    /// Most schemas per tenant: 422 `too_many_schemas` for one more.
    pub max_per_tenant: usize,
}

/// Every tenant's schemas, loaded from and saved to the store. Clones share one registry.
#[derive(Clone)]
pub struct SchemaRegistry {
    limits: SchemaLimits,
    /// Current schemas per tenant; read on every admission, replaced by PUT, DELETE and
    /// reloads.
    document: SharedDocument<Tenants>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Every tenant's schemas, as the `schemas` document holds them. A tenant without schemas has
/// no entry.
#[derive(Clone, Default)]
struct Tenants(HashMap<TenantId, Arc<TenantSchemas>>);

impl Document for Tenants {
    type Error = IngestError;

    const LABEL: &'static str = "schema";

    /// Compiles on the blocking pool, keeping the validators of schemas `previous` holds.
    async fn decode(bytes: Vec<u8>, previous: Option<Arc<Self>>) -> Result<Self, IngestError> {
        blocking(move || {
            let doc = parse_document(&bytes)?;
            let previous = previous.unwrap_or_default();
            compile_document(doc, &previous.0).map(Self)
        })
        .await
    }

    async fn encode(tenants: Arc<Self>) -> Result<Vec<u8>, IngestError> {
        blocking(move || serialise(&tenants)).await
    }

    fn absent() -> Result<Self, IngestError> {
        Ok(Self::default())
    }

    fn internal(message: String) -> IngestError {
        IngestError::Internal(message)
    }

    fn reloaded(&self) {
        tracing::info!("schemas reloaded: the stored document was changed by another process");
    }

    fn reload_failed(error: &IngestError) {
        tracing::warn!(error = %error, code = error.code(), "reloading schemas from the store failed; keeping the ones in memory");
    }
}

/// Whether a PUT created a schema or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// Persisted form: `{"tenants": {"<tenant>": {"<type>": <schema>}}}`.
#[derive(serde::Deserialize, Default)]
struct StoredDocument {
    tenants: BTreeMap<String, BTreeMap<String, Value>>,
}

/// [`StoredDocument`] as written, borrowing the schemas rather than copying them.
#[derive(serde::Serialize)]
struct DocumentView<'a> {
    tenants: BTreeMap<&'a str, BTreeMap<&'a str, &'a Value>>,
}

/// Compiles a schema as JSON Schema draft 2020-12 (the default when it names no `$schema`),
/// checking it against the meta-schema, with `pattern` backtracking bounded by
/// [`PATTERN_BACKTRACK_LIMIT`]. External references are not fetched. CPU work of the tenant's
/// choosing: call it off the async runtime.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, IngestError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(IngestError::InvalidSchema(
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
                IngestError::InvalidSchema(e.masked().to_string())
            } else {
                IngestError::InvalidSchema(format!("{} (at {at})", e.masked()))
            }
        })
}

/// Runs schema work (compiling, serialising the document) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IngestError> + Send + 'static,
) -> Result<T, IngestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IngestError::Internal(format!("schema task failed: {e}")))?
}

/// Parses the stored document (compiling its schemas is [`compile_document`]'s part).
fn parse_document(bytes: &[u8]) -> Result<StoredDocument, IngestError> {
    serde_json::from_slice(bytes)
        .map_err(|e| IngestError::Internal(format!("stored schema document is corrupt: {e}")))
}

/// Compiles every schema of a stored document. A schema equal to the one `previous` holds
/// for its tenant and type keeps its compiled validator: a reload after another node changed
/// one schema compiles that one only.
fn compile_document(
    doc: StoredDocument,
    previous: &HashMap<TenantId, Arc<TenantSchemas>>,
) -> Result<HashMap<TenantId, Arc<TenantSchemas>>, IngestError> {
    let mut tenants = HashMap::new();
    for (tenant, types) in doc.tenants {
        let tenant_id = TenantId::parse(&tenant)
            .map_err(|e| IngestError::Internal(format!("stored schema document: {e}")))?;
        let known = previous.get(&tenant_id);
        let mut set = TenantSchemas::default();
        for (ty, schema) in types {
            let event_type = EventType::parse(&ty)
                .map_err(|e| IngestError::Internal(format!("stored schema document: {e}")))?;
            if let Some(entry) = known
                .and_then(|k| k.by_type.get(&event_type))
                .filter(|e| *e.schema == schema)
            {
                set.by_type.insert(event_type, entry.clone());
                continue;
            }
            let validator = compile(&schema).map_err(|e| {
                IngestError::Internal(format!(
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
    ///
    /// Then reloads the document every `refresh_interval` (longer than zero) in a background
    /// task, which stops when the registry is dropped.
    pub async fn load(
        store: Arc<dyn Store>,
        limits: SchemaLimits,
        refresh_interval: Duration,
    ) -> Result<Self, IngestError> {
        if refresh_interval.is_zero() {
            return Err(IngestError::Internal(
                "schema_refresh_interval must be longer than zero".to_owned(),
            ));
        }
        let document = SharedDocument::open(store, META_NAME, refresh_interval).await?;
        Ok(Self { limits, document })
    }

    /// Reloads the schema document now, if another process changed it, rather than at the
    /// next periodic refresh. Returns whether anything changed. On error the schemas in
    /// memory stay as they were.
    pub async fn refresh(&self) -> Result<bool, IngestError> {
        self.document.refresh().await
    }

    /// The tenant's current schemas (possibly none).
    pub fn for_tenant(&self, tenant: &TenantId) -> Arc<TenantSchemas> {
        self.document
            .current()
            .0
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// The schema document registered for a type.
    pub fn get(&self, tenant: &TenantId, event_type: &EventType) -> Option<Arc<Value>> {
        self.for_tenant(tenant)
            .by_type
            .get(event_type)
            .map(|e| Arc::clone(&e.schema))
    }

    /// Every schema of the tenant, ordered by type.
    pub fn list(&self, tenant: &TenantId) -> Vec<(EventType, Arc<Value>)> {
        self.for_tenant(tenant)
            .by_type
            .iter()
            .map(|(t, e)| (t.clone(), Arc::clone(&e.schema)))
            .collect()
    }

    /// Registers or replaces a schema; durable and in force when this returns, and in force
    /// whenever it is durable, even if the caller stops waiting.
    pub async fn put(
        &self,
        tenant: &TenantId,
        event_type: EventType,
        schema: Arc<Value>,
    ) -> Result<PutOutcome, IngestError> {
        let max = self.limits.max_per_tenant;
        let current = self.for_tenant(tenant);
        if current.by_type.len() >= max && !current.has(&event_type) {
            // Refused before paying for the compilation; checked again on the latest document.
            return Err(IngestError::TooManySchemas { limit: max });
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
                return Err(IngestError::TooManySchemas { limit: max });
            }
            set.by_type.insert(event_type.clone(), entry.clone());
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
    pub async fn delete(
        &self,
        tenant: &TenantId,
        event_type: &EventType,
    ) -> Result<bool, IngestError> {
        let event_type = event_type.clone();
        self.mutate(tenant, move |set| {
            let removed = set.by_type.remove(&event_type).is_some();
            Ok((removed, removed))
        })
        .await
    }

    /// Applies `change` to the tenant's set in the latest stored document and saves the whole
    /// document ([`SharedDocument::update`]: no process undoes another's change, and a request
    /// dropped halfway cannot leave the document saved but not in force). `change` returns its
    /// result and whether it changed anything (nothing is saved when not).
    async fn mutate<T, F>(&self, tenant: &TenantId, mut change: F) -> Result<T, IngestError>
    where
        T: Send + 'static,
        F: FnMut(&mut TenantSchemas) -> Result<(T, bool), IngestError> + Send + 'static,
    {
        let tenant = tenant.clone();
        self.document
            .update(move |tenants| {
                let mut set = tenants
                    .0
                    .get(&tenant)
                    .map(|s| TenantSchemas::clone(s))
                    .unwrap_or_default();
                let (out, changed) = change(&mut set)?;
                if changed {
                    if set.is_empty() {
                        tenants.0.remove(&tenant);
                    } else {
                        tenants.0.insert(tenant.clone(), Arc::new(set));
                    }
                }
                Ok((out, changed))
            })
            .await
    }
}

/// The persisted document.
fn serialise(tenants: &Tenants) -> Result<Vec<u8>, IngestError> {
    let view = DocumentView {
        tenants: tenants
            .0
            .iter()
            .map(|(t, s)| (t.as_str(), s.to_map()))
            .collect(),
    };
    serde_json::to_vec(&view)
        .map_err(|e| IngestError::Internal(format!("serialising schemas: {e}")))
}

/// Validates `body` (taken out of and put back into the map) against the tenant's schema.
pub fn validate_body(
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
                matches!(compile(&bad), Err(IngestError::InvalidSchema(_))),
                "{bad}"
            );
        }
        assert!(compile(&json!(true)).is_ok());
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
    }

    // -----------------------------------------------------------------------------------------
    // Several processes sharing one store

    /// Two registries over one store, as two vigil processes sharing a database.
    struct Nodes {
        a: SchemaRegistry,
        b: SchemaRegistry,
        store: Arc<dyn Store>,
        _dir: tempfile::TempDir,
    }

    impl Nodes {
        async fn new(max_per_tenant: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(
                vigil_store_embedded::EmbeddedStore::open(
                    vigil_store_embedded::EmbeddedConfig::new(dir.path()),
                )
                .unwrap(),
            );
            let a = Self::node(&store, max_per_tenant).await;
            let b = Self::node(&store, max_per_tenant).await;
            Self {
                a,
                b,
                store,
                _dir: dir,
            }
        }

        async fn node(store: &Arc<dyn Store>, max_per_tenant: usize) -> SchemaRegistry {
            SchemaRegistry::load(
                Arc::clone(store),
                SchemaLimits { max_per_tenant },
                Duration::from_secs(1),
            )
            .await
            .unwrap()
        }
    }

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn ty(name: &str) -> EventType {
        EventType::parse(name).unwrap()
    }

    async fn put(node: &SchemaRegistry, t: &str, event_type: &str, schema: Value) -> PutOutcome {
        node.put(&tenant(t), ty(event_type), Arc::new(schema))
            .await
            .unwrap()
    }

    fn types(node: &SchemaRegistry, t: &str) -> Vec<String> {
        node.list(&tenant(t))
            .into_iter()
            .map(|(ty, _)| ty.as_str().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_schema_changed_on_one_node_applies_on_another_after_a_refresh() {
        let nodes = Nodes::new(10).await;
        assert!(!nodes.b.refresh().await.unwrap(), "nothing changed yet");
        let schema = json!({"type": "object", "required": ["actor"]});
        assert_eq!(
            put(&nodes.a, "acme", "login.failed", schema.clone()).await,
            PutOutcome::Created
        );
        assert!(nodes.b.get(&tenant("acme"), &ty("login.failed")).is_none());

        assert!(nodes.b.refresh().await.unwrap());
        assert_eq!(
            nodes.b.get(&tenant("acme"), &ty("login.failed")).as_deref(),
            Some(&schema)
        );
        let errors = nodes
            .b
            .for_tenant(&tenant("acme"))
            .validate(&ty("login.failed"), &json!({"type": "login.failed"}))
            .unwrap_err();
        assert_eq!(errors[0].code, FieldErrorCode::SchemaViolation);
        assert!(!nodes.b.refresh().await.unwrap());

        assert!(
            nodes
                .a
                .delete(&tenant("acme"), &ty("login.failed"))
                .await
                .unwrap()
        );
        assert!(nodes.b.refresh().await.unwrap());
        assert!(nodes.b.for_tenant(&tenant("acme")).is_empty());
    }

    /// Regression: each process changed its own in-memory schemas and saved them whole, so a
    /// schema registered on one node vanished from the store when another node, which had
    /// not seen it, saved a change of its own. A change now starts from the latest stored
    /// document, whatever the node holds in memory.
    #[tokio::test]
    async fn a_change_on_a_node_with_stale_schemas_keeps_the_other_nodes_changes() {
        let nodes = Nodes::new(10).await;
        put(&nodes.a, "acme", "a", json!(true)).await;
        put(&nodes.b, "acme", "b", json!(true)).await;
        put(&nodes.b, "globex", "c", json!(true)).await;
        put(&nodes.a, "acme", "d", json!(true)).await;
        // `b` never held `d` in memory, yet deletes it.
        assert!(nodes.b.delete(&tenant("acme"), &ty("d")).await.unwrap());

        nodes.a.refresh().await.unwrap();
        let fresh = Nodes::node(&nodes.store, 10).await;
        for node in [&nodes.a, &nodes.b, &fresh] {
            assert_eq!(types(node, "acme"), ["a", "b"]);
            assert_eq!(types(node, "globex"), ["c"]);
        }
    }

    #[tokio::test]
    async fn the_schema_limit_counts_schemas_registered_on_other_nodes() {
        let nodes = Nodes::new(2).await;
        put(&nodes.a, "acme", "a", json!(true)).await;
        put(&nodes.b, "acme", "b", json!(true)).await;
        let err = nodes
            .a
            .put(&tenant("acme"), ty("c"), Arc::new(json!(true)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IngestError::TooManySchemas { limit: 2 }),
            "{err}"
        );
        assert_eq!(types(&nodes.a, "acme"), ["a", "b"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_on_two_nodes_are_all_kept() {
        let nodes = Arc::new(Nodes::new(100).await);
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let nodes = Arc::clone(&nodes);
                tokio::spawn(async move {
                    let node = if i % 2 == 0 { &nodes.a } else { &nodes.b };
                    put(
                        node,
                        "acme",
                        &format!("t{i:02}"),
                        json!({"properties": {"n": {"const": i}}}),
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), PutOutcome::Created);
        }
        nodes.a.refresh().await.unwrap();
        nodes.b.refresh().await.unwrap();
        let want: Vec<String> = (0..24).map(|i| format!("t{i:02}")).collect();
        let fresh = Nodes::node(&nodes.store, 100).await;
        for node in [&nodes.a, &nodes.b, &fresh] {
            assert_eq!(types(node, "acme"), want);
        }
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_schemas_in_memory() {
        let nodes = Nodes::new(10).await;
        let schema = json!({"required": ["details"]});
        put(&nodes.a, "acme", "x", schema.clone()).await;
        nodes.b.refresh().await.unwrap();

        nodes
            .store
            .save_meta(META_NAME, b"{not json")
            .await
            .unwrap();
        let err = nodes.b.refresh().await.unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(
            nodes.b.get(&tenant("acme"), &ty("x")).as_deref(),
            Some(&schema)
        );
        // A change cannot start from a document it cannot read: nothing is saved.
        let err = nodes
            .b
            .put(&tenant("acme"), ty("y"), Arc::new(json!(true)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(
            nodes.store.load_meta(META_NAME).await.unwrap().as_deref(),
            Some(&b"{not json"[..])
        );
        assert_eq!(types(&nodes.b, "acme"), ["x"]);
    }
}
