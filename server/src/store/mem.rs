//! [`MemStore`]: the [`LogStore`] contract in plain `BTreeMap`s, the reference model.
//!
//! It keeps only the primary data — messages by `(user, id)`, devices by `(user, device)`
//! and the reserved-id mark — and derives everything else (inbox sizes, what expired,
//! which devices are stale) by scanning, so that it is obviously right rather than fast.
//! [`RedbStore`](super::redb_store::RedbStore) keeps indexes for the same answers; tests
//! and the fuzz target run both side by side and compare.
//!
//! Nothing is durable: dropping a `MemStore` loses everything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::{DeviceId, MessageId, UserId};

use super::{
    CommitOutcome, EXPIRE_MESSAGES_PER_COMMIT_MAX, FORGET_DEVICES_PER_COMMIT_MAX, LogStore,
    StoreConfig, StoreError, StoredMessage, UserState, WriteBatch,
};

/// An in-memory [`LogStore`]: the obviously-correct model of the contract.
#[derive(Debug)]
pub struct MemStore {
    /// Settings, as for the real store.
    config: StoreConfig,
    /// Everything stored. One lock for all of it: a commit is applied under it, so readers
    /// see a batch entirely or not at all, as with redb's snapshots.
    state: Mutex<State>,
}

/// The stored data.
#[derive(Debug, Default)]
struct State {
    /// Every stored message, keyed by its log and id.
    messages: BTreeMap<(UserId, MessageId), StoredMessage>,
    /// Every known device and when it was last seen (ms since the Unix epoch).
    devices: BTreeMap<(UserId, DeviceId), u64>,
    /// The highest id ever reserved.
    reserved_ids_through: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// The lock, even if a panicking thread poisoned it: every commit validates before it
    /// mutates, so the state is never left half-applied by an error.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The devices of `user` known to the store.
    fn known_devices(&self, user: &UserId) -> Vec<DeviceId> {
        self.devices
            .keys()
            .filter(|(u, _)| u == user)
            .map(|(_, device)| *device)
            .collect()
    }

    /// Deletes `(user, id)` and reports it.
    fn delete(&mut self, user: &UserId, id: MessageId, deleted: &mut Vec<(UserId, MessageId)>) {
        if self.messages.remove(&(user.clone(), id)).is_some() {
            deleted.push((user.clone(), id));
        }
    }

    /// Deletes every message of `user` that satisfies the deletion rule, by increasing id.
    fn recheck_user(&mut self, user: &UserId, deleted: &mut Vec<(UserId, MessageId)>) {
        let known = self.known_devices(user);
        let done: Vec<MessageId> = self
            .messages
            .iter()
            .filter(|((u, _), stored)| u == user && stored.is_done(&known))
            .map(|((_, id), _)| *id)
            .collect();
        for id in done {
            self.delete(user, id, deleted);
        }
    }

    /// The whole of [`LogStore::commit`], after validation.
    fn apply(&mut self, batch: &WriteBatch, config: StoreConfig) -> CommitOutcome {
        let mut deleted = Vec::new();

        if let Some(through) = batch.reserve_ids_through {
            self.reserved_ids_through = self.reserved_ids_through.max(through);
        }

        for (user, device, ms) in &batch.devices_seen {
            let seen = self.devices.entry((user.clone(), *device)).or_insert(*ms);
            *seen = (*seen).max(*ms);
        }

        for append in &batch.appends {
            let mut stored = append.clone();
            stored.acked_by.sort_unstable();
            stored.acked_by.dedup();
            let user = stored.message.to.clone();
            let id = stored.message.id;
            let done = stored.is_done(&self.known_devices(&user));
            self.messages.insert((user.clone(), id), stored);
            if done {
                self.delete(&user, id, &mut deleted);
            }
        }

        for ack in &batch.acks {
            let known = self.known_devices(&ack.user);
            for range in &ack.ranges {
                if range.first > range.last {
                    continue;
                }
                let ids: Vec<MessageId> = self
                    .messages
                    .range((ack.user.clone(), range.first)..=(ack.user.clone(), range.last))
                    .map(|((_, id), _)| *id)
                    .collect();
                for id in ids {
                    let Some(stored) = self.messages.get_mut(&(ack.user.clone(), id)) else {
                        continue;
                    };
                    stored.add_ack(ack.device);
                    if stored.is_done(&known) {
                        self.delete(&ack.user, id, &mut deleted);
                    }
                }
            }
        }

        if let Some(t) = batch.expire_before_ms {
            let mut expired: Vec<(u64, UserId, MessageId)> = self
                .messages
                .iter()
                .filter(|(_, stored)| stored.is_expired(t))
                .map(|((user, id), stored)| (stored.expires_at_ms, user.clone(), *id))
                .collect();
            expired.sort();
            for (_, user, id) in expired.into_iter().take(EXPIRE_MESSAGES_PER_COMMIT_MAX) {
                self.delete(&user, id, &mut deleted);
            }

            let cutoff = t.saturating_sub(config.device_ttl_ms);
            let mut stale: Vec<(u64, UserId, DeviceId)> = self
                .devices
                .iter()
                .filter(|(_, seen)| **seen < cutoff)
                .map(|((user, device), seen)| (*seen, user.clone(), *device))
                .collect();
            stale.sort();
            let mut users = BTreeSet::new();
            for (_, user, device) in stale.into_iter().take(FORGET_DEVICES_PER_COMMIT_MAX) {
                self.devices.remove(&(user.clone(), device));
                users.insert(user);
            }
            for user in users {
                self.recheck_user(&user, &mut deleted);
            }
        }

        CommitOutcome { deleted }
    }
}

impl LogStore for MemStore {
    fn commit(&self, batch: &WriteBatch) -> Result<CommitOutcome, StoreError> {
        let mut state = self.lock();
        // Validate first, so that an invalid batch leaves nothing applied.
        let mut new_keys = BTreeSet::new();
        for append in &batch.appends {
            let key = (append.message.to.clone(), append.message.id);
            if state.messages.contains_key(&key) || !new_keys.insert(key) {
                return Err(StoreError::InvalidBatch(format!(
                    "message {} of {} is already stored",
                    append.message.id.0, append.message.to
                )));
            }
        }
        Ok(state.apply(batch, self.config))
    }

    fn user_state(&self, user: &UserId) -> Result<UserState, StoreError> {
        let state = self.lock();
        let devices = state
            .devices
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, device), seen)| (*device, *seen))
            .collect();
        let inbox_len = state.messages.keys().filter(|(u, _)| u == user).count();
        Ok(UserState {
            devices,
            inbox_len: inbox_len as u64,
        })
    }

    fn replay(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let state = self.lock();
        Ok(state
            .messages
            .iter()
            .filter(|((u, id), _)| u == user && after.is_none_or(|after| *id > after))
            .map(|(_, stored)| stored)
            .filter(|stored| !stored.is_acked_by(device) && !stored.is_expired(now_ms))
            .take(limit)
            .cloned()
            .collect())
    }

    fn reserved_ids_through(&self) -> Result<u64, StoreError> {
        Ok(self.lock().reserved_ids_through)
    }
}
