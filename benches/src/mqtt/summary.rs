//! The figures compared, in one shape for every system.
//!
//! Each online run's full result is a `quichat-load` summary
//! ([`crate::load::summary::Summary`], as JSON): `quichat-load` prints it for quichat, and
//! the MQTT workload builds the same struct. [`Row`] reads the figures the comparison
//! needs from that JSON, so both sides go through one parser with the same field names.
//! [`DrainSummary`] is the offline drain.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::load::cpu::{CpuMeter, CpuSample, CpuUsage};
use crate::load::tally::SeqSet;

/// Latency percentiles, µs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Messages timed.
    pub samples: u64,
}

/// One online run of one system, as compared.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Row {
    /// `quichat`, `mosquitto-tls` or `mosquitto-tcp`.
    pub system: String,
    /// Offered messages per second over all pairs.
    pub offered_rate: f64,
    /// Messages handed to the client library.
    pub sent: u64,
    /// Messages the server accepted (quichat `Accepted`, MQTT `PUBACK`).
    pub accepted: u64,
    /// Messages refused or failed (MQTT: also connection errors).
    pub errors: u64,
    /// Messages with no answer when the drain wait ran out.
    pub unanswered: u64,
    /// Messages delivered, each once.
    pub delivered: u64,
    /// Accepted messages never delivered.
    pub lost: u64,
    /// Messages shown twice.
    pub duplicates_shown: u64,
    /// Messages shown after a later one of the same pair.
    pub out_of_order: u64,
    /// Deliveries inside the measured window, per second.
    pub throughput_msgs_per_sec: f64,
    /// Latency from the intended send time (open loop).
    pub latency_us: Latency,
    /// Server CPU per delivered message, µs (every quichat server process; mosquitto).
    pub server_cpu_us_per_msg: Option<f64>,
    /// The load generator's CPU per delivered message, µs.
    pub load_generator_cpu_us_per_msg: Option<f64>,
}

impl Row {
    /// Reads a `quichat-load` summary (JSON) as the row of `system`.
    pub fn from_summary_json(system: &str, json: &Value) -> Result<Self> {
        let get = |path: &str| -> Option<&Value> {
            path.split('.').try_fold(json, |value, key| value.get(key))
        };
        let u = |path: &str| -> Result<u64> {
            get(path)
                .and_then(Value::as_u64)
                .with_context(|| format!("the load summary has no integer `{path}`"))
        };
        let f = |path: &str| -> Result<f64> {
            get(path)
                .and_then(Value::as_f64)
                .with_context(|| format!("the load summary has no number `{path}`"))
        };
        Ok(Self {
            system: system.to_owned(),
            offered_rate: f("offered_rate")?,
            sent: u("sent")?,
            accepted: u("accepted")?,
            errors: u("errors")?,
            unanswered: u("unanswered")?,
            delivered: u("delivered")?,
            lost: u("lost")?,
            duplicates_shown: u("duplicates_shown")?,
            out_of_order: u("out_of_order")?,
            throughput_msgs_per_sec: f("throughput_msgs_per_sec")?,
            latency_us: Latency {
                p50: f("latency_us.p50")?,
                p99: f("latency_us.p99")?,
                p999: f("latency_us.p999")?,
                max: f("latency_us.max")?,
                samples: u("latency_us.samples")?,
            },
            // Absent or null when the tool could not measure it.
            server_cpu_us_per_msg: get("cpu.server_us_per_message").and_then(Value::as_f64),
            load_generator_cpu_us_per_msg: get("cpu.load_generator_us_per_message")
                .and_then(Value::as_f64),
        })
    }

    /// Nothing lost, refused, unanswered, duplicated or reordered, and every message sent
    /// was accepted.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.errors == 0
            && self.unanswered == 0
            && self.duplicates_shown == 0
            && self.out_of_order == 0
            && self.accepted == self.sent
    }

    /// The sweep's bar, as `quichat-load` applies it: clean, measured, and p99 from the
    /// intended time at most `p99_target_us`.
    pub fn passes(&self, p99_target_us: f64) -> bool {
        self.is_clean() && self.latency_us.samples > 0 && self.latency_us.p99 <= p99_target_us
    }
}

