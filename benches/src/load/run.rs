//! One run of the load generator ([`run`]): start the server, connect the pairs, send on
//! the schedule, wait for the last deliveries, connect the offline recipients and wait
//! for their backlog, stop the server, and sum it all up.
//!
//! Time line (ns since `base`, a `std::time::Instant`):
//!
//! ```text
//! connect | start … warm-up … window.from ……… measured ……… window.to | drain | offline drain
//!                 (sent, checked,  CPU sample                CPU sample
//!                  not timed)
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use client::Client;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::UserId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::load::cpu::{CpuMeter, CpuSample, CpuUsage, Process};
use crate::load::message::HEADER_BYTES;
use crate::load::pacer::{self, Schedule, TICKS_QUEUED_PER_PAIR};
use crate::load::players::{Live, SendTask, lock, receive, send, watch_sender_events};
use crate::load::server::{Running, Target};
use crate::load::summary::{CpuSummary, OfflineSummary, Percentiles, ServerCounters, Summary};
use crate::load::tally::{SeqSet, Tally, Window};

/// Time between connecting the last client and the first message, so every sender task
/// is waiting on its queue before the first tick.
const START_DELAY: Duration = Duration::from_millis(200);
/// How often the progress bar and the drain checks look at the counters.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for a client to close cleanly at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one run does.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Sender→recipient pairs.
    pub pairs: usize,
    /// Offered load, messages per second over all pairs.
    pub rate: f64,
    /// Measured time.
    pub duration: Duration,
    /// Sending before the measured time (checked, not timed).
    pub warmup: Duration,
    /// Message size, bytes.
    pub size: usize,
    /// Share of recipients that connect only after sending ended, 0..=1.
    pub offline_share: f64,
    /// Longest wait for outstanding answers and deliveries after sending, and again for
    /// the offline recipients' backlog.
    pub drain: Duration,
    /// Show a progress bar on standard error (when it is a terminal).
    pub progress: bool,
    /// Label for the progress bar (the sweep's step).
    pub label: String,
    /// The senders' admission queue target (`DeliveryConfig::admission`); `None` keeps
    /// the library's default.
    pub admission: Option<Option<Duration>>,
}

/// Which pairs have an offline recipient: `round(pairs × share)` of them, spread evenly.
pub fn offline_pairs(pairs: usize, share: f64) -> Vec<bool> {
    let offline = ((pairs as f64 * share.clamp(0.0, 1.0)).round() as usize).min(pairs);
    (0..pairs)
        .map(|i| (i + 1) * offline / pairs > i * offline / pairs)
        .collect()
}

/// Runs once against `target` and sums up.
pub async fn run(target: &Target, options: &RunOptions) -> Result<Summary> {
    if options.pairs == 0
        || options.rate.is_nan()
        || options.rate <= 0.0
        || options.size < HEADER_BYTES
    {
        bail!(
            "need at least one pair, a positive rate and a size of at least {HEADER_BYTES} bytes"
        );
    }
    let running = target.start().await?;
    let mut result = run_on(target, &running, options).await;
    // When something went wrong, the server's own account of it is worth keeping: its
    // log lives in a directory about to be removed.
    if let (Ok(summary), Some(log)) = (&mut result, running.log_tail())
        && !summary.is_clean()
        && !log.is_empty()
    {
        summary
            .notes
            .push(format!("quichat dev log, last lines:\n{log}"));
    }
    running.shutdown().await;
    result
}

