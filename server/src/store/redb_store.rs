//! [`RedbStore`]: the [`LogStore`] on a redb file.
//!
//! # Layout
//! Every table is keyed so that the questions the core asks are range scans:
//!
//! | table             | key                             | value                      |
//! |-------------------|---------------------------------|----------------------------|
//! | `messages`        | `(user, id)`                    | postcard [`StoredMessage`] |
//! | `expiry`          | `(expires_at_ms, user, id)`     | `()`                       |
//! | `devices`         | `(user, device)`                | last seen, ms              |
//! | `devices_by_seen` | `(last_seen_ms, user, device)`  | `()`                       |
//! | `inbox_len`       | `user`                          | stored messages of user    |
//! | `meta`            | name                            | `u64`                      |
//!
//! One user's log is a contiguous key range of `messages`, so replay and acks scan only
//! that user's records. `expiry` and `devices_by_seen` are indexes that make expiry a scan
//! of what actually expired instead of the whole store. `inbox_len` keeps
//! [`LogStore::user_state`] O(devices + 1). `meta` holds the file format version and
//! `reserved_ids_through`.
//!
//! # Invariants
//! Each commit is one redb write transaction with [`Durability::Immediate`]: one fsync,
//! all or nothing. Within it the indexes and counts change together with `messages` and
//! `devices`, so they always agree; a disagreement found on read is reported as
//! [`StoreError::Corrupt`], as is a record that does not decode. Nothing read from the file
//! can make the store panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use protocol::{DeviceId, EncodedMessage, MessageId, UserId};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use serde::Deserialize;

use super::{
    AckOp, CommitOutcome, EXPIRE_MESSAGES_PER_COMMIT_MAX, FORGET_DEVICES_PER_COMMIT_MAX, LogStore,
    StoreConfig, StoreError, StoredMessage, UserState, WriteBatch,
};

/// Stored messages by `(user, id)`: one user's log is one key range.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// Expiry index: `(expires_at_ms, user, id)` of every stored message.
const EXPIRY: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("expiry");
/// Known devices by `(user, device)`, valued by when each was last seen.
const DEVICES: TableDefinition<(&str, u64), u64> = TableDefinition::new("devices");
/// Device staleness index: `(last_seen_ms, user, device)` of every known device.
const DEVICES_BY_SEEN: TableDefinition<(u64, &str, u64), ()> =
    TableDefinition::new("devices_by_seen");
/// Stored messages per user; a user with none has no entry.
const INBOX_LEN: TableDefinition<&str, u64> = TableDefinition::new("inbox_len");
/// Store-wide values, by name.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` key of the file format version.
const META_FORMAT_VERSION: &str = "format_version";
/// `meta` key of the highest reserved message id.
const META_RESERVED_IDS_THROUGH: &str = "reserved_ids_through";
/// Most records [`LogStore::replay`] reserves room for before reading any (callers may
/// pass any limit).
const REPLAY_CAPACITY_MAX: usize = 1024;
/// The format this code writes. A file of another version is refused at open rather than
/// misread.
const FORMAT_VERSION: u64 = 1;

/// The message store on a redb file.
#[derive(Debug)]
pub struct RedbStore {
    /// The open database. redb serves reads from snapshots, so readers never wait for the
    /// writer's fsync.
    db: Database,
    /// Settings.
    config: StoreConfig,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if it does not exist.
    ///
    /// The whole file is checked (every page checksum) on open, so a file damaged outside
    /// redb is refused with [`StoreError::Corrupt`] instead of panicking later. This reads
    /// the file once: its cost grows with the number of stored messages. After a crash redb
    /// also repairs its allocator state here.
    pub fn open(path: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(open_error)?;
        let store = Self { db, config };
        store.init()?;
        Ok(store)
    }

