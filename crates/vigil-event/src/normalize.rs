//! Client JSON → [`Submitted`]: aliases resolved, envelope checked, limits enforced.

use std::borrow::Cow;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::RESERVED_FIELDS;
use crate::canonical::{EncodedBody, Prepared, with_scratch, write_object};
use crate::error::{FieldError, FieldErrorCode};
use crate::hash::Hash;
use crate::limits::Limits;
use crate::types::{EventId, EventType, Severity, TenantId, Timestamp};

/// Field aliases accepted so existing producers work unchanged: `(alias, canonical path)`.
/// The same table resolves field paths in queries (`event_type=x` finds `type` = x).
pub const ALIASES: &[(&str, &str)] = &[
    ("event_id", "id"),
    ("event_type", "type"),
    ("timestamp", "time"),
    ("criticality", "severity"),
    ("user_id", "actor.id"),
    ("username", "actor.id"),
    ("src_service", "source"),
    ("event_details", "details"),
    ("event_specificdetails", "details"),
    ("app_data", "details"),
];

/// Resolves a query field path through [`ALIASES`]: `event_type` → `type`,
/// `app_data.plan` → `details.plan`. Paths without an alias come back unchanged.
pub fn resolve_path_alias(path: &str) -> Cow<'_, str> {
    let (first, rest) = match path.find('.') {
        Some(dot) => path.split_at(dot),
        None => (path, ""),
    };
    match alias_target(first) {
        Some(target) => {
            let mut resolved = String::with_capacity(target.len() + rest.len());
            resolved.push_str(target);
            resolved.push_str(rest);
            Cow::Owned(resolved)
        }
        None => Cow::Borrowed(path),
    }
}

fn alias_target(name: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, target)| *target)
}

/// A valid, normalised event as the client sent it: no server-set fields, no defaults yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub id: Option<EventId>,
    pub event_type: EventType,
    pub time: Option<Timestamp>,
    pub severity: Option<Severity>,
    pub source: Option<String>,
    /// The whole normalised object: aliases renamed to their canonical paths, `time` rewritten
    /// as RFC 3339 UTC ([`Timestamp::to_rfc3339`]), every other key kept as sent.
    pub body: Map<String, Value>,
    /// SHA-256 of the canonical (RFC 8785) bytes of `body`: two submissions with the same id are
    /// "the same event" exactly when their digests are equal (idempotent retries).
    pub content_digest: Hash,
}

/// Most problems [`normalize`] lists for one event; the rest are summed up in one more entry.
pub const MAX_FIELD_ERRORS: usize = 100;

/// Largest integer magnitude accepted anywhere in an event: 2^53 − 1, the I-JSON range
/// (RFC 7493) within which every JSON reader holds an integer exactly. RFC 8785 canonical form
/// writes numbers as IEEE doubles, so beyond it distinct integers would share canonical bytes.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Validates and normalises one client event. Returns every problem found, not just the first,
/// up to [`MAX_FIELD_ERRORS`]: when there are more, the list holds the first
/// `MAX_FIELD_ERRORS` and then one more entry, at path `""` with the code of the first problem
/// and the message `… and N more problems`.
///
/// Problems are reported at the field's canonical path (`time`, `actor.id`), except for
/// `reserved_field` and `ambiguous_field`, which name the key as sent (`received_at`,
/// `event_type`). Normalisation, beyond renaming aliases: `time` becomes RFC 3339 UTC (it may
/// be sent as RFC 3339 or as a Unix epoch number in s, ms, µs or ns), `severity` an integer
/// (`7`, `7.0` and `"7"` are accepted), and an integer `id`, `actor.id` or `resource.id` its
/// decimal string.
///
/// Any other integer must lie within ±[`MAX_SAFE_INTEGER`]; one outside is `invalid_field` at
/// its path (larger values, such as 64-bit ids, must be sent as strings). Numbers with a
/// fraction or an exponent are IEEE doubles and are kept as such.
pub fn normalize(value: Value, limits: &Limits) -> Result<Submitted, Vec<FieldError>> {
    let Value::Object(mut body) = value else {
        return Err(vec![FieldError::new(
            "",
            FieldErrorCode::NotAnObject,
            "an event must be a JSON object",
        )]);
    };
    let mut errors = Vec::new();

    let mut has_alias = false;
    for key in body.keys() {
        if RESERVED_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                key.as_str(),
                FieldErrorCode::ReservedField,
                format!("{key} is set by the server and must not be sent"),
            ));
        } else if !has_alias && alias_target(key).is_some() {
            has_alias = true;
        }
    }
    if has_alias {
        resolve_aliases(&mut body, &mut errors);
    }

    let event_type = check_type(&body, &mut errors);
    let id = check_id(&mut body, &mut errors);
    let time = check_time(&mut body, &mut errors);
    let severity = check_severity(&mut body, &mut errors);
    check_actor(&mut body, &mut errors);
    check_resource(&mut body, &mut errors);
    let source = check_string(&body, "source", "source", &mut errors).map(str::to_owned);
    check_string(&body, "action", "action", &mut errors);
    check_outcome(&body, &mut errors);
    if body.get("details").is_some_and(|d| !d.is_object()) {
        errors.push(invalid("details", "details must be an object"));
    }

    let (too_deep, unlisted) = LimitCheck::run(&body, limits, &mut errors);
    // Too deep a value is not serialised: its size is unknown but its error already reported.
    let content_digest = (!too_deep).then(|| {
        with_scratch(|buf| {
            write_object(buf, &body);
            if buf.len() > limits.max_event_bytes {
                errors.push(FieldError::new(
                    "",
                    FieldErrorCode::EventTooLarge,
                    format!(
                        "event is {} bytes, more than the limit of {}",
                        buf.len(),
                        limits.max_event_bytes
                    ),
                ));
            }
            let digest: Hash = Sha256::digest(buf.as_slice()).into();
            digest
        })
    });

    match (event_type, content_digest) {
        (Some(event_type), Some(content_digest)) if errors.is_empty() => Ok(Submitted {
            id,
            event_type,
            time,
            severity,
            source,
            body,
            content_digest,
        }),
        _ => Err(cap_errors(errors, unlisted)),
    }
}

