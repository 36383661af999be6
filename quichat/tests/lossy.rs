//! Delivery over a bad network: every client reaches the edge through `testkit`'s UDP
//! proxy, which loses, delays, reorders and duplicates datagrams in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use testkit::{LinkConfig, ProxyConfig, UdpProxy};

/// How the players' chat of [`chat_through_proxy`] goes.
struct Chat {
    /// The proxy's shape, both ways, between every client and the edge.
    link: LinkConfig,
    /// Messages to each of the three friends.
    each: usize,
    /// Pause between rounds of sends (one to each friend); none queues everything at once.
    pace: Option<Duration>,
    /// Lane copies at the edge and every client; `None` keeps the defaults.
    copies: Option<client::CopyPolicy>,
}

/// Alice chats with three friends at once, every client reaching the edge through a
/// proxy shaped by `chat.link`; checks that every conversation arrived complete, in order,
/// each message once, and returns what the proxy did.
async fn chat_through_proxy(chat: Chat) -> testkit::ProxyStats {
    const RECIPIENTS: usize = 3;
    let seed = chat.link.seed;
    let h = Harness::new();
    let core = h.start_core().await;
    let mut edge_config = h.edge_config(core.local_addr());
    if let Some(copies) = chat.copies {
        edge_config.lane_copies = copies;
    }
    let edge = h.start_edge(edge_config).await;
    let proxy = UdpProxy::start(ProxyConfig::new(edge.local_addr()).with_links(chat.link))
        .await
        .unwrap();
    let via_proxy = proxy.local_addr();
    let config = |user: &str, device: u64| {
        let mut config = h.client_config(via_proxy, user, device);
        if let Some(copies) = chat.copies {
            config.lane_copies = copies;
        }
        config
    };

    let mut collectors = Vec::new();
    let mut recipients = Vec::new();
    for r in 0..RECIPIENTS {
        let name = format!("friend{r}");
        let (client, mut events) = h.connect_with(config(&name, 10 + r as u64)).await;
        assert!(until_synced(&mut events, WAIT).await.messages.is_empty());
        collectors.push(spawn_collect(events, chat.each, Duration::from_secs(50)));
        recipients.push(client);
    }
    let (alice, _alice_events) = h.connect_with(config("alice", 1)).await;

    // Interleave the conversations, as a player chatting with several friends does.
    let mut sent = vec![Vec::new(); RECIPIENTS];
    let mut pending = Vec::new();
    for i in 0..chat.each {
        for (r, sent) in sent.iter_mut().enumerate() {
            let text = format!("to friend{r}: {i:03}");
            let to = uid(&format!("friend{r}"));
            pending.push(alice.queue(&to, text.clone()).await.unwrap());
            sent.push(text);
        }
        if let Some(pace) = chat.pace {
            tokio::time::sleep(pace).await;
        }
    }
    for p in pending {
        within(
            Duration::from_secs(50),
            "Accepted over the lossy link",
            p.accepted(),
        )
        .await
        .unwrap();
    }
    for (r, collector) in collectors.into_iter().enumerate() {
        let (got, _events) = within(Duration::from_secs(50), "a recipient's messages", collector)
            .await
            .unwrap();
        assert!(got.messages.iter().all(|m| m.from == uid("alice")));
        assert_in_order_once(
            &format!("friend{r} (seed {seed:#x})"),
            &sent[r],
            &got.texts(),
        );
    }
    let stats = proxy.stats();

    alice.close().await;
    for client in recipients {
        client.close().await;
    }
    proxy.shutdown().await;
    edge.shutdown().await;
    core.shutdown().await;
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_lossy_reordering_duplicating_link_every_message_arrives_once_in_order() {
    // Players are on Wi-Fi and mobile networks. Loss, reordering and duplicated packets
    // must cost latency only: each conversation complete, in order, each message once.
    let stats = chat_through_proxy(Chat {
        link: LinkConfig {
            loss: 0.05,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(15),
            reorder: 0.05,
            duplicate: 0.05,
            seed: 0x5eed_0011,
            ..LinkConfig::default()
        },
        each: 100,
        pace: None,
        copies: None,
    })
    .await;
    // The proxy really did its damage, both ways.
    for (direction, link) in [
        ("to the edge", stats.to_upstream),
        ("to the clients", stats.to_client),
    ] {
        assert!(link.dropped() > 0, "nothing lost {direction}: {link:?}");
        assert!(
            link.duplicated > 0,
            "nothing duplicated {direction}: {link:?}"
        );
        assert!(
            link.reordered > 0,
            "nothing reordered {direction}: {link:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lane_copies_both_ways_a_paced_chat_over_a_lossy_link_arrives_once_in_order() {
    // Lane copies send small lane writes twice (stream and datagram), and the proxy also
    // duplicates and reorders datagrams, copies included: whichever copy arrives first,
    // each message must be shown once and each conversation stay in order. Paced like
    // chat, so each lane write is small enough to be copied.
    let stats = chat_through_proxy(Chat {
        link: LinkConfig {
            loss: 0.10,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            reorder: 0.05,
            duplicate: 0.05,
            seed: 0x5eed_0033,
            ..LinkConfig::default()
        },
        each: 60,
        pace: Some(Duration::from_millis(5)),
        copies: Some(client::CopyPolicy::Always),
    })
    .await;
    assert!(stats.to_upstream.dropped() > 0 && stats.to_client.dropped() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_lossy_link_between_edge_and_core_both_directions_stay_complete_and_in_order() {
    // Edges and cores may sit in different data centres: the batched link between them
    // must survive loss, reordering and duplicates too, for traffic both ways.
    const EACH: usize = 150;
    const SEED: u64 = 0x5eed_0022;
    let h = Harness::new();
    let core = h.start_core().await;
    let link = LinkConfig {
        loss: 0.05,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(10),
        reorder: 0.05,
        duplicate: 0.05,
        seed: SEED,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(ProxyConfig::new(core.local_addr()).with_links(link))
        .await
        .unwrap();
    let edge = h.start_edge(h.edge_config(proxy.local_addr())).await;
    let addr = edge.local_addr();
    let (alice, mut alice_events) = h.connect(addr, "alice", 1).await;
    let (bob, mut bob_events) = h.connect(addr, "bob", 2).await;
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
    let to_bob = spawn_collect(bob_events, EACH, Duration::from_secs(50));
    let to_alice = spawn_collect(alice_events, EACH, Duration::from_secs(50));

    let mut pending = Vec::new();
    let (mut sent_to_bob, mut sent_to_alice) = (Vec::new(), Vec::new());
    for i in 0..EACH {
        let text = format!("alice → bob {i:03}");
        pending.push(alice.queue(&uid("bob"), text.clone()).await.unwrap());
        sent_to_bob.push(text);
        let text = format!("bob → alice {i:03}");
        pending.push(bob.queue(&uid("alice"), text.clone()).await.unwrap());
        sent_to_alice.push(text);
    }
    for p in pending {
        within(
            Duration::from_secs(50),
            "Accepted over the lossy core link",
            p.accepted(),
        )
        .await
        .unwrap();
    }
    let (got, _) = within(Duration::from_secs(50), "bob's messages", to_bob)
        .await
        .unwrap();
    assert_in_order_once(
        &format!("to bob (seed {SEED:#x})"),
        &sent_to_bob,
        &got.texts(),
    );
    let (got, _) = within(Duration::from_secs(50), "alice's messages", to_alice)
        .await
        .unwrap();
    assert_in_order_once(
        &format!("to alice (seed {SEED:#x})"),
        &sent_to_alice,
        &got.texts(),
    );
    let stats = proxy.stats();
    assert!(
        stats.to_upstream.dropped() > 0 && stats.to_client.dropped() > 0,
        "{stats:?}"
    );

    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    proxy.shutdown().await;
    core.shutdown().await;
}
