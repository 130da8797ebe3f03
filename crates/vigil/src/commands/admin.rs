//! `vigil keys`, `vigil users`, `vigil schemas`, `vigil token`: administration over HTTP, and
//! `vigil keys create --root`, the offline recovery of a root key straight into the store.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use vigil_client::{NewKey, NewUser};

use crate::args::{ClientArgs, OutputArgs, connect, parse_duration};
use crate::config::DEFAULT_SIGNING_KEY_NAME;
use crate::error::CliError;
use crate::output::{OutputFormat, csv_escape, simple_table, write_json, write_ndjson};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once. With --root: create a root key offline,
    /// straight into a stopped data directory or a PostgreSQL store (recovery when no root
    /// credential is left).
    Create(KeysCreateArgs),
    /// List the keys you administer.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a key at once (JWTs minted from it stop working too).
    Revoke {
        /// Key id (from `vigil keys list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the public key checkpoints are signed with (a C2SP verifier key, what
    /// `vigil verify --key` takes), creating the signing key if it does not exist yet.
    Signing(SigningKeyArgs),
}

#[derive(Debug, Args)]
pub struct SigningKeyArgs {
    /// Data directory whose `signing.key` is meant.
    #[arg(
        long,
        env = "VIGIL_DATA_DIR",
        default_value = crate::config::DEFAULT_DATA_DIR,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// The key file itself [default: <data-dir>/signing.key].
    #[arg(long, env = "VIGIL_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Name of a key created now (the first word of its signature lines; a host name such as
    /// `audit.example.com` tells witnesses which log it is). An existing key keeps its name.
    #[arg(long, default_value = DEFAULT_SIGNING_KEY_NAME)]
    pub name: String,
    /// `vkey`: the verifier key alone; `json`: name, key id, raw key and both verifier keys.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = SigningKeyFormat::Vkey)]
    pub format: SigningKeyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningKeyFormat {
    Vkey,
    Json,
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// Tenant the key belongs to.
    #[arg(long, required_unless_present = "root", conflicts_with = "root")]
    pub tenant: Option<String>,
    /// Comma-separated scopes: events:write, events:read, schemas:write, admin.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "root",
        conflicts_with = "root"
    )]
    pub scopes: Vec<String>,
    /// Recovery: create a root key (tenant `system`, scopes root,admin) offline, without a
    /// server or credential, in the store named by --store / --data-dir. An embedded data
    /// directory must not be in use by a running server; a PostgreSQL store may be, and its
    /// nodes pick the key up within --meta-refresh-interval.
    #[arg(long, conflicts_with = "expires_in")]
    pub root: bool,
    /// With --root: the data directory whose store is meant.
    #[arg(
        long,
        env = "VIGIL_DATA_DIR",
        default_value = crate::config::DEFAULT_DATA_DIR,
        value_name = "DIR",
        requires = "root"
    )]
    pub data_dir: PathBuf,
    /// With --root: `embedded` (the data directory) or the PostgreSQL URL of the store.
    #[arg(
        long,
        env = "VIGIL_STORE",
        default_value = "embedded",
        hide_env_values = true,
        value_name = "embedded|URL",
        requires = "root"
    )]
    pub store: String,
    /// Label; events sent with the key default their `source` to it [default: the tenant].
    #[arg(long)]
    pub name: Option<String>,
    /// Expire the key after this long (30d, 12h) [default: never].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires_in: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user. The password comes from VIGIL_USER_PASSWORD or, with --password-stdin,
    /// from the first line of stdin.
    Create(UsersCreateArgs),
    /// List the users you administer.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a user.
    Delete {
        username: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct UsersCreateArgs {
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub tenant: String,
    /// Comma-separated scopes: events:write, events:read, schemas:write, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// Read the password from the first line of stdin.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (environment only: it never appears on the command line).
    #[arg(long, env = "VIGIL_USER_PASSWORD", hide = true, hide_env_values = true)]
    pub password: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register (or replace) the JSON Schema for an event type.
    Put {
        /// Event type (`account.created`).
        event_type: String,
        /// JSON Schema file (draft 2020-12); `-` reads stdin.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the schema registered for an event type.
    Get {
        event_type: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the schema of an event type (its events are no longer validated).
    Delete {
        event_type: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the registered schemas.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// `table` prints the bare token (for `$(vigil token)`); json prints it with its expiry.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn keys(cmd: KeysCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create(args) => create_key(args, out).await,
        KeysCommand::List { client, output } => {
            let keys = connect(&client)?
                .list_keys()
                .await
                .context("listing keys")?;
            let rows = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.tenant.clone(),
                        k.scopes.join(","),
                        k.created_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        k.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    ]
                })
                .collect();
            let values = serde_json::to_value(&keys)?;
            print_list(
                out,
                output,
                &["id", "name", "tenant", "scopes", "created_at", "expires_at"],
                rows,
                values,
            )
        }
        KeysCommand::Signing(args) => signing_key(args, out),
        KeysCommand::Revoke { id, client } => {
            connect(&client)?
                .revoke_key(&id)
                .await
                .with_context(|| format!("revoking key {id}"))?;
            eprintln!("revoked key {id}");
            Ok(())
        }
    }
}