/// Keeps the first [`MAX_FIELD_ERRORS`] problems and sums up the rest (those beyond the cap in
/// `errors`, plus `unlisted` ones that were counted but never built) in one final entry.
fn cap_errors(mut errors: Vec<FieldError>, unlisted: usize) -> Vec<FieldError> {
    let more = errors.len().saturating_sub(MAX_FIELD_ERRORS) + unlisted;
    errors.truncate(MAX_FIELD_ERRORS);
    if more > 0
        && let Some(first) = errors.first()
    {
        let code = first.code;
        let noun = if more == 1 { "problem" } else { "problems" };
        errors.push(FieldError::new(
            "",
            code,
            format!("… and {more} more {noun}"),
        ));
    }
    errors
}

fn invalid(path: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(path, FieldErrorCode::InvalidField, message)
}

fn ambiguous(alias: &str, target: &str) -> FieldError {
    FieldError::new(
        alias,
        FieldErrorCode::AmbiguousField,
        format!("{alias} is another name for {target}, which is also set; send only one"),
    )
}

/// Renames alias keys to their canonical place; a key whose place is already taken (by the
/// canonical name or an earlier alias of it) is left where it is and reported as ambiguous.
fn resolve_aliases(body: &mut Map<String, Value>, errors: &mut Vec<FieldError>) {
    for &(alias, target) in ALIASES {
        let Some(value) = body.remove(alias) else {
            continue;
        };
        let value = match target.split_once('.') {
            None if body.contains_key(target) => {
                errors.push(ambiguous(alias, target));
                value
            }
            None => {
                body.insert(target.to_owned(), value);
                continue;
            }
            Some((parent, child)) => match body.get_mut(parent) {
                None => {
                    let mut obj = Map::new();
                    obj.insert(child.to_owned(), value);
                    body.insert(parent.to_owned(), Value::Object(obj));
                    continue;
                }
                Some(Value::Object(obj)) if !obj.contains_key(child) => {
                    obj.insert(child.to_owned(), value);
                    continue;
                }
                Some(Value::Object(_)) => {
                    errors.push(ambiguous(alias, target));
                    value
                }
                // The parent is not an object: its own check reports that.
                Some(_) => value,
            },
        };
        // Not renamed: keep it so the limit checks still see it.
        body.insert(alias.to_owned(), value);
    }
}

fn check_type(body: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<EventType> {
    match body.get("type") {
        None => {
            errors.push(FieldError::new(
                "type",
                FieldErrorCode::MissingField,
                "type is required",
            ));
            None
        }
        Some(Value::String(s)) => EventType::parse(s).map_err(|e| errors.push(e)).ok(),
        Some(_) => {
            errors.push(invalid("type", "type must be a string"));
            None
        }
    }
}

/// Checks an id-like member: a string, or an integer that becomes its decimal string (existing
/// producers send numeric ids). Returns the string form when valid.
fn normalize_id<'v>(
    value: &'v mut Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'v str> {
    if let Value::Number(n) = value
        && (n.is_u64() || n.is_i64())
    {
        *value = Value::String(n.to_string());
    }
    match value {
        Value::String(s) => Some(s),
        _ => {
            errors.push(invalid(path, format!("{path} must be a string")));
            None
        }
    }
}

fn check_id(body: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<EventId> {
    let value = body.get_mut("id")?;
    let s = normalize_id(value, "id", errors)?;
    EventId::parse(s).map_err(|e| errors.push(e)).ok()
}

fn check_time(body: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    const OUT_OF_RANGE: &str = "time is outside 1677-09-21 to 2262-04-11";
    let value = body.get_mut("time")?;
    let parsed = match value {
        Value::String(s) => {
            Timestamp::parse_rfc3339(s).ok_or(if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                OUT_OF_RANGE
            } else {
                "time must be an RFC 3339 date-time"
            })
        }
        Value::Number(n) => {
            let nanos = if let Some(i) = n.as_i64() {
                epoch_int_to_nanos(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                epoch_int_to_nanos(i128::from(u))
            } else {
                n.as_f64().and_then(epoch_float_to_nanos)
            };
            nanos.map(Timestamp::from_nanos).ok_or(OUT_OF_RANGE)
        }
        _ => Err("time must be an RFC 3339 string or a Unix epoch number"),
    };
    match parsed {
        Ok(t) => {
            *value = Value::String(t.to_rfc3339());
            Some(t)
        }
        Err(message) => {
            errors.push(invalid("time", message));
            None
        }
    }
}

/// Nanoseconds per unit of a Unix epoch number, guessed from its magnitude: seconds up to
/// 1e11 (year 5138), then milliseconds, microseconds, and nanoseconds above 1e17.
fn epoch_unit_nanos(magnitude: f64) -> i128 {
    if magnitude > 1e17 {
        1
    } else if magnitude > 1e14 {
        1_000
    } else if magnitude > 1e11 {
        1_000_000
    } else {
        1_000_000_000
    }
}

fn epoch_int_to_nanos(n: i128) -> Option<i64> {
    let unit = epoch_unit_nanos(n.unsigned_abs() as f64);
    i64::try_from(n.checked_mul(unit)?).ok()
}

/// Converts through the number's shortest decimal form, so `1714550400.123` is exactly
/// 1714550400123000000 ns rather than the nearest double's expansion.
fn epoch_float_to_nanos(x: f64) -> Option<i64> {
    // Beyond ±1e20 even nanoseconds overflow an i64.
    if !x.is_finite() || x.abs() > 1e20 {
        return None;
    }
    let unit = epoch_unit_nanos(x.abs());
    let unit_digits = unit.ilog10() as usize;
    // `Display` of an f64 never uses exponent notation.
    let text = x.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut nanos = int.parse::<i128>().ok()?.checked_mul(unit)?;
    let mut scale = unit;
    for digit in frac.bytes().take(unit_digits) {
        scale /= 10;
        nanos += i128::from(digit.checked_sub(b'0')?) * scale;
    }
    i64::try_from(if x < 0.0 { -nanos } else { nanos }).ok()
}

fn check_severity(body: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Severity> {
    let value = body.get_mut("severity")?;
    let level = match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(whole_number)),
        Value::String(s) => s
            .parse::<u64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(whole_number)),
        _ => None,
    };
    match level
        .and_then(|l| u8::try_from(l).ok())
        .and_then(|l| Severity::new(l).ok())
    {
        Some(severity) => {
            *value = Value::from(severity.get());
            Some(severity)
        }
        None => {
            errors.push(invalid(
                "severity",
                "severity must be an integer from 0 to 10",
            ));
            None
        }
    }
}

