//! Credential hardening at the binary's level: the JWT key file (created private, refused when
//! readable by others, shared by the nodes of a PostgreSQL store and pinned there), and the
//! offline recovery of a root key with `vigil keys create --root`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vigil_store_postgres::testing::TestDatabase;

use crate::common::{BIN, PATIENCE, TestApp, TestDir, scrub_env};

/// A server over `dir` that rereads the shared documents every 100 ms; `Err(its log)` when it
/// exits instead of listening.
async fn start(dir: &TestDir, args: &[&str]) -> Result<TestApp, String> {
    let mut all = vec!["--meta-refresh-interval", "100ms"];
    all.extend_from_slice(args);
    TestApp::start(dir, &all).await.map_err(|f| f.stderr)
}

/// `GET path` with `bearer`: the status and the JSON body (`Null` when not JSON).
async fn get(app: &TestApp, bearer: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", app.url))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A JWT for the API key `key`.
async fn jwt(app: &TestApp, key: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/auth/token", app.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// `vigil keys create --root …`: (success, stdout, stderr).
async fn recover(args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["keys", "create", "--root", "-o", "json"])
        .args(args);
    scrub_env(&mut cmd);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Regression (issue 12, item 3): after the only root key was lost, the documented way back
/// was a restart that wrote a new key to an undocumented `admin.key.<time>`. `vigil keys
/// create --root` now makes a root key offline, in a stopped data directory, and refuses one a
/// running server holds.
#[tokio::test]
async fn a_root_key_is_recovered_offline_in_a_stopped_data_directory() {
    let dir = TestDir::new();
    let data = dir.data_dir();
    let data_arg = data.to_str().unwrap();
    let server = start(&dir, &[]).await.unwrap();
    let root = dir.root_key();

    let (ok, _, stderr) = recover(&["--data-dir", data_arg]).await;
    assert!(!ok, "a data directory in use is refused");
    assert!(stderr.contains("stop the server"), "{stderr}");
    server.stop().await;

    let (ok, stdout, stderr) = recover(&["--data-dir", data_arg]).await;
    assert!(ok, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let recovered = created["key"].as_str().unwrap();
    let mut scopes: Vec<&str> = created["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["admin", "root"]);

    let server = start(&dir, &[]).await.unwrap();
    let (status, keys) = get(&server, recovered, "/v1/keys").await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert_eq!(get(&server, &root, "/v1/keys").await.0, 200);
    let bootstrap_again = files(&data).iter().any(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("admin.key.")
    });
    assert!(!bootstrap_again, "no new bootstrap key was needed");
    server.stop().await;

    let (ok, _, stderr) = recover(&["--data-dir", dir.path().join("nope").to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains("no data directory"), "{stderr}");
}

/// Regression (issue 12, item 1): the JWT signing secret lived in the store. The key is now a
/// file beside the data, created with mode 0600 and refused when others can read it; the
/// store holds no secret.
#[tokio::test]
async fn the_jwt_key_file_is_private_and_nothing_secret_is_stored() {
    let dir = TestDir::new();
    let data = dir.data_dir();
    let server = start(&dir, &[]).await.unwrap();
    let token = jwt(&server, &dir.root_key()).await;
    assert_eq!(get(&server, &token, "/v1/keys").await.0, 200);
    server.stop().await;

    let key_file = data.join("jwt.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for path in files(&data) {
        if path == key_file {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("jwt_secret"), "{}", path.display());
        assert!(
            !text.contains(&body),
            "{} holds the jwt key",
            path.display()
        );
    }

    // Tokens survive a restart with the same key file.
    let server = start(&dir, &[]).await.unwrap();
    assert_eq!(get(&server, &token, "/v1/keys").await.0, 200);
    server.stop().await;

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = start(&dir, &[]).await.expect_err("refused");
    assert!(refused.contains("chmod 600"), "{refused}");
}

/// Nodes sharing a PostgreSQL store must share the JWT key file, as they do the checkpoint
/// key: the database holds only the public key, and a node with another key is refused at
/// start with a message saying to share the file. With the old key as `--jwt-key-previous`,
/// a node rotates to a new key and still accepts the old tokens. The offline recovery works
/// against the database too, with the servers running.
#[tokio::test]
async fn nodes_sharing_a_database_share_the_jwt_key_and_rotate_it() {
    let db = TestDatabase::create().await;
    let (a_dir, b_dir) = (TestDir::with_store(db.url()), TestDir::with_store(db.url()));
    let a = start(&a_dir, &[]).await.unwrap();
    let root = a_dir.root_key();
    let token = jwt(&a, &root).await;

    let refused = start(&b_dir, &[]).await.expect_err("refused");
    assert!(refused.contains("same key file"), "{refused}");

    // As for the checkpoint key: the nodes share the file.
    let shared = a_dir.data_dir().join("jwt.key");
    let signing = a_dir.data_dir().join("signing.key");
    let signing = signing.to_str().unwrap();
    let b = start(
        &b_dir,
        &[
            "--jwt-key",
            shared.to_str().unwrap(),
            "--signing-key",
            signing,
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&b, &token, "/v1/keys").await.0,
        200,
        "a's token works on b"
    );
    b.stop().await;

    // Rotation: a new key, the old one still accepted.
    let new_key = a_dir.path().join("new.key");
    let c_dir = TestDir::with_store(db.url());
    let c = start(
        &c_dir,
        &[
            "--jwt-key",
            new_key.to_str().unwrap(),
            "--jwt-key-previous",
            shared.to_str().unwrap(),
            "--signing-key",
            signing,
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&c, &token, "/v1/keys").await.0,
        200,
        "old tokens accepted"
    );
    let new_token = jwt(&c, &root).await;
    assert_eq!(get(&c, &new_token, "/v1/keys").await.0, 200);

    // Recovery against the database, servers running.
    let (ok, stdout, stderr) = recover(&["--store", db.url()]).await;
    assert!(ok, "{stderr}");
    let recovered: Value = serde_json::from_str(&stdout).unwrap();
    let recovered = recovered["key"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while get(&c, &recovered, "/v1/keys").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "recovered key never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
    a.stop().await;
}
