//! Test harness: a dev PKI, an edge on loopback, a fake core speaking the link protocol
//! with mutual TLS, and a raw test client speaking the client protocol.
//!
//! The fake core is deliberately dumb: it records every frame the edge sends and lets
//! the test answer by hand, so tests can assert exactly what crosses the link.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_relay::{AuthConfig, CoreConfig, EdgeConfig, EdgeHandle, EdgeTlsPaths};
use protocol::frames::client::{ClientFrame, Hello, Message, SendMessage, ServerFrame, Welcome};
use protocol::frames::link::{CoreFrame, CoreWelcome, EdgeFrame, EdgeHello};
use protocol::frames::{ALPN_CLIENT, ALPN_CORE, PROTOCOL_VERSION};
use protocol::ids::{DeviceId, SenderKey, ShardId, UserId};
use protocol::{ConversationId, ErrorCode};
use tokio::sync::mpsc;
use tokio::time::timeout;
use transport::tls::{self, ClientAuth};
use transport::{DevPki, FrameSender, FramedRecv, LaneSenders, TransportProfile};

/// How long a test waits for an event before failing.
pub const WAIT: Duration = Duration::from_secs(10);
/// The HS256 secret the test edges use.
pub const SECRET: &[u8] = b"edge-relay test secret";

/// Certificates and the token secret, in a temporary directory.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
    pub secret_file: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(&dir.path().join("pki")).unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        Self {
            dir,
            pki,
            secret_file,
        }
    }

    /// An edge configuration on a free loopback port, pointing at `core`.
    pub fn edge_config(&self, core: SocketAddr) -> EdgeConfig {
        let mut config = EdgeConfig::new(
            EdgeTlsPaths::from_dev_pki(&self.pki),
            CoreConfig::new(core.to_string(), transport::pki::DEV_SERVER_NAME),
            AuthConfig::Hs256SecretFile(self.secret_file.clone()),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.name = "test-edge".into();
        config.lanes = 4;
        config
    }

    /// Starts a fake core on a free loopback port.
    pub fn fake_core(&self) -> FakeCore {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        FakeCore::on_socket(&self.pki, socket)
    }
}

/// A valid token for `user`, named `name`, valid for an hour.
pub fn token(user: &str, name: &str) -> String {
    edge_relay::auth::mint_hs256(SECRET, &uid(user), Some(name), Duration::from_secs(3600)).unwrap()
}

pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

pub fn key(counter: u64) -> SenderKey {
    SenderKey { epoch: 1, counter }
}

pub async fn start_edge(config: EdgeConfig) -> EdgeHandle {
    edge_relay::Edge::start(config).await.unwrap()
}

/// Waits for `fut`, failing the test after [`WAIT`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------
// The fake core.

/// A core shard endpoint that accepts edges with mutual TLS.
pub struct FakeCore {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
}

impl FakeCore {
    /// A fake core serving on `socket` (which may already have received packets).
    pub fn on_socket(pki: &DevPki, socket: std::net::UdpSocket) -> Self {
        let config = tls::server_config(
            tls::load_certs(&pki.core_cert).unwrap(),
            tls::load_key(&pki.core_key).unwrap(),
            ALPN_CORE,
            ClientAuth::Required(tls::load_certs(&pki.ca_cert).unwrap()),
            &TransportProfile::core_link(),
        )
        .unwrap();
        let addr = socket.local_addr().unwrap();
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        Self { endpoint, addr }
    }

    /// Waits for an edge to connect and completes the handshake.
    pub async fn accept(&self) -> CoreConn {
        within("the edge to connect to the core", async {
            let incoming = self.endpoint.accept().await.unwrap();
            let conn = incoming.await.unwrap();
            let (send, recv) = conn.accept_bi().await.unwrap();
            let mut recv = FramedRecv::new(recv);
            let Some(EdgeFrame::EdgeHello(hello)) = recv.next::<EdgeFrame>().await.unwrap() else {
                panic!("the edge's first frame must be EdgeHello");
            };
            let mut send = send;
            let welcome = CoreWelcome {
                shard: ShardId(0),
                version: PROTOCOL_VERSION,
                lanes: 2,
                capabilities: 0,
            };
            transport::write_frame(&mut send, &CoreFrame::CoreWelcome(welcome))
                .await
                .unwrap();
            let control = transport::spawn_writer(send, None, 1024);
            let lanes = LaneSenders::open(&conn, 2, 4096, 0).await.unwrap();
            let (tx, frames) = mpsc::channel(100_000);
            tokio::spawn(read_edge_frames(recv, tx.clone()));
            let lanes_conn = conn.clone();
            tokio::spawn(async move {
                while let Ok(recv) = lanes_conn.accept_uni().await {
                    let mut recv = FramedRecv::new(recv);
                    recv.expect_kind(protocol::frames::STREAM_KIND_LANE)
                        .await
                        .unwrap();
                    tokio::spawn(read_edge_frames(recv, tx.clone()));
                }
            });
            CoreConn {
                conn,
                hello,
                control,
                lanes,
                frames,
            }
        })
        .await
    }
}

