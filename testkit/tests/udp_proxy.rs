//! The proxy end to end, over real UDP on loopback: a client socket, the proxy, and a tiny
//! echo server that records who it heard from.

// Helpers below are test code too; a failed unwrap is a test failure with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{Direction, LinkConfig, ProxyConfig, ProxyStats, UdpProxy};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How long any single wait may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// Echoes every datagram back to its sender.
struct EchoServer {
    addr: SocketAddr,
    /// Every source address it heard from.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Datagrams it received.
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl EchoServer {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let received = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (peers, received) = (peers.clone(), received.clone());
            async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let (len, from) = socket.recv_from(&mut buf).await.unwrap();
                    peers.lock().unwrap().insert(from);
                    received.fetch_add(1, Ordering::SeqCst);
                    socket.send_to(&buf[..len], from).await.unwrap();
                }
            }
        });
        Self {
            addr,
            peers,
            received,
            task,
        }
    }

    fn peer_count(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_proxy(server: &EchoServer, to_upstream: LinkConfig) -> UdpProxy {
    UdpProxy::start(ProxyConfig {
        to_upstream,
        ..ProxyConfig::new(server.addr)
    })
    .await
    .unwrap()
}

async fn client_of(proxy: &UdpProxy) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(proxy.local_addr()).await.unwrap();
    socket
}

async fn send_seq(socket: &UdpSocket, seq: u32) {
    socket.send(&seq.to_be_bytes()).await.unwrap();
}

/// Receives exactly `count` datagrams carrying sequence numbers, in arrival order.
async fn recv_seqs(socket: &UdpSocket, count: usize) -> Vec<u32> {
    let mut seqs = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for _ in 0..count {
        let len = timeout(WAIT, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} datagrams arrived", seqs.len()))
            .unwrap();
        seqs.push(u32::from_be_bytes(buf[..len].try_into().unwrap()));
    }
    seqs
}

/// Polls the proxy's counters until `done` holds. The counters are the proxy's own report
/// that it has handled a datagram; polling them is waiting for that event, bounded by `WAIT`.
async fn wait_for_stats(proxy: &UdpProxy, done: impl Fn(&ProxyStats) -> bool) -> ProxyStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = proxy.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "proxy never got there: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends `count` numbered datagrams in batches and returns the echoes in arrival order.
/// After each batch it waits until the proxy has decided every datagram and every survivor
/// has come back, so kernel buffers never overflow and any loss is the proxy's doing.
async fn echo_batches(proxy: &UdpProxy, client: &UdpSocket, count: u32, batch: u32) -> Vec<u32> {
    let mut echoes = Vec::new();
    let mut sent = 0u64;
    for start in (0..count).step_by(batch as usize) {
        for seq in start..(start + batch).min(count) {
            send_seq(client, seq).await;
            sent += 1;
        }
        let stats = wait_for_stats(proxy, |s| {
            let up = &s.to_upstream;
            up.received == sent && up.forwarded + up.dropped() == sent + up.duplicated
        })
        .await;
        let expected = usize::try_from(stats.to_upstream.forwarded).unwrap() - echoes.len();
        echoes.extend(recv_seqs(client, expected).await);
    }
    echoes
}

#[tokio::test]
async fn a_perfect_proxy_delivers_everything_once_and_in_order() {
    // The baseline every impaired run is compared with: the proxy itself adds nothing.
    let server = EchoServer::start().await;
    let proxy = start_proxy(&server, LinkConfig::default()).await;
    let client = client_of(&proxy).await;

    let echoes = echo_batches(&proxy, &client, 500, 50).await;

    assert_eq!(echoes, (0..500).collect::<Vec<_>>());
    let stats = proxy.stats();
    assert_eq!(stats.to_upstream.forwarded, 500);
    assert_eq!(stats.to_client.forwarded, 500);
    assert_eq!(stats.to_upstream.dropped() + stats.to_client.dropped(), 0);
}

