//! The client side of the edge, over loopback QUIC against a fake core: handshake and
//! tokens, stamping, limits, protocol violations, fan-out and answers.

// Test helpers unwrap: a panic there is a test failure with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use edge_relay::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::ErrorCode;
use protocol::frames::client::{Accepted, Ack, ClientFrame, Message, SendMessage, ServerFrame};
use protocol::frames::link::{Attach, CoreFrame, EdgeFrame};
use protocol::ids::{DeviceId, IdRange, MessageId};
use protocol::limits::FRAME_BYTES_MAX;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unpadded base64url, to hand-craft tokens no honest library would mint.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn refused(env: &TestEnv, edge: std::net::SocketAddr, token: String) -> (ErrorCode, String) {
    let (_endpoint, conn) = dial(env, edge).await;
    match hello_raw(&conn, &hello(token, 1)).await {
        Ok(_) => panic!("the edge welcomed a bad token"),
        Err(close) => close,
    }
}

#[tokio::test]
async fn a_client_is_welcomed_with_its_verified_identity_and_attached_at_the_core() {
    // Welcome must carry who the token says and the limits the edge enforces, and the
    // core must learn of the session so it can replay and deliver.
    let env = TestEnv::new();
    let core = env.fake_core();
    let mut config = env.edge_config(core.addr);
    config.text_bytes_max = 1000;
    let edge = start_edge(config).await;
    let mut link = core.accept().await;
    assert_eq!(link.hello.edge, "test-edge");

    let client = TestClient::connect_with(
        &env,
        edge.local_addr(),
        token("alice", "Alice"),
        7,
        ClientOptions::default(),
    )
    .await;
    assert_eq!(client.welcome.user, uid("alice"));
    assert_eq!(client.welcome.name, "Alice");
    assert_eq!(client.welcome.limits.text_bytes_max, 1000);
    assert_eq!(client.welcome.limits.lanes, 4);
    let attach = link.next_attach().await;
    assert_eq!(
        attach,
        Attach {
            session: client.welcome.session,
            user: uid("alice"),
            device: DeviceId(7)
        }
    );
    assert_eq!(edge.stats().clients, 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn expired_forged_unsigned_and_wrong_algorithm_tokens_are_refused_with_their_codes() {
    // Each refusal must carry the right code and a reason a developer can act on.
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let addr = edge.local_addr();

    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "alice", "exp": now_secs() - 60}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let (code, reason) = refused(&env, addr, expired).await;
    assert_eq!(code, ErrorCode::TokenExpired);
    assert!(reason.contains("expired"), "{reason}");

    let forged = edge_relay::auth::mint_hs256(
        b"guessed secret",
        &uid("alice"),
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    let (code, reason) = refused(&env, addr, forged).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(reason.contains("signature"), "{reason}");

    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(r#"{{"sub":"alice","exp":{}}}"#, now_secs() + 60).as_bytes())
    );
    let (code, reason) = refused(&env, addr, unsigned).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(reason.contains("unsigned"), "{reason}");

    let no_exp = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "alice"}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let (code, reason) = refused(&env, addr, no_exp).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(reason.contains("exp"), "{reason}");

    let ed_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let eddsa = edge_relay::auth::mint_eddsa(
        ed_key.serialize_pem().as_bytes(),
        &uid("alice"),
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    let (code, reason) = refused(&env, addr, eddsa.clone()).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(
        reason.contains("EdDSA") && reason.contains("HS256"),
        "{reason}"
    );
    edge.shutdown().await;

    // And the other way round: an EdDSA edge refuses HS256 tokens, even good ones.
    let public = env.dir.path().join("ed-public.pem");
    std::fs::write(&public, ed_key.public_key_pem()).unwrap();
    let mut config = env.edge_config(core.addr);
    config.auth = AuthConfig::EddsaPublicKeyFile(public);
    let edge = start_edge(config).await;
    let (code, reason) = refused(&env, edge.local_addr(), token("alice", "Alice")).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(reason.contains("HS256"), "{reason}");
    let client = TestClient::connect(&env, edge.local_addr(), eddsa).await;
    assert_eq!(client.welcome.user, uid("alice"));
    edge.shutdown().await;
}

#[tokio::test]
async fn the_control_stream_must_start_with_one_hello_of_our_version() {
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let addr = edge.local_addr();

    let (_e, conn) = dial(&env, addr).await;
    let ack = ClientFrame::Ack(Ack { ranges: vec![] });
    let (code, reason) = hello_raw(&conn, &ack).await.map(|_| ()).unwrap_err();
    assert_eq!(code, ErrorCode::HelloExpected);
    assert!(reason.contains("Hello"), "{reason}");

    let (_e, conn) = dial(&env, addr).await;
    let mut old = hello(token("alice", "Alice"), 1);
    if let ClientFrame::Hello(h) = &mut old {
        h.version = 99;
    }
    let (code, reason) = hello_raw(&conn, &old).await.map(|_| ()).unwrap_err();
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    assert!(reason.contains("99"), "{reason}");

    let mut client = TestClient::connect(&env, addr, token("alice", "Alice")).await;
    client
        .send_control(&hello(token("alice", "Alice"), 1))
        .await;
    let (code, _) = client.closed().await;
    assert_eq!(
        code,
        ErrorCode::HelloExpected,
        "a second Hello closes the client"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn the_sender_is_always_the_token_identity() {
    // A client frame has no sender field; the edge stamps the verified one. Whatever
    // mallory's token calls her, her messages come from "mallory".
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let mut link = core.accept().await;
    let mallory = TestClient::connect(&env, edge.local_addr(), token("mallory", "alice")).await;

    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    mallory.send("bob", key(1), "hi, it's alice").await;
    let submit = link.next_submit().await;
    let after_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(submit.from, uid("mallory"));
    assert_eq!(
        submit.from_name, "alice",
        "the display name is the token's, as given"
    );
    assert_eq!(submit.session, mallory.welcome.session);
    assert_eq!(
        (submit.to, submit.key, submit.text.as_str()),
        (uid("bob"), key(1), "hi, it's alice")
    );
    assert!(
        before_ms <= submit.sent_at_ms && submit.sent_at_ms <= after_ms,
        "edge clock"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn oversized_and_empty_texts_are_rejected_and_the_connection_stays_up() {
    let env = TestEnv::new();
    let core = env.fake_core();
    let mut config = env.edge_config(core.addr);
    config.text_bytes_max = 16;
    let edge = start_edge(config).await;
    let mut link = core.accept().await;
    let mut alice = TestClient::connect(&env, edge.local_addr(), token("alice", "Alice")).await;

    alice.send("bob", key(1), &"x".repeat(17)).await;
    let ServerFrame::Rejected(rejected) = alice.next_control().await else {
        panic!()
    };
    assert_eq!(
        (rejected.key, rejected.code),
        (key(1), ErrorCode::TextTooLarge)
    );
    assert!(rejected.detail.contains("16"), "{}", rejected.detail);

    alice.send("bob", key(2), "").await;
    let ServerFrame::Rejected(rejected) = alice.next_control().await else {
        panic!()
    };
    assert_eq!(
        (rejected.key, rejected.code),
        (key(2), ErrorCode::InvalidText)
    );

    // Still connected, and the refused messages never reached the core.
    alice.send("bob", key(3), &"x".repeat(16)).await;
    assert_eq!(link.next_submit().await.key, key(3));
    assert_eq!(edge.stats().rejected, 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_per_user_across_devices_while_others_keep_sending() {
    // The budget belongs to the user, so a second device does not double it, and one
    // user's flood costs nobody else anything.
    let env = TestEnv::new();
    let core = env.fake_core();
    let mut config = env.edge_config(core.addr);
    config.send_per_second = 1;
    config.send_burst = 3;
    let edge = start_edge(config).await;
    let mut link = core.accept().await;
    let addr = edge.local_addr();
    let opts = ClientOptions::default();
    let mut phone = TestClient::connect_with(&env, addr, token("alice", "A"), 1, opts).await;
    let mut laptop = TestClient::connect_with(&env, addr, token("alice", "A"), 2, opts).await;
    let mut bob = TestClient::connect(&env, addr, token("bob", "Bob")).await;

    let started = std::time::Instant::now();
    for n in 1..=10 {
        phone.send("carol", key(n), "spam").await;
        laptop.send("carol", key(100 + n), "spam").await;
    }
    for n in 1..=3 {
        bob.send("carol", key(n), "hello").await;
    }

    // Every message gets exactly one answer: Accepted (the core took it) or RateLimited.
    async fn answers(client: &mut TestClient, count: usize) -> (usize, usize) {
        let (mut accepted, mut limited) = (0, 0);
        for _ in 0..count {
            match client.next_control().await {
                ServerFrame::Accepted(_) => accepted += 1,
                ServerFrame::Rejected(r) if r.code == ErrorCode::RateLimited => limited += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        (accepted, limited)
    }
    let clients = async {
        tokio::join!(
            answers(&mut phone, 10),
            answers(&mut laptop, 10),
            answers(&mut bob, 3)
        )
    };
    let core_accepts_everything = async {
        for id in 1.. {
            let submit = link.next_submit().await;
            let accepted = CoreFrame::Accepted {
                session: submit.session,
                key: submit.key,
                id: MessageId(id),
            };
            link.send_control(accepted).await;
        }
    };
    let (phone, laptop, bob) = tokio::select! {
        answers = clients => answers,
        () = core_accepts_everything => unreachable!(),
    };
    // GCRA allows the burst plus one message per elapsed second, for both devices
    // together. (An upper bound that only grows on a slow machine: not a speed test.)
    let allowance = 3 + started.elapsed().as_secs() + 1;
    let alice_accepted = (phone.0 + laptop.0) as u64;
    assert!(
        alice_accepted >= 3,
        "alice's burst got through: {phone:?} {laptop:?}"
    );
    assert!(
        alice_accepted <= allowance,
        "one budget for both devices: {phone:?} {laptop:?}"
    );
    assert!(phone.1 + laptop.1 > 0);
    assert_eq!(bob, (3, 0), "bob is not limited by alice's flood");
    edge.shutdown().await;
}

#[tokio::test]
async fn malformed_bytes_on_a_lane_close_only_that_client_with_a_clear_reason() {
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let mut link = core.accept().await;
    let addr = edge.local_addr();
    let bob = TestClient::connect(&env, addr, token("bob", "Bob")).await;

    // A valid Send whose text bytes are then made invalid UTF-8.
    let valid = protocol::codec::encode_to_vec(&ClientFrame::Send(SendMessage {
        to: uid("carol"),
        key: key(1),
        text: "hello".into(),
    }))
    .unwrap();
    let at = valid.windows(5).position(|w| w == b"hello").unwrap();
    let mut invalid_utf8 = valid.clone();
    invalid_utf8[at] = 0xff;
    let oversized = {
        // A length prefix just over the limit: refused before the body arrives.
        let mut len = FRAME_BYTES_MAX + 1;
        let mut bytes = Vec::new();
        while len >= 0x80 {
            bytes.push((len as u8) | 0x80);
            len >>= 7;
        }
        bytes.push(len as u8);
        bytes
    };
    let cases: [(&str, Vec<u8>, ErrorCode, &str); 4] = [
        (
            "garbage",
            vec![1, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
            ErrorCode::ProtocolViolation,
            "lane",
        ),
        (
            "invalid UTF-8",
            [&[1u8][..], &invalid_utf8].concat(),
            ErrorCode::ProtocolViolation,
            "UTF-8",
        ),
        (
            "oversized frame",
            [&[1u8][..], &oversized].concat(),
            ErrorCode::FrameTooLarge,
            "limit",
        ),
        (
            "wrong stream kind",
            vec![7, 0, 0],
            ErrorCode::ProtocolViolation,
            "kind",
        ),
    ];
    for (what, bytes, expected, mention) in cases {
        let opts = ClientOptions {
            open_lanes: false,
            read_lanes: true,
        };
        let client = TestClient::connect_with(&env, addr, token("eve", "Eve"), 1, opts).await;
        let _stream = client.write_raw_stream(&bytes).await;
        let (code, reason) = client.closed().await;
        assert_eq!(code, expected, "{what}: {reason}");
        assert!(
            reason.contains(mention),
            "{what}: the reason says what was wrong: {reason}"
        );
    }

    // Bob never noticed.
    assert!(bob.conn.close_reason().is_none());
    bob.send("carol", key(1), "still here").await;
    let submit = link.next_submit().await;
    assert_eq!(
        (submit.from, submit.text.as_str()),
        (uid("bob"), "still here")
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn deliveries_fan_out_to_each_listed_session_and_answers_reach_the_sender() {
    // One copy from the core reaches every device of the recipient; Accepted, Rejected
    // and Synced go to the session they name, on its control stream.
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let mut link = core.accept().await;
    let addr = edge.local_addr();
    let opts = ClientOptions::default();
    let mut alice = TestClient::connect(&env, addr, token("alice", "Alice")).await;
    let mut bob_phone = TestClient::connect_with(&env, addr, token("bob", "Bob"), 1, opts).await;
    let mut bob_pc = TestClient::connect_with(&env, addr, token("bob", "Bob"), 2, opts).await;

    alice.send("bob", key(1), "gg").await;
    let submit = link.next_submit().await;
    let message = Message {
        id: MessageId(42),
        from: submit.from.clone(),
        from_name: submit.from_name.clone(),
        to: submit.to.clone(),
        key: submit.key,
        sent_at_ms: submit.sent_at_ms,
        text: submit.text.clone(),
    };
    let sessions = vec![bob_phone.welcome.session, bob_pc.welcome.session];
    link.send_lane(CoreFrame::Deliver {
        sessions,
        message: message.clone(),
    })
    .await;
    link.send_control(CoreFrame::Accepted {
        session: submit.session,
        key: key(1),
        id: MessageId(42),
    })
    .await;
    assert_eq!(bob_phone.next_delivery().await, message);
    assert_eq!(bob_pc.next_delivery().await, message);
    assert_eq!(
        alice.next_control().await,
        ServerFrame::Accepted(Accepted {
            key: key(1),
            id: MessageId(42)
        })
    );

    alice.send("bob", key(2), "are you there?").await;
    let submit = link.next_submit().await;
    link.send_control(CoreFrame::Rejected {
        session: submit.session,
        key: key(2),
        code: ErrorCode::InboxFull,
    })
    .await;
    let ServerFrame::Rejected(rejected) = alice.next_control().await else {
        panic!()
    };
    assert_eq!(
        (rejected.key, rejected.code),
        (key(2), ErrorCode::InboxFull)
    );

    link.send_control(CoreFrame::Synced {
        session: bob_pc.welcome.session,
    })
    .await;
    assert_eq!(bob_pc.next_control().await, ServerFrame::Synced);

    let stats = edge.stats();
    assert_eq!((stats.messages_in, stats.messages_out), (2, 2));
    assert_eq!(stats.core_links_up, 1);
    assert!(
        stats.frames_to_core >= 5 && stats.bytes_to_core > 0,
        "{stats:?}"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn acks_reach_the_core_and_a_disconnect_detaches_the_session() {
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let mut link = core.accept().await;
    let mut bob = TestClient::connect(&env, edge.local_addr(), token("bob", "Bob")).await;
    let session = bob.welcome.session;

    let ranges = vec![IdRange {
        first: MessageId(1),
        last: MessageId(3),
    }];
    bob.send_control(&ClientFrame::Ack(Ack {
        ranges: ranges.clone(),
    }))
    .await;
    let ack = link
        .next_matching(|f| matches!(f, EdgeFrame::Ack { .. }).then_some(f))
        .await;
    assert_eq!(ack, EdgeFrame::Ack { session, ranges });

    bob.conn.close(quinn::VarInt::from_u32(0), b"bye");
    let detached = link
        .next_matching(|f| match f {
            EdgeFrame::Detach { session } => Some(session),
            _ => None,
        })
        .await;
    assert_eq!(detached, session);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_kick_from_the_core_closes_the_client_with_its_code() {
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let mut link = core.accept().await;
    let bob = TestClient::connect(&env, edge.local_addr(), token("bob", "Bob")).await;
    let session = bob.welcome.session;
    link.next_attach().await;

    link.send_control(CoreFrame::Kick {
        session,
        code: ErrorCode::SessionReplaced,
    })
    .await;
    let (code, _) = bob.closed().await;
    assert_eq!(code, ErrorCode::SessionReplaced);
    let detached = link
        .next_matching(|f| match f {
            EdgeFrame::Detach { session } => Some(session),
            _ => None,
        })
        .await;
    assert_eq!(detached, session);
    edge.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let env = TestEnv::new();
    let core = env.fake_core();
    let mut config = env.edge_config(core.addr);
    config.max_connections = 1;
    let edge = start_edge(config).await;
    let _alice = TestClient::connect(&env, edge.local_addr(), token("alice", "Alice")).await;

    let (_endpoint, second) = try_dial(&env, edge.local_addr()).await;
    assert!(second.is_err(), "the second connection must be refused");
    assert_eq!(edge.stats().refused, 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_server_shutdown() {
    // Clients must learn to reconnect elsewhere rather than wait for a timeout.
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let alice = TestClient::connect(&env, edge.local_addr(), token("alice", "Alice")).await;
    edge.shutdown().await;
    let (code, _) = alice.closed().await;
    assert_eq!(code, ErrorCode::ServerShutdown);
}
