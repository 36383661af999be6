//! [`Summary`]: the result of one run, printed as JSON on standard output and as a table
//! for people on standard error.

use std::collections::BTreeMap;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles, µs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Messages measured.
    pub samples: u64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1e3,
            samples: histogram.len(),
        }
    }
}

/// CPU time over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuSummary {
    /// How the figures were taken, and what "server" covers in this mode.
    pub method: String,
    /// The window's length, s.
    pub window_secs: f64,
    /// Server processes' CPU time in the window, s (`null` when no process was given).
    pub server_secs: Option<f64>,
    /// Server CPU per message delivered in the window, µs.
    pub server_us_per_message: Option<f64>,
    /// Server CPU as a share of one core (1.0 = one core busy all the window).
    pub server_cores: Option<f64>,
    /// This process's CPU time in the window, s.
    pub load_generator_secs: f64,
    /// This process's CPU per message delivered in the window, µs.
    pub load_generator_us_per_message: f64,
    /// Server processes measured, by pid (`0` is this process).
    pub server_pids: Vec<u32>,
}

/// The recipients that connected only after the send phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OfflineSummary {
    /// How many of the recipients.
    pub recipients: usize,
    /// Messages accepted for them (stored while they were away).
    pub expected: u64,
    /// Messages they received once they connected.
    pub delivered: u64,
    /// Accepted messages they never received.
    pub lost: u64,
    /// Messages shown twice.
    pub duplicates_shown: u64,
    /// Messages shown after a later one of the same sender.
    pub out_of_order: u64,
    /// From starting to connect them to their last message, s.
    pub drain_secs: f64,
    /// Messages per second during that drain.
    pub drain_msgs_per_sec: f64,
    /// Server CPU per replayed message during the drain, µs.
    pub server_cpu_us_per_message: Option<f64>,
}

/// Counters of the core and edges, when the stack runs in this process (the `quichat dev`
/// process does not expose them).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerCounters {
    /// Group commits (one fsync each) in the window.
    pub commits: u64,
    /// Commits per second.
    pub commits_per_sec: f64,
    /// Messages written to the store in the window.
    pub messages_committed: u64,
    /// Messages acknowledged before their batch was written (never touched the disk).
    pub messages_skipped_disk: u64,
    /// Frames the edges wrote to the core in the window.
    pub edge_frames_to_core: u64,
    /// UDP datagrams the edges sent to the core in the window.
    pub edge_datagrams_to_core: u64,
    /// Delivered messages per datagram to the core (batching on the edge→core link).
    pub messages_per_datagram_to_core: f64,
    /// Clients the edges dropped as too slow.
    pub edge_slow_consumers: u64,
}

/// The result of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// `dev-process`, `in-process` or `external`.
    pub mode: String,
    /// Sender→recipient pairs (two client connections each).
    pub pairs: usize,
    /// Offered load, messages per second over all pairs.
    pub offered_rate: f64,
    /// Message size, bytes.
    pub size: usize,
    /// Seconds measured (after the warm-up).
    pub duration_secs: f64,
    /// Seconds of warm-up (sent, checked, not timed).
    pub warmup_secs: f64,
    /// Share of recipients that connected only after sending ended.
    pub offline_share: f64,
    /// Messages handed to the client library.
    pub sent: u64,
    /// Messages the server accepted (safe).
    pub accepted: u64,
    /// Messages refused or failed, locally or by the server.
    pub errors: u64,
    /// The errors by code.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Messages still unanswered when the drain time ran out.
    pub unanswered: u64,
    /// Messages delivered, online and offline recipients together (each once).
    pub delivered: u64,
    /// Accepted messages never delivered (online and offline).
    pub lost: u64,
    /// Messages the client library showed twice.
    pub duplicates_shown: u64,
    /// Messages shown after a later message of the same pair.
    pub out_of_order: u64,
    /// Client connections dropped during the run (each reconnects; none expected).
    pub disconnects: u64,
    /// Deliveries to online recipients inside the measured window, per second.
    pub throughput_msgs_per_sec: f64,
    /// Online recipients: latency from the intended send time to delivery (the headline:
    /// open loop, includes any delay in sending).
    pub latency_us: Percentiles,
    /// Online recipients: latency from handing the message to the client library.
    pub latency_from_send_us: Percentiles,
    /// How late the pacer released messages after their intended time, µs (the tool's own
    /// timing error, included in `latency_us`).
    pub pacer_late_mean_us: f64,
    /// The latest the pacer released a message, µs.
    pub pacer_late_max_us: f64,
    /// CPU time of the server and of this tool over the window.
    pub cpu: Option<CpuSummary>,
    /// The offline recipients, when `offline_share > 0`.
    pub offline: Option<OfflineSummary>,
    /// The core's and edges' counters (in-process only).
    pub core: Option<ServerCounters>,
    /// Caveats a reader of the figures needs.
    pub notes: Vec<String>,
}

