//! Tamper evidence seen from outside: the signed checkpoints, inclusion and consistency proofs a
//! client gets over HTTP and checks with nothing but the published key; `vigil verify` in its
//! three forms; and attacks on the log of a stopped data directory, each of which
//! `vigil verify --data-dir` must catch and name.
//!
//! Proofs and checkpoints run on both stores. The attacks rewrite the embedded store's files as
//! a forger would (see [`Wal`]): from a naive byte flip up to a rewritten tail re-signed with a
//! key of the forger's own, which only the key the log published can expose.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use vigil_client::{Client, ClientError};
use vigil_integrity::audit::chain_hash;
use vigil_integrity::checkpoint::{CheckpointJson, SigningKey, VerifiedCheckpoint, VerifierKey};
use vigil_integrity::proof::{ConsistencyProof, InclusionProof};
use vigil_integrity::tree::{Frontier, leaf_hash};

use crate::common::{BIN, Backend, PATIENCE, TestApp, TestDir, run_cli};

type Hash = [u8; 32];

on_every_backend!(
    checkpoints_and_proofs_verify_with_the_published_key,
    a_restart_keeps_every_checkpoint,
);

const READ_WRITE: &[&str] = &["events:write", "events:read"];

/// Events `<prefix>-<n>` for each `n`, with a note a forger can find and change.
fn events(prefix: &str, ns: RangeInclusive<u64>) -> Vec<Value> {
    ns.map(|n| {
        json!({
            "id": format!("{prefix}-{n}"),
            "type": "integrity.test",
            "severity": n % 11,
            "details": {"n": n, "note": format!("original event {n}")},
        })
    })
    .collect()
}

/// A client of `tenant` with its own new read-write key; returns the key too.
async fn tenant(app: &TestApp, tenant: &str) -> (Client, String) {
    let key = app.create_key(tenant, READ_WRITE).await;
    let client = Client::new(&app.url, Some(key.clone())).expect("client");
    (client, key)
}

/// The key the server publishes at `GET /v1/checkpoint/key`, fetched without a credential.
async fn published_key(app: &TestApp) -> VerifierKey {
    let doc = app
        .anonymous()
        .signing_key()
        .await
        .expect("GET /v1/checkpoint/key without a credential");
    assert_eq!(doc["algorithm"], "ed25519", "{doc}");
    VerifierKey::parse(doc["vkey"].as_str().expect("vkey")).expect("a valid vkey")
}

/// `name+keyid`, as verification messages name a key.
fn label(key: &VerifierKey) -> String {
    format!("{}+{:08x}", key.name(), key.key_id())
}

/// A checkpoint answer, checked against `key` field by field.
fn checked(answer: Value, key: &VerifierKey) -> (CheckpointJson, VerifiedCheckpoint) {
    let json: CheckpointJson =
        serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let verified = json
        .verify(key)
        .unwrap_or_else(|e| panic!("checkpoint does not verify: {e}: {answer}"));
    (json, verified)
}

/// Checks an event as `GET /v1/events/{id}?proof=true` returns it, the way any client can: the
/// leaf is the RFC 6962 hash of the JCS bytes of the event without `hash` and `proof`, the
/// audit path leads from it to the root, and the attached note signs that root with `key`.
fn verify_event_proof(event: &Value, key: &VerifierKey) -> VerifiedCheckpoint {
    let mut body = event.clone();
    let object = body.as_object_mut().expect("an event object");
    let proof = object.remove("proof").expect("a proof member");
    object.remove("hash").expect("a hash member");
    let proof: InclusionProof = serde_json::from_value(proof).expect("an inclusion proof");
    let seq = event["seq"].as_u64().expect("seq");
    assert_eq!(proof.leaf_index, seq - 1, "event seq {seq} is leaf seq - 1");
    let leaf = leaf_hash(&vigil_event::to_canonical_bytes(&body));
    proof
        .verify_checkpointed(&leaf, key)
        .unwrap_or_else(|e| panic!("inclusion proof of seq {seq} does not verify: {e}"))
}

