//! Crashes and restarts mid-conversation: a core killed with SIGKILL, an edge dropped or
//! shut down. Nothing `Accepted` may be lost, and the game sees every message once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use client::{Accepted, Client, SendError};
use common::*;
use tokio::task::JoinHandle;

/// Queues `count` messages from `client` to `to`, one every `pace`, and awaits each answer
/// in its own task (so answers are counted as they come, in `accepted`). Resolves to the
/// texts and their answers, in sending order.
fn send_stream(
    client: Client,
    to: &str,
    count: usize,
    pace: Duration,
    accepted: Arc<AtomicUsize>,
) -> JoinHandle<Vec<(String, Result<Accepted, SendError>)>> {
    let to = uid(to);
    tokio::spawn(async move {
        let mut answers = Vec::new();
        for i in 0..count {
            let text = format!("{} {i:04}", client.user());
            let pending = client.queue(&to, text.clone()).await.unwrap();
            let accepted = accepted.clone();
            answers.push((
                text,
                tokio::spawn(async move {
                    let answer = pending.accepted().await;
                    if answer.is_ok() {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    answer
                }),
            ));
            tokio::time::sleep(pace).await;
        }
        let mut out = Vec::new();
        for (text, answer) in answers {
            out.push((text, answer.await.unwrap()));
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_killed_mid_stream_and_restarted_loses_no_accepted_message() {
    // The core's promise: `Accepted` means on disk or in the recipient's hands. A power
    // cut (SIGKILL: no shutdown, no final commit) must not break it, and what was not yet
    // accepted must be re-sent by the sender's outbox and shown once.
    const COUNT: usize = 300;
    let h = Harness::new();
    let mut core = h.spawn_core("127.0.0.1:0".parse().unwrap()).await;
    let core_addr = core.addr;
    let edge = h.start_edge(h.edge_config(core_addr)).await;
    let (bob, mut bob_events) = h.connect(edge.local_addr(), "bob", 2).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let collector = spawn_collect(bob_events, 2 * COUNT, Duration::from_secs(60));
    let (alice, _alice_events) = h.connect(edge.local_addr(), "alice", 1).await;
    let (carol, _carol_events) = h.connect(edge.local_addr(), "carol", 3).await;

    let accepted = Arc::new(AtomicUsize::new(0));
    let pace = Duration::from_millis(3);
    let alice_sends = send_stream(alice.clone(), "bob", COUNT, pace, accepted.clone());
    let carol_sends = send_stream(carol.clone(), "bob", COUNT, pace, accepted.clone());

    // Kill the core mid-stream, once a third has been accepted.
    eventually(WAIT, "a third of the messages accepted", || {
        (accepted.load(Ordering::SeqCst) >= 2 * COUNT / 3).then_some(())
    })
    .await;
    core.kill().await;
    let accepted_before_kill = accepted.load(Ordering::SeqCst);
    let _restarted = h.spawn_core(core_addr).await;

    // The edge notices the dead link (idle timeout), reconnects to the new core and
    // re-sends what was not answered; every message ends up accepted.
    let mut sent = Vec::new();
    for sends in [alice_sends, carol_sends] {
        let answers = within(Duration::from_secs(60), "every answer", sends)
            .await
            .unwrap();
        for (text, answer) in answers {
            let accepted = answer.unwrap_or_else(|e| panic!("{text} not accepted: {e}"));
            assert!(accepted.id.0 > 0);
            sent.push(text);
        }
    }
    assert!(
        accepted_before_kill < 2 * COUNT,
        "the kill came after everything was accepted; it proved nothing"
    );

    let (got, _bob_events) = within(Duration::from_secs(60), "bob's messages", collector)
        .await
        .unwrap();
    assert!(
        edge.stats().core_connects >= 2,
        "the edge reconnected to the new core"
    );
    let by_sender = got.texts_by_sender();
    for (sender, sends) in [("alice", &sent[..COUNT]), ("carol", &sent[COUNT..])] {
        assert_in_order_once(sender, sends, &by_sender[sender]);
    }
    eprintln!(
        "core kill: {accepted_before_kill} of {} accepted before the kill, the rest after the restart; bob reconnected {} times",
        2 * COUNT,
        got.reconnects
    );

    alice.close().await;
    carol.close().await;
    bob.close().await;
    edge.shutdown().await;
}

/// How an edge goes away in [`an_edge_restarted_mid_conversation_loses_nothing`].
#[derive(Clone, Copy, Debug)]
enum EdgeStop {
    /// `EdgeHandle` dropped: tasks aborted, no goodbye.
    Drop,
    /// `EdgeHandle::shutdown`: clients told `ServerShutdown`.
    Shutdown,
}

async fn an_edge_restarted_mid_conversation_loses_nothing(stop: EdgeStop) {
    const COUNT: usize = 200;
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
    let collector = spawn_collect(bob_events, COUNT, Duration::from_secs(60));
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;

    let accepted = Arc::new(AtomicUsize::new(0));
    let sends = send_stream(
        alice.clone(),
        "bob",
        COUNT,
        Duration::from_millis(3),
        accepted.clone(),
    );
    eventually(WAIT, "a quarter of the messages accepted", || {
        (accepted.load(Ordering::SeqCst) >= COUNT / 4).then_some(())
    })
    .await;
    match stop {
        EdgeStop::Drop => drop(edge),
        EdgeStop::Shutdown => edge.shutdown().await,
    }
    let accepted_before = accepted.load(Ordering::SeqCst);
    // The same port: clients reconnect to the address they know.
    let mut again = config.clone();
    again.listen = addr;
    let edge = h.start_edge(again).await;

    let answers = within(Duration::from_secs(60), "every answer", sends)
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (text, answer) in answers {
        answer.unwrap_or_else(|e| panic!("{text} not accepted: {e}"));
        sent.push(text);
    }
    assert!(
        accepted_before < COUNT,
        "the restart came too late to prove anything"
    );
    let (got, _bob_events) = within(Duration::from_secs(60), "bob's messages", collector)
        .await
        .unwrap();
    assert_in_order_once("alice → bob", &sent, &got.texts());
    assert!(got.reconnects >= 1, "bob reconnected by himself");

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_dropped_mid_conversation_and_restarted_loses_nothing() {
    // Edges hold no durable state: an edge that dies abruptly costs its clients a
    // reconnect, never a message, a duplicate or a reordering.
    an_edge_restarted_mid_conversation_loses_nothing(EdgeStop::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_shut_down_mid_conversation_and_restarted_loses_nothing() {
    // A rolling deploy: the edge says `ServerShutdown`, clients come back to the new one
    // and carry on where they were.
    an_edge_restarted_mid_conversation_loses_nothing(EdgeStop::Shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_killed_during_a_replay_replays_again_and_the_recipient_sees_each_message_once() {
    // A player is catching up on a backlog when the core dies. After the restart the
    // replay starts over from what was not acknowledged; the library must hide what it
    // already showed, and nothing may be skipped.
    const COUNT: usize = 600;
    let h = Harness::new();
    let mut core = h.spawn_core("127.0.0.1:0".parse().unwrap()).await;
    let core_addr = core.addr;
    let edge = h.start_edge(h.edge_config(core_addr)).await;
    let (alice, _alice_events) = h.connect(edge.local_addr(), "alice", 1).await;
    let sent: Vec<String> = (0..COUNT).map(|i| format!("backlog {i:04}")).collect();
    let mut pending = Vec::new();
    for text in &sent {
        pending.push(alice.queue(&uid("bob"), text.clone()).await.unwrap());
    }
    for p in pending {
        within(WAIT, "Accepted", p.accepted()).await.unwrap();
    }

    let mut bob_config = h.client_config(edge.local_addr(), "bob", 2);
    bob_config.event_queue = 8;
    let (bob, mut bob_events) = h.connect_with(bob_config).await;
    let mut got = collect(&mut bob_events, COUNT / 3, WAIT).await;
    core.kill().await;
    let _restarted = h.spawn_core(core_addr).await;
    let rest = collect(
        &mut bob_events,
        COUNT - got.messages.len(),
        Duration::from_secs(60),
    )
    .await;
    got.messages.extend(rest.messages);
    assert_in_order_once("bob's backlog across a core crash", &sent, &got.texts());

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_shut_down_and_restarted_in_place_keeps_every_conversation_going() {
    // A planned core restart (upgrade): edges and clients ride through it; messages sent
    // during the gap wait in outboxes and edges, then arrive in order, once.
    const COUNT: usize = 200;
    let h = Harness::new();
    let core = h.start_core().await;
    let core_addr = core.local_addr();
    let edge = h.start_edge(h.edge_config(core_addr)).await;
    let addr = edge.local_addr();
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let collector = spawn_collect(bob_events, COUNT, Duration::from_secs(60));
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;

    let accepted = Arc::new(AtomicUsize::new(0));
    let sends = send_stream(
        alice.clone(),
        "bob",
        COUNT,
        Duration::from_millis(3),
        accepted.clone(),
    );
    eventually(WAIT, "a quarter accepted", || {
        (accepted.load(Ordering::SeqCst) >= COUNT / 4).then_some(())
    })
    .await;
    core.shutdown().await;
    let mut config = h.core_config();
    config.listen = core_addr;
    let core = within(WAIT, "the core to restart", server::Core::start(config))
        .await
        .unwrap();

    let answers = within(Duration::from_secs(60), "every answer", sends)
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (text, answer) in answers {
        answer.unwrap_or_else(|e| panic!("{text} not accepted: {e}"));
        sent.push(text);
    }
    let (got, _events) = within(Duration::from_secs(60), "bob's messages", collector)
        .await
        .unwrap();
    assert_in_order_once("alice → bob across a core restart", &sent, &got.texts());

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}
