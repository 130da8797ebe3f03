//! The `vigil` command line against a real server: the quick start, admin commands, import and
//! export, configuration layering, bench, the event generator, and how errors are reported.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::{Value, json};
use vigil_client::{Client, QueryParams};

use crate::common::{BIN, PATIENCE, TestApp, TestDir, all_events, run_cli};

fn json_out(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stdout is not json ({e}):\n{stdout}"))
}

fn ids(events: &Value) -> BTreeSet<String> {
    events
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn quick_start_from_key_to_query() {
    let app = TestApp::spawn().await;

    let mut create = app.cli(&app.root_key);
    create.args([
        "keys",
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "events:write,events:read",
        "-o",
        "json",
    ]);
    let (status, stdout, stderr) = run_cli(create).await;
    assert!(status.success(), "keys create failed: {stderr}");
    let created = json_out(&stdout);
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["scopes"], json!(["events:write", "events:read"]));
    let key = created["key"].as_str().expect("key").to_owned();

    let client = Client::new(&app.url, Some(key.clone())).unwrap();
    let ack = client
        .ingest(&[
            json!({"id": "q-1", "type": "login.failed", "severity": 8, "actor": {"id": "u-7", "ip": "10.0.0.7"}}),
            json!({"id": "q-2", "type": "login.failed", "severity": 3, "actor": {"id": "u-8"}}),
            json!({"id": "q-3", "type": "account.created", "severity": 9, "actor": {"id": "u-9"}}),
            json!({"id": "q-4", "type": "login.failed", "severity": 7, "details": {"attempt": 3}}),
        ])
        .await
        .expect("ingest");
    assert_eq!(ack.accepted, 4);

    let mut query = app.cli(&key);
    query.args([
        "query",
        "severity>=7 AND type:login.failed",
        "--from",
        "-1h",
        "-o",
        "json",
    ]);
    let (status, stdout, stderr) = run_cli(query).await;
    assert!(status.success(), "query failed: {stderr}");
    let page = json_out(&stdout);
    assert_eq!(
        ids(&page["events"]),
        BTreeSet::from(["q-1".to_owned(), "q-4".to_owned()])
    );
    assert_eq!(page["next_cursor"], Value::Null);

    let mut last = app.cli(&key);
    last.args(["last", "--min-severity", "7", "-o", "json"]);
    let (status, stdout, stderr) = run_cli(last).await;
    assert!(status.success(), "last failed: {stderr}");
    let events = json_out(&stdout);
    let got: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["q-4", "q-3", "q-1"], "newest first");

    let mut table = app.cli(&key);
    table.args(["last", "-n", "2"]);
    let (status, stdout, _) = run_cli(table).await;
    assert!(status.success());
    assert!(
        stdout.contains("login.failed") && stdout.contains("attempt=3"),
        "{stdout}"
    );
    assert!(stdout.contains("account.created"), "{stdout}");
    assert!(!stdout.contains("u-8"), "only the two newest: {stdout}");

    let mut count = app.cli(&key);
    count.args(["count", "type:login.failed"]);
    let (status, stdout, _) = run_cli(count).await;
    assert!(status.success());
    assert_eq!(stdout.trim(), "3");

    let mut by_where = app.cli(&key);
    by_where.args(["query", "--where", "actor.id=u-7", "-o", "ndjson"]);
    let (status, stdout, _) = run_cli(by_where).await;
    assert!(status.success());
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "q-1");
    assert_eq!(lines[0]["tenant"], "acme");
}

