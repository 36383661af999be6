//! Helpers shared by the store tests: building messages and batches, and running one
//! check against both [`MemStore`] and [`RedbStore`].

#![allow(dead_code)] // Each test binary uses its own subset.
// In a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::{DeviceId, IdRange, Message, MessageId, SenderKey, UserId};
use server::store::mem::MemStore;
use server::store::redb_store::RedbStore;
use server::store::{AckOp, LogStore, StoreConfig, StoreError, StoredMessage, WriteBatch};

/// Device TTL used by the tests, in ms.
pub const DEVICE_TTL_MS: u64 = 1_000;

/// The store settings of the tests.
pub fn config() -> StoreConfig {
    StoreConfig {
        device_ttl_ms: DEVICE_TTL_MS,
    }
}

/// A user id.
pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// A message `id` to `to`, expiring at `expires_at_ms`, with 64 bytes of text.
pub fn message(to: &str, id: u64, expires_at_ms: u64) -> StoredMessage {
    let text = format!("{id:064}");
    StoredMessage::new(
        Message {
            id: MessageId(id),
            from: user("sender"),
            from_name: "Sender".to_owned(),
            to: user(to),
            key: SenderKey {
                epoch: 1,
                counter: id,
            },
            sent_at_ms: 10,
            text,
        },
        expires_at_ms,
    )
}

/// A batch that appends `messages`.
pub fn appends(messages: Vec<StoredMessage>) -> WriteBatch {
    WriteBatch {
        appends: messages,
        ..WriteBatch::default()
    }
}

/// A batch recording that `device` of `to` was seen at `ms`.
pub fn seen(to: &str, device: u64, ms: u64) -> WriteBatch {
    WriteBatch {
        devices_seen: vec![(user(to), DeviceId(device), ms)],
        ..WriteBatch::default()
    }
}

/// A batch acknowledging `first..=last` of `to`'s log for `device`.
pub fn ack(to: &str, device: u64, first: u64, last: u64) -> WriteBatch {
    WriteBatch {
        acks: vec![AckOp {
            user: user(to),
            device: DeviceId(device),
            ranges: vec![IdRange {
                first: MessageId(first),
                last: MessageId(last),
            }],
        }],
        ..WriteBatch::default()
    }
}

/// A batch running expiry at `t`.
pub fn expire(t: u64) -> WriteBatch {
    WriteBatch {
        expire_before_ms: Some(t),
        ..WriteBatch::default()
    }
}

/// The ids of `messages`, in order.
pub fn ids(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.message.id.0).collect()
}

/// Every message stored for `to` that `device` has not acknowledged, expired or not.
pub fn pending(store: &dyn LogStore, to: &str, device: u64) -> Vec<u64> {
    ids(&store
        .replay_checked(&user(to), DeviceId(device), None, usize::MAX, 0)
        .unwrap())
}

/// [`LogStore::replay`], checked against [`LogStore::replay_encoded`]: both kinds of
/// replay must return the same messages (the encoded ones read back in place).
pub trait ReplayChecked {
    /// `replay`, after asserting that `replay_encoded` agrees with it.
    fn replay_checked(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
}

impl ReplayChecked for dyn LogStore + '_ {
    fn replay_checked(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let stored = self.replay(user, device, after, limit, now_ms);
        let encoded = self.replay_encoded(user, device, after, limit, now_ms);
        match (&stored, encoded) {
            (Ok(stored), Ok(encoded)) => {
                let decoded: Vec<Message> = encoded.iter().map(|m| m.decode().unwrap()).collect();
                let expected: Vec<Message> = stored.iter().map(|s| s.message.clone()).collect();
                assert_eq!(decoded, expected, "replay_encoded disagrees with replay");
                for (m, s) in encoded.iter().zip(stored) {
                    assert_eq!((m.id(), m.to()), (s.message.id, &s.message.to));
                }
            }
            (Err(_), Err(_)) => {}
            (stored, encoded) => panic!("replay {stored:?}, replay_encoded {encoded:?}"),
        }
        stored
    }
}

/// Runs `check` on a fresh `MemStore` and on a fresh `RedbStore` in a temporary file;
/// `check` gets the store's name for its assertion messages.
pub fn on_both_stores(check: impl Fn(&str, &dyn LogStore)) {
    check("mem", &MemStore::new(config()));
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("store.redb"), config()).unwrap();
    check("redb", &redb);
}
