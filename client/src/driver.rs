//! [`Driver`]: the one task that owns a client's [`Delivery`] and its connection.
//!
//! It is quinn's `ConnectionDriver` idea: a short loop that feeds what happened into the
//! sans-IO state machine (commands from the game, frames from the edge, timers, a lost
//! connection), drains `poll_event`/`poll_transmit`, and sleeps until `poll_timeout`.
//! Around it sits the connection's lifecycle, as a [`Phase`]: up, waiting to retry,
//! dialing, or stopped (after an error that retrying cannot heal). Commands are served in
//! every phase, so `send` queues into the outbox at once even while offline.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::delivery::{Delivery, DeliveryEvent};
use protocol::frames::client::Accepted;
use protocol::{ErrorCode, SenderKey, ServerFrame, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::config::Backoff;
use crate::error::{ConnectError, SendError, code_is_permanent};
use crate::events::Event;
use crate::inbound::Arrived;
use crate::link::{DialParams, Link};
use crate::shared::Shared;

/// Frames taken from a queue per loop turn; also bounds the messages one turn can add to
/// the backlog.
const FRAMES_PER_TURN: usize = 64;
/// Status events (`Disconnected`, `Reconnecting`, `Error`) kept while the game is not
/// draining events. Beyond it they are dropped: a game that is not listening gains
/// nothing from a long history of reconnect attempts.
const STATUS_BACKLOG_MAX: usize = 64;
/// How long `close` waits for the close to reach the edge.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The answer to one sent message.
pub(crate) type Answer = Result<Accepted, SendError>;

/// What the game's [`crate::Client`] asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Queue a message; reply with its key and the receiver of its answer, or why not.
    Send {
        to: UserId,
        text: String,
        queued: oneshot::Sender<Result<(SenderKey, oneshot::Receiver<Answer>), SendError>>,
    },
    /// Close the connection and stop.
    Close { done: oneshot::Sender<()> },
}

type Dialing = Pin<Box<dyn Future<Output = Result<Link, ConnectError>> + Send>>;

/// Where the connection is in its lifecycle.
enum Phase {
    Up {
        link: Box<Link>,
        since: Instant,
    },
    Waiting {
        until: tokio::time::Instant,
    },
    Dialing(Dialing),
    /// After an error retrying cannot heal: waits for a new token or `close`.
    Stopped,
}

/// What woke the phase-specific part of the loop.
enum PhaseEvent {
    Frames(Vec<ServerFrame>),
    Lost(quinn::ConnectionError),
    /// A reader queue ended while the connection was still open.
    Broken(&'static str),
    WaitOver,
    Dialed(Result<Link, ConnectError>),
}

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Shared,
    Timer,
    EventsMoved,
    /// A stream queue that was full took frames off.
    Room,
    Phase(PhaseEvent),
}

pub(crate) struct Driver {
    delivery: Delivery,
    params: Arc<DialParams>,
    shared: Arc<Shared>,
    /// The user this client is, from the first `Welcome`.
    user: UserId,
    backoff: Backoff,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events waiting for room in `events`. Lanes are read only while it is empty, so it
    /// holds at most one turn's messages, a `Synced`, and [`STATUS_BACKLOG_MAX`] status
    /// events.
    backlog: VecDeque<Event>,
    /// Senders waiting for their message's answer; at most one per outbox entry.
    waiters: HashMap<SenderKey, oneshot::Sender<Answer>>,
    phase: Phase,
    /// Reconnect attempts since the last connection that stayed up for `backoff.max`.
    attempt: u32,
}

/// What [`Driver::new`] needs; grouped to keep the call readable.
pub(crate) struct DriverParts {
    pub(crate) delivery: Delivery,
    pub(crate) params: Arc<DialParams>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) backoff: Backoff,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<Event>,
}

impl Driver {
    /// A driver for a client whose first connection is `link` (already handed to
    /// `delivery.handle_connected`).
    pub(crate) fn new(parts: DriverParts, link: Link) -> Self {
        let user = link.welcome.user.clone();
        let mut backlog = VecDeque::new();
        backlog.push_back(Event::Connected {
            session: link.welcome.session,
        });
        Self {
            delivery: parts.delivery,
            params: parts.params,
            shared: parts.shared,
            user,
            backoff: parts.backoff,
            commands: parts.commands,
            events: parts.events,
            backlog,
            waiters: HashMap::new(),
            phase: Phase::Up {
                link: Box::new(link),
                since: Instant::now(),
            },
            attempt: 0,
        }
    }

