//! A client's first seconds: TLS, `Hello`, token, `Welcome`.
//!
//! The client opens the control stream and sends exactly one `Hello` within
//! [`HELLO_TIMEOUT`] of connecting. The edge checks the version and the token, then
//! answers `Welcome` with the verified identity, the session id and the limits it
//! enforces. Any failure closes the connection with a code and a reason that says what
//! was wrong (e.g. `TokenExpired`, "token expired; ask the game backend for a new one").

use protocol::ErrorCode;
use protocol::frames::PROTOCOL_VERSION;
use protocol::frames::client::{ClientFrame, Hello, ServerFrame, Welcome};
use protocol::ids::{DeviceId, SessionId};
use tokio::time::{Instant, timeout_at};
use transport::{FramedRecv, write_frame};

use crate::auth::Identity;
use crate::error::SessionEnd;
use crate::limits::HELLO_TIMEOUT;
use crate::shared::Shared;

/// A client that was welcomed.
pub(crate) struct Welcomed {
    pub(crate) conn: quinn::Connection,
    pub(crate) identity: Identity,
    pub(crate) device: DeviceId,
    pub(crate) session: SessionId,
    pub(crate) control_send: quinn::SendStream,
    pub(crate) control_recv: FramedRecv,
    /// The client reads lane copies and this edge sends them: copy its deliveries (as
    /// the edge's policy says) and read its copies.
    pub(crate) copies: bool,
}

/// Why a handshake did not produce a session.
enum Refused {
    /// Close the connection with this code and reason.
    Close(SessionEnd),
    /// The connection is already gone.
    Gone,
}

/// Runs the handshake; `None` if the client was refused (and closed) or left.
pub(crate) async fn run(shared: &Shared, incoming: quinn::Incoming) -> Option<Welcomed> {
    let remote = incoming.remote_address();
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "connection attempt failed");
            return None;
        }
    };
    let conn = match timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        // Dropping the half-open connection abandons it.
        Err(_) => return None,
    };
    let result = match timeout_at(deadline, welcome(shared, &conn)).await {
        Ok(result) => result,
        Err(_) => Err(Refused::Close(SessionEnd::new(
            ErrorCode::HelloExpected,
            format!(
                "no Hello within {} s of connecting",
                HELLO_TIMEOUT.as_secs()
            ),
        ))),
    };
    match result {
        Ok((identity, device, session, control_send, control_recv, copies)) => Some(Welcomed {
            conn,
            identity,
            device,
            session,
            control_send,
            control_recv,
            copies,
        }),
        Err(Refused::Close(end)) => {
            tracing::debug!(%remote, code = %end.code, reason = %end.reason, "refusing client");
            end.close(&conn);
            None
        }
        Err(Refused::Gone) => None,
    }
}

/// What a good `Hello` yields; the last field says whether both sides use lane copies.
type Accepted = (
    Identity,
    DeviceId,
    SessionId,
    quinn::SendStream,
    FramedRecv,
    bool,
);

async fn welcome(shared: &Shared, conn: &quinn::Connection) -> Result<Accepted, Refused> {
    let (mut send, recv) = conn.accept_bi().await.map_err(|_| Refused::Gone)?;
    let mut recv = FramedRecv::new(recv);
    let hello: Hello = match recv.next::<ClientFrame>().await {
        Ok(Some(ClientFrame::Hello(hello))) => hello,
        Ok(Some(other)) => {
            let kind = match other {
                ClientFrame::Send(_) => "Send",
                _ => "Ack",
            };
            return Err(close(
                ErrorCode::HelloExpected,
                format!("the first frame on the control stream must be Hello, not {kind}"),
            ));
        }
        Ok(None) => {
            return Err(close(
                ErrorCode::HelloExpected,
                "control stream ended before Hello".into(),
            ));
        }
        Err(e) if e.is_protocol_violation() => {
            return Err(close(e.code(), format!("control stream: {e}")));
        }
        Err(_) => return Err(Refused::Gone),
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(close(
            ErrorCode::UnsupportedVersion,
            format!(
                "client speaks protocol version {}; this edge speaks {PROTOCOL_VERSION}",
                hello.version
            ),
        ));
    }
    let identity = shared
        .verifier
        .verify(&hello.token)
        .map_err(|e| close(e.code(), e.to_string()))?;
    let session = shared.registry.next_id();
    let welcome = Welcome {
        user: identity.user.clone(),
        name: identity.name.clone(),
        session,
        limits: shared.settings.limits,
        capabilities: shared.settings.lane_copies.capabilities(),
    };
    write_frame(&mut send, &ServerFrame::Welcome(welcome))
        .await
        .map_err(|_| Refused::Gone)?;
    let copies = shared.settings.lane_copies.agreed(hello.capabilities);
    Ok((identity, hello.device, session, send, recv, copies))
}

fn close(code: ErrorCode, reason: String) -> Refused {
    Refused::Close(SessionEnd::new(code, reason))
}
