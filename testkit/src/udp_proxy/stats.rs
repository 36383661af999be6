//! Counters of what the proxy did: [`ProxyStats`] is a snapshot, `Counters` the live
//! atomics the tasks bump.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What one direction did with its datagrams, counted since the proxy started.
///
/// Once the proxy is idle (nothing waiting in its queues):
/// `received + duplicated == forwarded + send_errors + dropped_loss + dropped_queue_full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams that entered this direction.
    pub received: u64,
    /// Datagrams sent on, duplicates included.
    pub forwarded: u64,
    /// Datagrams dropped by the configured loss.
    pub dropped_loss: u64,
    /// Datagrams dropped because this direction's queue was full.
    pub dropped_queue_full: u64,
    /// Extra copies made by the configured duplication.
    pub duplicated: u64,
    /// Datagrams held back and sent after a later one.
    pub reordered: u64,
    /// Datagrams the operating system refused to send.
    pub send_errors: u64,
}

impl LinkStats {
    /// Every datagram this direction lost, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue_full + self.send_errors
    }
}

/// A snapshot of the whole proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client to upstream.
    pub to_upstream: LinkStats,
    /// Upstream to client.
    pub to_client: LinkStats,
    /// Client addresses that currently have their own upstream socket.
    pub clients: usize,
    /// Datagrams dropped because they came from a new client while the client table was
    /// full. They are not counted in [`to_upstream`](Self::to_upstream).
    pub dropped_client_table_full: u64,
}

/// Live counters of one direction.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) received: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped_loss: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) reordered: AtomicU64,
    pub(crate) send_errors: AtomicU64,
}

/// Adds one to a counter. Relaxed is enough: counters are only read as a snapshot, never
/// used to order other memory accesses.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl LinkCounters {
    pub(crate) fn snapshot(&self) -> LinkStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LinkStats {
            received: load(&self.received),
            forwarded: load(&self.forwarded),
            dropped_loss: load(&self.dropped_loss),
            dropped_queue_full: load(&self.dropped_queue_full),
            duplicated: load(&self.duplicated),
            reordered: load(&self.reordered),
            send_errors: load(&self.send_errors),
        }
    }
}

/// Live counters of the whole proxy, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) to_upstream: LinkCounters,
    pub(crate) to_client: LinkCounters,
    pub(crate) clients: AtomicUsize,
    pub(crate) dropped_client_table_full: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ProxyStats {
        ProxyStats {
            to_upstream: self.to_upstream.snapshot(),
            to_client: self.to_client.snapshot(),
            clients: self.clients.load(Ordering::Relaxed),
            dropped_client_table_full: self.dropped_client_table_full.load(Ordering::Relaxed),
        }
    }
}
