//! Hardening against input nobody on the project wrote: repeated JSON keys, deep nesting,
//! compressed bodies and malformed HTTP, sent to the real `vigil serve` binary on port 0 (and,
//! for the bus, through a real NATS JetStream server on 127.0.0.1:4222). Self-contained: the
//! few harness helpers it needs are below, so the file can move into the consolidated test
//! binary as one module.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on anything that should take a moment: guards against hangs, never measures.
use crate::common::{PATIENCE, TestApp};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";

/// One running `vigil serve` over its own temporary data directory (the harness's
/// [`TestApp`]), with a key of tenant `acme`; killed on drop.
struct Server {
    /// `127.0.0.1:port`.
    addr: String,
    root_key: String,
    /// A key of tenant `acme` that may write and read events and register schemas.
    key: String,
    _app: TestApp,
}

impl Server {
    async fn start(args: &[&str]) -> Self {
        let app = TestApp::spawn_with(args).await;
        let addr = app
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let key = app
            .create_key("acme", &["events:write", "events:read", "schemas:write"])
            .await;
        Self {
            addr,
            root_key: app.root_key.clone(),
            key,
            _app: app,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the `acme` key.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(&self.key)
    }

    /// A request with the root key.
    fn as_root(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(&self.root_key)
    }

    /// `POST /v1/events` with `body` as sent, and extra headers.
    async fn ingest(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.request(reqwest::Method::POST, "/v1/events");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::of(request.body(body).send().await.expect("request")).await
    }

    async fn count(&self) -> u64 {
        let answer = Answer::of(
            self.request(reqwest::Method::GET, "/v1/events/count")
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body["count"].as_u64().expect("count")
    }
}

/// A response: its status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status();
        let bytes = response.bytes().await.expect("response body");
        Self {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Asserts the status and the error code; returns the error's message.
    fn refused(&self, status: u16, code: &str) -> String {
        assert_eq!(
            (self.status.as_u16(), self.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{:?}",
            self.body
        );
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// Regression (issue 12, item 10): a repeated key was accepted, the last value winning, so
/// `{"type":"a","type":"b"}` was stored as `b` while another tool reading the same bytes may
/// take `a`. Every JSON body is now refused with `400 invalid_json` naming the key and its
/// path, at any depth, in every framing, and nothing of the batch is stored; so are repeated
/// keys in the other JSON request bodies (schemas, keys).
#[tokio::test]
async fn repeated_json_keys_are_refused_everywhere() {
    let server = Server::start(&[]).await;
    let message = server
        .ingest(r#"{"type":"a","type":"b"}"#, &[])
        .await
        .refused(400, "invalid_json");
    assert!(message.contains("duplicate key `type`"), "{message}");

    let batch = r#"[{"type":"ok"},{"type":"b","actor":{"id":"u-1","ip":"10.0.0.1","id":"u-2"}}]"#;
    let message = server.ingest(batch, &[]).await.refused(400, "invalid_json");
    assert!(
        message.contains("duplicate key `id` at `actor.id`"),
        "{message}"
    );

    let ndjson = "{\"type\":\"ok\"}\n{\"type\":\"x\",\"details\":{\"a\":{\"b\":1,\"b\":1}}}\n";
    let answer = server
        .ingest(ndjson, &[("content-type", "application/x-ndjson")])
        .await;
    let message = answer.refused(400, "invalid_json");
    assert!(
        message.contains("duplicate key `b` at `details.a.b`"),
        "{message}"
    );
    assert_eq!(answer.body["error"]["details"]["line"], 2);
    assert_eq!(
        server.count().await,
        0,
        "nothing of a refused batch is stored"
    );

    let schema = server
        .request(reqwest::Method::PUT, "/v1/schemas/billing.charged")
        .header("content-type", "application/json")
        .body(r#"{"type":"object","required":["details"],"required":[]}"#)
        .send()
        .await
        .unwrap();
    Answer::of(schema).await.refused(400, "invalid_json");
    let key = server
        .as_root(reqwest::Method::POST, "/v1/keys")
        .header("content-type", "application/json")
        .body(r#"{"name":"a","tenant":"acme","scopes":["events:read"],"tenant":"globex"}"#)
        .send()
        .await
        .unwrap();
    Answer::of(key).await.refused(400, "invalid_json");
}

/// Regression (issue 12, item 13): an event nested 128 levels or more was answered
/// `400 invalid_json` (serde_json's recursion limit) instead of `422 too_deep`, the answer for
/// nesting past `--max-depth`. Any depth now gets `422 too_deep` with the path, and the server
/// parses it without recursing past the limit (a million levels do not overflow its stack).
#[tokio::test]
async fn nesting_past_the_depth_limit_is_too_deep_however_deep() {
    let server = Server::start(&[]).await;
    for levels in [16, 127, 128, 129, 1_000_000] {
        let body = format!(
            r#"{{"type":"deep","tags":{}1{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let answer = server.ingest(body, &[]).await;
        answer.refused(422, "too_deep");
        assert_eq!(answer.body["error"]["details"][0]["path"], "tags");
    }
    let objects = format!(
        r#"{{"type":"deep","details":{}1{}}}"#,
        r#"{"n":"#.repeat(200),
        "}".repeat(200)
    );
    let answer = server.ingest(objects, &[]).await;
    answer.refused(422, "too_deep");
    assert_eq!(
        answer.body["error"]["details"][0]["path"],
        format!("details{}", ".n".repeat(15))
    );
    // Within the limit: stored.
    let ok = format!(
        r#"{{"type":"deep","tags":{}1{}}}"#,
        "[".repeat(15),
        "]".repeat(15)
    );
    assert_eq!(server.ingest(ok, &[]).await.status, 201);
}

/// Regression (issue 12, item 13): `Content-Encoding: gzip` was ignored, so a compressed batch
/// failed as `invalid_json`. gzip, deflate and zstd bodies are decompressed; the body limit
/// holds for what they decompress to (a small bomb gets `413` after at most the limit);
/// other encodings get `415 unsupported_encoding`, as does an encoded body on any other route.
#[tokio::test]
async fn compressed_ingest_bodies_are_decompressed_within_the_body_limit() {
    let server =
        Server::start(&["--max-body-bytes", "1048576", "--max-event-bytes", "65536"]).await;
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"type": "compressed", "details": {"i": i}}))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    let answer = server
        .ingest(gzip(&body), &[("content-encoding", "gzip")])
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], 100);

    let ndjson: String = batch.iter().map(|e| format!("{e}\n")).collect();
    let answer = server
        .ingest(
            zstd::encode_all(ndjson.as_bytes(), 3).unwrap(),
            &[
                ("content-encoding", "zstd"),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(server.count().await, 200);

    // 64 MiB of spaces (valid JSON whitespace around an event) in about 64 KiB of gzip.
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    w.write_all(br#"{"type":"bomb"}"#).unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..64 {
        w.write_all(&spaces).unwrap();
    }
    let bomb = w.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let answer = server.ingest(bomb, &[("content-encoding", "gzip")]).await;
    answer.refused(413, "body_too_large");
    assert_eq!(answer.body["error"]["details"]["limit"], 1_048_576);

    let answer = server
        .ingest(b"not gzip".to_vec(), &[("content-encoding", "gzip")])
        .await;
    answer.refused(400, "invalid_body");
    for encoding in ["br", "compress", "gzip, br"] {
        let answer = server
            .ingest(body.clone(), &[("content-encoding", encoding)])
            .await;
        answer.refused(415, "unsupported_encoding");
    }
    let key = server
        .as_root(reqwest::Method::POST, "/v1/keys")
        .header("content-encoding", "gzip")
        .body(gzip(
            br#"{"name":"a","tenant":"acme","scopes":["events:read"]}"#,
        ))
        .send()
        .await
        .unwrap();
    Answer::of(key).await.refused(415, "unsupported_encoding");
    assert_eq!(server.count().await, 200);
}

/// Sends `request` as raw bytes on a fresh connection; returns the status code and the body
/// of the first response (what arrived before the server closed or went quiet).
async fn raw(addr: &str, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait.min(Duration::from_millis(500)), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            // Quiet: a whole response has arrived when its body is as long as it says.
            Err(_) if complete(&received) || Instant::now() >= deadline => break,
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&received);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response to {request:?}: {text:?}"));
    let body = match received.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => received[end + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

/// Whether `received` holds a response head and a body of its `content-length`.
fn complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| received.len() - end - 4 >= n)
}

/// Regression (issue 12, item 5): malformed requests were answered `400` with an empty body
/// where clients expect vigil's error JSON. What reaches vigil's code is answered with it:
/// a query string or a path that does not decode, an unreadable chunked body. What hyper
/// refuses while parsing the request head (before any vigil code runs, with no hook to shape
/// the answer) stays an empty `400`; `docs/api.md` lists those as a known limit, and this test
/// pins both sides, so a hyper release that offers a hook shows up here.
#[tokio::test]
async fn malformed_requests_get_the_error_json_wherever_vigil_sees_them() {
    let server = Server::start(&[]).await;
    let auth = format!("Authorization: Bearer {}\r\n", server.key);
    let get = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
    };

    // Seen by vigil: answered with the error JSON.
    let mut raw_path = b"GET /v1/schemas/\xff\xfe HTTP/1.1\r\nHost: x\r\n".to_vec();
    raw_path.extend_from_slice(format!("{auth}Connection: close\r\n\r\n").as_bytes());
    let json_cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a query that does not decode", get("/v1/events?%FF%FE=1").into_bytes(), 400),
        ("a path that does not decode", get("/v1/events/%FF%FE").into_bytes(), 400),
        (
            "an unknown method",
            b"BREW /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            "a chunked body that is not chunked",
            format!("POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
            400,
        ),
    ];
    for (case, request, status) in json_cases {
        let (got, body) = raw(&server.addr, &request).await;
        let body: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{case}: not JSON: {:?}", String::from_utf8_lossy(&body)));
        assert_eq!(got, status, "{case}: {body}");
        assert!(body["error"]["code"].is_string(), "{case}: {body}");
    }

    // Refused by hyper while parsing the request head: an empty 400 (the known limit).
    let post = |headers: &str| {
        format!("POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}{headers}\r\n{{\"type\":\"x\"}}")
    };
    let hyper_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "conflicting Content-Length",
            post("Content-Length: 12\r\nContent-Length: 13\r\n").into_bytes(),
        ),
        (
            "negative Content-Length",
            post("Content-Length: -12\r\n").into_bytes(),
        ),
        (
            "a control byte in a header value",
            post("Content-Length: 12\r\nX-Bad: a\u{1}b\r\n").into_bytes(),
        ),
        (
            "a space in a header name",
            post("Content-Length: 12\r\nX Bad: a\r\n").into_bytes(),
        ),
        (
            "an obs-fold header",
            post("Content-Length: 12\r\nX-Folded: a\r\n b\r\n").into_bytes(),
        ),
        ("HTTP/0.9", b"GET /healthz\r\n\r\n".to_vec()),
        (
            "a garbage request line",
            b"\x16\x03\x01 hello there\r\n\r\n".to_vec(),
        ),
        (
            "a raw > in the query",
            get("/v1/events?q=severity>5").into_bytes(),
        ),
        ("raw non-UTF-8 bytes in the target", raw_path),
    ];
    for (case, request) in hyper_cases {
        let (got, body) = raw(&server.addr, &request).await;
        assert_eq!(got, 400, "{case}");
        assert!(body.is_empty(), "{case}: hyper now sends a body: {body:?}");
    }

    // The server is unharmed.
    let (got, _) = raw(&server.addr, get("/healthz").as_bytes()).await;
    assert_eq!(got, 200);
}

/// Regression (issue 12, items 10 and 13) over the bus: a JetStream message with a repeated
/// key was stored with the last value, and one nested 128 levels or more was dead-lettered as
/// `invalid_json`. The writer dead-letters them as `invalid_json` and `too_deep`, and the
/// events behind them are stored.
#[tokio::test]
async fn bus_messages_with_repeated_keys_or_too_deep_go_to_the_dead_letters() {
    use vigil_bus::{Bus, BusConfig};

    let ns = vigil_bus::testing::unique_name("hard");
    let server = Server::start(&["--nats", SHARED_NATS, "--nats-namespace", &ns]).await;
    let bus = Bus::connect(BusConfig {
        namespace: Some(ns.clone()),
        ..BusConfig::new(SHARED_NATS)
    })
    .await
    .expect("connecting to NATS");
    let js = bus.jetstream();
    let names = bus.names();
    let subject = names.events_subject(&vigil_event::TenantId::parse("acme").unwrap());
    let deep = format!(
        r#"{{"type":"deep","tags":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for payload in [
        r#"{"id":"dup","type":"a","type":"b"}"#.to_owned(),
        deep,
        r#"{"id":"after","type":"ok"}"#.to_owned(),
    ] {
        js.publish(subject.clone(), payload.into())
            .await
            .unwrap()
            .await
            .expect("JetStream ack");
    }
    let deadline = Instant::now() + PATIENCE;
    while server.count().await < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.count().await, 1, "only the valid event is stored");

    let mut dead = js
        .get_stream(names.dead_letter_stream())
        .await
        .expect("dead-letter stream");
    while dead.info().await.unwrap().state.messages < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut codes = Vec::new();
    for seq in 1..=2 {
        let message = dead.get_raw_message(seq).await.expect("dead letter");
        let code = message
            .headers
            .get(vigil_bus::writer::HEADER_ERROR_CODE)
            .expect("reason header")
            .to_string();
        codes.push(code);
    }
    codes.sort();
    assert_eq!(codes, ["invalid_json", "too_deep"]);
}
