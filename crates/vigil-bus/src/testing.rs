//! A private nats-server for tests (feature `testing`).
//!
//! Tests that kill, restart or reconfigure NATS cannot share the machine's server: each starts
//! its own [`PrivateNats`] — JetStream on, listening on 127.0.0.1 on a free port, its store and
//! its log in a temporary directory it owns — which is killed when dropped. Tests that only
//! publish and query share the server at 127.0.0.1:4222 instead, each under its own
//! [`unique_name`].
//!
//! The binary is `/usr/sbin/nats-server`, or the one `VIGIL_NATS_SERVER` names. With
//! `VIGIL_NATS_TRACE` set, the servers log every protocol line (`-DV`), which shows for instance
//! the exact subjects a client publishes to. When a test panics, the server's directory is kept
//! and its path printed.
//!
//! ```no_run
//! use vigil_bus::testing::PrivateNats;
//!
//! let mut nats = PrivateNats::start();
//! let url = nats.url(); // nats://127.0.0.1:<port>
//! nats.kill(); // SIGKILL, as when the machine fails
//! nats.restart(); // same port, same store: streams and messages are back
//! ```

use std::collections::hash_map::RandomState;
use std::fs::OpenOptions;
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// Environment variable naming the nats-server binary to run instead of [`DEFAULT_SERVER`].
pub const SERVER_ENV: &str = "VIGIL_NATS_SERVER";

/// The nats-server binary run when [`SERVER_ENV`] is not set.
pub const DEFAULT_SERVER: &str = "/usr/sbin/nats-server";

/// Environment variable that, when set, makes the servers trace the protocol into their log.
pub const TRACE_ENV: &str = "VIGIL_NATS_TRACE";

/// How long a server may take to accept connections (JetStream recovers its store first).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Free ports tried on the first start: another process may take the one picked before the
/// server binds it.
const PORT_ATTEMPTS: usize = 5;
/// Lines of each log shown when a server fails to start.
const TAIL_LINES: usize = 30;

const STORE_DIR: &str = "store";
const LOG_FILE: &str = "nats-server.log";
/// The server's stdout and stderr: what it prints before its log file is open, such as errors
/// in its configuration file.
const OUTPUT_FILE: &str = "output.log";

/// A nats-server with JetStream that this value owns: started on a free port of 127.0.0.1,
/// killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct PrivateNats {
    /// The binary, kept so that a restart runs the same one.
    binary: PathBuf,
    /// Server name, unique to this value: the readiness check accepts only an `INFO` line
    /// naming it, never one from another process that took the port.
    name: String,
    port: u16,
    /// The `-c` file and the extra environment, given again on every restart.
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    /// Holds the store, the log and the output. An `Option` only so that `Drop` can keep it
    /// when a test panics.
    dir: Option<TempDir>,
    /// The running server; `None` after [`PrivateNats::kill`].
    child: Option<Child>,
}

/// Why a server did not start.
#[derive(Debug)]
enum BootError {
    /// Another process listens on the port: worth trying another one.
    PortTaken,
    /// Anything else, described.
    Failed(String),
}

impl PrivateNats {
    /// Starts a server with JetStream and no authentication, and returns once it accepts
    /// connections. Panics, with the end of the server's log, when it does not start.
    pub fn start() -> Self {
        Self::launch(None, &[])
    }

