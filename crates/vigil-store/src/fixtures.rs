//! Test fixtures shared by the stores' tests and benchmarks (feature `fixtures`, implied by
//! `testsuite`): tenants, minimal events, batches, and [`EventGen`], the one realistic event
//! generator.
//!
//! Every fixture event goes through the same path as an ingested one — `normalize` with the
//! default limits, then `prepare` — so a store under test only ever sees what the HTTP and bus
//! edges could hand it. The minimal events are for tests that check what a store does with
//! events (seq, chain, tree, duplicates), the generator for benchmarks and load: about 400
//! bytes and some 20 indexed fields per event, deterministic for a seed.
//!
//! ```
//! use vigil_store::fixtures::{EventGen, batch, event, tenant};
//!
//! let one = event("acme", "ev-1");
//! assert_eq!(one.tenant, tenant("acme"));
//! assert_eq!(batch("acme", "ev", 10).len(), 10);
//!
//! let events = EventGen::new(7, "load");
//! assert_eq!(events.event(3), EventGen::new(7, "load").event(3));
//! assert_eq!(events.event(3)["id"], "load-3");
//! ```

use std::ops::Range;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use vigil_event::{Limits, Prepared, TenantId, Timestamp, normalize};

/// A fixed instant for tests that need one: 2023-11-14T22:13:20Z.
pub const T0: Timestamp = Timestamp::from_nanos(1_700_000_000_000_000_000);

/// The event type of minimal events whose body names none.
pub const TEST_TYPE: &str = "test.event";

/// The source fixture events get when their body names none (the HTTP layer gives the
/// credential's name).
const SOURCE: &str = "test";

/// `name` as a tenant id; panics on a name the API would refuse.
pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap_or_else(|e| panic!("tenant {name:?}: {e:?}"))
}

/// `body` as ingest prepares it for `tenant`, received now: server defaults for `id`, `time`,
/// `severity` and `source` where the body has none. Panics on an event ingest would refuse.
pub fn prepare(tenant_name: &str, body: Value) -> Prepared {
    prepare_received(tenant_name, body, Timestamp::now())
}

fn prepare_received(tenant_name: &str, body: Value, received: Timestamp) -> Prepared {
    normalize(body.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("invalid fixture event {body}: {e:?}"))
        .prepare(&tenant(tenant_name), received, SOURCE)
}

/// A minimal valid event `id` of `tenant`: type [`TEST_TYPE`], everything else the server's
/// defaults (time = received = now). Two calls with the same id are the same event, so a
/// repeat is a duplicate; events with other ids differ in content.
pub fn event(tenant_name: &str, id: &str) -> Prepared {
    prepare(tenant_name, json!({"id": id, "type": TEST_TYPE}))
}

/// [`event`] with event time `time`.
pub fn event_at(tenant_name: &str, id: &str, time: Timestamp) -> Prepared {
    prepare(
        tenant_name,
        json!({"id": id, "type": TEST_TYPE, "time": time.to_rfc3339()}),
    )
}

/// `n` minimal events of `tenant`, for one append: [`event`]s `<prefix>-0` to `<prefix>-<n-1>`.
pub fn batch(tenant_name: &str, prefix: &str, n: usize) -> Vec<Prepared> {
    (0..n)
        .map(|i| event(tenant_name, &format!("{prefix}-{i}")))
        .collect()
}

/// How many distinct actors [`EventGen`] draws from (`u-0` to `u-4999`): a filter on one
/// actor is selective, as in a real log.
pub const ACTORS: u64 = 5_000;

/// Event types with their action and base severity: failures and risky changes rank higher.
const TYPES: [(&str, &str, u8); 10] = [
    ("login.succeeded", "login", 1),
    ("login.failed", "login", 6),
    ("account.created", "create", 2),
    ("account.updated", "update", 2),
    ("account.deactivated", "delete", 7),
    ("billing.charged", "charge", 3),
    ("permission.granted", "grant", 5),
    ("api_key.rotated", "rotate", 4),
    ("file.downloaded", "read", 1),
    ("mfa.disabled", "update", 9),
];
const SERVICES: [&str; 6] = [
    "auth",
    "billing",
    "accounts",
    "storage",
    "gateway",
    "admin-console",
];
const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "curl/8.7.1",
    "vigil-sdk-go/1.4.2",
];

/// Realistic random events (~400 bytes, ~20 indexed fields): types with their actions and
/// severities, actors, services, plans, user agents, IPs, request ids and amounts from fixed
/// pools. Event `index` is a function of the seed and `index` alone: the same on every run,
/// whatever order events are made in and however many generators share the work.
#[derive(Debug, Clone)]
pub struct EventGen {
    seed: u64,
    /// Prefix of every id this generator makes (`<prefix>-<index>`).
    prefix: String,
}

impl EventGen {
    pub fn new(seed: u64, id_prefix: impl Into<String>) -> Self {
        Self {
            seed,
            prefix: id_prefix.into(),
        }
    }