#[tokio::test]
async fn admin_commands_manage_keys_users_schemas_and_tokens() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_key("acme", &["admin"]).await;

    // Schemas.
    let dir = TestDir::new();
    let schema_path = dir.path().join("charged.json");
    std::fs::write(
        &schema_path,
        r#"{"type": "object", "required": ["details"], "properties": {"details": {"type": "object", "required": ["amount"]}}}"#,
    )
    .unwrap();
    let mut put = app.cli(&admin_key);
    put.args(["schemas", "put", "billing.charged"])
        .arg(&schema_path);
    let (status, _, stderr) = run_cli(put).await;
    assert!(status.success(), "{stderr}");
    let mut list = app.cli(&admin_key);
    list.args(["schemas", "list", "-o", "json"]);
    let (status, stdout, _) = run_cli(list).await;
    assert!(status.success());
    assert_eq!(json_out(&stdout)[0]["type"], "billing.charged");
    let mut get = app.cli(&admin_key);
    get.args(["schemas", "get", "billing.charged"]);
    let (status, stdout, _) = run_cli(get).await;
    assert!(status.success());
    assert_eq!(json_out(&stdout)["required"], json!(["details"]));

    let writer = app.tenant_client("acme", &["events:write"]).await;
    let refused = writer
        .ingest(&[json!({"type": "billing.charged", "details": {}})])
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(422), "{refused:?}");
    let mut delete = app.cli(&admin_key);
    delete.args(["schemas", "delete", "billing.charged"]);
    assert!(run_cli(delete).await.0.success());
    writer
        .ingest(&[json!({"type": "billing.charged", "details": {}})])
        .await
        .expect("no schema, any details");

    // Keys.
    let mut create = app.cli(&admin_key);
    create.args([
        "keys",
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "events:read",
        "--name",
        "reader",
        "-o",
        "json",
    ]);
    let (status, stdout, stderr) = run_cli(create).await;
    assert!(status.success(), "{stderr}");
    let reader = json_out(&stdout);
    let reader_id = reader["id"].as_str().unwrap().to_owned();
    let reader_client =
        Client::new(&app.url, Some(reader["key"].as_str().unwrap().to_owned())).unwrap();
    assert_eq!(reader_client.count(&QueryParams::new()).await.unwrap(), 1);

    let mut keys = app.cli(&admin_key);
    keys.args(["keys", "list", "-o", "json"]);
    let (status, stdout, _) = run_cli(keys).await;
    assert!(status.success());
    let listed = json_out(&stdout);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == reader_id.as_str() && k["name"] == "reader")
    );
    assert!(
        !stdout.contains(reader["key"].as_str().unwrap()),
        "a listing never shows secrets"
    );

    let mut revoke = app.cli(&admin_key);
    revoke.args(["keys", "revoke", &reader_id]);
    let (status, _, stderr) = run_cli(revoke).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(
        reader_client
            .count(&QueryParams::new())
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );

    // Users: the password comes from the environment, never the command line.
    let mut user = app.cli(&admin_key);
    user.args([
        "users",
        "create",
        "--username",
        "ann",
        "--tenant",
        "acme",
        "--scopes",
        "events:read",
        "-o",
        "json",
    ])
    .env("VIGIL_USER_PASSWORD", "correct horse battery staple");
    let (status, stdout, stderr) = run_cli(user).await;
    assert!(status.success(), "{stderr}");
    assert!(!stdout.contains("correct horse"));
    let token = app
        .anonymous()
        .login("ann", "correct horse battery staple")
        .await
        .expect("login");
    let ann = app.anonymous().with_token(Some(token.token));
    assert_eq!(ann.count(&QueryParams::new()).await.unwrap(), 1);
    let mut users = app.cli(&admin_key);
    users.args(["users", "list", "-o", "csv"]);
    let (status, stdout, _) = run_cli(users).await;
    assert!(status.success());
    assert!(
        stdout.lines().any(|l| l.starts_with("ann,acme,")),
        "{stdout}"
    );
    let mut delete_user = app.cli(&admin_key);
    delete_user.args(["users", "delete", "ann"]);
    assert!(run_cli(delete_user).await.0.success());
    assert_eq!(
        ann.count(&QueryParams::new()).await.unwrap_err().status(),
        Some(401)
    );

    // Token: the bare JWT, usable as VIGIL_TOKEN.
    let key = app.create_key("acme", &["events:read"]).await;
    let (status, stdout, stderr) = run_cli({
        let mut c = app.cli(&key);
        c.arg("token");
        c
    })
    .await;
    assert!(status.success(), "{stderr}");
    let jwt = stdout.trim().to_owned();
    assert!(jwt.split('.').count() == 3, "not a jwt: {jwt}");
    let (status, stdout, _) = run_cli({
        let mut c = app.cli(&jwt);
        c.arg("count");
        c
    })
    .await;
    assert!(status.success());
    assert_eq!(stdout.trim(), "1");
}

