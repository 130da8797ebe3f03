//! The least-privilege server configuration shipped in `deploy/nats/nats-server.conf`, run by a
//! real nats-server: every path a vigil role needs works, and every forbidden one is refused.
//!
//! A refusal is detected positively — the server answers `-ERR 'Permissions Violation for …'`
//! naming the subject, which the client reports as a server error event — and shown to have
//! had no effect: nothing delivered, nothing stored, no reply. "Nothing delivered" is checked
//! without waiting for a timeout: NATS delivers a message to every matching subscription while
//! it processes the publish, so once the publisher and then the subscriber have each made a
//! round trip through the server ([`Conn::round_trip`]), a message that had been delivered is
//! already in the subscription.
//!
//! Each test starts its own server from the deployed file, so they run in parallel. Every
//! connection uses its own reply prefix `_INBOX.<user>`, as vigil does, and ends with a check
//! that the server reported no violation besides the expected ones.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, pull},
    context::PublishErrorKind,
    stream,
};
use async_nats::{Client, ConnectOptions, Event, Request, RequestErrorKind, ServerError};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use vigil_bus::testing::PrivateNats;

/// How long a request or a JetStream call waits for its reply. A refused one never gets any,
/// so this is also how long each refusal takes to show as a failed request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for something that must happen: an expected error, a message.
const WAIT: Duration = Duration::from_secs(10);
/// The event stream's message limit when vigil runs with `--max-event-bytes` at 1 MiB: the
/// event plus the 4 KiB normalisation may add (`vigil_bus::max_message_bytes_for`).
const LARGEST_MESSAGE: i32 = 1024 * 1024 + 4096;
/// A subject no user may publish to: its violation marks the end of a connection's errors.
const MARKER: &str = "vigil.permissions.marker";

/// A user of the deployed configuration, its password, and the value of its password variable
/// in the server's environment. Plain text works bare or in double quotes; a bcrypt hash must
/// be in double quotes (client-acme's is the bcrypt hash of its password).
struct User {
    name: &'static str,
    variable: &'static str,
    password: &'static str,
    server_value: &'static str,
}

const USERS: [User; 5] = [
    User {
        name: "generator",
        variable: "VIGIL_NATS_GENERATOR_PASSWORD",
        password: "generator-pw-1",
        server_value: "generator-pw-1",
    },
    User {
        name: "ingest",
        variable: "VIGIL_NATS_INGEST_PASSWORD",
        password: "ingest-pw-2",
        server_value: "\"ingest-pw-2\"",
    },
    User {
        name: "writer",
        variable: "VIGIL_NATS_WRITER_PASSWORD",
        password: "writer-pw-3",
        server_value: "writer-pw-3",
    },
    User {
        name: "reader",
        variable: "VIGIL_NATS_READER_PASSWORD",
        password: "reader-pw-4",
        server_value: "reader-pw-4",
    },
    User {
        name: "client-acme",
        variable: "VIGIL_NATS_CLIENT_ACME_PASSWORD",
        password: "client-acme-pw-5",
        server_value: "\"$2b$04$Kr5Rp4L/tXptO6C27u9IgOHpqLtYUU8Lx7zMd58dYhJkCthTWojfO\"",
    },
];

/// Awaits `future`, failing the test when it takes longer than [`WAIT`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {WAIT:?}"))
}

fn config_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/nats-server.conf")
}

fn start_server() -> PrivateNats {
    let env: Vec<(&str, &str)> = USERS.iter().map(|u| (u.variable, u.server_value)).collect();
    PrivateNats::start_with_config(&config_file(), &env)
}

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|u| u.name == user)
        .map(|u| u.password)
        .unwrap_or_else(|| panic!("no user {user} in the test table"))
}

fn publish_violation(subject: &str) -> String {
    format!("Permissions Violation for Publish to \"{subject}\"")
}

fn subscription_violation(subject: &str, queue: Option<&str>) -> String {
    match queue {
        Some(queue) => {
            format!(
                "Permissions Violation for Subscription to \"{subject}\" using queue \"{queue}\""
            )
        }
        None => format!("Permissions Violation for Subscription to \"{subject}\""),
    }
}

