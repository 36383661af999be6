//! [`Outbox`]: messages sent but not yet answered by the core, in counter order, each
//! marked with whether the current connection has transmitted it.
//!
//! Entries are transmitted oldest first *per lane*: when one lane's stream is full, later
//! entries for other lanes may go ahead, but never a later entry of the same lane. That is
//! what keeps one busy conversation from stalling the others inside the client itself.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::ids::UserId;

/// One message waiting for `Accepted` or `Rejected`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The recipient.
    pub(crate) to: UserId,
    /// The text, kept for re-sends.
    pub(crate) text: String,
    /// When the library gives up waiting, if a send timeout is configured.
    pub(crate) deadline: Option<Instant>,
    /// Whether the current connection has transmitted it.
    pub(crate) transmitted: bool,
    /// When the game queued it.
    pub(crate) queued_at: Instant,
    /// Queued before the current connection: its answer time includes a reconnect, so it
    /// says nothing about the server's queue.
    pub(crate) before_connection: bool,
}

/// The outbox, keyed by counter (the epoch is the machine's own, so the counter alone
/// names an entry).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    entries: BTreeMap<u64, Entry>,
    /// Every entry below this counter was transmitted on the current connection (entries
    /// above it may be too). Reset on every connect, with every `transmitted` flag, so a
    /// new connection re-sends every entry, oldest first, and — since newer messages get
    /// higher counters — before anything newer.
    transmit_from: u64,
}

impl Outbox {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a message. Counters must increase; the caller assigns them.
    pub(crate) fn push(&mut self, counter: u64, entry: Entry) {
        debug_assert!(
            self.entries
                .last_key_value()
                .is_none_or(|(&last, _)| last < counter)
        );
        self.entries.insert(counter, entry);
    }

    pub(crate) fn remove(&mut self, counter: u64) -> Option<Entry> {
        self.entries.remove(&counter)
    }

    /// Marks every entry as not yet transmitted on the (new) connection.
    pub(crate) fn rewind(&mut self) {
        self.transmit_from = 0;
        for entry in self.entries.values_mut() {
            entry.transmitted = false;
            entry.before_connection = true;
        }
    }

    /// The oldest entry not yet transmitted whose lane can take it, marked transmitted.
    /// `lane_of` names an entry's lane (below 64); `can_send` says whether a lane has
    /// room. Once a lane is found full, every later entry of that lane is skipped too, so
    /// each lane stays in counter order.
    pub(crate) fn next_to_transmit(
        &mut self,
        mut lane_of: impl FnMut(&Entry) -> u8,
        mut can_send: impl FnMut(u8) -> bool,
    ) -> Option<(u64, &Entry)> {
        // Move the cursor over the transmitted prefix, so the scan starts at real work.
        while let Some((&counter, entry)) = self.entries.range(self.transmit_from..).next() {
            if !entry.transmitted {
                break;
            }
            self.transmit_from = counter.saturating_add(1);
        }
        let mut blocked: u64 = 0;
        let mut chosen = None;
        for (&counter, entry) in self.entries.range(self.transmit_from..) {
            if entry.transmitted {
                continue;
            }
            let lane = lane_of(entry);
            let bit = 1u64 << (lane % 64);
            if blocked & bit != 0 {
                continue;
            }
            if !can_send(lane) {
                blocked |= bit;
                continue;
            }
            chosen = Some(counter);
            break;
        }
        let counter = chosen?;
        let entry = self.entries.get_mut(&counter)?;
        entry.transmitted = true;
        Some((counter, &*entry))
    }

    /// Whether some entry waits to be transmitted on this connection.
    pub(crate) fn has_untransmitted(&self) -> bool {
        self.entries
            .range(self.transmit_from..)
            .any(|(_, e)| !e.transmitted)
    }

    /// The earliest deadline. Entries are added in counter order with `now` never going
    /// back and one fixed timeout, so the oldest entry has the earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.first_key_value().and_then(|(_, e)| e.deadline)
    }

    /// Removes and returns the entries whose deadline is at or before `now`, oldest first.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut expired = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            match entry.get().deadline {
                Some(deadline) if deadline <= now => expired.push(entry.remove_entry().0),
                _ => break,
            }
        }
        expired
    }

    /// Removes and returns the entries whose text is longer than `max` bytes (the edge's
    /// limit, learnt after they were queued), oldest first.
    pub(crate) fn remove_longer_than(&mut self, max: usize) -> Vec<(u64, usize)> {
        let too_long: Vec<(u64, usize)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.text.len() > max)
            .map(|(&c, e)| (c, e.text.len()))
            .collect();
        for (counter, _) in &too_long {
            self.entries.remove(counter);
        }
        too_long
    }
}
