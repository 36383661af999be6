//! A session's messages sent towards the core and not yet answered.
//!
//! Every `Submit` stays here, keyed by its [`SenderKey`], until the core answers
//! `Accepted` or `Rejected`. If the core link drops, the session's pump re-sends all of
//! them, in the order they arrived, on the new link. The map is bounded by a semaphore:
//! a lane reader takes a permit *before* reading on, so when the map is full the client's
//! lanes stop being read until the core answers (back-pressure, not rejection; QUIC flow
//! control then slows the client down).
//!
//! Entries carry a per-session sequence number so the pump can say "send everything
//! from here on" and re-sends keep arrival order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use protocol::frames::link::Submit;
use protocol::ids::SenderKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::session::lock;

/// The bounded in-flight map of one session.
#[derive(Debug)]
pub(crate) struct InFlight {
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    by_seq: BTreeMap<u64, Pending>,
    by_key: HashMap<SenderKey, u64>,
}

#[derive(Debug)]
struct Pending {
    /// Index of the core link (shard) this submit goes to.
    link: usize,
    submit: Submit,
    /// Held until the core answers; dropping it makes room for the next message.
    _permit: OwnedSemaphorePermit,
}

/// Room for one more entry, taken before the entry exists.
pub(crate) type Slot = OwnedSemaphorePermit;

impl InFlight {
    /// A map holding at most `max` entries.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            state: Mutex::new(State::default()),
        }
    }

    /// Waits for room for one entry. `None` only if the map was shut, which never
    /// happens while the session lives.
    pub(crate) async fn reserve(&self) -> Option<Slot> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Adds `submit` for core link `link`, using `slot`. A re-send of a key already
    /// waiting replaces it (and frees its slot) and moves it to the back.
    pub(crate) fn insert(&self, link: usize, submit: Submit, slot: Slot) {
        let mut state = lock(&self.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        if let Some(old) = state.by_key.insert(submit.key, seq) {
            state.by_seq.remove(&old);
        }
        state.by_seq.insert(
            seq,
            Pending {
                link,
                submit,
                _permit: slot,
            },
        );
    }

    /// Removes the entry for `key` (the core answered). Returns whether it was waiting;
    /// an answer to a key not waiting is a duplicate caused by a re-send.
    pub(crate) fn resolve(&self, key: SenderKey) -> bool {
        let mut state = lock(&self.state);
        match state.by_key.remove(&key) {
            Some(seq) => state.by_seq.remove(&seq).is_some(),
            None => false,
        }
    }

    /// Up to `max` entries for core link `link` with sequence number `from` or later, in
    /// order, each with its sequence number. Copies, so the lock is not held while they
    /// are sent.
    pub(crate) fn pending(&self, link: usize, from: u64, max: usize) -> Vec<(u64, Submit)> {
        let state = lock(&self.state);
        state
            .by_seq
            .range(from..)
            .filter(|(_, p)| p.link == link)
            .take(max)
            .map(|(&seq, p)| (seq, p.submit.clone()))
            .collect()
    }

    /// Entries waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).by_seq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ids::{SessionId, UserId};
    use std::time::Duration;

    fn submit(counter: u64) -> Submit {
        Submit {
            session: SessionId(1),
            from: UserId::new("alice").unwrap(),
            from_name: "Alice".into(),
            to: UserId::new("bob").unwrap(),
            key: SenderKey { epoch: 1, counter },
            sent_at_ms: 0,
            text: format!("m{counter}"),
        }
    }

    fn counters(pending: &[(u64, Submit)]) -> Vec<u64> {
        pending.iter().map(|(_, s)| s.key.counter).collect()
    }

    #[tokio::test]
    async fn a_full_map_makes_the_reader_wait_until_the_core_answers() {
        // Back-pressure, not rejection: the third message waits for room.
        let inflight = InFlight::new(2);
        for n in 1..=2 {
            let slot = inflight.reserve().await.unwrap();
            inflight.insert(0, submit(n), slot);
        }
        let third = tokio::time::timeout(Duration::ZERO, inflight.reserve()).await;
        assert!(third.is_err(), "no room while two messages await an answer");
        assert!(inflight.resolve(SenderKey {
            epoch: 1,
            counter: 1
        }));
        let slot = tokio::time::timeout(Duration::ZERO, inflight.reserve()).await;
        assert!(
            matches!(slot, Ok(Some(_))),
            "an answer frees a slot at once"
        );
    }

    #[tokio::test]
    async fn pending_entries_come_back_in_arrival_order_from_a_cursor() {
        let inflight = InFlight::new(10);
        for n in 1..=5 {
            let slot = inflight.reserve().await.unwrap();
            inflight.insert(0, submit(n), slot);
        }
        assert!(inflight.resolve(SenderKey {
            epoch: 1,
            counter: 2
        }));
        let all = inflight.pending(0, 0, 10);
        assert_eq!(counters(&all), vec![1, 3, 4, 5]);
        let after_first = inflight.pending(0, all[0].0 + 1, 2);
        assert_eq!(counters(&after_first), vec![3, 4]);
        assert!(
            inflight.pending(1, 0, 10).is_empty(),
            "entries belong to their link"
        );
    }

    #[tokio::test]
    async fn a_repeated_key_replaces_the_waiting_entry() {
        let inflight = InFlight::new(2);
        for _ in 0..2 {
            let slot = inflight.reserve().await.unwrap();
            inflight.insert(0, submit(7), slot);
        }
        assert_eq!(inflight.len(), 1);
        assert!(inflight.resolve(SenderKey {
            epoch: 1,
            counter: 7
        }));
        assert!(
            !inflight.resolve(SenderKey {
                epoch: 1,
                counter: 7
            }),
            "answered once"
        );
        assert_eq!(
            inflight.permits.available_permits(),
            2,
            "both slots are free again"
        );
    }
}