    /// Creates every table and checks (or writes) the format version, so that readers can
    /// open any table without a missing-table case.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(open_error)?;
            let version = meta
                .get(META_FORMAT_VERSION)
                .map_err(open_error)?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)
                        .map_err(open_error)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(StoreError::Open(format!(
                        "file format version {other}, this build reads {FORMAT_VERSION}"
                    )));
                }
            }
            txn.open_table(MESSAGES).map_err(open_error)?;
            txn.open_table(EXPIRY).map_err(open_error)?;
            txn.open_table(DEVICES).map_err(open_error)?;
            txn.open_table(DEVICES_BY_SEEN).map_err(open_error)?;
            txn.open_table(INBOX_LEN).map_err(open_error)?;
        }
        txn.commit().map_err(open_error)
    }

    /// Reads `user`'s records with ids above `after` in order, keeping what `keep` makes
    /// of each, until it has `limit` of them: the one scan of both kinds of replay.
    fn scan<T>(
        &self,
        user: &UserId,
        after: Option<MessageId>,
        limit: usize,
        mut keep: impl FnMut(u64, &[u8]) -> Result<Option<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let first = match after {
            None => 0,
            Some(MessageId(after)) => match after.checked_add(1) {
                Some(first) => first,
                None => return Ok(Vec::new()),
            },
        };
        let txn = self.db.begin_read().map_err(read_error)?;
        let messages = txn.open_table(MESSAGES).map_err(read_error)?;
        let user = user.as_str();
        // Sized up front: a replay page is hundreds of records, and growing the vector
        // to that by doubling copied it eight times (a drain's profile showed it).
        let mut found = Vec::with_capacity(limit.min(REPLAY_CAPACITY_MAX));
        for entry in messages
            .range((user, first)..=(user, u64::MAX))
            .map_err(read_error)?
        {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(read_error)?;
            if let Some(kept) = keep(key.value().1, value.value())? {
                found.push(kept);
            }
        }
        Ok(found)
    }

    /// A write transaction that fsyncs on commit.
    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(tx)?;
        // Immediate is redb's default; say so anyway, since every guarantee of this store
        // ("a committed batch survives a crash") rests on it.
        txn.set_durability(Durability::Immediate).map_err(tx)?;
        Ok(txn)
    }
}

/// Maps a redb error to a [`StoreError`] of kind `kind`, except that redb's own corruption
/// reports stay [`StoreError::Corrupt`] whatever the operation.
fn redb_error(kind: fn(String) -> StoreError, error: redb::Error) -> StoreError {
    match error {
        redb::Error::Corrupted(message) => StoreError::Corrupt(message),
        other => kind(other.to_string()),
    }
}

/// A redb failure while opening.
fn open_error<E: Into<redb::Error>>(error: E) -> StoreError {
    redb_error(StoreError::Open, error.into())
}

/// A redb failure inside a commit: the transaction is dropped, so nothing is applied.
fn tx<E: Into<redb::Error>>(error: E) -> StoreError {
    redb_error(StoreError::Transaction, error.into())
}

/// A redb failure while reading.
fn read_error<E: Into<redb::Error>>(error: E) -> StoreError {
    redb_error(StoreError::Read, error.into())
}

/// Encodes a record for `messages`.
fn encode(stored: &StoredMessage) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(stored).map_err(|e| StoreError::Transaction(format!("encoding: {e}")))
}

/// Decodes the `messages` record at `(user, id)`, checking that it is whole and belongs
/// where it was found.
fn decode(user: &str, id: u64, bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    let (stored, rest): (StoredMessage, &[u8]) = postcard::take_from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("message {id} of {user}: {e}")))?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "message {id} of {user}: {} trailing bytes",
            rest.len()
        )));
    }
    if stored.message.to.as_str() != user || stored.message.id.0 != id {
        return Err(StoreError::Corrupt(format!(
            "message {id} of {user} holds message {} of {}",
            stored.message.id.0, stored.message.to
        )));
    }
    Ok(stored)
}

/// What a `messages` record holds after the message: [`StoredMessage`]'s other fields, in
/// their order (postcard writes a struct's fields one after another).
#[derive(Deserialize)]
struct RecordTail {
    expires_at_ms: u64,
    acked_by: Vec<DeviceId>,
}

/// Like [`decode`], with the message kept in its encoding: the record's first bytes, read
/// in place (see [`EncodedMessage::take_from`]). Refuses what `decode` refuses, and also a
/// message over the protocol's size ceilings, which the core never stores (the edge
/// checks each message against them before it reaches the core).
fn decode_encoded(
    user: &str,
    id: u64,
    bytes: &[u8],
) -> Result<(EncodedMessage, RecordTail), StoreError> {
    let corrupt =
        |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("message {id} of {user}: {e}"));
    let (message, rest) = EncodedMessage::take_from(bytes).map_err(|e| corrupt(&e))?;
    let (tail, rest): (RecordTail, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|e| corrupt(&e))?;
    if !rest.is_empty() {
        return Err(corrupt(&format_args!("{} trailing bytes", rest.len())));
    }
    if message.to().as_str() != user || message.id().0 != id {
        return Err(StoreError::Corrupt(format!(
            "message {id} of {user} holds message {} of {}",
            message.id().0,
            message.to()
        )));
    }
    Ok((message, tail))
}

