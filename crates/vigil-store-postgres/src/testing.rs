//! A throwaway database per test (feature `testing`).
//!
//! Tests run in parallel against one PostgreSQL server; each gets its own database, created
//! empty and dropped (with any connections still open) when the guard goes.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::NoTls;

/// The server tests use: `VIGIL_TEST_POSTGRES` (a URL of any database on it, used to create
/// and drop the test databases), by default the local server with trust authentication.
pub fn admin_url() -> String {
    std::env::var("VIGIL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists while this value lives.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database with a unique name.
    pub async fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vigil_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let admin = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server at {admin}: {e}"));
        let driver = tokio::spawn(conn);
        drop_orphans(&client).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        drop(client);
        let _ = driver.await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("VIGIL_TEST_POSTGRES must be a URL ending in /<database>"),
        };
        Self { name, url }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A plain connection to this database, for what the store's interface cannot do.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(self.url(), NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(conn);
        client
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Drops the test databases of processes that are gone. A database shared by a whole test
/// binary lives in a `static`, which Rust never drops, and a killed test run drops nothing:
/// their names carry the creating process id, so the next run clears them.
async fn drop_orphans(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'vigil\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name
            .strip_prefix("vigil_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Another run may be clearing the same one: errors are harmless here.
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls).await.ok()?;
                let driver = tokio::spawn(conn);
                let r = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                drop(client);
                let _ = driver.await;
                r.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A PostgreSQL server of its own, in a temporary directory on a free port, for tests that
/// stop and restart the server (which they must not do to the shared one). Needs the server
/// binaries (`pg_config --bindir`); as root, runs them as the `postgres` user.
#[derive(Debug)]
pub struct PrivateServer {
    dir: std::path::PathBuf,
    bindir: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivateServer {
    /// Creates a cluster (trust authentication, fsync on) and starts it.
    pub fn start() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bindir = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .expect("pg_config --bindir: PostgreSQL server binaries are needed");
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = std::env::temp_dir().join(format!(
            "vigil-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the server directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let server = Self {
            dir,
            bindir: bindir.into(),
            port,
            as_postgres,
        };
        if as_postgres {
            server.run("chown", &["-R", "postgres:", &server.dir.to_string_lossy()]);
        }
        let data = server.data_dir();
        server.run_pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        server.restart();
        server
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let status = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(status.success(), "{program} {args:?} failed: {status}");
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        let path = self.bindir.join(tool).to_string_lossy().into_owned();
        if self.as_postgres {
            let mut all = vec!["-u", "postgres", "--", path.as_str()];
            all.extend_from_slice(args);
            self.run("runuser", &all);
        } else {
            self.run(&path, args);
        }
    }

    /// The URL of database `postgres` on this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again), waiting until it accepts connections; after
    /// [`crash`](Self::crash) this runs crash recovery.
    pub fn restart(&self) {
        let data = self.data_dir();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on",
            self.port,
            self.dir.to_string_lossy()
        );
        self.run_pg(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }

    /// Stops the server the hard way (`immediate`: no checkpoint, like a power cut for
    /// everything not yet in the WAL), so the next start recovers from the WAL.
    pub fn crash(&self) {
        self.run_pg(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let path = self.bindir.join("pg_ctl").to_string_lossy().into_owned();
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", path.as_str()]);
            c
        } else {
            std::process::Command::new(&path)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every event of `tenant` through a query (up to 100 000), ordered by seq.
pub async fn events_by_seq(
    store: &dyn vigil_store::Store,
    tenant: &vigil_event::TenantId,
) -> Vec<vigil_store::StoredEvent> {
    let query = vigil_query::Query {
        filter: vigil_query::Expr::All,
        from: None,
        to: None,
        limit: 100_000,
        order: vigil_query::Order::Asc,
        cursor: None,
    };
    let mut events = store.query(tenant, &query).await.expect("query").events;
    events.sort_by_key(|e| e.seq);
    events
}