/// `x` as an integer when it is a non-negative whole number (`7.0`).
fn whole_number(x: f64) -> Option<u64> {
    // `as` saturates: an out-of-range value stays out of range for the caller's check.
    (x.fract() == 0.0 && x >= 0.0).then_some(x as u64)
}

fn check_actor(body: &mut Map<String, Value>, errors: &mut Vec<FieldError>) {
    match body.get_mut("actor") {
        None => {}
        Some(Value::Object(actor)) => {
            if let Some(id) = actor.get_mut("id") {
                normalize_id(id, "actor.id", errors);
            }
            check_string(actor, "type", "actor.type", errors);
            check_string(actor, "ip", "actor.ip", errors);
        }
        Some(_) => errors.push(invalid("actor", "actor must be an object")),
    }
}

fn check_resource(body: &mut Map<String, Value>, errors: &mut Vec<FieldError>) {
    match body.get_mut("resource") {
        None => {}
        Some(Value::Object(resource)) => {
            if let Some(id) = resource.get_mut("id") {
                normalize_id(id, "resource.id", errors);
            }
            check_string(resource, "type", "resource.type", errors);
        }
        Some(_) => errors.push(invalid("resource", "resource must be an object")),
    }
}

/// An optional string member: its value when present and a string.
fn check_string<'m>(
    obj: &'m Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'m str> {
    match obj.get(key)? {
        Value::String(s) => Some(s),
        _ => {
            errors.push(invalid(path, format!("{path} must be a string")));
            None
        }
    }
}

fn check_outcome(body: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    const OUTCOMES: [&str; 3] = ["success", "failure", "unknown"];
    if let Some(outcome) = body.get("outcome")
        && !outcome.as_str().is_some_and(|o| OUTCOMES.contains(&o))
    {
        errors.push(invalid(
            "outcome",
            "outcome must be one of success, failure, unknown",
        ));
    }
}

/// One walk over the whole event enforcing [`Limits`] (depth, key and string sizes, leaf
/// count), key hygiene and the integer range. Keys on the current path are kept as a stack of
/// borrows and only joined when an error needs the path.
struct LimitCheck<'a, 'e> {
    limits: &'a Limits,
    errors: &'e mut Vec<FieldError>,
    path: Vec<&'a str>,
    leaves: usize,
    too_deep: bool,
    /// Problems found once [`MAX_FIELD_ERRORS`] were listed: only counted, so a hostile event
    /// with a hundred thousand bad keys costs no more memory than one with a hundred.
    unlisted: usize,
}

impl<'a> LimitCheck<'a, '_> {
    /// Checks `body`; returns whether some value was nested too deep, and how many problems
    /// were counted without being listed.
    fn run(
        body: &'a Map<String, Value>,
        limits: &'a Limits,
        errors: &mut Vec<FieldError>,
    ) -> (bool, usize) {
        let mut check = LimitCheck {
            limits,
            errors,
            path: Vec::with_capacity(limits.max_depth.min(64)),
            leaves: 0,
            too_deep: false,
            unlisted: 0,
        };
        check.container(1, |c| c.object(body, 1));
        (check.too_deep, check.unlisted)
    }

    fn error(&mut self, code: FieldErrorCode, message: String) {
        if self.errors.len() >= MAX_FIELD_ERRORS {
            self.unlisted += 1;
            return;
        }
        let path = self.path_text();
        self.errors.push(FieldError::new(path, code, message));
    }

    /// An integer outside ±[`MAX_SAFE_INTEGER`]: reported once per path, and not where an
    /// envelope check already reported the field (`severity`, `time`).
    fn unsafe_integer(&mut self, n: &serde_json::Number) {
        let path = self.path_text();
        if self.errors.iter().any(|e| e.path == path) {
            return;
        }
        if self.errors.len() >= MAX_FIELD_ERRORS {
            self.unlisted += 1;
            return;
        }
        let message = format!(
            "integer {n} is beyond ±{MAX_SAFE_INTEGER} (2^53 - 1), the range JSON numbers hold \
             exactly; send it as a string"
        );
        self.errors
            .push(FieldError::new(path, FieldErrorCode::InvalidField, message));
    }

    /// The current path, dotted; keys over the length limit are cut.
    fn path_text(&self) -> String {
        let mut path = String::new();
        for (i, key) in self.path.iter().enumerate() {
            if i > 0 {
                path.push('.');
            }
            // Keys longer than the limit are cut in the error, not echoed whole.
            if key.len() > self.limits.max_key_bytes {
                let mut end = self.limits.max_key_bytes;
                while !key.is_char_boundary(end) {
                    end -= 1;
                }
                path.push_str(&key[..end]);
                path.push('…');
            } else {
                path.push_str(key);
            }
        }
        path
    }

    fn container(&mut self, depth: usize, descend: impl FnOnce(&mut Self)) {
        if depth > self.limits.max_depth {
            self.too_deep = true;
            let message = format!("nested deeper than {} levels", self.limits.max_depth);
            self.error(FieldErrorCode::TooDeep, message);
        } else {
            descend(self);
        }
    }

    fn object(&mut self, obj: &'a Map<String, Value>, depth: usize) {
        for (key, value) in obj {
            self.path.push(key);
            if key.len() > self.limits.max_key_bytes {
                let message = format!("key is longer than {} bytes", self.limits.max_key_bytes);
                self.error(FieldErrorCode::KeyTooLong, message);
            } else if key.is_empty() {
                self.error(FieldErrorCode::InvalidField, "key is empty".to_owned());
            } else if key.contains('\0') {
                self.error(
                    FieldErrorCode::InvalidField,
                    "key contains a NUL character".to_owned(),
                );
            }
            self.value(value, depth);
            self.path.pop();
        }
    }

    /// `value` sits in a container at `depth`.
    fn value(&mut self, value: &'a Value, depth: usize) {
        match value {
            Value::Object(obj) => self.container(depth + 1, |c| c.object(obj, depth + 1)),
            Value::Array(items) => self.container(depth + 1, |c| {
                for item in items {
                    c.value(item, depth + 1);
                }
            }),
            Value::String(s) => {
                self.leaf();
                if s.len() > self.limits.max_string_bytes {
                    let message = format!(
                        "string is {} bytes, more than the limit of {}",
                        s.len(),
                        self.limits.max_string_bytes
                    );
                    self.error(FieldErrorCode::StringTooLong, message);
                } else if s.contains('\0') {
                    // U+0000 cannot be stored or queried in every backend (PostgreSQL's jsonb
                    // refuses it), and no audit field needs it: refused on every store alike.
                    self.error(
                        FieldErrorCode::InvalidField,
                        "string contains a NUL character".to_owned(),
                    );
                }
            }
            Value::Number(n) => {
                self.leaf();
                if !is_safe_number(n) {
                    self.unsafe_integer(n);
                }
            }
            Value::Null | Value::Bool(_) => self.leaf(),
        }
    }

    fn leaf(&mut self) {
        self.leaves += 1;
        if self.leaves == self.limits.max_fields + 1 {
            let message = format!("event has more than {} fields", self.limits.max_fields);
            self.errors
                .push(FieldError::new("", FieldErrorCode::TooManyFields, message));
        }
    }
}

