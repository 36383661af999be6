#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Real QUIC on loopback with the dev PKI: the plumbing every component stands on.

use std::net::SocketAddr;

use protocol::frames::link::{CoreFrame, CoreWelcome, EdgeFrame, EdgeHello};
use protocol::frames::{ALPN_CORE, STREAM_KIND_LANE};
use protocol::{DeviceId, SessionId, ShardId, UserId};
use transport::tls::{self, ClientAuth};
use transport::{DevPki, FramedRecv, LaneSenders, TransportProfile, pki::DEV_SERVER_NAME};

fn core_endpoint(pki: &DevPki) -> quinn::Endpoint {
    let config = tls::server_config(
        tls::load_certs(&pki.core_cert).unwrap(),
        tls::load_key(&pki.core_key).unwrap(),
        ALPN_CORE,
        ClientAuth::Required(tls::load_certs(&pki.ca_cert).unwrap()),
        &TransportProfile::core_link(),
    )
    .unwrap();
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn edge_endpoint(pki: &DevPki, with_identity: bool) -> quinn::Endpoint {
    let identity = with_identity.then(|| {
        (
            tls::load_certs(&pki.edge_client_cert).unwrap(),
            tls::load_key(&pki.edge_client_key).unwrap(),
        )
    });
    let config = tls::client_config(
        tls::load_certs(&pki.ca_cert).unwrap(),
        ALPN_CORE,
        identity,
        &TransportProfile::core_link(),
    )
    .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

fn attach(n: u64) -> EdgeFrame {
    EdgeFrame::Attach(protocol::frames::link::Attach {
        session: SessionId(n),
        user: UserId::new(format!("user-{n}")).unwrap(),
        device: DeviceId(n),
    })
}

// Mutual TLS works with the dev PKI, the control stream carries a handshake, and frames
// written on a lane arrive complete and in order even when many are batched per write.
#[tokio::test]
async fn mutual_tls_link_carries_frames_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(dir.path()).unwrap();
    let server = core_endpoint(&pki);
    let addr: SocketAddr = server.local_addr().unwrap();

    let server_task = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, recv) = conn.accept_bi().await.unwrap();
        let mut control = FramedRecv::new(recv);
        let hello: EdgeFrame = control.next().await.unwrap().unwrap();
        assert!(matches!(hello, EdgeFrame::EdgeHello(_)));
        let welcome = CoreFrame::CoreWelcome(CoreWelcome {
            shard: ShardId(0),
            version: 1,
            lanes: 1,
            capabilities: 0,
        });
        transport::write_frame(&mut send, &welcome).await.unwrap();
        let mut lane = FramedRecv::new(conn.accept_uni().await.unwrap());
        lane.expect_kind(STREAM_KIND_LANE).await.unwrap();
        let mut got = Vec::new();
        while let Some(frame) = lane.next::<EdgeFrame>().await.unwrap() {
            got.push(frame);
        }
        (got, conn)
    });

    let client = edge_endpoint(&pki, true);
    let conn = client
        .connect(addr, DEV_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = EdgeFrame::EdgeHello(EdgeHello {
        version: 1,
        edge: "test".into(),
        capabilities: 0,
    });
    transport::write_frame(&mut send, &hello).await.unwrap();
    let mut control = FramedRecv::new(recv);
    let welcome: CoreFrame = control.next().await.unwrap().unwrap();
    assert!(matches!(welcome, CoreFrame::CoreWelcome(_)));

    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 1, 64, 0)
        .await
        .unwrap();
    let sent: Vec<EdgeFrame> = (0..2000).map(attach).collect();
    for frame in sent.clone() {
        lanes.lane(0).send(frame).await.unwrap();
    }
    let stats = lanes.lane(0).stats().clone();
    drop(lanes); // finishes the lane stream
    let (got, _server_conn) = server_task.await.unwrap();
    assert_eq!(got, sent);
    // Adaptive batching: 2000 frames queued faster than one write completes go out in
    // fewer writes than frames.
    let writes = stats.writes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(writes < 2000, "{writes} writes for 2000 frames");
}