/// A user id read back from a key.
fn user_id(user: &str) -> Result<UserId, StoreError> {
    UserId::new(user).map_err(|e| StoreError::Corrupt(format!("stored user id {user:?}: {e}")))
}

/// The tables of one write transaction, and what the commit deleted so far.
struct Writer<'t> {
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    expiry: Table<'t, (u64, &'static str, u64), ()>,
    devices: Table<'t, (&'static str, u64), u64>,
    devices_by_seen: Table<'t, (u64, &'static str, u64), ()>,
    inbox_len: Table<'t, &'static str, u64>,
    meta: Table<'t, &'static str, u64>,
    /// Net change of each touched user's inbox count, written once at the end of the
    /// commit rather than once per message.
    inbox_delta: BTreeMap<String, i64>,
    deleted: Vec<(UserId, MessageId)>,
}

impl<'t> Writer<'t> {
    /// Opens every table of `txn`.
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            messages: txn.open_table(MESSAGES).map_err(tx)?,
            expiry: txn.open_table(EXPIRY).map_err(tx)?,
            devices: txn.open_table(DEVICES).map_err(tx)?,
            devices_by_seen: txn.open_table(DEVICES_BY_SEEN).map_err(tx)?,
            inbox_len: txn.open_table(INBOX_LEN).map_err(tx)?,
            meta: txn.open_table(META).map_err(tx)?,
            inbox_delta: BTreeMap::new(),
            deleted: Vec::new(),
        })
    }

    /// Applies `batch` in the documented order.
    fn apply(&mut self, batch: &WriteBatch, config: StoreConfig) -> Result<(), StoreError> {
        if let Some(through) = batch.reserve_ids_through {
            self.reserve(through)?;
        }
        for (user, device, ms) in &batch.devices_seen {
            self.see_device(user.as_str(), *device, *ms)?;
        }
        for stored in &batch.appends {
            self.append(stored)?;
        }
        for ack in &batch.acks {
            self.ack(ack)?;
        }
        if let Some(t) = batch.expire_before_ms {
            self.expire_messages(t)?;
            self.forget_devices(t.saturating_sub(config.device_ttl_ms))?;
        }
        self.write_inbox_lengths()
    }

    /// Raises `reserved_ids_through` to `through`; never lowers it.
    fn reserve(&mut self, through: u64) -> Result<(), StoreError> {
        let current = self
            .meta
            .get(META_RESERVED_IDS_THROUGH)
            .map_err(tx)?
            .map_or(0, |v| v.value());
        if through > current {
            self.meta
                .insert(META_RESERVED_IDS_THROUGH, through)
                .map_err(tx)?;
        }
        Ok(())
    }

    /// Records that `device` of `user` was seen at `ms`, keeping the later of the stored
    /// and the new time.
    fn see_device(&mut self, user: &str, device: DeviceId, ms: u64) -> Result<(), StoreError> {
        let previous = self
            .devices
            .get((user, device.0))
            .map_err(tx)?
            .map(|v| v.value());
        match previous {
            Some(seen) if seen >= ms => return Ok(()),
            Some(seen) => {
                self.devices_by_seen
                    .remove((seen, user, device.0))
                    .map_err(tx)?;
            }
            None => {}
        }
        self.devices.insert((user, device.0), ms).map_err(tx)?;
        self.devices_by_seen
            .insert((ms, user, device.0), ())
            .map_err(tx)?;
        Ok(())
    }

    /// The devices of `user` known to the store, by increasing id.
    fn known_devices(&self, user: &str) -> Result<Vec<DeviceId>, StoreError> {
        let mut known = Vec::new();
        for entry in self
            .devices
            .range((user, 0)..=(user, u64::MAX))
            .map_err(tx)?
        {
            let (key, _) = entry.map_err(tx)?;
            known.push(DeviceId(key.value().1));
        }
        Ok(known)
    }

    /// Notes that `user`'s inbox grew (`+1`) or shrank (`-1`) by one message.
    fn count(&mut self, user: &str, change: i64) {
        match self.inbox_delta.get_mut(user) {
            Some(delta) => *delta += change,
            None => {
                self.inbox_delta.insert(user.to_owned(), change);
            }
        }
    }

    /// Applies the counted changes to `inbox_len`.
    fn write_inbox_lengths(&mut self) -> Result<(), StoreError> {
        for (user, delta) in std::mem::take(&mut self.inbox_delta) {
            let user = user.as_str();
            let len = self
                .inbox_len
                .get(user)
                .map_err(tx)?
                .map_or(0, |v| v.value());
            let len = len.checked_add_signed(delta).ok_or_else(|| {
                StoreError::Corrupt(format!("inbox count of {user} out of range"))
            })?;
            if len == 0 {
                self.inbox_len.remove(user).map_err(tx)?;
            } else {
                self.inbox_len.insert(user, len).map_err(tx)?;
            }
        }
        Ok(())
    }

    /// Stores one new message, or deletes it at once if its acks already satisfy the rule.
    fn append(&mut self, stored: &StoredMessage) -> Result<(), StoreError> {
        let user = stored.message.to.as_str();
        let id = stored.message.id.0;
        let mut stored = stored.clone();
        stored.acked_by.sort_unstable();
        stored.acked_by.dedup();
        let existed = self
            .messages
            .insert((user, id), encode(&stored)?.as_slice())
            .map_err(tx)?
            .is_some();
        if existed {
            // The caller drops the transaction on this error, so the overwrite never lands.
            return Err(StoreError::InvalidBatch(format!(
                "message {id} of {user} is already stored"
            )));
        }
        self.expiry
            .insert((stored.expires_at_ms, user, id), ())
            .map_err(tx)?;
        self.count(user, 1);
        if !stored.acked_by.is_empty() && stored.is_done(&self.known_devices(user)?) {
            self.delete(user, id, stored.expires_at_ms)?;
        }
        Ok(())
    }

    /// Deletes a stored message with its index entry and count, and reports it.
    fn delete(&mut self, user: &str, id: u64, expires_at_ms: u64) -> Result<(), StoreError> {
        self.messages.remove((user, id)).map_err(tx)?;
        self.unindex(&user_id(user)?, id, expires_at_ms)
    }

    /// The rest of a deletion once the record has left `messages`: its expiry entry, its
    /// count, and the report.
    fn unindex(&mut self, user: &UserId, id: u64, expires_at_ms: u64) -> Result<(), StoreError> {
        self.expiry
            .remove((expires_at_ms, user.as_str(), id))
            .map_err(tx)?;
        self.count(user.as_str(), -1);
        self.deleted.push((user.clone(), MessageId(id)));
        Ok(())
    }

    /// The stored messages of `user` with ids in `first..=last`, decoded.
    fn read_range(
        &self,
        user: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut found = Vec::new();
        for entry in self
            .messages
            .range((user, first)..=(user, last))
            .map_err(tx)?
        {
            let (key, value) = entry.map_err(tx)?;
            found.push(decode(user, key.value().1, value.value())?);
        }
        Ok(found)
    }

    /// Applies one device's acknowledgements: each stored id in the ranges gains the
    /// device, and is deleted if that completes it.
    ///
    /// The completed records leave `messages` in one cursor pass per range (redb's
    /// `retain_in`), which costs far less than a lookup and a delete per id: an offline
    /// drain acknowledges thousands of consecutive ids of one log.
    fn ack(&mut self, ack: &AckOp) -> Result<(), StoreError> {
        let user = ack.user.as_str();
        let known = self.known_devices(user)?;
        let mut done = Vec::new();
        let mut updated = Vec::new();
        for range in &ack.ranges {
            if range.first > range.last {
                continue;
            }
            let mut failure = None;
            let keys = (user, range.first.0)..=(user, range.last.0);
            let keep = |key: (&str, u64), value: &[u8]| {
                // After a bad record keep everything: the commit fails, nothing applies.
                if failure.is_some() {
                    return true;
                }
                let mut stored = match decode(user, key.1, value) {
                    Ok(stored) => stored,
                    Err(e) => {
                        failure = Some(e);
                        return true;
                    }
                };
                let added = stored.add_ack(ack.device);
                if stored.is_done(&known) {
                    done.push((key.1, stored.expires_at_ms));
                    return false;
                }
                if added {
                    updated.push(stored);
                }
                true
            };
            self.messages.retain_in(keys, keep).map_err(tx)?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        for (id, expires_at_ms) in done {
            self.unindex(&ack.user, id, expires_at_ms)?;
        }
        for stored in updated {
            self.messages
                .insert((user, stored.message.id.0), encode(&stored)?.as_slice())
                .map_err(tx)?;
        }
        Ok(())
    }

    /// Deletes messages with `expires_at_ms <= t`, oldest first, at most
    /// [`EXPIRE_MESSAGES_PER_COMMIT_MAX`].
    fn expire_messages(&mut self, t: u64) -> Result<(), StoreError> {
        let mut expired = Vec::new();
        for entry in self.expiry.iter().map_err(tx)? {
            let (key, _) = entry.map_err(tx)?;
            let (expires_at_ms, user, id) = key.value();
            if expires_at_ms > t || expired.len() == EXPIRE_MESSAGES_PER_COMMIT_MAX {
                break;
            }
            expired.push((expires_at_ms, user.to_owned(), id));
        }
        for (expires_at_ms, user, id) in expired {
            if self
                .messages
                .get((user.as_str(), id))
                .map_err(tx)?
                .is_none()
            {
                return Err(StoreError::Corrupt(format!(
                    "expiry index names message {id} of {user}, which is not stored"
                )));
            }
            self.delete(&user, id, expires_at_ms)?;
        }
        Ok(())
    }

    /// Forgets devices last seen before `cutoff_ms`, oldest first, at most
    /// [`FORGET_DEVICES_PER_COMMIT_MAX`], then deletes the messages of their users that no
    /// longer wait for anyone.
    fn forget_devices(&mut self, cutoff_ms: u64) -> Result<(), StoreError> {
        let mut stale = Vec::new();
        for entry in self.devices_by_seen.iter().map_err(tx)? {
            let (key, _) = entry.map_err(tx)?;
            let (seen, user, device) = key.value();
            if seen >= cutoff_ms || stale.len() == FORGET_DEVICES_PER_COMMIT_MAX {
                break;
            }
            stale.push((seen, user.to_owned(), device));
        }
        let mut users = BTreeSet::new();
        for (seen, user, device) in stale {
            self.devices_by_seen
                .remove((seen, user.as_str(), device))
                .map_err(tx)?;
            self.devices.remove((user.as_str(), device)).map_err(tx)?;
            users.insert(user);
        }
        for user in users {
            let known = self.known_devices(&user)?;
            for stored in self.read_range(&user, 0, u64::MAX)? {
                if stored.is_done(&known) {
                    self.delete(&user, stored.message.id.0, stored.expires_at_ms)?;
                }
            }
        }
        Ok(())
    }
}

