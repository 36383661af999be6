//! The edge's link to the core, against a fake core: reconnect and re-send, a core that
//! is down, back-pressure, and slow consumers.

// Test helpers unwrap: a panic there is a test failure with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use protocol::ErrorCode;
use protocol::frames::client::{Message, ServerFrame};
use protocol::frames::link::CoreFrame;
use protocol::ids::MessageId;

#[tokio::test]
async fn after_a_core_restart_sessions_are_reattached_and_unanswered_messages_resent() {
    // The edge holds messages until the core answers them; a core restart must neither
    // lose them nor re-send what was already accepted, and must keep their order.
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let mut link = core.accept().await;
    let mut alice = TestClient::connect(&env, edge.local_addr(), token("alice", "Alice")).await;
    let session = alice.welcome.session;
    assert_eq!(link.next_attach().await.session, session);

    for n in 1..=3 {
        alice.send("bob", key(n), &format!("m{n}")).await;
    }
    for n in 1..=3 {
        assert_eq!(link.next_submit().await.key, key(n));
    }
    link.send_control(CoreFrame::Accepted {
        session,
        key: key(1),
        id: MessageId(1),
    })
    .await;
    assert!(matches!(alice.next_control().await, ServerFrame::Accepted(a) if a.key == key(1)));

    link.crash();
    // Sent while the core is away: must wait, then follow the older ones.
    alice.send("bob", key(4), "m4").await;
    let mut link = core.accept().await;
    let attach = link.next_attach().await;
    assert_eq!((attach.session, attach.user), (session, uid("alice")));
    let resent: Vec<_> = [
        link.next_submit().await,
        link.next_submit().await,
        link.next_submit().await,
    ]
    .iter()
    .map(|s| s.key.counter)
    .collect();
    assert_eq!(
        resent,
        vec![2, 3, 4],
        "unanswered messages, in order, and only those"
    );

    link.send_control(CoreFrame::Accepted {
        session,
        key: key(2),
        id: MessageId(2),
    })
    .await;
    assert!(matches!(alice.next_control().await, ServerFrame::Accepted(a) if a.key == key(2)));
    assert!(
        alice.conn.close_reason().is_none(),
        "the client never noticed"
    );
    assert_eq!(edge.stats().core_connects, 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn clients_are_served_while_the_core_is_down_and_their_messages_wait_for_it() {
    // Edge::start must not need the core; messages sent meanwhile reach it later.
    let env = TestEnv::new();
    // Reserve the core's port; nothing answers on it until the fake core starts.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let core_addr = socket.local_addr().unwrap();
    let edge = start_edge(env.edge_config(core_addr)).await;
    let alice = TestClient::connect(&env, edge.local_addr(), token("alice", "Alice")).await;
    alice.send("bob", key(1), "anyone?").await;
    assert_eq!(edge.stats().core_links_up, 0);

    let core = FakeCore::on_socket(&env.pki, socket);
    let mut link = core.accept().await;
    assert_eq!(link.next_attach().await.session, alice.welcome.session);
    let submit = link.next_submit().await;
    assert_eq!((submit.key, submit.text.as_str()), (key(1), "anyone?"));
    edge.shutdown().await;
}

#[tokio::test]
async fn a_full_in_flight_window_stops_reading_the_client_until_the_core_answers() {
    // Back-pressure, not rejection: the third message waits for room, then goes.
    let env = TestEnv::new();
    let core = env.fake_core();
    let mut config = env.edge_config(core.addr);
    config.inflight_per_session = 2;
    let edge = start_edge(config).await;
    let mut link = core.accept().await;
    let mut alice = TestClient::connect(&env, edge.local_addr(), token("alice", "Alice")).await;
    let session = alice.welcome.session;
    link.next_attach().await;

    for n in 1..=3 {
        alice.send("bob", key(n), "m").await;
    }
    assert_eq!(link.next_submit().await.key, key(1));
    assert_eq!(link.next_submit().await.key, key(2));
    // Nothing signals "the edge is holding back", so give it a moment to misbehave.
    assert_eq!(link.frame_within(Duration::from_millis(300)).await, None);

    link.send_control(CoreFrame::Accepted {
        session,
        key: key(1),
        id: MessageId(1),
    })
    .await;
    assert_eq!(link.next_submit().await.key, key(3));
    assert!(matches!(alice.next_control().await, ServerFrame::Accepted(a) if a.key == key(1)));
    assert!(alice.conn.close_reason().is_none());
    edge.shutdown().await;
}

#[tokio::test]
async fn a_client_too_slow_for_its_deliveries_is_closed_and_others_are_unaffected() {
    // One slow reader must never stall the core link that carries everyone's traffic.
    let env = TestEnv::new();
    let core = env.fake_core();
    let mut config = env.edge_config(core.addr);
    config.client_queue_frames = 4;
    let edge = start_edge(config).await;
    let link = core.accept().await;
    let addr = edge.local_addr();
    let stalled = ClientOptions {
        open_lanes: true,
        read_lanes: false,
    };
    let slow = TestClient::connect_with(&env, addr, token("bob", "Bob"), 1, stalled).await;
    let mut carol = TestClient::connect(&env, addr, token("carol", "Carol")).await;

    let message = |id: u64, to: &str| Message {
        id: MessageId(id),
        from: uid("alice"),
        from_name: "Alice".into(),
        to: uid(to),
        key: key(id),
        sent_at_ms: 0,
        text: "x".repeat(4000),
    };
    // Far more than the client's flow-control windows and queue can hold.
    let sessions = vec![slow.welcome.session];
    let flood = async {
        for id in 1..=2000 {
            let deliver = CoreFrame::Deliver {
                sessions: sessions.clone(),
                message: message(id, "bob"),
            };
            link.send_lane(deliver).await;
            if slow.conn.close_reason().is_some() {
                break;
            }
        }
    };
    within("the flood to be sent", flood).await;
    let (code, reason) = slow.closed().await;
    assert_eq!(code, ErrorCode::SlowConsumer);
    assert!(reason.contains("slow"), "{reason}");
    assert_eq!(edge.stats().slow_consumers, 1);

    let to_carol = message(5000, "carol");
    link.send_lane(CoreFrame::Deliver {
        sessions: vec![carol.welcome.session],
        message: to_carol.clone(),
    })
    .await;
    assert_eq!(carol.next_delivery().await, to_carol);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_frame_the_core_should_not_send_makes_the_edge_reconnect() {
    // A confused core is not trusted; a fresh connection re-establishes a known state.
    let env = TestEnv::new();
    let core = env.fake_core();
    let edge = start_edge(env.edge_config(core.addr)).await;
    let link = core.accept().await;
    let welcome = protocol::frames::link::CoreWelcome {
        shard: protocol::ids::ShardId(0),
        version: protocol::frames::PROTOCOL_VERSION,
        lanes: 2,
        capabilities: 0,
    };
    link.send_control(CoreFrame::CoreWelcome(welcome)).await;
    let err = within("the edge to close the link", link.conn.closed()).await;
    let (code, _) = transport::close_code(&err).unwrap();
    assert_eq!(code, ErrorCode::ProtocolViolation);
    let again = core.accept().await;
    assert_eq!(again.hello.edge, "test-edge");
    edge.shutdown().await;
}