/// One offline drain: N messages queued for an offline recipient, then its reconnect.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DrainSummary {
    /// `quichat`, `mosquitto-tls` or `mosquitto-tcp`.
    pub system: String,
    /// Which round of `--drain-runs` this was (1 for the first).
    pub round: u32,
    /// Messages queued.
    pub messages: u64,
    /// Seconds the sender took to have them all accepted (not part of the drain).
    pub queue_secs: f64,
    /// From the recipient's reconnect to its session being up (quichat `Welcome`, MQTT
    /// `CONNACK`), ms.
    pub connect_ms: f64,
    /// From the recipient's reconnect to the first message received, ms: how long a
    /// returning player waits to see anything.
    pub first_ms: f64,
    /// From the recipient's reconnect to the last message received, ms: the figure
    /// compared. (When messages are missing, to the last one that came.)
    pub drain_ms: f64,
    /// The longest wait between two consecutive messages, ms: a drain that stalls, or
    /// whose client waits while the server holds the cores, shows it here rather than
    /// only in its total.
    pub max_gap_ms: f64,
    /// Messages received per second of `drain_ms`.
    pub msgs_per_sec: f64,
    /// Distinct messages received.
    pub received: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages received after a later one.
    pub out_of_order: u64,
    /// CPU the server process spent during the drain, ms (its threads' run times).
    pub server_cpu_ms: Option<f64>,
    /// CPU the benchmark process spent during the drain, ms: the reconnecting client
    /// (quichat's client library or rumqttc) and the tally.
    pub client_cpu_ms: Option<f64>,
    /// CPU the server spent on the drain including what it did after the last message,
    /// ms: from the reconnect until [`SETTLE`] after the client left, less the server's
    /// idle CPU over as long. It counts work a drain leaves behind, such as quichat's
    /// deletion of the acknowledged messages, committed up to 50 ms after the
    /// acknowledgements: a drain shorter than that leaves nearly all of it outside
    /// `server_cpu_ms`, a drain over a slow path nearly none.
    pub server_cpu_settled_ms: Option<f64>,
    /// The server's CPU while idle, ms per second, measured over [`IDLE_PROBE`] after
    /// the settled figure was read (what `server_cpu_settled_ms` leaves out).
    pub server_idle_ms_per_s: Option<f64>,
}

/// How long the server is watched after the drain's client has left, for the work the
/// drain left behind: several times quichat's 50 ms acknowledgement commit delay, so a
/// slow commit still falls inside.
pub const SETTLE: Duration = Duration::from_millis(300);

/// How long the idle server is watched after the drain has settled, for its idle CPU.
pub const IDLE_PROBE: Duration = Duration::from_millis(300);

/// A server's CPU rate while idle (timers, housekeeping), to take out of a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct IdleRate {
    /// Server CPU seconds per wall-clock second.
    per_wall_second: f64,
}

impl IdleRate {
    /// Watches the idle server for [`IDLE_PROBE`].
    pub(crate) async fn measure(meter: &CpuMeter) -> Result<Self> {
        let before = meter.sample()?;
        tokio::time::sleep(IDLE_PROBE).await;
        Ok(Self::from_usage(&meter.sample()?.since(&before)))
    }

    fn from_usage(usage: &CpuUsage) -> Self {
        let wall = usage.wall.as_secs_f64();
        Self {
            per_wall_second: if wall > 0.0 {
                usage.server.as_secs_f64() / wall
            } else {
                0.0
            },
        }
    }

    /// ms of server CPU per second.
    pub(crate) fn ms_per_s(self) -> f64 {
        self.per_wall_second * 1e3
    }

    /// The server's CPU in `usage` beyond what it spends idle over as long, ms (never
    /// below zero: an idle rate measured in a busier moment cannot make work negative).
    pub(crate) fn beyond_idle_ms(self, usage: &CpuUsage) -> f64 {
        let idle = self.per_wall_second * usage.wall.as_secs_f64();
        ((usage.server.as_secs_f64() - idle) * 1e3).max(0.0)
    }
}

