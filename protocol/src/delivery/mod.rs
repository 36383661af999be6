//! The client's delivery state machine: outbox, acknowledgements, de-duplication and
//! re-send after reconnect, for one device, living across reconnects.
//!
//! [`Delivery`] is sans-IO in the manner of quinn-proto's `Connection`: the driver (the
//! `client` crate, or a C wrapper called from a game loop) feeds it what happened through
//! `handle_*` methods, each taking `now`, and drains what it must do through `poll_*`:
//!
//! ```text
//!   game ── send / ack ──►┌──────────┐── poll_transmit ──► frames for lanes / control
//!                         │ Delivery │
//!   network ─ handle_* ──►└──────────┘── poll_event ────► Message, Accepted, Rejected, Synced
//!                              ▲ │
//!              handle_timeout ─┘ └─ poll_timeout (when to call it next)
//! ```
//!
//! # How it fits together
//!
//! - Sending: [`Delivery::send`] checks the text, names the message with a
//!   [`SenderKey`] `{epoch, counter}` and queues it in the **outbox** (`outbox.rs`). Each
//!   connection transmits every outbox entry once, oldest first, on the lane of its
//!   conversation. The entry stays until the core answers `Accepted` or `Rejected` (or
//!   the send timeout fires); after a reconnect, everything still there is re-sent with
//!   its key, before anything newer.
//! - Receiving: a delivered message is shown once (`dedup.rs` explains why the highest
//!   counter per sender epoch suffices), then acknowledged (`acks.rs`) when the game takes
//!   it (`auto_ack`) or calls [`Delivery::ack`]. Duplicates are acknowledged again, so
//!   the core can delete its copy.
//!
//! # Bounds
//!
//! The outbox holds at most [`DeliveryConfig::outbox_max`] messages (then `send` fails),
//! de-duplication at most [`DeliveryConfig::dedup_senders_max`] sender epochs, and the
//! acknowledgement sets [`HELD_IDS_MAX`] and [`PENDING_ACK_IDS_MAX`] ids.
//! The event queue is bounded by its driver: each `handle_frame` adds at most one event
//! and `handle_connected`/`handle_timeout` at most one per outbox entry, so a driver that
//! drains [`Delivery::poll_event`] after each call (and stops reading the network while
//! the game is behind) keeps it small.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use protocol::delivery::{Delivery, DeliveryConfig};
//! use protocol::frames::client::{ClientFrame, Limits, Welcome};
//! use protocol::{SessionId, UserId};
//!
//! let now = Instant::now();
//! let mut delivery = Delivery::new(7, DeliveryConfig::default());
//! let bob = UserId::new("bob").unwrap();
//! let key = delivery.send(now, bob, "gg".into()).unwrap();
//! // Nothing leaves before the connection is up.
//! assert!(delivery.poll_transmit().is_none());
//!
//! let limits = Limits { text_bytes_max: 4096, send_per_second: 10, send_burst: 20, lanes: 8 };
//! let welcome = Welcome {
//!     user: UserId::new("alice").unwrap(),
//!     name: "Alice".into(),
//!     session: SessionId(1),
//!     limits,
//!     capabilities: 0,
//! };
//! delivery.handle_connected(now, &welcome);
//! let transmit = delivery.poll_transmit().unwrap();
//! assert!(matches!(transmit.frame, ClientFrame::Send(ref s) if s.key == key));
//! ```

mod acks;
mod admission;
mod config;
mod dedup;
mod event;
mod outbox;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

pub use acks::{HELD_IDS_MAX, PENDING_ACK_IDS_MAX};
pub use admission::{
    INTERVAL as ADMISSION_INTERVAL, QUEUE_TARGET as ADMISSION_QUEUE_TARGET,
    WINDOW_MIN as ADMISSION_WINDOW_MIN,
};
pub use config::{DEDUP_SENDERS_MAX_DEFAULT, DeliveryConfig, OUTBOX_MAX_DEFAULT};
pub use event::{DeliveryEvent, SendError, Transmit};

use crate::error::ErrorCode;
use crate::frames::client::{Ack, ClientFrame, Limits, Message, SendMessage, ServerFrame, Welcome};
use crate::ids::{MessageId, SenderKey, UserId};
use crate::lanes::ConversationId;
use crate::limits::TEXT_BYTES_MAX_CEILING;

