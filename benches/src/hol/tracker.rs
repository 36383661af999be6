//! [`Tracker`]: what the receiving side saw, per conversation — each message once, in
//! order, nothing missing — and the latency of every first delivery; [`LatencySummary`]
//! condenses latencies into the percentiles the report shows.

use std::collections::BTreeSet;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::payload;

/// One first delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The conversation it belongs to.
    pub conversation: usize,
    /// Its number within the conversation.
    pub seq: u64,
    /// Its intended send time (ns since the run's base instant).
    pub intended_ns: u64,
    /// From the intended send time to delivery, in nanoseconds.
    pub latency_ns: u64,
}

/// Loss, duplicates and reordering over a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// Messages handed to the system under test.
    pub sent: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Sent but never delivered.
    pub lost: u64,
    /// Deliveries of a message already delivered (shown twice).
    pub duplicates: u64,
    /// Deliveries of a message after a later message of the same conversation.
    pub out_of_order: u64,
    /// Deliveries that were not one of our messages (damaged or foreign text).
    pub foreign: u64,
}

impl Integrity {
    /// True when every message arrived exactly once and in order.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.foreign == 0
    }
}

/// What one conversation's recipient has seen.
#[derive(Clone, Debug, Default)]
struct Conversation {
    seen: BTreeSet<u64>,
    highest: Option<u64>,
}

/// The receiving side's record of a run. Shared by every recipient (behind a mutex).
#[derive(Clone, Debug)]
pub struct Tracker {
    conversations: Vec<Conversation>,
    samples: Vec<Sample>,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
}

impl Tracker {
    /// A tracker for `conversations` conversations.
    pub fn new(conversations: usize) -> Self {
        Self {
            conversations: vec![Conversation::default(); conversations],
            samples: Vec::new(),
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
        }
    }

    /// Records the delivery of `text` at `received_ns` (same clock as the intended times).
    pub fn record(&mut self, text: &str, received_ns: u64) {
        let Some(header) = payload::decode(text) else {
            self.foreign += 1;
            return;
        };
        let Some(conversation) = self.conversations.get_mut(header.conversation) else {
            self.foreign += 1;
            return;
        };
        if !conversation.seen.insert(header.seq) {
            self.duplicates += 1;
            return;
        }
        if conversation
            .highest
            .is_some_and(|highest| header.seq < highest)
        {
            self.out_of_order += 1;
        }
        conversation.highest = conversation.highest.max(Some(header.seq));
        self.samples.push(Sample {
            conversation: header.conversation,
            seq: header.seq,
            intended_ns: header.intended_ns,
            latency_ns: received_ns.saturating_sub(header.intended_ns),
        });
    }

    /// Distinct messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.samples.len() as u64
    }

    /// Every first delivery, in arrival order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Loss, duplicates and reordering, given how many messages each conversation sent
    /// (`sent[c]`: its messages were numbered `0..sent[c]`).
    pub fn integrity(&self, sent: &[u64]) -> Integrity {
        let mut integrity = Integrity {
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            foreign: self.foreign,
            ..Integrity::default()
        };
        for (index, conversation) in self.conversations.iter().enumerate() {
            let sent = sent.get(index).copied().unwrap_or(0);
            let delivered = conversation.seen.range(..sent).count() as u64;
            // A delivered number that was never sent is not ours to count as delivered.
            integrity.foreign += conversation.seen.len() as u64 - delivered;
            integrity.sent += sent;
            integrity.delivered += delivered;
            integrity.lost += sent - delivered;
        }
        integrity
    }
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many latencies; the percentiles are 0 when there are none.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Largest latency the histogram holds (longer ones are clamped to it): a minute.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

impl LatencySummary {
    /// Summarises latencies given in nanoseconds (HDR histogram, 3 significant digits).
    pub fn from_ns(latencies: impl IntoIterator<Item = u64>) -> Self {
        // The bounds are constants that hdrhistogram accepts; failing here is a bug.
        let Ok(mut histogram) = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3) else {
            unreachable!("constant histogram bounds are valid")
        };
        for latency in latencies {
            histogram.saturating_record(latency.clamp(1, LATENCY_NS_MAX));
        }
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            samples: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hol::payload::{Header, encode};

    fn text(conversation: usize, seq: u64, intended_ns: u64) -> String {
        encode(
            Header {
                conversation,
                seq,
                intended_ns,
            },
            64,
        )
    }

    #[test]
    fn a_clean_run_is_clean_and_measures_latency_from_the_intended_time() {
        let mut tracker = Tracker::new(2);
        for seq in 0..3 {
            tracker.record(&text(0, seq, seq * 100), seq * 100 + 7);
            tracker.record(&text(1, seq, seq * 100), seq * 100 + 9);
        }
        let integrity = tracker.integrity(&[3, 3]);
        assert!(integrity.is_clean(), "{integrity:?}");
        assert_eq!((integrity.sent, integrity.delivered), (6, 6));
        let latencies: Vec<u64> = tracker.samples().iter().map(|s| s.latency_ns).collect();
        assert_eq!(latencies, [7, 9, 7, 9, 7, 9]);
    }

    #[test]
    fn loss_duplicates_and_reordering_are_each_counted() {
        // The smoke run fails on any of these, so each must be seen on its own.
        let mut tracker = Tracker::new(2);
        tracker.record(&text(0, 1, 0), 1);
        tracker.record(&text(0, 0, 0), 1); // after 1: out of order
        tracker.record(&text(0, 1, 0), 1); // again: duplicate
        tracker.record(&text(1, 0, 0), 1); // conversation 1 never gets its 1 and 2
        tracker.record("not ours", 1);
        let integrity = tracker.integrity(&[2, 3]);
        assert_eq!(
            integrity,
            Integrity {
                sent: 5,
                delivered: 3,
                lost: 2,
                duplicates: 1,
                out_of_order: 1,
                foreign: 1,
            }
        );
        assert!(!integrity.is_clean());
    }

    #[test]
    fn reordering_across_conversations_is_not_reordering() {
        // Only the order within a conversation is promised.
        let mut tracker = Tracker::new(2);
        tracker.record(&text(1, 0, 0), 1);
        tracker.record(&text(0, 0, 0), 1);
        tracker.record(&text(1, 1, 0), 1);
        assert!(tracker.integrity(&[1, 2]).is_clean());
    }

    #[test]
    fn percentiles_come_from_the_latencies() {
        let summary = LatencySummary::from_ns((1..=100).map(|ms| ms * 1_000_000));
        assert_eq!(summary.samples, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
        assert_eq!(LatencySummary::from_ns([]), LatencySummary::default());
    }
}
