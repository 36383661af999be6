//! [`DeliveryConfig`]: the knobs of one client's delivery state machine.

use std::time::Duration;

/// Default for [`DeliveryConfig::outbox_max`].
pub const OUTBOX_MAX_DEFAULT: usize = 1024;
/// Default for [`DeliveryConfig::dedup_senders_max`].
pub const DEDUP_SENDERS_MAX_DEFAULT: usize = 4096;

/// How a [`super::Delivery`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most messages waiting for the core's answer. A `send` beyond it fails with
    /// [`super::SendError::OutboxFull`]: the game learns at once that it is sending faster
    /// than the server accepts, instead of the library buffering without end.
    pub outbox_max: usize,
    /// How long a message may wait for the core's answer before the library gives up and
    /// reports [`crate::ErrorCode::Timeout`]. `None` waits for ever (across reconnects).
    /// A timed-out message may still be delivered: the library only stops waiting.
    pub send_timeout: Option<Duration>,
    /// Acknowledge a delivered message as soon as the game takes it
    /// ([`super::Delivery::poll_event`]). Without it the game calls
    /// [`super::Delivery::ack`] itself, for example after saving the message.
    pub auto_ack: bool,
    /// Most `(sender, epoch)` pairs remembered for de-duplication; the least recently
    /// used is forgotten first. A forgotten pair can only matter if one of its old
    /// messages is replayed after that, which needs thousands of other senders in between.
    pub dedup_senders_max: usize,
    /// Refuse sends with [`super::SendError::Busy`] while the server's answers show a
    /// standing queue longer than this and the client already has several messages
    /// unanswered (see `admission.rs`; [`super::ADMISSION_QUEUE_TARGET`] is a starting
    /// point). `None`, the default, queues up to `outbox_max` messages, each waiting its
    /// turn. Off by default because it also refuses a sender that queued a large batch
    /// on purpose, and sends during a passing stall of the server (measured: 1,732 of
    /// 45,000 refused at 5,000 msg/s on a machine busy with other work); for automated
    /// senders that would rather be told than wait. On a short, steady path (a bot next
    /// to the edge) a few milliseconds work: with 3 ms, the benchmark at twice the
    /// sustainable rate kept the accepted messages' p99 within 10× of the unloaded one
    /// in three of four runs and refused nothing at normal load (`BENCHMARKS.md`).
    pub admission: Option<Duration>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            outbox_max: OUTBOX_MAX_DEFAULT,
            send_timeout: None,
            auto_ack: true,
            dedup_senders_max: DEDUP_SENDERS_MAX_DEFAULT,
            admission: None,
        }
    }
}
