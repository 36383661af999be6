//! The client over real QUIC on loopback, against the fake edge in `fake_edge`: the
//! handshake, sending and receiving, refusals, reconnects, the outbox surviving them, and
//! closing. (End-to-end tests against the real edge and core live elsewhere.)

// Helpers panic on failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_edge;

use std::time::Duration;

use client::{
    Backoff, Client, ClientConfig, ConnectError, DeviceId, ErrorCode, Event, Events, Message,
    SendError, UserId,
};
use fake_edge::FakeEdge;

/// Bounds every wait on an event, so a bug fails the test instead of hanging it.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn config(edge: &FakeEdge, token: &str) -> ClientConfig {
    let mut config = ClientConfig::new(
        edge.addr,
        transport::pki::DEV_SERVER_NAME,
        edge.roots.clone(),
        token,
        DeviceId(rand::random()),
    );
    // Quick retries keep the reconnect tests short; the schedule itself is unit-tested.
    config.reconnect = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        jitter: 1.0,
    };
    config
}

async fn connect(edge: &FakeEdge, user: &str) -> (Client, Events) {
    Client::connect(config(edge, &format!("user:{user}")))
        .await
        .unwrap()
}

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

async fn next(events: &mut Events) -> Event {
    match tokio::time::timeout(EVENT_WAIT, events.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the event stream ended"),
        Err(_) => panic!("no event within {EVENT_WAIT:?}"),
    }
}

