//! `vigil serve` (and its single-role forms `vigil writer`, `vigil reader`): resolve the
//! configuration, open the store, bootstrap credentials, run the roles until SIGINT/SIGTERM.
//!
//! This is the only place that names a concrete backend (the embedded store or PostgreSQL).
//! The options themselves are described in [`crate::config`].

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;
use vigil_auth::Auth;
use vigil_bus::Bus;
use vigil_store::Store;
use vigil_store_embedded::EmbeddedStore;
use vigil_store_postgres::{PgStore, redact_url};

use crate::config::{Backend, DEFAULT_SIGNING_KEY_NAME, LogFormat, Role, Settings};
use crate::error::CliError;

/// `vigil serve`: the options of [`Settings`], plus which file to read them from.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Precedence: defaults < vigil.toml < VIGIL_* environment (and .env) < flags."
)]
pub struct ServeArgs {
    /// Configuration file [default: ./vigil.toml when present].
    #[arg(long, env = "VIGIL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `vigil serve`, or a single-role shorthand (`vigil writer`, `vigil reader`) that is
/// `vigil serve --roles <role>`. `matches` are the subcommand's, which tell flags and
/// variables from defaults.
pub async fn command(
    args: ServeArgs,
    matches: &clap::ArgMatches,
    name: &str,
    only: Option<Role>,
) -> anyhow::Result<()> {
    if only.is_some() {
        if !args.settings.roles.is_empty() {
            return Err(CliError::usage(format!(
                "vigil {name} runs the {name} role only; use vigil serve --roles for others"
            ))
            .into());
        }
        if args.settings.nats.nats.is_none() {
            return Err(CliError::usage(format!(
                "vigil {name} needs --nats (or VIGIL_NATS): it works on the NATS JetStream bus"
            ))
            .into());
        }
    }
    let (file_path, file) = crate::config::load_file(args.config.as_deref())?;
    let mut settings = args.settings.resolve(matches, file)?;
    if let Some(role) = only {
        settings.roles = vec![role];
        settings.check_roles()?;
    }
    if args.print_config {
        print!("{}", settings.to_toml()?);
        return Ok(());
    }
    run(settings, file_path).await
}

/// Name of the file, in the data directory, that receives the root admin key on first start.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Runs the server with `settings` until a shutdown signal, then drains requests and stops the
/// store so everything acknowledged is durable.
pub async fn run(settings: Settings, config_file: Option<PathBuf>) -> anyhow::Result<()> {
    init_tracing(settings.log_format, &settings.log_level)?;
    if let Some(path) = &config_file {
        tracing::info!(path = %path.display(), "configuration file read");
    }

    let store = open_store(&settings).await?;
    let result = serve_store(&settings, Arc::clone(&store)).await;
    let stopped = store.shutdown().await.context("flushing the store");
    result?;
    stopped?;
    tracing::info!("vigil stopped");
    Ok(())
}

/// Opens the store the settings name: the embedded log in the data directory, or PostgreSQL.
async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match settings.backend() {
        Backend::Embedded => {
            let data_dir = settings.data_dir.clone();
            let store_config = settings.store_config();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(store_config))
                .await
                .context("opening the data directory")?
                .with_context(|| format!("opening data directory {}", data_dir.display()))?;
            tracing::info!(data_dir = %data_dir.display(), "store open");
            Ok(Arc::new(store))
        }
        Backend::Postgres(url) => {
            // The data directory still holds the root admin key written on first start.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&settings.data_dir)
                .with_context(|| {
                    format!("creating data directory {}", settings.data_dir.display())
                })?;
            let store = PgStore::connect(settings.postgres_config(url))
                .await
                .with_context(|| format!("opening the PostgreSQL store at {}", redact_url(url)))?;
            Ok(Arc::new(store))
        }
    }
}

