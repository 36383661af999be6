//! What recipients saw ([`Tally`]) and sets of message numbers ([`SeqSet`]).
//!
//! Each delivered message is checked against what was sent by its [`Header`]: a sequence
//! number seen before is a duplicate shown to the game (the client library promises
//! there are none), one lower than the pair's previous is out of order (the library
//! promises order within a conversation), and an accepted message never seen is lost.

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::load::message::Header;

/// Largest latency the histograms hold, ns (a minute; anything later is clamped to it).
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (0.1 % resolution).
const LATENCY_DIGITS: u8 = 3;

/// A set of sequence numbers below a fixed limit, as a bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `seq`; whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let new = self.words[word] & mask == 0;
        self.words[word] |= mask;
        self.len += u64::from(new);
        new
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Elements in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements of `self` that are not in `other`.
    pub fn count_missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let theirs = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !theirs).count_ones())
            })
            .sum()
    }
}

/// Which messages count towards the latency histograms and the delivered rate: those
/// intended in `[from_ns, to_ns)` (the rest are warm-up), and for the rate, those
/// delivered in that span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start of the measured span, ns since the base instant.
    pub from_ns: u64,
    /// End of the measured span (exclusive).
    pub to_ns: u64,
}

impl Window {
    /// A window that measures everything.
    pub const ALL: Window = Window {
        from_ns: 0,
        to_ns: u64::MAX,
    };

    fn contains(&self, ns: u64) -> bool {
        (self.from_ns..self.to_ns).contains(&ns)
    }
}

/// What a delivered message turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time seen.
    New,
    /// Seen before: the library showed it twice.
    Duplicate,
    /// Not a message this run could have sent (unknown pair, sequence beyond the
    /// schedule): ignored.
    Unexpected,
}

/// Deliveries to a group of recipients.
#[derive(Debug)]
pub struct Tally {
    window: Window,
    seq_limit: u64,
    /// Latency from the intended send time to delivery, ns (the open-loop figure).
    pub from_intended: Histogram<u64>,
    /// Latency from handing the message to the client library to delivery, ns.
    pub from_send: Histogram<u64>,
    seen: Vec<SeqSet>,
    last_seq: Vec<Option<u64>>,
    /// Messages delivered (each counted once).
    pub delivered: u64,
    /// Deliveries that happened inside the window.
    pub delivered_in_window: u64,
    /// Messages shown a second time.
    pub duplicates: u64,
    /// Messages shown after a later message of the same pair.
    pub out_of_order: u64,
    /// Texts that were not this run's messages.
    pub unexpected: u64,
    /// When the last new message arrived, ns since the base instant.
    pub last_delivery_ns: Option<u64>,
}

impl Tally {
    /// An empty tally for `pairs` pairs whose sequence numbers stay below `seq_limit`.
    pub fn new(pairs: usize, seq_limit: u64, window: Window) -> Result<Self> {
        Ok(Self {
            window,
            seq_limit,
            from_intended: Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_DIGITS)?,
            from_send: Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_DIGITS)?,
            seen: vec![SeqSet::new(); pairs],
            last_seq: vec![None; pairs],
            delivered: 0,
            delivered_in_window: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            last_delivery_ns: None,
        })
    }

    /// Sets the measured window (known only once the clients are connected; set it
    /// before the first message is due).
    pub fn set_window(&mut self, window: Window) {
        self.window = window;
    }

    /// Records the delivery of `header` at `now_ns`.
    pub fn record(&mut self, header: &Header, now_ns: u64) -> Seen {
        if header.pair >= self.seen.len() || header.seq >= self.seq_limit {
            self.unexpected += 1;
            return Seen::Unexpected;
        }
        if !self.seen[header.pair].insert(header.seq) {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        let last = &mut self.last_seq[header.pair];
        if last.is_some_and(|last| header.seq < last) {
            self.out_of_order += 1;
        }
        *last = Some(last.map_or(header.seq, |last| last.max(header.seq)));
        self.delivered += 1;
        self.last_delivery_ns = Some(now_ns);
        if self.window.contains(now_ns) {
            self.delivered_in_window += 1;
        }
        if self.window.contains(header.intended_ns) {
            self.from_intended
                .saturating_record(now_ns.saturating_sub(header.intended_ns).max(1));
            self.from_send
                .saturating_record(now_ns.saturating_sub(header.actual_ns).max(1));
        }
        Seen::New
    }

    /// Messages in `accepted[pair]` that were never delivered, over all pairs.
    pub fn missing(&self, accepted: &[SeqSet]) -> u64 {
        accepted
            .iter()
            .enumerate()
            .map(|(pair, acc)| match self.seen.get(pair) {
                Some(seen) => acc.count_missing_from(seen),
                None => acc.len(),
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pair: usize, seq: u64, intended_ns: u64) -> Header {
        Header {
            pair,
            seq,
            intended_ns,
            actual_ns: intended_ns + 100,
        }
    }

    #[test]
    fn a_seq_set_counts_each_number_once_and_finds_the_missing_ones() {
        let mut accepted = SeqSet::new();
        let mut seen = SeqSet::new();
        for seq in [0, 1, 63, 64, 65, 1000] {
            assert!(accepted.insert(seq));
        }
        assert!(!accepted.insert(64));
        assert_eq!(accepted.len(), 6);
        for seq in [0, 63, 1000, 5000] {
            seen.insert(seq);
        }
        // 1, 64 and 65 were accepted but not seen; 5000 seen but never accepted.
        assert_eq!(accepted.count_missing_from(&seen), 3);
        assert!(seen.contains(5000) && !seen.contains(4999));
    }

    #[test]
    fn duplicates_reordering_and_strangers_are_each_counted() {
        let mut tally = Tally::new(2, 100, Window::ALL).unwrap();
        assert_eq!(tally.record(&header(0, 0, 10), 20), Seen::New);
        assert_eq!(tally.record(&header(0, 2, 30), 40), Seen::New);
        // Seq 1 after seq 2: out of order, but delivered.
        assert_eq!(tally.record(&header(0, 1, 20), 50), Seen::New);
        assert_eq!(tally.record(&header(0, 2, 30), 60), Seen::Duplicate);
        assert_eq!(tally.record(&header(5, 0, 10), 60), Seen::Unexpected);
        assert_eq!(tally.record(&header(1, 100, 10), 60), Seen::Unexpected);
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.out_of_order, 1);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.unexpected, 2);
        assert_eq!(tally.last_delivery_ns, Some(50));

        let mut accepted = vec![SeqSet::new(), SeqSet::new()];
        for seq in 0..4 {
            accepted[0].insert(seq);
        }
        accepted[1].insert(0);
        // Pair 0 is missing seq 3, pair 1 its only message.
        assert_eq!(tally.missing(&accepted), 2);
    }

    #[test]
    fn only_messages_intended_inside_the_window_are_timed() {
        // Warm-up messages are delivered and checked, but kept out of the latency
        // figures; the delivered rate counts deliveries inside the window.
        let window = Window {
            from_ns: 1_000,
            to_ns: 2_000,
        };
        let mut tally = Tally::new(1, 10, window).unwrap();
        tally.record(&header(0, 0, 500), 900);
        tally.record(&header(0, 1, 1_500), 1_800);
        tally.record(&header(0, 2, 1_900), 2_500);
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.from_intended.len(), 2);
        assert_eq!(tally.from_intended.max(), 600);
        assert_eq!(tally.from_send.min(), 200);
        assert_eq!(tally.delivered_in_window, 1);
    }
}
