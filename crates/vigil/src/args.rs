//! Argument groups several commands share: where the server is and who we are
//! ([`ClientArgs`]), how results print ([`OutputArgs`]) and how to reach NATS ([`NatsArgs`]),
//! plus the value parsers they use. Commands flatten these into their own arguments.

mod nats;

use std::time::Duration;

use clap::Args;
use vigil_client::Client;

pub use self::nats::{NatsArgs, NatsFile};
use crate::error::CliError;
use crate::output::OutputFormat;

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the vigil server.
    #[arg(
        long,
        env = "VIGIL_URL",
        default_value = "http://127.0.0.1:7878",
        value_name = "URL"
    )]
    pub url: String,
    /// API key or JWT. Prefer the environment variable: command-line arguments are visible to
    /// other users of the machine.
    #[arg(
        long,
        env = "VIGIL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// A client for the server named by `--url`/`VIGIL_URL`, with the `VIGIL_TOKEN` credential.
pub fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let token = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if token.is_none() {
        return Err(CliError::new(
            "unauthenticated",
            "no credential: set VIGIL_TOKEN (or pass --token)",
        )
        .into());
    }
    Ok(Client::new(&args.url, token)?)
}

/// How results are printed.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format: a table for people, json/ndjson/csv for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// A humantime duration (`15m`, `1h 30m`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 15m, 1h)"))
}