#[tokio::test]
async fn loss_drops_roughly_the_configured_share() {
    // The head-of-line benchmark depends on the loss rate being what it says.
    let server = EchoServer::start().await;
    let lossy = LinkConfig {
        loss: 0.3,
        seed: 1,
        ..LinkConfig::default()
    };
    let proxy = start_proxy(&server, lossy).await;
    let client = client_of(&proxy).await;

    let echoes = echo_batches(&proxy, &client, 2000, 100).await;

    let lost = 2000 - echoes.len() as u64;
    assert!((300..=900).contains(&lost), "lost {lost} of 2000");
    assert_eq!(lost, proxy.stats().to_upstream.dropped_loss);
    assert_eq!(server.received.load(Ordering::SeqCst), echoes.len() as u64);
}

#[tokio::test]
async fn full_duplication_delivers_every_datagram_twice() {
    // The client library must cope with duplicates on the wire; this is how tests make them.
    let server = EchoServer::start().await;
    let duplicating = LinkConfig {
        duplicate: 1.0,
        ..LinkConfig::default()
    };
    let proxy = start_proxy(&server, duplicating).await;
    let client = client_of(&proxy).await;

    let echoes = echo_batches(&proxy, &client, 100, 25).await;

    let mut copies = BTreeMap::<u32, usize>::new();
    for seq in echoes {
        *copies.entry(seq).or_default() += 1;
    }
    assert_eq!(copies.len(), 100);
    assert!(copies.values().all(|&n| n == 2), "{copies:?}");
    assert_eq!(proxy.stats().to_upstream.duplicated, 100);
}

#[tokio::test]
async fn reordering_delivers_everything_but_out_of_order() {
    let server = EchoServer::start().await;
    let reordering = LinkConfig {
        reorder: 0.25,
        seed: 3,
        ..LinkConfig::default()
    };
    let proxy = start_proxy(&server, reordering).await;
    let client = client_of(&proxy).await;

    let echoes = echo_batches(&proxy, &client, 400, 50).await;

    let overtaken = echoes.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(overtaken > 0, "nothing arrived out of order");
    let mut sorted = echoes.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..400).collect::<Vec<_>>(),
        "reordering lost or duplicated"
    );
    assert!(proxy.stats().to_upstream.reordered > 0);
}

#[tokio::test(start_paused = true)]
async fn delay_applies_each_way_without_serialising_datagrams() {
    // 50 ms each way makes a round trip of at least 100 ms. A burst of 20 must come back
    // together, not 20 × 100 ms later: a proxy that slept per datagram would turn delay
    // into a bandwidth limit. The clock is paused, so this measures virtual time.
    let server = EchoServer::start().await;
    let proxy = UdpProxy::start(ProxyConfig::new(server.addr).with_links(LinkConfig {
        delay: Duration::from_millis(50),
        ..LinkConfig::default()
    }))
    .await
    .unwrap();
    let client = client_of(&proxy).await;

    let start = Instant::now();
    send_seq(&client, 0).await;
    assert_eq!(recv_seqs(&client, 1).await, vec![0]);
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );

    let start = Instant::now();
    for seq in 1..=20 {
        send_seq(&client, seq).await;
    }
    assert_eq!(recv_seqs(&client, 20).await, (1..=20).collect::<Vec<_>>());
    let burst = start.elapsed();
    assert!(burst >= Duration::from_millis(100), "{burst:?}");
    assert!(
        burst < Duration::from_millis(200),
        "delay serialised the burst: {burst:?}"
    );
}

#[tokio::test]
async fn empty_huge_and_garbage_datagrams_pass_through_unharmed() {
    // The proxy is payload-agnostic: it must neither choke on nor alter any datagram.
    let server = EchoServer::start().await;
    let proxy = start_proxy(&server, LinkConfig::default()).await;
    let client = client_of(&proxy).await;
    // The largest UDP payload over IPv4: 65,535 − 20 (IP header) − 8 (UDP header).
    let huge: Vec<u8> = (0..65_507u32).map(|i| (i * 7 + 3) as u8).collect();
    let garbage = vec![0xFF; 1200];
    let mut buf = vec![0u8; 65_535];

    for payload in [&[][..], &huge[..], &garbage[..], &[0x00][..]] {
        client.send(payload).await.unwrap();
        let len = timeout(WAIT, client.recv(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..len], payload, "payload of {} bytes", payload.len());
    }
    send_seq(&client, 9).await;
    assert_eq!(recv_seqs(&client, 1).await, vec![9]);
}