impl Summary {
    /// Whether the run met the bar: p99 from the intended time at most `p99_target_us`,
    /// nothing lost, refused, unanswered, duplicated or reordered.
    pub fn passes(&self, p99_target_us: f64) -> bool {
        self.is_clean() && self.latency_us.samples > 0 && self.latency_us.p99 <= p99_target_us
    }

    /// Nothing lost, refused, unanswered, duplicated or reordered.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.errors == 0
            && self.unanswered == 0
            && self.duplicates_shown == 0
            && self.out_of_order == 0
    }

    /// The human-readable report.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let l = &self.latency_us;
        let s = &self.latency_from_send_us;
        writeln!(
            out,
            "quichat-load ({}): {} pairs, {:.0} msg/s offered, {} B, {:.1} s measured",
            self.mode, self.pairs, self.offered_rate, self.size, self.duration_secs
        )?;
        writeln!(
            out,
            "  sent {}  accepted {}  delivered {}  lost {}  errors {}  unanswered {}  \
             duplicates {}  out of order {}  disconnects {}",
            self.sent,
            self.accepted,
            self.delivered,
            self.lost,
            self.errors,
            self.unanswered,
            self.duplicates_shown,
            self.out_of_order,
            self.disconnects
        )?;
        for (kind, count) in &self.errors_by_kind {
            writeln!(out, "    error {kind}: {count}")?;
        }
        writeln!(
            out,
            "  delivered {:.0} msg/s to online recipients",
            self.throughput_msgs_per_sec
        )?;
        writeln!(
            out,
            "  latency µs        p50      p90      p99    p99.9      max  (samples)"
        )?;
        for (name, p) in [("from intended", l), ("from send", s)] {
            writeln!(
                out,
                "  {name:<14} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}  ({})",
                p.p50, p.p90, p.p99, p.p999, p.max, p.samples
            )?;
        }
        writeln!(
            out,
            "  pacer late: mean {:.0} µs, max {:.0} µs",
            self.pacer_late_mean_us, self.pacer_late_max_us
        )?;
        if let Some(cpu) = &self.cpu {
            match (cpu.server_us_per_message, cpu.server_cores) {
                (Some(per), Some(cores)) => writeln!(
                    out,
                    "  server CPU {per:.1} µs/msg ({cores:.2} cores); load generator {:.1} µs/msg",
                    cpu.load_generator_us_per_message
                )?,
                _ => writeln!(
                    out,
                    "  server CPU not measured; load generator {:.1} µs/msg",
                    cpu.load_generator_us_per_message
                )?,
            }
        }
        if let Some(o) = &self.offline {
            writeln!(
                out,
                "  offline recipients {}: {}/{} delivered, lost {}, drained in {:.3} s \
                 ({:.0} msg/s)",
                o.recipients, o.delivered, o.expected, o.lost, o.drain_secs, o.drain_msgs_per_sec
            )?;
        }
        if let Some(c) = &self.core {
            writeln!(
                out,
                "  core: {} commits ({:.0}/s), {} committed, {} never on disk; \
                 edge→core {:.1} msg/datagram",
                c.commits,
                c.commits_per_sec,
                c.messages_committed,
                c.messages_skipped_disk,
                c.messages_per_datagram_to_core
            )?;
        }
        for note in &self.notes {
            writeln!(out, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_passes_only_when_fast_enough_and_nothing_went_wrong() {
        // The sweep's notion of "sustained": meeting the latency target is not enough if
        // a single message was lost or refused.
        let mut summary = Summary {
            latency_us: Percentiles {
                p99: 8_000.0,
                samples: 100,
                ..Percentiles::default()
            },
            ..Summary::default()
        };
        assert!(summary.passes(10_000.0));
        assert!(!summary.passes(5_000.0));
        summary.lost = 1;
        assert!(!summary.passes(10_000.0));
        summary.lost = 0;
        summary.errors = 1;
        assert!(!summary.passes(10_000.0));
        summary.errors = 0;
        summary.latency_us.samples = 0;
        assert!(!summary.passes(10_000.0), "no measurement is no pass");
    }

    #[test]
    fn percentiles_are_reported_in_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in [1_000u64, 2_000, 3_000, 4_000] {
            h.record(ns).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.samples, 4);
        assert!((p.p50 - 2.0).abs() < 0.01, "{p:?}");
        assert!((p.max - 4.0).abs() < 0.01, "{p:?}");
        assert_eq!(Percentiles::of(&Histogram::new(3).unwrap()).samples, 0);
    }

    #[test]
    fn the_table_names_every_headline_figure() {
        let summary = Summary {
            mode: "dev-process".into(),
            offline: Some(OfflineSummary::default()),
            cpu: Some(CpuSummary::default()),
            ..Summary::default()
        };
        let mut out = Vec::new();
        summary.write_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for needle in [
            "lost",
            "p99",
            "server CPU",
            "offline recipients",
            "delivered",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
