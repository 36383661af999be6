//! Bad input from clients — oversized text, invalid UTF-8, garbage bytes, a flood — is
//! refused with a clear code, and never disturbs the other clients of the same edge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use client::{Client, ErrorCode, Events, SendError};
use common::*;
use protocol::SenderKey;
use protocol::frames::client::ServerFrame;
use protocol::limits::TEXT_BYTES_MAX_DEFAULT;
use tokio::task::JoinHandle;

/// Sustained sends per second per user on the edge of these tests: low, so a flood meets
/// it quickly, but well above what the bystanders send.
const RATE: u32 = 20;

/// Messages each bystander sends, and the pause between two.
const BYSTANDER_COUNT: usize = 30;
const BYSTANDER_PACE: Duration = Duration::from_millis(100);

/// One side of a conversation that runs while the abuse happens: once connected (both
/// sides are, before either starts), sends [`BYSTANDER_COUNT`] messages to `to`, each
/// awaited (it must be accepted), and collects as many from `to`. Returns what it sent
/// and what it was shown.
fn bystander(
    (client, events): (Client, Events),
    me: &'static str,
    to: &'static str,
) -> JoinHandle<(Vec<String>, Collected)> {
    let receiver = spawn_collect(events, BYSTANDER_COUNT, Duration::from_secs(30));
    tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..BYSTANDER_COUNT {
            let text = format!("{me} → {to} {i:02}");
            within(
                WAIT,
                "a bystander's Accepted",
                client.send(&uid(to), text.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{me}'s message {i} refused: {e}"));
            sent.push(text);
            tokio::time::sleep(BYSTANDER_PACE).await;
        }
        let (got, _events) = receiver.await.unwrap();
        client.close().await;
        (sent, got)
    })
}

