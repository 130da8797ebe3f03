//! Connecting with the credentials of a `nats://user:password@host` URL, against a server
//! running the least-privilege configuration of `deploy/nats/`.

use std::path::PathBuf;

use vigil_bus::testing::PrivateNats;
use vigil_bus::{Bus, BusConfig};

fn server() -> PrivateNats {
    let config =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/nats-server.conf");
    PrivateNats::start_with_config(
        &config,
        &[
            ("VIGIL_NATS_GENERATOR_PASSWORD", "\"gen-pw\""),
            ("VIGIL_NATS_INGEST_PASSWORD", "\"in-pw\""),
            // `@` and `:` in a password are percent-encoded in the URL.
            ("VIGIL_NATS_WRITER_PASSWORD", "\"wr@it:er\""),
            ("VIGIL_NATS_READER_PASSWORD", "\"rd-pw\""),
            ("VIGIL_NATS_CLIENT_ACME_PASSWORD", "\"acme-pw\""),
        ],
    )
}

fn config(url: String, inbox: &str) -> BusConfig {
    BusConfig {
        inbox_prefix: Some(inbox.to_owned()),
        ..BusConfig::new(url)
    }
}

#[tokio::test]
async fn the_url_carries_the_user_and_password() {
    let nats = server();
    let port = nats.port();
    let writer = Bus::connect(config(
        format!("nats://writer:wr%40it%3Aer@127.0.0.1:{port}"),
        "_INBOX.writer",
    ))
    .await
    .expect("the writer logs in with the URL's credentials");
    writer
        .ensure_event_stream()
        .await
        .expect("the writer may create the event stream");

    let wrong = Bus::connect(config(
        format!("nats://writer:nope@127.0.0.1:{port}"),
        "_INBOX.writer",
    ))
    .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let anonymous = Bus::connect(config(format!("nats://127.0.0.1:{port}"), "_INBOX")).await;
    assert!(anonymous.is_err(), "no credentials, no connection");
}