async fn serve_store(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<()> {
    // Only the api role signs and checks tokens; writers and readers need no JWT key.
    let auth_config = if settings.runs(Role::Api) {
        let (jwt_key, jwt_previous_keys) = load_jwt_keys(settings)?;
        vigil_auth::AuthConfig {
            jwt_key,
            jwt_previous_keys,
            ..settings.auth_config()
        }
    } else {
        settings.auth_config()
    };
    let auth = Auth::open(Arc::clone(&store), auth_config)
        .await
        .context("loading credentials")?;
    if settings.runs(Role::Api) {
        auth.pin_jwt_key()
            .await
            .context("checking this node's jwt key against the store's")?;
    }
    if settings.runs(Role::Api)
        && let Some(key) = auth
            .bootstrap_root_key()
            .await
            .context("creating the root admin key")?
    {
        let path = write_admin_key(&settings.data_dir, &key)?;
        tracing::info!(path = %path.display(), "root admin key created; it is shown nowhere else");
        eprintln!(
            "vigil: root admin key written to {} (mode 0600)",
            path.display()
        );
    }
    let bus = match settings.bus_config(&connection_name(settings)) {
        Some(config) => Some(Bus::connect(config).await.context("connecting to NATS")?),
        None => None,
    };
    if settings.runs(Role::Api)
        && let Some(bus) = &bus
    {
        bus.ensure_event_stream()
            .await
            .context("creating the NATS event stream")?;
    }
    // Every node listens: the api role serves the whole API, the others the operations
    // endpoints (health, readiness, metrics). Built before any role runs, as either installs
    // the metrics recorder.
    let (state, router) = if settings.runs(Role::Api) {
        let state = vigil_api::AppState::with_bus(
            Arc::clone(&store),
            auth,
            settings.api_config(),
            bus.clone(),
        )
        .await
        .context("starting the api")?;
        (Some(state.clone()), vigil_api::router(state))
    } else {
        let router = vigil_api::ops_router(Arc::clone(&store), bus.clone());
        (None, router)
    };

    // One signal stops every role: the api drains requests, the writer finishes its batch,
    // the reader its queries.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut roles = JoinSet::new();
    // Nodes that answer the API or write events sign checkpoints; those that write (or serve
    // the embedded store directly) also sign them periodically.
    if settings.runs(Role::Api) || settings.runs(Role::Writer) {
        let key = load_signing_key(&settings.signing_key())?;
        check_store_key(store.as_ref(), &key).await?;
        let signer = Arc::new(vigil_ingest::CheckpointSigner::new(key, Arc::clone(&store)));
        if let Some(state) = &state {
            state.install_checkpoint_signer(Arc::clone(&signer));
        }
        if bus.is_none() || settings.runs(Role::Writer) {
            let run = signer.run(settings.checkpoint_interval, stopped());
            roles.spawn(async move {
                run.await;
                Ok(())
            });
        }
    }
    if let Some(bus) = &bus {
        if settings.runs(Role::Writer) {
            // The writer admits events as the api does: beside it, with the same schema
            // registry; alone, with its own over the same store.
            let admitter = match &state {
                Some(state) => state.admitter().clone(),
                None => vigil_ingest::Admitter::load(
                    Arc::clone(&store),
                    settings.api_config().admit_config(),
                )
                .await
                .context("loading the schemas")?,
            };
            let writer = vigil_bus::writer::run_writer(
                bus.clone(),
                Arc::clone(&store),
                admitter,
                vigil_bus::writer::WriterConfig {
                    batch_size: settings.writer_batch_size,
                    batch_bytes: settings.writer_batch_bytes,
                    ..Default::default()
                },
                stopped(),
            );
            roles.spawn(async move { writer.await.map(|_| ()).context("writer role") });
        }
        if settings.runs(Role::Reader) {
            let reader = vigil_bus::reader::run_reader(
                bus.clone(),
                Arc::clone(&store),
                vigil_bus::reader::ReaderConfig {
                    query_limits: settings.api_config().query_limits,
                    ..Default::default()
                },
                stopped(),
            );
            roles.spawn(async move { reader.await.context("reader role") });
        }
    }
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let names: Vec<&str> = settings.roles.iter().map(|r| r.name()).collect();
    tracing::info!(roles = %names.join(","), "roles running");
    print_line(&format!("vigil listening on http://{addr}"))?;
    let serve_config = settings.serve_config();
    let http = async move {
        vigil_api::serve_router_with(listener, router, &serve_config, stopped()).await
    };
    roles.spawn(async move { http.await.context("serving http") });

    let signal = shutdown_signal().context("installing signal handlers")?;
    // A role that fails stops the others: a node half up is worse than one down.
    let mut result = Ok(());
    tokio::select! {
        () = signal => {}
        Some(ended) = roles.join_next() => {
            result = flatten(ended);
            if result.is_ok() {
                result = Err(anyhow::anyhow!("a role stopped unexpectedly"));
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(ended) = roles.join_next().await {
        if let Err(e) = flatten(ended) {
            if result.is_ok() {
                result = Err(e);
            } else {
                tracing::error!(error = %format!("{e:#}"), "role failed while stopping");
            }
        }
    }
    if let Some(bus) = &bus {
        // Bounded: a flush waits for a connection, and NATS may be down at shutdown.
        let _ = tokio::time::timeout(bus.config().request_timeout, bus.client().flush()).await;
    }
    result
}

/// Loads the JWT signing key (creating it at first start) and the previous key of a rotation.
fn load_jwt_keys(
    settings: &Settings,
) -> anyhow::Result<(vigil_auth::JwtSigningKey, Vec<vigil_auth::JwtVerifyingKey>)> {
    let path = settings.jwt_key();
    let (key, created) = vigil_auth::JwtSigningKey::load_or_create(&path)
        .with_context(|| format!("loading the jwt key {}", path.display()))?;
    let id = key.verifying_key().id();
    if created {
        tracing::info!(path = %path.display(), public_key = %id, "jwt signing key created");
        eprintln!(
            "vigil: jwt signing key created at {} (mode 0600); nodes sharing this store need a copy",
            path.display()
        );
    } else {
        tracing::info!(public_key = %id, "jwts signed with this key");
    }
    let previous = match &settings.jwt_key_previous {
        Some(path) => {
            let old = vigil_auth::JwtVerifyingKey::load(path)
                .with_context(|| format!("loading the previous jwt key {}", path.display()))?;
            tracing::info!(public_key = %old.id(), "jwts of the previous key still accepted");
            vec![old]
        }
        None => Vec::new(),
    };
    Ok((key, previous))
}

/// Loads the checkpoint signing key, creating it at first start.
fn load_signing_key(path: &Path) -> anyhow::Result<vigil_integrity::checkpoint::SigningKey> {
    let (key, created) =
        vigil_integrity::checkpoint::SigningKey::load_or_create(path, DEFAULT_SIGNING_KEY_NAME)
            .with_context(|| format!("loading the signing key {}", path.display()))?;
    let vkey = key.verifier().to_vkey();
    if created {
        tracing::info!(path = %path.display(), %vkey, "checkpoint signing key created");
        eprintln!(
            "vigil: checkpoint signing key created at {} (mode 0600); verifiers use {vkey}",
            path.display()
        );
    } else {
        tracing::info!(%vkey, "checkpoints signed with this key");
    }
    Ok(key)
}

/// The store remembers the first key that signed for it (meta document `signing-key`): a node
/// with another key — a fresh one made on a node that was not given the shared key file —
/// must not sign checkpoints verifiers would reject.
async fn check_store_key(
    store: &dyn Store,
    key: &vigil_integrity::checkpoint::SigningKey,
) -> anyhow::Result<()> {
    const META: &str = "signing-key";
    let vkey = key.verifier().to_vkey();
    let known = store
        .load_meta(META)
        .await
        .context("reading the store's signing key")?
        .map(|doc| {
            serde_json::from_slice::<serde_json::Value>(&doc)
                .ok()
                .and_then(|v| v.get("vkey").and_then(|k| k.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&doc).into_owned())
        });
    match known {
        Some(known) if known == vkey => Ok(()),
        Some(known) => anyhow::bail!(
            "this store's checkpoints are signed with {known}, but this node's key is {vkey}: give every node the same key file (--signing-key)"
        ),
        None => {
            let doc = serde_json::json!({ "vkey": vkey }).to_string();
            let saved = store
                .save_meta_if(META, None, doc.as_bytes())
                .await
                .context("recording the store's signing key")?;
            if saved.is_none() {
                // Another node recorded its key first: it must be ours.
                return Box::pin(check_store_key(store, key)).await;
            }
            Ok(())
        }
    }
}

fn flatten(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    ended.map_err(|e| anyhow::anyhow!("role task failed: {e}"))?
}

/// The name this node shows in NATS's monitoring: `vigil-<roles>@<host>`.
fn connection_name(settings: &Settings) -> String {
    let roles: Vec<&str> = settings.roles.iter().map(|r| r.name()).collect();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("vigil-{}@{host}", roles.join("+"))
}

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Writes the root key with mode 0600, never replacing a file: an existing `admin.key` (the
/// first root key's file, kept when every root key later expired, or left from an earlier
/// store) is kept, and the new key goes to `admin.key.<unix-time>` instead, so the only copy of
/// a key is never lost.
fn write_admin_key(data_dir: &Path, key: &str) -> anyhow::Result<PathBuf> {
    let primary = data_dir.join(ADMIN_KEY_FILE);
    match create_private(&primary, key) {
        Ok(()) => Ok(primary),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let stamp = chrono::Utc::now().timestamp();
            let fallback = data_dir.join(format!("{ADMIN_KEY_FILE}.{stamp}"));
            tracing::warn!(
                existing = %primary.display(),
                path = %fallback.display(),
                "no active root key was left in the store (every one expired, or this is a new \
                 store over an old data directory), so a new root key was created; the existing \
                 admin key file holds an older key and is kept, the new key is in the path shown"
            );
            create_private(&fallback, key)
                .with_context(|| format!("writing the root admin key to {}", fallback.display()))?;
            Ok(fallback)
        }
        Err(e) => {
            Err(e).with_context(|| format!("writing the root admin key to {}", primary.display()))
        }
    }
}

fn create_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down: draining requests");
    })
}

/// Logs go to stderr (stdout carries only the listening line).
fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid log level {filter:?}"))?;
    // Colour only for a person at a terminal; files and log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    if let Err(e) = installed {
        bail!("installing the logger: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_admin_key_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_admin_key(dir.path(), "vgl_first").unwrap();
        assert_eq!(first, dir.path().join(ADMIN_KEY_FILE));
        let mode = std::fs::metadata(&first).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let second = write_admin_key(dir.path(), "vgl_second").unwrap();
        assert_ne!(second, first);
        assert_eq!(std::fs::read_to_string(&first).unwrap().trim(), "vgl_first");
        assert_eq!(
            std::fs::read_to_string(&second).unwrap().trim(),
            "vgl_second"
        );
    }
}
