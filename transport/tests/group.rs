#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared writer task of a connection, over real QUIC on loopback: streams stay
//! independent, and the hold-back packs frames into fewer datagrams.

use std::time::Duration;

use protocol::frames::link::EdgeFrame;
use protocol::frames::{ALPN_CORE, STREAM_KIND_LANE};
use protocol::{DeviceId, SessionId, UserId};
use transport::tls::{self, ClientAuth};
use transport::{DevPki, FramedRecv, LaneSenders, TransportProfile, WriterGroup};

/// A server and a connected client with the client-link profile (256 KiB per stream,
/// 1 MiB per connection), so one stream can be blocked while the connection is not.
/// Returns the endpoints (kept alive), the server's connection and the client's.
async fn pair(
    dir: &std::path::Path,
) -> (
    (quinn::Endpoint, quinn::Endpoint),
    quinn::Connection,
    quinn::Connection,
) {
    let pki = DevPki::ensure(dir).unwrap();
    let profile = TransportProfile::client_link();
    let server_config = tls::server_config(
        tls::load_certs(&pki.core_cert).unwrap(),
        tls::load_key(&pki.core_key).unwrap(),
        ALPN_CORE,
        ClientAuth::Required(tls::load_certs(&pki.ca_cert).unwrap()),
        &profile,
    )
    .unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let client_config = tls::client_config(
        tls::load_certs(&pki.ca_cert).unwrap(),
        ALPN_CORE,
        Some((
            tls::load_certs(&pki.edge_client_cert).unwrap(),
            tls::load_key(&pki.edge_client_key).unwrap(),
        )),
        &profile,
    )
    .unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);
    let addr = server.local_addr().unwrap();
    let connecting = client
        .connect(addr, transport::pki::DEV_SERVER_NAME)
        .unwrap();
    let (server_conn, conn) = tokio::join!(
        async { server.accept().await.unwrap().await.unwrap() },
        connecting
    );
    ((server, client), server_conn, conn.unwrap())
}

fn attach(n: u64) -> EdgeFrame {
    EdgeFrame::Attach(protocol::frames::link::Attach {
        session: SessionId(n),
        user: UserId::new(format!("user-{n}")).unwrap(),
        device: DeviceId(n),
    })
}

/// Reads a lane to its end.
async fn read_lane(recv: quinn::RecvStream) -> Vec<EdgeFrame> {
    let mut lane = FramedRecv::new(recv);
    lane.expect_kind(STREAM_KIND_LANE).await.unwrap();
    let mut got = Vec::new();
    while let Some(frame) = lane.next::<EdgeFrame>().await.unwrap() {
        got.push(frame);
    }
    got
}

// A peer that stops reading one lane fills that lane's flow-control window; the shared
// writer must keep writing the other lane, and deliver all of it in order.
#[tokio::test]
async fn a_lane_the_peer_does_not_read_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 2, 64, 0)
        .await
        .unwrap();
    // Wake both streams up so the server sees them, in order.
    lanes.lane(0).send(attach(0)).await.unwrap();
    lanes.lane(1).send(attach(0)).await.unwrap();
    let stalled = server_conn.accept_uni().await.unwrap(); // lane 0: never read
    let reader = tokio::spawn(read_lane(server_conn.accept_uni().await.unwrap()));

    // Fill lane 0 until sending blocks: its stream window (256 KiB) is full.
    let mut blocked = false;
    for n in 1..200_000u64 {
        let send = lanes.lane(0).send(attach(n));
        if tokio::time::timeout(Duration::from_millis(300), send)
            .await
            .is_err()
        {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "lane 0 never filled up");

    let sent: Vec<EdgeFrame> = (1..=500).map(attach).collect();
    for frame in sent.clone() {
        tokio::time::timeout(Duration::from_secs(10), lanes.lane(1).send(frame))
            .await
            .expect("lane 1 must not wait for lane 0")
            .unwrap();
    }
    let lane1 = lanes.lane(1).clone();
    drop(lanes);
    lane1
        .finish()
        .await
        .expect("lane 1 finishes while lane 0 is stuck");
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("lane 1 arrives complete")
        .unwrap();
    assert_eq!(got[0], attach(0));
    assert_eq!(&got[1..], &sent[..]);
    drop(stalled);
}

/// Sends `count` frames on one lane, 1 ms apart, through a group with `linger`; returns
/// what arrived and the datagrams the client sent meanwhile.
async fn trickle(linger: Duration, count: u64) -> (Vec<EdgeFrame>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let mut group = WriterGroup::new(None).with_linger(linger);
    let lanes = LaneSenders::<EdgeFrame>::open_in(&mut group, &conn, 1, 64, 0)
        .await
        .unwrap();
    group.spawn();
    lanes.lane(0).send(attach(0)).await.unwrap();
    let reader = tokio::spawn(read_lane(server_conn.accept_uni().await.unwrap()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = conn.stats().udp_tx.datagrams;
    for n in 1..=count {
        tokio::time::sleep(Duration::from_millis(1)).await;
        lanes.lane(0).send(attach(n)).await.unwrap();
    }
    lanes.lane(0).finish().await.unwrap();
    let datagrams = conn.stats().udp_tx.datagrams - before;
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    (got, datagrams)
}

// Frames trickling in a millisecond apart: without a hold-back each leaves in its own
// datagram; with one, a busy link flushes once per interval and packs them together,
// still complete and in order.
#[tokio::test]
async fn the_hold_back_packs_trickling_frames_into_fewer_datagrams() {
    let count = 40;
    let expected: Vec<EdgeFrame> = (0..=count).map(attach).collect();
    let (got, held) = trickle(Duration::from_millis(50), count).await;
    assert_eq!(got, expected);
    let (got, unheld) = trickle(Duration::ZERO, count).await;
    assert_eq!(got, expected);
    eprintln!("held back: {held} datagrams, not held: {unheld}");
    assert!(
        held * 2 < unheld,
        "held back: {held} datagrams, not held: {unheld}, for {count} frames"
    );
}
