//! `vigil generate --nats` and `vigil last --nats` against the machine's NATS server
//! (127.0.0.1:4222, JetStream on). Each test works under its own namespace, so its streams and
//! subjects are its own, and deletes its streams when it ends, passed or failed.
//!
//! The generator publishes to the event stream that writers (or API nodes) create; these tests
//! create it themselves, or run a writer and a reader in the test process over an embedded
//! store, so that `vigil last` has readers to ask.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use vigil_bus::reader::{ReaderConfig, run_reader};
use vigil_bus::testing::unique_name;
use vigil_bus::writer::{WriterConfig, run_writer};
use vigil_bus::{Bus, BusConfig, Names};
use vigil_event::TenantId;
use vigil_store::Store;

use crate::common::{BIN, PATIENCE, run_cli};

const NATS: &str = "nats://127.0.0.1:4222";

/// A namespace of the shared server, whose streams are deleted when this is dropped.
struct Namespace {
    name: String,
    dir: tempfile::TempDir,
}

impl Namespace {
    fn new() -> Self {
        Self {
            name: unique_name("gen"),
            dir: tempfile::tempdir().expect("creating a temp dir"),
        }
    }

    fn config(&self) -> BusConfig {
        BusConfig {
            namespace: Some(self.name.clone()),
            ..BusConfig::new(NATS)
        }
    }

    fn names(&self) -> Names {
        Names::new(Some(&self.name)).expect("a valid namespace")
    }

    async fn bus(&self) -> Bus {
        Bus::connect(self.config())
            .await
            .expect("connecting to the NATS server at 127.0.0.1:4222")
    }

    /// `vigil <args> --nats-namespace <ns>`, with no `VIGIL_*` variable of the test's
    /// environment and in an empty directory (no stray `.env`).
    fn vigil(&self, args: &[&str]) -> Command {
        vigil_in(self.dir.path(), args, &["--nats-namespace", &self.name])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let config = self.config();
        let names = self.names();
        // Drop cannot await, and may run on a runtime's thread: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(bus) = Bus::connect(config).await {
                    for stream in [names.events_stream(), names.dead_letter_stream()] {
                        let _ = bus.jetstream().delete_stream(&stream).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn vigil_in(dir: &Path, args: &[&str], more: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .args(more)
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    cmd
}

fn json_out(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stdout is not json ({e}):\n{stdout}"))
}

fn generate(ns: &Namespace, extra: &[&str]) -> Command {
    let mut args = vec!["generate", "--nats", NATS, "--tenant", "acme", "-o", "json"];
    args.extend_from_slice(extra);
    ns.vigil(&args)
}

#[tokio::test]
async fn generate_publishes_each_event_once_under_its_id_and_a_rerun_only_finds_duplicates() {
    let ns = Namespace::new();
    let bus = ns.bus().await;
    bus.ensure_event_stream()
        .await
        .expect("creating the stream");
    let subject = format!("{}.events.acme", ns.name);
    let run = || generate(&ns, &["--count", "500", "--rate", "0", "--seed", "7"]);

    let (status, stdout, stderr) = run_cli(run()).await;
    assert!(status.success(), "{stderr}");
    let summary = json_out(&stdout);
    assert_eq!(
        [
            &summary["sent"],
            &summary["accepted"],
            &summary["duplicates"],
            &summary["failed"]
        ],
        [&json!(500), &json!(500), &json!(0), &json!(0)],
        "{summary}"
    );
    assert_eq!(summary["errors"], json!({}));
    assert_eq!(summary["stopped_by"], "count");
    assert_eq!(summary["requests"], 5, "batches of the default 100");
    assert_eq!(summary["target"], format!("{NATS} {subject}"));

    let mut stream = bus
        .jetstream()
        .get_stream(ns.names().events_stream())
        .await
        .expect("the stream");
    let state = stream.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages, 500);
    let mut ids = BTreeSet::new();
    let mut types = BTreeSet::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|e| panic!("message {sequence}: {e}"));
        assert_eq!(message.subject.as_str(), subject);
        // By name: `HeaderMap::get` with a string looks for a custom header, never the
        // standard `Nats-Msg-Id`.
        let msg_id = message
            .headers
            .iter()
            .find(|(name, _)| name.to_string() == "Nats-Msg-Id")
            .and_then(|(_, values)| values.first())
            .unwrap_or_else(|| panic!("message {sequence} has no Nats-Msg-Id"))
            .as_str()
            .to_owned();
        let event: Value = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("message {sequence} is not JSON: {e}"));
        assert_eq!(
            event["id"],
            msg_id.as_str(),
            "the message id is the event's"
        );
        assert!(
            event["type"].is_string() && event["severity"].is_u64(),
            "{event}"
        );
        assert!(
            event.get("time").is_none(),
            "seeded events leave `time` to the writer: {event}"
        );
        types.insert(event["type"].as_str().unwrap_or_default().to_owned());
        assert!(ids.insert(msg_id), "message {sequence}: id published twice");
    }
    let want: BTreeSet<String> = (0..500).map(|i| format!("gen-s7-{i}")).collect();
    assert_eq!(ids, want);
    assert!(types.len() >= 5, "a mix of scenarios: {types:?}");

    // The same seed again: JetStream recognises every id and keeps one copy.
    let (status, stdout, stderr) = run_cli(run()).await;
    assert!(status.success(), "{stderr}");
    let again = json_out(&stdout);
    assert_eq!(
        [
            &again["sent"],
            &again["accepted"],
            &again["duplicates"],
            &again["failed"]
        ],
        [&json!(500), &json!(0), &json!(500), &json!(0)],
        "{again}"
    );
    let state = stream.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages, 500);
}