/// One device's delivery state: outbox, de-duplication and acknowledgements.
///
/// Create it once per process run with a fresh random `epoch` (two runs of the same device
/// must not share an epoch, or the second run's messages would look like duplicates of the
/// first's), and keep it across reconnects: that is what lets the outbox survive them.
#[derive(Debug)]
pub struct Delivery {
    config: DeliveryConfig,
    epoch: u64,
    /// The counter of the last message queued (0 before the first).
    counter_last: u64,
    /// Who we are, from the latest `Welcome`.
    user: Option<UserId>,
    /// The edge's limits, from the latest `Welcome`.
    limits: Option<Limits>,
    /// Whether a connection is up (between `handle_connected` and `handle_disconnected`).
    connected: bool,
    outbox: outbox::Outbox,
    admission: admission::Admission,
    dedup: dedup::Dedup,
    acks: acks::Acks,
    /// Events for the game; see the module doc for why it stays small.
    events: VecDeque<DeliveryEvent>,
}

impl Delivery {
    /// A fresh machine for one run of one device. `epoch` must differ from every earlier
    /// run of this device (a random `u64` does).
    pub fn new(epoch: u64, config: DeliveryConfig) -> Self {
        let dedup = dedup::Dedup::new(config.dedup_senders_max);
        let admission = admission::Admission::new(
            config.outbox_max,
            config.admission.unwrap_or(std::time::Duration::MAX),
        );
        Self {
            config,
            epoch,
            counter_last: 0,
            user: None,
            limits: None,
            connected: false,
            outbox: outbox::Outbox::default(),
            admission,
            dedup,
            acks: acks::Acks::default(),
            events: VecDeque::new(),
        }
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Our user id, known after the first `Welcome`.
    pub fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }

    /// The edge's limits, known after the first `Welcome`.
    pub fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref()
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages waiting for the core's answer.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The largest text `send` accepts now: the edge's limit, or the protocol ceiling
    /// before the first `Welcome`.
    pub fn text_bytes_max(&self) -> usize {
        self.limits.map_or(TEXT_BYTES_MAX_CEILING, |l| {
            (l.text_bytes_max as usize).min(TEXT_BYTES_MAX_CEILING)
        })
    }

    /// Queues a message to `to`, returning the key its answer will carry.
    ///
    /// Works while disconnected too: the message leaves when a connection is up.
    pub fn send(&mut self, now: Instant, to: UserId, text: String) -> Result<SenderKey, SendError> {
        if text.is_empty() {
            return Err(SendError::InvalidText);
        }
        let max = self.text_bytes_max();
        if text.len() > max {
            return Err(SendError::TextTooLarge {
                len: text.len(),
                max,
            });
        }
        if self.outbox.len() >= self.config.outbox_max {
            return Err(SendError::OutboxFull {
                max: self.config.outbox_max,
            });
        }
        if self.config.admission.is_some() && !self.admission.admits(self.outbox.len()) {
            return Err(SendError::Busy {
                in_flight: self.outbox.len(),
                window: self.admission.window(),
            });
        }
        self.counter_last += 1;
        let deadline = self.config.send_timeout.and_then(|t| now.checked_add(t));
        self.outbox.push(
            self.counter_last,
            outbox::Entry {
                to,
                text,
                deadline,
                transmitted: false,
                queued_at: now,
                before_connection: false,
            },
        );
        Ok(self.key(self.counter_last))
    }

    /// Acknowledges a delivered message (needed only without `auto_ack`). Acknowledging
    /// an id twice, or one never delivered, is harmless.
    pub fn ack(&mut self, id: MessageId) {
        self.acks.ack(id);
    }

    /// A connection is up and the edge said `Welcome`. Every message still in the outbox
    /// will be transmitted again on it, oldest first, before anything sent later.
    pub fn handle_connected(&mut self, _now: Instant, welcome: &Welcome) {
        self.user = Some(welcome.user.clone());
        self.limits = Some(welcome.limits);
        self.connected = true;
        self.outbox.rewind();
        self.admission.handle_connected();
        // The edge may allow less than we assumed when these were queued: refuse them here
        // with the code the edge would answer, instead of sending what it must reject.
        let max = self.text_bytes_max();
        for (counter, len) in self.outbox.remove_longer_than(max) {
            self.events.push_back(DeliveryEvent::Rejected {
                key: self.key(counter),
                code: ErrorCode::TextTooLarge,
                detail: format!("text is {len} bytes, the edge allows {max}"),
            });
        }
    }