// The core must never talk to an edge that cannot prove who it is: the server-side
// handshake fails, whatever the client manages to do first.
#[tokio::test]
async fn an_edge_without_a_client_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(dir.path()).unwrap();
    let server = core_endpoint(&pki);
    let addr = server.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let incoming = server.accept().await.unwrap();
        incoming.await.map(|conn| (conn, server))
    });
    let client = edge_endpoint(&pki, false);
    let connecting = client.connect(addr, DEV_SERVER_NAME).unwrap();
    // TLS 1.3 lets the client finish its side first; nudge the server with a stream.
    if let Ok(conn) = connecting.await {
        if let Ok(mut send) = conn.open_uni().await {
            let _ = send.write_all(b"x").await;
        }
    }
    let server_side = tokio::time::timeout(std::time::Duration::from_secs(10), accepted)
        .await
        .expect("server handshake did not finish")
        .unwrap();
    assert!(
        server_side.is_err(),
        "the core accepted an edge without a certificate"
    );
}

#[test]
fn dev_pki_is_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevPki::ensure(dir.path()).unwrap();
    let ca = std::fs::read(&first.ca_cert).unwrap();
    let second = DevPki::ensure(dir.path()).unwrap();
    assert_eq!(first, second);
    assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca);
}

// Closing a QUIC connection throws away stream data still in flight. `finish` is how a
// sender makes sure its last frames (a client's final acknowledgements) arrived before it
// closes: everything queued before it must reach the peer even if the connection is
// closed the moment it returns.
#[tokio::test]
async fn finish_delivers_everything_before_an_immediate_close() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(dir.path()).unwrap();
    let server = core_endpoint(&pki);
    let addr = server.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut lane = FramedRecv::new(conn.accept_uni().await.unwrap());
        lane.expect_kind(STREAM_KIND_LANE).await.unwrap();
        let mut got = 0usize;
        while let Ok(Some(_)) = lane.next::<EdgeFrame>().await {
            got += 1;
        }
        (got, server)
    });
    let client = edge_endpoint(&pki, true);
    let conn = client
        .connect(addr, DEV_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 1, 4096, 0)
        .await
        .unwrap();
    for n in 0..3000 {
        lanes.lane(0).send(attach(n)).await.unwrap();
    }
    lanes.lane(0).finish().await.unwrap();
    conn.close(0u32.into(), b"bye");
    let (got, _server) = server_task.await.unwrap();
    assert_eq!(got, 3000);
}

// A long-lived link updates its 1-RTT keys (RFC 9001, section 6): quinn does so after a
// key's confidentiality limit, and either side may at any time. The next keys are
// expanded only at their first use (`lazy_keys`), so every update here is the first use
// of a generation on both sides, in turn from each side; data must keep flowing.
#[tokio::test]
async fn a_link_carries_data_across_key_updates_from_either_side() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(dir.path()).unwrap();
    let server = core_endpoint(&pki);
    let addr = server.local_addr().unwrap();
    let client = edge_endpoint(&pki, true);
    let (server_conn, client_conn) = tokio::join!(
        async { server.accept().await.unwrap().await.unwrap() },
        async {
            client
                .connect(addr, DEV_SERVER_NAME)
                .unwrap()
                .await
                .unwrap()
        },
    );
    // The server echoes every 8 bytes it reads.
    let echo_conn = server_conn.clone();
    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = echo_conn.accept_bi().await.unwrap();
        let mut word = [0u8; 8];
        while recv.read_exact(&mut word).await.is_ok() {
            send.write_all(&word).await.unwrap();
        }
    });
    let (mut send, mut recv) = client_conn.open_bi().await.unwrap();
    for round in 0u64..4 {
        // quinn ignores an update until the previous generation's keys are discarded,
        // three probe timeouts after the update (about 80 ms on loopback).
        tokio::time::sleep(Duration::from_millis(250)).await;
        if round % 2 == 0 {
            client_conn.force_key_update();
        } else {
            server_conn.force_key_update();
        }
        for i in 0..16u64 {
            let word = (round << 32 | i).to_le_bytes();
            send.write_all(&word).await.unwrap();
            let mut back = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut back))
                .await
                .expect("no echo within 5 s after a key update")
                .unwrap();
            assert_eq!(back, word, "round {round}, word {i}");
        }
    }
    assert!(client_conn.close_reason().is_none());
    assert!(server_conn.close_reason().is_none());
    send.finish().unwrap();
    echo.await.unwrap();
}
