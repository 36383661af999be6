//! The benchmark's results: [`Report`] (serialised as the JSON summary on stdout), the
//! human-readable tables on stderr ([`print_tables`]) and the p99-versus-loss plot
//! ([`plot()`]).

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Fan;
use super::mqtt::MqttRow;
use super::quichat::QuichatOutcome;
use super::tracker::LatencySummary;
use crate::plot::{self, Series};

/// The settings a run used, repeated in its JSON so a result file explains itself.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Conversations on the one sending connection.
    pub conversations: usize,
    /// Messages per second per conversation.
    pub rate_per_conversation: f64,
    /// Bytes per chat message.
    pub message_bytes: usize,
    /// Delay each way, milliseconds.
    pub delay_ms_each_way: f64,
    /// Measured seconds per cell (after the warm-up).
    pub duration_secs: f64,
    /// Warm-up seconds per cell.
    pub warmup_secs: f64,
    /// Lanes in the "lanes" mode.
    pub lanes: u8,
    /// Loss-generator seed of the first loss rate (each rate adds its index).
    pub seed: u64,
    /// The liveness burst: messages × bytes.
    pub burst_messages: usize,
    /// Bytes per burst message.
    pub burst_message_bytes: usize,
    /// Whether this was the `--smoke` run.
    pub smoke: bool,
    /// Which side shared one connection.
    pub fan: Fan,
}

/// The ratios the targets are stated in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Ratios {
    /// p99 with lanes (and lane copies, the default) / p99 with one stream and no copies
    /// (target: at most 1/3 at 2 % loss).
    pub p99_lanes_over_one_stream: Option<f64>,
    /// p99 with lanes but no copies / p99 with one stream: what lanes alone do.
    pub p99_lanes_no_copies_over_one_stream: Option<f64>,
    /// p99 with lanes / p99 of mosquitto over TCP (target: at most 1/3 at 2 % loss).
    pub p99_lanes_over_mosquitto: Option<f64>,
    /// p50 with lanes at this loss / p50 with lanes at 0 % (target: at most 1.05).
    pub p50_lanes_over_loss_free: Option<f64>,
}

/// One loss rate: the three systems side by side.
#[derive(Clone, Debug, Serialize)]
pub struct LossRow {
    /// Loss probability each way.
    pub loss: f64,
    /// quichat with lanes and lane copies (`auto`, the default).
    pub lanes: QuichatOutcome,
    /// quichat with lanes and no copies.
    pub lanes_no_copies: QuichatOutcome,
    /// quichat with one lane (everything on one stream) and no copies.
    pub one_stream: QuichatOutcome,
    /// mosquitto over TCP.
    pub mosquitto: MqttRow,
    /// The ratios.
    pub ratios: Ratios,
}

/// One loss rate of the liveness case.
#[derive(Clone, Debug, Serialize)]
pub struct LivenessRow {
    /// Loss probability each way.
    pub loss: f64,
    /// quichat with lanes.
    pub lanes: QuichatOutcome,
    /// quichat with one stream.
    pub one_stream: QuichatOutcome,
    /// p99 of the chatty conversations during the burst, lanes / one stream.
    pub chatty_p99_lanes_over_one_stream: Option<f64>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was run.
    pub settings: Settings,
    /// The head-of-line table, one row per loss rate.
    pub rows: Vec<LossRow>,
    /// The liveness table.
    pub liveness: Vec<LivenessRow>,
    /// True when every quichat cell delivered every message once and in order, with no
    /// send error.
    pub quichat_clean: bool,
    /// Where the plot was written, if it was.
    pub plot: Option<String>,
}

fn ratio(a: &LatencySummary, b: &LatencySummary, pick: fn(&LatencySummary) -> f64) -> Option<f64> {
    (a.samples > 0 && b.samples > 0 && pick(b) > 0.0).then(|| pick(a) / pick(b))
}

impl LossRow {
    /// A row with its ratios; `loss_free` is the lanes result at 0 % loss, if measured.
    pub fn new(
        loss: f64,
        lanes: QuichatOutcome,
        lanes_no_copies: QuichatOutcome,
        one_stream: QuichatOutcome,
        mosquitto: MqttRow,
        loss_free: Option<&LatencySummary>,
    ) -> Self {
        let p99 = |s: &LatencySummary| s.p99_ms;
        let ratios = Ratios {
            p99_lanes_over_one_stream: ratio(&lanes.latency, &one_stream.latency, p99),
            p99_lanes_no_copies_over_one_stream: ratio(
                &lanes_no_copies.latency,
                &one_stream.latency,
                p99,
            ),
            p99_lanes_over_mosquitto: mosquitto
                .outcome()
                .and_then(|m| ratio(&lanes.latency, &m.latency, p99)),
            p50_lanes_over_loss_free: loss_free
                .and_then(|free| ratio(&lanes.latency, free, |s| s.p50_ms)),
        };
        Self {
            loss,
            lanes,
            lanes_no_copies,
            one_stream,
            mosquitto,
            ratios,
        }
    }
}