async fn read_edge_frames(mut recv: FramedRecv, tx: mpsc::Sender<EdgeFrame>) {
    while let Ok(Some(frame)) = recv.next::<EdgeFrame>().await {
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

/// One edge connection as the fake core sees it.
pub struct CoreConn {
    pub conn: quinn::Connection,
    pub hello: EdgeHello,
    control: FrameSender<CoreFrame>,
    lanes: LaneSenders<CoreFrame>,
    frames: mpsc::Receiver<EdgeFrame>,
}

impl CoreConn {
    /// The next frame from the edge (control stream or any lane).
    pub async fn next_frame(&mut self) -> EdgeFrame {
        within("a frame from the edge", self.frames.recv())
            .await
            .expect("edge link closed")
    }

    /// The next frame for which `pick` returns something; other frames are skipped.
    pub async fn next_matching<T>(&mut self, mut pick: impl FnMut(EdgeFrame) -> Option<T>) -> T {
        within("a matching frame from the edge", async {
            loop {
                let frame = self.frames.recv().await.expect("edge link closed");
                if let Some(out) = pick(frame) {
                    return out;
                }
            }
        })
        .await
    }

    pub async fn next_submit(&mut self) -> protocol::frames::link::Submit {
        self.next_matching(|f| match f {
            EdgeFrame::Submit(s) => Some(s),
            _ => None,
        })
        .await
    }

    pub async fn next_attach(&mut self) -> protocol::frames::link::Attach {
        self.next_matching(|f| match f {
            EdgeFrame::Attach(a) => Some(a),
            _ => None,
        })
        .await
    }

    /// Waits up to `quiet` for a frame; `None` if none came. Only for asserting that
    /// something does *not* happen, which has no event to wait for.
    pub async fn frame_within(&mut self, quiet: Duration) -> Option<EdgeFrame> {
        timeout(quiet, self.frames.recv()).await.ok().flatten()
    }

    pub async fn send_control(&self, frame: CoreFrame) {
        self.control.send(frame).await.unwrap();
    }

    pub async fn send_lane(&self, frame: CoreFrame) {
        self.lanes.lane(0).send(frame).await.unwrap();
    }

    /// Simulates the core going away: closes the connection.
    pub fn crash(&self) {
        self.conn
            .close(quinn::VarInt::from_u32(0), b"core restarting");
    }
}

// ---------------------------------------------------------------------------------------
// The test client.

/// How a test client behaves.
#[derive(Clone, Copy)]
pub struct ClientOptions {
    /// Open the announced number of lanes after `Welcome`.
    pub open_lanes: bool,
    /// Read the edge's delivery lanes (a slow consumer does not).
    pub read_lanes: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            open_lanes: true,
            read_lanes: true,
        }
    }
}

/// A raw QUIC client of the edge.
pub struct TestClient {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub welcome: Welcome,
    control_send: quinn::SendStream,
    control_recv: FramedRecv,
    lanes: Option<LaneSenders<ClientFrame>>,
    deliveries: mpsc::Receiver<Message>,
}

/// Dials the edge and returns the connection (TLS done, nothing sent).
pub async fn dial(env: &TestEnv, edge: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    let (endpoint, conn) = try_dial(env, edge).await;
    (endpoint, conn.unwrap())
}

/// Dials the edge; the connection attempt's outcome.
pub async fn try_dial(
    env: &TestEnv,
    edge: SocketAddr,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let config = tls::client_config(
        tls::load_certs(&env.pki.ca_cert).unwrap(),
        ALPN_CLIENT,
        None,
        &TransportProfile::client_link(),
    )
    .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = within("the TLS handshake", async {
        endpoint
            .connect(edge, transport::pki::DEV_SERVER_NAME)
            .unwrap()
            .await
    })
    .await;
    (endpoint, conn)
}