#[tokio::test]
async fn generate_stops_with_a_clear_error_when_nats_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = vigil_in(
        dir.path(),
        &["generate", "--nats", "nats://127.0.0.1:1", "--count", "1"],
        &[],
    );
    let (status, stdout, stderr) = run_cli(cmd).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "nothing was generated: {stdout}");
    assert!(
        stderr.starts_with("error: NATS unavailable: connecting to nats://127.0.0.1:1")
            && stderr.trim_end().ends_with("(bus_unavailable)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn generate_without_a_stream_says_what_to_start() {
    let ns = Namespace::new();
    let (status, stdout, stderr) = run_cli(generate(&ns, &["--count", "1"])).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    let summary = json_out(&stdout);
    assert_eq!(
        summary["errors"],
        json!({"bus_unavailable": 1}),
        "{summary}"
    );
    assert_eq!(
        summary["retries"], 5,
        "retried like an unavailable server: {summary}"
    );
    assert!(
        stderr.contains("is a vigil writer or api node with --nats started?"),
        "{stderr}"
    );
    assert!(stderr.contains("(generate_incomplete)"), "{stderr}");
}

#[tokio::test]
async fn last_over_nats_shows_what_the_readers_answer() {
    let ns = Namespace::new();
    let store_dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        vigil_store_embedded::EmbeddedStore::open(vigil_store_embedded::EmbeddedConfig::new(
            store_dir.path(),
        ))
        .expect("opening the store"),
    );
    let bus = ns.bus().await;
    let (stop_writer, writer_stopped) = oneshot::channel::<()>();
    let writer = tokio::spawn(run_writer(
        bus.clone(),
        Arc::clone(&store),
        vigil_ingest::Admitter::load(
            Arc::clone(&store),
            vigil_api::ApiConfig::default().admit_config(),
        )
        .await
        .unwrap(),
        WriterConfig::default(),
        async move {
            let _ = writer_stopped.await;
        },
    ));
    let (stop_reader, reader_stopped) = oneshot::channel::<()>();
    let reader = tokio::spawn(run_reader(
        bus.clone(),
        Arc::clone(&store),
        ReaderConfig::default(),
        async move {
            let _ = reader_stopped.await;
        },
    ));

    // The writer creates the stream: wait for it rather than have the generator retry.
    tokio::time::timeout(PATIENCE, async {
        while bus
            .jetstream()
            .get_stream(ns.names().events_stream())
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the writer creates the event stream");
    let acme = TenantId::parse("acme").unwrap();
    let (status, stdout, stderr) = run_cli(generate(
        &ns,
        &[
            "--count",
            "50",
            "--rate",
            "0",
            "--seed",
            "11",
            "--batch-size",
            "20",
        ],
    ))
    .await;
    assert!(status.success(), "{stderr}");
    assert_eq!(json_out(&stdout)["failed"], 0, "{stdout}");
    tokio::time::timeout(PATIENCE, async {
        while store
            .count(&acme, &vigil_query::Expr::All, None, None)
            .await
            .expect("count")
            < 50
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the writer stores every event");

    let last = |args: &[&str]| {
        let mut all = vec!["last", "--nats", NATS];
        all.extend_from_slice(args);
        run_cli(ns.vigil(&all))
    };
    let (status, stdout, stderr) = last(&["--tenant", "acme", "-n", "5", "-o", "json"]).await;
    assert!(status.success(), "{stderr}");
    let events = json_out(&stdout);
    let ids: Vec<&str> = events
        .as_array()
        .expect("one JSON array of events")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "gen-s11-49",
            "gen-s11-48",
            "gen-s11-47",
            "gen-s11-46",
            "gen-s11-45"
        ],
        "the newest first"
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "acme")
    );

    let (status, stdout, stderr) = last(&[
        "--tenant",
        "acme",
        "-n",
        "50",
        "--type",
        "login.failed",
        "-o",
        "json",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let failed = json_out(&stdout);
    let failed = failed.as_array().unwrap();
    assert!(!failed.is_empty(), "seed 11 makes some failed logins");
    assert!(
        failed.iter().all(|e| e["type"] == "login.failed"),
        "{stdout}"
    );

    // Not a terminal: the table without colours, the same events.
    let (status, stdout, stderr) = last(&["--tenant", "acme", "-n", "3"]).await;
    assert!(status.success(), "{stderr}");
    assert!(
        !stdout.contains('\u{1b}'),
        "no colour off a terminal: {stdout}"
    );
    for event in &events.as_array().unwrap()[..3] {
        let actor = event["actor"]["id"].as_str().expect("actor.id");
        assert!(
            stdout.contains(actor),
            "{actor} missing from the table:\n{stdout}"
        );
    }

    // A reader's refusal prints like a server's.
    let (status, _, stderr) = last(&["--tenant", "acme", "--where", "not a path=x"]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: query refused: ")
            && stderr.trim_end().ends_with("(invalid_parameter)"),
        "{stderr}"
    );
    // No reader for this namespace.
    let other = Namespace::new();
    let (status, _, stderr) =
        run_cli(other.vigil(&["last", "--nats", NATS, "--tenant", "acme"])).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: query refused: no vigil reader answers {}.query.event.acme (bus_unavailable)",
            other.name
        )
    );

    let _ = stop_writer.send(());
    let _ = stop_reader.send(());
    writer.await.unwrap().expect("the writer stops cleanly");
    reader.await.unwrap().expect("the reader stops cleanly");
    store.shutdown().await.expect("closing the store");
}
