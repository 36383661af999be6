#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Lane copies over real QUIC through a lossy, delaying UDP proxy: every frame arrives
//! once and in order whichever copy wins, and copies do fill the gaps lost packets leave.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::frames::STREAM_KIND_LANE;
use protocol::frames::link::EdgeFrame;
use protocol::limits::FRAME_BYTES_MAX;
use protocol::{DeviceId, SessionId, UserId};
use testkit::{LinkConfig, ProxyConfig, UdpProxy};
use transport::{Copier, CopyPolicy, CopyRouter, LaneRecv, LaneSenders, WriterGroup};

/// Frames each lane carries.
const FRAMES_PER_LANE: u64 = 150;
/// Lanes used.
const LANES: u8 = 4;

/// A server, and a client connected to it through `proxy_link` (both directions).
/// Returns the endpoints and proxy (kept alive), the server's connection and the client's.
async fn pair_through_proxy(
    dir: &std::path::Path,
    link: LinkConfig,
) -> (
    (quinn::Endpoint, quinn::Endpoint, UdpProxy),
    quinn::Connection,
    quinn::Connection,
) {
    let (server, client) = common::endpoints(dir);
    let proxy = UdpProxy::start(ProxyConfig::new(server.local_addr().unwrap()))
        .await
        .unwrap();
    let connecting = client
        .connect(proxy.local_addr(), transport::pki::DEV_SERVER_NAME)
        .unwrap();
    let (server_conn, conn) = tokio::join!(
        async { server.accept().await.unwrap().await.unwrap() },
        connecting
    );
    // Loss only once connected: the test is about lanes, not handshakes.
    proxy.set_links(link).unwrap();
    ((server, client, proxy), server_conn, conn.unwrap())
}

fn attach(lane: u8, n: u64) -> EdgeFrame {
    EdgeFrame::Attach(protocol::frames::link::Attach {
        session: SessionId(u64::from(lane) << 32 | n),
        user: UserId::new(format!("user-{lane}-{n}")).unwrap(),
        device: DeviceId(n),
    })
}

/// Sends `FRAMES_PER_LANE` frames on each lane, a few milliseconds apart (chat-like:
/// each write small), then finishes the lanes; reads them all on the other side and
/// returns what each lane delivered, with the receiver's copy counters.
async fn run(policy: CopyPolicy, loss: f64) -> (Vec<Vec<EdgeFrame>>, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let link = LinkConfig {
        loss,
        delay: Duration::from_millis(10),
        seed: 7,
        ..LinkConfig::default()
    };
    let (_keep, server_conn, conn) = pair_through_proxy(dir.path(), link).await;

    let router = CopyRouter::spawn(&server_conn);
    let accept = {
        let router = router.clone();
        tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..LANES {
                let recv = server_conn.accept_uni().await.unwrap();
                let mut lane = LaneRecv::<EdgeFrame>::new(
                    recv,
                    STREAM_KIND_LANE,
                    FRAME_BYTES_MAX,
                    Some(&router),
                );
                readers.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(frame) = lane.next().await.unwrap() {
                        got.push(frame);
                    }
                    got
                }));
            }
            let mut lanes = Vec::new();
            for reader in readers {
                lanes.push(reader.await.unwrap());
            }
            (lanes, server_conn)
        })
    };

    let copier = Copier::new(&conn, policy);
    let sent = copier.stats().clone();
    let mut group = WriterGroup::new(None).with_copies(copier);
    let lanes = LaneSenders::open_in(&mut group, &conn, LANES, 1024, 0)
        .await
        .unwrap();
    group.spawn();
    for n in 0..FRAMES_PER_LANE {
        for lane in 0..LANES {
            lanes.lane(lane).send(attach(lane, n)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for lane in lanes.used() {
        lane.finish().await.unwrap();
    }
    let (mut got, _server_conn) = tokio::time::timeout(Duration::from_secs(60), accept)
        .await
        .expect("every lane delivered within a minute")
        .unwrap();
    // Lanes are accepted in the order they were opened; put them in lane order.
    got.sort_by_key(|frames| match frames.first() {
        Some(EdgeFrame::Attach(a)) => a.session.0 >> 32,
        _ => u64::MAX,
    });
    let used = router.stats().frames_used.load(Ordering::Relaxed);
    (got, sent.sent.load(Ordering::Relaxed), used)
}

fn expected() -> Vec<Vec<EdgeFrame>> {
    (0..LANES)
        .map(|lane| (0..FRAMES_PER_LANE).map(|n| attach(lane, n)).collect())
        .collect()
}

// With copies on a link that loses one packet in ten, the receiver must still see every
// frame of every lane exactly once and in order, whether the stream or a copy brought it;
// and copies must actually have brought some (the frames of lost stream packets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_fill_gaps_and_every_frame_arrives_once_in_order() {
    let (got, copies_sent, frames_from_copies) = run(CopyPolicy::Always, 0.10).await;
    assert_eq!(got, expected());
    assert!(copies_sent > 0, "no copy was sent");
    assert!(
        frames_from_copies > 0,
        "no frame was taken from a copy although packets were lost"
    );
}

// `auto` sends nothing on a clean link: copies cost bandwidth, and a loss-free
// connection gains nothing from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sends_no_copies_on_a_clean_link() {
    let (got, copies_sent, _) = run(CopyPolicy::Auto, 0.0).await;
    assert_eq!(got, expected());
    assert_eq!(copies_sent, 0);
}

// `auto` turns copies on once the connection loses packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sends_copies_on_a_lossy_link() {
    let (got, copies_sent, _) = run(CopyPolicy::Auto, 0.10).await;
    assert_eq!(got, expected());
    assert!(copies_sent > 0, "auto sent no copy at 10 % loss");
}