async fn run_on(target: &Target, running: &Running, options: &RunOptions) -> Result<Summary> {
    let pairs = options.pairs;
    let offline = offline_pairs(pairs, options.offline_share);
    let bar = progress_bar(options);
    let live = Arc::new(Live::default());
    let meter = CpuMeter::new(running.servers.clone());

    // Fresh user names and device ids per run: against a long-lived edge, a previous
    // run's stored messages must not land in this run's inboxes.
    let run_id: u32 = rand::random();
    let device_base: u64 = rand::random::<u64>() >> 8;
    let sender_id = |pair: usize| UserId::new(format!("load-{run_id:08x}-s{pair}"));
    let recipient_id = |pair: usize| UserId::new(format!("load-{run_id:08x}-r{pair}"));
    let recipient_device = |pair: usize| device_base + 2 * pair as u64 + 1;

    let base = Instant::now();
    let ns = move || base.elapsed().as_nanos() as u64;

    // Connect the senders and the online recipients.
    bar.set_message(format!("connecting {} clients", 2 * pairs));
    let mut senders = Vec::with_capacity(pairs);
    let mut receivers = JoinSet::new();
    let mut recipients: Vec<Option<UserId>> = vec![None; pairs];
    let schedule_len_guess = {
        let secs = (options.warmup + options.duration).as_secs_f64();
        (secs * options.rate).ceil() as u64
    };
    let seq_limit = schedule_len_guess / pairs as u64 + 2;
    let window = Window {
        from_ns: 0,
        to_ns: 0,
    };
    let online = Arc::new(Mutex::new(Tally::new(pairs, seq_limit, window)?));
    let offline_tally = Arc::new(Mutex::new(Tally::new(pairs, seq_limit, Window::ALL)?));
    for pair in 0..pairs {
        let from = sender_id(pair)?;
        let to = recipient_id(pair)?;
        let mut config = running.client_config(pair, &from, device_base + 2 * pair as u64)?;
        if let Some(admission) = options.admission {
            config.delivery.admission = admission;
        }
        let (client, events) = Client::connect(config)
            .await
            .with_context(|| format!("connecting sender {pair}"))?;
        tokio::spawn(watch_sender_events(events, live.clone()));
        senders.push((client, to.clone()));
        if !offline[pair] {
            let (client, events) =
                Client::connect(running.client_config(pair + 1, &to, recipient_device(pair))?)
                    .await
                    .with_context(|| format!("connecting recipient {pair}"))?;
            receivers.spawn(receive(client, events, online.clone(), live.clone(), ns));
        }
        recipients[pair] = Some(to);
    }

    // The schedule starts shortly after now; measurement after the warm-up.
    let start_ns = ns() + START_DELAY.as_nanos() as u64;
    let schedule = Schedule {
        pairs,
        rate: options.rate,
        start_ns,
        end_ns: start_ns + (options.warmup + options.duration).as_nanos() as u64,
    };
    let window = Window {
        from_ns: start_ns + options.warmup.as_nanos() as u64,
        to_ns: schedule.end_ns,
    };
    lock(&online).set_window(window);
    let drain_deadline = schedule.end_ns + options.drain.as_nanos() as u64;

    // Sender tasks, fed by the pacer thread.
    let mut outlets = Vec::with_capacity(pairs);
    let mut sender_tasks = Vec::with_capacity(pairs);
    for (pair, (client, to)) in senders.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(TICKS_QUEUED_PER_PAIR);
        outlets.push(tx);
        sender_tasks.push(tokio::spawn(send(SendTask {
            pair,
            client,
            to,
            ticks: rx,
            size: options.size,
            live: live.clone(),
            ns,
            answer_deadline: base + Duration::from_nanos(drain_deadline),
        })));
    }
    let pacer = pacer::spawn(base, schedule, outlets).context("starting the pacer thread")?;
    let progress = tokio::spawn(show_progress(
        bar.clone(),
        live.clone(),
        schedule,
        base,
        options.rate,
    ));

    // CPU (and in-process counters) at the start and the end of the window.
    sleep_until_ns(base, window.from_ns).await;
    let cpu_start = meter.sample();
    let stats_start = running.stats();
    sleep_until_ns(base, window.to_ns).await;
    let cpu_end = meter.sample();
    let stats_end = running.stats();
    let delivered_in_window = lock(&online).delivered_in_window;

    let pacer_report = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow!("the pacer thread panicked"))?;
    progress.abort();

    // Every answer (or the drain deadline), then every accepted message to an online
    // recipient delivered (or the deadline).
    bar.set_message("waiting for answers");
    let mut reports = Vec::with_capacity(pairs);
    for task in sender_tasks {
        reports.push(task.await?);
    }
    let accepted_by_pair: Vec<SeqSet> = reports.iter().map(|r| r.accepted.clone()).collect();
    let online_accepted: Vec<SeqSet> = accepted_by_pair
        .iter()
        .zip(&offline)
        .map(|(acc, &off)| if off { SeqSet::new() } else { acc.clone() })
        .collect();
    bar.set_message("waiting for the last deliveries");
    while lock(&online).missing(&online_accepted) > 0 && ns() < drain_deadline {
        tokio::time::sleep(POLL).await;
    }

    // The offline recipients come back and are replayed what was stored for them.
    let offline_summary = if offline.iter().any(|&o| o) {
        let offline_accepted: Vec<SeqSet> = accepted_by_pair
            .iter()
            .zip(&offline)
            .map(|(acc, &off)| if off { acc.clone() } else { SeqSet::new() })
            .collect();
        bar.set_message("offline recipients catching up");
        let cpu_before = meter.sample();
        let started_ns = ns();
        let deadline = started_ns + options.drain.as_nanos() as u64;
        for pair in (0..pairs).filter(|&p| offline[p]) {
            let to = recipients[pair]
                .clone()
                .ok_or_else(|| anyhow!("recipient {pair} has no id"))?;
            let (client, events) =
                Client::connect(running.client_config(pair + 1, &to, recipient_device(pair))?)
                    .await
                    .with_context(|| format!("connecting offline recipient {pair}"))?;
            receivers.spawn(receive(
                client,
                events,
                offline_tally.clone(),
                live.clone(),
                ns,
            ));
        }
        while lock(&offline_tally).missing(&offline_accepted) > 0 && ns() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let cpu_usage = usage(&cpu_before, &meter.sample());
        let t = lock(&offline_tally);
        let expected: u64 = offline_accepted.iter().map(SeqSet::len).sum();
        let drain_secs = t
            .last_delivery_ns
            .unwrap_or(started_ns)
            .saturating_sub(started_ns) as f64
            / 1e9;
        Some(OfflineSummary {
            recipients: offline.iter().filter(|&&o| o).count(),
            expected,
            delivered: t.delivered,
            lost: t.missing(&offline_accepted),
            duplicates_shown: t.duplicates,
            out_of_order: t.out_of_order,
            drain_secs,
            drain_msgs_per_sec: per_second(t.delivered, drain_secs),
            server_cpu_us_per_message: cpu_usage
                .filter(|_| !running.servers.is_empty() && t.delivered > 0)
                .map(|u| u.server.as_secs_f64() * 1e6 / t.delivered as f64),
        })
    } else {
        None
    };
    bar.finish_and_clear();

    // Close everything; a client that cannot close in time is left to the runtime.
    live.closing.store(true, Ordering::Relaxed);
    let mut closing = JoinSet::new();
    for report in &reports {
        let client = report.client.clone();
        closing.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
        });
    }
    while closing.join_next().await.is_some() {}
    receivers.abort_all();

    // Sum up.
    let window_secs = (window.to_ns - window.from_ns) as f64 / 1e9;
    let on = lock(&online);
    let off = lock(&offline_tally);
    let mut errors_by_kind = BTreeMap::new();
    for report in &reports {
        for (kind, count) in &report.errors {
            *errors_by_kind.entry(kind.clone()).or_insert(0) += count;
        }
    }
    let offline_lost = offline_summary.as_ref().map_or(0, |o| o.lost);
    let mut notes = Vec::new();
    let cpu = match (&cpu_start, &cpu_end) {
        (Ok(start), Ok(end)) => Some(cpu_summary(
            target,
            running,
            &end.since(start),
            delivered_in_window,
        )),
        (Err(e), _) | (_, Err(e)) => {
            notes.push(format!("CPU not measured: {e:#}"));
            None
        }
    };
    match target {
        Target::Dev { threads, .. } => {
            notes.push(super::server::threads_note(*threads));
            notes.push(
                "the quichat dev process does not expose its edge's datagram and frame \
                 counters; run with --in-process to see them"
                    .into(),
            );
        }
        Target::InProcess { .. } => notes.push(
            "in-process: the server shares this process and its CPU; cpu.server covers \
             the load generator too"
                .into(),
        ),
        Target::External { .. } => {}
    }
    if options.offline_share > 0.0 {
        notes.push(
            "messages to offline recipients are stored during the window: their cost is in \
             the window's server CPU, but they are delivered (and counted) only later"
                .into(),
        );
    }
    let (core, edge_notes) = counters(stats_start, stats_end, delivered_in_window, window_secs);
    notes.extend(edge_notes);
    Ok(Summary {
        mode: target.mode().into(),
        pairs,
        offered_rate: options.rate,
        size: options.size,
        duration_secs: options.duration.as_secs_f64(),
        warmup_secs: options.warmup.as_secs_f64(),
        offline_share: options.offline_share,
        sent: reports.iter().map(|r| r.sent).sum(),
        accepted: accepted_by_pair.iter().map(SeqSet::len).sum(),
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
        unanswered: reports.iter().map(|r| r.unanswered).sum(),
        delivered: on.delivered + off.delivered,
        lost: on.missing(&online_accepted) + offline_lost,
        duplicates_shown: on.duplicates + off.duplicates,
        out_of_order: on.out_of_order + off.out_of_order,
        disconnects: live.disconnects.load(Ordering::Relaxed),
        throughput_msgs_per_sec: per_second(delivered_in_window, window_secs),
        latency_us: Percentiles::of(&on.from_intended),
        latency_from_send_us: Percentiles::of(&on.from_send),
        pacer_late_mean_us: pacer_report.late_mean_us,
        pacer_late_max_us: pacer_report.late_max_us,
        cpu,
        offline: offline_summary,
        core,
        notes,
    })
}