impl DrainSummary {
    /// Call once the drain's client has left: waits [`SETTLE`], then fills
    /// `server_cpu_settled_ms` (the server's CPU since `before`, less its idle rate) and
    /// `server_idle_ms_per_s`, measured over [`IDLE_PROBE`] after that. The idle rate is
    /// read after the drain, not before: a pause before the reconnect would change how
    /// the drain starts from every earlier run of this tool.
    pub(crate) async fn settle(&mut self, meter: &CpuMeter, before: &CpuSample) -> Result<()> {
        tokio::time::sleep(SETTLE).await;
        let settled = meter.sample()?.since(before);
        let idle = IdleRate::measure(meter).await?;
        self.server_cpu_settled_ms = Some(idle.beyond_idle_ms(&settled));
        self.server_idle_ms_per_s = Some(idle.ms_per_s());
        Ok(())
    }

    /// True when all messages arrived once and in order.
    pub fn is_clean(&self) -> bool {
        self.received == self.messages && self.duplicates == 0 && self.out_of_order == 0
    }

    /// Test check shared by both drains: the connect, the first and the last message
    /// come in that order, and both sides' CPU was seen (nanoseconds, not ticks).
    #[cfg(test)]
    pub(crate) fn assert_timeline_and_cpu(&self) {
        assert!(self.connect_ms <= self.first_ms, "{self:?}");
        assert!(self.first_ms <= self.drain_ms, "{self:?}");
        assert!(self.server_cpu_ms.is_some_and(|ms| ms > 0.0), "{self:?}");
        assert!(self.client_cpu_ms.is_some_and(|ms| ms > 0.0), "{self:?}");
        assert!(
            self.server_cpu_settled_ms.is_some_and(f64::is_finite),
            "{self:?}"
        );
        assert!(
            self.server_idle_ms_per_s.is_some_and(|ms| ms >= 0.0),
            "{self:?}"
        );
    }
}

/// What both drains (quichat's and mosquitto's) do with each message that arrives: count
/// it once, note whether it came out of order, and time it from the reconnect.
pub(crate) struct DrainTally {
    started: Instant,
    last_at: Instant,
    seen: SeqSet,
    last_seq: Option<u64>,
}

