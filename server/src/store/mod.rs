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
//! of its recipient *known to the store* has acknowledged it ([`StoredMessage::is_done`]).
//! A device is known from the moment it is recorded in [`WriteBatch::devices_seen`] until a
//! commit with [`WriteBatch::expire_before_ms`] `= t` forgets it because it was last seen
//! before `t - device_ttl_ms`. The store has no clock of its own: the core's periodic
//! expiry batch is what ages devices out, so a stale device holds messages back for at
//! most one expiry period longer than [`StoreConfig::device_ttl_ms`].
//!
//! The rule is checked whenever it can newly hold: for the messages an ack touches, for an
//! appended message that arrives with acks, and for every message of a user one of whose
//! devices was just forgotten. So after any commit no stored message satisfies it (unless
//! the per-commit expiry limits below deferred some of that work to the next commit).
//!
//! A message is also deleted when its `expires_at_ms` passes (see
//! [`WriteBatch::expire_before_ms`]); expiry does not need any acknowledgement.
//!
//! # Bounded work per commit
//! One expiry pass deletes at most [`EXPIRE_MESSAGES_PER_COMMIT_MAX`] messages and forgets
//! at most [`FORGET_DEVICES_PER_COMMIT_MAX`] devices, oldest first; the rest is left for
//! the next commit that carries `expire_before_ms`. This keeps one commit (and the fsync
//! the senders in it wait for) short after a long outage. Acks and re-checks after a
//! forgotten device touch at most one user's inbox each, which the core bounds with its
//! inbox quota.

pub mod mem;
pub mod redb_store;

use protocol::{DeviceId, EncodedMessage, ErrorCode, IdRange, Message, MessageId, UserId};
use serde::{Deserialize, Serialize};

/// At most this many messages are deleted by one expiry pass (see the module doc).
pub const EXPIRE_MESSAGES_PER_COMMIT_MAX: usize = 10_000;

/// At most this many devices are forgotten by one expiry pass (see the module doc). Each
/// forgotten device costs a re-check of its user's inbox, hence the lower limit.
pub const FORGET_DEVICES_PER_COMMIT_MAX: usize = 100;

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

impl StoredMessage {
    /// A message nobody has acknowledged yet.
    pub fn new(message: Message, expires_at_ms: u64) -> Self {
        Self {
            message,
            expires_at_ms,
            acked_by: Vec::new(),
        }
    }

    /// Whether `device` acknowledged this message.
    pub fn is_acked_by(&self, device: DeviceId) -> bool {
        self.acked_by.contains(&device)
    }

    /// Records `device`'s acknowledgement, keeping `acked_by` sorted and free of
    /// duplicates. Returns whether it was new.
    pub fn add_ack(&mut self, device: DeviceId) -> bool {
        match self.acked_by.binary_search(&device) {
            Ok(_) => false,
            Err(at) => {
                self.acked_by.insert(at, device);
                true
            }
        }
    }

    /// The deletion rule: at least one device acknowledged the message, and so did every
    /// device in `known_devices` (the recipient's devices known to the store).
    pub fn is_done(&self, known_devices: &[DeviceId]) -> bool {
        !self.acked_by.is_empty() && known_devices.iter().all(|device| self.is_acked_by(*device))
    }

    /// Whether the message has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
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
/// `devices_seen`, `appends`, `acks`, `expire_before_ms`. Either all of it is applied and
/// durable when [`LogStore::commit`] returns `Ok`, or none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// If set, record durably that ids up to and including this value may have been handed
    /// out; after a restart, ids resume above it. Never decreases.
    pub reserve_ids_through: Option<u64>,
    /// Devices seen at `ms` (milliseconds since the Unix epoch): recorded or refreshed. A
    /// device's last-seen time never goes back: an older `ms` than the stored one is ignored.
    pub devices_seen: Vec<(UserId, DeviceId, u64)>,
    /// New messages to store under `(message.to, message.id)` (ids unique, each above every
    /// id previously appended). An id already stored makes the whole commit fail with
    /// [`StoreError::InvalidBatch`]. `acked_by` may be non-empty (devices that acknowledged
    /// the message before it reached the disk); the deletion rule applies to it at once.
    pub appends: Vec<StoredMessage>,
    /// Acknowledgements to apply. Ranges with `first > last` are ignored.
    pub acks: Vec<AckOp>,
    /// If set, delete messages with `expires_at_ms <= this` and forget devices last seen
    /// before `this - device_ttl_ms`, within the per-commit limits of the module doc.
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
    /// Messages deleted by this commit (fully acknowledged or expired), with their log, in
    /// the order they were deleted: acks and appends in batch order, then expiry oldest
    /// first, then re-checks after forgotten devices by user and id.
    pub deleted: Vec<(UserId, MessageId)>,
}

/// What the store knows about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    /// The user's known devices and when each was last seen (ms since the Unix epoch), in
    /// increasing device id order.
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
    /// Stored bytes did not decode (corruption or a format change), or the store's tables
    /// disagree with each other.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The batch broke the [`WriteBatch`] contract (an id already stored); nothing of it
    /// was applied. A bug in the caller, not a storage failure.
    #[error("invalid write batch: {0}")]
    InvalidBatch(String),
}

impl StoreError {
    /// What a client whose request needed the store is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            // The disk or the database may recover (space freed, lock released): retry.
            Self::Open(_) | Self::Transaction(_) | Self::Read(_) => ErrorCode::Unavailable,
            Self::Corrupt(_) | Self::InvalidBatch(_) => ErrorCode::Internal,
        }
    }
}

/// The narrow storage interface the core needs.
pub trait LogStore: Send + Sync + 'static {
    /// Applies `batch` atomically and durably (one transaction, one fsync). An empty batch
    /// is a no-op that touches no disk.
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

    /// The messages [`LogStore::replay`] returns, each in its wire encoding, as a replay
    /// sends it on (see [`EncodedMessage`]). The default encodes what `replay` returns; a
    /// store that keeps messages encoded hands out its bytes without decoding them.
    fn replay_encoded(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<EncodedMessage>, StoreError> {
        self.replay(user, device, after, limit, now_ms)?
            .iter()
            .map(|stored| {
                EncodedMessage::new(&stored.message).map_err(|e| {
                    StoreError::Corrupt(format!("message {} of {user}: {e}", stored.message.id.0))
                })
            })
            .collect()
    }

    /// The highest id ever reserved (`0` for a new store): ids handed out after a restart
    /// must be above it.
    fn reserved_ids_through(&self) -> Result<u64, StoreError>;
}
