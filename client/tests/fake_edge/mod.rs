//! A minimal edge (and core) in one, on loopback, built from `transport` and the frames:
//! enough to drive the client's I/O for real — handshake, lanes, acknowledgements,
//! replay, kicks — without the real edge and core. It stores every message until its
//! recipient acknowledges it and, unless told to stay silent, answers `Accepted` on
//! arrival. Tokens are `user:<id>`; `expired` is refused with `TokenExpired`, anything
//! else with `Unauthenticated`.

// Test support: a failure here should panic loudly, like in the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use protocol::frames::client::{Accepted, ClientFrame, Limits, Welcome};
use protocol::frames::{ALPN_CLIENT, STREAM_KIND_LANE};
use protocol::{ConversationId, ErrorCode, Message, MessageId, ServerFrame, SessionId, UserId};
use rustls_pki_types::CertificateDer;
use transport::tls::ClientAuth;
use transport::{FrameSender, FramedRecv, LaneSenders, TransportProfile};

pub const LANES: u8 = 4;
const QUEUE: usize = 1024;

pub struct FakeEdge {
    pub addr: SocketAddr,
    pub roots: Vec<CertificateDer<'static>>,
    state: Arc<Mutex<State>>,
    /// Bumped after every acknowledgement, so tests can await one.
    acked: Arc<tokio::sync::Notify>,
    _endpoint: quinn::Endpoint,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct State {
    id_last: u64,
    session_last: u64,
    /// Per recipient, messages not yet acknowledged.
    inbox: BTreeMap<UserId, BTreeMap<MessageId, Message>>,
    sessions: HashMap<UserId, Session>,
    /// Answer `Accepted` on arrival (otherwise say nothing).
    silent: bool,
    /// Every `Send` frame received, as (from, text).
    received: Vec<(UserId, String)>,
}

struct Session {
    conn: quinn::Connection,
    control: FrameSender<ServerFrame>,
    lanes: LaneSenders<ServerFrame>,
}

impl FakeEdge {
    pub async fn start() -> FakeEdge {
        let dir = tempfile::tempdir().unwrap();
        let pki = transport::DevPki::ensure(dir.path()).unwrap();
        let certs = transport::tls::load_certs(&pki.edge_cert).unwrap();
        let key = transport::tls::load_key(&pki.edge_key).unwrap();
        let config = transport::tls::server_config(
            certs,
            key,
            ALPN_CLIENT,
            ClientAuth::None,
            &TransportProfile::client_link(),
        )
        .unwrap();
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let accept_endpoint = endpoint.clone();
        let accept_state = state.clone();
        let acked = Arc::new(tokio::sync::Notify::new());
        let accept_acked = acked.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept_endpoint.accept().await {
                let state = accept_state.clone();
                let acked = accept_acked.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        serve(conn, state, acked).await;
                    }
                });
            }
        });
        let roots = transport::tls::load_certs(&pki.ca_cert).unwrap();
        FakeEdge {
            addr,
            roots,
            state,
            acked,
            _endpoint: endpoint,
            _dir: dir,
        }
    }

    /// Stop (or resume) answering `Accepted`.
    pub fn set_silent(&self, silent: bool) {
        self.state.lock().unwrap().silent = silent;
    }

    /// Closes `user`'s connection with `code`.
    pub fn kick(&self, user: &str, code: ErrorCode) {
        let state = self.state.lock().unwrap();
        let session = &state.sessions[&UserId::new(user).unwrap()];
        transport::close(&session.conn, code, "kicked by the test");
    }

    /// Opens a new lane to `user`'s connection and writes `bytes` on it as they are (a
    /// broken edge); returns that connection, to watch how it ends.
    pub async fn send_raw_lane(&self, user: &str, bytes: &[u8]) -> quinn::Connection {
        let conn = {
            let state = self.state.lock().unwrap();
            state.sessions[&UserId::new(user).unwrap()].conn.clone()
        };
        let mut lane = conn.open_uni().await.unwrap();
        lane.write_all(bytes).await.unwrap();
        conn
    }

    /// Texts of every `Send` received from `user`, in arrival order (re-sends included).
    pub fn received_from(&self, user: &str) -> Vec<String> {
        let user = UserId::new(user).unwrap();
        let state = self.state.lock().unwrap();
        state
            .received
            .iter()
            .filter(|(from, _)| *from == user)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Messages stored for `user` (not yet acknowledged).
    pub fn stored_for(&self, user: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .inbox
            .get(&UserId::new(user).unwrap())
            .map_or(0, BTreeMap::len)
    }

    /// Waits (at most `limit`) until nothing is stored for `user`; `false` on timeout.
    pub async fn wait_all_acknowledged(&self, user: &str, limit: std::time::Duration) -> bool {
        let wait = async {
            loop {
                // Register before checking, so an acknowledgement in between is not missed.
                let notified = self.acked.notified();
                if self.stored_for(user) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

async fn serve(conn: quinn::Connection, state: Arc<Mutex<State>>, acked: Arc<tokio::sync::Notify>) {
    let Ok((send, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut control_rx = FramedRecv::new(recv);
    let hello = match control_rx.next::<ClientFrame>().await {
        Ok(Some(ClientFrame::Hello(hello))) => hello,
        _ => return transport::close(&conn, ErrorCode::HelloExpected, "expected Hello"),
    };
    let user = match hello.token.strip_prefix("user:").map(UserId::new) {
        Some(Ok(user)) => user,
        _ if hello.token == "expired" => {
            return transport::close(&conn, ErrorCode::TokenExpired, "token expired");
        }
        _ => return transport::close(&conn, ErrorCode::Unauthenticated, "bad token"),
    };
    let control = transport::spawn_writer::<ServerFrame>(send, None, QUEUE);
    let session_id = {
        let mut s = state.lock().unwrap();
        s.session_last += 1;
        SessionId(s.session_last)
    };
    let limits = Limits {
        text_bytes_max: 4096,
        send_per_second: 1000,
        send_burst: 1000,
        lanes: LANES,
    };
    let welcome = Welcome {
        user: user.clone(),
        name: format!("{user}!"),
        session: session_id,
        limits,
        capabilities: 0,
    };
    control.send(ServerFrame::Welcome(welcome)).await.unwrap();
    let Ok(lanes) = LaneSenders::<ServerFrame>::open(&conn, LANES, QUEUE, 0).await else {
        return;
    };
    {
        // Register, then replay what is stored, then Synced.
        let mut s = state.lock().unwrap();
        for message in s.inbox.get(&user).into_iter().flat_map(BTreeMap::values) {
            let lane = ConversationId::direct(&message.from, &user).lane(LANES);
            lanes
                .lane(lane)
                .try_send(ServerFrame::Deliver(message.clone()))
                .unwrap();
        }
        control.try_send(ServerFrame::Synced).unwrap();
        let session = Session {
            conn: conn.clone(),
            control: control.clone(),
            lanes,
        };
        s.sessions.insert(user.clone(), session);
    }

    // Acknowledgements on the control stream.
    let ack_state = state.clone();
    let ack_user = user.clone();
    tokio::spawn(async move {
        while let Ok(Some(frame)) = control_rx.next::<ClientFrame>().await {
            if let ClientFrame::Ack(ack) = frame {
                let mut s = ack_state.lock().unwrap();
                if let Some(inbox) = s.inbox.get_mut(&ack_user) {
                    inbox.retain(|id, _| !ack.ranges.iter().any(|r| r.contains(*id)));
                }
                drop(s);
                acked.notify_waiters();
            }
        }
    });
    // The client's lanes.
    while let Ok(recv) = conn.accept_uni().await {
        let state = state.clone();
        let from = user.clone();
        tokio::spawn(async move {
            let mut lane = FramedRecv::new(recv);
            lane.expect_kind(STREAM_KIND_LANE).await.unwrap();
            while let Ok(Some(frame)) = lane.next::<ClientFrame>().await {
                if let ClientFrame::Send(send) = frame {
                    submit(&state, &from, send);
                }
            }
        });
    }
    let mut s = state.lock().unwrap();
    if s.sessions
        .get(&user)
        .is_some_and(|session| session.conn.stable_id() == conn.stable_id())
    {
        s.sessions.remove(&user);
    }
}

fn submit(state: &Mutex<State>, from: &UserId, send: protocol::frames::client::SendMessage) {
    let mut s = state.lock().unwrap();
    s.received.push((from.clone(), send.text.clone()));
    s.id_last += 1;
    let id = MessageId(s.id_last);
    let message = Message {
        id,
        from: from.clone(),
        from_name: format!("{from}!"),
        to: send.to.clone(),
        key: send.key,
        sent_at_ms: 0,
        text: send.text,
    };
    if let Some(recipient) = s.sessions.get(&send.to) {
        let lane = ConversationId::direct(from, &send.to).lane(LANES);
        let _ = recipient
            .lanes
            .lane(lane)
            .try_send(ServerFrame::Deliver(message.clone()));
    }
    s.inbox.entry(send.to).or_default().insert(id, message);
    if !s.silent
        && let Some(sender) = s.sessions.get(from)
    {
        let _ = sender
            .control
            .try_send(ServerFrame::Accepted(Accepted { key: send.key, id }));
    }
}
