//! [`CliError`]: a failure the CLI itself detects, with a stable code like the server's.
//! `main` prints it as `error: <message> (<code>)`.

use std::fmt;

/// A failure the CLI itself detects, with a stable code like the server's.
#[derive(Debug)]
pub struct CliError {
    pub code: &'static str,
    message: String,
}

impl CliError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A command line that parsed but cannot be carried out as given (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new("usage", message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