/// False for an integer outside ±[`MAX_SAFE_INTEGER`], including one too large for 64 bits,
/// which the JSON parser has already turned into a double (`18446744073709551617` arrives as
/// `1.8446744073709552e19`): a whole double beyond the exact range may stand for many different
/// integers, so two different events could share a digest. Fractional doubles are exact.
fn is_safe_number(n: &serde_json::Number) -> bool {
    if let Some(u) = n.as_u64() {
        u <= MAX_SAFE_INTEGER
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs() <= MAX_SAFE_INTEGER
    } else {
        n.as_f64()
            .is_none_or(|f| f.fract() != 0.0 || f.abs() <= MAX_SAFE_INTEGER as f64)
    }
}

impl Submitted {
    /// The event as it is published to NATS for a writer to store: the body as normalised, with
    /// an `id` (a fresh UUIDv7 when the client sent none; it is also the `Nats-Msg-Id`).
    /// `time` and `source` stay absent when the client sent none: the writer takes JetStream's
    /// receipt time (the same on every redelivery) and the default source the api node names
    /// in a header, after the content digest, as a direct append does. Server-set fields
    /// (`tenant`, `received_at`, `seq`, `hash`) are never part of it.
    pub fn into_published(mut self) -> (EventId, Vec<u8>) {
        let id = self.id.take().unwrap_or_else(|| {
            let id = EventId::generate();
            self.body
                .insert("id".to_owned(), Value::String(id.as_str().to_owned()));
            id
        });
        let bytes = serde_json::to_vec(&self.body).unwrap_or_default();
        (id, bytes)
    }

    /// Gives an event that carries no `id` this one (body included).
    pub fn set_default_id(&mut self, id: &EventId) {
        if self.id.is_none() {
            self.body
                .insert("id".to_owned(), Value::String(id.as_str().to_owned()));
            self.id = Some(id.clone());
        }
    }