    /// Runs until the client is closed (or every `Client` handle is dropped).
    pub(crate) async fn run(mut self) {
        loop {
            for id in self.shared.take_acks() {
                self.delivery.ack(id);
            }
            self.drain_events();
            let blocked = self.flush_transmits();
            // Frames wait for a full stream: wake when any lane (or the control stream)
            // takes frames off its queue.
            let room = match &self.phase {
                Phase::Up { link, .. } if blocked => Some(link.lanes.room().clone()),
                _ => None,
            };

            // Without a deadline the timer branch is disabled; the far instant is never
            // awaited.
            let deadline = self.delivery.poll_timeout();
            let sleep_at = tokio::time::Instant::from_std(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            let read_lanes = self.backlog.is_empty();
            let wake = tokio::select! {
                command = self.commands.recv() => Wake::Command(command),
                () = self.shared.wake.notified() => Wake::Shared,
                permit = self.events.reserve(), if !self.backlog.is_empty() => {
                    match (permit, self.backlog.pop_front()) {
                        (Ok(permit), Some(event)) => permit.send(event),
                        // The game dropped `Events`: nobody will read these.
                        _ => self.backlog.clear(),
                    }
                    Wake::EventsMoved
                }
                () = tokio::time::sleep_until(sleep_at), if deadline.is_some() => Wake::Timer,
                () = async {
                    match &room {
                        Some(room) => room.notified().await,
                        None => std::future::pending().await,
                    }
                }, if room.is_some() => Wake::Room,
                event = phase_wait(&mut self.phase, read_lanes) => Wake::Phase(event),
            };
            match wake {
                Wake::Command(Some(Command::Send { to, text, queued })) => {
                    self.queue(to, text, queued)
                }
                Wake::Command(Some(Command::Close { done })) => {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                Wake::Command(None) => {
                    // Every `Client` handle is gone.
                    self.shutdown().await;
                    return;
                }
                Wake::Shared => self.on_shared(),
                Wake::Timer => self.delivery.handle_timeout(Instant::now()),
                Wake::EventsMoved | Wake::Room => {}
                Wake::Phase(event) => self.on_phase(event),
            }
        }
    }

    fn queue(
        &mut self,
        to: UserId,
        text: String,
        queued: oneshot::Sender<Result<(SenderKey, oneshot::Receiver<Answer>), SendError>>,
    ) {
        let reply = match self.delivery.send(Instant::now(), to, text) {
            Ok(key) => {
                let (tx, rx) = oneshot::channel();
                self.waiters.insert(key, tx);
                Ok((key, rx))
            }
            Err(e) => Err(e.into()),
        };
        // The caller may have given up waiting; the message stays queued regardless.
        let _ = queued.send(reply);
    }

    fn on_shared(&mut self) {
        // A new token: retry now rather than after the backoff, or leave `Stopped`.
        if self.shared.token_changed()
            && matches!(self.phase, Phase::Waiting { .. } | Phase::Stopped)
        {
            self.attempt = 0;
            self.dial();
        }
    }

    fn on_phase(&mut self, event: PhaseEvent) {
        let now = Instant::now();
        match event {
            PhaseEvent::Frames(frames) => {
                for frame in frames {
                    self.delivery.handle_frame(now, frame);
                }
            }
            PhaseEvent::Broken(why) => {
                if let Phase::Up { link, .. } = &self.phase {
                    transport::close(&link.conn, ErrorCode::NoError, why);
                }
            }
            PhaseEvent::Lost(err) => self.on_lost(&err),
            PhaseEvent::WaitOver => self.dial(),
            PhaseEvent::Dialed(Ok(link)) => self.on_connected(link),
            PhaseEvent::Dialed(Err(e)) => self.on_dial_failed(e),
        }
    }

    fn on_connected(&mut self, link: Link) {
        if link.welcome.user != self.user {
            let err = ConnectError::UserChanged {
                expected: self.user.clone(),
                got: link.welcome.user.clone(),
            };
            transport::close(&link.conn, ErrorCode::NoError, "token is for another user");
            return self.on_dial_failed(err);
        }
        tracing::info!(session = link.welcome.session.0, "connected");
        self.delivery
            .handle_connected(Instant::now(), &link.welcome);
        self.push(Event::Connected {
            session: link.welcome.session,
        });
        self.phase = Phase::Up {
            link: Box::new(link),
            since: Instant::now(),
        };
    }

    fn on_lost(&mut self, err: &quinn::ConnectionError) {
        let (code, reason) = match transport::close_code(err) {
            Some((code, reason)) => (Some(code), reason),
            None => (None, err.to_string()),
        };
        tracing::info!(?code, %reason, "disconnected");
        self.delivery.handle_disconnected(Instant::now());
        if let Phase::Up { since, .. } = &self.phase
            && since.elapsed() >= self.backoff.max
        {
            self.attempt = 0;
        }
        self.push_status(Event::Disconnected { code, reason });
        if code.is_some_and(code_is_permanent) {
            self.phase = Phase::Stopped;
        } else {
            self.retry_later();
        }
    }

    fn on_dial_failed(&mut self, err: ConnectError) {
        tracing::info!(error = %err, "connect attempt failed");
        if err.is_permanent() {
            self.push_status(Event::Disconnected {
                code: err.code(),
                reason: err.to_string(),
            });
            self.phase = Phase::Stopped;
        } else {
            self.push_status(Event::Error(err));
            self.retry_later();
        }
    }

    fn retry_later(&mut self) {
        let delay = self.backoff.delay(self.attempt, rand::random());
        self.attempt = self.attempt.saturating_add(1);
        self.push_status(Event::Reconnecting {
            attempt: self.attempt,
            delay,
        });
        self.phase = Phase::Waiting {
            until: tokio::time::Instant::now() + delay,
        };
    }

    fn dial(&mut self) {
        let token = self.shared.take_token();
        self.phase = Phase::Dialing(Box::pin(Link::dial(self.params.clone(), token)));
    }

    /// Routes the machine's events: answers to their waiting senders, the rest to the
    /// game (through the backlog when its queue is full).
    fn drain_events(&mut self) {
        while let Some(event) = self.delivery.poll_event() {
            match event {
                DeliveryEvent::Message(m) => self.push(Event::Message(m)),
                DeliveryEvent::Synced => self.push(Event::Synced),
                DeliveryEvent::Accepted { key, id } => self.answer(key, Ok(Accepted { key, id })),
                DeliveryEvent::Rejected { key, code, detail } => {
                    self.answer(key, Err(SendError::Rejected { code, detail }));
                }
            }
        }
        while let Some(event) = self.backlog.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.backlog.clear(),
            }
        }
    }

