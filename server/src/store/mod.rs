//! Storage of undelivered messages, behind a narrow interface.
//!
//! The core keeps, per recipient, a log of messages not yet acknowledged by every device
//! of that recipient. [`LogStore`] is the whole interface: commit a [`WriteBatch`] (one
//! transaction, one fsync), read a user's devices and inbox size, replay a device's
//! undelivered messages, and learn where message ids may resume after a restart.
//! [`RedbStore`](redb_store::RedbStore) is the implementation; [`MemStore`](mem::MemStore)
//! is a plain in-memory model of the same contract, used by tests and by the fuzz target
//! that runs both side by side.
//!
//! The store is synchronous on purpose: the core calls it from one writer thread (commits)
//! and from its router (reads, which redb serves from a snapshot without blocking the
//! writer). Group commit — many messages per transaction — is the caller's job: the core
//! accumulates a batch while the previous one is being fsync'd.
//!
//! # Deletion rule
//! A stored message is deleted when at least one device acknowledged it and every device
//! of its recipient *known to the store* has acknowledged it. A device is known from the
//! moment it is recorded in [`WriteBatch::devices_seen`] until it has not been seen for
//! [`StoreConfig::device_ttl_ms`]. A message is also deleted when its `expires_at_ms`
//! passes (see [`WriteBatch::expire_before_ms`]).

pub mod mem;
pub mod redb_store;

use protocol::{DeviceId, IdRange, Message, MessageId, UserId};
use serde::{Deserialize, Serialize};

/// A message as stored: the delivered form plus bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message exactly as it will be delivered; `message.to` is the log it lives in.
    pub message: Message,
    /// When the message expires undelivered, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Devices of the recipient that acknowledged it so far (sorted, no duplicates).
    pub acked_by: Vec<DeviceId>,
}

/// One device's acknowledgement of ids in its user's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckOp {
    /// Whose log.
    pub user: UserId,
    /// Which device acknowledged.
    pub device: DeviceId,
    /// The acknowledged ids. Ids not in the log (already deleted, never stored) are ignored.
    pub ranges: Vec<IdRange>,
}

/// Everything one commit writes, applied atomically in this order: `reserve_ids_through`,
/// `devices_seen`, `appends`, `acks`, `expire_before_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// If set, record durably that ids up to and including this value may have been handed
    /// out; after a restart, ids resume above it. Never decreases.
    pub reserve_ids_through: Option<u64>,
    /// Devices seen at `ms` (milliseconds since the Unix epoch): recorded or refreshed.
    pub devices_seen: Vec<(UserId, DeviceId, u64)>,
    /// New messages to store (ids unique, each above every id previously appended).
    pub appends: Vec<StoredMessage>,
    /// Acknowledgements to apply.
    pub acks: Vec<AckOp>,
    /// If set, delete messages with `expires_at_ms <= this` and forget devices not seen
    /// since `this - device_ttl_ms`.
    pub expire_before_ms: Option<u64>,
}

impl WriteBatch {
    /// Whether committing this batch would change nothing.
    pub fn is_empty(&self) -> bool {
        self.reserve_ids_through.is_none()
            && self.devices_seen.is_empty()
            && self.appends.is_empty()
            && self.acks.is_empty()
            && self.expire_before_ms.is_none()
    }
}

/// What a commit did that the caller must know about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Messages deleted by this commit (fully acknowledged or expired), with their log.
    pub deleted: Vec<(UserId, MessageId)>,
}

/// What the store knows about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    /// The user's known devices and when each was last seen (ms since the Unix epoch).
    pub devices: Vec<(DeviceId, u64)>,
    /// How many messages are stored for the user.
    pub inbox_len: u64,
}

/// Store settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// A device not seen for this long is forgotten (it no longer holds messages back).
    pub device_ttl_ms: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("opening the store: {0}")]
    Open(String),
    /// A transaction failed; nothing of it was applied.
    #[error("store transaction failed: {0}")]
    Transaction(String),
    /// A read failed.
    #[error("store read failed: {0}")]
    Read(String),
    /// Stored bytes did not decode (corruption or a format change).
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// The narrow storage interface the core needs.
pub trait LogStore: Send + Sync + 'static {
    /// Applies `batch` atomically and durably (one transaction, one fsync).
    fn commit(&self, batch: &WriteBatch) -> Result<CommitOutcome, StoreError>;

    /// The user's known devices and inbox size.
    fn user_state(&self, user: &UserId) -> Result<UserState, StoreError>;

    /// Up to `limit` stored messages of `user` with id greater than `after` (all if
    /// `None`), that `device` has not acknowledged and that have not expired at `now_ms`,
    /// in increasing id order.
    fn replay(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The highest id ever reserved (`0` for a new store): ids handed out after a restart
    /// must be above it.
    fn reserved_ids_through(&self) -> Result<u64, StoreError>;
}
