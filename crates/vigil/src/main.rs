//! `vigil`: the server and its command-line client in one binary.
//!
//! `main` only loads `.env`, parses the command line, hands off to the command and prints
//! its error as `error: <message> (<code>)` on stderr; the exit status is 2 for a usage error
//! and 1 for any other failure.
//!
//! # Layout
//!
//! - `cli.rs`: the command line, one variant per command.
//! - `commands/`: one module per command, owning its arguments and its `run`:
//!   - `serve.rs`: `serve`, `writer`, `reader`; the only place that names a concrete store;
//!   - `events.rs`: `query`, `last`, `count`, `export`;
//!   - `admin.rs`: `keys`, `users`, `schemas`, `token`;
//!   - `import.rs`, `reindex.rs`, `verify.rs`;
//!   - `bench.rs` with `bench/`: `bench` and its query templates;
//!   - `generate.rs` with `generate/`: `generate`, its scenarios and its HTTP or NATS target.
//! - `args.rs` with `args/`: argument groups several commands share (`--url`/`--token`,
//!   `--output`, the NATS connection).
//! - `config.rs`: the `serve` options, each described once, layered defaults < `vigil.toml` <
//!   `VIGIL_*` (and `.env`) < flags, and the rules they obey.
//! - `layered.rs`: the `options!` macro that turns one description of an option into its
//!   flag, variable, default, help and file key.
//! - `output.rs`: tables, JSON, NDJSON and CSV on stdout.
//! - `error.rs`: [`CliError`], a failure the CLI detects, with a stable code.
//!
//! Modules depend in one direction: `main`, `cli` → `commands` → `args`, `config`, `output`
//! → `layered`, `error`.

mod args;
mod cli;
mod commands;
mod config;
mod error;
mod layered;
mod output;

use std::io::{BufWriter, ErrorKind, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use vigil_client::ClientError;

use crate::cli::{Cli, Command};
use crate::commands::{admin, bench, events, generate, import, reindex, serve, verify};
use crate::config::Role;
use crate::error::CliError;

fn main() -> ExitCode {
    // `.env` in the working directory, as earlier deployments used; real variables win.
    let dotenv = dotenvy::dotenv();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = &dotenv
        && !e.not_found()
    {
        eprintln!("warning: ignoring .env: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Serve(args) => {
            drop(out);
            return serve::command(*args, serve_matches(matches, "serve")?, "serve", None).await;
        }
        Command::Writer(args) => {
            let matches = serve_matches(matches, "writer")?;
            drop(out);
            return serve::command(*args, matches, "writer", Some(Role::Writer)).await;
        }
        Command::Reader(args) => {
            let matches = serve_matches(matches, "reader")?;
            drop(out);
            return serve::command(*args, matches, "reader", Some(Role::Reader)).await;
        }
        Command::Keys(cmd) => admin::keys(cmd, &mut out).await,
        Command::Users(cmd) => admin::users(cmd, &mut out).await,
        Command::Schemas(cmd) => admin::schemas(cmd, &mut out).await,
        Command::Token(args) => admin::token(args, &mut out).await,
        Command::Query(args) => events::query(args, &mut out).await,
        Command::Last(args) => events::last(args, &mut out).await,
        Command::Count(args) => events::count(args, &mut out).await,
        Command::Export(args) => events::export(args, &mut out).await,
        Command::Import(args) => import::run(args, &mut out).await,
        Command::Bench(args) => bench::run(args, &mut out).await,
        Command::Generate(args) => generate::run(args, &mut out).await,
        Command::Reindex(args) => reindex::run(args, &mut out).await,
        Command::Verify(args) => verify::run(*args, &mut out).await,
    };
    let flushed = out.flush().context("writing to stdout");
    result.and(flushed)
}

/// The matches of serve subcommand `name`: they tell flags and variables from defaults.
fn serve_matches<'a>(matches: &'a ArgMatches, name: &str) -> anyhow::Result<&'a ArgMatches> {
    matches
        .subcommand_matches(name)
        .context("parsing serve options")
}

/// Prints `error: <message> (<code>)` (plus any details the server sent) and picks the exit
/// status. A closed stdout (`vigil query | head`) is not an error.
fn report(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    let mut code = None;
    let mut details = None;
    let mut usage = false;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            code = Some(e.code().to_owned());
            if let ClientError::Api {
                details: Some(d), ..
            } = e
            {
                details = Some(d.clone());
            }
            break;
        }
        if let Some(e) = cause.downcast_ref::<CliError>() {
            code = Some(e.code.to_owned());
            usage = e.code == "usage";
            break;
        }
        if let Some(e) = cause.downcast_ref::<vigil_auth::AuthError>() {
            code = Some(e.code().to_owned());
            break;
        }
    }
    let mut stderr = std::io::stderr().lock();
    let _ = match &code {
        Some(code) => writeln!(stderr, "error: {err:#} ({code})"),
        None => writeln!(stderr, "error: {err:#}"),
    };
    if let Some(details) = details {
        let _ = writeln!(stderr, "details: {details}");
    }
    if usage {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
