//! End-to-end delivery over real QUIC on loopback with a real redb core: online across
//! edges, offline after reconnect, many senders at once, several devices of one user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use client::Event;
use common::*;

/// The core reports no event when an acknowledgement has been applied (no counter in
/// `CoreStats`), so where a test must know an ack reached the core before it goes on, it
/// gives the ack this long to cross loopback (it takes milliseconds).
const ACK_SETTLE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_message_crosses_from_one_edge_to_another_with_the_verified_sender() {
    // Users of one game meet on different edges: the core must route between them, live.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge1 = h.start_edge(h.edge_config(core.local_addr())).await;
    let edge2 = h.start_edge(h.edge_config(core.local_addr())).await;
    let (alice, mut alice_events) = h.connect(edge1.local_addr(), "alice", 1).await;
    let (bob, mut bob_events) = h.connect(edge2.local_addr(), "bob", 2).await;
    // Both attached at the core: what follows is a live push, not a replay.
    assert!(
        until_synced(&mut alice_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    let accepted = within(WAIT, "Accepted", alice.send(&uid("bob"), "gg, rematch?"))
        .await
        .unwrap();
    let m = next_message(&mut bob_events, WAIT).await;
    assert_eq!(m.text, "gg, rematch?");
    assert_eq!(m.from, uid("alice"));
    assert_eq!(m.from_name, display_name("alice"));
    assert_eq!(m.to, uid("bob"));
    assert_eq!((m.id, m.key), (accepted.id, accepted.key));

    // And back the other way.
    let reply = within(WAIT, "Accepted", bob.send(&uid("alice"), "sure"))
        .await
        .unwrap();
    let m = next_message(&mut alice_events, WAIT).await;
    assert_eq!(
        (m.text.as_str(), m.from.as_str(), m.id),
        ("sure", "bob", reply.id)
    );
    assert!(reply.id > accepted.id, "ids increase in acceptance order");

    alice.close().await;
    bob.close().await;
    edge1.shutdown().await;
    edge2.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_recipient_is_offline_arrive_in_order_when_it_connects() {
    // No push notifications: what was sent while a player was away must wait for them,
    // complete and in order.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let (alice, _alice_events) = h.connect(edge.local_addr(), "alice", 1).await;

    let sent: Vec<String> = (0..50).map(|i| format!("offline {i:02}")).collect();
    let mut pending = Vec::new();
    for text in &sent {
        pending.push(alice.queue(&uid("bob"), text.clone()).await.unwrap());
    }
    for p in pending {
        // Safe means on the core's disk: bob has no device to hand it to.
        within(WAIT, "Accepted", p.accepted()).await.unwrap();
    }

    let (bob, mut bob_events) = h.connect(edge.local_addr(), "bob", 2).await;
    let mut got = collect(&mut bob_events, sent.len(), WAIT).await;
    if !got.synced {
        let rest = until_synced(&mut bob_events, WAIT).await;
        assert!(
            rest.messages.is_empty(),
            "extra messages: {:?}",
            rest.texts()
        );
    }
    assert!(got.messages.iter().all(|m| m.from == uid("alice")));
    got.synced = true;
    assert_in_order_once("bob's replay", &sent, &got.texts());
    let ids: Vec<u64> = got.messages.iter().map(|m| m.id.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_from_five_concurrent_senders_arrive_complete_and_in_order_per_sender()
{
    // A busy lobby: many senders at once to one player. Nothing may be lost, repeated or
    // reordered within a conversation, whatever the interleaving.
    const SENDERS: usize = 5;
    const EACH: usize = 200;
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let (bob, mut bob_events) = h.connect(edge.local_addr(), "bob", 100).await;
    assert!(
        until_synced(&mut bob_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let collector = spawn_collect(bob_events, SENDERS * EACH, Duration::from_secs(60));

    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (client, events) = h
            .connect(edge.local_addr(), &format!("sender{s}"), s as u64)
            .await;
        senders.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..EACH {
                let p = client
                    .queue(&uid("bob"), format!("s{s}-{i:03}"))
                    .await
                    .unwrap();
                pending.push(p);
            }
            let mut accepted = 0;
            for p in pending {
                within(WAIT, "Accepted", p.accepted()).await.unwrap();
                accepted += 1;
            }
            client.close().await;
            drop(events);
            accepted
        }));
    }
    for sender in senders {
        assert_eq!(sender.await.unwrap(), EACH, "every send is accepted");
    }
    let (got, _events) = collector.await.unwrap();
    assert_eq!(got.messages.len(), SENDERS * EACH);
    let by_sender = got.texts_by_sender();
    assert_eq!(by_sender.len(), SENDERS);
    for s in 0..SENDERS {
        let sent: Vec<String> = (0..EACH).map(|i| format!("s{s}-{i:03}")).collect();
        assert_in_order_once(
            &format!("sender{s}"),
            &sent,
            &by_sender[&format!("sender{s}")],
        );
    }

    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_a_user_receives_and_the_stored_copy_goes_only_after_all_acknowledged() {
    // A player with a game and a companion app must get each message on both; the server
    // may delete its copy only once both have it, and must then hold nothing.
    // The two devices sit on different edges: the core sends one copy to each.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let edge2 = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let phone_addr = edge2.local_addr();
    const PHONE: u64 = 21;
    const PC: u64 = 20;

    // The phone has been seen before (so the core knows it), then goes offline.
    let (phone, mut phone_events) = h.connect(phone_addr, "bob", PHONE).await;
    assert!(
        until_synced(&mut phone_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    phone.close().await;
    drop(phone_events);

    let (pc, mut pc_events) = h.connect(addr, "bob", PC).await;
    assert!(until_synced(&mut pc_events, WAIT).await.messages.is_empty());
    let (alice, mut alice_events) = h.connect(addr, "alice", 1).await;
    assert!(
        until_synced(&mut alice_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    let accepted = within(
        WAIT,
        "Accepted",
        alice.send(&uid("bob"), "for both devices"),
    )
    .await
    .unwrap();
    // The PC shows it (and acknowledges on taking it).
    let m = next_message(&mut pc_events, WAIT).await;
    assert_eq!((m.text.as_str(), m.id), ("for both devices", accepted.id));
    tokio::time::sleep(ACK_SETTLE).await;

    // A fresh connection of the PC is not shown it again: its ack counted for the PC.
    let (pc2, mut pc2_events) = h.connect(addr, "bob", PC).await;
    assert_first_after_sync_is_sentinel(&alice, &mut pc2_events, "sentinel 1").await;

    // The phone comes back later and still gets it: the PC's ack did not delete it.
    let (phone2, mut phone2_events) = h.connect(phone_addr, "bob", PHONE).await;
    // It also gets the sentinel sent meanwhile: both devices get everything. Replayed
    // messages may still be arriving after `Synced`, so collect until both are in.
    let mut replay = until_synced(&mut phone2_events, WAIT).await;
    let rest = 2usize.saturating_sub(replay.messages.len());
    replay
        .messages
        .extend(collect(&mut phone2_events, rest, WAIT).await.messages);
    let shown: Vec<(String, u64)> = replay
        .messages
        .iter()
        .map(|m| (m.text.clone(), m.id.0))
        .collect();
    assert_eq!(shown[0], ("for both devices".to_string(), accepted.id.0));
    assert_eq!(shown[1].0, "sentinel 1");
    assert_eq!(shown.len(), 2, "{shown:?}");
    tokio::time::sleep(ACK_SETTLE).await;

    // Both acknowledged: fresh connections of either device get nothing more.
    let (pc3, mut pc3_events) = h.connect(addr, "bob", PC).await;
    let (phone3, mut phone3_events) = h.connect(phone_addr, "bob", PHONE).await;
    assert!(
        until_synced(&mut pc3_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    assert!(
        until_synced(&mut phone3_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let end = within(WAIT, "Accepted", alice.send(&uid("bob"), "sentinel 2"))
        .await
        .unwrap();
    for events in [&mut pc3_events, &mut phone3_events] {
        let m = next_message(events, WAIT).await;
        assert_eq!(
            (m.text.as_str(), m.id),
            ("sentinel 2", end.id),
            "nothing replayed before the sentinel"
        );
    }
    tokio::time::sleep(ACK_SETTLE).await;

    for client in [&alice, &pc, &pc2, &phone2, &pc3, &phone3] {
        client.close().await;
    }
    edge.shutdown().await;
    edge2.shutdown().await;
    core.shutdown().await;
    assert_eq!(
        stored_inbox_len(&h.core_db(), "bob"),
        0,
        "every message acknowledged by every device is deleted from disk"
    );
}

/// Waits for `Synced` on a fresh connection (nothing may be replayed), has alice send
/// `sentinel`, and checks it is the next message shown: anything still stored for the
/// device in that conversation would have been replayed before it, on the same lane.
async fn assert_first_after_sync_is_sentinel(
    alice: &client::Client,
    events: &mut client::Events,
    sentinel: &str,
) {
    let replay = until_synced(events, WAIT).await;
    assert!(replay.messages.is_empty(), "replayed: {:?}", replay.texts());
    within(WAIT, "Accepted", alice.send(&uid("bob"), sentinel))
        .await
        .unwrap();
    let m = next_message(events, WAIT).await;
    assert_eq!(m.text, sentinel, "nothing replayed before the sentinel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_made_just_before_close_is_not_lost() {
    // Regression test for `close()` dropping the last acknowledgement (the connection was
    // closed before the Ack frame was written; fixed by `FrameSender::finish` and taking
    // the acks on shutdown). `quichat listen` acknowledges the last message and exits at
    // once; if that ack is lost, the next run prints the message again. The loss is a race, so the test runs
    // several rounds: each round's fresh connection would replay the previous round's
    // last message before this round's sentinel (same conversation, same lane).
    const ROUNDS: usize = 8;
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (alice, _alice_events) = h.connect(addr, "alice", 1).await;

    let mut shown_again = Vec::new();
    for round in 0..ROUNDS {
        let mut config = h.client_config(addr, "bob", 2);
        config.delivery.auto_ack = false;
        let (bob, mut bob_events) = h.connect_with(config).await;
        let mut shown = until_synced(&mut bob_events, WAIT).await.messages;
        let sentinel = format!("round {round}");
        within(WAIT, "Accepted", alice.send(&uid("bob"), sentinel.clone()))
            .await
            .unwrap();
        while shown.last().is_none_or(|m| m.text != sentinel) {
            shown.push(next_message(&mut bob_events, WAIT).await);
        }
        // Acknowledge everything shown, the sentinel last, and close at once.
        for m in &shown {
            bob.ack(m.id);
        }
        shown_again.extend(shown[..shown.len() - 1].iter().map(|m| m.text.clone()));
        bob.close().await;
    }
    assert!(
        shown_again.is_empty(),
        "acknowledged before close, yet shown again after reconnecting: {shown_again:?}"
    );

    alice.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_and_synced_are_reported_in_order_on_connect() {
    // Games show "online" and "caught up" from these events; Synced must follow Connected.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let (bob, mut events) = h.connect(edge.local_addr(), "bob", 2).await;
    assert!(matches!(
        next_event(&mut events, WAIT).await,
        Event::Connected { .. }
    ));
    assert!(matches!(next_event(&mut events, WAIT).await, Event::Synced));
    bob.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

/// Connects bob's device 7 at `first`, then again at `second`, and checks the takeover.
async fn a_device_connecting_again_replaces_its_old_connection(
    h: &Harness,
    first: SocketAddr,
    second: SocketAddr,
) {
    let (old, mut old_events) = h.connect(first, "bob", 7).await;
    assert!(
        until_synced(&mut old_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let (new, mut new_events) = h.connect(second, "bob", 7).await;
    assert!(
        until_synced(&mut new_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    let code = within(WAIT, "the old connection to be replaced", async {
        loop {
            match old_events.next().await {
                Some(Event::Disconnected { code, .. }) => return code,
                Some(Event::Message(m)) => panic!("the old connection got {m:?}"),
                Some(_) => {}
                None => panic!("events ended without Disconnected"),
            }
        }
    })
    .await;
    assert_eq!(code, Some(client::ErrorCode::SessionReplaced));

    let (alice, _alice_events) = h.connect(first, "alice", 1).await;
    let accepted = within(WAIT, "Accepted", alice.send(&uid("bob"), "to the new one"))
        .await
        .unwrap();
    let m = next_message(&mut new_events, WAIT).await;
    assert_eq!(m.id, accepted.id);
    // The old client stopped: it neither reconnects nor receives.
    assert!(
        old_events.try_next().is_none(),
        "the replaced client must stay stopped"
    );
    alice.close().await;
    old.close().await;
    new.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connecting_again_replaces_its_old_connection_on_the_same_edge() {
    // A game restarted after a crash connects again before the edge noticed the old
    // connection died: the new one takes over (and gets the messages), the old one is
    // told `SessionReplaced` and stops instead of fighting back.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    a_device_connecting_again_replaces_its_old_connection(&h, edge.local_addr(), edge.local_addr())
        .await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connecting_again_through_another_edge_replaces_its_old_connection() {
    // After a network change the game may land on another edge: the core must find and
    // end the old session there.
    let h = Harness::new();
    let core = h.start_core().await;
    let edge1 = h.start_edge(h.edge_config(core.local_addr())).await;
    let edge2 = h.start_edge(h.edge_config(core.local_addr())).await;
    a_device_connecting_again_replaces_its_old_connection(
        &h,
        edge1.local_addr(),
        edge2.local_addr(),
    )
    .await;
    edge1.shutdown().await;
    edge2.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_connecting_at_once_all_get_through() {
    // A match ends and a whole lobby reconnects in the same instant: every client must
    // get in and be reachable, none lost in a race between handshakes and attaches.
    const CLIENTS: usize = 50;
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (hub, mut hub_events) = h.connect(addr, "hub", 1).await;
    assert!(
        until_synced(&mut hub_events, WAIT)
            .await
            .messages
            .is_empty()
    );

    let mut joins = Vec::new();
    for i in 0..CLIENTS {
        let config = h.client_config(addr, &format!("player{i:02}"), 100 + i as u64);
        joins.push(tokio::spawn(async move {
            let (client, mut events) = within(
                Duration::from_secs(30),
                "a lobby client",
                client::Client::connect(config),
            )
            .await
            .unwrap();
            assert!(
                until_synced(&mut events, Duration::from_secs(30))
                    .await
                    .messages
                    .is_empty()
            );
            within(
                Duration::from_secs(30),
                "Accepted",
                client.send(&uid("hub"), format!("ready {i:02}")),
            )
            .await
            .unwrap();
            // The hub answers everyone: each must be reachable.
            let m = next_message(&mut events, Duration::from_secs(30)).await;
            assert_eq!(m.text, format!("go {i:02}"));
            client.close().await;
        }));
    }
    let got = collect(&mut hub_events, CLIENTS, Duration::from_secs(30)).await;
    let mut texts = got.texts();
    texts.sort();
    let expect: Vec<String> = (0..CLIENTS).map(|i| format!("ready {i:02}")).collect();
    assert_eq!(texts, expect);
    for m in &got.messages {
        let i = &m.text["ready ".len()..];
        within(WAIT, "Accepted", hub.send(&m.from, format!("go {i}")))
            .await
            .unwrap();
    }
    for join in joins {
        within(Duration::from_secs(30), "a lobby client to finish", join)
            .await
            .unwrap();
    }
    assert_eq!(edge.stats().clients_total, CLIENTS as u64 + 1);

    hub.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_oneself_reaches_ones_other_device() {
    // "Note to self" from the phone to the PC: the sender's own user is a valid
    // recipient, and its other device must get the message (the sending device too).
    let h = Harness::new();
    let core = h.start_core().await;
    let edge = h.start_edge(h.edge_config(core.local_addr())).await;
    let addr = edge.local_addr();
    let (pc, mut pc_events) = h.connect(addr, "alice", 1).await;
    assert!(until_synced(&mut pc_events, WAIT).await.messages.is_empty());
    let (phone, mut phone_events) = h.connect(addr, "alice", 2).await;
    assert!(
        until_synced(&mut phone_events, WAIT)
            .await
            .messages
            .is_empty()
    );
    let accepted = within(WAIT, "Accepted", phone.send(&uid("alice"), "note to self"))
        .await
        .unwrap();
    for events in [&mut pc_events, &mut phone_events] {
        let m = next_message(events, WAIT).await;
        assert_eq!(
            (m.text.as_str(), m.from.as_str(), m.id),
            ("note to self", "alice", accepted.id)
        );
    }
    pc.close().await;
    phone.close().await;
    edge.shutdown().await;
    core.shutdown().await;
}