    /// The connection is gone. Nothing is transmitted until the next `handle_connected`;
    /// the outbox and pending acknowledgements wait for it.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.connected = false;
    }

    /// A frame arrived from the edge. A `Welcome` is ignored here: the handshake belongs
    /// to the driver, which calls [`Delivery::handle_connected`].
    pub fn handle_frame(&mut self, now: Instant, frame: ServerFrame) {
        match frame {
            ServerFrame::Welcome(_) => {}
            ServerFrame::Deliver(message) => self.handle_deliver(message),
            ServerFrame::Accepted(a) => {
                if self.take_own(now, a.key) {
                    self.events.push_back(DeliveryEvent::Accepted {
                        key: a.key,
                        id: a.id,
                    });
                }
            }
            ServerFrame::Rejected(r) => {
                if self.take_own(now, r.key) {
                    self.events.push_back(DeliveryEvent::Rejected {
                        key: r.key,
                        code: r.code,
                        detail: r.detail,
                    });
                }
            }
            ServerFrame::Synced => self.events.push_back(DeliveryEvent::Synced),
        }
    }

    /// Time has reached a deadline from [`Delivery::poll_timeout`] (calling it early or
    /// late is harmless). Messages past their send timeout leave the outbox as
    /// `Rejected` with [`ErrorCode::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        for counter in self.outbox.expire(now) {
            self.events.push_back(DeliveryEvent::Rejected {
                key: self.key(counter),
                code: ErrorCode::Timeout,
                detail: "no answer from the server within the send timeout".into(),
            });
        }
    }

    /// When [`Delivery::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.next_deadline()
    }

    /// The next frame to write, if connected: pending acknowledgements first (they let
    /// the core free storage), then outbox messages in counter order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit_where(|_| true)
    }

    /// Like [`Delivery::poll_transmit`], but only returns frames for streams that
    /// `can_send` says have room (`None` is the control stream, `Some(lane)` a lane). A
    /// frame for a full lane stays queued, and frames for other lanes may go ahead of it —
    /// never a later frame of the same lane. A driver with bounded stream queues uses
    /// this so one full lane does not stall every conversation.
    pub fn poll_transmit_where(
        &mut self,
        mut can_send: impl FnMut(Option<u8>) -> bool,
    ) -> Option<Transmit> {
        if !self.connected {
            return None;
        }
        if self.acks.has_pending() && can_send(None) {
            let ranges = self.acks.take_ranges();
            return Some(Transmit {
                frame: ClientFrame::Ack(Ack { ranges }),
                lane: None,
            });
        }
        let me = self.user.as_ref()?;
        let lanes = self.limits.map_or(1, |l| l.lanes);
        let (counter, entry) = self.outbox.next_to_transmit(
            |entry| ConversationId::direct(me, &entry.to).lane(lanes),
            |lane| can_send(Some(lane)),
        )?;
        let lane = ConversationId::direct(me, &entry.to).lane(lanes);
        let frame = ClientFrame::Send(SendMessage {
            to: entry.to.clone(),
            key: SenderKey {
                epoch: self.epoch,
                counter,
            },
            text: entry.text.clone(),
        });
        Some(Transmit {
            frame,
            lane: Some(lane),
        })
    }

    /// Whether frames wait to be transmitted: pending acknowledgements, or messages the
    /// current connection has not sent yet (for example because their lane was full).
    pub fn wants_transmit(&self) -> bool {
        self.connected && (self.acks.has_pending() || self.outbox.has_untransmitted())
    }

    /// The next event for the game. With `auto_ack`, taking a message acknowledges it.
    pub fn poll_event(&mut self) -> Option<DeliveryEvent> {
        let event = self.events.pop_front()?;
        if let DeliveryEvent::Message(m) = &event
            && self.config.auto_ack
        {
            self.acks.ack(m.id);
        }
        Some(event)
    }

    fn handle_deliver(&mut self, message: Message) {
        if self.dedup.first_time(&message.from, message.key) {
            self.acks.hold(message.id);
            self.events.push_back(DeliveryEvent::Message(message));
        } else if !self.acks.is_held(message.id) {
            // A duplicate (a re-send, or a replay of something already acknowledged):
            // acknowledge it, so the core deletes its copy. If the game still holds the
            // same id, its own acknowledgement will cover it.
            self.acks.ack(message.id);
        }
    }

    /// Removes our own message `key` from the outbox; `false` if it is not there (an
    /// answer to an earlier run, or a late duplicate answer), which is then ignored.
    fn take_own(&mut self, now: Instant, key: SenderKey) -> bool {
        if key.epoch != self.epoch {
            return false;
        }
        let in_flight = self.outbox.len();
        let Some(entry) = self.outbox.remove(key.counter) else {
            return false;
        };
        if !entry.before_connection {
            let answer_time = now.saturating_duration_since(entry.queued_at);
            self.admission.handle_answer(now, answer_time, in_flight);
        }
        true
    }

    fn key(&self, counter: u64) -> SenderKey {
        SenderKey {
            epoch: self.epoch,
            counter,
        }
    }
}