/// One connection as vigil makes it, with the errors the server sent it, in order.
struct Conn {
    user: &'static str,
    client: Client,
    js: jetstream::Context,
    errors: mpsc::Receiver<String>,
}

impl Conn {
    async fn open(nats: &PrivateNats, user: &'static str) -> Self {
        let (tx, errors) = mpsc::channel(64);
        let client = ConnectOptions::with_user_and_password(user.into(), password(user).into())
            .custom_inbox_prefix(format!("_INBOX.{user}"))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(error) = event {
                        let text = match error {
                            ServerError::Other(text) => text,
                            other => other.to_string(),
                        };
                        let _ = tx.send(text).await;
                    }
                }
            })
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        Self {
            user,
            client,
            js,
            errors,
        }
    }

    /// Waits for the server's next error to this connection and checks it is `expected`.
    async fn expect_error(&mut self, expected: &str) {
        match tokio::time::timeout(WAIT, self.errors.recv()).await {
            Ok(Some(error)) => assert_eq!(error, expected, "error sent to {}", self.user),
            Ok(None) => panic!("{}'s connection is gone", self.user),
            Err(_) => panic!("{} got no error within {WAIT:?}: {expected}", self.user),
        }
    }

    /// A round trip through the server, which also checks that it sent no error besides
    /// those already expected: publishes to a subject nobody may use and waits for that
    /// violation as the next error. The server answers a connection in order, and the client
    /// hands a message to its subscription before reading what follows it; so afterwards,
    /// everything the server did for this connection's earlier publishes and subscriptions is
    /// done, and every message the server delivered to it before is in its subscriptions.
    /// (`Client::flush` only writes out the client's buffer.)
    async fn round_trip(&mut self) {
        self.client
            .publish(MARKER, "".into())
            .await
            .unwrap_or_else(|e| panic!("{} publishes the marker: {e}", self.user));
        self.expect_error(&publish_violation(MARKER)).await;
    }

    /// Checks the server sent this connection no error besides those already expected.
    async fn assert_no_other_errors(&mut self) {
        self.round_trip().await;
    }
}