impl LogStore for RedbStore {
    fn commit(&self, batch: &WriteBatch) -> Result<CommitOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let txn = self.begin_write()?;
        let deleted = {
            let mut writer = Writer::open(&txn)?;
            // On error `txn` is dropped uncommitted, which aborts it: nothing is applied.
            writer.apply(batch, self.config)?;
            writer.deleted
        };
        txn.commit().map_err(tx)?;
        Ok(CommitOutcome { deleted })
    }

    fn user_state(&self, user: &UserId) -> Result<UserState, StoreError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let devices_table = txn.open_table(DEVICES).map_err(read_error)?;
        let mut devices = Vec::new();
        let user = user.as_str();
        for entry in devices_table
            .range((user, 0)..=(user, u64::MAX))
            .map_err(read_error)?
        {
            let (key, seen) = entry.map_err(read_error)?;
            devices.push((DeviceId(key.value().1), seen.value()));
        }
        let inbox_len = txn
            .open_table(INBOX_LEN)
            .map_err(read_error)?
            .get(user)
            .map_err(read_error)?
            .map_or(0, |v| v.value());
        Ok(UserState { devices, inbox_len })
    }

    fn replay(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.scan(user, after, limit, |id, bytes| {
            let stored = decode(user.as_str(), id, bytes)?;
            let wanted = !stored.is_acked_by(device) && !stored.is_expired(now_ms);
            Ok(wanted.then_some(stored))
        })
    }

    fn replay_encoded(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<EncodedMessage>, StoreError> {
        self.scan(user, after, limit, |id, bytes| {
            let (message, tail) = decode_encoded(user.as_str(), id, bytes)?;
            let wanted = !tail.acked_by.contains(&device) && tail.expires_at_ms > now_ms;
            Ok(wanted.then_some(message))
        })
    }

    fn reserved_ids_through(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let meta = txn.open_table(META).map_err(read_error)?;
        Ok(meta
            .get(META_RESERVED_IDS_THROUGH)
            .map_err(read_error)?
            .map_or(0, |v| v.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Message, SenderKey};

    fn config() -> StoreConfig {
        StoreConfig {
            device_ttl_ms: 1_000,
        }
    }

    fn message(to: &str, id: u64) -> StoredMessage {
        StoredMessage::new(
            Message {
                id: MessageId(id),
                from: UserId::new("ann").unwrap(),
                from_name: "Ann".to_owned(),
                to: UserId::new(to).unwrap(),
                key: SenderKey {
                    epoch: 1,
                    counter: id,
                },
                sent_at_ms: 0,
                text: "hello".to_owned(),
            },
            u64::MAX,
        )
    }

    /// Writes `bytes` as the record of `(user, id)`, behind the store's back.
    fn overwrite_record(store: &RedbStore, user: &str, id: u64, bytes: &[u8]) {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(MESSAGES)
            .unwrap()
            .insert((user, id), bytes)
            .unwrap();
        txn.commit().unwrap();
    }

    fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    }

    #[test]
    fn a_record_that_does_not_decode_is_reported_as_corrupt() {
        // A damaged record must fail the one read or commit that meets it, with an error the
        // core can log and map, never a panic that takes every user down.
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), config()).unwrap();
        let batch = WriteBatch {
            appends: vec![message("bob", 1)],
            ..WriteBatch::default()
        };
        store.commit(&batch).unwrap();
        overwrite_record(&store, "bob", 1, &[0xff; 7]);

        let bob = UserId::new("bob").unwrap();
        assert_corrupt(store.replay(&bob, DeviceId(1), None, 10, 0));
        assert_corrupt(store.replay_encoded(&bob, DeviceId(1), None, 10, 0));
        let ack = AckOp {
            user: bob.clone(),
            device: DeviceId(1),
            ranges: vec![protocol::IdRange::single(MessageId(1))],
        };
        assert_corrupt(store.commit(&WriteBatch {
            acks: vec![ack],
            ..WriteBatch::default()
        }));
    }

    #[test]
    fn a_record_with_trailing_bytes_or_in_the_wrong_place_is_corrupt() {
        // Decoding checks the record on both sides of the boundary: it must be whole, and
        // be the message its key says it is.
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), config()).unwrap();
        let bob = UserId::new("bob").unwrap();

        let mut bytes = postcard::to_allocvec(&message("bob", 1)).unwrap();
        bytes.push(0);
        overwrite_record(&store, "bob", 1, &bytes);
        assert_corrupt(store.replay(&bob, DeviceId(1), None, 10, 0));
        assert_corrupt(store.replay_encoded(&bob, DeviceId(1), None, 10, 0));

        let elsewhere = postcard::to_allocvec(&message("bob", 2)).unwrap();
        overwrite_record(&store, "bob", 1, &elsewhere);
        assert_corrupt(store.replay(&bob, DeviceId(1), None, 10, 0));
        assert_corrupt(store.replay_encoded(&bob, DeviceId(1), None, 10, 0));

        // Cut inside the part after the message (its expiry and acknowledgements): the
        // in-place reader takes the message, then the rest must still be whole.
        let whole = postcard::to_allocvec(&message("bob", 1)).unwrap();
        overwrite_record(&store, "bob", 1, &whole[..whole.len() - 1]);
        assert_corrupt(store.replay(&bob, DeviceId(1), None, 10, 0));
        assert_corrupt(store.replay_encoded(&bob, DeviceId(1), None, 10, 0));
    }

    #[test]
    fn a_file_damaged_outside_redb_is_refused_at_open() {
        // Bit rot or a bad copy: the integrity check on open must turn it into an error.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = RedbStore::open(&path, config()).unwrap();
            let appends = (1..=200).map(|id| message("bob", id)).collect();
            store
                .commit(&WriteBatch {
                    appends,
                    ..WriteBatch::default()
                })
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for byte in &mut bytes[len / 4..len * 3 / 4] {
            *byte ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        let opened = RedbStore::open(&path, config());
        assert!(
            matches!(opened, Err(StoreError::Corrupt(_) | StoreError::Open(_))),
            "{opened:?}"
        );
    }
}