    /// Applies server defaults and server-set fields: `id` (UUIDv7) if absent, `time` =
    /// `received_at` if absent, `severity` = 0 if absent, `source` = `default_source` (the
    /// credential's name) if absent; `tenant` and `received_at` from the server.
    ///
    /// The body is taken as [`normalize`] left it: its envelope members agree with this
    /// value's fields.
    pub fn prepare(
        self,
        tenant: &TenantId,
        received_at: Timestamp,
        default_source: &str,
    ) -> Prepared {
        let Submitted {
            id,
            event_type,
            time,
            severity,
            source,
            mut body,
            content_digest,
        } = self;
        // Server-set members come only from here, whatever the body holds.
        body.remove("seq");
        body.remove("hash");
        let received = received_at.to_rfc3339();
        let id = id.unwrap_or_else(|| {
            let id = EventId::generate();
            body.insert("id".to_owned(), Value::String(id.as_str().to_owned()));
            id
        });
        let time = time.unwrap_or_else(|| {
            body.insert("time".to_owned(), Value::String(received.clone()));
            received_at
        });
        let severity = severity.unwrap_or_else(|| {
            let severity = Severity::default();
            body.insert("severity".to_owned(), Value::from(severity.get()));
            severity
        });
        if source.is_none() {
            body.insert(
                "source".to_owned(),
                Value::String(default_source.to_owned()),
            );
        }
        body.insert(
            "tenant".to_owned(),
            Value::String(tenant.as_str().to_owned()),
        );
        body.insert("received_at".to_owned(), Value::String(received));
        Prepared {
            tenant: tenant.clone(),
            id,
            event_type,
            time,
            received_at,
            severity,
            content_digest,
            encoded: EncodedBody::encode(&body),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::canonical::to_canonical_bytes;
    use crate::test_support::{arb_json, arb_key};

    fn ok(v: Value) -> Submitted {
        match normalize(v, &Limits::default()) {
            Ok(s) => s,
            Err(errors) => panic!("rejected: {errors:?}"),
        }
    }

    fn errs(v: Value) -> Vec<(String, &'static str)> {
        errs_with(v, &Limits::default())
    }

    fn errs_with(v: Value, limits: &Limits) -> Vec<(String, &'static str)> {
        match normalize(v, limits) {
            Ok(s) => panic!("accepted: {:?}", s.body),
            Err(errors) => errors
                .into_iter()
                .map(|e| (e.path, e.code.as_str()))
                .collect(),
        }
    }

    #[test]
    fn published_events_carry_an_id_and_normalise_to_the_same_event() {
        let (id, bytes) = ok(json!({"type": "a.b", "actor": {"id": 7}})).into_published();
        let again = ok(serde_json::from_slice(&bytes).unwrap());
        assert_eq!(again.id.as_ref(), Some(&id));
        assert_eq!(
            again.source, None,
            "the default source is applied by the writer"
        );
        assert_eq!(again.time, None, "the writer stamps the receipt time");
        assert_eq!(again.body["actor"], json!({"id": "7"}));

        let sent = json!({"type": "a.b", "id": "e-1", "source": "idp"});
        let (id, bytes) = ok(sent.clone()).into_published();
        assert_eq!(id.as_str(), "e-1");
        let again = ok(serde_json::from_slice(&bytes).unwrap());
        assert_eq!(
            again.content_digest,
            ok(sent).content_digest,
            "the same event as when appended directly"
        );
    }

    fn err(path: &str, code: &'static str) -> Vec<(String, &'static str)> {
        vec![(path.to_owned(), code)]
    }

    #[test]
    fn legacy_identity_payload_keeps_every_field() {
        let s = ok(json!({
            "user_id": "u1",
            "event_type": "account.created",
            "timestamp": "2024-05-01T10:00:00+02:00",
            "src_service": "identity",
            "invariant_data": {"k": 1},
            "app_data": {"plan": "pro"}
        }));
        assert_eq!(
            Value::Object(s.body.clone()),
            json!({
                "actor": {"id": "u1"},
                "type": "account.created",
                "time": "2024-05-01T08:00:00Z",
                "source": "identity",
                "invariant_data": {"k": 1},
                "details": {"plan": "pro"}
            })
        );
        assert_eq!(s.event_type.as_str(), "account.created");
        assert_eq!(s.time, Timestamp::parse_rfc3339("2024-05-01T08:00:00Z"));
        assert_eq!(s.source.as_deref(), Some("identity"));
        assert_eq!(s.id, None);
        assert_eq!(s.severity, None);
    }

    #[test]
    fn legacy_security_payload_keeps_every_field() {
        let s = ok(json!({
            "event_type": "login.failed",
            "username": "bob",
            "ip": "10.0.0.7",
            "location": "Berlin",
            "description": "bad password",
            "event_specificdetails": {"attempt": 3}
        }));
        assert_eq!(
            Value::Object(s.body),
            json!({
                "type": "login.failed",
                "actor": {"id": "bob"},
                "ip": "10.0.0.7",
                "location": "Berlin",
                "description": "bad password",
                "details": {"attempt": 3}
            })
        );
    }

    #[test]
    fn aliases_and_canonical_names_give_the_same_event() {
        let aliased = ok(json!({
            "event_id": "e-1", "event_type": "x", "timestamp": 1_714_550_400,
            "criticality": "7", "username": "u", "src_service": "s", "event_details": {"a": 1}
        }));
        let canonical = ok(json!({
            "id": "e-1", "type": "x", "time": "2024-05-01T08:00:00Z",
            "severity": 7, "actor": {"id": "u"}, "source": "s", "details": {"a": 1}
        }));
        assert_eq!(aliased, canonical);
    }

    #[test]
    fn alias_merges_into_an_actor_without_id() {
        let s = ok(json!({"type": "x", "user_id": "u1", "actor": {"type": "user", "ip": "::1"}}));
        assert_eq!(
            s.body["actor"],
            json!({"id": "u1", "type": "user", "ip": "::1"})
        );
    }

    #[test]
    fn content_digest_is_sha256_of_the_canonical_body() {
        let s = ok(json!({"type": "x", "b": [1, 2.5], "a": "é"}));
        let want: Hash = Sha256::digest(r#"{"a":"é","b":[1,2.5],"type":"x"}"#.as_bytes()).into();
        assert_eq!(s.content_digest, want);
        assert_ne!(
            ok(json!({"type": "x", "b": 1})).content_digest,
            s.content_digest
        );
    }

    #[test]
    fn numeric_ids_become_strings() {
        let s = ok(json!({"type": "x", "id": 12345, "actor": {"id": 7}, "resource": {"id": -3}}));
        assert_eq!(s.id.as_ref().map(EventId::as_str), Some("12345"));
        assert_eq!(s.body["id"], "12345");
        assert_eq!(s.body["actor"]["id"], "7");
        assert_eq!(s.body["resource"]["id"], "-3");
    }

    #[test]
    fn time_forms() {
        let time = |t: Value| ok(json!({"type": "x", "time": t})).body["time"].clone();
        assert_eq!(
            time(json!("2024-05-01T10:00:00.5+02:00")),
            "2024-05-01T08:00:00.500Z"
        );
        assert_eq!(time(json!(1_714_550_400)), "2024-05-01T08:00:00Z");
        assert_eq!(
            time(json!(1_714_550_400_123i64)),
            "2024-05-01T08:00:00.123Z"
        );
        assert_eq!(
            time(json!(1_714_550_400_123_456i64)),
            "2024-05-01T08:00:00.123456Z"
        );
        assert_eq!(
            time(json!(1_714_550_400_123_456_789i64)),
            "2024-05-01T08:00:00.123456789Z"
        );
        assert_eq!(time(json!(1_714_550_400.123)), "2024-05-01T08:00:00.123Z");
        assert_eq!(
            time(json!(1_714_550_400_123.5)),
            "2024-05-01T08:00:00.123500Z"
        );
        assert_eq!(time(json!(-86_400)), "1969-12-31T00:00:00Z");
        assert_eq!(time(json!(0)), "1970-01-01T00:00:00Z");
        for bad in [
            json!("yesterday"),
            json!("2024-05-01"),
            json!("9999-01-01T00:00:00Z"),
            json!(true),
            json!(null),
            json!(1e20),
            json!(u64::MAX),
            json!(99_999_999_999i64), // year 5138 in seconds: beyond 2262
            json!({"s": 1}),
        ] {
            assert_eq!(
                errs(json!({"type": "x", "time": bad})),
                err("time", "invalid_field")
            );
        }
    }

    #[test]
    fn severity_forms() {
        let sev = |v: Value| {
            ok(json!({"type": "x", "severity": v}))
                .severity
                .map(Severity::get)
        };
        assert_eq!(sev(json!(7)), Some(7));
        assert_eq!(sev(json!(7.0)), Some(7));
        assert_eq!(sev(json!("7")), Some(7));
        assert_eq!(sev(json!(0)), Some(0));
        assert_eq!(sev(json!(10)), Some(10));
        assert_eq!(
            ok(json!({"type": "x", "criticality": "8"})).body["severity"],
            json!(8)
        );
        for bad in [
            json!(11),
            json!(-1),
            json!(7.5),
            json!("x"),
            json!("11"),
            json!(null),
            json!([7]),
        ] {
            assert_eq!(
                errs(json!({"type": "x", "severity": bad})),
                err("severity", "invalid_field")
            );
        }
    }

    #[test]
    fn not_an_object() {
        for v in [json!([]), json!("x"), json!(1), json!(null)] {
            assert_eq!(errs(v), err("", "not_an_object"));
        }
    }

    #[test]
    fn missing_type() {
        assert_eq!(errs(json!({"severity": 1})), err("type", "missing_field"));
    }

    #[test]
    fn invalid_envelope_fields() {
        let cases = [
            (json!({"type": 5}), "type"),
            (json!({"type": "has space"}), "type"),
            (json!({"type": ""}), "type"),
            (json!({"type": "x", "id": "a/b"}), "id"),
            (json!({"type": "x", "id": 1.5}), "id"),
            (json!({"type": "x", "actor": "bob"}), "actor"),
            (json!({"type": "x", "actor": {"id": true}}), "actor.id"),
            (json!({"type": "x", "actor": {"type": 1}}), "actor.type"),
            (json!({"type": "x", "actor": {"ip": 10}}), "actor.ip"),
            (json!({"type": "x", "resource": []}), "resource"),
            (json!({"type": "x", "resource": {"id": {}}}), "resource.id"),
            (
                json!({"type": "x", "resource": {"type": null}}),
                "resource.type",
            ),
            (json!({"type": "x", "source": 1}), "source"),
            (json!({"type": "x", "action": ["a"]}), "action"),
            (json!({"type": "x", "outcome": "maybe"}), "outcome"),
            (json!({"type": "x", "outcome": 1}), "outcome"),
            (json!({"type": "x", "details": "text"}), "details"),
            (json!({"type": "x", "details": {"": 1}}), "details."),
            (
                json!({"type": "x", "details": {"a\u{0}b": 1}}),
                "details.a\u{0}b",
            ),
        ];
        for (event, path) in cases {
            assert_eq!(errs(event.clone()), err(path, "invalid_field"), "{event}");
        }
        for outcome in ["success", "failure", "unknown"] {
            ok(json!({"type": "x", "outcome": outcome}));
        }
    }

    #[test]
    fn reserved_fields_are_rejected() {
        for field in RESERVED_FIELDS {
            assert_eq!(
                errs(json!({"type": "x", field: "v"})),
                err(field, "reserved_field")
            );
        }
    }

    #[test]
    fn ambiguous_aliases() {
        assert_eq!(
            errs(json!({"type": "x", "event_type": "y"})),
            err("event_type", "ambiguous_field")
        );
        assert_eq!(
            errs(json!({"type": "x", "user_id": "a", "username": "b"})),
            err("username", "ambiguous_field")
        );
        assert_eq!(
            errs(json!({"type": "x", "actor": {"id": "a"}, "username": "b"})),
            err("username", "ambiguous_field")
        );
        assert_eq!(
            errs(json!({"type": "x", "event_details": {}, "app_data": {}})),
            err("app_data", "ambiguous_field")
        );
        assert_eq!(
            errs(
                json!({"event_type": "x", "timestamp": 1, "time": 2, "severity": 1, "criticality": 2})
            ),
            vec![
                ("timestamp".to_owned(), "ambiguous_field"),
                ("criticality".to_owned(), "ambiguous_field")
            ]
        );
    }

    #[test]
    fn alias_onto_a_non_object_actor_reports_the_actor() {
        assert_eq!(
            errs(json!({"type": "x", "actor": 1, "user_id": "u"})),
            err("actor", "invalid_field")
        );
    }

    #[test]
    fn strings_holding_nul_are_refused_where_they_are() {
        let errors = normalize(
            json!({"type": "x", "details": {"note": "a\u{0}b", "ok": "fine"}}),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (
                errors[0].path.as_str(),
                errors[0].code,
                errors[0].message.as_str()
            ),
            (
                "details.note",
                FieldErrorCode::InvalidField,
                "string contains a NUL character"
            )
        );
    }

    /// Regression: problems were listed without bound, so one 1.6 MB event of keys holding NUL
    /// characters produced 100 002 field errors, and a response body far larger than the
    /// request. The list now stops at `MAX_FIELD_ERRORS` and one final entry counts the rest.
    #[test]
    fn error_lists_are_capped() {
        let mut event = Map::new();
        event.insert("type".into(), json!("x"));
        for i in 0..100_000 {
            event.insert(format!("k{i:06}\0"), json!(1));
        }
        let errors = normalize(Value::Object(event), &Limits::default()).unwrap_err();
        assert_eq!(errors.len(), MAX_FIELD_ERRORS + 1);
        assert!(errors[..MAX_FIELD_ERRORS].iter().all(|e| {
            e.code == FieldErrorCode::InvalidField && e.message == "key contains a NUL character"
        }));
        // 100 000 bad keys, too many fields, too large: 100 002 problems, 100 of them listed.
        let last = &errors[MAX_FIELD_ERRORS];
        assert_eq!(
            (last.path.as_str(), last.code, last.message.as_str()),
            (
                "",
                FieldErrorCode::InvalidField,
                "… and 99902 more problems"
            )
        );

        // Exactly at the cap: no summary; one more: "1 more problem".
        let bad_keys = |n: usize| {
            let mut event = Map::new();
            event.insert("type".into(), json!("x"));
            for i in 0..n {
                event.insert(format!("k{i:03}\0"), json!(1));
            }
            normalize(Value::Object(event), &Limits::default()).unwrap_err()
        };
        let errors = bad_keys(MAX_FIELD_ERRORS);
        assert_eq!(errors.len(), MAX_FIELD_ERRORS);
        assert!(errors.iter().all(|e| !e.path.is_empty()));
        let errors = bad_keys(MAX_FIELD_ERRORS + 1);
        assert_eq!(errors.len(), MAX_FIELD_ERRORS + 1);
        assert_eq!(errors[MAX_FIELD_ERRORS].message, "… and 1 more problem");
    }

    /// Regression: integers beyond 2^53 were accepted and written into the canonical form as
    /// doubles, so `9007199254740993` became `9007199254740992`: a second event with the same
    /// id and `9007199254740992` counted as a duplicate of the first and was dropped, and the
    /// stored event no longer said what the producer sent. RFC 8785 assumes I-JSON numbers,
    /// so such integers are now refused at their path, telling the producer to send strings.
    #[test]
    fn integers_beyond_the_exact_double_range_are_refused() {
        for n in [
            json!(9_007_199_254_740_993u64),
            json!(9_007_199_254_740_992u64),
            json!(u64::MAX),
            json!(-9_007_199_254_740_992i64),
            json!(i64::MIN),
        ] {
            let errors = normalize(
                json!({"id": "e1", "type": "x", "details": {"n": n}}),
                &Limits::default(),
            )
            .unwrap_err();
            assert_eq!(errors.len(), 1, "{n}");
            assert_eq!(
                (errors[0].path.as_str(), errors[0].code),
                ("details.n", FieldErrorCode::InvalidField),
                "{n}"
            );
            assert!(
                errors[0]
                    .message
                    .starts_with(&format!("integer {n} is beyond ±9007199254740991"))
                    && errors[0].message.ends_with("send it as a string"),
                "{}",
                errors[0].message
            );
        }
        // Regression: an integer too large for 64 bits reaches us as a double, and so would a
        // whole double beyond 2^53: either stands for many integers, so two different events
        // could share a content digest (same id → "duplicate" instead of 409). Refused too.
        for n in [
            json!(1.8446744073709552e19),
            json!(1e300),
            json!(9_007_199_254_740_993.0),
            json!(-1e20),
        ] {
            assert_eq!(
                errs(json!({"type": "x", "details": {"n": n}})),
                err("details.n", "invalid_field"),
                "{n}"
            );
        }
        // The edges of the range, fractions, and the same value as a string are fine.
        for n in [
            json!(9_007_199_254_740_991u64),
            json!(-9_007_199_254_740_991i64),
            json!(9_007_199_254_740_991.0),
            json!(12.5),
            json!(1e-300),
            json!("9007199254740993"),
        ] {
            ok(json!({"type": "x", "details": {"n": n}}));
        }
        // Anywhere in the event, once per field (arrays are transparent).
        assert_eq!(
            errs(json!({"type": "x", "big": 1u64 << 60, "tags": [1, 1u64 << 60, 1u64 << 61]})),
            vec![
                ("big".to_owned(), "invalid_field"),
                ("tags".to_owned(), "invalid_field")
            ]
        );
        // Envelope fields that normalise integers keep doing so losslessly...
        let s = ok(json!({"type": "x", "id": 9_007_199_254_740_993u64,
            "actor": {"id": u64::MAX}, "time": 1_714_550_400_123_456_789i64}));
        assert_eq!(s.body["id"], "9007199254740993");
        assert_eq!(s.body["actor"]["id"], "18446744073709551615");
        assert_eq!(s.body["time"], "2024-05-01T08:00:00.123456789Z");
        // ...and one that rejects a value reports it once.
        assert_eq!(
            errs(json!({"type": "x", "severity": 9_007_199_254_740_993u64})),
            err("severity", "invalid_field")
        );
    }

    #[test]
    fn depth_limit() {
        fn nest(levels: usize) -> Value {
            (0..levels).fold(json!(1), |v, _| json!({ "n": v }))
        }
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        // the event object is depth 1, `details` 2, `details.n` 3, `details.n.n` 4
        assert!(normalize(json!({"type": "x", "details": nest(3)}), &limits).is_ok());
        assert_eq!(
            errs_with(json!({"type": "x", "details": nest(4)}), &limits),
            err("details.n.n.n", "too_deep")
        );
        assert_eq!(
            errs_with(json!({"type": "x", "tags": [[[[1]]]]}), &limits),
            err("tags", "too_deep")
        );
        // serde_json's default limit, far beyond ours, is still rejected cleanly
        assert_eq!(
            errs(json!({"type": "x", "details": nest(100)})),
            err(&format!("details{}", ".n".repeat(15)), "too_deep")
        );
    }

    #[test]
    fn key_too_long() {
        let limits = Limits {
            max_key_bytes: 8,
            ..Limits::default()
        };
        assert!(normalize(json!({"type": "x", "details": {"12345678": 1}}), &limits).is_ok());
        assert_eq!(
            errs_with(json!({"type": "x", "details": {"123456789": 1}}), &limits),
            err("details.12345678…", "key_too_long")
        );
    }

    #[test]
    fn string_too_long() {
        let limits = Limits {
            max_string_bytes: 4,
            ..Limits::default()
        };
        assert!(normalize(json!({"type": "x", "a": "abcd"}), &limits).is_ok());
        assert_eq!(
            errs_with(json!({"type": "x", "tags": ["ok", "abcde"]}), &limits),
            err("tags", "string_too_long")
        );
    }

    #[test]
    fn too_many_fields() {
        let limits = Limits {
            max_fields: 3,
            ..Limits::default()
        };
        assert!(normalize(json!({"type": "x", "a": [1, 2]}), &limits).is_ok());
        assert_eq!(
            errs_with(json!({"type": "x", "a": [1, 2, 3, 4, 5]}), &limits),
            err("", "too_many_fields")
        );
    }

    #[test]
    fn event_too_large() {
        // {"a":"aaaaaaaa","type":"x"} is 27 bytes
        let limits = Limits {
            max_event_bytes: 27,
            ..Limits::default()
        };
        assert!(normalize(json!({"type": "x", "a": "aaaaaaaa"}), &limits).is_ok());
        assert_eq!(
            errs_with(json!({"type": "x", "a": "aaaaaaaaa"}), &limits),
            err("", "event_too_large")
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let limits = Limits {
            max_string_bytes: 3,
            ..Limits::default()
        };
        let got = errs_with(
            json!({"seq": 1, "severity": 99, "time": "soon", "actor": {"ip": 1}, "note": "long"}),
            &limits,
        );
        assert_eq!(
            got,
            vec![
                ("seq".to_owned(), "reserved_field"),
                ("type".to_owned(), "missing_field"),
                ("time".to_owned(), "invalid_field"),
                ("severity".to_owned(), "invalid_field"),
                ("actor.ip".to_owned(), "invalid_field"),
                ("note".to_owned(), "string_too_long"),
                ("time".to_owned(), "string_too_long"),
            ]
        );
    }

    #[test]
    fn path_aliases() {
        assert_eq!(resolve_path_alias("event_type"), "type");
        assert_eq!(resolve_path_alias("app_data.plan"), "details.plan");
        assert_eq!(resolve_path_alias("username"), "actor.id");
        assert_eq!(resolve_path_alias("timestamp"), "time");
        assert_eq!(resolve_path_alias("event_details.a.b"), "details.a.b");
        assert!(matches!(
            resolve_path_alias("details.event_type"),
            Cow::Borrowed("details.event_type")
        ));
        assert!(matches!(resolve_path_alias("usernames"), Cow::Borrowed(_)));
        assert!(matches!(resolve_path_alias(""), Cow::Borrowed("")));
    }

    #[test]
    fn prepare_fills_defaults_and_server_fields() {
        let tenant = TenantId::parse("acme").unwrap();
        let received = Timestamp::from_nanos(1_700_000_000_250_000_000);
        let p = ok(json!({"type": "x"})).prepare(&tenant, received, "billing");
        let stored: Value = serde_json::from_slice(&p.canonical_bytes(42)).unwrap();
        assert_eq!(stored["tenant"], "acme");
        assert_eq!(stored["received_at"], "2023-11-14T22:13:20.250Z");
        assert_eq!(stored["time"], "2023-11-14T22:13:20.250Z");
        assert_eq!(stored["severity"], 0);
        assert_eq!(stored["source"], "billing");
        assert_eq!(stored["seq"], 42);
        assert_eq!(stored["id"], p.id.as_str());
        assert_eq!(
            uuid::Uuid::parse_str(p.id.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(
            (p.time, p.received_at, p.severity.get()),
            (received, received, 0)
        );

        let p = ok(json!({"type": "x", "id": "e1", "time": 0, "severity": 3, "source": "s"}))
            .prepare(&tenant, received, "billing");
        assert_eq!(
            String::from_utf8(p.canonical_bytes(1)).unwrap(),
            r#"{"id":"e1","received_at":"2023-11-14T22:13:20.250Z","seq":1,"severity":3,"source":"s","tenant":"acme","time":"1970-01-01T00:00:00Z","type":"x"}"#
        );
        assert_eq!(
            (p.id.as_str(), p.time, p.severity.get()),
            ("e1", Timestamp::from_nanos(0), 3)
        );
    }

    /// Top-level objects that touch every envelope rule, with values of any shape.
    fn arb_event() -> impl Strategy<Value = Value> {
        let names: Vec<String> = [
            "id",
            "type",
            "time",
            "severity",
            "actor",
            "source",
            "action",
            "outcome",
            "resource",
            "details",
            "tenant",
            "seq",
            "hash",
            "received_at",
        ]
        .into_iter()
        .chain(ALIASES.iter().map(|(alias, _)| *alias))
        .map(str::to_owned)
        .collect();
        let key = prop_oneof![prop::sample::select(names), arb_key()];
        let value = prop_oneof![
            arb_json(),
            Just(json!("login.failed")),
            Just(json!(1_714_550_400)),
            Just(json!({"id": "u", "ip": "::1"})),
        ];
        prop::collection::btree_map(key, value, 0..10)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn arb_limits() -> impl Strategy<Value = Limits> {
        prop_oneof![
            Just(Limits::default()),
            (0usize..400, 0usize..6, 0usize..8, 0usize..16, 0usize..24).prop_map(
                |(max_event_bytes, max_depth, max_key_bytes, max_string_bytes, max_fields)| {
                    Limits {
                        max_event_bytes,
                        max_depth,
                        max_key_bytes,
                        max_string_bytes,
                        max_fields,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn normalize_never_panics(v in prop_oneof![arb_event(), arb_json()], limits in arb_limits()) {
            match normalize(v, &limits) {
                Ok(s) => {
                    let canonical = to_canonical_bytes(&Value::Object(s.body.clone()));
                    prop_assert!(canonical.len() <= limits.max_event_bytes);
                    let digest: Hash = Sha256::digest(&canonical).into();
                    prop_assert_eq!(s.content_digest, digest);
                    prop_assert_eq!(s.body.get("type").and_then(Value::as_str), Some(s.event_type.as_str()));
                    for (alias, _) in ALIASES {
                        prop_assert!(!s.body.contains_key(*alias));
                    }
                    for field in RESERVED_FIELDS {
                        prop_assert!(!s.body.contains_key(field));
                    }
                    let p = s.prepare(&TenantId::parse("t").unwrap(), Timestamp::from_nanos(0), "src");
                    let stored: Value = serde_json::from_slice(&p.canonical_bytes(1)).unwrap();
                    prop_assert_eq!(&stored["seq"], &json!(1));
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }

        #[test]
        fn normalizing_twice_changes_nothing(v in arb_event()) {
            if let Ok(first) = normalize(v, &Limits::default()) {
                let again = normalize(Value::Object(first.body.clone()), &Limits::default());
                prop_assert_eq!(again, Ok(first));
            }
        }
    }
}
