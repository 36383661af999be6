//! Ratios and the human-readable tables (stderr) for the comparison.

use std::fmt::Write as _;

use serde::Serialize;

use super::DURABILITY_NOTE;
use super::summary::{DrainSummary, Row, SETTLE};

/// quichat divided by one mosquitto variant, at one offered rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineRatios {
    /// The mosquitto variant (`mosquitto-tls` / `mosquitto-tcp`).
    pub versus: String,
    /// Delivered throughput, quichat/mosquitto (above 1: quichat delivered more).
    pub throughput: Option<f64>,
    /// Median latency, quichat/mosquitto (below 1: quichat is faster).
    pub p50: Option<f64>,
    /// 99th percentile latency, quichat/mosquitto.
    pub p99: Option<f64>,
    /// Server CPU per delivered message, quichat (all its server processes)/mosquitto.
    pub server_cpu_per_msg: Option<f64>,
}

/// `a / b`, when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

impl OnlineRatios {
    /// quichat's run against a mosquitto run.
    pub fn of(quichat: &Row, mosquitto: &Row) -> Self {
        Self {
            versus: mosquitto.system.clone(),
            throughput: ratio(
                Some(quichat.throughput_msgs_per_sec),
                Some(mosquitto.throughput_msgs_per_sec),
            ),
            p50: ratio(Some(quichat.latency_us.p50), Some(mosquitto.latency_us.p50)),
            p99: ratio(Some(quichat.latency_us.p99), Some(mosquitto.latency_us.p99)),
            server_cpu_per_msg: ratio(
                quichat.server_cpu_us_per_msg,
                mosquitto.server_cpu_us_per_msg,
            ),
        }
    }
}

/// The offline drain, quichat against one mosquitto variant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrainRatios {
    /// The mosquitto variant.
    pub versus: String,
    /// The round of `--drain-runs` both drains belong to.
    pub round: u32,
    /// Drain time, quichat/mosquitto (below 1: quichat drains faster).
    pub time_quichat_over_mosquitto: Option<f64>,
    /// How many times faster quichat drains: mosquitto's time / quichat's.
    pub speedup: Option<f64>,
}

impl DrainRatios {
    /// quichat's drain against a mosquitto drain.
    pub fn of(quichat: &DrainSummary, mosquitto: &DrainSummary) -> Self {
        Self {
            versus: mosquitto.system.clone(),
            round: quichat.round,
            time_quichat_over_mosquitto: ratio(Some(quichat.drain_ms), Some(mosquitto.drain_ms)),
            speedup: ratio(Some(mosquitto.drain_ms), Some(quichat.drain_ms)),
        }
    }
}

/// quichat's drain speed-up over one mosquitto variant across the rounds of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrainSpeedups {
    /// The mosquitto variant.
    pub versus: String,
    /// Rounds with both drains measured.
    pub rounds: usize,
    /// The median round's speed-up (the mean of the middle two for an even count).
    pub median: Option<f64>,
    /// The slowest round's speed-up.
    pub min: Option<f64>,
    /// The fastest round's speed-up.
    pub max: Option<f64>,
}

impl DrainSpeedups {
    /// The speed-ups of `ratios`, one summary per mosquitto variant, in order of first
    /// appearance.
    pub fn of(ratios: &[DrainRatios]) -> Vec<Self> {
        let mut versus: Vec<&str> = Vec::new();
        for r in ratios {
            if !versus.contains(&r.versus.as_str()) {
                versus.push(&r.versus);
            }
        }
        versus
            .into_iter()
            .map(|name| {
                let mut speedups: Vec<f64> = ratios
                    .iter()
                    .filter(|r| r.versus == name)
                    .filter_map(|r| r.speedup)
                    .collect();
                speedups.sort_by(f64::total_cmp);
                let n = speedups.len();
                let median = match n {
                    0 => None,
                    _ if n % 2 == 1 => Some(speedups[n / 2]),
                    _ => Some((speedups[n / 2 - 1] + speedups[n / 2]) / 2.0),
                };
                Self {
                    versus: name.to_string(),
                    rounds: n,
                    median,
                    min: speedups.first().copied(),
                    max: speedups.last().copied(),
                }
            })
            .collect()
    }
}

fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

fn times(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{v:.2}x"),
        None => "-".into(),
    }
}

/// The table of one online comparison.
pub fn online_table(title: &str, runs: &[Row], ratios: &[OnlineRatios]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>9} {:>5} {:>4} {:>4} {:>6} {:>6} {:>11} {:>8} {:>8} {:>9} {:>12}",
        "system",
        "sent",
        "delivered",
        "lost",
        "dup",
        "ooo",
        "errors",
        "unansw",
        "thru msg/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "srv CPU us/m"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>5} {:>4} {:>4} {:>6} {:>6} {:>11.0} {:>8.3} {:>8.3} {:>9.3} {:>12}",
            r.system,
            r.sent,
            r.delivered,
            r.lost,
            r.duplicates_shown,
            r.out_of_order,
            r.errors,
            r.unanswered,
            r.throughput_msgs_per_sec,
            r.latency_us.p50 / 1e3,
            r.latency_us.p99 / 1e3,
            r.latency_us.p999 / 1e3,
            num(r.server_cpu_us_per_msg, 2),
        );
    }
    for q in ratios {
        let _ = writeln!(
            out,
            "quichat/{}: throughput {}, p50 {}, p99 {}, server CPU per message {}",
            q.versus,
            times(q.throughput),
            times(q.p50),
            times(q.p99),
            times(q.server_cpu_per_msg)
        );
    }
    let _ = writeln!(out, "note: {DURABILITY_NOTE}");
    out
}

