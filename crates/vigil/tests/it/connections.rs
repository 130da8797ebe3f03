//! Connections and shutdown: raw TCP clients that hold connections open against the real
//! `vigil serve` binary, to check that the header-read and idle timeouts, the connection cap
//! and the shutdown deadline bound what such a client can hold.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_client::{Client, QueryParams};

use crate::common::{PATIENCE, TestApp, TestDir, all_events};

/// `127.0.0.1:port` of a running server.
fn addr(app: &TestApp) -> String {
    app.url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Reads until the server closes the connection (EOF or reset), within [`PATIENCE`]; returns
/// what it sent before. Panics if the connection is still open then.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    received
}

/// Sends `GET /healthz` on a keep-alive connection and reads the whole response; returns its
/// status line.
async fn healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("reading the response");
            assert!(n > 0, "connection closed before the response was complete");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .expect("content-length");
                if body.len() >= length {
                    return head.lines().next().unwrap_or_default().to_owned();
                }
            }
        }
    })
    .await;
    read.expect("no response within the guard")
}

/// Regression (SIGTERM hangs): shutdown waited for every connection to finish its request,
/// with no deadline. A client that sent half a request (half its headers, or its headers and
/// half the body it announced) and then went quiet kept `vigil serve` running after SIGTERM
/// for as long as it liked: 45 s and counting in the attack run, and the store was never shut
/// down. Now connections still open `--shutdown-timeout` after the signal are dropped, the
/// process exits cleanly, and what was acknowledged before is there after a restart.
#[tokio::test]
async fn sigterm_stops_the_server_while_clients_hold_half_sent_requests() {
    let dir = TestDir::new();
    // The other bounds are far away, so only the shutdown deadline can end these connections.
    let bounds = [
        "--shutdown-timeout",
        "1s",
        "--header-read-timeout",
        "10m",
        "--idle-timeout",
        "10m",
        "--request-timeout",
        "10m",
    ];
    let app = TestApp::start(&dir, &bounds).await.expect("start");
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let client = Client::new(&app.url, Some(key.clone())).unwrap();
    client
        .ingest(&[json!({"type": "before.shutdown", "id": "kept"})])
        .await
        .expect("acknowledged before the signal");

    let mut half_head = TcpStream::connect(addr(&app)).await.unwrap();
    half_head
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: vigil\r\nContent-Ty")
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(addr(&app)).await.unwrap();
    half_body
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Both requests have reached the server: a third connection is served after them.
    let mut probe = TcpStream::connect(addr(&app)).await.unwrap();
    assert!(healthz(&mut probe).await.contains(" 200 "));
    drop(probe);

    let status = app.stop().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    until_closed(&mut half_head).await;
    until_closed(&mut half_body).await;

    let app = TestApp::start(&dir, &[]).await.expect("restart");
    let client = Client::new(&app.url, Some(key)).unwrap();
    let events = all_events(&client, QueryParams::new()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], "kept");
}

/// Regression (idle connections use up descriptors): a connection that sent nothing, or
/// trickled its headers, was never closed, so a few hundred of them exhausted the process's
/// file descriptors and the embedded writer poisoned itself. Now a client that has not sent
/// its headers within `--header-read-timeout` is disconnected.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(&["--header-read-timeout", "1s", "--idle-timeout", "10m"]).await;
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    let mut trickle = TcpStream::connect(addr(&app)).await.unwrap();
    trickle.write_all(b"GET /healthz HT").await.unwrap();
    until_closed(&mut silent).await;
    until_closed(&mut trickle).await;
    // The server itself is fine.
    let mut fresh = TcpStream::connect(addr(&app)).await.unwrap();
    assert!(healthz(&mut fresh).await.contains(" 200 "));
}

/// Past its headers, a request whose body stalls was bounded only by `--request-timeout`
/// (30 s) while its handler waited, and a client that stopped reading a response not at all.
/// Now a connection on which nothing moved for `--idle-timeout` is closed.
#[tokio::test]
async fn a_connection_on_which_nothing_moves_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(&["--idle-timeout", "1s", "--request-timeout", "10m"]).await;
    let key = app.create_key("acme", &["events:write"]).await;
    let mut stalled = TcpStream::connect(addr(&app)).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    until_closed(&mut stalled).await;
    let mut fresh = TcpStream::connect(addr(&app)).await.unwrap();
    assert!(healthz(&mut fresh).await.contains(" 200 "));
}

/// Regression (no cap on connections): any number of connections were held open, each with a
/// descriptor. Now a connection over `--max-connections` is accepted and closed at once,
/// while the connections within the cap keep being served; once one closes, its slot is free
/// again.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_the_others_still_work() {
    let app = TestApp::spawn_with(&[
        "--max-connections",
        "2",
        "--header-read-timeout",
        "10m",
        "--idle-timeout",
        "10m",
    ])
    .await;
    let mut first = TcpStream::connect(addr(&app)).await.unwrap();
    assert!(healthz(&mut first).await.contains(" 200 "));
    let second = TcpStream::connect(addr(&app)).await.unwrap();
    // The server accepts in order: `second` holds the last slot before `third` arrives.
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    let sent = until_closed(&mut third).await;
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));

    assert!(
        healthz(&mut first).await.contains(" 200 "),
        "a connection within the cap is still served"
    );

    drop(second);
    // The server notices the close and frees the slot shortly after.
    let freed = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut next = TcpStream::connect(addr(&app)).await.unwrap();
            if next
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
                .await
                .is_ok()
            {
                let answer = until_closed(&mut next).await;
                if String::from_utf8_lossy(&answer).contains(" 200 ") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        freed.is_ok(),
        "the slot of a closed connection was not freed"
    );
}
