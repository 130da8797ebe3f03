//! Black-box test harness: runs the real `vigil` binary on port 0 over a temporary data
//! directory, on the embedded store or on a throwaway PostgreSQL database, and talks to it
//! through `vigil_client`.
//!
//! Server logs go to a file in the test directory (shown when a start fails), or to the test's
//! stderr when `TEST_LOG` is set.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use vigil_client::{Client, NewKey, Order, QueryParams};
use vigil_store_postgres::testing::TestDatabase;

/// Generous bound on anything that should take a moment (start-up, shutdown): it only guards
/// against hangs, never measures.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const BIN: &str = env!("CARGO_BIN_EXE_vigil");

/// Where a test server keeps events, credentials and schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The log in the data directory (`--store embedded`, the default).
    Embedded,
    /// A fresh database on the test PostgreSQL server (`--store postgres://…`).
    Postgres,
}

/// Turns each named `async fn name(backend: Backend)` into one `#[tokio::test]` per backend,
/// `embedded::name` and `postgres::name`, so every backend answers to the same assertions.
/// `main.rs` declares `common` first, with `#[macro_use]`, so every test module can use it.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Embedded).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// A temporary home for one or more servers in turn: `data/` is the data directory, the
/// directory itself the servers' working directory (so no stray `vigil.toml` or `.env` is read).
/// With PostgreSQL it also holds the store URL every server started over it is given, so a
/// restart finds the same database.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
    starts: AtomicUsize,
    /// `--store` for every server started over this directory; `None`: embedded.
    store_url: Option<String>,
    /// The database behind `store_url` when this directory made it: dropped with the
    /// directory, so after every server over it (declared later, dropped first).
    _database: Option<TestDatabase>,
}