/// The progress bar: on standard error, hidden when asked or when that is no terminal.
fn progress_bar(options: &RunOptions) -> ProgressBar {
    use std::io::IsTerminal;
    if !options.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total_ms = (options.warmup + options.duration).as_millis() as u64;
    let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
    // `wide_msg` is cut to the terminal's width, so the bar never wraps.
    if let Ok(style) = ProgressStyle::with_template("{prefix}[{bar:24}] {elapsed} {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    if !options.label.is_empty() {
        bar.set_prefix(format!("{} ", options.label));
    }
    bar
}

async fn show_progress(
    bar: ProgressBar,
    live: Arc<Live>,
    schedule: Schedule,
    base: Instant,
    rate: f64,
) {
    loop {
        let now_ns = base.elapsed().as_nanos() as u64;
        bar.set_position(now_ns.saturating_sub(schedule.start_ns) / 1_000_000);
        bar.set_message(format!(
            "{rate:.0}/s sent {} accepted {} delivered {} errors {}",
            live.sent.load(Ordering::Relaxed),
            live.accepted.load(Ordering::Relaxed),
            live.delivered.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
        ));
        tokio::time::sleep(POLL).await;
    }
}

async fn sleep_until_ns(base: Instant, ns: u64) {
    tokio::time::sleep_until((base + Duration::from_nanos(ns)).into()).await;
}