/// The next message, passing over connection-state events.
async fn next_message(events: &mut Events) -> Message {
    loop {
        match next(events).await {
            Event::Message(m) => return m,
            Event::Connected { .. }
            | Event::Synced
            | Event::Reconnecting { .. }
            | Event::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn two_clients_exchange_messages_in_order() {
    // The whole path through the client's I/O: handshake, lanes both ways, answers.
    let edge = FakeEdge::start().await;
    let (alice, _alice_events) = connect(&edge, "alice").await;
    let (bob, mut bob_events) = connect(&edge, "bob").await;
    assert_eq!(alice.user(), &user("alice"));
    assert_eq!(bob.name(), "bob!");
    assert!(matches!(
        next(&mut bob_events).await,
        Event::Connected { .. }
    ));

    for i in 0..20 {
        let accepted = alice.send(&user("bob"), format!("hi {i}")).await.unwrap();
        assert_eq!(accepted.key.counter, i + 1);
    }
    for i in 0..20 {
        let m = next_message(&mut bob_events).await;
        assert_eq!(
            (m.from.as_str(), m.text.as_str()),
            ("alice", format!("hi {i}").as_str())
        );
    }
}

#[tokio::test]
async fn a_refused_token_is_a_clear_connect_error() {
    // A game must be able to tell "get a new token" from "the network is down".
    let edge = FakeEdge::start().await;
    let err = Client::connect(config(&edge, "expired")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Refused {
                code: ErrorCode::TokenExpired,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent());
    let err = Client::connect(config(&edge, "forged")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
}

#[tokio::test]
async fn acknowledged_messages_are_deleted_by_the_server() {
    // Taking a message from Events acknowledges it (auto_ack), so the server can free it.
    let edge = FakeEdge::start().await;
    let (alice, _a) = connect(&edge, "alice").await;
    let (_bob, mut bob_events) = connect(&edge, "bob").await;
    alice.send(&user("bob"), "ack me").await.unwrap();
    assert_eq!(edge.stored_for("bob"), 1, "stored until acknowledged");
    next_message(&mut bob_events).await;
    assert!(
        edge.wait_all_acknowledged("bob", EVENT_WAIT).await,
        "never acknowledged"
    );
}

#[tokio::test]
async fn after_a_kick_the_client_reconnects_and_receives_what_came_meanwhile() {
    // A lost connection must heal by itself, and the server's replay fills the gap.
    let edge = FakeEdge::start().await;
    let (alice, _a) = connect(&edge, "alice").await;
    let (_bob, mut bob_events) = connect(&edge, "bob").await;
    assert!(matches!(
        next(&mut bob_events).await,
        Event::Connected { .. }
    ));
    assert!(matches!(next(&mut bob_events).await, Event::Synced));

    edge.kick("bob", ErrorCode::ServerShutdown);
    match next(&mut bob_events).await {
        Event::Disconnected { code, .. } => assert_eq!(code, Some(ErrorCode::ServerShutdown)),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // Sent while bob is (probably) away: stored, then replayed on his reconnect.
    alice
        .send(&user("bob"), "while you were out")
        .await
        .unwrap();
    loop {
        match next(&mut bob_events).await {
            Event::Reconnecting { attempt, delay } => {
                assert!(attempt >= 1);
                assert!(delay <= Duration::from_millis(100));
            }
            Event::Error(_) => {}
            Event::Connected { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        next_message(&mut bob_events).await.text,
        "while you were out"
    );
}

#[tokio::test]
async fn the_outbox_survives_a_reconnect_and_the_recipient_shows_the_resend_once() {
    // The edge receives the message but never answers; the connection drops. The client
    // must re-send it (same key) on the next connection, and bob must show it once even
    // though the server now holds two copies.
    let edge = FakeEdge::start().await;
    let (alice, mut alice_events) = connect(&edge, "alice").await;
    let (_bob, mut bob_events) = connect(&edge, "bob").await;
    edge.set_silent(true);
    let pending = alice.queue(&user("bob"), "keep me").await.unwrap();
    assert_eq!(next_message(&mut bob_events).await.text, "keep me");
    assert_eq!(edge.received_from("alice"), vec!["keep me"]);

    edge.set_silent(false);
    edge.kick("alice", ErrorCode::ServerShutdown);
    let accepted = tokio::time::timeout(EVENT_WAIT, pending.accepted())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        edge.received_from("alice"),
        vec!["keep me", "keep me"],
        "re-sent once"
    );
    assert!(matches!(
        next(&mut alice_events).await,
        Event::Connected { .. }
    ));

    // A later message arrives after the re-send, and the re-send was not shown again.
    let later = alice.send(&user("bob"), "later").await.unwrap();
    assert!(later.key.counter > accepted.key.counter);
    assert_eq!(next_message(&mut bob_events).await.text, "later");
}

#[tokio::test]
async fn a_permanent_error_stops_reconnecting_until_a_new_token() {
    // Retrying with an expired token only hammers the server; the game must refresh it.
    let edge = FakeEdge::start().await;
    let (bob, mut bob_events) = connect(&edge, "bob").await;
    assert!(matches!(
        next(&mut bob_events).await,
        Event::Connected { .. }
    ));
    assert!(matches!(next(&mut bob_events).await, Event::Synced));
    edge.kick("bob", ErrorCode::TokenExpired);
    match next(&mut bob_events).await {
        Event::Disconnected { code, .. } => assert_eq!(code, Some(ErrorCode::TokenExpired)),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    bob.set_token("user:bob");
    // No Reconnecting came before the new token: the next event is the new connection.
    assert!(matches!(
        next(&mut bob_events).await,
        Event::Connected { .. }
    ));
}

#[tokio::test]
async fn closing_answers_pending_sends_and_ends_the_events() {
    // Nothing may wait for ever on a closed client.
    let edge = FakeEdge::start().await;
    let (alice, mut alice_events) = connect(&edge, "alice").await;
    edge.set_silent(true);
    let pending = alice.queue(&user("bob"), "never answered").await.unwrap();
    alice.close().await;
    assert_eq!(pending.accepted().await, Err(SendError::Closed));
    assert!(matches!(
        alice.send(&user("bob"), "late").await,
        Err(SendError::Closed)
    ));
    let mut last = None;
    while let Some(event) = tokio::time::timeout(EVENT_WAIT, alice_events.next())
        .await
        .unwrap()
    {
        last = Some(event);
    }
    assert!(
        matches!(
            last,
            Some(Event::Disconnected {
                code: Some(ErrorCode::NoError),
                ..
            })
        ),
        "{last:?}"
    );
}

#[tokio::test]
async fn local_errors_come_back_at_once() {
    // Empty or oversized texts never reach the network.
    let edge = FakeEdge::start().await;
    let (alice, _a) = connect(&edge, "alice").await;
    let err = alice.send(&user("bob"), "").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidText));
    let err = alice
        .send(&user("bob"), "x".repeat(5000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TextTooLarge));
    assert!(edge.received_from("alice").is_empty());
}

#[tokio::test]
async fn a_game_that_stops_draining_events_loses_nothing() {
    // With a tiny event queue the driver must hold back (and stop reading lanes) rather
    // than drop or reorder; once the game drains again, everything arrives, in order.
    let edge = FakeEdge::start().await;
    let (alice, _a) = connect(&edge, "alice").await;
    let mut bob_config = config(&edge, "user:bob");
    bob_config.event_queue = 1;
    let (_bob, mut bob_events) = Client::connect(bob_config).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..300 {
        pending.push(alice.queue(&user("bob"), format!("m{i}")).await.unwrap());
    }
    // Answers keep flowing to alice although bob reads nothing.
    for p in pending {
        tokio::time::timeout(EVENT_WAIT, p.accepted())
            .await
            .unwrap()
            .unwrap();
    }
    for i in 0..300 {
        assert_eq!(next_message(&mut bob_events).await.text, format!("m{i}"));
    }
}

#[tokio::test]
async fn an_edge_that_breaks_the_protocol_on_a_lane_is_closed_and_the_client_carries_on() {
    // A lane whose frame does not decode (variant 0xff) is the edge breaking the
    // protocol: the client closes the connection with that code, reconnects, and the
    // conversation goes on.
    let edge = FakeEdge::start().await;
    let (alice, _a) = connect(&edge, "alice").await;
    let (_bob, mut bob_events) = connect(&edge, "bob").await;
    let kind = protocol::frames::STREAM_KIND_LANE;
    let broken = edge
        .send_raw_lane("bob", &[kind, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await;
    let closed = tokio::time::timeout(EVENT_WAIT, broken.closed())
        .await
        .expect("the client closes the connection");
    let (code, reason) = transport::close_code(&closed).expect("closed with a code");
    assert_eq!(code, ErrorCode::ProtocolViolation, "{reason}");

    // bob is told, is back on a new connection, and a message sent now reaches him.
    while !matches!(next(&mut bob_events).await, Event::Disconnected { .. }) {}
    while !matches!(next(&mut bob_events).await, Event::Connected { .. }) {}
    alice.send(&user("bob"), "still here?").await.unwrap();
    assert_eq!(next_message(&mut bob_events).await.text, "still here?");
}
