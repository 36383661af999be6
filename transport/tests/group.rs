#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared writer task of a connection, over real QUIC on loopback: streams stay
//! independent, and the hold-back packs frames into fewer datagrams.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::codec::Encoded;
use protocol::frames::STREAM_KIND_LANE;
use protocol::frames::link::EdgeFrame;
use protocol::{DeviceId, SessionId, UserId};
use transport::{FramedRecv, LaneSenders, TransportProfile, WriterGroup};

/// A server and a connected client with the client-link profile (see `common`).
/// Returns the endpoints (kept alive), the server's connection and the client's.
async fn pair(
    dir: &std::path::Path,
) -> (
    (quinn::Endpoint, quinn::Endpoint),
    quinn::Connection,
    quinn::Connection,
) {
    let (server, client) = common::endpoints(dir);
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

/// Accepts every lane the client opens until its connection closes, reading each to its
/// end; returns them in the order they were accepted.
async fn accept_all_lanes(server_conn: quinn::Connection) -> Vec<Vec<EdgeFrame>> {
    let mut readers = Vec::new();
    while let Ok(recv) = server_conn.accept_uni().await {
        readers.push(tokio::spawn(read_lane(recv)));
    }
    let mut lanes = Vec::new();
    for reader in readers {
        lanes.push(reader.await.unwrap());
    }
    lanes
}

// A lane's stream is opened when the lane first carries a frame: lanes never used never
// appear at the peer, finishing one resolves at once (there is nothing to deliver), and the
// lanes that are used arrive complete and in order.
#[tokio::test]
async fn only_lanes_that_carry_frames_are_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let acceptor = tokio::spawn(accept_all_lanes(server_conn));
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 4, 64, 0)
        .await
        .unwrap();
    assert_eq!(lanes.count(), 4);

    // Lane 1 is finished without ever carrying a frame: no stream, no wait.
    tokio::time::timeout(Duration::from_millis(500), lanes.lane(1).finish())
        .await
        .expect("finishing an unused lane resolves at once")
        .unwrap();

    // Lanes 2 and 0 carry frames, interleaved; lane 3 never does.
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for n in 0..1000u64 {
        let (lane, sent) = if n % 2 == 0 {
            (2, &mut even)
        } else {
            (0, &mut odd)
        };
        lanes.lane(lane).send(attach(n)).await.unwrap();
        sent.push(attach(n));
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        lanes.lane(2).finish().await.unwrap();
        lanes.lane(0).finish().await.unwrap();
    })
    .await
    .expect("the used lanes finish");
    assert_eq!(lanes.lane(3).stats().bytes.load(Ordering::Relaxed), 0);
    drop(lanes); // lane 3 ends without a stream
    conn.close(0u32.into(), b"done");

    let mut got = tokio::time::timeout(Duration::from_secs(10), acceptor)
        .await
        .expect("the peer sees the connection close")
        .unwrap();
    got.sort_by_key(|frames| frames.first() != Some(&attach(0)));
    assert_eq!(
        got.len(),
        2,
        "only the two lanes that carried frames appear"
    );
    assert_eq!(got[0], even);
    assert_eq!(got[1], odd);
}

/// Opens every unidirectional stream the peer allows (which it does not read, so it gives
/// no new credit) and returns them.
async fn use_up_uni_streams(conn: &quinn::Connection) -> Vec<quinn::SendStream> {
    let mut taken = Vec::new();
    for _ in 0..TransportProfile::client_link().uni_streams {
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(&[STREAM_KIND_LANE]).await.unwrap();
        taken.push(send);
    }
    taken
}

// A lane whose stream cannot be opened yet (the peer's stream limit is used up) keeps its
// frames until it can; if the connection closes meanwhile, the lane's queue closes, so its
// senders see `Closed` rather than wait forever.
#[tokio::test]
async fn a_lane_waits_for_stream_credit_and_closes_with_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let taken = use_up_uni_streams(&conn).await;
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 2, 64, 0)
        .await
        .unwrap();
    lanes.lane(0).try_send(attach(0)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!lanes.lane(0).is_closed(), "the lane is still opening");
    assert_eq!(lanes.lane(0).stats().bytes.load(Ordering::Relaxed), 0);

    conn.close(0u32.into(), b"gone");
    tokio::time::timeout(Duration::from_secs(2), lanes.lane(0).closed())
        .await
        .expect("the opening lane's queue closes with the connection");
    assert!(matches!(
        lanes.lane(0).send(attach(1)).await,
        Err(transport::StreamError::Closed)
    ));
    // The unused lane is untouched until it is used: then it cannot open either.
    assert!(!lanes.lane(1).is_closed());
    lanes.lane(1).try_send(attach(2)).unwrap();
    tokio::time::timeout(Duration::from_secs(2), lanes.lane(1).closed())
        .await
        .expect("a lane first used after the close closes");
    drop((taken, server_conn));
}