/// `vigil keys signing`: the checkpoint key's public half, created first if needed.
fn signing_key(args: SigningKeyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use base64::Engine;
    let path = args
        .signing_key
        .unwrap_or_else(|| args.data_dir.join("signing.key"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (key, created) = vigil_integrity::checkpoint::SigningKey::load_or_create(&path, &args.name)
        .with_context(|| format!("loading the signing key {}", path.display()))?;
    if created {
        eprintln!("created signing key {} (mode 0600)", path.display());
    }
    let verifier = key.verifier();
    match args.format {
        SigningKeyFormat::Vkey => writeln!(out, "{}", verifier.to_vkey())?,
        SigningKeyFormat::Json => {
            let doc = serde_json::json!({
                "name": verifier.name(),
                "key_id": format!("{:08x}", verifier.key_id()),
                "algorithm": "ed25519",
                "public_key": base64::engine::general_purpose::STANDARD.encode(verifier.public_key()),
                "vkey": verifier.to_vkey(),
                "cosignature_vkey": verifier.cosignature_vkey(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
    }
    Ok(())
}

async fn create_key(args: KeysCreateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.root {
        let key =
            create_root_key_offline(&args.store, &args.data_dir, args.name.as_deref()).await?;
        return print_created_key(out, args.output.format, key);
    }
    let tenant = args
        .tenant
        .ok_or_else(|| CliError::usage("--tenant is required"))?;
    let expires_at = match args.expires_in {
        Some(d) => Some(
            chrono::Utc::now()
                + chrono::Duration::from_std(d)
                    .map_err(|_| CliError::usage("--expires-in is too long"))?,
        ),
        None => None,
    };
    let request = NewKey {
        name: args.name.unwrap_or_else(|| tenant.clone()),
        tenant,
        scopes: args.scopes,
        expires_at,
    };
    let key = connect(&args.client)?
        .create_key(&request)
        .await
        .context("creating key")?;
    print_created_key(out, args.output.format, key)
}

/// `vigil keys create --root`: opens the store directly (the embedded data directory is
/// locked against a running server), adds a root key to the credential document and prints it.
async fn create_root_key_offline(
    store: &str,
    data_dir: &Path,
    name: Option<&str>,
) -> anyhow::Result<vigil_client::CreatedKey> {
    use std::sync::Arc;
    use vigil_store::Store;

    let store: Arc<dyn Store> = if store == "embedded" {
        if !data_dir.is_dir() {
            return Err(CliError::usage(format!(
                "no data directory at {}: give --data-dir (or VIGIL_DATA_DIR)",
                data_dir.display()
            ))
            .into());
        }
        let config = vigil_store_embedded::EmbeddedConfig::new(data_dir);
        let store =
            tokio::task::spawn_blocking(move || vigil_store_embedded::EmbeddedStore::open(config))
                .await
                .context("opening the data directory")?
                .with_context(|| {
                    format!(
                        "opening data directory {} (stop the server using it first)",
                        data_dir.display()
                    )
                })?;
        Arc::new(store)
    } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let store =
            vigil_store_postgres::PgStore::connect(vigil_store_postgres::PgConfig::new(store))
                .await
                .with_context(|| {
                    format!(
                        "opening the PostgreSQL store at {}",
                        vigil_store_postgres::redact_url(store)
                    )
                })?;
        Arc::new(store)
    } else {
        return Err(CliError::usage("--store must be `embedded` or a postgres:// URL").into());
    };
    let created = async {
        // No token is signed here: the key the config carries is never used.
        let auth = vigil_auth::Auth::open(Arc::clone(&store), vigil_auth::AuthConfig::default())
            .await
            .context("loading credentials")?;
        auth.create_recovery_root_key(name.unwrap_or("recovery"))
            .await
            .context("creating the root key")
    }
    .await;
    let stopped = store.shutdown().await.context("closing the store");
    let created = created?;
    stopped?;
    eprintln!(
        "created root key {} offline; revoke the lost or unused root keys with it",
        created.id
    );
    Ok(vigil_client::CreatedKey {
        id: created.id,
        key: created.key.into_inner(),
        name: created.name,
        tenant: created.tenant.to_string(),
        scopes: created.scopes.iter().map(|s| s.to_string()).collect(),
        created_at: Some(created.created_at),
        expires_at: created.expires_at,
    })
}

fn print_created_key(
    out: &mut dyn Write,
    format: OutputFormat,
    key: vigil_client::CreatedKey,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            let table = simple_table(
                &["id", "name", "tenant", "scopes", "key"],
                vec![vec![
                    key.id.clone(),
                    key.name.clone(),
                    key.tenant.clone(),
                    key.scopes.join(","),
                    key.key.clone(),
                ]],
            );
            writeln!(out, "{table}")?;
            if std::io::stderr().is_terminal() {
                eprintln!("store the key now: it is not shown again");
            }
        }
        format => print_one(out, format, &serde_json::to_value(&key)?)?,
    }
    Ok(())
}

pub async fn users(cmd: UsersCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create(args) => create_user(args, out).await,
        UsersCommand::List { client, output } => {
            let users = connect(&client)?
                .list_users()
                .await
                .context("listing users")?;
            let rows = users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.tenant.clone(),
                        u.scopes.join(","),
                        u.created_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    ]
                })
                .collect();
            let values = serde_json::to_value(&users)?;
            print_list(
                out,
                output,
                &["username", "tenant", "scopes", "created_at"],
                rows,
                values,
            )
        }
        UsersCommand::Delete { username, client } => {
            connect(&client)?
                .delete_user(&username)
                .await
                .with_context(|| format!("deleting user {username}"))?;
            eprintln!("deleted user {username}");
            Ok(())
        }
    }
}