#[tokio::test]
async fn import_reports_every_line_and_export_streams_everything_back() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let dir = TestDir::new();
    let input = dir.path().join("events.ndjson");
    {
        let mut f = std::fs::File::create(&input).unwrap();
        for i in 0..2_500 {
            // Legacy shapes too: an import is how old producers' archives come in.
            let event = if i % 2 == 0 {
                json!({"id": format!("imp-{i}"), "type": "login.failed", "severity": i % 11, "details": {"n": i}})
            } else {
                json!({"event_id": format!("imp-{i}"), "event_type": "account.updated", "username": format!("u-{i}")})
            };
            writeln!(f, "{event}").unwrap();
            if i == 1_200 {
                writeln!(f, "{{not json").unwrap();
                writeln!(f).unwrap();
                writeln!(f, "{}", json!({"type": "x", "seq": 5})).unwrap();
            }
        }
    }

    let mut import = app.cli(&key);
    import.args(["import", "-o", "json"]).arg(&input);
    let (status, stdout, stderr) = run_cli(import).await;
    assert!(
        !status.success(),
        "two bad lines make the import fail: {stderr}"
    );
    let report = json_out(&stdout);
    assert_eq!(report["lines"], 2_502);
    assert_eq!(report["accepted"], 2_500);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["errors"], 2);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures[0]["line"], 1_202);
    assert_eq!(failures[0]["code"], "invalid_json");
    assert_eq!(failures[1]["line"], 1_204);
    assert_eq!(failures[1]["code"], "reserved_field");
    assert!(stderr.contains("(import_incomplete)"), "{stderr}");

    // Re-running is safe: events with ids come back as duplicates.
    let mut again = app.cli(&key);
    again.args(["import", "-o", "json"]).arg(&input);
    let (_, stdout, _) = run_cli(again).await;
    let report = json_out(&stdout);
    assert_eq!(report["accepted"], 0);
    assert_eq!(report["duplicates"], 2_500);

    let out_file = dir.path().join("export.ndjson");
    let mut export = app.cli(&key);
    export.args(["export", "--output-file"]).arg(&out_file);
    let (status, _, stderr) = run_cli(export).await;
    assert!(status.success(), "{stderr}");
    let exported: Vec<Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 2_500);
    let seqs: Vec<u64> = exported
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=2_500).collect::<Vec<_>>());
    assert!(
        exported.iter().any(|e| e["actor"]["id"] == "u-1"),
        "aliases were normalised"
    );

    let mut export_again = app.cli(&key);
    export_again
        .args(["export", "--output-file"])
        .arg(&out_file);
    let (status, _, stderr) = run_cli(export_again).await;
    assert!(!status.success(), "never overwrites: {stderr}");

    let mut csv = app.cli(&key);
    csv.args(["export", "--format", "csv", "type:account.updated"]);
    let (status, stdout, stderr) = run_cli(csv).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1 + 1_250,
        "header plus one row per event"
    );
}

