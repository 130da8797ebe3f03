//! `GET /v1/events` as an export (`Accept: application/x-ndjson` or `text/csv`): every match
//! streamed across pages, CSV quoted per RFC 4180 with formulas neutralised.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::support::{seed, spawn_app};

#[tokio::test]
async fn ndjson_export_streams_every_match_across_pages() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 2_500).await;

    let ndjson = [("accept", "application/x-ndjson")];
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            Some(&key),
            &ndjson,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2_500);
    let mut seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 2_500, "no event twice");

    let r = app
        .call(
            Method::GET,
            "/v1/events?limit=1200&type=even",
            Some(&key),
            &ndjson,
            Body::empty(),
        )
        .await;
    assert_eq!(r.text().lines().count(), 1_200);
    let r = app
        .call(
            Method::GET,
            "/v1/events?limit=20000",
            Some(&key),
            &ndjson,
            Body::empty(),
        )
        .await;
    assert_eq!(
        r.text().lines().count(),
        2_500,
        "export limits are caps, not page sizes"
    );
}

#[tokio::test]
async fn csv_export_quotes_per_rfc_4180() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 3).await;
    let r = app
        .call(
            Method::GET,
            "/v1/events?order=asc",
            Some(&key),
            &[("accept", "text/csv")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.text();
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "seq,time,received_at,type,severity,actor.id,source,action,outcome,resource.type,resource.id,id,details"
    );
    let first = lines.next().unwrap();
    assert!(first.starts_with("1,2024-05-01T00:00:00Z,"), "{first}");
    assert!(first.contains(",even,0,u-0,billing,,,,,"), "{first}");
    assert!(
        first.ends_with(r#","{""i"":0,""note"":""a, \""quoted\"" note""}""#),
        "{first}"
    );
    assert_eq!(text.matches("\r\n").count(), 4, "header + 3 rows");
}

/// Event fields are attacker-controlled: an exported cell a spreadsheet would run as a formula
/// is prefixed with `'`.
#[tokio::test]
async fn csv_export_neutralises_formulas() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .post_events(
            &key,
            &json!({"type": "a", "actor": {"id": "=HYPERLINK(\"http://evil.example\",\"x\")"}, "action": "@SUM(A1)", "resource": {"id": "-1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            Some(&key),
            &[("accept", "text/csv")],
            Body::empty(),
        )
        .await;
    let text = r.text();
    let row = text.split("\r\n").nth(1).unwrap();
    assert!(
        row.contains(r#","'=HYPERLINK(""http://evil.example"",""x"")",billing,'@SUM(A1),,,'-1,"#),
        "{row}"
    );
}