    fn answer(&mut self, key: SenderKey, answer: Answer) {
        if let Some(waiter) = self.waiters.remove(&key) {
            // The sender may have stopped waiting; that is its choice.
            let _ = waiter.send(answer);
        }
    }

    /// Queues an event for the game, in order behind anything already waiting.
    fn push(&mut self, event: Event) {
        if self.events.is_closed() {
            return;
        }
        self.backlog.push_back(event);
    }

    /// Like [`Driver::push`], but dropped if the game has not been draining (see
    /// [`STATUS_BACKLOG_MAX`]).
    fn push_status(&mut self, event: Event) {
        if self.backlog.len() < STATUS_BACKLOG_MAX {
            self.push(event);
        } else {
            tracing::debug!(?event, "event queue full; dropping a status event");
        }
    }

    /// Hands the machine's frames to the stream writers without waiting. A frame whose
    /// stream queue is full stays in the machine (its outbox is the backlog), so a full
    /// lane holds back only its own conversations, never the others, and the driver keeps
    /// taking the game's sends (the outbox bound, `OutboxFull`, is the back-pressure).
    /// Returns whether frames still wait for room.
    fn flush_transmits(&mut self) -> bool {
        let Phase::Up { link, .. } = &self.phase else {
            return false;
        };
        let has_room = |lane: Option<u8>| match lane {
            Some(lane) => link.lanes.lane(lane).capacity() > 0,
            None => link.control.capacity() > 0,
        };
        while let Some(transmit) = self.delivery.poll_transmit_where(has_room) {
            let sent = match transmit.lane {
                Some(lane) => link.lanes.lane(lane).try_send(transmit.frame),
                None => link.control.try_send(transmit.frame),
            };
            if sent.is_err() {
                // A writer stopped (its stream was reset, or the connection is closing);
                // `Full` cannot happen, as only this driver feeds the queues and it checked
                // for room. What was not written is re-sent on a new connection, so make
                // sure there is one.
                transport::close(&link.conn, ErrorCode::NoError, "a stream stopped");
                return false;
            }
        }
        self.delivery.wants_transmit()
    }

