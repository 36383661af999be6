//! [`Link`]: one connection to the edge, from dial to ready — QUIC handshake, control
//! stream, `Hello`/`Welcome`, our lanes opened, the edge's streams handed to an
//! [`Inbound`] that the driver polls itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::frames::PROTOCOL_VERSION;
use protocol::frames::client::{ClientFrame, Hello, Welcome};
use protocol::{DeviceId, ServerFrame};
use transport::{
    Copier, CopyPolicy, CopyRouter, FrameSender, FramedRecv, LaneSenders, StreamError,
};

use crate::error::ConnectError;
use crate::inbound::Inbound;

/// Frames each of our lanes may queue before the driver waits for the stream.
const LANE_QUEUE: usize = 64;
/// Frames the control stream may queue before the driver waits for the stream.
const CONTROL_QUEUE: usize = 64;
/// Stream priorities: the control stream (acknowledgements) goes before messages.
const CONTROL_PRIORITY: i32 = 10;
const LANE_PRIORITY: i32 = 0;

/// What a connection attempt needs; shared by every attempt of one client.
#[derive(Debug)]
pub(crate) struct DialParams {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) quic: quinn::ClientConfig,
    pub(crate) edge: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) device: DeviceId,
    pub(crate) connect_timeout: Duration,
    pub(crate) lane_copies: CopyPolicy,
}

/// A ready connection.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: quinn::Connection,
    pub(crate) welcome: Welcome,
    pub(crate) control: FrameSender<ClientFrame>,
    pub(crate) lanes: LaneSenders<ClientFrame>,
    /// The edge's streams, read by the driver.
    pub(crate) inbound: Inbound,
}

impl Link {
    /// Dials the edge and completes the handshake within the connect timeout.
    pub(crate) async fn dial(params: Arc<DialParams>, token: String) -> Result<Link, ConnectError> {
        match tokio::time::timeout(params.connect_timeout, Self::dial_inner(&params, token)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn dial_inner(params: &DialParams, token: String) -> Result<Link, ConnectError> {
        let connecting =
            params
                .endpoint
                .connect_with(params.quic.clone(), params.edge, &params.server_name)?;
        let conn = connecting.await.map_err(ConnectError::from_connection)?;
        match Self::handshake(&conn, params.device, token, params.lane_copies).await {
            Ok(link) => Ok(link),
            Err(e) => {
                // The edge's close code explains a failed handshake better than the
                // stream error it caused.
                let err = match conn.close_reason() {
                    Some(reason) => ConnectError::from_connection(reason),
                    None => e,
                };
                if err.code() == Some(protocol::ErrorCode::ProtocolViolation) {
                    transport::close(
                        &conn,
                        protocol::ErrorCode::ProtocolViolation,
                        &err.to_string(),
                    );
                }
                Err(err)
            }
        }
    }

    async fn handshake(
        conn: &quinn::Connection,
        device: DeviceId,
        token: String,
        lane_copies: CopyPolicy,
    ) -> Result<Link, ConnectError> {
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(ConnectError::from_connection)?;
        let _ = send.set_priority(CONTROL_PRIORITY);
        let hello = ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            token,
            device,
            capabilities: lane_copies.capabilities(),
        });
        transport::write_frame(&mut send, &hello)
            .await
            .map_err(stream_error)?;
        let mut control_recv = FramedRecv::new(recv);
        let welcome = match control_recv
            .next::<ServerFrame>()
            .await
            .map_err(stream_error)?
        {
            Some(ServerFrame::Welcome(welcome)) => welcome,
            Some(other) => {
                return Err(ConnectError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )));
            }
            None => {
                return Err(ConnectError::Protocol(
                    "control stream ended before Welcome".into(),
                ));
            }
        };
        // One writer task for the control stream and every lane; the room notification
        // wakes the driver when any of their queues has space again.
        let mut group = transport::WriterGroup::new(Some(Arc::default()));
        // Copies travel each way only if both sides announced them.
        let copies = lane_copies.agreed(welcome.capabilities);
        if copies {
            group = group.with_copies(Copier::new(conn, lane_copies));
        }
        let router = copies.then(|| CopyRouter::spawn(conn));
        let control = group.add(send, None, CONTROL_QUEUE);
        let lanes = LaneSenders::open_in(
            &mut group,
            conn,
            welcome.limits.lanes,
            LANE_QUEUE,
            LANE_PRIORITY,
        )
        .await
        .map_err(ConnectError::from_connection)?;
        group.spawn();

        Ok(Link {
            conn: conn.clone(),
            welcome,
            control,
            lanes,
            inbound: Inbound::new(conn, control_recv, router),
        })
    }
}

/// Maps a stream error during the handshake; a lost connection is refined by the caller
/// from the close reason.
fn stream_error(e: StreamError) -> ConnectError {
    if e.is_protocol_violation() {
        ConnectError::Protocol(e.to_string())
    } else {
        ConnectError::Stream(e.to_string())
    }
}