    /// Starts a server from the configuration file `config` (`-c`), with `env` added to its
    /// environment (for `$VARIABLE` references in the file, such as passwords), and returns
    /// once it accepts connections. The command line still sets the address (127.0.0.1), a
    /// free port, JetStream and the store directory, overriding the file; the file must
    /// therefore not set `store_dir` (nats-server refuses a store directory given both ways).
    /// Panics, with the end of the server's log, when it does not start.
    pub fn start_with_config(config: &Path, env: &[(&str, &str)]) -> Self {
        let config = std::fs::canonicalize(config)
            .unwrap_or_else(|e| panic!("nats-server configuration file {}: {e}", config.display()));
        Self::launch(Some(config), env)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL — no shutdown, no flush, as when the machine fails — and
    /// waits until it is gone. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Err(e) = self.stop() {
            panic!("killing nats-server on port {}: {e}", self.port);
        }
    }

    /// Starts the server again (killing it first if it runs) on the same port, with the same
    /// store, configuration and environment, and returns once it accepts connections. Panics,
    /// with the end of the server's log, when it does not start — for instance when another
    /// process took the port meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.boot() {
            let reason = match e {
                BootError::PortTaken => "another process listens on the port".to_owned(),
                BootError::Failed(reason) => reason,
            };
            panic!("{}", self.failure_report(&format!("restart: {reason}")));
        }
    }

    fn launch(config: Option<PathBuf>, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut taken = Vec::with_capacity(PORT_ATTEMPTS);
        for _ in 0..PORT_ATTEMPTS {
            let mut nats = Self::unstarted(free_port(), config.clone(), env.clone());
            match nats.boot() {
                Ok(()) => return nats,
                Err(BootError::PortTaken) => taken.push(nats.port),
                Err(BootError::Failed(reason)) => {
                    // The report carries the logs' ends: the directory need not be kept.
                    let report = nats.failure_report(&reason);
                    drop(nats);
                    panic!("{report}");
                }
            }
        }
        panic!(
            "nats-server found each free port taken by another process before it could listen \
             (tried {taken:?})"
        );
    }

    fn unstarted(port: u16, config: Option<PathBuf>, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vigil-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a directory for nats-server: {e}"));
        Self {
            binary: std::env::var_os(SERVER_ENV)
                .map_or_else(|| PathBuf::from(DEFAULT_SERVER), PathBuf::from),
            name: unique_name("vigil-test"),
            port,
            config,
            env,
            dir: Some(dir),
            child: None,
        }
    }

    fn dir(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => unreachable!("the directory is only taken when dropping"),
        }
    }

    /// Spawns the server and waits until it accepts connections.
    fn boot(&mut self) -> Result<(), BootError> {
        let child = self.spawn().map_err(|e| {
            BootError::Failed(format!(
                "cannot run {} (install nats-server or set {SERVER_ENV}): {e}",
                self.binary.display()
            ))
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn spawn(&self) -> io::Result<Child> {
        let dir = self.dir();
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(OUTPUT_FILE))?;
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &self.name, "-js", "-sd"])
            .arg(dir.join(STORE_DIR))
            .arg("-l")
            .arg(dir.join(LOG_FILE));
        if std::env::var_os(TRACE_ENV).is_some() {
            command.arg("-DV");
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
    }

    /// Polls until the server answers with an `INFO` line naming it, it exits, or the deadline
    /// passes.
    fn wait_ready(&mut self) -> Result<(), BootError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(BootError::Failed("it is not running".to_owned()));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(if self.port_was_taken() {
                        BootError::PortTaken
                    } else {
                        BootError::Failed(format!("it exited ({status})"))
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(BootError::Failed(format!("cannot watch it: {e}"))),
            }
            if let Ok(line) = read_info_line(self.port)
                && info_names_server(&line, &self.name)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BootError::Failed(format!(
                    "it did not accept connections within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn port_was_taken(&self) -> bool {
        [LOG_FILE, OUTPUT_FILE].iter().any(|file| {
            std::fs::read(self.dir().join(file)).is_ok_and(|bytes| {
                String::from_utf8_lossy(&bytes).contains("address already in use")
            })
        })
    }

    fn failure_report(&self, reason: &str) -> String {
        let mut report = format!(
            "nats-server {} on 127.0.0.1:{} did not start: {reason}",
            self.binary.display(),
            self.port
        );
        for file in [OUTPUT_FILE, LOG_FILE] {
            let path = self.dir().join(file);
            report.push_str(&format!(
                "\n--- last lines of {} ---\n{}",
                path.display(),
                tail(&path, TAIL_LINES)
            ));
        }
        report
    }

    /// Kills the server if it runs and waits for it to exit.
    fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // `kill` fails only when the process has already exited; `wait` reaps it either way.
        let _ = child.kill();
        child.wait().map(drop)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("killing nats-server on port {}: {e}", self.port);
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("nats-server store and log kept in {}", dir.keep().display());
        }
    }
}

