//! What the proxy does to traffic: [`ProxyConfig`] for the whole proxy, [`LinkConfig`] for
//! one direction, and the limits every queue is held to.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Default for [`ProxyConfig::max_clients`]: how many client addresses get their own
/// upstream socket before new ones are turned away.
pub const CLIENTS_MAX_DEFAULT: usize = 4096;

/// Most datagrams one direction holds in its timer queue. A datagram arriving when the
/// queue is full is dropped and counted in [`LinkStats::dropped_queue_full`](super::LinkStats),
/// as a router with a full buffer would do.
pub const QUEUE_PACKETS_MAX: usize = 65_536;

/// Most payload bytes one direction holds in its timer queue. Without it, 65,536 queued
/// datagrams of 64 KiB each could take 4 GiB; the policy when full is the same as for
/// [`QUEUE_PACKETS_MAX`]: drop and count.
pub const QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest datagram the proxy forwards whole (the largest UDP payload, rounded up to the
/// 16-bit length field). Longer ones cannot exist on UDP over IPv4/IPv6 without jumbograms.
pub const DATAGRAM_BYTES_MAX: usize = 65_535;

/// Longest [`LinkConfig::delay`], [`LinkConfig::jitter`] or [`LinkConfig::reorder_hold`]
/// the proxy accepts. Tests want milliseconds; the cap keeps due times far from overflow.
pub const DELAY_MAX: Duration = Duration::from_secs(60);

/// Default for [`LinkConfig::reorder_hold`].
pub const REORDER_HOLD_DEFAULT: Duration = Duration::from_millis(10);

/// One direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client to the upstream server.
    ToUpstream,
    /// From the upstream server back to a client.
    ToClient,
}

/// What happens to datagrams travelling in one direction.
///
/// Every datagram draws the same four random numbers (loss, duplicate, reorder, jitter) from
/// a generator seeded with [`seed`](Self::seed), whatever the probabilities are, so changing
/// one knob does not shift the decisions of the others, and the same seed with the same
/// arrival order replays the same drops.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Probability in `0.0..=1.0` that a datagram is dropped.
    pub loss: f64,
    /// Fixed delay added to every datagram. Datagrams are delayed independently: a long
    /// delay does not hold back the datagrams behind it.
    pub delay: Duration,
    /// Extra delay, uniform in `0..jitter`, added on top of [`delay`](Self::delay). Like
    /// netem, a jitter larger than the gap between datagrams reorders them.
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a datagram is held back and sent right after the
    /// next datagram in this direction (or after [`reorder_hold`](Self::reorder_hold) if no
    /// next one comes), so it arrives out of order.
    pub reorder: f64,
    /// Longest a held-back datagram (see [`reorder`](Self::reorder)) waits, beyond its own
    /// due time, for a later datagram to overtake it.
    pub reorder_hold: Duration,
    /// Probability in `0.0..=1.0` that a datagram is sent twice.
    pub duplicate: f64,
    /// Seed of this direction's pseudo-random generator. The proxy mixes the direction into
    /// it, so both directions with the same seed still decide independently.
    pub seed: u64,
}

impl Default for LinkConfig {
    /// A perfect link: no loss, no delay, no reordering, no duplicates.
    fn default() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_hold: REORDER_HOLD_DEFAULT,
            duplicate: 0.0,
            seed: 0,
        }
    }
}

impl LinkConfig {
    /// Checks that every probability is a number in `0.0..=1.0` and every delay is at
    /// most [`DELAY_MAX`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("delay", self.delay),
            ("jitter", self.jitter),
            ("reorder_hold", self.reorder_hold),
        ] {
            if value > DELAY_MAX {
                return Err(ConfigError::DelayTooLong { field, value });
            }
        }
        for (field, value) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            // `contains` is false for NaN, which is what we want.
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::ProbabilityOutOfRange { field, value });
            }
        }
        Ok(())
    }
}

/// Everything [`UdpProxy::start`](super::UdpProxy::start) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Address clients send to. Port 0 picks a free port; read it back with
    /// [`UdpProxy::local_addr`](super::UdpProxy::local_addr).
    pub listen: SocketAddr,
    /// The server datagrams are forwarded to.
    pub upstream: SocketAddr,
    /// What happens to datagrams from clients to the upstream server.
    pub to_upstream: LinkConfig,
    /// What happens to datagrams from the upstream server to clients.
    pub to_client: LinkConfig,
    /// How many client addresses get their own upstream socket. When the table is full,
    /// datagrams from new addresses are dropped and counted in
    /// [`ProxyStats::dropped_client_table_full`](super::ProxyStats::dropped_client_table_full).
    pub max_clients: usize,
}

impl ProxyConfig {
    /// A perfect proxy listening on `127.0.0.1:0` in front of `upstream`.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            upstream,
            to_upstream: LinkConfig::default(),
            to_client: LinkConfig::default(),
            max_clients: CLIENTS_MAX_DEFAULT,
        }
    }

    /// Uses `link` for both directions.
    pub fn with_links(mut self, link: LinkConfig) -> Self {
        self.to_upstream = link.clone();
        self.to_client = link;
        self
    }

    /// The configuration of one direction.
    pub fn link(&self, direction: Direction) -> &LinkConfig {
        match direction {
            Direction::ToUpstream => &self.to_upstream,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Checks both links and the client limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.to_upstream.validate()?;
        self.to_client.validate()?;
        if self.max_clients == 0 {
            return Err(ConfigError::NoClientsAllowed);
        }
        Ok(())
    }
}

/// A configuration the proxy refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A probability is not a number in `0.0..=1.0`.
    #[error("{field} must be a probability in 0.0..=1.0, got {value}")]
    ProbabilityOutOfRange {
        /// Which [`LinkConfig`] field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A delay is longer than [`DELAY_MAX`].
    #[error("{field} must be at most {DELAY_MAX:?}, got {value:?}")]
    DelayTooLong {
        /// Which [`LinkConfig`] field.
        field: &'static str,
        /// The value given.
        value: Duration,
    },
    /// `max_clients` is 0, so nothing could ever be forwarded.
    #[error("max_clients must be at least 1")]
    NoClientsAllowed,
}