#[tokio::test]
async fn configuration_layers_file_env_and_flags() {
    let dir = TestDir::new();
    std::fs::write(
        dir.path().join("vigil.toml"),
        "listen = \"127.0.0.1:9999\"\njwt_ttl = \"1h\"\n[limits]\nmax_depth = 4\nmax_fields = 50\nmax_batch_events = 7\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "VIGIL_MAX_FIELDS=60\nVIGIL_SEAL_INTERVAL=2m\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--print-config", "--max-batch-events", "9"])
        .current_dir(dir.path())
        .env("VIGIL_MAX_DEPTH", "6")
        .env_remove("VIGIL_MAX_FIELDS")
        .env_remove("VIGIL_SEAL_INTERVAL")
        .env_remove("VIGIL_MAX_BATCH_EVENTS")
        .env_remove("VIGIL_LISTEN")
        .env_remove("VIGIL_JWT_TTL")
        .env_remove("VIGIL_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let limits = effective["limits"].as_table().unwrap();
    assert_eq!(
        effective["listen"].as_str(),
        Some("127.0.0.1:9999"),
        "file beats default"
    );
    assert_eq!(effective["jwt_ttl"].as_str(), Some("1h"));
    assert_eq!(limits["max_depth"].as_integer(), Some(6), "env beats file");
    assert_eq!(
        limits["max_fields"].as_integer(),
        Some(60),
        ".env counts as env"
    );
    assert_eq!(effective["seal_interval"].as_str(), Some("2m"));
    assert_eq!(
        limits["max_batch_events"].as_integer(),
        Some(9),
        "flag beats file"
    );

    std::fs::write(dir.path().join("vigil.toml"), "[limits]\nmax_dept = 4\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--print-config"])
        .current_dir(dir.path())
        .env_remove("VIGIL_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("max_dept"),
        "{stderr}"
    );
}

#[tokio::test]
async fn errors_print_message_and_code_with_meaningful_exit_status() {
    let app = TestApp::spawn().await;
    let key = app.create_key("acme", &["events:read"]).await;

    let mut bad_query = app.cli(&key);
    bad_query.args(["query", "severity>>"]);
    let (status, _, stderr) = run_cli(bad_query).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.starts_with("error: ") && stderr.trim_end().ends_with("(invalid_query)"),
        "{stderr}"
    );

    let mut no_token = app.cli("");
    no_token.arg("count");
    let (status, _, stderr) = run_cli(no_token).await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("(unauthenticated)"), "{stderr}");

    let mut forbidden = app.cli(&key);
    forbidden.args(["keys", "list"]);
    let (status, _, stderr) = run_cli(forbidden).await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("(forbidden)"), "{stderr}");

    let mut usage = app.cli(&key);
    usage.args(["last", "--min-severity", "99"]);
    assert_eq!(run_cli(usage).await.0.code(), Some(2));

    let mut unknown = app.cli(&key);
    unknown.arg("frobnicate");
    assert_eq!(run_cli(unknown).await.0.code(), Some(2));

    let mut down = app.cli(&key);
    down.args(["count", "--url", "http://127.0.0.1:1"]);
    let (status, _, stderr) = run_cli(down).await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("(transport)"), "{stderr}");

    // Secrets in the environment never show up in help.
    let mut help = app.cli("vgl_this_must_not_leak");
    help.args(["query", "--help"]);
    let (status, stdout, _) = run_cli(help).await;
    assert!(status.success());
    assert!(
        stdout.contains("VIGIL_TOKEN") && !stdout.contains("this_must_not_leak"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bench_is_bounded_and_loopback_only() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key("bench", &["events:write", "events:read"])
        .await;

    let mut bench = app.cli(&key);
    bench.args([
        "bench",
        "--duration",
        "60s",
        "--events",
        "3000",
        "--connections",
        "2",
        "--batch-size",
        "500",
        "-o",
        "json",
    ]);
    let (status, stdout, stderr) = run_cli(bench).await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(report["events"], 3_000);
    assert_eq!(report["requests"], 6);
    assert_eq!(report["errors"], json!({}));
    assert!(
        report["latency_ms"]["max"].as_f64().unwrap()
            >= report["latency_ms"]["p50"].as_f64().unwrap()
    );
    let reader = Client::new(&app.url, Some(key.clone())).unwrap();
    assert_eq!(reader.count(&QueryParams::new()).await.unwrap(), 3_000);

    let mut single = app.cli(&key);
    single.args([
        "bench",
        "--mode",
        "single",
        "--events",
        "50",
        "--connections",
        "3",
        "-o",
        "json",
    ]);
    let (status, stdout, stderr) = run_cli(single).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(json_out(&stdout)["requests"], 50);

    let mut remote = app.cli(&key);
    remote.args([
        "bench",
        "--url",
        "http://192.0.2.1:7878",
        "--duration",
        "1s",
    ]);
    let (status, _, stderr) = run_cli(remote).await;
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[tokio::test]
async fn bench_sends_a_seeded_data_set_and_measures_queries_on_it() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key("bench", &["events:write", "events:read"])
        .await;
    let reader = Client::new(&app.url, Some(key.clone())).unwrap();
    let bench = |args: &[&str]| {
        let mut cmd = app.cli(&key);
        cmd.arg("bench").args(args).args(["-o", "json"]);
        run_cli(cmd)
    };

    let (status, stdout, stderr) = bench(&[
        "--seed",
        "7",
        "--events",
        "600",
        "--batch-size",
        "100",
        "--connections",
        "3",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(
        (report["events"].clone(), report["seed"].clone()),
        (json!(600), json!(7))
    );
    assert_eq!(reader.count(&QueryParams::new()).await.unwrap(), 600);
    assert_eq!(
        reader.get_event("bench-s7-599").await.unwrap()["id"],
        "bench-s7-599"
    );

    // The same seed split differently over connections and requests sends the very same
    // events: the server finds every one a duplicate, not a conflicting id.
    let (status, stdout, stderr) =
        bench(&["--seed", "7", "--events", "600", "--batch-size", "250"]).await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(report["errors"], json!({}), "{stderr}");
    assert_eq!(report["events"], 600);
    assert_eq!(reader.count(&QueryParams::new()).await.unwrap(), 600);

    let severe = QueryParams::new().q("severity>=7 AND actor.ip:10.*");
    let page_size = reader
        .query(&severe.clone().limit(10))
        .await
        .unwrap()
        .events
        .len();
    assert!(page_size > 0);
    let (status, stdout, stderr) = bench(&[
        "--mode",
        "query",
        "--query",
        "q=severity>=7 AND actor.ip:10.*&limit=10",
        "--requests",
        "25",
        "--connections",
        "2",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(report["mode"], "query");
    assert_eq!(report["query"], "q=severity>=7 AND actor.ip:10.*&limit=10");
    assert_eq!(report["requests"], 25);
    assert_eq!(report["errors"], json!({}));
    assert_eq!(report["events"], 25 * page_size);

    let matching = reader.count(&severe).await.unwrap();
    let (status, stdout, stderr) = bench(&[
        "--mode",
        "count",
        "--query",
        "q=severity>=7 AND actor.ip:10.*",
        "--requests",
        "8",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(
        (report["requests"].clone(), report["errors"].clone()),
        (json!(8), json!({}))
    );
    assert_eq!(report["events"], 8 * matching);

    let (status, stdout, stderr) = bench(&[
        "--mode",
        "count",
        "--query",
        "actor.id=u-{rand}",
        "--pool",
        "3",
        "--requests",
        "12",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(
        (report["requests"].clone(), report["errors"].clone()),
        (json!(12), json!({}))
    );
    let mut most = 0;
    for n in 0..3 {
        most = most.max(
            reader
                .count(&QueryParams::new().filter("actor.id", format!("u-{n}")))
                .await
                .unwrap(),
        );
    }
    assert!(report["events"].as_u64().unwrap() <= 12 * most);

    // A query the server refuses is counted, by code, for every request.
    let (status, stdout, stderr) = bench(&[
        "--mode",
        "query",
        "--query",
        "q=severity>>7",
        "--requests",
        "3",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let report = json_out(&stdout);
    assert_eq!(report["errors"], json!({"invalid_query": 3}));
    assert_eq!(report["events"], 0);
    assert!(
        stderr.contains("3 request(s) failed with invalid_query"),
        "{stderr}"
    );
}

#[tokio::test]
async fn reindex_rebuilds_a_stopped_directory_and_refuses_a_running_one() {
    let dir = TestDir::new();
    let app = TestApp::start(&dir, &["--segment-max-events", "100"])
        .await
        .expect("start");
    let client = app
        .tenant_client("acme", &["events:write", "events:read"])
        .await;
    let events: Vec<Value> = (0..350)
        .map(|i| json!({"type": "t.x", "details": {"i": i}}))
        .collect();
    client.ingest(&events).await.unwrap();

    let mut busy = std::process::Command::new(BIN);
    busy.args(["reindex", "--data-dir"]).arg(dir.data_dir());
    let (status, _, stderr) = run_cli(busy).await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("in use"), "{stderr}");

    assert!(app.stop().await.success());
    let mut reindex = std::process::Command::new(BIN);
    reindex.args(["reindex", "--data-dir"]).arg(dir.data_dir());
    let (status, stdout, stderr) = run_cli(reindex).await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("segment"), "{stdout}");

    let app = TestApp::start(&dir, &[]).await.expect("restart");
    let key = app.create_key("acme", &["events:read"]).await;
    let reader = Client::new(&app.url, Some(key)).unwrap();
    assert_eq!(reader.count(&QueryParams::new()).await.unwrap(), 350);
    assert_eq!(
        reader
            .count(&QueryParams::new().filter("details.i", "349"))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn generate_sends_a_seeded_stream_once_and_a_rerun_only_finds_duplicates() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let generate = || {
        let mut cmd = app.cli(&key);
        cmd.args(["generate", "--http", &app.url])
            .args(["--count", "250", "--rate", "0", "--seed", "7", "-o", "json"]);
        run_cli(cmd)
    };

    let (status, stdout, stderr) = generate().await;
    assert!(status.success(), "{stderr}");
    let summary = json_out(&stdout);
    assert_eq!(
        [
            &summary["sent"],
            &summary["accepted"],
            &summary["duplicates"],
            &summary["failed"]
        ],
        [&json!(250), &json!(250), &json!(0), &json!(0)],
        "{summary}"
    );
    assert_eq!(summary["errors"], json!({}));
    assert_eq!(summary["stopped_by"], "count");
    assert_eq!(summary["seed"], 7);
    assert_eq!(summary["requests"], 3, "batches of the default 100");
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);

    let reader = Client::new(&app.url, Some(key.clone())).unwrap();
    let events = all_events(&reader, QueryParams::new()).await;
    let stored: BTreeSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = (0..250).map(|i| format!("gen-s7-{i}")).collect();
    assert_eq!(stored, want);
    assert!(events.iter().all(|e| e["tenant"] == "acme"));
    let types: BTreeSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.len() >= 5, "a mix of scenarios: {types:?}");
    // Addresses come from pools (and a failure burst shares one), so asking for the most
    // frequent address finds all of its several events.
    let mut per_ip = std::collections::BTreeMap::<&str, u64>::new();
    for e in &events {
        *per_ip
            .entry(e["actor"]["ip"].as_str().unwrap())
            .or_default() += 1;
    }
    let (ip, n) = per_ip.into_iter().max_by_key(|(_, n)| *n).unwrap();
    assert!(n >= 3, "{ip} occurs {n} times");
    assert_eq!(
        reader
            .count(&QueryParams::new().filter("actor.ip", ip))
            .await
            .unwrap(),
        n
    );
    let high = reader
        .count(&QueryParams::new().q("severity>=8"))
        .await
        .unwrap();
    let low = reader
        .count(&QueryParams::new().q("severity<=3"))
        .await
        .unwrap();
    assert!(low > high, "mostly low severities: {low} low, {high} high");

    // The same seed again: the very same events, recognised as already stored.
    let (status, stdout, stderr) = generate().await;
    assert!(status.success(), "{stderr}");
    let again = json_out(&stdout);
    assert_eq!(
        [&again["sent"], &again["accepted"], &again["duplicates"]],
        [&json!(250), &json!(0), &json!(250)],
        "{again}"
    );
    assert_eq!(again["errors"], json!({}));
    assert_eq!(reader.count(&QueryParams::new()).await.unwrap(), 250);
}

#[tokio::test]
async fn generate_runs_until_sigterm_and_then_prints_its_summary() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let reader = Client::new(&app.url, Some(key.clone())).unwrap();
    let mut cmd = app.cli(&key);
    cmd.args(["generate", "--http", &app.url, "--rate", "50", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawning vigil generate");

    tokio::time::timeout(PATIENCE, async {
        while reader.count(&QueryParams::new()).await.unwrap() < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("events keep arriving while the generator runs");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success());
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the generator stops after SIGTERM")
    .expect("waiting task")
    .expect("waiting for the generator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let summary = json_out(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(summary["stopped_by"], "signal");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["sent"], summary["accepted"], "{summary}");
    let accepted = summary["accepted"].as_u64().unwrap();
    assert!(accepted >= 20, "{summary}");
    assert!(summary.get("seed").is_none());
    // Everything the summary counts as accepted is stored, and nothing more.
    assert_eq!(reader.count(&QueryParams::new()).await.unwrap(), accepted);
    let newest = reader
        .query(&QueryParams::new().limit(1))
        .await
        .unwrap()
        .events;
    let id = newest[0]["id"].as_str().unwrap();
    assert!(id.starts_with("gen-"), "{id}");
}

#[tokio::test]
async fn generate_waits_out_rate_limits_and_loses_nothing() {
    let app = TestApp::spawn_with(&["--rate-limit", "4", "--rate-burst", "1"]).await;
    // The limit holds for every credential, the root key included: one key does everything.
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let mut cmd = app.cli(&key);
    cmd.args(["generate", "--http", &app.url]).args([
        "--count",
        "40",
        "--rate",
        "0",
        "--batch-size",
        "10",
        "-o",
        "json",
    ]);
    let (status, stdout, stderr) = run_cli(cmd).await;
    assert!(status.success(), "{stderr}");
    let summary = json_out(&stdout);
    assert_eq!(
        [&summary["sent"], &summary["accepted"], &summary["failed"]],
        [&json!(40), &json!(40), &json!(0)],
        "{summary}"
    );
    let (requests, retries) = (
        summary["requests"].as_u64().unwrap(),
        summary["retries"].as_u64().unwrap(),
    );
    assert!(
        retries > 0,
        "four requests at once exceed one per burst: {summary}"
    );
    assert_eq!(requests, 4 + retries, "{summary}");

    let reader = Client::new(&app.url, Some(key)).unwrap();
    let stored = tokio::time::timeout(PATIENCE, async {
        loop {
            match reader.count(&QueryParams::new()).await {
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await
                }
                other => return other.expect("count"),
            }
        }
    })
    .await
    .expect("the rate limit lets the count through");
    assert_eq!(stored, 40);
}
