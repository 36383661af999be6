//! Bounded queues end to end: a recipient that stops reading is disconnected as a slow
//! consumer and loses nothing; a full inbox refuses new messages and tells the sender.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use client::ErrorCode;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_that_stops_reading_loses_nothing_and_sees_each_message_once() {
    // A game that hitches (loading screen, breakpoint) stops draining its events. The
    // edge must not buffer without end: it drops the client as a slow consumer, and the
    // client, once it reads again, gets everything from the store, in order, once.
    const COUNT: usize = 1000;
    let h = Harness::new();
    // A per-client queue the backlog overflows (the default, 2048 per lane, would hold
    // all of it), with the core's replay window below it, as documented.
    let mut core_config = h.core_config();
    core_config.replay_window = 32;
    let core = within(WAIT, "the core", server::Core::start(core_config))
        .await
        .unwrap();
    let mut edge_config = h.edge_config(core.local_addr());
    edge_config.client_queue_frames = 64;
    let edge = h.start_edge(edge_config).await;
    let addr = edge.local_addr();

    let mut bob_config = h.client_config(addr, "bob", 2);
    bob_config.event_queue = 4;
    let (bob, mut bob_events) = h.connect_with(bob_config).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;

    // Big enough texts that the client's QUIC windows fill and push back to the edge.
    let filler = "z".repeat(3000);
    let sent: Vec<String> = (0..COUNT).map(|i| format!("{i:04} {filler}")).collect();
    let mut pending = Vec::new();
    for text in &sent {
        pending.push(alice.queue(&uid("bob"), text.clone()).await.unwrap());
    }
    // Bob is not reading: each message is safe because the core committed it.
    for p in pending {
        within(Duration::from_secs(30), "Accepted", p.accepted())
            .await
            .unwrap();
    }
    assert!(
        edge.stats().slow_consumers >= 1,
        "a recipient this far behind is disconnected, not buffered for: {:?}",
        edge.stats()
    );

    let got = collect(&mut bob_events, COUNT, Duration::from_secs(60)).await;
    assert_in_order_once("bob after stalling", &sent, &got.texts());

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_refuses_new_messages_with_inbox_full_until_the_recipient_reads() {
    // A player away for weeks must not cost unbounded disk; the sender is told
    // `InboxFull` instead of the message vanishing, and it clears once they read.
    const INBOX: u64 = 5;
    let h = Harness::new();
    let mut core_config = h.core_config();
    core_config.inbox_max = INBOX;
    let core = within(WAIT, "the core", server::Core::start(core_config))
        .await
        .unwrap();
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;

    for i in 0..INBOX {
        within(
            WAIT,
            "Accepted",
            alice.send(&uid("bob"), format!("fits {i}")),
        )
        .await
        .unwrap();
    }
    let err = within(WAIT, "the answer", alice.send(&uid("bob"), "one too many"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InboxFull), "{err}");

    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    let got = collect(&mut bob_events, INBOX as usize, WAIT).await;
    let expect: Vec<String> = (0..INBOX).map(|i| format!("fits {i}")).collect();
    assert_in_order_once("bob's inbox", &expect, &got.texts());
    // Once read (and acknowledged), there is room again: the next send goes through
    // and is shown, and the refused one never is.
    let accepted = within(
        Duration::from_secs(30),
        "Accepted once there is room",
        async {
            loop {
                match alice.send(&uid("bob"), "room again").await {
                    Ok(a) => return a,
                    // The acknowledgements may still be on their way to the core.
                    Err(e) if e.code() == Some(ErrorCode::InboxFull) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
        },
    )
    .await;
    let m = next_message(&mut bob_events, WAIT).await;
    assert_eq!((m.text.as_str(), m.id), ("room again", accepted.id));

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_with_a_big_backlog_catches_up_on_connect() {
    // A player back from a long absence has a big backlog: the replay must get it all to
    // them (the edge may drop them as slow consumers on the way; they come back and
    // resume), in order, once.
    const COUNT: usize = 1500;
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;
    let filler = "z".repeat(3000);
    let sent: Vec<String> = (0..COUNT).map(|i| format!("{i:04} {filler}")).collect();
    let mut pending = Vec::new();
    for text in &sent {
        pending.push(alice.queue(&uid("bob"), text.clone()).await.unwrap());
        if pending.len() == 1000 {
            for p in pending.drain(..) {
                within(Duration::from_secs(30), "Accepted", p.accepted())
                    .await
                    .unwrap();
            }
        }
    }
    for p in pending {
        within(Duration::from_secs(30), "Accepted", p.accepted())
            .await
            .unwrap();
    }
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    let got = collect(&mut bob_events, COUNT, Duration::from_secs(60)).await;
    assert_in_order_once("bob's backlog", &sent, &got.texts());
    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlogged_recipient_catches_up_even_with_a_small_client_queue() {
    // `client_queue_frames` is a memory knob. Replay is flow-controlled by the core's
    // window of unacknowledged messages, so with the window below the edge's queue a
    // client that reads as fast as it can catches up on its backlog without being
    // dropped as a slow consumer. (Before the window, the core sent replay pages in
    // bursts the edge had to drop the client for, and it never caught up.)
    const COUNT: usize = 400;
    let h = Harness::new();
    let core = within(
        Duration::from_secs(10),
        "the core to start",
        server::Core::start(server::CoreConfig {
            replay_window: 4,
            ..h.core_config()
        }),
    )
    .await
    .unwrap();
    let mut config = h.edge_config(core.local_addr());
    config.client_queue_frames = 8;
    let edge = h.start_edge(config).await;
    let addr = edge.local_addr();
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;
    let filler = "z".repeat(3000);
    let sent: Vec<String> = (0..COUNT).map(|i| format!("{i:04} {filler}")).collect();
    let mut pending = Vec::new();
    for text in &sent {
        pending.push(alice.queue(&uid("bob"), text.clone()).await.unwrap());
    }
    for p in pending {
        within(Duration::from_secs(30), "Accepted", p.accepted())
            .await
            .unwrap();
    }
    // Bob drains as fast as he can from the first moment.
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    let got = collect(&mut bob_events, COUNT, Duration::from_secs(30)).await;
    assert_in_order_once("bob's backlog", &sent, &got.texts());
    assert_eq!(
        edge.stats().slow_consumers,
        0,
        "bob was dropped as a slow consumer"
    );

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}
