//! Who may connect and who a message is from: tokens the edge must refuse, a sender
//! identity no client can choose, and a duplicate on the wire shown once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use client::{Client, ConnectError, ErrorCode};
use common::*;
use protocol::SenderKey;
use protocol::frames::PROTOCOL_VERSION;
use protocol::frames::client::{ClientFrame, Hello, ServerFrame};

/// Connects with `token` and returns the refusal, failing if the edge let it in.
async fn refused(h: &Harness, edge: SocketAddr, token: String) -> ConnectError {
    let mut config = h.client_config(edge, "alice", 1);
    config.token = token;
    match within(WAIT, "the edge's answer", Client::connect(config)).await {
        Ok(_) => panic!("the edge accepted a token it must refuse"),
        Err(e) => e,
    }
}

/// A JWT signed with `algorithm` and `secret` carrying `claims` (what a backend with the
/// wrong settings, or an attacker holding the secret of another algorithm, would make).
fn jwt(algorithm: jsonwebtoken::Algorithm, secret: &[u8], claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_unsigned_and_wrong_algorithm_tokens_are_refused_with_a_clear_reason() {
    // The token is the only thing standing between a client and any user id: every way
    // of faking one must fail at connect, with a code the game can act on (a fresh token
    // for `TokenExpired`, a bug report for the rest) and a reason a person can read.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let good = serde_json::json!({ "sub": "alice", "name": "Alice", "exp": now_secs() + 3600 });

    let expired = jwt(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &serde_json::json!({ "sub": "alice", "exp": now_secs() - 3600 }),
    );
    let forged = edge_relay::auth::mint_hs256(
        b"not the edge's secret",
        &uid("alice"),
        None,
        Duration::from_secs(3600),
    )
    .unwrap();
    // A real token for mallory with its claims swapped for admin's: the signature no
    // longer matches.
    let mallory = h.token("mallory");
    let parts: Vec<&str> = mallory.split('.').collect();
    let payload = base64url(br#"{"sub":"admin","exp":99999999999}"#);
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let unsigned = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(good.to_string().as_bytes())
    );
    let wrong_algorithm = jwt(jsonwebtoken::Algorithm::HS512, SECRET, &good);
    let no_expiry = jwt(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &serde_json::json!({ "sub": "alice" }),
    );

    let cases = [
        ("expired", expired, ErrorCode::TokenExpired, "expired"),
        ("forged", forged, ErrorCode::Unauthenticated, "signature"),
        (
            "tampered",
            tampered,
            ErrorCode::Unauthenticated,
            "signature",
        ),
        ("alg none", unsigned, ErrorCode::Unauthenticated, "unsigned"),
        (
            "HS512",
            wrong_algorithm,
            ErrorCode::Unauthenticated,
            "algorithm",
        ),
        ("no exp", no_expiry, ErrorCode::Unauthenticated, "exp"),
        (
            "garbage",
            "not a jwt".into(),
            ErrorCode::Unauthenticated,
            "malformed",
        ),
    ];
    for (what, token, code, word) in cases {
        let err = refused(&h, addr, token).await;
        assert_eq!(err.code(), Some(code), "{what}: {err}");
        let ConnectError::Refused { reason, .. } = &err else {
            panic!("{what}: not refused by the edge: {err:?}");
        };
        assert!(
            reason.to_lowercase().contains(word),
            "{what}: the reason should say why ({word}): {reason:?}"
        );
        assert!(
            err.is_permanent(),
            "{what}: retrying the same token cannot help"
        );
    }
    assert_eq!(edge.stats().clients_total, 0, "nobody got in");

    // The same edge lets a good token in.
    let (alice, _events) = h.connect(addr, "alice", 1).await;
    assert_eq!(alice.user(), &uid("alice"));
    alice.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipient_sees_the_token_identity_whatever_the_client_sends() {
    // Impersonation is the classic chat abuse: `from` must be the verified token's `sub`
    // (and its name), never anything a client put on the wire — there is no `from` field
    // to put, and a second Hello with someone else's token must not switch identity.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    // The library: alice's client can only send as alice.
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;
    within(WAIT, "Accepted", alice.send(&uid("bob"), "sent by alice"))
        .await
        .unwrap();

    // A raw connection with mallory's token: whatever it writes is stamped mallory.
    let mut raw = RawClient::connect(&h, addr, h.token("mallory"), 66)
        .await
        .unwrap();
    assert_eq!(raw.welcome.user, uid("mallory"));
    let key = |counter| SenderKey { epoch: 9, counter };
    raw.send("bob", key(1), "sent by mallory").await;
    assert!(matches!(raw.next_answer().await, ServerFrame::Accepted(a) if a.key == key(1)));
    // A second Hello carrying alice's token is a violation, not a change of identity.
    raw.write_control(&ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        token: h.token("alice"),
        device: protocol::DeviceId(1),
        capabilities: 0,
    }))
    .await;
    let (code, reason) = raw.closed().await;
    assert_eq!(code, ErrorCode::HelloExpected, "{reason}");

    // Alice's sentinel comes last on her conversation; by then mallory's is in too
    // (it was accepted first, so bob had it).
    within(WAIT, "Accepted", alice.send(&uid("bob"), "alice again"))
        .await
        .unwrap();
    let got = collect(&mut bob_events, 3, WAIT).await;
    let mut seen: Vec<(String, String, String)> = got
        .messages
        .iter()
        .map(|m| (m.text.clone(), m.from.to_string(), m.from_name.clone()))
        .collect();
    seen.sort();
    let expect = |text: &str, user: &str| (text.to_string(), user.to_string(), display_name(user));
    assert_eq!(
        seen,
        vec![
            expect("alice again", "alice"),
            expect("sent by alice", "alice"),
            expect("sent by mallory", "mallory"),
        ]
    );

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_duplicated_on_the_wire_is_shown_once() {
    // Re-sends after a reconnect put the same message on the wire twice; the recipient
    // library must recognise it by its sender key and show it once. Here the duplicate
    // is made by hand, so it certainly reaches the recipient.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    let mut raw = RawClient::connect(&h, addr, h.token("alice"), 1)
        .await
        .unwrap();
    let key = |counter| SenderKey {
        epoch: 4242,
        counter,
    };
    // Each waits for its answer: the edge folds a re-send into one still in flight (same
    // key), but once answered, a re-send goes through again as a new message (the core
    // does not de-duplicate; recipients do).
    for (counter, text) in [
        (1, "only once"),
        (1, "only once"),
        (2, "after the duplicate"),
    ] {
        raw.send("bob", key(counter), text).await;
        match raw.next_answer().await {
            ServerFrame::Accepted(a) => assert_eq!(a.key, key(counter)),
            other => panic!("expected Accepted, got {other:?}"),
        }
    }

    let first = next_message(&mut bob_events, WAIT).await;
    let second = next_message(&mut bob_events, WAIT).await;
    assert_eq!((first.text.as_str(), first.key), ("only once", key(1)));
    assert_eq!(
        (second.text.as_str(), second.key),
        ("after the duplicate", key(2))
    );
    // All three were handed to bob's connection, the duplicate before the last one on
    // the same lane: bob's library saw it and dropped it.
    assert_eq!(edge.stats().messages_out, 3, "the duplicate reached bob");

    // And it stays dropped: a fresh connection replays nothing (the duplicate was
    // acknowledged too, so the core deleted its copy).
    bob.close().await;
    let (bob2, mut bob2_events) = h.connect(addr, "bob", 2).await;
    raw.send("bob", key(3), "sentinel").await;
    let replay = until_synced(&mut bob2_events, WAIT).await;
    let mut shown = replay.texts();
    if shown.is_empty() {
        shown.push(next_message(&mut bob2_events, WAIT).await.text);
    }
    assert_eq!(shown, vec!["sentinel".to_string()]);

    bob2.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_acknowledge_away_another_users_messages() {
    // Acknowledging deletes the server's copy. Message ids are small increasing numbers,
    // easy to guess: an ack must only ever count for the acknowledging user's own inbox.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;
    let accepted = within(WAIT, "Accepted", alice.send(&uid("bob"), "for bob only"))
        .await
        .unwrap();

    // Mallory acknowledges every id there could be, bob's included.
    let mut raw = RawClient::connect(&h, addr, h.token("mallory"), 66)
        .await
        .unwrap();
    raw.write_control(&ClientFrame::Ack(protocol::frames::client::Ack {
        ranges: vec![protocol::IdRange {
            first: protocol::MessageId(0),
            last: protocol::MessageId(u64::MAX),
        }],
    }))
    .await;
    // There is no event for "ack applied"; mallory's own round trip after it (the ack
    // was on the wire first) gives it the time to reach the core.
    raw.send(
        "alice",
        SenderKey {
            epoch: 1,
            counter: 1,
        },
        "ping",
    )
    .await;
    assert!(matches!(raw.next_answer().await, ServerFrame::Accepted(_)));
    assert!(
        raw.conn.close_reason().is_none(),
        "a well-formed ack is no violation"
    );

    alice.close().await;
    edge.shutdown().await;
    core.shutdown().await;
    // Bob's message is still stored: mallory's ack counted for mallory's inbox only.
    assert_eq!(stored_inbox_len(&h.core_db(), "bob"), 1);
    // And bob gets it, with the id alice was given.
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let (bob, mut bob_events) = h.connect(edge.local_addr(), "bob", 2).await;
    let m = next_message(&mut bob_events, WAIT).await;
    assert_eq!((m.text.as_str(), m.id), ("for bob only", accepted.id));

    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_stops_reconnecting_until_a_new_one_and_nothing_queued_is_lost() {
    // Tokens expire while a game runs. When a reconnect is refused with `TokenExpired`
    // the client must stop hammering the edge, tell the game, and resume with what it
    // had queued as soon as the game hands it a fresh token.
    let h = Harness::new();
    let core = h.start_core().await;
    let config = h.edge_config(core.local_addr());
    let edge = h.start_edge(config.clone()).await;
    let addr = edge.local_addr();
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    // Valid now only thanks to the edge's leeway; expired a couple of seconds from now.
    let leeway = edge_relay::auth::TOKEN_LEEWAY_SECONDS;
    let short_lived = jwt(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &serde_json::json!({ "sub": "alice", "exp": now_secs() + 2 - leeway }),
    );
    let mut alice_config = h.client_config(addr, "alice", 1);
    alice_config.token = short_lived;
    let (alice, mut alice_events) = h.connect_with(alice_config).await;
    assert!(
        until_synced(&mut alice_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    // Time passing is the point here: wait out the token.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The edge restarts; alice's reconnect presents the expired token.
    edge.shutdown().await;
    let mut again = config;
    again.listen = addr;
    let edge = h.start_edge(again).await;
    let code = within(WAIT, "alice to give up on her token", async {
        loop {
            match alice_events.next().await {
                Some(client::Event::Disconnected {
                    code: Some(code), ..
                }) if code != ErrorCode::ServerShutdown => return code,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await;
    assert_eq!(code, ErrorCode::TokenExpired);

    // Sent while stopped: it waits in the outbox.
    let pending = alice
        .queue(&uid("bob"), "sent while stopped")
        .await
        .unwrap();
    alice.set_token(h.token("alice"));
    within(WAIT, "Accepted after the new token", pending.accepted())
        .await
        .unwrap();
    let m = next_message(&mut bob_events, WAIT).await;
    assert_eq!(
        (m.text.as_str(), m.from.as_str()),
        ("sent while stopped", "alice")
    );

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}
