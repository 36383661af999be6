//! Counters the core keeps for operators and benchmarks.
//!
//! The router bumps [`Counters`] (relaxed atomics: they are statistics, not
//! synchronisation); [`crate::CoreHandle::stats`] reads a [`CoreStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between the router and whoever reads them.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) skipped_disk: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) committed_bytes: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) acks_dropped: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> CoreStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CoreStats {
            submitted: get(&self.submitted),
            accepted: get(&self.accepted),
            rejected: get(&self.rejected),
            committed: get(&self.committed),
            skipped_disk: get(&self.skipped_disk),
            commits: get(&self.commits),
            commit_failures: get(&self.commit_failures),
            committed_bytes: get(&self.committed_bytes),
            lagged: get(&self.lagged),
            acks_dropped: get(&self.acks_dropped),
        }
    }
}

/// A snapshot of the core's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Messages submitted and given an id (not counting rejected ones).
    pub submitted: u64,
    /// `Accepted` answers produced (by commit or by acknowledgement of every device).
    pub accepted: u64,
    /// Submits refused (`Rejected`: inbox full, wrong shard, unavailable).
    pub rejected: u64,
    /// Messages written to the store.
    pub committed: u64,
    /// Messages acknowledged by every device before their batch was written, so they
    /// never touched the disk.
    pub skipped_disk: u64,
    /// Successful commits (transactions, each one fsync).
    pub commits: u64,
    /// Commits that failed (and were retried).
    pub commit_failures: u64,
    /// Text bytes of the messages written to the store.
    pub committed_bytes: u64,
    /// Times a session fell behind (a full lane) and went back to catching up from the
    /// store.
    pub lagged: u64,
    /// Acknowledgements dropped because the batch waiting for the disk already held
    /// `ACK_RANGES_WAITING_MAX` ranges (the disk is stalled and acks keep coming in scattered
    /// ranges). Their messages stay stored and are delivered again on the device's next
    /// replay.
    pub acks_dropped: u64,
}
