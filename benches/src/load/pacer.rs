//! The send schedule ([`Schedule`]) and the thread that keeps it ([`spawn`]).
//!
//! Open loop: message `k` (counting over all pairs) is due at `start + k / rate`,
//! whatever happened to earlier messages. Its latency is measured from that intended time,
//! so a stall anywhere — in the server, the network or this tool — shows up as latency of
//! every message due during it, instead of hiding as a lower send rate ("coordinated
//! omission").
//!
//! Why a thread and not `tokio::time::sleep_until`: tokio's timer wheel has a resolution
//! of one millisecond and rounds deadlines up, so a task asked to wake at `t` wakes
//! anywhere in `[t, t + 1 ms)`. Measured from the intended time, that adds up to a
//! millisecond of latency that belongs to the tool, not to quichat — at low rates more
//! than the whole round trip being measured. Spinning until the exact instant would fix
//! it but burn a core, and this machine has two. A plain OS thread in `nanosleep` wakes
//! within the kernel's timer slack (50 µs by default) at no CPU cost, and then passes the
//! tick to the pair's tokio task over a channel. How late the pacer itself woke is
//! reported ([`PacerReport`]), so the residual is visible rather than assumed.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Ticks waiting for one pair's sender task. When full the pacer blocks: every message
/// due meanwhile is sent late, and its latency — measured from its intended time — shows
/// it. Large, so that only a sender stuck for thousands of intervals ever fills it.
pub const TICKS_QUEUED_PER_PAIR: usize = 16_384;

/// One message due to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The message's number within its pair.
    pub seq: u64,
    /// When it is due, in nanoseconds since the base instant.
    pub intended_ns: u64,
}

/// The send schedule of a run: `rate` messages per second over `pairs` pairs, round
/// robin, from `start_ns` until just before `end_ns` (both since the base instant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Sender→recipient pairs.
    pub pairs: usize,
    /// Messages per second over all pairs.
    pub rate: f64,
    /// When the first message is due.
    pub start_ns: u64,
    /// No message is due at or after this.
    pub end_ns: u64,
}

impl Schedule {
    /// Messages in the schedule.
    pub fn len(&self) -> u64 {
        if self.rate <= 0.0 || self.end_ns <= self.start_ns {
            return 0;
        }
        // The first k whose intended time is at or past the end. The float estimate is
        // off by at most one either way; the two bounded corrections make it exact.
        let span_secs = (self.end_ns - self.start_ns) as f64 / 1e9;
        let mut k = (span_secs * self.rate).floor() as u64;
        if self.tick(k).1.intended_ns < self.end_ns {
            k += 1;
        }
        if k > 0 && self.tick(k - 1).1.intended_ns >= self.end_ns {
            k -= 1;
        }
        k
    }

    /// Whether the schedule holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Message `k` of the schedule: its pair and tick. Consecutive messages go to
    /// consecutive pairs, so each pair sends every `pairs / rate` seconds and the pairs'
    /// sends are spread evenly instead of firing together.
    pub fn tick(&self, k: u64) -> (usize, Tick) {
        let pairs = self.pairs.max(1) as u64;
        let intended_ns = self.start_ns + (k as f64 * 1e9 / self.rate).round() as u64;
        (
            (k % pairs) as usize,
            Tick {
                seq: k / pairs,
                intended_ns,
            },
        )
    }
}

/// How well the pacer kept the schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PacerReport {
    /// Ticks handed out.
    pub ticks: u64,
    /// Mean of how late the pacer handed out a tick after its intended time, µs.
    pub late_mean_us: f64,
    /// The latest it handed one out, µs.
    pub late_max_us: f64,
}

/// Starts the pacer thread: it hands each tick of `schedule` to `outlets[pair]` at the
/// tick's intended time and returns when the schedule is done (or every outlet closed).
pub fn spawn(
    base: Instant,
    schedule: Schedule,
    outlets: Vec<mpsc::Sender<Tick>>,
) -> std::io::Result<JoinHandle<PacerReport>> {
    std::thread::Builder::new()
        .name("quichat-load-pacer".into())
        .spawn(move || pace(base, schedule, outlets))
}

