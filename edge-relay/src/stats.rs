//! Counters the edge keeps, and [`EdgeStats`], a snapshot of them for the CLI,
//! benchmarks and tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of the edge's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// Clients connected now (past `Welcome`).
    pub clients: u64,
    /// Clients welcomed since start.
    pub clients_total: u64,
    /// Connections refused or closed before `Welcome` (bad token, bad hello, edge full).
    pub refused: u64,
    /// Messages accepted from clients and queued for the core.
    pub messages_in: u64,
    /// Messages handed to clients (one per recipient session).
    pub messages_out: u64,
    /// Messages refused at the edge (too large, empty, rate limited).
    pub rejected: u64,
    /// Clients closed for reading deliveries too slowly.
    pub slow_consumers: u64,
    /// Core links up now.
    pub core_links_up: u64,
    /// Successful core (re)connections since start.
    pub core_connects: u64,
    /// Frames written to the core (lanes and control).
    pub frames_to_core: u64,
    /// UDP datagrams sent to the core.
    pub datagrams_to_core: u64,
    /// UDP payload bytes sent to the core.
    pub bytes_to_core: u64,
}

/// The live counters, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients: AtomicU64,
    pub(crate) clients_total: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) core_connects: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The client-side counters; the caller fills in the core link's.
    pub(crate) fn snapshot(&self) -> EdgeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EdgeStats {
            clients: get(&self.clients),
            clients_total: get(&self.clients_total),
            refused: get(&self.refused),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            rejected: get(&self.rejected),
            slow_consumers: get(&self.slow_consumers),
            core_connects: get(&self.core_connects),
            ..EdgeStats::default()
        }
    }
}
