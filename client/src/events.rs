//! [`Event`] and [`Events`]: what the game learns, in order, from a bounded queue.

use std::sync::Arc;
use std::time::Duration;

use protocol::{ErrorCode, Message, SessionId};
use tokio::sync::mpsc;

use crate::error::ConnectError;
use crate::shared::Shared;

/// Something that happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A message for this device. Shown once, however often it crossed the wire.
    Message(Message),
    /// A connection is up (the first one, and after every reconnect).
    Connected {
        /// The edge's session id for this connection.
        session: SessionId,
    },
    /// The connection is gone. Unless `code` is one that cannot heal by retrying
    /// (`Unauthenticated`, `TokenExpired`, `UnsupportedVersion`, `Forbidden`,
    /// `SessionReplaced`), a [`Event::Reconnecting`] follows. After one that cannot, the
    /// client waits for [`crate::Client::set_token`] (or `close`).
    Disconnected {
        /// The edge's close code, if it closed with one.
        code: Option<ErrorCode>,
        /// The edge's reason, or what went wrong locally.
        reason: String,
    },
    /// The next connection attempt starts after `delay`.
    Reconnecting {
        /// Attempts since the last good connection, from 1.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// Everything stored for this device when it connected has been sent by the server;
    /// messages shown after this are live. (Replayed messages may still be in flight on
    /// other lanes when it arrives.)
    Synced,
    /// A reconnect attempt failed in a way that may heal; another follows.
    Error(ConnectError),
}

/// The game's stream of [`Event`]s.
///
/// The queue is bounded ([`crate::ClientConfig::event_queue`]). When the game stops
/// draining it, the client stops reading deliveries from the network: QUIC flow control
/// then pushes back to the edge, and the edge may disconnect the client as a slow
/// consumer (`SlowConsumer`). Nothing is lost that way — the client reconnects and the
/// server replays what was not acknowledged — but drain events promptly, from a task or
/// from your game loop with [`Events::try_next`], and not only between your own `send`s.
///
/// With `auto_ack` (the default) a message is acknowledged when it is taken from here.
/// Dropping `Events` discards deliveries unacknowledged: the server keeps them for the
/// device's next run.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) auto_ack: bool,
}

impl Events {
    /// The next event; `None` once the client is closed and every event was taken.
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.rx.recv().await?;
        Some(self.taken(event))
    }

    /// The next event if one is waiting, without waiting (for game loops).
    pub fn try_next(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok()?;
        Some(self.taken(event))
    }

    fn taken(&self, event: Event) -> Event {
        if self.auto_ack
            && let Event::Message(m) = &event
        {
            self.shared.ack(m.id);
        }
        event
    }
}