fn pace(base: Instant, schedule: Schedule, outlets: Vec<mpsc::Sender<Tick>>) -> PacerReport {
    let mut open = vec![true; outlets.len()];
    let mut report = PacerReport::default();
    let mut late_total_ns = 0u128;
    for k in 0..schedule.len() {
        let (pair, tick) = schedule.tick(k);
        let due = Duration::from_nanos(tick.intended_ns);
        let now = base.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        let late_ns = base.elapsed().saturating_sub(due).as_nanos();
        let Some(outlet) = outlets.get(pair).filter(|_| open[pair]) else {
            continue;
        };
        // Blocking is the policy when a pair's queue is full (see TICKS_QUEUED_PER_PAIR).
        if outlet.blocking_send(tick).is_err() {
            open[pair] = false;
            if !open.iter().any(|&o| o) {
                break;
            }
            continue;
        }
        report.ticks += 1;
        late_total_ns += late_ns;
        report.late_max_us = report.late_max_us.max(late_ns as f64 / 1e3);
    }
    if report.ticks > 0 {
        report.late_mean_us = late_total_ns as f64 / report.ticks as f64 / 1e3;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spreads_messages_round_robin_at_the_rate() {
        // 1000 msg/s over 4 pairs: one message per millisecond overall, each pair every
        // 4 ms, the pairs interleaved.
        let schedule = Schedule {
            pairs: 4,
            rate: 1000.0,
            start_ns: 5_000_000,
            end_ns: 5_000_000 + 1_000_000_000,
        };
        assert_eq!(schedule.len(), 1000);
        assert_eq!(
            schedule.tick(0),
            (
                0,
                Tick {
                    seq: 0,
                    intended_ns: 5_000_000
                }
            )
        );
        assert_eq!(
            schedule.tick(1),
            (
                1,
                Tick {
                    seq: 0,
                    intended_ns: 6_000_000
                }
            )
        );
        assert_eq!(
            schedule.tick(6),
            (
                2,
                Tick {
                    seq: 1,
                    intended_ns: 11_000_000
                }
            )
        );
        let (_, last) = schedule.tick(schedule.len() - 1);
        assert!(last.intended_ns < schedule.end_ns);
    }

    #[test]
    fn every_tick_reaches_its_pair_in_sequence_and_not_before_it_is_due() {
        // The open-loop guarantee: no message is released early, none is skipped, and
        // each pair's ticks come in sequence order.
        let base = Instant::now();
        let schedule = Schedule {
            pairs: 3,
            rate: 600.0,
            start_ns: 0,
            end_ns: 100_000_000,
        };
        let (senders, mut receivers): (Vec<_>, Vec<_>) =
            (0..3).map(|_| mpsc::channel(TICKS_QUEUED_PER_PAIR)).unzip();
        let report = spawn(base, schedule, senders).unwrap().join().unwrap();
        assert_eq!(report.ticks, schedule.len());
        for receiver in &mut receivers {
            let mut expected_seq = 0;
            while let Ok(tick) = receiver.try_recv() {
                assert_eq!(tick.seq, expected_seq);
                expected_seq += 1;
            }
            assert_eq!(expected_seq, 20);
        }
        // Released no earlier than due: the whole schedule cannot finish before its last
        // tick's intended time.
        let (_, last) = schedule.tick(schedule.len() - 1);
        assert!(base.elapsed() >= Duration::from_nanos(last.intended_ns));
    }

    #[test]
    fn a_closed_pair_does_not_stop_the_others() {
        // A sender that gave up (its client failed) must not starve the other pairs.
        let schedule = Schedule {
            pairs: 2,
            rate: 1000.0,
            start_ns: 0,
            end_ns: 20_000_000,
        };
        let (closed, dropped) = mpsc::channel(1);
        drop(dropped);
        let (open, mut receiver) = mpsc::channel(TICKS_QUEUED_PER_PAIR);
        let report = spawn(Instant::now(), schedule, vec![closed, open])
            .unwrap()
            .join()
            .unwrap();
        let mut received = 0;
        while receiver.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 10);
        assert_eq!(report.ticks, 10);
    }
}