fn per_second(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn usage(before: &Result<CpuSample>, after: &Result<CpuSample>) -> Option<CpuUsage> {
    match (before, after) {
        (Ok(before), Ok(after)) => Some(after.since(before)),
        _ => None,
    }
}

fn cpu_summary(target: &Target, running: &Running, usage: &CpuUsage, delivered: u64) -> CpuSummary {
    let per_message = |d: Duration| {
        if delivered > 0 {
            d.as_secs_f64() * 1e6 / delivered as f64
        } else {
            0.0
        }
    };
    let measured = !running.servers.is_empty();
    let window_secs = usage.wall.as_secs_f64();
    CpuSummary {
        method: format!(
            "utime+stime from /proc/<pid>/stat at the start and end of the measured window \
             ({}), divided by the messages delivered in it",
            target.mode()
        ),
        window_secs,
        server_secs: measured.then_some(usage.server.as_secs_f64()),
        server_us_per_message: measured.then(|| per_message(usage.server)),
        server_cores: measured
            .then(|| usage.server.as_secs_f64() / window_secs.max(f64::MIN_POSITIVE)),
        load_generator_secs: usage.load_generator.as_secs_f64(),
        load_generator_us_per_message: per_message(usage.load_generator),
        server_pids: running
            .servers
            .iter()
            .map(|p| match p {
                Process::This => 0,
                Process::Pid(pid) => *pid,
            })
            .collect(),
    }
}

type Stats = Option<(server::CoreStats, Vec<edge_relay::EdgeStats>)>;

/// The in-process counters over the window, and notes on anything alarming in them.
fn counters(
    start: Stats,
    end: Stats,
    delivered: u64,
    window_secs: f64,
) -> (Option<ServerCounters>, Vec<String>) {
    let (Some((core0, edges0)), Some((core1, edges1))) = (start, end) else {
        return (None, Vec::new());
    };
    let sum = |edges: &[edge_relay::EdgeStats], f: fn(&edge_relay::EdgeStats) -> u64| -> u64 {
        edges.iter().map(f).sum()
    };
    let datagrams = sum(&edges1, |e| e.datagrams_to_core) - sum(&edges0, |e| e.datagrams_to_core);
    let slow = sum(&edges1, |e| e.slow_consumers) - sum(&edges0, |e| e.slow_consumers);
    let commits = core1.commits - core0.commits;
    let mut notes = Vec::new();
    if slow > 0 {
        notes.push(format!(
            "the edges dropped {slow} clients as slow consumers"
        ));
    }
    (
        Some(ServerCounters {
            commits,
            commits_per_sec: per_second(commits, window_secs),
            messages_committed: core1.committed - core0.committed,
            messages_skipped_disk: core1.skipped_disk - core0.skipped_disk,
            edge_frames_to_core: sum(&edges1, |e| e.frames_to_core)
                - sum(&edges0, |e| e.frames_to_core),
            edge_datagrams_to_core: datagrams,
            messages_per_datagram_to_core: if datagrams > 0 {
                delivered as f64 / datagrams as f64
            } else {
                0.0
            },
            edge_slow_consumers: slow,
        }),
        notes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_delivers_everything_once_and_accounts_for_every_message() {
        // The whole pipeline on a real in-process stack: pacer, senders, recipients, the
        // offline recipient's catch-up, and the summary's arithmetic.
        let options = RunOptions {
            pairs: 3,
            rate: 150.0,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
            size: 80,
            offline_share: 1.0 / 3.0,
            drain: Duration::from_secs(20),
            progress: false,
            label: String::new(),
            admission: None,
        };
        let summary = run(
            &Target::InProcess {
                edges: 1,
                link_linger_us: None,
            },
            &options,
        )
        .await
        .unwrap();
        // 1.2 s at 150 msg/s.
        assert_eq!(summary.sent, 180, "{summary:#?}");
        assert_eq!(summary.accepted, 180, "{summary:#?}");
        assert_eq!(summary.delivered, 180, "{summary:#?}");
        assert!(summary.is_clean(), "{summary:#?}");
        // Pair 2's recipient was offline: its 60 messages came by replay.
        let offline = summary.offline.as_ref().unwrap();
        assert_eq!((offline.recipients, offline.expected), (1, 60));
        assert_eq!((offline.delivered, offline.lost), (60, 0));
        // Timed: the online pairs' messages intended after the warm-up, 2 × 50.
        assert_eq!(summary.latency_us.samples, 100);
        assert!(summary.latency_us.p50 > 0.0);
        assert!(summary.latency_us.max >= summary.latency_from_send_us.max * 0.999);
        assert!(summary.cpu.is_some(), "{:?}", summary.notes);
        assert!(summary.core.is_some());
    }

    #[test]
    fn the_offline_share_picks_that_many_recipients_spread_over_the_pairs() {
        let picked = offline_pairs(10, 0.2);
        assert_eq!(picked.iter().filter(|&&o| o).count(), 2);
        // Spread over the pairs, not bunched at the start.
        assert!(!(picked[0] && picked[1]), "{picked:?}");
        assert_eq!(offline_pairs(5, 0.0), vec![false; 5]);
        assert_eq!(offline_pairs(5, 1.0), vec![true; 5]);
        assert_eq!(offline_pairs(5, 0.2).iter().filter(|&&o| o).count(), 1);
    }
}