    /// Writes everything the machine wants written, waiting while a queue is full: for
    /// shutdown, where the last acknowledgements matter more than latency.
    async fn flush_transmits_waiting(&mut self) {
        // `&mut` for the same reason as in `shutdown`.
        let Phase::Up { link, .. } = &mut self.phase else {
            return;
        };
        while let Some(transmit) = self.delivery.poll_transmit() {
            let sent = match transmit.lane {
                Some(lane) => link.lanes.lane(lane).send(transmit.frame).await,
                None => link.control.send(transmit.frame).await,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    async fn shutdown(&mut self) {
        // `ack` and `close` reach the driver by different paths (a shared buffer and the
        // command queue), and `select!` may see the close first: collect the
        // acknowledgements here too, or the game's last acks would be lost.
        for id in self.shared.take_acks() {
            self.delivery.ack(id);
        }
        self.drain_events();
        self.flush_transmits_waiting().await;
        // `&mut`: a shared borrow held across `.await` would need the link to be `Sync`,
        // which its inbound streams (boxed, `Send` only) are not.
        if let Phase::Up { link, .. } = &mut self.phase {
            // Closing a QUIC connection discards stream data still in flight; wait until
            // the edge has the last acknowledgements, or a message the game already
            // handled would be delivered again next time.
            // `finish` returns once the edge's QUIC stack has the data, not once the edge
            // has read it, and an edge drops unread stream data when the connection
            // closes. The edge closes the connection itself after reading the control
            // stream to its end (every ack forwarded), so wait for that, bounded.
            let grace = tokio::time::Instant::now() + CLOSE_GRACE;
            let _ = tokio::time::timeout_at(grace, link.control.finish()).await;
            let _ = tokio::time::timeout_at(grace, link.conn.closed()).await;
            transport::close(&link.conn, ErrorCode::NoError, "closed by the client");
        }
        self.phase = Phase::Stopped;
        // Let the close reach the edge, so it frees the session at once.
        let _ = tokio::time::timeout(CLOSE_GRACE, self.params.endpoint.wait_idle()).await;
        // Dropping the waiters answers their senders with `SendError::Closed`.
        self.waiters.clear();
        self.push(Event::Disconnected {
            code: Some(ErrorCode::NoError),
            reason: "closed by the client".into(),
        });
        while let Some(event) = self.backlog.pop_front() {
            if self.events.try_send(event).is_err() {
                break;
            }
        }
    }
}

/// Waits for the current phase's next event. Cancel-safe: the select in
/// [`Driver::run`] drops it whenever another branch wins.
async fn phase_wait(phase: &mut Phase, read_lanes: bool) -> PhaseEvent {
    match phase {
        Phase::Up { link, .. } => {
            let link = &mut **link;
            tokio::select! {
                biased;
                err = link.conn.closed() => PhaseEvent::Lost(err),
                arrived = std::future::poll_fn(|cx| {
                    link.inbound.poll_frames(cx, read_lanes, FRAMES_PER_TURN)
                }) => match arrived {
                    Arrived::Frames(frames) => PhaseEvent::Frames(frames),
                    Arrived::ControlEnded => PhaseEvent::Broken("control stream ended"),
                },
            }
        }
        Phase::Waiting { until } => {
            tokio::time::sleep_until(*until).await;
            PhaseEvent::WaitOver
        }
        Phase::Dialing(dialing) => PhaseEvent::Dialed(dialing.as_mut().await),
        Phase::Stopped => std::future::pending().await,
    }
}
