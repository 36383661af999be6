#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A real core on loopback QUIC, driven by a fake edge that speaks the link frames
//! directly (mutual TLS with the dev PKI).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use protocol::frames::link::{Attach, EdgeHello, Submit};
use protocol::frames::{ALPN_CORE, PROTOCOL_VERSION, STREAM_KIND_LANE};
use protocol::{
    CoreFrame, DeviceId, EdgeFrame, ErrorCode, IdRange, MessageId, SenderKey, SessionId, UserId,
};
use server::{Core, CoreConfig, CoreHandle};
use tokio::sync::mpsc;
use transport::pki::DEV_SERVER_NAME;
use transport::tls;
use transport::{DevPki, FrameSender, FramedRecv, TransportProfile};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn core_config(dir: &Path, pki: &DevPki) -> CoreConfig {
    CoreConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        cert: Some(pki.core_cert.clone()),
        key: Some(pki.core_key.clone()),
        edge_ca: Some(pki.ca_cert.clone()),
        lanes: 4,
        ..CoreConfig::default()
    }
}

async fn start_core(dir: &Path) -> (CoreHandle, DevPki) {
    let pki = DevPki::ensure(&dir.join("pki")).unwrap();
    let core = Core::start(core_config(dir, &pki)).await.unwrap();
    (core, pki)
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

/// An edge relay reduced to its link: it sends frames and collects every frame the core
/// sends, from the control stream and every lane, in one queue.
struct FakeEdge {
    conn: quinn::Connection,
    control: FrameSender<EdgeFrame>,
    lane: FrameSender<EdgeFrame>,
    frames: mpsc::Receiver<CoreFrame>,
    _endpoint: quinn::Endpoint,
}

impl FakeEdge {
    async fn connect(addr: SocketAddr, pki: &DevPki) -> Self {
        Self::connect_as(addr, pki, PROTOCOL_VERSION).await.unwrap()
    }

    /// Connects and says hello with `version`; `Err` carries the close code if the core
    /// refused.
    async fn connect_as(addr: SocketAddr, pki: &DevPki, version: u16) -> Result<Self, ErrorCode> {
        let endpoint = edge_endpoint(pki, true);
        let conn = endpoint
            .connect(addr, DEV_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let hello = EdgeHello {
            version,
            edge: "fake-edge".into(),
            capabilities: 0,
        };
        transport::write_frame(&mut send, &EdgeFrame::EdgeHello(hello))
            .await
            .unwrap();
        let mut control = FramedRecv::new(recv);
        let welcome = match tokio::time::timeout(WAIT, control.next::<CoreFrame>())
            .await
            .unwrap()
        {
            Ok(Some(CoreFrame::CoreWelcome(welcome))) => welcome,
            other => {
                let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
                let code = transport::close_code(&closed).map(|(code, _)| code);
                return Err(code.unwrap_or_else(|| panic!("no welcome and no close: {other:?}")));
            }
        };
        assert_eq!(welcome.lanes, 4);

        let (tx, frames) = mpsc::channel(4096);
        let control_tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = control.next::<CoreFrame>().await {
                if control_tx.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let lanes_conn = conn.clone();
        tokio::spawn(async move {
            for _ in 0..welcome.lanes {
                let Ok(stream) = lanes_conn.accept_uni().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut lane = FramedRecv::new(stream);
                    lane.expect_kind(STREAM_KIND_LANE).await.unwrap();
                    while let Ok(Some(frame)) = lane.next::<CoreFrame>().await {
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let control = transport::spawn_writer(send, None, 64);
        let lane =
            transport::spawn_writer(conn.open_uni().await.unwrap(), Some(STREAM_KIND_LANE), 64);
        Ok(Self {
            conn,
            control,
            lane,
            frames,
            _endpoint: endpoint,
        })
    }

    async fn attach(&self, session: u64, name: &str, device: u64) {
        let attach = Attach {
            session: SessionId(session),
            user: user(name),
            device: DeviceId(device),
        };
        self.control.send(EdgeFrame::Attach(attach)).await.unwrap();
    }

    async fn submit(
        &self,
        session: u64,
        from: &str,
        to: &str,
        counter: u64,
        text: &str,
    ) -> SenderKey {
        let key = SenderKey { epoch: 1, counter };
        let submit = Submit {
            session: SessionId(session),
            from: user(from),
            from_name: from.into(),
            to: user(to),
            key,
            sent_at_ms: 1,
            text: text.into(),
        };
        self.lane.send(EdgeFrame::Submit(submit)).await.unwrap();
        key
    }

    async fn ack(&self, session: u64, id: MessageId) {
        let ack = EdgeFrame::Ack {
            session: SessionId(session),
            ranges: vec![IdRange::single(id)],
        };
        self.control.send(ack).await.unwrap();
    }

    /// The next frame from the core.
    async fn next(&mut self) -> CoreFrame {
        tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("a frame from the core in time")
            .expect("the link is open")
    }

    /// Frames until `pick` returns something (at most 10,000 frames).
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&CoreFrame) -> Option<T>) -> T {
        for _ in 0..10_000 {
            let frame = self.next().await;
            if let Some(found) = pick(&frame) {
                return found;
            }
        }
        panic!("the expected frame never came");
    }

    /// Attaches `bob` and collects what is replayed to him. `Synced` travels on the
    /// control stream and may overtake replayed deliveries on the lanes, so after it a
    /// probe from alice is sent: it is pushed live on the lane of the same conversation,
    /// behind every replayed message. Returns the replayed keys and the probe's id.
    async fn replay_to_bob(
        &mut self,
        probe_counter: u64,
    ) -> (Vec<(SenderKey, MessageId)>, MessageId) {
        self.attach(1, "bob", 1).await;
        let mut replayed = Vec::new();
        let mut probe = None;
        for _ in 0..100_000 {
            let event = self
                .wait_for(|f| match f {
                    CoreFrame::Deliver { message, .. } => Some(Some((message.key, message.id))),
                    CoreFrame::Synced { session } if session.0 == 1 => Some(None),
                    _ => None,
                })
                .await;
            match event {
                // Synced: everything stored was sent; the probe, sent now, comes last.
                None => probe = Some(self.submit(7, "alice", "bob", probe_counter, "probe").await),
                Some((key, id)) if Some(key) == probe => return (replayed, id),
                Some((key, id)) => {
                    // Acknowledge like a real client: replay is flow-controlled by a window
                    // of unacknowledged messages, so a device that never acks stalls.
                    self.ack(1, id).await;
                    replayed.push((key, id));
                }
            }
        }
        panic!("the probe never arrived");
    }

    async fn synced(&mut self, session: u64) {
        self.wait_for(|f| {
            matches!(f, CoreFrame::Synced { session: s } if s.0 == session).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn an_edge_attaches_submits_and_gets_deliver_then_accepted() {
    // The whole link path: handshake, attach/replay/Synced, submit on a lane, push on a
    // lane, ack on control, Accepted on control.
    let dir = tempfile::tempdir().unwrap();
    let (core, pki) = start_core(dir.path()).await;
    let mut edge = FakeEdge::connect(core.local_addr(), &pki).await;
    edge.attach(1, "alice", 10).await;
    edge.attach(2, "bob", 20).await;
    edge.synced(1).await;
    edge.synced(2).await;

    let key = edge.submit(1, "alice", "bob", 1, "gg").await;
    let message = edge
        .wait_for(|f| match f {
            CoreFrame::Deliver { sessions, message } if sessions == &[SessionId(2)] => {
                Some(message.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(
        (message.text.as_str(), &message.from, message.key),
        ("gg", &user("alice"), key)
    );
    edge.ack(2, message.id).await;
    let (session, id) = edge
        .wait_for(|f| match f {
            CoreFrame::Accepted {
                session,
                key: k,
                id,
            } if *k == key => Some((*session, *id)),
            _ => None,
        })
        .await;
    assert_eq!((session, id), (SessionId(1), message.id));
    assert_eq!(core.stats().submitted, 1);
    core.shutdown().await;
}

#[tokio::test]
async fn an_edge_without_a_client_certificate_gets_nothing() {
    // Only authenticated edges may speak for users.
    let dir = tempfile::tempdir().unwrap();
    let (core, pki) = start_core(dir.path()).await;
    let endpoint = edge_endpoint(&pki, false);
    let refused = tokio::time::timeout(WAIT, async {
        let conn = endpoint
            .connect(core.local_addr(), DEV_SERVER_NAME)
            .unwrap()
            .await?;
        let (mut send, recv) = conn.open_bi().await?;
        let hello = EdgeHello {
            version: PROTOCOL_VERSION,
            edge: "anon".into(),
            capabilities: 0,
        };
        let _ = transport::write_frame(&mut send, &EdgeFrame::EdgeHello(hello)).await;
        match FramedRecv::new(recv).next::<CoreFrame>().await {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) | Err(_) => Ok::<_, quinn::ConnectionError>(None),
        }
    })
    .await
    .expect("the core answers or closes in time");
    assert!(
        !matches!(refused, Ok(Some(_))),
        "a core frame reached an unauthenticated edge"
    );
    core.shutdown().await;
}

#[tokio::test]
async fn an_edge_with_another_protocol_version_is_closed_with_unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let (core, pki) = start_core(dir.path()).await;
    let refused = FakeEdge::connect_as(core.local_addr(), &pki, PROTOCOL_VERSION + 1).await;
    assert_eq!(refused.err(), Some(ErrorCode::UnsupportedVersion));
    core.shutdown().await;
}

#[tokio::test]
async fn garbage_on_a_lane_closes_that_edge_while_another_keeps_working() {
    // One misbehaving edge must not take the core or the other edges down.
    let dir = tempfile::tempdir().unwrap();
    let (core, pki) = start_core(dir.path()).await;
    let bad = FakeEdge::connect(core.local_addr(), &pki).await;
    let mut good = FakeEdge::connect(core.local_addr(), &pki).await;
    good.attach(1, "carol", 1).await;
    good.synced(1).await;

    let mut raw = bad.conn.open_uni().await.unwrap();
    // A lane, then a length prefix that never ends (a malformed varint).
    raw.write_all(&[STREAM_KIND_LANE, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, bad.conn.closed()).await.unwrap();
    assert_eq!(
        transport::close_code(&closed).map(|(c, _)| c),
        Some(ErrorCode::ProtocolViolation)
    );

    let key = good.submit(1, "dave", "carol", 1, "still here?").await;
    let text = good
        .wait_for(|f| match f {
            CoreFrame::Deliver { message, .. } => Some(message.text.clone()),
            _ => None,
        })
        .await;
    assert_eq!(text, "still here?");
    good.wait_for(|f| matches!(f, CoreFrame::Accepted { key: k, .. } if *k == key).then_some(()))
        .await;
    core.shutdown().await;
}

#[tokio::test]
async fn accepted_messages_survive_a_restart_and_are_replayed_in_order() {
    // "Nothing is lost": what the core answered Accepted is there after a restart, and
    // ids after the restart do not reuse old ones.
    let dir = tempfile::tempdir().unwrap();
    let (core, pki) = start_core(dir.path()).await;
    let mut edge = FakeEdge::connect(core.local_addr(), &pki).await;
    let mut keys = Vec::new();
    for i in 1..=3 {
        keys.push(edge.submit(7, "alice", "bob", i, &format!("m{i}")).await);
    }
    let mut accepted = Vec::new();
    while accepted.len() < 3 {
        let (key, id) = edge
            .wait_for(|f| match f {
                CoreFrame::Accepted { key, id, .. } => Some((*key, *id)),
                _ => None,
            })
            .await;
        accepted.push((key, id));
    }
    drop(edge);
    core.shutdown().await;

    let (core, pki) = start_core(dir.path()).await;
    let mut edge = FakeEdge::connect(core.local_addr(), &pki).await;
    let (replayed, new_id) = edge.replay_to_bob(4).await;
    accepted.sort_by_key(|(_, id)| *id);
    assert_eq!(
        accepted.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        keys,
        "ids follow submits"
    );
    assert_eq!(replayed, accepted);
    assert!(new_id > accepted[2].1, "ids resume above the old ones");
    core.shutdown().await;
}

/// Environment variable telling [`crash_child_core`] where to run.
const CHILD_DIR_ENV: &str = "QUICHAT_CORE_CRASH_DIR";

/// Not a test on its own: the child process of
/// [`accepted_messages_survive_sigkill`]. It runs a core and prints its address.
#[tokio::test]
async fn crash_child_core() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let (core, _pki) = start_core(Path::new(&dir)).await;
    println!("\nCORE_ADDR={}", core.local_addr());
    // Wait to be killed (bounded, so a lost parent does not leave us forever).
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Kills the child core if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn accepted_messages_survive_sigkill() {
    // The core may die at any moment; everything it answered Accepted (committed, since
    // the recipient is offline) must be replayed by the next core on the same files.
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(&dir.path().join("pki")).unwrap();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_core",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let addr: SocketAddr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(100)
            .find_map(|line| {
                line.split_once("CORE_ADDR=")
                    .map(|(_, a)| a.trim().parse().unwrap())
            })
            .expect("the child core printed its address")
    })
    .await
    .unwrap();

    let mut edge = FakeEdge::connect(addr, &pki).await;
    const SENT: u64 = 300;
    for i in 1..=SENT {
        edge.submit(7, "alice", "bob", i, &format!("m{i}")).await;
    }
    let mut accepted = Vec::new();
    while accepted.len() < 50 {
        let key = edge
            .wait_for(|f| match f {
                CoreFrame::Accepted { key, .. } => Some(*key),
                _ => None,
            })
            .await;
        accepted.push(key);
    }
    child.0.kill().unwrap(); // SIGKILL on Unix
    child.0.wait().unwrap();
    drop(edge);

    let core = Core::start(core_config(dir.path(), &pki)).await.unwrap();
    let mut edge = FakeEdge::connect(core.local_addr(), &pki).await;
    let (replayed, _) = edge.replay_to_bob(SENT + 1).await;
    let replayed: Vec<SenderKey> = replayed.into_iter().map(|(key, _)| key).collect();
    for key in &accepted {
        assert!(
            replayed.contains(key),
            "accepted {key:?} was lost in the crash"
        );
    }
    let counters: Vec<u64> = replayed.iter().map(|k| k.counter).collect();
    assert!(
        counters.windows(2).all(|w| w[0] < w[1]),
        "replayed in order: {counters:?}"
    );
    core.shutdown().await;
}
