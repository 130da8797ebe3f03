//! Named, configurable limits on one event. Request-level limits (body size, batch size) live
//! with the HTTP layer.

use serde::{Deserialize, Serialize};

/// Bounds enforced by [`crate::normalize`]. Every field is configurable (`vigil serve --help`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest serialised event, in bytes (default 256 KiB).
    pub max_event_bytes: usize,
    /// Deepest nesting of objects/arrays, the event object itself being depth 1 (default 16).
    pub max_depth: usize,
    /// Longest object key, in bytes (default 256).
    pub max_key_bytes: usize,
    /// Longest string value, in bytes (default 64 KiB).
    pub max_string_bytes: usize,
    /// Most scalar leaves in one event (default 1 000): each is indexed.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            max_depth: 16,
            max_key_bytes: 256,
            max_string_bytes: 64 * 1024,
            max_fields: 1_000,
        }
    }
}
