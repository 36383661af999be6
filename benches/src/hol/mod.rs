//! The head-of-line benchmark (`quichat-hol`): many conversations over one client
//! connection through a lossy, delaying link, quichat with lanes against quichat with one
//! stream (the TCP-like baseline) and against mosquitto over TCP.
//!
//! # Layout
//!
//! - [`payload`]: the text every message carries (conversation, number, intended send
//!   time), so the receiving side alone measures latency and checks order.
//! - [`tracker`]: [`tracker::Tracker`] records deliveries and finds loss, duplicates and
//!   reordering; [`tracker::LatencySummary`] gives p50/p99/max.
//! - [`quichat`]: one quichat cell — an in-process core and edge, the sender and the
//!   recipients as real clients behind `testkit`'s UDP proxy.
//! - [`mqtt`]: one mosquitto cell, run inside a lossy network namespace; [`tcp_delay`]
//!   delays its TCP packets in the kernel's queue (NFQUEUE), since there is no netem.
//! - [`report`]: the tables, ratios, JSON and plot.
//!
//! [`Workload`] is the schedule both systems run: every conversation sends at a fixed
//! rate, open loop, so a stall shows up as latency rather than as a lower send rate.

pub mod mqtt;
pub mod payload;
pub mod quichat;
pub mod report;
pub mod tcp_delay;
pub mod tracker;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The chat traffic of one cell, identical for every system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Conversations carried by the one sending connection.
    pub conversations: usize,
    /// Messages per second each conversation sends.
    pub rate_per_conversation: f64,
    /// Bytes per chat message (at least [`payload::HEADER_BYTES`]).
    pub message_bytes: usize,
    /// Sending before measurement starts (delivered and checked, not measured).
    pub warmup: Duration,
    /// Measured sending time.
    pub duration: Duration,
}

impl Workload {
    /// Time between two messages of one conversation.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate_per_conversation)
    }

    /// The intended send times of conversation `conversation`, in nanoseconds after
    /// `start_ns`. Conversations are spread evenly over one interval, so the sender's
    /// load is smooth rather than 50 messages at once.
    pub fn schedule(&self, conversation: usize, start_ns: u64) -> impl Iterator<Item = u64> {
        let interval_ns = self.interval().as_nanos() as u64;
        let offset_ns = interval_ns * conversation as u64 / self.conversations.max(1) as u64;
        let end_ns = start_ns + (self.warmup + self.duration).as_nanos() as u64;
        (0u64..)
            .map(move |k| start_ns + offset_ns + k * interval_ns)
            .take_while(move |&t| t < end_ns)
    }

    /// When measurement starts, in nanoseconds on the same clock as `start_ns`.
    pub fn measured_from_ns(&self, start_ns: u64) -> u64 {
        start_ns + self.warmup.as_nanos() as u64
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.conversations == 0 || self.conversations > 9999 {
            return Err("conversations must be 1..=9999".into());
        }
        if !(self.rate_per_conversation.is_finite() && self.rate_per_conversation > 0.0) {
            return Err("the rate must be a positive number".into());
        }
        if self.message_bytes < payload::HEADER_BYTES {
            return Err(format!(
                "messages must be at least {} bytes",
                payload::HEADER_BYTES
            ));
        }
        Ok(())
    }
}

/// Which side of the conversations shares one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fan {
    /// One sending connection carries every conversation, each to its own recipient
    /// connection: head-of-line blocking can only happen on the sender's uplink.
    #[default]
    Out,
    /// Every conversation has its own sending connection and one recipient connection
    /// receives them all: head-of-line blocking happens on that recipient's downlink,
    /// where the server (edge or broker) chooses the streams.
    In,
}

/// The impaired link between clients and the server: loss and delay each way.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkShape {
    /// Probability that a packet is dropped, each direction.
    pub loss: f64,
    /// Delay added each way.
    pub delay: Duration,
    /// Seed of the loss generator (quichat's proxy; the kernel's generator for TCP).
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            conversations: 50,
            rate_per_conversation: 10.0,
            message_bytes: 64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
        }
    }

    #[test]
    fn every_conversation_sends_at_its_rate_for_the_whole_run() {
        let w = workload();
        for conversation in 0..w.conversations {
            let times: Vec<u64> = w.schedule(conversation, 1_000).collect();
            assert_eq!(times.len(), 30, "3 s at 10 msg/s");
            assert!(times.windows(2).all(|p| p[1] - p[0] == 100_000_000));
        }
    }

    #[test]
    fn conversations_are_spread_over_one_interval() {
        // 50 conversations at 10 msg/s: one message every 2 ms, not 50 at once.
        let w = workload();
        let mut firsts: Vec<u64> = (0..w.conversations)
            .filter_map(|c| w.schedule(c, 0).next())
            .collect();
        firsts.sort_unstable();
        assert!(firsts.windows(2).all(|p| p[1] - p[0] == 2_000_000));
    }
}