impl DrainTally {
    /// A tally whose clock started at the reconnect, `started`.
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            last_at: started,
            seen: SeqSet::new(),
            last_seq: None,
        }
    }

    /// The message numbered `seq` arrived just now.
    pub(crate) fn message(&mut self, seq: u64, summary: &mut DrainSummary) {
        if !self.seen.insert(seq) {
            summary.duplicates += 1;
            return;
        }
        if self.last_seq.is_some_and(|last| seq < last) {
            summary.out_of_order += 1;
        }
        self.last_seq = Some(seq);
        summary.received += 1;
        let now = Instant::now();
        if summary.received == 1 {
            summary.first_ms = ms(now.duration_since(self.started));
        } else {
            summary.max_gap_ms = summary.max_gap_ms.max(ms(now.duration_since(self.last_at)));
        }
        self.last_at = now;
    }

    /// Sets the drain's time (to the last message that came) and its rate.
    pub(crate) fn finish(&self, summary: &mut DrainSummary) {
        summary.drain_ms = ms(self.last_at.duration_since(self.started));
        summary.msgs_per_sec = summary.received as f64 / (summary.drain_ms / 1e3).max(1e-9);
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::summary::{CpuSummary, Percentiles, Summary};

    fn usage(wall_ms: u64, server_ms: u64) -> CpuUsage {
        CpuUsage {
            wall: Duration::from_millis(wall_ms),
            server: Duration::from_millis(server_ms),
            per_server: vec![Duration::from_millis(server_ms)],
            load_generator: Duration::ZERO,
        }
    }

    #[test]
    fn the_settled_figure_is_the_servers_cpu_beyond_its_idle_rate() {
        // Idle at 8 ms per second; a 500 ms window with 50 ms of CPU held 46 ms of work.
        let idle = IdleRate {
            per_wall_second: 0.008,
        };
        assert!((idle.ms_per_s() - 8.0).abs() < 1e-9);
        assert!((idle.beyond_idle_ms(&usage(500, 50)) - 46.0).abs() < 1e-9);
        // Less than idle (the probe caught a busier moment): no work, not negative work.
        assert_eq!(idle.beyond_idle_ms(&usage(1000, 3)), 0.0);
        // The rate is CPU over wall time; an empty window reads as idle, not as a NaN.
        let from = IdleRate::from_usage(&usage(250, 2));
        assert!((from.ms_per_s() - 8.0).abs() < 1e-9);
        assert_eq!(IdleRate::from_usage(&usage(0, 2)).ms_per_s(), 0.0);
    }

    #[test]
    fn the_drain_tally_counts_each_message_once_and_notes_disorder() {
        let mut summary = DrainSummary::default();
        let mut tally = DrainTally::new(Instant::now());
        for seq in [0, 1, 1, 3, 2] {
            tally.message(seq, &mut summary);
        }
        tally.finish(&mut summary);
        assert_eq!(summary.received, 4);
        assert_eq!(summary.duplicates, 1);
        assert_eq!(summary.out_of_order, 1, "2 after 3");
        assert!(summary.first_ms <= summary.drain_ms);
        assert!(summary.max_gap_ms <= summary.drain_ms);
    }

    fn summary() -> Summary {
        Summary {
            mode: "dev-process".into(),
            offered_rate: 500.0,
            sent: 1000,
            accepted: 1000,
            delivered: 1000,
            throughput_msgs_per_sec: 498.5,
            latency_us: Percentiles {
                p50: 310.0,
                p99: 900.0,
                p999: 1500.0,
                max: 2100.0,
                samples: 800,
                ..Percentiles::default()
            },
            cpu: Some(CpuSummary {
                server_us_per_message: Some(12.5),
                load_generator_us_per_message: 30.0,
                ..CpuSummary::default()
            }),
            ..Summary::default()
        }
    }

    #[test]
    fn a_quichat_load_summary_reads_into_a_row_with_its_cpu_figures() {
        // The parser must follow quichat-load's real field names: build the JSON from
        // its struct, not by hand.
        let json = serde_json::to_value(summary()).unwrap();
        let row = Row::from_summary_json("quichat", &json).unwrap();
        assert_eq!(row.system, "quichat");
        assert_eq!((row.sent, row.delivered, row.lost), (1000, 1000, 0));
        assert_eq!(row.latency_us.p99, 900.0);
        assert_eq!(row.server_cpu_us_per_msg, Some(12.5));
        assert_eq!(row.load_generator_cpu_us_per_msg, Some(30.0));
        assert!(row.is_clean());
        assert!(row.passes(10_000.0));
        assert!(!row.passes(500.0));
    }

    #[test]
    fn an_unmeasured_cpu_is_unknown_not_zero() {
        let json = serde_json::to_value(Summary {
            cpu: None,
            ..summary()
        })
        .unwrap();
        let row = Row::from_summary_json("quichat", &json).unwrap();
        assert_eq!(row.server_cpu_us_per_msg, None);
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let mut json = serde_json::to_value(summary()).unwrap();
        json.as_object_mut().unwrap().remove("lost");
        let error = Row::from_summary_json("quichat", &json).unwrap_err();
        assert!(error.to_string().contains("`lost`"), "{error}");
    }

    #[test]
    fn loss_or_an_unanswered_message_fails_the_bar_whatever_the_latency() {
        let json = serde_json::to_value(summary()).unwrap();
        let mut row = Row::from_summary_json("quichat", &json).unwrap();
        row.lost = 1;
        assert!(!row.passes(10_000.0));
        row.lost = 0;
        row.unanswered = 1;
        assert!(!row.passes(10_000.0));
        assert!(!row.is_clean());
    }
}
