//! The shared Store conformance suite, run against the embedded store twice: with the default
//! segment size (everything in the in-memory index) and with tiny segments, so most events are
//! served from sealed, memory-mapped segments.

use std::sync::Arc;
use std::time::Duration;

use vigil_store::testsuite::Harness;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

async fn open(config: impl FnOnce(&std::path::Path) -> EmbeddedConfig) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(config(dir.path())).expect("open");
    Harness {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

async fn fresh() -> Harness {
    open(|p| EmbeddedConfig::new(p)).await
}

async fn fresh_tiny_segments() -> Harness {
    open(|p| EmbeddedConfig {
        segment_max_events: 4,
        seal_interval: Duration::from_secs(3600),
        ..EmbeddedConfig::new(p)
    })
    .await
}

mod memtable {
    use super::fresh;
    vigil_store::store_conformance_suite!(fresh);
}

mod sealed {
    use super::fresh_tiny_segments;
    vigil_store::store_conformance_suite!(fresh_tiny_segments);
}
