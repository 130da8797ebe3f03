//! Why a query was refused.

/// A query the server cannot run. Every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query at offset {offset}: {message}")]
    Syntax { offset: usize, message: String },
    #[error("invalid parameter {name}: {message}")]
    InvalidParameter { name: String, message: String },
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("query too complex: {0}")]
    TooComplex(String),
}

impl QueryError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "invalid_query",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::InvalidCursor => "invalid_cursor",
            Self::TooComplex(_) => "query_too_complex",
        }
    }
}