/// Connects `user` and waits until it is attached (nothing stored for it).
async fn connected(h: &Harness, edge: SocketAddr, user: &str, device: u64) -> (Client, Events) {
    let (client, mut events) = h.connect(edge, user, device).await;
    assert!(until_synced(&mut events, WAIT).await.messages.is_empty());
    (client, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_code_and_other_clients_keep_chatting() {
    // One misbehaving or malicious client must cost only itself: its bad frames are
    // refused with a code and a reason, and a conversation between two other clients on
    // the same edge carries on, complete and in order, during and after.
    let h = Harness::new();
    let core = h.start_core().await;
    let mut config = h.edge_config(core.local_addr());
    config.send_per_second = RATE;
    config.send_burst = RATE;
    let edge = h.start_edge(config).await;
    let addr = edge.local_addr();

    let carol = connected(&h, addr, "carol", 31).await;
    let dave = connected(&h, addr, "dave", 41).await;
    let carol = bystander(carol, "carol", "dave");
    let dave = bystander(dave, "dave", "carol");

    // Oversized text through the library: refused locally, before it leaves, with the
    // edge's limit (announced in Welcome).
    let (mallory, _mallory_events) = h.connect(addr, "mallory", 66).await;
    let too_long = "x".repeat(TEXT_BYTES_MAX_DEFAULT + 1);
    let err = mallory
        .send(&uid("bob"), too_long.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TextTooLarge), "{err}");
    assert!(matches!(err, SendError::Local(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains(&TEXT_BYTES_MAX_DEFAULT.to_string()),
        "{err}"
    );

    // Oversized text on the wire: the edge rejects that one message, the connection stays.
    let mut raw = RawClient::connect(&h, addr, h.token("mallory"), 67)
        .await
        .unwrap();
    let key = |counter| SenderKey { epoch: 5, counter };
    raw.send("bob", key(1), &too_long).await;
    match raw.next_answer().await {
        ServerFrame::Rejected(r) => {
            assert_eq!((r.key, r.code), (key(1), ErrorCode::TextTooLarge));
            assert!(!r.detail.is_empty());
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    raw.send("bob", key(2), "a normal one after").await;
    assert!(matches!(raw.next_answer().await, ServerFrame::Accepted(a) if a.key == key(2)));

    // Invalid UTF-8 in a Send: a frame no correct client can produce closes the
    // connection as a protocol violation, with a reason.
    let mut raw = RawClient::connect(&h, addr, h.token("mallory"), 68)
        .await
        .unwrap();
    let mut bytes = send_frame_bytes("bob", key(3), "valid text here");
    let at = find_bytes(&bytes, b"valid").unwrap();
    bytes[at] = 0xff;
    raw.write_lane(&bytes).await;
    let (code, reason) = raw.closed().await;
    assert_eq!(code, ErrorCode::ProtocolViolation, "{reason}");
    assert!(
        reason.contains("UTF-8"),
        "the reason names the problem: {reason:?}"
    );

    // Garbage after a lane's kind byte: a length of 3, then bytes that are no frame.
    let mut raw = RawClient::connect(&h, addr, h.token("mallory"), 69)
        .await
        .unwrap();
    raw.write_lane(&[3, 0xff, 0xff, 0xff]).await;
    let (code, reason) = raw.closed().await;
    assert_eq!(code, ErrorCode::ProtocolViolation, "{reason}");
    assert!(!reason.is_empty());

    // A stream that does not even start with a known kind byte.
    let mut raw = RawClient::connect(&h, addr, h.token("mallory"), 70)
        .await
        .unwrap();
    raw.write_new_stream(b"GET / HTTP/1.1\r\n\r\n").await;
    let (code, reason) = raw.closed().await;
    assert_eq!(code, ErrorCode::ProtocolViolation, "{reason}");
    assert!(!reason.is_empty());

    // A flood over the rate limit: the excess is refused with `RateLimited` (each send
    // answered, none silently dropped), and what fits the limit goes through.
    const FLOOD: usize = 3 * RATE as usize;
    let (flooder, _flooder_events) = h.connect(addr, "flooder", 80).await;
    let mut pending = Vec::new();
    for i in 0..FLOOD {
        pending.push(
            flooder
                .queue(&uid("bob"), format!("flood {i}"))
                .await
                .unwrap(),
        );
    }
    let (mut accepted, mut limited) = (0, 0);
    for p in pending {
        match within(WAIT, "the flood's answers", p.accepted()).await {
            Ok(_) => accepted += 1,
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => limited += 1,
            Err(e) => panic!("unexpected answer to a flood message: {e}"),
        }
    }
    assert!(
        limited > 0,
        "a flood of {FLOOD} must meet a limit of {RATE}/s"
    );
    assert!(
        accepted >= RATE as usize,
        "the burst goes through: {accepted}"
    );
    assert_eq!(accepted + limited, FLOOD);

    // The bystanders' conversation was complete and in order throughout.
    for (who, side) in [("carol", carol), ("dave", dave)] {
        let (sent, got) = within(Duration::from_secs(30), "a bystander to finish", side)
            .await
            .unwrap();
        assert_eq!(sent.len(), BYSTANDER_COUNT, "{who} sent everything");
        let other = if who == "carol" { "dave" } else { "carol" };
        let expect: Vec<String> = (0..BYSTANDER_COUNT)
            .map(|i| format!("{other} → {who} {i:02}"))
            .collect();
        assert_in_order_once(&format!("what {who} was shown"), &expect, &got.texts());
    }
    // And after: a fresh round trip on the same edge.
    let (carol2, _carol_events) = h.connect(addr, "carol", 31).await;
    let (_dave2, mut dave_events) = h.connect(addr, "dave", 41).await;
    until_synced(&mut dave_events, WAIT).await;
    within(WAIT, "Accepted", carol2.send(&uid("dave"), "still here"))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut dave_events, WAIT).await.text,
        "still here"
    );
    assert_eq!(edge.stats().slow_consumers, 0);

    mallory.close().await;
    flooder.close().await;
    carol2.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_limit_counts_bytes_and_a_text_at_the_limit_arrives_intact() {
    // The limit protects memory, so it is in bytes, not characters; a text exactly at
    // the limit, full of multi-byte characters, must go through unchanged.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    let at_limit = "é".repeat(TEXT_BYTES_MAX_DEFAULT / 2);
    assert_eq!(at_limit.len(), TEXT_BYTES_MAX_DEFAULT);
    within(WAIT, "Accepted", alice.send(&uid("bob"), at_limit.clone()))
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob_events, WAIT).await.text, at_limit);

    let over = format!("{at_limit}x");
    let err = alice.send(&uid("bob"), over).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TextTooLarge), "{err}");
    let err = alice.send(&uid("bob"), "").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidText), "{err}");

    // The same on the wire, past the library's checks: the edge refuses both.
    let mut raw = RawClient::connect(&h, addr, h.token("alice"), 3)
        .await
        .unwrap();
    let key = |counter| SenderKey { epoch: 6, counter };
    raw.send("bob", key(1), &format!("{at_limit}x")).await;
    raw.send("bob", key(2), "").await;
    for (counter, code) in [(1, ErrorCode::TextTooLarge), (2, ErrorCode::InvalidText)] {
        match raw.next_answer().await {
            ServerFrame::Rejected(r) => assert_eq!((r.key, r.code), (key(counter), code)),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}