/// The streams and the durable consumer, created as vigil's writer creates them (the same
/// calls: look up, create when missing).
async fn create_streams_and_consumer(writer: &Conn) -> consumer::Consumer<pull::Config> {
    let events = writer
        .js
        .get_or_create_stream(stream::Config {
            name: "VIGIL_EVENTS".to_owned(),
            subjects: vec!["events.*".to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .expect("writer creates VIGIL_EVENTS");
    writer
        .js
        .get_or_create_stream(stream::Config {
            name: "VIGIL_DEADLETTER".to_owned(),
            subjects: vec!["deadletter.events.*".to_owned()],
            ..Default::default()
        })
        .await
        .expect("writer creates VIGIL_DEADLETTER");
    events
        .get_or_create_consumer(
            "vigil-writer",
            pull::Config {
                durable_name: Some("vigil-writer".to_owned()),
                filter_subject: "events.*".to_owned(),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .expect("writer creates its consumer")
}

/// Publishes an event as the generator and returns its stream sequence.
async fn publish_event(generator: &Conn, payload: &'static str) -> u64 {
    let ack = generator
        .js
        .publish("events.acme", payload.into())
        .await
        .expect("generator publishes")
        .await
        .expect("JetStream acknowledges the generator's event");
    assert_eq!(ack.stream, "VIGIL_EVENTS");
    ack.sequence
}

async fn events_state(conn: &Conn) -> stream::State {
    conn.js
        .get_stream("VIGIL_EVENTS")
        .await
        .unwrap_or_else(|e| panic!("{} inspects VIGIL_EVENTS: {e}", conn.user))
        .info()
        .await
        .expect("stream info")
        .state
        .clone()
}

#[tokio::test]
async fn generator_publishes_events_and_nothing_else() {
    let nats = start_server();
    let writer = Conn::open(&nats, "writer").await;
    let mut consumer = create_streams_and_consumer(&writer).await;
    let mut generator = Conn::open(&nats, "generator").await;
    let mut client = Conn::open(&nats, "client-acme").await;

    // Allowed: publishing an event, acknowledged by JetStream on the generator's inbox.
    assert_eq!(publish_event(&generator, "e1").await, 1);

    // Listening to queries: refused, and a query published meanwhile does not reach it.
    let mut spy = generator.client.subscribe("query.event.*").await.unwrap();
    generator
        .expect_error(&subscription_violation("query.event.*", None))
        .await;
    client
        .client
        .publish("query.event.acme", "{}".into())
        .await
        .unwrap();
    client.round_trip().await;
    generator.round_trip().await;
    assert!(
        spy.next().now_or_never().is_none(),
        "a query reached the generator"
    );

    // Creating a consumer: refused before JetStream sees it (no reply at all).
    let created = generator
        .js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("peek".to_owned()),
                filter_subject: "events.acme".to_owned(),
                ..Default::default()
            },
            "VIGIL_EVENTS",
        )
        .await;
    assert_eq!(
        created.map(|_| ()).unwrap_err().kind(),
        jetstream::stream::ConsumerErrorKind::TimedOut
    );
    generator
        .expect_error(&publish_violation(
            "$JS.API.CONSUMER.CREATE.VIGIL_EVENTS.peek.events.acme",
        ))
        .await;
    assert_eq!(events_state(&writer).await.consumer_count, 1);

    // Reading the stream: its info, a stored message, or a batch from the writers' consumer.
    assert!(generator.js.get_stream("VIGIL_EVENTS").await.is_err());
    generator
        .expect_error(&publish_violation("$JS.API.STREAM.INFO.VIGIL_EVENTS"))
        .await;
    let events = generator
        .js
        .get_stream_no_info("VIGIL_EVENTS")
        .await
        .unwrap();
    assert!(events.get_raw_message(1).await.is_err());
    generator
        .expect_error(&publish_violation("$JS.API.STREAM.MSG.GET.VIGIL_EVENTS"))
        .await;
    let pulled = generator
        .client
        .send_request(
            "$JS.API.CONSUMER.MSG.NEXT.VIGIL_EVENTS.vigil-writer",
            Request::new().payload(r#"{"batch":1,"expires":1000000000}"#.into()),
        )
        .await;
    assert_eq!(pulled.unwrap_err().kind(), RequestErrorKind::TimedOut);
    generator
        .expect_error(&publish_violation(
            "$JS.API.CONSUMER.MSG.NEXT.VIGIL_EVENTS.vigil-writer",
        ))
        .await;
    // The event is still waiting for the writer, delivered to nobody.
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (1, 0));

    generator.assert_no_other_errors().await;
}

#[tokio::test]
async fn ingest_manages_its_stream_and_publishes_events() {
    let nats = start_server();
    let mut ingest = Conn::open(&nats, "ingest").await;

    // Allowed: look up the event stream, create it, update it, inspect it, publish to it.
    let config = stream::Config {
        name: "VIGIL_EVENTS".to_owned(),
        subjects: vec!["events.*".to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    ingest
        .js
        .get_or_create_stream(config.clone())
        .await
        .expect("ingest creates VIGIL_EVENTS");
    let updated = ingest
        .js
        .update_stream(stream::Config {
            max_message_size: LARGEST_MESSAGE,
            ..config
        })
        .await
        .expect("ingest updates VIGIL_EVENTS");
    assert_eq!(updated.config.max_message_size, LARGEST_MESSAGE);
    let ack = ingest
        .js
        .publish("events.acme", "e1".into())
        .await
        .expect("ingest publishes")
        .await
        .expect("JetStream acknowledges the ingest node's event");
    assert_eq!((ack.stream.as_str(), ack.sequence), ("VIGIL_EVENTS", 1));
    // The largest message with `--max-event-bytes` at 1 MiB fits the server's max_payload.
    assert_eq!(ingest.client.server_info().max_payload, 2 * 1024 * 1024);
    let large = bytes::Bytes::from(vec![b'x'; LARGEST_MESSAGE as usize]);
    let ack = ingest
        .js
        .publish("events.acme", large)
        .await
        .expect("ingest publishes a large event")
        .await
        .expect("JetStream acknowledges the large event");
    assert_eq!(ack.sequence, 2);
    assert_eq!(events_state(&ingest).await.messages, 2);

    // Creating the writers' consumer: refused.
    let created = ingest
        .js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("vigil-writer".to_owned()),
                filter_subject: "events.*".to_owned(),
                ..Default::default()
            },
            "VIGIL_EVENTS",
        )
        .await;
    assert_eq!(
        created.map(|_| ()).unwrap_err().kind(),
        jetstream::stream::ConsumerErrorKind::TimedOut
    );
    ingest
        .expect_error(&publish_violation(
            "$JS.API.CONSUMER.CREATE.VIGIL_EVENTS.vigil-writer.events.*",
        ))
        .await;

    // Creating the dead-letter stream, or deleting the event stream: refused.
    let dead_letters = ingest
        .js
        .create_stream(stream::Config {
            name: "VIGIL_DEADLETTER".to_owned(),
            subjects: vec!["deadletter.events.*".to_owned()],
            ..Default::default()
        })
        .await;
    assert!(dead_letters.is_err());
    ingest
        .expect_error(&publish_violation("$JS.API.STREAM.CREATE.VIGIL_DEADLETTER"))
        .await;
    assert!(ingest.js.delete_stream("VIGIL_EVENTS").await.is_err());
    ingest
        .expect_error(&publish_violation("$JS.API.STREAM.DELETE.VIGIL_EVENTS"))
        .await;

    // Neither had any effect: the stream, its event and no consumer; no dead-letter stream.
    let state = events_state(&ingest).await;
    assert_eq!((state.messages, state.consumer_count), (2, 0));
    let writer = Conn::open(&nats, "writer").await;
    let missing = writer.js.get_stream("VIGIL_DEADLETTER").await.unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");

    ingest.assert_no_other_errors().await;
}

#[tokio::test]
async fn writer_consumes_and_dead_letters_but_cannot_publish_events() {
    let nats = start_server();
    let mut writer = Conn::open(&nats, "writer").await;
    let mut consumer = create_streams_and_consumer(&writer).await;
    let generator = Conn::open(&nats, "generator").await;

    // Allowed: check and update both streams, check and re-declare the consumer.
    for (name, subject) in [
        ("VIGIL_EVENTS", "events.*"),
        ("VIGIL_DEADLETTER", "deadletter.events.*"),
    ] {
        let mut stream = writer
            .js
            .get_stream(name)
            .await
            .expect("writer gets stream");
        let mut config = stream.info().await.expect("stream info").config.clone();
        assert_eq!(config.subjects, [subject]);
        config.description = Some(format!("vigil {name}"));
        writer
            .js
            .update_stream(config)
            .await
            .expect("writer updates stream");
    }
    let events = writer.js.get_stream_no_info("VIGIL_EVENTS").await.unwrap();
    events
        .create_consumer(consumer.cached_info().config.clone())
        .await
        .expect("writer re-declares its consumer");

    // Allowed: pull an event, acknowledge it (the server confirms), dead-letter it.
    assert_eq!(publish_event(&generator, "e1").await, 1);
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("writer pulls");
    let message = within("the writer's pull", batch.next())
        .await
        .expect("a message")
        .expect("the event");
    assert_eq!(
        (message.subject.as_str(), &message.payload[..]),
        ("events.acme", &b"e1"[..])
    );
    message.double_ack().await.expect("writer acknowledges");
    let info = consumer.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 1);
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    let dead = writer
        .js
        .publish("deadletter.events.acme", message.payload.clone())
        .await
        .expect("writer dead-letters")
        .await
        .expect("JetStream acknowledges the dead letter");
    assert_eq!(
        (dead.stream.as_str(), dead.sequence),
        ("VIGIL_DEADLETTER", 1)
    );

    // Publishing an event: refused, and not stored — the generator's next event directly
    // follows its first.
    let forged = writer
        .js
        .publish("events.acme", "forged".into())
        .await
        .expect("the publish goes out")
        .await;
    assert_eq!(forged.unwrap_err().kind(), PublishErrorKind::TimedOut);
    writer.expect_error(&publish_violation("events.acme")).await;
    assert_eq!(publish_event(&generator, "e2").await, 2);

    // Purging the event stream: refused, and the event stays.
    assert!(events.purge().await.is_err());
    writer
        .expect_error(&publish_violation("$JS.API.STREAM.PURGE.VIGIL_EVENTS"))
        .await;
    assert_eq!(events_state(&writer).await.messages, 1);

    writer.assert_no_other_errors().await;
}

#[tokio::test]
async fn reader_answers_queries_in_its_queue_group_only() {
    let nats = start_server();
    let writer = Conn::open(&nats, "writer").await;
    create_streams_and_consumer(&writer).await;
    let generator = Conn::open(&nats, "generator").await;
    let mut reader = Conn::open(&nats, "reader").await;
    let mut client = Conn::open(&nats, "client-acme").await;

    // Allowed: the queue subscription, and one reply per request.
    let mut queries = reader
        .client
        .queue_subscribe("query.event.*", "vigil-readers".to_owned())
        .await
        .unwrap();
    reader.round_trip().await;
    let inbox = client.client.new_inbox();
    let mut replies = client.client.subscribe(inbox.clone()).await.unwrap();
    client
        .client
        .publish_with_reply("query.event.acme", inbox.clone(), "{}".into())
        .await
        .unwrap();
    let query = within("a query", queries.next()).await.expect("a query");
    let reply_to = query.reply.clone().expect("a reply subject");
    reader
        .client
        .publish(reply_to.clone(), "page".into())
        .await
        .unwrap();
    let reply = within("the reply", replies.next())
        .await
        .expect("the reply");
    assert_eq!(&reply.payload[..], b"page");

    // A second reply to the same request: refused, and not delivered.
    reader
        .client
        .publish(reply_to.clone(), "more".into())
        .await
        .unwrap();
    reader
        .expect_error(&publish_violation(reply_to.as_str()))
        .await;
    client.round_trip().await;
    assert!(
        replies.next().now_or_never().is_none(),
        "a second reply arrived"
    );

    // Queries outside the queue group, or in another group: refused, and a query published
    // meanwhile reaches only the queue subscription.
    let mut plain = reader.client.subscribe("query.event.*").await.unwrap();
    reader
        .expect_error(&subscription_violation("query.event.*", None))
        .await;
    let mut spies = reader
        .client
        .queue_subscribe("query.event.*", "spies".to_owned())
        .await
        .unwrap();
    reader
        .expect_error(&subscription_violation("query.event.*", Some("spies")))
        .await;
    client
        .client
        .publish("query.event.acme", "{}".into())
        .await
        .unwrap();
    client.round_trip().await;
    reader.round_trip().await;
    assert!(queries.next().now_or_never().is_some_and(|m| m.is_some()));
    assert!(
        plain.next().now_or_never().is_none(),
        "a plain subscription got a query"
    );
    assert!(
        spies.next().now_or_never().is_none(),
        "another queue group got a query"
    );

    // Reading tenants' replies: refused.
    reader
        .client
        .subscribe("_INBOX.client-acme.>")
        .await
        .unwrap();
    reader
        .expect_error(&subscription_violation("_INBOX.client-acme.>", None))
        .await;

    // Publishing an event: refused, and not stored.
    reader
        .client
        .publish("events.acme", "forged".into())
        .await
        .unwrap();
    reader.expect_error(&publish_violation("events.acme")).await;
    assert_eq!(publish_event(&generator, "e1").await, 1);

    reader.assert_no_other_errors().await;
}

#[tokio::test]
async fn tenant_client_queries_its_own_tenant_only() {
    let nats = start_server();
    let writer = Conn::open(&nats, "writer").await;
    create_streams_and_consumer(&writer).await;
    let generator = Conn::open(&nats, "generator").await;
    let mut reader = Conn::open(&nats, "reader").await;
    let mut client = Conn::open(&nats, "client-acme").await;
    let mut queries = reader
        .client
        .queue_subscribe("query.event.*", "vigil-readers".to_owned())
        .await
        .unwrap();
    reader.round_trip().await;

    // Allowed: a request to its own tenant, answered by a reader on the client's inbox.
    let answer = async {
        let query = within("a query", queries.next()).await.expect("a query");
        let reply = format!("answer to {}", query.subject);
        reader
            .client
            .publish(query.reply.expect("a reply subject"), reply.into())
            .await
            .unwrap();
    };
    let (response, ()) = tokio::join!(
        client.client.request("query.event.acme", "{}".into()),
        answer
    );
    assert_eq!(
        &response.expect("the reader's answer").payload[..],
        b"answer to query.event.acme"
    );

    // Another tenant's queries: refused; no reader sees it, no answer comes.
    let response = client
        .client
        .request("query.event.globex", "{}".into())
        .await;
    assert_eq!(response.unwrap_err().kind(), RequestErrorKind::TimedOut);
    client
        .expect_error(&publish_violation("query.event.globex"))
        .await;
    reader.round_trip().await;
    assert!(
        queries.next().now_or_never().is_none(),
        "a reader got globex's query"
    );

    // Other users' replies and the events: refused, and an event published meanwhile (with
    // JetStream's acknowledgement to the generator's inbox) reaches none of them.
    let subjects = [
        "_INBOX.>",
        "_INBOX.reader.>",
        "_INBOX.generator.>",
        "events.*",
    ];
    let mut spies = Vec::new();
    for subject in subjects {
        spies.push(client.client.subscribe(subject).await.unwrap());
        client
            .expect_error(&subscription_violation(subject, None))
            .await;
    }
    publish_event(&generator, "e1").await;
    client.round_trip().await;
    for (subject, spy) in subjects.iter().zip(&mut spies) {
        assert!(
            spy.next().now_or_never().is_none(),
            "{subject} got a message"
        );
    }

    client.assert_no_other_errors().await;
}

#[tokio::test]
async fn only_known_users_with_their_password_connect() {
    let nats = start_server();
    let wrong = ConnectOptions::with_user_and_password("writer".into(), "reader-pw-4".into())
        .connect(nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(
        anonymous.is_err(),
        "a connection without credentials was accepted"
    );
    // Every user of the table connects, client-acme with a bcrypt hash on the server side.
    for user in USERS {
        Conn::open(&nats, user.name)
            .await
            .assert_no_other_errors()
            .await;
    }
}

/// Regression (issue 12): a client connecting as a least-privilege user without
/// `--nats-inbox-prefix` waits for its reply on `_INBOX.>`, which that user may not subscribe
/// to; the server drops the reader's answer and the client only sees a timeout. It was told
/// "is this client allowed to ask for this tenant?", which points away from the cause. It is
/// now told to give its inbox prefix; with the prefix the same query is answered.
#[tokio::test]
async fn a_client_without_its_inbox_prefix_is_told_to_give_it() {
    let nats = start_server();
    let reader = Conn::open(&nats, "reader").await;
    let mut queries = reader
        .client
        .queue_subscribe("query.event.*", "vigil-readers".to_owned())
        .await
        .unwrap();
    let replier = reader.client.clone();
    tokio::spawn(async move {
        while let Some(query) = queries.next().await {
            if let Some(reply) = query.reply {
                let _ = replier
                    .publish(
                        reply,
                        br#"{"events":[],"next_cursor":null}"#.as_ref().into(),
                    )
                    .await;
            }
        }
    });
    reader.client.flush().await.unwrap();

    let url = format!(
        "nats://client-acme:{}@{}",
        password("client-acme"),
        nats.url().trim_start_matches("nats://")
    );
    let connect = |prefix: Option<&str>| {
        let mut config = vigil_bus::BusConfig::new(url.clone());
        config.inbox_prefix = prefix.map(str::to_owned);
        config.request_timeout = REQUEST_TIMEOUT;
        vigil_bus::Bus::connect(config)
    };
    let tenant = vigil_event::TenantId::parse("acme").unwrap();
    let request = vigil_bus::reader::QueryRequest::default();

    let bus = connect(None).await.expect("client-acme connects");
    let failure = bus.query(&tenant, &request).await.unwrap_err();
    assert_eq!(failure.code, "bus_unavailable");
    assert!(
        failure.message.contains("--nats-inbox-prefix"),
        "{}",
        failure.message
    );

    let bus = connect(Some("_INBOX.client-acme"))
        .await
        .expect("client-acme connects");
    let page = bus.query(&tenant, &request).await.expect("answered");
    assert_eq!(&page[..], br#"{"events":[],"next_cursor":null}"#);
}