/// A name for per-test streams, subjects and namespaces, unique across the tests of a process
/// and across processes running at once: `<label>-<pid>-<counter>-<6 random hex digits>`, with
/// characters of `label` outside `[A-Za-z0-9_-]` replaced by `_`. The random part keeps a name
/// apart from the leftovers of an earlier run whose process had the same id. The suffix is at
/// most 24 characters; keep labels short where names are limited (a namespace is at most 32).
pub fn unique_name(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // `RandomState` is seeded randomly per process: hashing the time and the counter with it
    // gives a value no other process predicts.
    let noise = RandomState::new().hash_one((SystemTime::now(), count)) & 0xff_ffff;
    format!("{label}-{:x}-{count:x}-{noise:06x}", std::process::id())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Connects to `127.0.0.1:port` and reads the first protocol line (a NATS server sends `INFO`).
fn read_info_line(port: u16) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = Vec::new();
    let mut buf = [0_u8; 4096];
    while !line.ends_with(b"\r\n") && line.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Whether `line` is a NATS `INFO` line from the server called `name`.
fn info_names_server(line: &str, name: &str) -> bool {
    line.starts_with("INFO ") && line.contains(&format!("\"server_name\":\"{name}\""))
}

/// The last `lines` lines of a text file, or why it cannot be read.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let skip = all.len().saturating_sub(lines);
            all.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("({e})"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn unique_names_differ_and_use_subject_safe_characters() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("perm tests.*")).collect();
        assert_eq!(names.len(), 1000);
        for name in &names {
            assert!(name.starts_with("perm_tests__-"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name}"
            );
        }
        assert!(unique_name("t").len() <= 1 + 24);
    }

    #[test]
    fn readiness_accepts_only_the_info_line_naming_this_server() {
        let line = "INFO {\"server_id\":\"N1\",\"server_name\":\"vigil-test-1-0-abc\",\"version\":\"2.9.10\"}\r\n";
        assert!(info_names_server(line, "vigil-test-1-0-abc"));
        assert!(!info_names_server(line, "vigil-test-1-0-ab"));
        assert!(!info_names_server(
            "-ERR 'Authorization Violation'\r\n",
            "x"
        ));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail(&path, 2), "two\nthree");
        assert_eq!(tail(&path, 10), "one\ntwo\nthree");
        assert!(tail(&dir.path().join("missing"), 2).starts_with('('));
    }

    #[test]
    fn a_taken_port_is_reported_as_such() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut nats = PrivateNats::unstarted(port, None, Vec::new());
        assert!(matches!(nats.boot(), Err(BootError::PortTaken)));
    }

    #[test]
    #[should_panic(expected = "VIGIL_TEST_NEVER_SET_5E1F")]
    fn a_failed_start_shows_the_server_output() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bad.conf");
        std::fs::write(
            &config,
            "authorization { user: a, password: $VIGIL_TEST_NEVER_SET_5E1F }\n",
        )
        .unwrap();
        PrivateNats::start_with_config(&config, &[]);
    }

    #[tokio::test]
    async fn restart_keeps_the_port_and_the_store() {
        let mut nats = PrivateNats::start();
        let port = nats.port();
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));

        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEPT".to_owned(),
            subjects: vec!["kept.*".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("kept.a", "one".into())
            .await
            .unwrap()
            .await
            .unwrap();
        drop(js);

        nats.kill();
        assert!(
            read_info_line(port).is_err(),
            "a killed server still answers"
        );
        nats.kill();

        nats.restart();
        assert_eq!(nats.port(), port);
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("KEPT").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    }
}
