//! [`Client`]: the game's handle, and [`PendingSend`], a message waiting for its answer.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use protocol::delivery::{Delivery, DeliveryConfig};
use protocol::frames::ALPN_CLIENT;
use protocol::frames::client::Accepted;
use protocol::{MessageId, SenderKey, UserId};
use tokio::sync::{mpsc, oneshot};
use transport::TransportProfile;

use crate::config::ClientConfig;
use crate::driver::{Answer, Command, Driver, DriverParts};
use crate::error::{ConnectError, SendError};
use crate::events::Events;
use crate::link::{DialParams, Link};
use crate::shared::Shared;

/// Commands (sends, close) waiting for the driver. When full, `send` waits: the driver
/// is busy writing to a congested network, and the game slows down with it.
const COMMAND_QUEUE: usize = 256;

/// A connected client: one user on one device. Cheap to clone; every clone drives the
/// same connection. The connection closes when [`Client::close`] is called or the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    user: UserId,
    name: String,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Client {
    /// Connects to the edge and starts the client's driver task (on the current tokio
    /// runtime). Returns once the edge said `Welcome`; a failure here is returned, not
    /// retried — reconnecting starts only after a first success.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ConnectError> {
        let quic = transport::tls::client_config(
            config.roots.clone(),
            ALPN_CLIENT,
            None,
            &TransportProfile::client_link(),
        )?;
        let bind = if config.edge.is_ipv6() {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        };
        let endpoint = transport::endpoint::client_endpoint(bind).map_err(ConnectError::Socket)?;
        let params = Arc::new(DialParams {
            endpoint,
            quic,
            edge: config.edge,
            server_name: config.server_name.clone(),
            device: config.device,
            connect_timeout: config.connect_timeout,
            lane_copies: config.lane_copies,
        });
        let link = Link::dial(params.clone(), config.token.clone()).await?;

        // The driver never acknowledges on `poll_event`: it only moves messages into the
        // event queue. `Events` acknowledges when the game takes them, if asked to.
        let auto_ack = config.delivery.auto_ack;
        let delivery_config = DeliveryConfig {
            auto_ack: false,
            ..config.delivery.clone()
        };
        let mut delivery = Delivery::new(rand::random(), delivery_config);
        delivery.handle_connected(Instant::now(), &link.welcome);

        let shared = Arc::new(Shared::new(config.token));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(1));
        let inner = Inner {
            user: link.welcome.user.clone(),
            name: link.welcome.name.clone(),
            commands: commands_tx,
            shared: shared.clone(),
        };
        let parts = DriverParts {
            delivery,
            params,
            shared: shared.clone(),
            backoff: config.reconnect,
            commands: commands_rx,
            events: events_tx,
        };
        tokio::spawn(Driver::new(parts, link).run());
        let events = Events {
            rx: events_rx,
            shared,
            auto_ack,
        };
        Ok((
            Client {
                inner: Arc::new(inner),
            },
            events,
        ))
    }

    /// Who this client is: the user id the edge verified from the token.
    pub fn user(&self) -> &UserId {
        &self.inner.user
    }

    /// This user's display name, as the edge verified it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Sends `text` to `to` and waits until the server has it safe (see the crate docs
    /// on what `Accepted` guarantees), or refused it. Works while disconnected: the
    /// message waits in the outbox and is sent when the connection is back.
    pub async fn send(&self, to: &UserId, text: impl Into<String>) -> Result<Accepted, SendError> {
        self.queue(to, text).await?.accepted().await
    }

    /// Queues `text` for `to` and returns at once with a handle to its answer, so a game
    /// can send many messages without waiting for each.
    pub async fn queue(
        &self,
        to: &UserId,
        text: impl Into<String>,
    ) -> Result<PendingSend, SendError> {
        let (queued_tx, queued_rx) = oneshot::channel();
        let command = Command::Send {
            to: to.clone(),
            text: text.into(),
            queued: queued_tx,
        };
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| SendError::Closed)?;
        let (key, answer) = queued_rx.await.map_err(|_| SendError::Closed)??;
        Ok(PendingSend { key, answer })
    }

    /// Acknowledges a delivered message. Needed only with `auto_ack` off; then call it
    /// once the game is done with the message (for example, saved it). Unacknowledged
    /// messages are delivered again after a reconnect (and shown again after a restart).
    pub fn ack(&self, id: MessageId) {
        self.inner.shared.ack(id);
    }

    /// Replaces the token for the next connection attempt (tokens expire). If the client
    /// stopped reconnecting because of its token (`Unauthenticated`, `TokenExpired`) or
    /// is waiting between attempts, it tries again at once. The token must be for the
    /// same user.
    pub fn set_token(&self, token: impl Into<String>) {
        self.inner.shared.set_token(token.into());
    }

    /// Closes the connection and stops the client. Messages still waiting for an answer
    /// resolve with [`SendError::Closed`]; the event stream ends after a final
    /// `Disconnected`.
    pub async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { done: done_tx })
            .await
            .is_ok()
        {
            let _ = done_rx.await;
        }
    }
}

/// A queued message, waiting for the server's answer.
#[derive(Debug)]
pub struct PendingSend {
    key: SenderKey,
    answer: oneshot::Receiver<Answer>,
}

impl PendingSend {
    /// The message's sender key (also in its `Accepted`).
    pub fn key(&self) -> SenderKey {
        self.key
    }

    /// Waits for the answer: `Accepted` once the message is safe, or why it was refused.
    pub async fn accepted(self) -> Result<Accepted, SendError> {
        self.answer.await.unwrap_or(Err(SendError::Closed))
    }
}
