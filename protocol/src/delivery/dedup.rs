//! [`Dedup`]: shows each delivered message once, with bounded memory.
//!
//! # Why "highest counter per sender epoch" is enough
//!
//! A message is named by `(sender, epoch, counter)`: the sender's library picks a fresh
//! epoch each time it starts and numbers its messages 1, 2, 3, … within it. A sender's
//! messages to me are one conversation, and a conversation always rides one lane, end to
//! end (sender → edge → core → edge → me), each lane a single ordered QUIC stream; the
//! core replays stored messages in id order, which is the order it accepted them. So the
//! first copy of each of a sender's messages reaches me in counter order. A copy can only
//! come again as a *re-send* (after a reconnect the sender re-sends what the core had not
//! yet accepted, keeping the message's key) or as a replay of a message I had not
//! acknowledged yet; both carry a counter I have already seen. Hence remembering the
//! highest counter per `(sender, epoch)` tells every duplicate apart from every new
//! message, in constant space per sender epoch, whatever the number of messages.
//!
//! The one gap: if the core *rejected* a message (say, rate limited), the sender lost that
//! answer in a disconnect, re-sent the message and the core accepted it this time, then a
//! later message of the same epoch may already have been shown, and the re-sent one is
//! taken for a duplicate. Closing it needs the core to answer a re-send of a key it
//! rejected recently with the same rejection rather than accept it.

use std::collections::HashMap;

use crate::ids::{SenderKey, UserId};

/// Remembers, per `(sender, epoch)`, the highest counter shown; forgets the least
/// recently used pair beyond its bound.
///
/// A message costs one hash lookup. Finding the least recently used pair is a scan, done
/// only when a new pair arrives beyond the bound: new sender epochs are rare next to
/// messages (a new conversation partner, or a sender's restart), and the edge's rate
/// limit caps how often any one sender can make them. An ordered index of last uses
/// cost every message a remove and an insert in a `BTreeMap`; dropping it, and keeping
/// pending acknowledgements in a `Vec` sorted when a frame is built instead of a tree,
/// took the client's bookkeeping from 300–315 to 271–272 ns per message
/// (`cargo bench -p benches --bench client_path`).
#[derive(Debug)]
pub(crate) struct Dedup {
    /// Most pairs kept (at least 1).
    senders_max: usize,
    /// Advances on every lookup; orders pairs by last use.
    clock: u64,
    /// `(sender, epoch)` → (highest counter shown, last use).
    senders: HashMap<(UserId, u64), Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    counter_max: u64,
    used_at: u64,
}

impl Dedup {
    pub(crate) fn new(senders_max: usize) -> Self {
        Self {
            senders_max: senders_max.max(1),
            clock: 0,
            senders: HashMap::new(),
        }
    }

    /// Records a delivered message's key; `true` if it is new (to be shown), `false` if
    /// a message with this key or a later one of the same sender epoch was shown already.
    pub(crate) fn first_time(&mut self, from: &UserId, key: SenderKey) -> bool {
        self.clock += 1;
        let now = self.clock;
        let pair = (from.clone(), key.epoch);
        if let Some(seen) = self.senders.get_mut(&pair) {
            seen.used_at = now;
            let new = key.counter > seen.counter_max;
            if new {
                seen.counter_max = key.counter;
            }
            return new;
        }
        if self.senders.len() >= self.senders_max {
            self.forget_least_recently_used();
        }
        self.senders.insert(
            pair,
            Seen {
                counter_max: key.counter,
                used_at: now,
            },
        );
        true
    }

    fn forget_least_recently_used(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, seen)| seen.used_at)
            .map(|(pair, _)| pair.clone());
        if let Some(pair) = oldest {
            self.senders.remove(&pair);
        }
    }

    /// Number of sender epochs remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u64, counter: u64) -> SenderKey {
        SenderKey { epoch, counter }
    }

    #[test]
    fn a_counter_at_or_below_the_highest_is_a_duplicate() {
        let alice = UserId::new("alice").unwrap();
        let mut d = Dedup::new(8);
        assert!(d.first_time(&alice, key(1, 1)));
        assert!(d.first_time(&alice, key(1, 3)));
        assert!(!d.first_time(&alice, key(1, 3)));
        assert!(!d.first_time(&alice, key(1, 2)));
        // A new epoch (the sender restarted) starts afresh.
        assert!(d.first_time(&alice, key(2, 1)));
        // Another sender with the same epoch number is a different pair.
        assert!(d.first_time(&UserId::new("bob").unwrap(), key(1, 1)));
    }

    #[test]
    fn the_least_recently_used_sender_epoch_is_forgotten_first() {
        // Memory must stay bounded however many senders write to us; the pair to forget
        // is the one idle longest, so an active conversation keeps its protection.
        let users: Vec<UserId> = (0..3)
            .map(|i| UserId::new(format!("u{i}")).unwrap())
            .collect();
        let mut d = Dedup::new(2);
        assert!(d.first_time(&users[0], key(1, 5)));
        assert!(d.first_time(&users[1], key(1, 5)));
        // Touch u0, so u1 is now the least recently used.
        assert!(!d.first_time(&users[0], key(1, 5)));
        assert!(d.first_time(&users[2], key(1, 5)));
        assert_eq!(d.len(), 2);
        assert!(
            !d.first_time(&users[0], key(1, 5)),
            "u0 is still remembered"
        );
        assert!(d.first_time(&users[1], key(1, 5)), "u1 was forgotten");
    }
}