impl TestDir {
    /// A directory for the embedded store.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temp dir"),
            starts: AtomicUsize::new(0),
            store_url: None,
            _database: None,
        }
    }

    /// A directory for `backend`; with PostgreSQL, over a fresh empty database that lives as
    /// long as the directory.
    pub async fn on(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self::new(),
            Backend::Postgres => {
                let database = TestDatabase::create().await;
                Self {
                    store_url: Some(database.url().to_owned()),
                    _database: Some(database),
                    ..Self::new()
                }
            }
        }
    }

    /// A directory whose servers use the PostgreSQL database at `url`, which the caller owns
    /// (and must keep for as long as servers run over this directory).
    pub fn with_store(url: &str) -> Self {
        Self {
            store_url: Some(url.to_owned()),
            ..Self::new()
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The root admin key the first start wrote.
    pub fn root_key(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.key"))
            .expect("reading admin.key")
            .trim()
            .to_owned()
    }
}

/// Why a server did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

/// One running `vigil serve`. Killed (and reaped) on drop, before the directory and database
/// it may own go.
#[derive(Debug)]
pub struct TestApp {
    pub url: String,
    pub data_dir: PathBuf,
    /// The root key the store's first start wrote to this data directory; empty on a node
    /// that joined a PostgreSQL store another node started first.
    pub root_key: String,
    child: Child,
    /// Kept open so the server's stdout never hits a closed pipe.
    _stdout: BufReader<ChildStdout>,
    log: Option<PathBuf>,
    /// Owns the directory (and its database) when the app made it itself
    /// ([`TestApp::spawn_on`]).
    _owned: Option<TestDir>,
}

impl TestApp {
    /// A fresh server over a fresh data directory, on the embedded store.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// A fresh server on the embedded store with extra `serve` options.
    pub async fn spawn_with(args: &[&str]) -> Self {
        Self::spawn_on(Backend::Embedded, args).await
    }

    /// A fresh server on `backend` (a fresh data directory, and with PostgreSQL a fresh
    /// database) with extra `serve` options.
    pub async fn spawn_on(backend: Backend, args: &[&str]) -> Self {
        let dir = TestDir::on(backend).await;
        let mut app = Self::start(&dir, args)
            .await
            .unwrap_or_else(|f| panic!("server did not start on {backend:?}: {f:?}"));
        app._owned = Some(dir);
        app
    }

    /// Starts a server over `dir` (which may hold data from an earlier server), on the store
    /// `dir` names.
    pub async fn start(dir: &TestDir, args: &[&str]) -> Result<Self, StartFailure> {
        let n = dir.starts.fetch_add(1, Ordering::Relaxed);
        let data_dir = dir.data_dir();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(url) = &dir.store_url {
            cmd.arg("--store").arg(url);
        }
        cmd.args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        scrub_env(cmd.as_std_mut());
        let log = if std::env::var_os("TEST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
            None
        } else {
            let path = dir.path().join(format!("server-{n}.log"));
            let file = std::fs::File::create(&path).expect("creating the server log");
            cmd.stderr(Stdio::from(file));
            Some(path)
        };
        let mut child = cmd.spawn().expect("spawning vigil");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let read_log = |log: &Option<PathBuf>| {
            log.as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };

        let mut line = String::new();
        let listening = tokio::time::timeout(PATIENCE, async {
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {
                        if let Some(addr) = line.trim().strip_prefix("vigil listening on ") {
                            return Some(addr.to_owned());
                        }
                    }
                }
            }
        })
        .await;
        let url = match listening {
            Ok(Some(url)) => url,
            Ok(None) => {
                let status = tokio::time::timeout(PATIENCE, child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                return Err(StartFailure {
                    status,
                    stderr: read_log(&log),
                });
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(StartFailure {
                    status: None,
                    stderr: format!("no listening line within {PATIENCE:?}\n{}", read_log(&log)),
                });
            }
        };
        // A node joining a PostgreSQL store another node bootstrapped has no admin.key.
        let root_key = std::fs::read_to_string(data_dir.join("admin.key"))
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            url,
            data_dir,
            root_key,
            child,
            _stdout: stdout,
            log,
            _owned: None,
        })
    }

    /// A client with the root admin key.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.root_key.clone())).expect("client")
    }

    /// A client with no credential.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None).expect("client")
    }

    /// A client with a new API key of `tenant` with `scopes`.
    pub async fn tenant_client(&self, tenant: &str, scopes: &[&str]) -> Client {
        let key = self.create_key(tenant, scopes).await;
        Client::new(&self.url, Some(key)).expect("client")
    }

    /// A new API key of `tenant` with `scopes` (created with the root key).
    pub async fn create_key(&self, tenant: &str, scopes: &[&str]) -> String {
        let created = self
            .client()
            .create_key(&NewKey {
                name: format!("{tenant}-test"),
                tenant: tenant.to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires_at: None,
            })
            .await
            .expect("creating a key");
        created.key
    }

    /// The `vigil` binary as a client of this server, with `token` in `VIGIL_TOKEN`.
    pub fn cli(&self, token: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("VIGIL_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("VIGIL_URL", &self.url)
            .env("VIGIL_TOKEN", token)
            .stdin(Stdio::null());
        if let Some(dir) = self.data_dir.parent() {
            cmd.current_dir(dir);
        }
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("server still running")
    }

    /// SIGTERM, then waits for the graceful exit.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("server did not stop after SIGTERM")
            .expect("waiting for the server")
    }

    /// SIGKILL: no shutdown, no flush.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }

    /// The server's log so far (empty with `TEST_LOG`, where it went to stderr).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for TestApp {
    /// SIGKILL and wait for the process to be gone, so a database this app owns is dropped
    /// only once nothing of the server can still touch it.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + PATIENCE;
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Keeps the developer's `VIGIL_*` settings away from test servers and CLI runs.
pub fn scrub_env(cmd: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(name);
        }
    }
}

/// Every event matching `params`, following cursors.
pub async fn all_events(client: &Client, params: QueryParams) -> Vec<Value> {
    let mut params = params.limit(1000).order(Order::Asc);
    let mut events = Vec::new();
    loop {
        let page = client.query(&params).await.expect("query");
        events.extend(page.events);
        match page.next_cursor {
            Some(c) => params.cursor = Some(c),
            None => return events,
        }
    }
}

/// Runs a CLI command to completion; returns (status, stdout, stderr).
pub async fn run_cli(mut cmd: std::process::Command) -> (ExitStatus, String, String) {
    let out = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("cli timed out")
        .expect("cli task")
        .expect("running the cli");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
