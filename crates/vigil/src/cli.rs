//! The command line: one variant per command, as clap parses it. Each command's arguments
//! live with the command in [`crate::commands`]; groups several share in [`crate::args`].

use clap::{Parser, Subcommand};

use crate::commands::admin::{KeysCommand, SchemasCommand, TokenArgs, UsersCommand};
use crate::commands::bench::BenchArgs;
use crate::commands::events::{CountArgs, ExportArgs, LastArgs, QueryArgs};
use crate::commands::generate::GenerateArgs;
use crate::commands::import::ImportArgs;
use crate::commands::reindex::ReindexArgs;
use crate::commands::serve::ServeArgs;
use crate::commands::verify::VerifyArgs;

/// vigil: an audit-log and security-event service.
///
/// `vigil serve` runs the server (`vigil writer` and `vigil reader` run one of its roles).
/// Most other commands talk to a running server over HTTP (`VIGIL_URL`, `VIGIL_TOKEN`). These
/// need no server: `reindex` and `verify --data-dir` work on a stopped server's data
/// directory, `verify --store` on a PostgreSQL store, `verify EVENT.json` on one event and the
/// public key, and `keys signing` on the signing key file; `last --nats` asks vigil's readers
/// and `generate --nats` publishes, both over NATS.
#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP API over the embedded store in --data-dir; with --nats, also the
    /// writer and reader roles).
    Serve(Box<ServeArgs>),
    /// Consume the NATS JetStream event stream into the store (`serve --roles writer`).
    Writer(Box<ServeArgs>),
    /// Answer queries over NATS from the store (`serve --roles reader`).
    Reader(Box<ServeArgs>),
    /// Create, list and revoke API keys (scope `admin`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create, list and delete users who log in with a password (scope `admin`).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Register, show, delete and list per-type JSON Schemas.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Find events: a filter expression, `--where` filters, a time range.
    Query(QueryArgs),
    /// Show the most recent events, newest first.
    Last(LastArgs),
    /// Count matching events.
    Count(CountArgs),
    /// Stream every matching event to a file or stdout (NDJSON or CSV).
    Export(ExportArgs),
    /// Send events from an NDJSON file to the server, in batches.
    Import(ImportArgs),
    /// Rebuild the index files of a data directory from its log (server stopped).
    Reindex(ReindexArgs),
    /// Check the log is intact and only grew: a data directory or PostgreSQL store against its
    /// signed checkpoints, a saved checkpoint against a running server, or one event offline.
    Verify(Box<VerifyArgs>),
    /// Exchange the API key in VIGIL_TOKEN for a short-lived JWT.
    Token(TokenArgs),
    /// Measure ingest or query throughput and latency of a running server.
    Bench(BenchArgs),
    /// Produce realistic security events at a steady rate until stopped: the event daemon.
    Generate(GenerateArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::output::OutputFormat;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn relative_times_are_not_mistaken_for_flags() {
        let cli = Cli::try_parse_from([
            "vigil",
            "query",
            "severity>=7",
            "--from",
            "-1h",
            "-o",
            "json",
        ])
        .unwrap();
        let Command::Query(q) = cli.command else {
            panic!("not a query")
        };
        assert_eq!(q.filter.from.as_deref(), Some("-1h"));
        assert_eq!(q.filter.expr.as_deref(), Some("severity>=7"));
        assert_eq!(q.output.format, OutputFormat::Json);
    }

    #[test]
    fn min_severity_and_above_exclude_each_other() {
        assert!(
            Cli::try_parse_from(["vigil", "last", "--min-severity", "7", "--above", "3"]).is_err()
        );
        assert!(Cli::try_parse_from(["vigil", "last", "--min-severity", "11"]).is_err());
    }

    #[test]
    fn last_takes_a_tenant_over_nats_only() {
        let last = |args: &[&str]| Cli::try_parse_from(["vigil", "last"].iter().chain(args));
        let cli = last(&["--nats", "nats://127.0.0.1:4222", "--tenant", "acme"]).unwrap();
        let Command::Last(args) = cli.command else {
            panic!("not last")
        };
        assert_eq!(args.nats.nats.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(args.tenant.as_deref(), Some("acme"));
        assert!(
            last(&["--nats", "nats://127.0.0.1:4222"]).is_err(),
            "a reader answers for one tenant: --tenant is required"
        );
        assert!(
            last(&["--tenant", "acme"]).is_err(),
            "over HTTP the credential names the tenant"
        );
        let cli = last(&["-n", "5"]).unwrap();
        let Command::Last(args) = cli.command else {
            panic!("not last")
        };
        assert_eq!((args.nats.nats, args.tenant), (None, None));
    }

    #[test]
    fn serve_help_names_every_env_var_and_no_secret() {
        let mut cmd = Cli::command();
        let serve = cmd.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        for var in [
            "VIGIL_LISTEN",
            "VIGIL_DATA_DIR",
            "VIGIL_CONFIG",
            "VIGIL_MAX_BODY_BYTES",
            "VIGIL_MAX_BATCH_EVENTS",
            "VIGIL_MAX_EVENT_BYTES",
            "VIGIL_MAX_DEPTH",
            "VIGIL_MAX_KEY_BYTES",
            "VIGIL_MAX_STRING_BYTES",
            "VIGIL_MAX_FIELDS",
            "VIGIL_MAX_QUERY_LIMIT",
            "VIGIL_JWT_TTL",
            "VIGIL_RATE_LIMIT",
            "VIGIL_RATE_BURST",
            "VIGIL_SEGMENT_MAX_EVENTS",
            "VIGIL_SEAL_INTERVAL",
            "VIGIL_SIGNING_KEY",
            "VIGIL_CHECKPOINT_INTERVAL",
            "VIGIL_LOG_FORMAT",
            "VIGIL_LOG_LEVEL",
        ] {
            assert!(help.contains(var), "{var} missing from serve --help");
        }
    }
}