#[tokio::test]
async fn each_client_gets_its_own_upstream_address_and_its_own_replies() {
    // QUIC servers tell clients apart by address; replies must go back to the right one.
    let server = EchoServer::start().await;
    let proxy = start_proxy(&server, LinkConfig::default()).await;
    let mut clients = Vec::new();
    for id in 0..64u32 {
        let client = client_of(&proxy).await;
        send_seq(&client, id).await;
        clients.push((id, client));
    }

    for (id, client) in &clients {
        assert_eq!(recv_seqs(client, 1).await, vec![*id]);
    }
    assert_eq!(server.peer_count(), 64);
    assert_eq!(proxy.stats().clients, 64);
}

#[tokio::test]
async fn a_full_client_table_turns_new_clients_away_and_keeps_serving_old_ones() {
    let server = EchoServer::start().await;
    let proxy = UdpProxy::start(ProxyConfig {
        max_clients: 2,
        ..ProxyConfig::new(server.addr)
    })
    .await
    .unwrap();
    let (a, b, c) = (
        client_of(&proxy).await,
        client_of(&proxy).await,
        client_of(&proxy).await,
    );
    send_seq(&a, 1).await;
    assert_eq!(recv_seqs(&a, 1).await, vec![1]);
    send_seq(&b, 2).await;
    assert_eq!(recv_seqs(&b, 1).await, vec![2]);

    send_seq(&c, 3).await;
    wait_for_stats(&proxy, |s| s.dropped_client_table_full == 1).await;

    send_seq(&a, 4).await;
    assert_eq!(recv_seqs(&a, 1).await, vec![4]);
    assert_eq!(server.peer_count(), 2);
    assert_eq!(server.received.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn loss_can_be_switched_on_and_off_mid_run() {
    // Integration tests start clean, then break the network under a live connection.
    let server = EchoServer::start().await;
    let proxy = start_proxy(&server, LinkConfig::default()).await;
    let client = client_of(&proxy).await;
    send_seq(&client, 0).await;
    assert_eq!(recv_seqs(&client, 1).await, vec![0]);

    proxy.set_loss(1.0).unwrap();
    for seq in 1..=10 {
        send_seq(&client, seq).await;
    }
    wait_for_stats(&proxy, |s| s.to_upstream.dropped_loss == 10).await;
    assert_eq!(server.received.load(Ordering::SeqCst), 1);

    proxy.set_loss(0.0).unwrap();
    send_seq(&client, 11).await;
    assert_eq!(recv_seqs(&client, 1).await, vec![11]);
    assert_eq!(proxy.link(Direction::ToClient).loss, 0.0);
}

#[tokio::test]
async fn the_same_seed_drops_the_same_datagrams_end_to_end() {
    // A failing benchmark or test run is replayed by reusing its seed.
    let server = EchoServer::start().await;
    let lossy = LinkConfig {
        loss: 0.5,
        seed: 42,
        ..LinkConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let proxy = start_proxy(&server, lossy.clone()).await;
        let client = client_of(&proxy).await;
        runs.push(echo_batches(&proxy, &client, 200, 50).await);
        proxy.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].len() < 200);
}

#[tokio::test]
async fn shutdown_closes_the_listen_socket() {
    // Tests that restart a proxy on the same address need the port back.
    let server = EchoServer::start().await;
    let proxy = start_proxy(&server, LinkConfig::default()).await;
    let client = client_of(&proxy).await;
    send_seq(&client, 1).await;
    assert_eq!(recv_seqs(&client, 1).await, vec![1]);
    let addr = proxy.local_addr();

    proxy.shutdown().await;

    UdpSocket::bind(addr).await.unwrap();
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let server = EchoServer::start().await;
    let bad = LinkConfig {
        loss: 1.5,
        ..LinkConfig::default()
    };
    let error = UdpProxy::start(ProxyConfig::new(server.addr).with_links(bad))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);

    let proxy = start_proxy(&server, LinkConfig::default()).await;
    assert!(proxy.set_loss(f64::NAN).is_err());
    assert!(proxy.set_delay(Duration::from_secs(3600)).is_err());
    assert_eq!(proxy.link(Direction::ToUpstream), LinkConfig::default());
}