    /// Event number `index` as a client sends it, with id `<prefix>-<index>` and no `time`
    /// (the receiver stamps it).
    pub fn event(&self, index: u64) -> Value {
        let rng = &mut unit_rng(self.seed, index);
        let (event_type, action, base_severity) = TYPES[rng.random_range(0..TYPES.len())];
        let failed = event_type.ends_with("failed") || rng.random_bool(0.05);
        let severity = (base_severity + u8::from(failed) * 2 + rng.random_range(0..2)).min(10);
        let actor_n = rng.random_range(0..ACTORS);
        let ip = format!(
            "10.{}.{}.{}",
            rng.random_range(0..64u8),
            rng.random_range(0..=255u8),
            rng.random_range(1..255u8)
        );
        let request_id: String = (0..16)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect();
        json!({
            "id": format!("{}-{index}", self.prefix),
            "type": event_type,
            "severity": severity,
            "actor": {
                "id": format!("u-{actor_n}"),
                "type": if actor_n % 10 == 0 { "service" } else { "user" },
                "ip": ip,
            },
            "source": SERVICES[rng.random_range(0..SERVICES.len())],
            "action": action,
            "outcome": if failed { "failure" } else { "success" },
            "resource": {"type": "account", "id": format!("acct-{}", rng.random_range(0..20_000u32))},
            "details": {
                "request_id": request_id,
                "user_agent": AGENTS[rng.random_range(0..AGENTS.len())],
                "plan": PLANS[rng.random_range(0..PLANS.len())],
                "attempt": rng.random_range(1..4u8),
                "amount": f64::from(rng.random_range(0..100_000u32)) / 100.0,
            },
        })
    }

    /// Event `index` as ingest prepares it for `tenant`, received (and so timed) at `received`.
    pub fn prepared(&self, tenant_name: &str, index: u64, received: Timestamp) -> Prepared {
        prepare_received(tenant_name, self.event(index), received)
    }

    /// Events `indexes` of `tenant`, as one append, all received at `received`.
    pub fn batch(
        &self,
        tenant_name: &str,
        indexes: Range<u64>,
        received: Timestamp,
    ) -> Vec<Prepared> {
        indexes
            .map(|i| self.prepared(tenant_name, i, received))
            .collect()
    }
}

/// The random source of unit `index` of a run seeded with `seed` (an event here; a request of
/// `vigil bench`): every unit has a stream of its own, so it comes out the same whoever makes
/// it, in any order, by any number of workers.
pub fn unit_rng(seed: u64, index: u64) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    StdRng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn minimal_events_carry_what_they_are_given() {
        let e = event_at("acme", "ev-1", T0);
        assert_eq!(e.tenant, tenant("acme"));
        assert_eq!(e.id.as_str(), "ev-1");
        assert_eq!(e.time, T0);
        let body: Value = serde_json::from_slice(&e.canonical_bytes(1)).expect("json");
        assert_eq!(body["type"], TEST_TYPE);

        let own = prepare(
            "acme",
            json!({"id": "ev-2", "type": "login.failed", "severity": 4}),
        );
        let body: Value = serde_json::from_slice(&own.canonical_bytes(1)).expect("json");
        assert_eq!(
            (&body["type"], &body["severity"]),
            (&json!("login.failed"), &json!(4))
        );
    }

    #[test]
    fn a_batch_is_its_minimal_events() {
        let b = batch("acme", "r1", 5);
        let ids: Vec<&str> = b.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["r1-0", "r1-1", "r1-2", "r1-3", "r1-4"]);
        let digests: HashSet<_> = b.iter().map(|e| e.content_digest).collect();
        assert_eq!(digests.len(), 5, "events of a batch differ in content");
        assert_eq!(b[2].content_digest, event("acme", "r1-2").content_digest);
    }

    #[test]
    fn generated_events_are_valid_realistic_and_unique() {
        let g = EventGen::new(7, "bench-test");
        let mut total = 0;
        let mut ids = HashSet::new();
        for i in 0..200 {
            let e = g.event(i);
            total += serde_json::to_vec(&e).expect("json").len();
            assert!(ids.insert(e["id"].as_str().expect("id").to_owned()));
            normalize(e, &Limits::default()).expect("a valid event");
        }
        let mean = total / 200;
        assert!((300..=500).contains(&mean), "mean event size {mean} bytes");
    }

    #[test]
    fn a_seed_fixes_every_event_whatever_order_they_are_made_in() {
        let a = EventGen::new(42, "bench-s42");
        let b = EventGen::new(42, "bench-s42");
        let forward: Vec<Value> = (0..50).map(|i| a.event(i)).collect();
        let backward: Vec<Value> = (0..50).rev().map(|i| b.event(i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        assert_eq!(forward[3]["id"], "bench-s42-3");

        let other = EventGen::new(43, "bench-s42");
        let differing = (0..50)
            .filter(|&i| other.event(i) != forward[i as usize])
            .count();
        assert!(differing > 45, "only {differing} of 50 events differ");
    }

    /// Pins event 0 of seed 7: recorded runs (`vigil bench --seed`, benchmark figures) stay
    /// comparable only while the same seed gives the same events.
    #[test]
    fn a_seed_gives_the_same_events_on_every_run() {
        let want = json!({
            "id": "s7-0",
            "type": "account.updated",
            "severity": 3,
            "actor": {"id": "u-278", "type": "user", "ip": "10.1.84.117"},
            "source": "admin-console",
            "action": "update",
            "outcome": "success",
            "resource": {"type": "account", "id": "acct-8712"},
            "details": {
                "request_id": "a0be8ec4af9d620d",
                "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
                "plan": "free",
                "attempt": 1,
                "amount": 167.41,
            },
        });
        assert_eq!(EventGen::new(7, "s7").event(0), want);
    }

    #[test]
    fn prepared_events_are_the_generated_ones() {
        let g = EventGen::new(1, "p");
        let b = g.batch("acme", 10..13, T0);
        assert_eq!(b.len(), 3);
        for (e, i) in b.iter().zip(10..) {
            assert_eq!(e.id.as_str(), format!("p-{i}"));
            assert_eq!(e.time, T0);
            let body: Value = serde_json::from_slice(&e.canonical_bytes(1)).expect("json");
            assert_eq!(body["type"], g.event(i)["type"]);
            assert_eq!(body["details"], g.event(i)["details"]);
        }
    }
}
