//! What several test modules share: the tenant they write to, its numbered events, and a
//! configuration with small segments so a few dozen events seal and rotate.

use std::path::Path;
use std::time::Duration;

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::json;
use vigil_event::{Prepared, TenantId};
use vigil_store::fixtures;
use vigil_store_embedded::EmbeddedConfig;

pub fn acme() -> TenantId {
    fixtures::tenant("acme")
}

/// Event `i` of acme's test log: id `ev-<i>`, severity `i % 11` (so severity filters have
/// known answers), distinct content per `i`.
pub fn event(i: usize) -> Prepared {
    fixtures::prepare(
        "acme",
        json!({"id": format!("ev-{i}"), "type": "login.failed", "severity": i % 11, "details": {"n": i}}),
    )
}

/// 16-event segments, sealed only when full (the timer is an hour).
pub fn small(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        segment_max_events: 16,
        seal_interval: Duration::from_secs(3600),
        ..EmbeddedConfig::new(dir)
    }
}

/// `cases` cases per property, with failures saved beside the test module that found them
/// (`model.rs` → `model.proptest-regressions`). Proptest's default would put them under
/// `tests/proptest-regressions/` now that the tests have a `main.rs`, and miss the seeds
/// already saved.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}
