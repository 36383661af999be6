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
    /// unanswered (see `admission.rs`). `None` turns it off: a sender that outruns the
    /// server then queues up to `outbox_max` messages and each waits its turn. Default
    /// [`super::ADMISSION_QUEUE_TARGET`].
    pub admission: Option<Duration>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            outbox_max: OUTBOX_MAX_DEFAULT,
            send_timeout: None,
            auto_ack: true,
            dedup_senders_max: DEDUP_SENDERS_MAX_DEFAULT,
            admission: Some(super::ADMISSION_QUEUE_TARGET),
        }
    }
}
