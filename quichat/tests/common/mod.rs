//! The end-to-end test harness: real cores, edges and clients on loopback.
//!
//! A [`Harness`] owns a temporary directory with a dev PKI and a token secret. From it a
//! test starts a core (in-process with [`Harness::start_core`], or as a `quichat core`
//! child process with [`Harness::spawn_core`], which can be killed with SIGKILL), any
//! number of edges ([`Harness::start_edge`]), and clients with a chosen device id
//! ([`Harness::connect`]). [`RawClient`] speaks the client protocol by hand, for tests
//! that must put exactly the bytes they want on the wire.
//!
//! Every wait is bounded ([`WAIT`] unless a test says otherwise) and fails the test with a
//! message saying what did not happen. Every child process is killed when its guard is
//! dropped, including when a test panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client::{Backoff, CertificateDer, Client, ClientConfig, Event, Events, Message};
use edge_relay::config::{AuthConfig, CoreConfig as EdgeCoreLink, EdgeTlsPaths};
use edge_relay::{EdgeConfig, EdgeHandle};
use protocol::frames::client::{ClientFrame, Hello, SendMessage, ServerFrame, Welcome};
use protocol::frames::{ALPN_CLIENT, PROTOCOL_VERSION, STREAM_KIND_LANE};
use protocol::{DeviceId, ErrorCode, SenderKey, UserId};
use server::{CoreConfig, CoreHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use transport::{DevPki, FramedRecv, TransportProfile};

/// How long a test waits for one thing to happen before failing.
pub const WAIT: Duration = Duration::from_secs(15);
/// The HS256 secret every test edge verifies tokens with.
pub const SECRET: &[u8] = b"quichat end-to-end test secret";
/// A rate limit high enough that only tests about the rate limit ever meet it.
pub const RATE_UNLIMITED: u32 = 100_000;

/// A user id (panics on an invalid one: test ids are literals).
pub fn uid(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

/// The display name every test token carries for `user`, so tests can check the stamp.
pub fn display_name(user: &str) -> String {
    format!("{user} (display)")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits for `fut` at most `limit`, failing the test with `what` if it takes longer.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, at most `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    within(limit, what, async {
        loop {
            if let Some(out) = check() {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A temporary directory with a dev PKI and a token secret, from which cores, edges and
/// clients are started.
pub struct Harness {
    /// Removed when the harness is dropped.
    pub dir: tempfile::TempDir,
    /// The dev certificates.
    pub pki: DevPki,
    /// The file holding [`SECRET`].
    pub secret_file: PathBuf,
    /// The CA clients trust.
    pub roots: Vec<CertificateDer<'static>>,
}

impl Harness {
    /// A fresh directory with certificates and a secret. Logs go to the test's output
    /// when `RUST_LOG` is set.
    pub fn new() -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            // Fails only if another test of this binary installed it first.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(&dir.path().join("pki")).unwrap();
        let secret_file = dir.path().join("token-secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        let roots = client::load_roots(&pki.ca_cert).unwrap();
        Self {
            dir,
            pki,
            secret_file,
            roots,
        }
    }

    /// The core's data directory (one per harness; a restarted core reuses it).
    pub fn core_data_dir(&self) -> PathBuf {
        self.dir.path().join("core")
    }

    /// The core's redb file.
    pub fn core_db(&self) -> PathBuf {
        self.core_data_dir().join("core.redb")
    }

    /// An in-process core configuration on a free loopback port.
    pub fn core_config(&self) -> CoreConfig {
        CoreConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.core_data_dir(),
            cert: Some(self.pki.core_cert.clone()),
            key: Some(self.pki.core_key.clone()),
            edge_ca: Some(self.pki.ca_cert.clone()),
            ..CoreConfig::default()
        }
    }

    /// Starts an in-process core with [`Harness::core_config`].
    pub async fn start_core(&self) -> CoreHandle {
        within(
            WAIT,
            "the core to start",
            server::Core::start(self.core_config()),
        )
        .await
        .unwrap()
    }

    /// An edge configuration on a free loopback port in front of the core at `core`,
    /// with a rate limit no test meets by accident.
    pub fn edge_config(&self, core: SocketAddr) -> EdgeConfig {
        let mut config = EdgeConfig::new(
            EdgeTlsPaths::from_dev_pki(&self.pki),
            EdgeCoreLink::new(core.to_string(), transport::pki::DEV_SERVER_NAME),
            AuthConfig::Hs256SecretFile(self.secret_file.clone()),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.name = "e2e-edge".into();
        config.send_per_second = RATE_UNLIMITED;
        config.send_burst = RATE_UNLIMITED;
        config
    }

    /// Starts an edge. Binding a port another edge just released can fail for a moment
    /// (its endpoint is still closing), so an address-in-use error is retried briefly.
    pub async fn start_edge(&self, config: EdgeConfig) -> EdgeHandle {
        within(WAIT, "the edge to start", async {
            loop {
                match edge_relay::Edge::start(config.clone()).await {
                    Ok(edge) => return edge,
                    Err(edge_relay::EdgeError::Bind { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("starting the edge: {e}"),
                }
            }
        })
        .await
    }

    /// A valid token for `user` (display name [`display_name`]), valid for an hour.
    pub fn token(&self, user: &str) -> String {
        edge_relay::auth::mint_hs256(
            SECRET,
            &uid(user),
            Some(&display_name(user)),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    /// A client configuration for `user` on device `device` at `edge`, reconnecting
    /// quickly (tests restart servers and should not wait for a production backoff).
    pub fn client_config(&self, edge: SocketAddr, user: &str, device: u64) -> ClientConfig {
        let mut config = ClientConfig::new(
            edge,
            transport::pki::DEV_SERVER_NAME,
            self.roots.clone(),
            self.token(user),
            DeviceId(device),
        );
        config.reconnect = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            jitter: 1.0,
        };
        config
    }

    /// Connects `user` on device `device` to the edge at `edge`.
    pub async fn connect(&self, edge: SocketAddr, user: &str, device: u64) -> (Client, Events) {
        self.connect_with(self.client_config(edge, user, device))
            .await
    }

    /// Connects with a configuration the test adjusted.
    pub async fn connect_with(&self, config: ClientConfig) -> (Client, Events) {
        let device = config.device;
        within(WAIT, "a client to connect", Client::connect(config))
            .await
            .unwrap_or_else(|e| panic!("connecting device {device:?}: {e}"))
    }

    /// Starts `quichat core` as a child process on `listen` (port 0 picks one) with the
    /// harness's data directory, and waits until it prints its address.
    pub async fn spawn_core(&self, listen: SocketAddr) -> CoreProcess {
        CoreProcess::spawn(self, listen).await
    }
}

// ---------------------------------------------------------------------------------------
// A core as a child process.

/// A `quichat core` child process. Killed (SIGKILL) when dropped, so a failing test
/// leaves no process behind.
pub struct CoreProcess {
    child: tokio::process::Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its standard error (logs), for failure messages.
    pub log: PathBuf,
}

impl CoreProcess {
    async fn spawn(harness: &Harness, listen: SocketAddr) -> Self {
        let log = harness
            .dir
            .path()
            .join(format!("core-{}.log", now_millis()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quichat"));
        command
            .arg("core")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(harness.core_data_dir())
            .arg("--cert")
            .arg(&harness.pki.core_cert)
            .arg("--key")
            .arg(&harness.pki.core_key)
            .arg("--edge-ca")
            .arg(&harness.pki.ca_cert)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let what = format!(
            "`quichat core` to print its address (log: {})",
            log.display()
        );
        let addr = within(WAIT, &what, async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(line) => {
                        if let Some(addr) = line.strip_prefix("core listening on ") {
                            return addr.trim().parse::<SocketAddr>().unwrap();
                        }
                    }
                    None => panic!(
                        "`quichat core` exited before listening; see {}",
                        log.display()
                    ),
                }
            }
        })
        .await;
        // Keep reading standard output so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr, log }
    }

    /// Kills the process with SIGKILL (no shutdown, no final commit) and reaps it.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        within(WAIT, "the killed core to exit", self.child.wait())
            .await
            .unwrap();
    }
}

impl Drop for CoreProcess {
    fn drop(&mut self) {
        // `kill_on_drop` also does this; being explicit costs nothing.
        let _ = self.child.start_kill();
    }
}

/// A child process killed when dropped (for `quichat dev` and other long-running ones).
pub struct ChildGuard(pub tokio::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---------------------------------------------------------------------------------------
// Events.

/// The next event, failing the test after `limit` or if the client closed.
pub async fn next_event(events: &mut Events, limit: Duration) -> Event {
    within(limit, "a client event", events.next())
        .await
        .expect("the client's event stream ended")
}

/// The next message, skipping other events.
pub async fn next_message(events: &mut Events, limit: Duration) -> Message {
    within(limit, "a message", async {
        loop {
            match events.next().await {
                Some(Event::Message(m)) => return m,
                Some(_) => {}
                None => panic!("the client's event stream ended"),
            }
        }
    })
    .await
}

/// What a client was shown.
#[derive(Debug, Default)]
pub struct Collected {
    /// Every message, in the order shown.
    pub messages: Vec<Message>,
    /// Whether `Synced` was seen.
    pub synced: bool,
    /// How many times the client reported `Connected` after its first connection.
    pub reconnects: usize,
    /// Every other event, for failure messages.
    pub other: Vec<String>,
}

impl Collected {
    /// The texts, in the order shown.
    pub fn texts(&self) -> Vec<String> {
        self.messages.iter().map(|m| m.text.clone()).collect()
    }

    /// The texts of each sender, in the order shown.
    pub fn texts_by_sender(&self) -> HashMap<String, Vec<String>> {
        let mut by = HashMap::<String, Vec<String>>::new();
        for m in &self.messages {
            by.entry(m.from.to_string())
                .or_default()
                .push(m.text.clone());
        }
        by
    }
}

/// Takes events until `count` messages were shown, failing after `limit` with how far it
/// got. Messages beyond `count` that are already queued are left for the caller.
pub async fn collect(events: &mut Events, count: usize, limit: Duration) -> Collected {
    let mut out = Collected::default();
    let deadline = tokio::time::Instant::now() + limit;
    while out.messages.len() < count {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Event::Message(m))) => out.messages.push(m),
            Ok(Some(Event::Synced)) => out.synced = true,
            Ok(Some(Event::Connected { .. })) => out.reconnects += 1,
            Ok(Some(other)) => out.other.push(format!("{other:?}")),
            Ok(None) => panic!(
                "the event stream ended after {} of {count} messages",
                out.messages.len()
            ),
            Err(_) => panic!(
                "timed out after {limit:?} with {} of {count} messages; other events: {:?}; last: {:?}",
                out.messages.len(),
                out.other,
                out.messages
                    .last()
                    .map(|m| m.text.chars().take(40).collect::<String>())
            ),
        }
    }
    out
}

/// Collects `count` messages in a background task, so the client keeps draining (and
/// acknowledging) while the test sends.
pub fn spawn_collect(
    mut events: Events,
    count: usize,
    limit: Duration,
) -> JoinHandle<(Collected, Events)> {
    tokio::spawn(async move {
        let collected = collect(&mut events, count, limit).await;
        (collected, events)
    })
}

/// Waits until `Synced` (the server sent everything stored for this device), collecting
/// the messages shown on the way.
pub async fn until_synced(events: &mut Events, limit: Duration) -> Collected {
    let mut out = Collected::default();
    within(limit, "Synced", async {
        loop {
            match events.next().await {
                Some(Event::Message(m)) => out.messages.push(m),
                Some(Event::Synced) => {
                    out.synced = true;
                    return;
                }
                Some(_) => {}
                None => panic!("the event stream ended before Synced"),
            }
        }
    })
    .await;
    out
}

/// Every message arrives exactly once: `got` holds exactly the texts of `sent`, in the
/// same order.
pub fn assert_in_order_once(what: &str, sent: &[String], got: &[String]) {
    let mut counts = HashMap::<&str, usize>::new();
    for text in got {
        *counts.entry(text.as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "{what}: shown more than once: {duplicates:?}"
    );
    let missing: Vec<_> = sent
        .iter()
        .filter(|t| !counts.contains_key(t.as_str()))
        .collect();
    assert!(missing.is_empty(), "{what}: never shown: {missing:?}");
    assert_eq!(got.len(), sent.len(), "{what}: unexpected extra messages");
    assert_eq!(got, sent, "{what}: out of order");
}

// ---------------------------------------------------------------------------------------
// A raw client: the client protocol by hand.

/// A connection to an edge that speaks the client protocol frame by frame (or byte by
/// byte), with no delivery logic: what the test writes is what goes on the wire.
pub struct RawClient {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The edge's `Welcome`.
    pub welcome: Welcome,
    /// Frames from the edge's control stream (`Accepted`, `Rejected`, …).
    pub control: mpsc::Receiver<ServerFrame>,
    control_send: quinn::SendStream,
    lane: Option<quinn::SendStream>,
    _endpoint: quinn::Endpoint,
}

impl RawClient {
    /// Dials `edge`, sends `Hello` with `token`, and waits for `Welcome`. A refusal is
    /// returned as the edge's close code and reason.
    pub async fn connect(
        harness: &Harness,
        edge: SocketAddr,
        token: String,
        device: u64,
    ) -> Result<RawClient, (ErrorCode, String)> {
        within(WAIT, "a raw client to connect", async {
            let quic = transport::tls::client_config(
                harness.roots.clone(),
                ALPN_CLIENT,
                None,
                &TransportProfile::client_link(),
            )
            .unwrap();
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let conn = endpoint
                .connect_with(quic, edge, transport::pki::DEV_SERVER_NAME)
                .unwrap()
                .await
                .unwrap();
            let (mut send, recv) = conn.open_bi().await.unwrap();
            let hello = ClientFrame::Hello(Hello {
                version: PROTOCOL_VERSION,
                token,
                device: DeviceId(device),
                capabilities: 0,
            });
            transport::write_frame(&mut send, &hello).await.unwrap();
            let mut recv = FramedRecv::new(recv);
            let welcome = match recv.next::<ServerFrame>().await {
                Ok(Some(ServerFrame::Welcome(w))) => w,
                Ok(other) => panic!("expected Welcome, got {other:?}"),
                Err(_) => {
                    let err = conn.closed().await;
                    return Err(transport::close_code(&err)
                        .unwrap_or_else(|| panic!("closed without a code: {err}")));
                }
            };
            let (tx, control) = mpsc::channel(1024);
            tokio::spawn(async move {
                while let Ok(Some(frame)) = recv.next::<ServerFrame>().await {
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
            });
            Ok(RawClient {
                conn,
                welcome,
                control,
                control_send: send,
                lane: None,
                _endpoint: endpoint,
            })
        })
        .await
    }

    /// Writes raw bytes on this client's one lane (opened, with its kind byte, on first
    /// use).
    pub async fn write_lane(&mut self, bytes: &[u8]) {
        if self.lane.is_none() {
            let mut lane = self.conn.open_uni().await.unwrap();
            lane.write_all(&[STREAM_KIND_LANE]).await.unwrap();
            self.lane = Some(lane);
        }
        self.lane.as_mut().unwrap().write_all(bytes).await.unwrap();
    }

    /// Opens a new unidirectional stream and writes `bytes` on it as they are (no kind
    /// byte added).
    pub async fn write_new_stream(&mut self, bytes: &[u8]) {
        let mut stream = self.conn.open_uni().await.unwrap();
        stream.write_all(bytes).await.unwrap();
    }

    /// Writes a frame on the control stream.
    pub async fn write_control(&mut self, frame: &ClientFrame) {
        transport::write_frame(&mut self.control_send, frame)
            .await
            .unwrap();
    }

    /// Sends `text` to `to` with sender key `key`, on the lane.
    pub async fn send(&mut self, to: &str, key: SenderKey, text: &str) {
        let bytes = send_frame_bytes(to, key, text);
        self.write_lane(&bytes).await;
    }

    /// The next frame on the control stream.
    pub async fn next_control(&mut self) -> ServerFrame {
        within(WAIT, "a control frame from the edge", self.control.recv())
            .await
            .expect("the control stream ended")
    }

    /// The next answer to a `Send` (`Accepted` or `Rejected`), skipping `Synced`.
    pub async fn next_answer(&mut self) -> ServerFrame {
        loop {
            match self.next_control().await {
                ServerFrame::Synced => {}
                frame => return frame,
            }
        }
    }

    /// Waits until the edge closes the connection; returns its code and reason.
    pub async fn closed(&self) -> (ErrorCode, String) {
        let err = within(WAIT, "the edge to close the raw client", self.conn.closed()).await;
        transport::close_code(&err).unwrap_or_else(|| panic!("closed without a code: {err}"))
    }
}

/// The encoded `Send` frame (length prefix included) for `text` to `to`.
pub fn send_frame_bytes(to: &str, key: SenderKey, text: &str) -> Vec<u8> {
    protocol::codec::encode_to_vec(&ClientFrame::Send(SendMessage {
        to: uid(to),
        key,
        text: text.into(),
    }))
    .unwrap()
}

/// Where `needle` first occurs in `haystack`.
pub fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Base64url without padding, as JWTs use.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((acc >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

/// Opens the redb file of a stopped core and reports how many messages it still holds
/// for `user`.
pub fn stored_inbox_len(db: &Path, user: &str) -> u64 {
    use server::store::LogStore;
    let store = server::store::redb_store::RedbStore::open(
        db,
        server::store::StoreConfig {
            device_ttl_ms: 7 * 24 * 3600 * 1000,
        },
    )
    .unwrap();
    store.user_state(&uid(user)).unwrap().inbox_len
}
