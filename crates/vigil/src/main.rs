//! `vigil`: the server and its command-line client in one binary.
//!
//! `main` only loads `.env`, parses the command line and hands off to a module per command:
//! [`serve`] runs the server over the embedded store; [`events`], [`admin`], [`import`],
//! [`bench`] and [`generate`] talk to a running server through `vigil_client`; `reindex` works
//! offline on a data directory. Errors print as `error: <message> (<code>)` on stderr; the exit status is 2 for
//! a usage error and 1 for any other failure.

mod admin;
mod bench;
mod cli;
mod config;
mod events;
mod generate;
mod import;
mod nats;
mod output;
mod serve;
mod verify;

use std::fmt;
use std::io::{BufWriter, ErrorKind, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use vigil_client::{Client, ClientError};

use crate::cli::{Cli, ClientArgs, Command, Role};

/// A failure the CLI itself detects, with a stable code like the server's.
#[derive(Debug)]
pub struct CliError {
    code: &'static str,
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

/// `vigil serve`, or a single-role shorthand (`vigil writer`, `vigil reader`) that is
/// `vigil serve --roles <role>`.
async fn serve_command(
    args: &cli::ServeArgs,
    matches: &clap::ArgMatches,
    name: &str,
    only: Option<Role>,
) -> anyhow::Result<()> {
    let serve_matches = matches
        .subcommand_matches(name)
        .context("parsing serve options")?;
    if only.is_some() {
        if !args.roles.is_empty() {
            return Err(CliError::usage(format!(
                "vigil {name} runs the {name} role only; use vigil serve --roles for others"
            ))
            .into());
        }
        if args.nats.nats.is_none() {
            return Err(CliError::usage(format!(
                "vigil {name} needs --nats (or VIGIL_NATS): it works on the NATS JetStream bus"
            ))
            .into());
        }
    }
    let (file_path, file) = config::load_file(args.config.as_deref())?;
    let mut settings = config::Settings::resolve(args, serve_matches, file)?;
    if let Some(role) = only {
        settings.roles = vec![role];
        settings.check_roles()?;
    }
    if args.print_config {
        print!("{}", settings.to_toml()?);
        return Ok(());
    }
    serve::run(settings, file_path).await
}

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

async fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Serve(args) => {
            drop(out);
            return serve_command(&args, matches, "serve", None).await;
        }
        Command::Writer(args) => {
            drop(out);
            return serve_command(&args, matches, "writer", Some(Role::Writer)).await;
        }
        Command::Reader(args) => {
            drop(out);
            return serve_command(&args, matches, "reader", Some(Role::Reader)).await;
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
        Command::Reindex(args) => reindex(args, &mut out).await,
        Command::Verify(args) => verify::run(*args, &mut out).await,
    };
    let flushed = out.flush().context("writing to stdout");
    result.and(flushed)
}

async fn reindex(args: cli::ReindexArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    let report = tokio::task::spawn_blocking(move || vigil_store_embedded::reindex(&dir))
        .await
        .context("reindexing")?
        .with_context(|| format!("reindexing {}", args.data_dir.display()))?;
    writeln!(out, "{report}")?;
    Ok(())
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