impl LivenessRow {
    /// A row with its ratio.
    pub fn new(loss: f64, lanes: QuichatOutcome, one_stream: QuichatOutcome) -> Self {
        let chatty = |o: &QuichatOutcome| o.burst.map(|b| b.chatty).unwrap_or_default();
        let chatty_p99_lanes_over_one_stream =
            ratio(&chatty(&lanes), &chatty(&one_stream), |s| s.p99_ms);
        Self {
            loss,
            lanes,
            one_stream,
            chatty_p99_lanes_over_one_stream,
        }
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

fn latency_cells(s: &LatencySummary) -> String {
    if s.samples == 0 {
        return format!("{:>8} {:>8} {:>8} {:>8}", "-", "-", "-", 0);
    }
    format!(
        "{:>8.1} {:>8.1} {:>8.1} {:>8}",
        s.p50_ms, s.p99_ms, s.max_ms, s.samples
    )
}

fn quichat_line(name: &str, o: &QuichatOutcome) -> String {
    let i = &o.integrity;
    format!(
        "  {name:<24} {} {:>6} {:>5} {:>5} {:>5}",
        latency_cells(&o.latency),
        i.lost,
        i.duplicates,
        i.out_of_order,
        o.disconnects
    )
}

/// Prints the tables to stderr.
pub fn print_tables(report: &Report) {
    let s = &report.settings;
    eprintln!();
    eprintln!(
        "head-of-line: {} conversations x {} msg/s on one {} connection, {} B messages, \
         {} ms each way, {} s measured per cell",
        s.conversations,
        s.rate_per_conversation,
        match s.fan {
            Fan::Out => "sending",
            Fan::In => "receiving",
        },
        s.message_bytes,
        s.delay_ms_each_way,
        s.duration_secs
    );
    let header = format!(
        "  {:<24} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5} {:>5} {:>5}",
        "system", "p50 ms", "p99 ms", "max ms", "samples", "lost", "dup", "ooo", "disc"
    );
    for row in &report.rows {
        eprintln!("\nloss {} % each way", row.loss * 100.0);
        eprintln!("{header}");
        eprintln!(
            "{}",
            quichat_line(&format!("quichat lanes={}", row.lanes.lanes), &row.lanes)
        );
        eprintln!(
            "{}",
            quichat_line(
                &format!("quichat lanes={} no copies", row.lanes_no_copies.lanes),
                &row.lanes_no_copies
            )
        );
        eprintln!("{}", quichat_line("quichat 1 stream", &row.one_stream));
        match &row.mosquitto {
            MqttRow::Ok(m) => {
                let i = &m.integrity;
                eprintln!(
                    "  {:<24} {} {:>6} {:>5} {:>5} {:>5}",
                    "mosquitto TCP",
                    latency_cells(&m.latency),
                    i.lost,
                    i.duplicates,
                    i.out_of_order,
                    m.disconnects
                );
            }
            MqttRow::Skipped { reason } => eprintln!("  mosquitto TCP      skipped: {reason}"),
            MqttRow::Failed { reason } => eprintln!("  mosquitto TCP      FAILED: {reason}"),
            MqttRow::NotRun => eprintln!("  mosquitto TCP      not run"),
        }
        let r = &row.ratios;
        eprintln!(
            "  p99 lanes/1 stream = {} (no copies: {})   p99 lanes/mosquitto = {}   p50 lanes/p50 lanes at 0 % = {}",
            fmt_ratio(r.p99_lanes_over_one_stream),
            fmt_ratio(r.p99_lanes_no_copies_over_one_stream),
            fmt_ratio(r.p99_lanes_over_mosquitto),
            fmt_ratio(r.p50_lanes_over_loss_free)
        );
    }
    if !report.liveness.is_empty() {
        eprintln!(
            "\nliveness: conversation 0 sends {} x {} B at once; the other {} keep chatting",
            s.burst_messages,
            s.burst_message_bytes,
            s.conversations.saturating_sub(1)
        );
        eprintln!(
            "  {:<6} {:<18} {:>13} {:>9} {:>13} {:>13} {:>13} {:>18} {:>5}",
            "loss",
            "system",
            "burst done ms",
            "window ms",
            "chatty p50 ms",
            "chatty p99 ms",
            "chatty max ms",
            "other lanes p99 ms",
            "lost"
        );
        for row in &report.liveness {
            for (name, o) in [
                (format!("quichat lanes={}", row.lanes.lanes), &row.lanes),
                ("quichat 1 stream".to_owned(), &row.one_stream),
            ] {
                let b = o.burst.unwrap_or_default();
                let other = if b.chatty_other_lanes.samples > 0 {
                    format!("{:.1}", b.chatty_other_lanes.p99_ms)
                } else {
                    "-".into()
                };
                eprintln!(
                    "  {:<6} {name:<18} {:>13.1} {:>9.0} {:>13.1} {:>13.1} {:>13.1} {other:>18} {:>5}",
                    format!("{} %", row.loss * 100.0),
                    b.completed_ms,
                    b.window_ms,
                    b.chatty.p50_ms,
                    b.chatty.p99_ms,
                    b.chatty.max_ms,
                    o.integrity.lost
                );
            }
            eprintln!(
                "  {:<6} chatty p99 lanes/1 stream = {}",
                "",
                fmt_ratio(row.chatty_p99_lanes_over_one_stream)
            );
        }
    }
    eprintln!(
        "\nquichat delivered every message once and in order: {}",
        if report.quichat_clean { "yes" } else { "NO" }
    );
}

/// Draws p99 against the loss rate, one line per system, to `path` (SVG).
pub fn plot(report: &Report, path: &Path) -> Result<()> {
    let line = |name: String, pick: &dyn Fn(&LossRow) -> Option<f64>| Series {
        name,
        points: report
            .rows
            .iter()
            .filter_map(|row| pick(row).map(|y| (row.loss * 100.0, y)))
            .collect(),
    };
    let lanes = report.rows.first().map_or(0, |r| r.lanes.lanes);
    let measured = |s: &LatencySummary| (s.samples > 0).then_some(s.p99_ms);
    let mut series = vec![
        line(format!("quichat, {lanes} lanes, copies"), &|r| {
            measured(&r.lanes.latency)
        }),
        line(format!("quichat, {lanes} lanes, no copies"), &|r| {
            measured(&r.lanes_no_copies.latency)
        }),
        line("quichat, 1 stream".into(), &|r| {
            measured(&r.one_stream.latency)
        }),
        line("mosquitto, MQTT QoS 1 over TCP".into(), &|r| {
            r.mosquitto.outcome().and_then(|m| measured(&m.latency))
        }),
    ];
    series.retain(|s| !s.points.is_empty());
    plot::line_chart(
        path,
        &format!(
            "p99 delivery latency, {} conversations on one connection, {} ms each way",
            report.settings.conversations, report.settings.delay_ms_each_way
        ),
        "loss each way (%)",
        "p99 latency (ms)",
        &series,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hol::quichat::ProxyCounts;
    use crate::hol::tracker::Integrity;

    fn outcome(lanes: u8, p50_ms: f64, p99_ms: f64, samples: u64) -> QuichatOutcome {
        QuichatOutcome {
            lanes,
            copies: client::CopyPolicy::Auto,
            loss: 0.02,
            latency: LatencySummary {
                samples,
                p50_ms,
                p99_ms,
                max_ms: p99_ms,
            },
            integrity: Integrity::default(),
            send_errors: 0,
            disconnects: 0,
            proxy: ProxyCounts::default(),
            burst: None,
        }
    }

    #[test]
    fn ratios_compare_lanes_with_the_baseline_and_the_loss_free_run() {
        let free = LatencySummary {
            samples: 10,
            p50_ms: 50.0,
            p99_ms: 55.0,
            max_ms: 60.0,
        };
        let row = LossRow::new(
            0.02,
            outcome(8, 52.5, 60.0, 10),
            outcome(8, 52.5, 120.0, 10),
            outcome(1, 70.0, 240.0, 10),
            MqttRow::NotRun,
            Some(&free),
        );
        assert_eq!(row.ratios.p99_lanes_over_one_stream, Some(0.25));
        assert_eq!(row.ratios.p99_lanes_no_copies_over_one_stream, Some(0.5));
        assert_eq!(row.ratios.p50_lanes_over_loss_free, Some(1.05));
        assert_eq!(row.ratios.p99_lanes_over_mosquitto, None);
    }

    #[test]
    fn a_ratio_against_nothing_measured_is_absent_not_zero_or_infinite() {
        // A skipped or empty cell must not turn into a ratio that looks like a result.
        let row = LossRow::new(
            0.02,
            outcome(8, 52.5, 60.0, 10),
            outcome(8, 0.0, 0.0, 0),
            outcome(1, 0.0, 0.0, 0),
            MqttRow::Skipped {
                reason: "no root".into(),
            },
            None,
        );
        assert_eq!(row.ratios, Ratios::default());
    }
}