async fn create_user(args: UsersCreateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        args.password.ok_or_else(|| {
            CliError::usage("no password: set VIGIL_USER_PASSWORD or use --password-stdin")
        })?
    };
    let request = NewUser {
        username: args.username,
        password,
        tenant: args.tenant,
        scopes: args.scopes,
    };
    let user = connect(&args.client)?
        .create_user(&request)
        .await
        .context("creating user")?;
    match args.output.format {
        OutputFormat::Table => {
            let table = simple_table(
                &["username", "tenant", "scopes"],
                vec![vec![
                    user.username.clone(),
                    user.tenant.clone(),
                    user.scopes.join(","),
                ]],
            );
            writeln!(out, "{table}")?;
        }
        format => print_one(out, format, &serde_json::to_value(&user)?)?,
    }
    Ok(())
}

pub async fn schemas(cmd: SchemasCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        SchemasCommand::Put {
            event_type,
            file,
            client,
        } => {
            let schema = read_json_file(&file)?;
            connect(&client)?
                .put_schema(&event_type, &schema)
                .await
                .with_context(|| format!("registering the schema of {event_type}"))?;
            eprintln!("schema for {event_type} registered");
            Ok(())
        }
        SchemasCommand::Get { event_type, client } => {
            let schema = connect(&client)?
                .get_schema(&event_type)
                .await
                .with_context(|| format!("reading the schema of {event_type}"))?;
            write_json(out, &schema)?;
            Ok(())
        }
        SchemasCommand::Delete { event_type, client } => {
            connect(&client)?
                .delete_schema(&event_type)
                .await
                .with_context(|| format!("deleting the schema of {event_type}"))?;
            eprintln!("schema for {event_type} deleted");
            Ok(())
        }
        SchemasCommand::List { client, output } => {
            let schemas = connect(&client)?
                .list_schemas()
                .await
                .context("listing schemas")?;
            let rows = schemas
                .iter()
                .map(|s| vec![s.event_type.clone(), s.schema.to_string()])
                .collect();
            let values = serde_json::to_value(&schemas)?;
            print_list(out, output, &["type", "schema"], rows, values)
        }
    }
}

pub async fn token(args: TokenArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let token = connect(&args.client)?
        .token()
        .await
        .context("exchanging the key for a token")?;
    match args.output.format {
        OutputFormat::Table => writeln!(out, "{}", token.token)?,
        format => print_one(out, format, &serde_json::to_value(&token)?)?,
    }
    Ok(())
}

fn read_json_file(path: &Path) -> anyhow::Result<Value> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// A list as a table (people) or as JSON / NDJSON / CSV (scripts).
fn print_list(
    out: &mut dyn Write,
    output: OutputArgs,
    header: &[&str],
    rows: Vec<Vec<String>>,
    values: Value,
) -> anyhow::Result<()> {
    match output.format {
        OutputFormat::Table => writeln!(out, "{}", simple_table(header, rows))?,
        OutputFormat::Json => write_json(out, &values)?,
        OutputFormat::Ndjson => {
            let items = match values {
                Value::Array(items) => items,
                other => vec![other],
            };
            write_ndjson(out, &items)?;
        }
        OutputFormat::Csv => {
            writeln!(out, "{}", header.join(","))?;
            for row in rows {
                let cells: Vec<String> = row.iter().map(|c| csv_escape(c)).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
    }
    Ok(())
}

/// One object in a script format (CSV: its top-level scalars).
fn print_one(out: &mut dyn Write, format: OutputFormat, value: &Value) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table | OutputFormat::Json => write_json(out, value)?,
        OutputFormat::Ndjson => write_ndjson(out, std::slice::from_ref(value))?,
        OutputFormat::Csv => {
            let Value::Object(map) = value else {
                return Ok(write_json(out, value)?);
            };
            let header: Vec<&str> = map.keys().map(String::as_str).collect();
            let cells: Vec<String> = map
                .values()
                .map(|v| match v {
                    Value::String(s) => csv_escape(s),
                    Value::Array(items) => csv_escape(
                        &items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    Value::Null => String::new(),
                    other => csv_escape(&other.to_string()),
                })
                .collect();
            writeln!(out, "{}\n{}", header.join(","), cells.join(","))?;
        }
    }
    Ok(())
}