/// The status and code of a refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `GET path_and_query` with `token`, for requests the typed client cannot express.
async fn raw_get(app: &TestApp, token: &str, path_and_query: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path_and_query}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// The `vigil` binary run in `dir`, without the developer's `VIGIL_*` settings.
fn vigil(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    cmd
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `vigil keys signing` over `args`: the vkey it prints.
async fn signing_vkey(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys", "signing"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_cli(vigil(dir, &all)).await;
    assert!(status.success(), "vigil keys signing failed: {stderr}");
    stdout.trim().to_owned()
}

/// Ingest, checkpoint, prove, and see each tenant and scope get only what it may.
async fn checkpoints_and_proofs_verify_with_the_published_key(backend: Backend) {
    let app = TestApp::spawn_on(backend, &[]).await;
    let (acme, _) = tenant(&app, "acme").await;
    let (globex, _) = tenant(&app, "globex").await;
    acme.ingest(&events("a", 1..=10)).await.expect("ingest");
    globex.ingest(&events("g", 1..=3)).await.expect("ingest");
    let key = published_key(&app).await;

    // The checkpoint covers every stored event of the caller's tenant, signed by that key.
    let (first_json, first) = checked(acme.checkpoint(None).await.expect("checkpoint"), &key);
    assert_eq!((first.origin.as_str(), first.size), ("vigil/acme", 10));

    // An event with its proof verifies offline, into that checkpoint.
    let event = acme
        .get_event_with_proof("a-4", None)
        .await
        .expect("event with proof");
    assert_eq!(
        (event["id"].as_str(), event["seq"].as_u64()),
        (Some("a-4"), Some(4))
    );
    assert_eq!(verify_event_proof(&event, &key), first);

    // The log grows; the old checkpoint is kept and still proves, the new one extends it.
    acme.ingest(&events("a", 11..=15)).await.expect("ingest");
    let (_, second) = checked(acme.checkpoint(None).await.expect("checkpoint"), &key);
    assert_eq!(second.size, 15);
    let (kept, _) = checked(acme.checkpoint(Some(10)).await.expect("kept"), &key);
    assert_eq!(
        kept, first_json,
        "the checkpoint of size 10 is served as it was signed"
    );
    let in_old = acme
        .get_event_with_proof("a-4", Some(10))
        .await
        .expect("proof in the old checkpoint");
    assert_eq!(verify_event_proof(&in_old, &key), first);
    let newest = acme
        .get_event_with_proof("a-12", None)
        .await
        .expect("proof of a newer event");
    assert_eq!(verify_event_proof(&newest, &key).size, 15);
    assert_eq!(
        refusal(acme.get_event_with_proof("a-12", Some(10)).await),
        (400, "invalid_parameter".to_owned()),
        "seq 12 is not in the tree of 10 events"
    );

    let proof: ConsistencyProof =
        serde_json::from_value(acme.consistency_proof(10, 15).await.expect("consistency"))
            .expect("a consistency proof");
    assert_eq!((proof.from, proof.to), (10, 15));
    proof
        .verify(&first.root, &second.root)
        .expect("the log of 15 events extends the log of 10");
    assert!(
        proof.verify(&second.root, &second.root).is_err(),
        "the proof is bound to the old root"
    );

    for (from, to) in [(0, 15), (15, 10), (10, 1000)] {
        assert_eq!(
            refusal(acme.consistency_proof(from, to).await),
            (400, "invalid_parameter".to_owned()),
            "from={from} to={to}"
        );
    }
    let acme_token = app.create_key("acme", &["events:read"]).await;
    for query in [
        "/v1/proof/consistency?from=ten&to=15",
        "/v1/proof/consistency?from=10&to=-15",
        "/v1/proof/consistency?to=15",
        "/v1/checkpoint?size=ten",
        "/v1/events/a-4?proof=true&tree_size=ten",
    ] {
        let (status, body) = raw_get(&app, &acme_token, query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{query}: {body}"
        );
    }

    // Another tenant has its own log, and acme's events do not exist for it.
    let (_, other) = checked(globex.checkpoint(None).await.expect("checkpoint"), &key);
    assert_eq!((other.origin.as_str(), other.size), ("vigil/globex", 3));
    assert_eq!(
        refusal(globex.get_event_with_proof("a-4", None).await).0,
        404
    );
    assert_eq!(
        refusal(globex.checkpoint(Some(10)).await).0,
        404,
        "acme's checkpoint sizes are not globex's"
    );

    // Proofs are reads: a key that may only write gets none.
    let writer = app.tenant_client("acme", &["events:write"]).await;
    assert_eq!(refusal(writer.checkpoint(None).await).0, 403);
    assert_eq!(
        refusal(writer.get_event_with_proof("a-4", None).await).0,
        403
    );
    assert_eq!(refusal(writer.consistency_proof(10, 15).await).0, 403);

    // The operator's command prints the very key the server publishes.
    let data_dir = app.data_dir.clone();
    let printed = signing_vkey(
        data_dir.parent().expect("test dir"),
        &["--data-dir", arg(&data_dir)],
    )
    .await;
    assert_eq!(printed, key.to_vkey());
}

/// Checkpoints live with the log: after a stop and a start the one made before is served as it
/// was, with the same key, and the log that grew since is provably its extension. Checkpoints
/// are signed without anyone asking (periodically, and at a clean stop).
async fn a_restart_keeps_every_checkpoint(backend: Backend) {
    let dir = TestDir::on(backend).await;
    let app = TestApp::start(&dir, &[]).await.expect("first start");
    let (acme, key_secret) = tenant(&app, "acme").await;
    acme.ingest(&events("a", 1..=10)).await.expect("ingest");
    let key = published_key(&app).await;
    // Only ever asked for by size, so it is the periodic notary that signs it.
    let periodic = tokio::time::timeout(PATIENCE, async {
        loop {
            match acme.checkpoint(Some(10)).await {
                Ok(cp) => return cp,
                Err(e) if e.status() == Some(404) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("waiting for the periodic checkpoint: {e}"),
            }
        }
    })
    .await
    .expect("no periodic checkpoint of 10 events appeared");
    let (old_json, old) = checked(periodic, &key);
    acme.ingest(&events("a", 11..=15)).await.expect("ingest");
    let status = app.stop().await;
    assert!(status.success(), "graceful stop: {status}");

    let app = TestApp::start(&dir, &[]).await.expect("restart");
    assert_eq!(published_key(&app).await, key, "the same signing key");
    let acme = Client::new(&app.url, Some(key_secret)).expect("client");
    let (kept, _) = checked(acme.checkpoint(Some(10)).await.expect("kept"), &key);
    assert_eq!(kept, old_json);
    let (_, at_stop) = checked(
        acme.checkpoint(Some(15))
            .await
            .expect("every event acknowledged before the stop is under a kept checkpoint"),
        &key,
    );
    acme.ingest(&events("a", 16..=20)).await.expect("ingest");
    let (_, new) = checked(acme.checkpoint(None).await.expect("checkpoint"), &key);
    assert_eq!(new.size, 20);
    for (from, root) in [(10, old.root), (15, at_stop.root)] {
        let proof: ConsistencyProof =
            serde_json::from_value(acme.consistency_proof(from, 20).await.expect("consistency"))
                .expect("a consistency proof");
        proof
            .verify(&root, &new.root)
            .unwrap_or_else(|e| panic!("from {from} across the restart: {e}"));
    }
}

/// `vigil verify` against the real binary: (c) one event offline, (b) a saved checkpoint against
/// the running server, (a) the data directory of the stopped server.
#[tokio::test]
async fn vigil_verify_checks_an_event_a_saved_checkpoint_and_a_data_directory() {
    let dir = TestDir::new();
    let work = dir.path().to_owned();
    let app = TestApp::start(&dir, &[]).await.expect("start");
    let (acme, token) = tenant(&app, "acme").await;
    acme.ingest(&events("e", 1..=20)).await.expect("ingest");
    let pub_key = work.join("pub.key");
    let vkey = signing_vkey(&work, &["--data-dir", arg(&app.data_dir)]).await;
    std::fs::write(&pub_key, format!("{vkey}\n")).expect("writing pub.key");
    let key = VerifierKey::parse(&vkey).expect("vkey");
    let write_json = |name: &str, value: &Value| {
        let path = work.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
        path
    };

    // (c) One event and its proof, offline.
    let event = acme
        .get_event_with_proof("e-5", None)
        .await
        .expect("event with proof");
    let event_file = write_json("event.json", &event);
    let (status, stdout, stderr) = run_cli(vigil(
        &work,
        &["verify", arg(&event_file), "--key", arg(&pub_key)],
    ))
    .await;
    assert!(status.success(), "verify event.json: {stderr}");
    assert!(
        stdout.contains("ok: event seq 5 of tenant acme is in the log of 20 events"),
        "{stdout}"
    );

    let mut changed = event.clone();
    changed["details"]["note"] = json!("nothing happened here");
    let changed_file = write_json("changed.json", &changed);
    let (status, _, stderr) = run_cli(vigil(
        &work,
        &["verify", arg(&changed_file), "--key", arg(&pub_key)],
    ))
    .await;
    assert_eq!(
        status.code(),
        Some(1),
        "a changed event must fail: {stderr}"
    );
    assert!(
        stderr.contains("event seq 5 of tenant acme")
            && stderr.contains("root mismatch")
            && stderr.contains("(verify_failed)"),
        "{stderr}"
    );

    let other_pub = work.join("other.pub");
    let other_vkey = signing_vkey(&work, &["--signing-key", arg(&work.join("other.key"))]).await;
    let other = VerifierKey::parse(&other_vkey).expect("vkey");
    assert_ne!(other, key);
    std::fs::write(&other_pub, &other_vkey).expect("writing other.pub");
    let (status, _, stderr) = run_cli(vigil(
        &work,
        &["verify", arg(&event_file), "--key", arg(&other_pub)],
    ))
    .await;
    assert_eq!(status.code(), Some(1), "another key must fail: {stderr}");
    assert!(
        stderr.contains(&format!(
            "checkpoint is not signed by the trusted key {}; signed by {}",
            label(&other),
            label(&key)
        )),
        "{stderr}"
    );

    // (b) A checkpoint saved earlier; the server must have only grown since.
    let saved = write_json(
        "saved.json",
        &acme.checkpoint(None).await.expect("checkpoint"),
    );
    acme.ingest(&events("e", 21..=30)).await.expect("ingest");
    let new_file = work.join("new.json");
    let growth = |key_file: &Path| {
        vigil(
            &work,
            &[
                "verify",
                "--url",
                &app.url,
                "--token",
                &token,
                "--checkpoint",
                arg(&saved),
                "--key",
                arg(key_file),
                "--save",
                arg(&new_file),
            ],
        )
    };
    let (status, stdout, stderr) = run_cli(growth(&pub_key)).await;
    assert!(status.success(), "verify --checkpoint: {stderr}");
    assert!(
        stdout.contains("ok: vigil/acme grew from 20 to 30 events and only grew"),
        "{stdout}"
    );
    let new: CheckpointJson =
        serde_json::from_slice(&std::fs::read(&new_file).expect("--save wrote new.json"))
            .expect("a checkpoint");
    assert_eq!(new.verify(&key).expect("signed").size, 30);
    assert_eq!(
        serde_json::to_value(&new).expect("json"),
        acme.checkpoint(Some(30)).await.expect("kept"),
        "the saved checkpoint is the server's"
    );
    // The log has not grown since that checkpoint: said as such, not "grew from 30 to 30".
    let (status, stdout, stderr) = run_cli(vigil(
        &work,
        &[
            "verify",
            "--url",
            &app.url,
            "--token",
            &token,
            "--checkpoint",
            arg(&new_file),
            "--key",
            arg(&pub_key),
        ],
    ))
    .await;
    assert!(status.success(), "verify --checkpoint: {stderr}");
    assert!(
        stdout.contains(
            "ok: vigil/acme still holds the 30 events of the saved checkpoint, unchanged"
        ),
        "{stdout}"
    );
    std::fs::remove_file(&new_file).expect("remove");
    let (status, _, stderr) = run_cli(growth(&other_pub)).await;
    assert_eq!(status.code(), Some(1), "another key must fail: {stderr}");
    assert!(
        stderr.contains("the saved checkpoint: checkpoint is not signed by the trusted key"),
        "{stderr}"
    );
    assert!(!new_file.exists(), "nothing is saved from a failed check");

    // (a) The stopped server's data directory, replayed in full.
    let status = app.stop().await;
    assert!(status.success(), "graceful stop: {status}");
    let data_dir = dir.data_dir();
    let (status, stdout, stderr) = run_cli(vigil(
        &work,
        &[
            "verify",
            "--data-dir",
            arg(&data_dir),
            "--key",
            arg(&pub_key),
        ],
    ))
    .await;
    assert!(status.success(), "verify --data-dir: {stdout}{stderr}");
    assert!(
        stdout.contains("tenant acme: 30 events") && stdout.contains("verified up to 30"),
        "{stdout}"
    );
    assert!(stdout.contains("30 events of 1 tenant, "), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Attacks on a stopped data directory.
// ---------------------------------------------------------------------------------------------

/// One event record of a write-ahead file (`log/<id>.wal`):
/// `len u32 LE | crc32(payload) u32 LE | payload`, payload
/// `1 | tenant_len u8 | tenant | seq u64 LE | time i64 LE | chain [32] | digest [32] | id_len u8 | id | canonical JSON`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WalEvent {
    tenant: String,
    seq: u64,
    time: i64,
    chain: Hash,
    digest: Hash,
    id: String,
    canonical: Vec<u8>,
    /// Where the record starts in the file as read (stale after a rewrite).
    record_at: usize,
    /// Where the canonical JSON starts in the file as read (stale after a rewrite).
    canonical_at: usize,
}

impl WalEvent {
    /// The canonical JSON with `edit` applied, as JCS.
    fn edit_json(&mut self, edit: impl FnOnce(&mut Value)) {
        let mut value: Value = serde_json::from_slice(&self.canonical).expect("canonical JSON");
        edit(&mut value);
        self.canonical = vigil_event::to_canonical_bytes(&value);
    }
}

/// An entry of a write-ahead file: an event, or the commit marker closing a group
/// (`len = 5 | crc | 2 | count u32 LE`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum WalEntry {
    Event(WalEvent),
    Commit(u32),
}

/// The write-ahead file that holds a stopped server's whole log, as a forger edits it: read,
/// changed entry by entry, written back with valid checksums.
#[derive(Debug)]
struct Wal {
    path: PathBuf,
    bytes: Vec<u8>,
    entries: Vec<WalEntry>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn parse_wal(bytes: &[u8]) -> Vec<WalEntry> {
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = u32_at(bytes, pos) as usize;
        let payload_at = pos + 8;
        let payload = &bytes[payload_at..payload_at + len];
        assert_eq!(
            crc32fast::hash(payload),
            u32_at(bytes, pos + 4),
            "checksum of the entry at offset {pos}"
        );
        match payload[0] {
            2 => {
                assert_eq!(len, 5, "commit marker at offset {pos}");
                entries.push(WalEntry::Commit(u32_at(payload, 1)));
            }
            1 => {
                let mut at = 1;
                let mut take = |n: usize| {
                    let field = &payload[at..at + n];
                    at += n;
                    field
                };
                let tenant_len = take(1)[0] as usize;
                let tenant = String::from_utf8(take(tenant_len).to_vec()).expect("tenant");
                let seq = u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
                let time = i64::from_le_bytes(take(8).try_into().expect("8 bytes"));
                let chain = take(32).try_into().expect("32 bytes");
                let digest = take(32).try_into().expect("32 bytes");
                let id_len = take(1)[0] as usize;
                let id = String::from_utf8(take(id_len).to_vec()).expect("id");
                entries.push(WalEntry::Event(WalEvent {
                    tenant,
                    seq,
                    time,
                    chain,
                    digest,
                    id,
                    canonical: payload[at..].to_vec(),
                    record_at: pos,
                    canonical_at: payload_at + at,
                }));
            }
            other => panic!("unknown entry version {other} at offset {pos}"),
        }
        pos = payload_at + len;
    }
    entries
}

fn encode_wal(entries: &[WalEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut payload = Vec::new();
        match entry {
            WalEntry::Event(e) => {
                payload.push(1);
                payload.push(u8::try_from(e.tenant.len()).expect("short tenant"));
                payload.extend_from_slice(e.tenant.as_bytes());
                payload.extend_from_slice(&e.seq.to_le_bytes());
                payload.extend_from_slice(&e.time.to_le_bytes());
                payload.extend_from_slice(&e.chain);
                payload.extend_from_slice(&e.digest);
                payload.push(u8::try_from(e.id.len()).expect("short id"));
                payload.extend_from_slice(e.id.as_bytes());
                payload.extend_from_slice(&e.canonical);
            }
            WalEntry::Commit(count) => {
                payload.push(2);
                payload.extend_from_slice(&count.to_le_bytes());
            }
        }
        let len = u32::try_from(payload.len()).expect("small record");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

impl Wal {
    /// The log of the stopped server over `data_dir`: one write-ahead file (nothing sealed).
    fn open(data_dir: &Path) -> Self {
        let mut wals = Vec::new();
        for entry in std::fs::read_dir(data_dir.join("log")).expect("listing log/") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(!name.ends_with(".seg"), "a sealed segment: {name}");
            if name.ends_with(".wal") && std::fs::metadata(&path).expect("stat").len() > 0 {
                wals.push(path);
            }
        }
        assert_eq!(
            wals.len(),
            1,
            "the log is in one write-ahead file: {wals:?}"
        );
        let path = wals.remove(0);
        let bytes = std::fs::read(&path).expect("reading the log");
        let entries = parse_wal(&bytes);
        assert_eq!(
            encode_wal(&entries),
            bytes,
            "the forger's codec reproduces the log byte for byte"
        );
        Self {
            path,
            bytes,
            entries,
        }
    }

    fn save(&self) {
        std::fs::write(&self.path, encode_wal(&self.entries)).expect("writing the log");
    }

    fn events(&self, tenant: &str) -> impl Iterator<Item = &WalEvent> {
        self.entries.iter().filter_map(move |entry| match entry {
            WalEntry::Event(e) if e.tenant == tenant => Some(e),
            _ => None,
        })
    }

    fn position(&self, tenant: &str, seq: u64) -> usize {
        self.entries
            .iter()
            .position(
                |entry| matches!(entry, WalEntry::Event(e) if e.tenant == tenant && e.seq == seq),
            )
            .unwrap_or_else(|| panic!("no event {tenant}/{seq} in the log"))
    }

    fn event_mut(&mut self, tenant: &str, seq: u64) -> &mut WalEvent {
        let at = self.position(tenant, seq);
        match &mut self.entries[at] {
            WalEntry::Event(e) => e,
            WalEntry::Commit(_) => unreachable!("position finds events"),
        }
    }

    /// Renumbers each tenant's events 1, 2, 3… in file order (header and canonical JSON) and
    /// recomputes every chain hash: what a careful forger does after any change, so that only
    /// the signed checkpoints can tell.
    fn rechain(&mut self) {
        let mut tails: BTreeMap<String, (u64, Hash)> = BTreeMap::new();
        for entry in &mut self.entries {
            let WalEntry::Event(e) = entry else { continue };
            let (seq, chain) = tails.entry(e.tenant.clone()).or_insert((0, [0; 32]));
            *seq += 1;
            if e.seq != *seq {
                e.seq = *seq;
                let seq = *seq;
                e.edit_json(|v| v["seq"] = json!(seq));
            }
            *chain = chain_hash(chain, &leaf_hash(&e.canonical));
            e.chain = *chain;
        }
    }

    /// Gives every commit marker the count of the events it closes, dropping emptied groups.
    fn regroup(&mut self) {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut open = 0;
        for entry in self.entries.drain(..) {
            match entry {
                WalEntry::Event(_) => {
                    open += 1;
                    out.push(entry);
                }
                WalEntry::Commit(_) if open == 0 => {}
                WalEntry::Commit(_) => {
                    out.push(WalEntry::Commit(open));
                    open = 0;
                }
            }
        }
        assert_eq!(open, 0, "every event is in a closed group");
        self.entries = out;
    }

    /// The Merkle root of `tenant`'s first `size` events as they are now.
    fn root(&self, tenant: &str, size: u64) -> Hash {
        let mut tree = Frontier::new();
        for e in self
            .events(tenant)
            .take(usize::try_from(size).expect("size"))
        {
            tree.push(leaf_hash(&e.canonical), |_| {});
        }
        assert_eq!(tree.size(), size, "{tenant} has {size} events");
        tree.root()
    }
}

/// A stopped server's data directory: tenant acme with 60 events, checkpoints of 20, 40 and 60
/// events; tenant globex with 12 events in between.
#[derive(Debug)]
struct StoppedLog {
    dir: TestDir,
    /// The published key, as a file for `--key`.
    key_file: PathBuf,
    key: VerifierKey,
}

const ACME_EVENTS: u64 = 60;

async fn stopped_log() -> StoppedLog {
    let dir = TestDir::new();
    // Periodic checkpoints an hour apart: acme's are the ones asked for below (expectations
    // are still derived from the kept sizes, see `checkpoint_range`).
    let app = TestApp::start(&dir, &["--checkpoint-interval", "1h"])
        .await
        .expect("start");
    let (acme, _) = tenant(&app, "acme").await;
    let (globex, _) = tenant(&app, "globex").await;
    for batch in 0..6 {
        let first = batch * 10 + 1;
        acme.ingest(&events("a", first..=first + 9))
            .await
            .expect("ingest");
        globex
            .ingest(&events("g", batch * 2 + 1..=batch * 2 + 2))
            .await
            .expect("ingest");
        if batch % 2 == 1 {
            let cp = acme.checkpoint(None).await.expect("checkpoint");
            assert_eq!(cp["size"], first + 9);
        }
    }
    globex.checkpoint(None).await.expect("checkpoint");
    let key = published_key(&app).await;
    let status = app.stop().await;
    assert!(status.success(), "graceful stop: {status}");
    let key_file = dir.path().join("pub.key");
    std::fs::write(&key_file, key.to_vkey()).expect("writing pub.key");
    StoppedLog { dir, key_file, key }
}

impl StoppedLog {
    fn data_dir(&self) -> PathBuf {
        self.dir.data_dir()
    }

    /// Sizes of acme's kept checkpoints, ascending.
    fn checkpoint_sizes(&self) -> Vec<u64> {
        let mut sizes: Vec<u64> = checkpoint_lines(&self.data_dir(), "acme")
            .iter()
            .map(|line| line["size"].as_u64().expect("size"))
            .collect();
        sizes.sort_unstable();
        sizes
    }

    /// What the checkpoints must report when the log differs from seq `seq` on: the events from
    /// the last checkpoint before it up to the first checkpoint at or after it.
    fn checkpoint_range(&self, seq: u64) -> (u64, u64) {
        let sizes = self.checkpoint_sizes();
        for asked in [20, 40, 60] {
            assert!(sizes.contains(&asked), "checkpoint {asked} kept: {sizes:?}");
        }
        let verified = sizes
            .iter()
            .copied()
            .filter(|&s| s < seq)
            .max()
            .unwrap_or(0);
        let first_bad = sizes
            .iter()
            .copied()
            .find(|&s| s >= seq)
            .expect("a checkpoint covers the change");
        (verified + 1, first_bad)
    }

    /// `vigil verify --data-dir … -o json`, with `--key` when given.
    async fn verify(&self, key_file: Option<&Path>) -> Verdict {
        let data_dir = self.data_dir();
        let mut args = vec!["verify", "--data-dir", arg(&data_dir), "-o", "json"];
        if let Some(key) = key_file {
            args.extend(["--key", arg(key)]);
        }
        let (status, stdout, stderr) = run_cli(vigil(self.dir.path(), &args)).await;
        let report = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("verify printed no report ({e}): {stdout}\n{stderr}"));
        Verdict {
            status,
            report,
            stderr,
        }
    }

    /// Verifies with the published key; the log must fail verification.
    async fn detected(&self) -> Verdict {
        let verdict = self.verify(Some(&self.key_file)).await;
        assert_eq!(
            verdict.status.code(),
            Some(1),
            "tampering went undetected: {:#}\n{}",
            verdict.report,
            verdict.stderr
        );
        assert_eq!(verdict.report["ok"], false);
        assert!(
            verdict.stderr.contains("the log failed verification")
                && verdict.stderr.contains("(verify_failed)"),
            "{}",
            verdict.stderr
        );
        verdict
    }
}

/// The lines of `merkle/<tenant>.checkpoints`.
fn checkpoint_lines(data_dir: &Path, tenant: &str) -> Vec<Value> {
    let path = data_dir
        .join("merkle")
        .join(format!("{tenant}.checkpoints"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("a checkpoint line"))
        .collect()
}

/// What `vigil verify -o json` said.
#[derive(Debug)]
struct Verdict {
    status: ExitStatus,
    report: Value,
    stderr: String,
}

impl Verdict {
    fn findings(&self) -> &[Value] {
        self.report["findings"].as_array().expect("findings")
    }

    fn messages(&self) -> String {
        self.findings()
            .iter()
            .map(|f| f["message"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The finding of acme whose range is exactly `first..=last`.
    fn acme_range(&self, (first, last): (u64, u64)) -> &Value {
        self.findings()
            .iter()
            .find(|f| f["tenant"] == "acme" && f["range"] == json!([first, last]))
            .unwrap_or_else(|| {
                panic!(
                    "no finding for events {first}–{last} of acme:\n{}",
                    self.messages()
                )
            })
    }

    /// Only the signed checkpoints caught it: no damage, no seq anomaly, no chain break.
    fn only_checkpoints_caught_it(&self) {
        for f in self.findings() {
            let message = f["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("checkpoint") && !message.contains("chain hash"),
                "the forged log should look intact but for its checkpoints:\n{}",
                self.messages()
            );
        }
    }
}

/// The control for every attack below: the untouched log verifies, and the forger's tools
/// (codec, renumbering and re-chaining) change nothing in an untouched log, so whatever the
/// attacks make `vigil verify` report comes from the attack alone.
#[tokio::test]
async fn an_untouched_log_verifies_and_the_forgers_tools_are_faithful() {
    let log = stopped_log().await;
    let verdict = log.verify(Some(&log.key_file)).await;
    assert!(
        verdict.status.success(),
        "{:#}\n{}",
        verdict.report,
        verdict.stderr
    );
    assert_eq!(verdict.report["events"], ACME_EVENTS + 12);
    let acme = &verdict.report["tenants"][0];
    assert_eq!(
        (
            &acme["tenant"],
            &acme["events"],
            &acme["last_verified_size"]
        ),
        (&json!("acme"), &json!(ACME_EVENTS), &json!(ACME_EVENTS))
    );

    let mut wal = Wal::open(&log.data_dir());
    let before = wal.entries.clone();
    wal.rechain();
    wal.regroup();
    assert_eq!(wal.entries, before);
    assert_eq!(wal.events("acme").count() as u64, ACME_EVENTS);
}

/// (i) One byte of an event's JSON flipped in place, checksum left as it was: the record is
/// damaged, and verify names the spot; the events the damaged group took with it are missing
/// under their checkpoints.
#[tokio::test]
async fn a_flipped_byte_is_reported_as_damage() {
    let log = stopped_log().await;
    let wal = Wal::open(&log.data_dir());
    let target = wal.events("acme").find(|e| e.seq == 30).expect("seq 30");
    let record_at = target.record_at;
    let in_json = find(&target.canonical, b"original");
    let mut bytes = wal.bytes.clone();
    bytes[target.canonical_at + in_json] ^= 0x20;
    std::fs::write(&wal.path, &bytes).expect("writing the log");

    let verdict = log.detected().await;
    let damage = format!("damaged record at offset {record_at} precedes acknowledged events");
    assert!(
        verdict.findings().iter().any(|f| f["tenant"].is_null()
            && f["message"].as_str().unwrap_or_default().contains(&damage)),
        "expected {damage:?} in:\n{}",
        verdict.messages()
    );
    assert!(
        verdict.findings().iter().any(|f| {
            f["tenant"] == "acme"
                && f["range"][0].as_u64().is_some_and(|first| first <= 30)
                && f["range"][1].as_u64().is_some_and(|last| last >= 30)
        }),
        "no finding of acme covers seq 30:\n{}",
        verdict.messages()
    );
}

/// (ii) The same flip with the record's checksum recomputed: the record reads fine, and the
/// chain hash stored with it no longer matches at exactly that seq.
#[tokio::test]
async fn a_flipped_byte_with_a_fixed_checksum_breaks_the_chain_at_that_seq() {
    let log = stopped_log().await;
    let mut wal = Wal::open(&log.data_dir());
    let event = wal.event_mut("acme", 30);
    let in_json = find(&event.canonical, b"original");
    event.canonical[in_json] ^= 0x20;
    wal.save();

    let verdict = log.detected().await;
    let chain = verdict
        .findings()
        .iter()
        .find(|f| {
            f["message"]
                .as_str()
                .unwrap_or_default()
                .contains("chain hash")
        })
        .unwrap_or_else(|| panic!("no chain break:\n{}", verdict.messages()));
    assert_eq!(
        (&chain["tenant"], &chain["seq"]),
        (&json!("acme"), &json!(30))
    );
    assert!(
        chain["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tenant acme seq 30: stored chain hash does not match"),
        "{chain}"
    );
    let (first, last) = log.checkpoint_range(30);
    let mismatch = verdict.acme_range((first, last));
    assert!(
        mismatch["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("checkpoint {last} signed")),
        "{mismatch}"
    );
    assert!(
        verdict.findings().iter().all(|f| !f["tenant"].is_null()),
        "the rewritten log reads without damage:\n{}",
        verdict.messages()
    );
}

/// (iii) One event deleted from the middle, every later one renumbered and re-chained, commit
/// markers and checksums fixed: the log is self-consistent, and the first checkpoint past the
/// hole says which events differ from what was signed.
#[tokio::test]
async fn a_deleted_event_is_caught_by_the_checkpoints() {
    let log = stopped_log().await;
    let mut wal = Wal::open(&log.data_dir());
    let at = wal.position("acme", 30);
    wal.entries.remove(at);
    wal.regroup();
    wal.rechain();
    wal.save();

    let verdict = log.detected().await;
    verdict.only_checkpoints_caught_it();
    let (first, last) = log.checkpoint_range(30);
    let mismatch = verdict.acme_range((first, last));
    assert_eq!(mismatch["seq"], first);
    let message = mismatch["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("checkpoint {last} signed"))
            && message.contains(&format!(
                "events {first}–{last} differ from what was signed"
            )),
        "{message}"
    );
    // The log is one event short of its last checkpoint.
    let removed = verdict.acme_range((ACME_EVENTS, ACME_EVENTS));
    assert!(
        removed["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("event {ACME_EVENTS} was removed")),
        "{removed}"
    );
}

/// (iv) The log cut after seq 45 and different events appended in their place (more of them
/// than there were), chained as the server would have: the checkpoint covering the cut differs.
#[tokio::test]
async fn a_rewritten_tail_is_caught_by_the_checkpoints() {
    let log = stopped_log().await;
    let mut wal = Wal::open(&log.data_dir());
    let template = wal.events("acme").nth(44).expect("seq 45").clone();
    wal.entries
        .retain(|entry| !matches!(entry, WalEntry::Event(e) if e.tenant == "acme" && e.seq > 45));
    wal.regroup();
    for seq in 46..=65 {
        let mut forged = template.clone();
        forged.seq = seq;
        forged.id = format!("forged-{seq}");
        forged.edit_json(|v| {
            v["id"] = json!(format!("forged-{seq}"));
            v["seq"] = json!(seq);
            v["details"]["note"] = json!("nothing to see");
        });
        wal.entries.push(WalEntry::Event(forged));
    }
    wal.entries.push(WalEntry::Commit(0));
    wal.regroup();
    wal.rechain();
    wal.save();

    let verdict = log.detected().await;
    verdict.only_checkpoints_caught_it();
    let (first, last) = log.checkpoint_range(46);
    let mismatch = verdict.acme_range((first, last));
    assert!(
        mismatch["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("checkpoint {last} signed")),
        "{mismatch}"
    );
    let acme = &verdict.report["tenants"][0];
    assert_eq!(
        (&acme["events"], &acme["last_verified_size"]),
        (&json!(65), &json!(first - 1))
    );
}

/// (v) Two adjacent events swapped, renumbered and re-chained: same events, other order, and
/// the checkpoint covering them differs.
#[tokio::test]
async fn swapped_events_are_caught_by_the_checkpoints() {
    let log = stopped_log().await;
    let mut wal = Wal::open(&log.data_dir());
    let (a, b) = (wal.position("acme", 30), wal.position("acme", 31));
    wal.entries.swap(a, b);
    wal.rechain();
    wal.save();

    let verdict = log.detected().await;
    verdict.only_checkpoints_caught_it();
    let (first, last) = log.checkpoint_range(30);
    let mismatch = verdict.acme_range((first, last));
    assert!(
        mismatch["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("checkpoint {last} signed")),
        "{mismatch}"
    );
}

/// (vi) The whole tail replaced and every checkpoint re-signed with a key of the forger's own,
/// which also replaces `signing.key`: only the key published before the attack exposes it, and
/// verify names the signer it does not trust. Without `--key`, verify trusts the data
/// directory's own key, which the forger now controls, and says so.
#[tokio::test]
async fn a_log_re_signed_with_another_key_is_exposed_by_the_published_key() {
    let log = stopped_log().await;
    let data_dir = log.data_dir();
    let mut wal = Wal::open(&data_dir);
    for seq in 41..=ACME_EVENTS {
        wal.event_mut("acme", seq)
            .edit_json(|v| v["details"]["note"] = json!(format!("forged event {seq}")));
    }
    wal.rechain();
    wal.save();

    let forger = SigningKey::generate(log.key.name()).expect("a key");
    for tenant in ["acme", "globex"] {
        let lines: Vec<String> = checkpoint_lines(&data_dir, tenant)
            .into_iter()
            .map(|mut line| {
                let size = line["size"].as_u64().expect("size");
                let nanos = line["timestamp"].as_i64().expect("timestamp");
                let root = wal.root(tenant, size);
                line["root"] = json!(hex::encode(root));
                line["note"] = json!(forger.sign_checkpoint(
                    &format!("vigil/{tenant}"),
                    size,
                    &root,
                    chrono::DateTime::from_timestamp_nanos(nanos),
                ));
                format!("{line}\n")
            })
            .collect();
        std::fs::write(
            data_dir
                .join("merkle")
                .join(format!("{tenant}.checkpoints")),
            lines.concat(),
        )
        .expect("writing checkpoints");
    }
    // Overwritten in place, so the file keeps the 0600 mode a key file must have.
    let key_path = data_dir.join("signing.key");
    std::fs::write(&key_path, forger.to_note_key()).expect("writing signing.key");
    assert_eq!(
        SigningKey::load(&key_path)
            .expect("the forged key file")
            .verifier(),
        forger.verifier()
    );

    let verdict = log.detected().await;
    let untrusted = format!(
        "cannot be trusted: checkpoint is not signed by the trusted key {}; signed by {}",
        label(&log.key),
        label(&forger.verifier())
    );
    let acme_last = verdict
        .findings()
        .iter()
        .find(|f| {
            f["tenant"] == "acme"
                && f["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(&format!(
                        "tenant acme: checkpoint {ACME_EVENTS} {untrusted}"
                    ))
        })
        .unwrap_or_else(|| panic!("the forged signer is not named:\n{}", verdict.messages()));
    assert!(
        acme_last["message"]
            .as_str()
            .unwrap_or_default()
            .contains("are not covered by a valid checkpoint"),
        "{acme_last}"
    );
    assert_eq!(verdict.report["tenants"][0]["last_verified_size"], 0);

    // Trusting the directory's own key, the forgery is consistent: the warning is the defence.
    let trusting = log.verify(None).await;
    assert!(
        trusting.stderr.contains(&format!(
            "warning: no --key given: trusting {} ({})",
            key_path.display(),
            forger.verifier().to_vkey()
        )),
        "{}",
        trusting.stderr
    );
    assert!(
        trusting
            .stderr
            .contains("pass the public key you published"),
        "{}",
        trusting.stderr
    );
    assert!(
        trusting.status.success(),
        "a log re-signed as a whole verifies against its own key: {}",
        trusting.report
    );
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}
