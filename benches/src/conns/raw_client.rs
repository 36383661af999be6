//! A minimal game client for holding many idle connections: QUIC, the control stream,
//! `Hello`/`Welcome` — exactly what the `client` library does up to the point where it
//! would sit idle (like it, a lane's stream is opened only when the lane first carries a
//! frame) — and nothing else running.
//!
//! The `client` library gives every client its own endpoint (one UDP socket each), and
//! 10 000 clients would need 10 000 sockets; a process here may have 20 000 files open.
//! [`Dialer`] instead shares one quinn [`quinn::Endpoint`] between
//! [`Dialer::per_endpoint`] connections, so 10 000 clients need 100 sockets. An
//! [`IdleConn`] runs no task of its own: it only holds its streams, so the load
//! generator's memory stays small and the server sees a client that is simply quiet
//! (QUIC keep-alives only). For the liveness check at the end, an [`IdleConn`] can still
//! send a message, wait for its `Accepted`, and receive and acknowledge a delivery.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use protocol::frames::client::{Ack, ClientFrame, Hello, SendMessage};
use protocol::frames::{ALPN_CLIENT, PROTOCOL_VERSION, STREAM_KIND_LANE};
use protocol::{ConversationId, DeviceId, IdRange, MessageId, SenderKey, ServerFrame, UserId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use transport::{FramedRecv, TransportProfile};

/// How long the tokens minted for the benchmark's clients stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Deliveries read from a checked recipient's lanes, waiting to be matched. Only the few
/// connections of the liveness check have one; when full, the lane readers wait (QUIC
/// flow control holds the edge back), nothing is dropped.
const INBOX_FRAMES: usize = 64;

/// Dials connections to one edge, many per UDP socket.
#[derive(Debug)]
pub struct Dialer {
    endpoints: Vec<quinn::Endpoint>,
    per_endpoint: usize,
    quic: quinn::ClientConfig,
    edge: SocketAddr,
    secret: Vec<u8>,
    timeout: Duration,
}

impl Dialer {
    /// A dialer for up to `clients_max` connections to `edge`, trusting the CA in
    /// `ca_cert`, minting HS256 tokens with `secret`, `per_endpoint` connections per UDP
    /// socket, each handshake bounded by `timeout`. Binds every socket now.
    pub fn new(
        edge: SocketAddr,
        ca_cert: &Path,
        secret: Vec<u8>,
        clients_max: usize,
        per_endpoint: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let per_endpoint = per_endpoint.max(1);
        let roots = transport::tls::load_certs(ca_cert)?;
        // The same transport settings as the `client` library, so the edge sees the same
        // peers it would in a game.
        let quic = transport::tls::client_config(
            roots,
            ALPN_CLIENT,
            None,
            &TransportProfile::client_link(),
        )?;
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let endpoints = (0..clients_max.div_ceil(per_endpoint).max(1))
            .map(|_| quinn::Endpoint::client(local).context("binding a client UDP socket"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            per_endpoint,
            quic,
            edge,
            secret,
            timeout,
        })
    }

    /// How many UDP sockets the dialer uses.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Connections per UDP socket.
    pub fn per_endpoint(&self) -> usize {
        self.per_endpoint
    }

    /// The user the `index`-th client is.
    pub fn user(index: usize) -> Result<UserId> {
        Ok(UserId::new(format!("conns-{index}"))?)
    }

    /// Connects client `index` (user `conns-<index>`, device `index + 1`) and completes
    /// `Hello`/`Welcome`. Returns the connection and the time from the start of the QUIC
    /// handshake to `Welcome`.
    pub async fn dial(&self, index: usize) -> Result<(IdleConn, Duration)> {
        let user = Self::user(index)?;
        let token =
            edge_relay::auth::mint_hs256(&self.secret, &user, None, TOKEN_TTL).context("token")?;
        let endpoint = self
            .endpoints
            .get(index / self.per_endpoint)
            .with_context(|| format!("client {index} is beyond the dialer's capacity"))?;
        let started = Instant::now();
        let handshake = async {
            let conn = endpoint
                .connect_with(
                    self.quic.clone(),
                    self.edge,
                    transport::pki::DEV_SERVER_NAME,
                )?
                .await
                .context("QUIC handshake")?;
            let (mut control_send, control_recv) = conn.open_bi().await?;
            let hello = ClientFrame::Hello(Hello {
                version: PROTOCOL_VERSION,
                token,
                device: DeviceId(index as u64 + 1),
                // What the client library announces, so the edge keeps for each
                // connection what it keeps for a real client.
                capabilities: protocol::frames::CAP_LANE_COPIES,
            });
            transport::write_frame(&mut control_send, &hello).await?;
            let mut control_recv = FramedRecv::new(control_recv);
            let welcome = match control_recv.next::<ServerFrame>().await {
                Ok(Some(ServerFrame::Welcome(welcome))) => welcome,
                Ok(Some(other)) => bail!("expected Welcome, got {other:?}"),
                Ok(None) => bail!("control stream ended before Welcome"),
                Err(e) => match conn.close_reason() {
                    Some(reason) => bail!("refused: {reason}"),
                    None => return Err(e.into()),
                },
            };
            let took = started.elapsed();
            // Lanes are opened at their first frame, as the client library does.
            let lanes_out = (0..welcome.limits.lanes).map(|_| None).collect();
            anyhow::Ok((
                IdleConn {
                    user,
                    lanes: welcome.limits.lanes,
                    conn,
                    control_send,
                    control_recv,
                    lanes_out,
                    synced: false,
                    inbox: None,
                },
                took,
            ))
        };
        tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| anyhow!("no Welcome within {:?}", self.timeout))?
    }

    /// Closes every socket, letting close frames go out (bounded wait).
    pub async fn shutdown(&self) {
        for endpoint in &self.endpoints {
            endpoint.close(0u32.into(), b"benchmark done");
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// An established, welcomed client connection that sits idle.
#[derive(Debug)]
pub struct IdleConn {
    /// Who this client is.
    pub user: UserId,
    lanes: u8,
    conn: quinn::Connection,
    control_send: quinn::SendStream,
    control_recv: FramedRecv,
    /// Our lanes, each opened (and kept: dropping it would finish it) at its first frame.
    lanes_out: Vec<Option<quinn::SendStream>>,
    synced: bool,
    /// Readers of the edge's lanes; only set up for the liveness check.
    inbox: Option<Inbox>,
}

/// The edge's lanes of one connection, read by one task each into one queue.
#[derive(Debug)]
struct Inbox {
    rx: mpsc::Receiver<ServerFrame>,
    /// Accepts the lanes as the edge opens them (at their first frame) and reads each.
    /// Dropped with the connection; aborting the readers then is harmless.
    _readers: JoinSet<()>,
}

impl IdleConn {
    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.conn.close_reason().map(|reason| reason.to_string())
    }

    /// Whether `Synced` arrived: the core attached the session and replayed what it held.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Reads the control stream until `Synced`, within `timeout`.
    pub async fn wait_synced(&mut self, timeout: Duration) -> Result<()> {
        if self.synced {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.control_recv.next::<ServerFrame>()).await {
                Err(_) => bail!("no Synced within {timeout:?}"),
                Ok(Ok(Some(ServerFrame::Synced))) => {
                    self.synced = true;
                    return Ok(());
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => bail!("control stream ended before Synced"),
                Ok(Err(e)) => bail!("control stream: {e}"),
            }
        }
    }

    /// Sends `text` to `to` on the conversation's lane, as sender key `key`.
    pub async fn send(&mut self, to: &UserId, key: SenderKey, text: String) -> Result<()> {
        let lane = ConversationId::direct(&self.user, to).lane(self.lanes);
        let slot = self
            .lanes_out
            .get_mut(usize::from(lane))
            .context("the edge announced no lanes")?;
        let stream = match slot {
            Some(stream) => stream,
            None => {
                let mut stream = self.conn.open_uni().await?;
                stream.write_all(&[STREAM_KIND_LANE]).await?;
                slot.insert(stream)
            }
        };
        let frame = ClientFrame::Send(SendMessage {
            to: to.clone(),
            key,
            text,
        });
        transport::write_frame(stream, &frame).await?;
        Ok(())
    }

    /// Reads the control stream until the answer to `key`, within `timeout`.
    pub async fn wait_accepted(&mut self, key: SenderKey, timeout: Duration) -> Result<MessageId> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.control_recv.next::<ServerFrame>())
                .await
                .map_err(|_| anyhow!("no answer within {timeout:?}"))??;
            match frame {
                Some(ServerFrame::Accepted(a)) if a.key == key => return Ok(a.id),
                Some(ServerFrame::Rejected(r)) if r.key == key => {
                    bail!("rejected: {} ({})", r.code, r.detail)
                }
                Some(ServerFrame::Synced) => self.synced = true,
                Some(_) => {}
                None => bail!("control stream ended"),
            }
        }
    }

    /// Starts reading the edge's lanes (each accepted when the edge opens it, at its first
    /// frame), so deliveries can be received. Idle connections skip this.
    pub fn start_reading(&mut self) {
        if self.inbox.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel(INBOX_FRAMES);
        let mut readers = JoinSet::new();
        let conn = self.conn.clone();
        let lanes = self.lanes;
        readers.spawn(async move {
            // Aborted with the set, which aborts the readers too.
            let mut lane_readers = JoinSet::new();
            for _ in 0..lanes {
                let Ok(recv) = conn.accept_uni().await else {
                    break;
                };
                let tx = tx.clone();
                lane_readers.spawn(async move {
                    let mut recv = FramedRecv::new(recv);
                    if recv.expect_kind(STREAM_KIND_LANE).await.is_err() {
                        return;
                    }
                    while let Ok(Some(frame)) = recv.next::<ServerFrame>().await {
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
            while lane_readers.join_next().await.is_some() {}
        });
        self.inbox = Some(Inbox {
            rx,
            _readers: readers,
        });
    }

    /// Waits for a delivery whose text is `text` (after [`IdleConn::start_reading`]),
    /// acknowledges it on the control stream and returns its id.
    pub async fn receive(&mut self, text: &str, timeout: Duration) -> Result<MessageId> {
        let inbox = self
            .inbox
            .as_mut()
            .context("start_reading was not called")?;
        let deadline = Instant::now() + timeout;
        let id = loop {
            let frame = tokio::time::timeout_at(deadline, inbox.rx.recv())
                .await
                .map_err(|_| anyhow!("no delivery within {timeout:?}"))?
                .context("the lanes ended")?;
            if let ServerFrame::Deliver(message) = frame
                && message.text == text
            {
                break message.id;
            }
        };
        let ack = ClientFrame::Ack(Ack {
            ranges: vec![IdRange {
                first: id,
                last: id,
            }],
        });
        transport::write_frame(&mut self.control_send, &ack).await?;
        Ok(id)
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"benchmark done");
    }
}
