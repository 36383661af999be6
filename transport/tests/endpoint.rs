#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `client_endpoint` reads one datagram per buffer: a server sending large bursts (quinn
//! batches them with GSO on Linux) must still reach it whole, byte for byte.

mod common;

use std::time::Duration;

use transport::endpoint::client_endpoint;

/// Bytes the server sends: many congestion windows, so quinn sends full batches.
const BURST: usize = 8 * 1024 * 1024;
/// Bound on the whole transfer, so a client that drops datagrams fails instead of hanging.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::test]
async fn a_client_endpoint_receives_a_large_burst_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server_endpoint(dir.path());
    let mut client = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(common::client_config(dir.path()));
    let server_addr = server.local_addr().unwrap();

    let sender = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut send = conn.open_uni().await.unwrap();
        let data: Vec<u8> = (0..BURST).map(pattern).collect();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        // Keep the connection until the client has read everything and closed it.
        conn.closed().await;
        let path = conn.stats().path;
        (path.sent_packets, path.lost_packets)
    });

    let conn = client
        .connect(server_addr, transport::pki::DEV_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let received = tokio::time::timeout(TRANSFER_TIMEOUT, async {
        let mut recv = conn.accept_uni().await.unwrap();
        recv.read_to_end(BURST + 1).await.unwrap()
    })
    .await
    .expect("the burst did not arrive in time");
    assert_eq!(received.len(), BURST);
    if let Some(i) = (0..BURST).find(|&i| received[i] != pattern(i)) {
        panic!("byte {i} of the burst is wrong");
    }
    conn.close(0u32.into(), b"done");
    // Loss recovery would bring the bytes through even if the client cut coalesced
    // datagrams to its buffer size, so look at the packets too. Measured: about 3 % lost
    // (a burst overflowing loopback's socket buffer) with GRO off; with GRO left on and
    // one-datagram buffers, 84 %.
    let (sent, lost) = sender.await.unwrap();
    assert!(
        lost * 5 < sent,
        "{lost} of {sent} packets lost: the client endpoint cuts datagrams"
    );
}

#[tokio::test]
async fn a_client_endpoint_on_an_ipv6_wildcard_reaches_an_ipv4_server() {
    // The client library binds `[::]:0` for IPv6 edges; the socket is dual-stack where the
    // system allows it, like quinn's own client endpoints.
    let dir = tempfile::tempdir().unwrap();
    let server = common::server_endpoint(dir.path());
    let Ok(mut client) = client_endpoint("[::]:0".parse().unwrap()) else {
        // No IPv6 on this machine: nothing to check.
        return;
    };
    client.set_default_client_config(common::client_config(dir.path()));
    let port = server.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        recv.read_to_end(64).await.unwrap()
    });
    let conn = client
        .connect(
            format!("[::ffff:127.0.0.1]:{port}").parse().unwrap(),
            transport::pki::DEV_SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"hello").await.unwrap();
    send.finish().unwrap();
    assert_eq!(accept.await.unwrap(), b"hello");
}