/// The table of the sweep's answers.
pub fn sweep_table(
    p99_ms_max: f64,
    best: &[(String, Option<f64>)],
    quichat: Option<f64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "highest offered rate with p99 <= {p99_ms_max} ms and nothing lost"
    );
    for (system, rate) in best {
        let _ = writeln!(out, "{system:<14} {:>10} msg/s", num(*rate, 0));
    }
    for (system, rate) in best {
        if system != "quichat" {
            let _ = writeln!(out, "quichat/{system}: {}", times(ratio(quichat, *rate)));
        }
    }
    let _ = writeln!(out, "note: {DURABILITY_NOTE}");
    out
}

/// The table of the offline drain.
pub fn drain_table(
    runs: &[DrainSummary],
    ratios: &[DrainRatios],
    speedups: &[DrainSpeedups],
) -> String {
    let mut out = String::new();
    let messages = runs.first().map_or(0, |r| r.messages);
    let _ = writeln!(out, "offline drain of {messages} messages");
    let _ = writeln!(
        out,
        "{:>5} {:<14} {:>10} {:>9} {:>10} {:>11} {:>10} {:>9} {:>4} {:>4} {:>12} {:>12} {:>14}",
        "round",
        "system",
        "connect ms",
        "first ms",
        "drain ms",
        "max gap ms",
        "msg/s",
        "received",
        "dup",
        "ooo",
        "srv CPU ms",
        "client CPU ms",
        "srv settled ms"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:>5} {:<14} {:>10.1} {:>9.1} {:>10.1} {:>11.1} {:>10.0} {:>9} {:>4} {:>4} {:>12} {:>12} {:>14}",
            r.round,
            r.system,
            r.connect_ms,
            r.first_ms,
            r.drain_ms,
            r.max_gap_ms,
            r.msgs_per_sec,
            r.received,
            r.duplicates,
            r.out_of_order,
            num(r.server_cpu_ms, 1),
            num(r.client_cpu_ms, 1),
            num(r.server_cpu_settled_ms, 1)
        );
    }
    for q in ratios {
        let _ = writeln!(
            out,
            "round {}, quichat vs {}: {} faster (time ratio quichat/mosquitto {})",
            q.round,
            q.versus,
            times(q.speedup),
            num(q.time_quichat_over_mosquitto, 3)
        );
    }
    // One round has nothing to summarise beyond its own line.
    for s in speedups.iter().filter(|s| s.rounds > 1) {
        let _ = writeln!(
            out,
            "quichat vs {} over {} rounds: median {} faster (slowest round {}, fastest {})",
            s.versus,
            s.rounds,
            times(s.median),
            times(s.min),
            times(s.max)
        );
    }
    let _ = writeln!(
        out,
        "note: srv settled: the server's CPU from the reconnect until {} ms after the \
         client left, less its idle CPU over as long (work the drain left behind \
         included)",
        SETTLE.as_millis()
    );
    let _ = writeln!(out, "note: {DURABILITY_NOTE}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_needs_both_figures_and_a_nonzero_divisor() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(3.0), None), None);
    }

    #[test]
    fn drain_speedups_take_the_median_round_per_mosquitto_variant() {
        let round = |versus: &str, round: u32, speedup: Option<f64>| DrainRatios {
            versus: versus.into(),
            round,
            time_quichat_over_mosquitto: speedup.map(|s| 1.0 / s),
            speedup,
        };
        let ratios = [
            round("mosquitto-tls", 1, Some(2.5)),
            round("mosquitto-tcp", 1, Some(1.5)),
            round("mosquitto-tls", 2, Some(1.9)),
            round("mosquitto-tcp", 2, None),
            round("mosquitto-tls", 3, Some(2.1)),
            round("mosquitto-tls", 4, Some(3.0)),
        ];
        let s = DrainSpeedups::of(&ratios);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].versus, "mosquitto-tls");
        assert_eq!(s[0].rounds, 4);
        // Even count: the mean of the middle two (2.1 and 2.5).
        assert!((s[0].median.unwrap() - 2.3).abs() < 1e-9);
        assert_eq!((s[0].min, s[0].max), (Some(1.9), Some(3.0)));
        // A round without a figure does not count.
        assert_eq!((s[1].rounds, s[1].median), (1, Some(1.5)));
        assert!(DrainSpeedups::of(&[]).is_empty());
    }

    #[test]
    fn drain_speedup_is_mosquittos_time_over_quichats() {
        let quichat = DrainSummary {
            system: "quichat".into(),
            drain_ms: 100.0,
            ..DrainSummary::default()
        };
        let mosquitto = DrainSummary {
            system: "mosquitto-tls".into(),
            drain_ms: 250.0,
            ..DrainSummary::default()
        };
        let r = DrainRatios::of(&quichat, &mosquitto);
        // "At least 2x faster" reads as speedup >= 2.
        assert_eq!(r.speedup, Some(2.5));
        assert_eq!(r.time_quichat_over_mosquitto, Some(0.4));
        let one_round = drain_table(
            &[quichat, mosquitto],
            std::slice::from_ref(&r),
            &DrainSpeedups::of(std::slice::from_ref(&r)),
        );
        assert!(one_round.contains("2.50x faster"));
        assert!(
            !one_round.contains("median"),
            "one round has no summary line"
        );
    }

    #[test]
    fn every_online_table_carries_the_durability_note() {
        let table = online_table("t", &[Row::default()], &[]);
        assert!(table.contains("PUBACK does not mean the message is on disk"));
    }
}