// Once the peer gives stream credit back, a lane that was waiting to open goes out with
// everything queued meanwhile, in order.
#[tokio::test]
async fn a_lane_waiting_for_stream_credit_opens_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let mut taken = use_up_uni_streams(&conn).await;
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 1, 64, 0)
        .await
        .unwrap();
    let sent: Vec<EdgeFrame> = (0..50).map(attach).collect();
    for frame in sent.clone() {
        lanes.lane(0).send(frame).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lanes.lane(0).stats().bytes.load(Ordering::Relaxed), 0);

    // The peer reads some of the taken streams to their ends: their credit comes back
    // (quinn announces credit once more than an eighth of its stream limit is free).
    let freed = taken.len() / 8 + 1;
    drop(taken.drain(..freed)); // finishes them
    let acceptor = tokio::spawn(accept_all_lanes(server_conn));
    tokio::time::timeout(Duration::from_secs(10), lanes.lane(0).finish())
        .await
        .expect("the lane opens once credit comes back")
        .unwrap();
    drop(taken); // finishes the rest
    drop(lanes);
    // Let the peer read the rest before closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    let got = tokio::time::timeout(Duration::from_secs(10), acceptor)
        .await
        .unwrap()
        .unwrap();
    let uni_streams = TransportProfile::client_link().uni_streams as usize;
    assert_eq!(got.len(), uni_streams + 1);
    assert!(got[..uni_streams].iter().all(Vec::is_empty));
    assert_eq!(got[uni_streams], sent);
}

fn big(n: u64) -> EdgeFrame {
    EdgeFrame::Submit(protocol::frames::link::Submit {
        session: SessionId(1),
        from: UserId::new("alice").unwrap(),
        from_name: "Alice".into(),
        to: UserId::new("bob").unwrap(),
        key: protocol::SenderKey {
            epoch: 1,
            counter: n,
        },
        sent_at_ms: 0,
        text: format!("{n:05}{}", "x".repeat(4000)),
    })
}

// A lane whose stream is blocked long enough for the writer's buffer to fill (the queue is
// then not read) must resume reading its queue once the peer reads again: everything
// arrives, in order.
#[tokio::test]
async fn a_lane_resumes_after_its_stream_was_blocked_with_a_full_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 1, 64, 0)
        .await
        .unwrap();
    let sent: Vec<EdgeFrame> = (0..300).map(big).collect();
    let sender = {
        let lane = lanes.lane(0).clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            for frame in sent {
                lane.send(frame).await.unwrap();
            }
            lane.finish().await.unwrap();
        })
    };
    // 1.2 MB against a 256 KiB stream window: the writer blocks while nobody reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = tokio::spawn(read_lane(server_conn.accept_uni().await.unwrap()));
    drop(lanes);
    let got = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the lane resumed and finished")
        .unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "complete and in order");
    sender.await.unwrap();
}

// A frame encoded already (an edge forwarding a core's delivery) travels like any other:
// it may be the lane's first frame (behind the lane's kind byte), it keeps its place among
// frames encoded by the writer, and one encoding may go to several lanes.
#[tokio::test]
async fn frames_encoded_already_arrive_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let (_endpoints, server_conn, conn) = pair(dir.path()).await;
    let acceptor = tokio::spawn(accept_all_lanes(server_conn));
    let lanes = LaneSenders::<EdgeFrame>::open(&conn, 2, 64, 0)
        .await
        .unwrap();
    let mut sent = Vec::new();
    for n in 0..40u64 {
        if n % 3 == 0 {
            let encoded = Encoded::new(&attach(n)).unwrap();
            lanes.lane(1).try_send_encoded(encoded.clone()).unwrap();
            lanes.lane(0).try_send_encoded(encoded).unwrap();
        } else {
            lanes.lane(1).try_send(attach(n)).unwrap();
            lanes.lane(0).try_send(attach(n)).unwrap();
        }
        sent.push(attach(n));
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        lanes.lane(0).finish().await.unwrap();
        lanes.lane(1).finish().await.unwrap();
    })
    .await
    .expect("both lanes finish");
    assert_eq!(lanes.lane(0).stats().frames.load(Ordering::Relaxed), 40);
    drop(lanes);
    conn.close(0u32.into(), b"done");
    let got = tokio::time::timeout(Duration::from_secs(10), acceptor)
        .await
        .expect("the peer sees the connection close")
        .unwrap();
    assert_eq!(got, vec![sent.clone(), sent]);
}