/// Sends `frame` as the first frame on a new control stream and returns what the edge
/// did: `Ok(Welcome)` or the close code and reason.
pub async fn hello_raw(
    conn: &quinn::Connection,
    frame: &ClientFrame,
) -> Result<(Welcome, quinn::SendStream, FramedRecv), (ErrorCode, String)> {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    transport::write_frame(&mut send, frame).await.unwrap();
    let mut recv = FramedRecv::new(recv);
    match within("the edge's answer to Hello", recv.next::<ServerFrame>()).await {
        Ok(Some(ServerFrame::Welcome(welcome))) => Ok((welcome, send, recv)),
        Ok(other) => panic!("expected Welcome or a close, got {other:?}"),
        Err(_) => Err(close_of(conn).await),
    }
}

/// The application close code and reason `conn` was closed with.
pub async fn close_of(conn: &quinn::Connection) -> (ErrorCode, String) {
    let err = within("the connection to close", conn.closed()).await;
    transport::close_code(&err).unwrap_or_else(|| panic!("not an application close: {err}"))
}

pub fn hello(token: String, device: u64) -> ClientFrame {
    ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        token,
        device: DeviceId(device),
        capabilities: 0,
    })
}

impl TestClient {
    pub async fn connect(env: &TestEnv, edge: SocketAddr, token: String) -> Self {
        Self::connect_with(env, edge, token, 1, ClientOptions::default()).await
    }

    pub async fn connect_with(
        env: &TestEnv,
        edge: SocketAddr,
        token: String,
        device: u64,
        options: ClientOptions,
    ) -> Self {
        let (endpoint, conn) = dial(env, edge).await;
        let (welcome, control_send, control_recv) = hello_raw(&conn, &hello(token, device))
            .await
            .unwrap_or_else(|(code, reason)| panic!("refused: {code}: {reason}"));
        let lanes = if options.open_lanes {
            Some(
                LaneSenders::open(&conn, welcome.limits.lanes, 1024, 0)
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        let (tx, deliveries) = mpsc::channel(100_000);
        if options.read_lanes {
            let lanes_conn = conn.clone();
            tokio::spawn(async move {
                while let Ok(recv) = lanes_conn.accept_uni().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut recv = FramedRecv::new(recv);
                        if recv
                            .expect_kind(protocol::frames::STREAM_KIND_LANE)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        while let Ok(Some(frame)) = recv.next::<ServerFrame>().await {
                            let ServerFrame::Deliver(message) = frame else {
                                panic!("only Deliver travels on lanes, got {frame:?}");
                            };
                            if tx.send(message).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        Self {
            endpoint,
            conn,
            welcome,
            control_send,
            control_recv,
            lanes,
            deliveries,
        }
    }

    /// Sends a message to `to` on its conversation's lane.
    pub async fn send(&self, to: &str, key: SenderKey, text: &str) {
        let lanes = self.lanes.as_ref().expect("this client opened no lanes");
        let to = uid(to);
        let lane = ConversationId::direct(&self.welcome.user, &to).lane(lanes.count());
        let frame = ClientFrame::Send(SendMessage {
            to,
            key,
            text: text.into(),
        });
        lanes.lane(lane).send(frame).await.unwrap();
    }

    /// Writes a frame on the control stream.
    pub async fn send_control(&mut self, frame: &ClientFrame) {
        transport::write_frame(&mut self.control_send, frame)
            .await
            .unwrap();
    }

    /// The next frame on the control stream.
    pub async fn next_control(&mut self) -> ServerFrame {
        within(
            "a control frame from the edge",
            self.control_recv.next::<ServerFrame>(),
        )
        .await
        .unwrap()
        .expect("control stream ended")
    }

    /// The next delivered message.
    pub async fn next_delivery(&mut self) -> Message {
        within("a delivery", self.deliveries.recv())
            .await
            .expect("lanes closed")
    }

    /// Opens a raw unidirectional stream and writes `bytes` on it.
    pub async fn write_raw_stream(&self, bytes: &[u8]) -> quinn::SendStream {
        let mut send = self.conn.open_uni().await.unwrap();
        // The edge may close the connection as soon as it has seen enough.
        let _ = send.write_all(bytes).await;
        send
    }

    pub async fn closed(&self) -> (ErrorCode, String) {
        close_of(&self.conn).await
    }
}
