//! The quichat side of the comparison, in child processes like mosquitto.
//!
//! - [`run_load`] and [`run_sweep`]: the online workload and the rate sweep are
//!   `quichat-load`'s own, run as a child (`quichat-load` itself starts `quichat dev` as
//!   its child); its JSON is read back. Nothing of it is re-implemented here.
//! - [`drain`]: the offline drain with the `client` library, against a
//!   [`crate::load::server::Target`]: a `quichat dev` child, as `quichat-load` starts it,
//!   for the comparison (the tests use the in-process stack).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use client::{Client, Event, UserId};
use serde_json::Value;
use testkit::udp_proxy::{LinkConfig, ProxyConfig, UdpProxy};
use tokio::process::Command;
use tokio::task::JoinSet;

use super::DRAIN_IDLE_TIMEOUT;
use super::summary::{DrainSummary, DrainTally, Row};
use crate::load::cpu::CpuMeter;
use crate::load::message::Header;
use crate::load::run::RunOptions;
use crate::load::server::{DevProcess, EdgeAccess, Running, Target};
use crate::load::sweep::SweepPlan;

/// Bound on each drain phase, so a broken server cannot hang a run.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Sends awaiting `Accepted` while queueing the drain: under the client's outbox (1024),
/// which refuses more at once.
const OUTSTANDING_MAX: usize = 512;
/// Undelivered messages `quichat dev` keeps per recipient (the core's default
/// `inbox_max`; `quichat dev` has no flag to raise it).
pub const DEV_INBOX_MAX: u64 = 10_000;
/// Time allowed to a `quichat-load` run beyond its own send and drain time.
const RUN_SLACK: Duration = Duration::from_secs(120);

/// The executables this tool runs.
#[derive(Clone, Debug)]
pub struct QuichatBinaries {
    /// `quichat` (for `quichat dev`).
    pub quichat: PathBuf,
    /// `quichat-load`.
    pub quichat_load: PathBuf,
}

impl QuichatBinaries {
    /// `quichat-load` next to the running executable (cargo builds them into the same
    /// `target/<profile>/`), and `quichat` there too unless `quichat` names one.
    pub fn next_to_current_exe(quichat: Option<&Path>) -> Result<Self> {
        let quichat = DevProcess::find_binary(quichat)?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let name = format!("quichat-load{}", std::env::consts::EXE_SUFFIX);
        // Test executables live one level down, in `target/<profile>/deps/`.
        let quichat_load = exe
            .ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join(&name))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no `quichat-load` next to {}: build it with \
                     `cargo build --release -p quichat -p benches --features quichat/jemalloc` (the same profile)",
                    exe.display()
                )
            })?;
        Ok(Self {
            quichat,
            quichat_load,
        })
    }
}

/// The flags that make `quichat-load` run `options`.
fn load_args(options: &RunOptions) -> Vec<String> {
    vec![
        "--pairs".into(),
        options.pairs.to_string(),
        "--rate".into(),
        options.rate.to_string(),
        "--duration".into(),
        options.duration.as_secs_f64().to_string(),
        "--warmup".into(),
        options.warmup.as_secs_f64().to_string(),
        "--size".into(),
        options.size.to_string(),
        "--drain".into(),
        options.drain.as_secs_f64().to_string(),
        "--offline-share".into(),
        options.offline_share.to_string(),
        // No progress bar or table: this tool prints its own.
        "--quiet".into(),
    ]
}

/// One `quichat-load` run: the comparison row and its full JSON summary.
pub async fn run_load(
    quichat_load: &Path,
    options: &RunOptions,
    extra_args: &[String],
) -> Result<(Row, Value)> {
    let mut args = load_args(options);
    args.extend(extra_args.iter().cloned());
    let limit = options.warmup + options.duration + 2 * options.drain + RUN_SLACK;
    let json = run_json(quichat_load, &args, limit).await?;
    Ok((Row::from_summary_json("quichat", &json)?, json))
}

/// What `quichat-load --sweep` found.
#[derive(Clone, Debug)]
pub struct QuichatSweep {
    /// The highest rate that passed.
    pub best_rate: Option<f64>,
    /// Each run, with whether it passed.
    pub steps: Vec<(Row, bool)>,
    /// The tool's whole JSON report.
    pub json: Value,
}

/// `quichat-load --sweep` with `plan` and the latency target; its plots go to `plot_dir`.
pub async fn run_sweep(
    quichat_load: &Path,
    options: &RunOptions,
    plan: &SweepPlan,
    p99_target_ms: f64,
    plot_dir: &Path,
    extra_args: &[String],
) -> Result<QuichatSweep> {
    let mut args = load_args(&RunOptions {
        rate: plan.start_rate,
        ..options.clone()
    });
    args.extend([
        "--sweep".into(),
        "--p99-target-ms".into(),
        p99_target_ms.to_string(),
        "--sweep-factor".into(),
        plan.factor.to_string(),
        "--sweep-resolution".into(),
        plan.resolution.to_string(),
        "--sweep-runs".into(),
        plan.runs_max.to_string(),
        "--plot-dir".into(),
        plot_dir.display().to_string(),
    ]);
    args.extend(extra_args.iter().cloned());
    let per_run = options.warmup + options.duration + 2 * options.drain + RUN_SLACK;
    let json = run_json(quichat_load, &args, per_run * plan.runs_max.max(1) as u32).await?;
    let sweep = json
        .get("sweep")
        .context("quichat-load --sweep printed no `sweep` object")?;
    let mut steps = Vec::new();
    for step in sweep
        .get("steps")
        .and_then(Value::as_array)
        .context("the sweep has no `steps`")?
    {
        let summary = step
            .get("summary")
            .context("a sweep step has no `summary`")?;
        let passed = step
            .get("passed")
            .and_then(Value::as_bool)
            .context("a sweep step has no `passed`")?;
        steps.push((Row::from_summary_json("quichat", summary)?, passed));
    }
    Ok(QuichatSweep {
        best_rate: sweep.get("best_rate").and_then(Value::as_f64),
        steps,
        json,
    })
}

/// Runs `quichat-load` with `args` (within `limit`) and reads the JSON on its stdout.
async fn run_json(quichat_load: &Path, args: &[String], limit: Duration) -> Result<Value> {
    let mut command = Command::new(quichat_load);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("quichat-load ran over {limit:?}"))?
        .with_context(|| format!("running {}", quichat_load.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "quichat-load {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            tail(&stderr, 40)
        );
    }
    first_json_object(&stdout).with_context(|| {
        format!(
            "quichat-load printed no JSON summary; its stderr:\n{}",
            tail(&stderr, 40)
        )
    })
}

/// The first JSON object in `text` (tolerates lines before it).
fn first_json_object(text: &str) -> Result<Value> {
    let start = text.find('{').context("no '{'")?;
    let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    Ok(values.next().context("nothing after '{'")??)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Queues `messages` for a recipient who connected once before (so the core knows its
/// device and commits each message to disk before `Accepted`) and is now offline, then
/// reconnects it and times until every message has been shown once, in order — on a
/// fresh server started from `target`. With a `delay`, every client reaches the edge
/// through a UDP proxy that holds each datagram that long, each way (a player's
/// round trip of twice the delay; the edge↔core link is not delayed).
pub async fn drain(
    target: &Target,
    messages: u64,
    size: usize,
    delay: Duration,
) -> Result<DrainSummary> {
    if matches!(target, Target::Dev { .. }) && messages > DEV_INBOX_MAX {
        bail!(
            "quichat dev keeps at most {DEV_INBOX_MAX} undelivered messages per recipient \
             (the core's inbox_max, with no `quichat dev` flag): --drain must not exceed it"
        );
    }
    let running = target.start().await?;
    let result = drain_on(&running, messages, size, delay).await;
    running.shutdown().await;
    result
}

async fn drain_on(
    running: &Running,
    messages: u64,
    size: usize,
    delay: Duration,
) -> Result<DrainSummary> {
    let mut edge = running
        .edges
        .first()
        .cloned()
        .context("the server has no edge")?;
    let proxy = if delay.is_zero() {
        None
    } else {
        let link = LinkConfig {
            delay,
            ..LinkConfig::default()
        };
        let proxy = UdpProxy::start(ProxyConfig::new(edge.addr).with_links(link))
            .await
            .context("starting the delaying UDP proxy")?;
        edge.addr = proxy.local_addr();
        Some(proxy)
    };
    let result = drain_through(running, &edge, messages, size).await;
    if let Some(proxy) = proxy {
        proxy.shutdown().await;
    }
    result
}

async fn drain_through(
    running: &Running,
    edge: &EdgeAccess,
    messages: u64,
    size: usize,
) -> Result<DrainSummary> {
    let meter = CpuMeter::new(running.servers.clone());
    let recipient = UserId::new("drain-recipient")?;
    let sender = UserId::new("drain-sender")?;
    const RECIPIENT_DEVICE: u64 = 7;
    const SENDER_DEVICE: u64 = 8;

    // 1. The recipient's device becomes known, then goes offline.
    let (client, _events) = timed(
        "first connect",
        Client::connect(edge.client_config(&recipient, RECIPIENT_DEVICE)?),
    )
    .await?;
    client.close().await;

    // 2. The sender queues everything and waits until each message is safe.
    let queue_started = Instant::now();
    let (client, _sender_events) = timed(
        "sender connect",
        Client::connect(edge.client_config(&sender, SENDER_DEVICE)?),
    )
    .await?;
    timed("queueing", async {
        let mut answers = JoinSet::new();
        for seq in 0..messages {
            while answers.len() >= OUTSTANDING_MAX {
                answers.join_next().await.context("no answer task")???;
            }
            let header = Header {
                pair: 0,
                seq,
                intended_ns: 0,
                actual_ns: 0,
            };
            let pending = client.queue(&recipient, header.encode(size)).await?;
            answers.spawn(pending.accepted());
        }
        while let Some(answer) = answers.join_next().await {
            answer??;
        }
        anyhow::Ok(())
    })
    .await?;
    client.close().await;
    let queue_secs = queue_started.elapsed().as_secs_f64();

    // 3. The recipient comes back; the clock runs until the game has seen every message.
    let cpu_before = meter.sample()?;
    let started = Instant::now();
    let (client, mut events) = timed(
        "reconnect",
        Client::connect(edge.client_config(&recipient, RECIPIENT_DEVICE)?),
    )
    .await?;
    let mut summary = DrainSummary {
        system: "quichat".into(),
        messages,
        queue_secs,
        connect_ms: started.elapsed().as_secs_f64() * 1e3,
        ..DrainSummary::default()
    };
    let mut tally = DrainTally::new(started);
    timed("draining", async {
        while summary.received < messages {
            let Ok(event) = tokio::time::timeout(DRAIN_IDLE_TIMEOUT, events.next()).await else {
                break;
            };
            let Some(event) = event else {
                bail!("the client closed during the drain");
            };
            let Event::Message(message) = event else {
                continue;
            };
            let Some(header) = Header::decode(&message.text) else {
                continue;
            };
            tally.message(header.seq, &mut summary);
        }
        Ok(())
    })
    .await?;
    tally.finish(&mut summary);
    let cpu = meter.sample()?.since(&cpu_before);
    summary.server_cpu_ms = Some(cpu.server.as_secs_f64() * 1e3);
    summary.client_cpu_ms = Some(cpu.load_generator.as_secs_f64() * 1e3);
    // Let the last acknowledgements go out (bounded); the drain's figures are taken.
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
    summary.settle(&meter, &cpu_before).await?;
    Ok(summary)
}

/// Runs one drain phase within [`PHASE_TIMEOUT`].
async fn timed<T, E>(phase: &str, work: impl Future<Output = Result<T, E>>) -> Result<T>
where
    E: Into<anyhow::Error>,
{
    tokio::time::timeout(PHASE_TIMEOUT, work)
        .await
        .with_context(|| format!("quichat drain: {phase} took over {PHASE_TIMEOUT:?}"))?
        .map_err(Into::into)
        .with_context(|| format!("quichat drain: {phase}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_found_after_other_output() {
        // quichat-load may print notes before its JSON; the object is still found.
        let json = first_json_object("starting quichat dev\n{\"sent\": 3}\ntrailing\n").unwrap();
        assert_eq!(json["sent"], 3);
        assert!(first_json_object("no json here").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconnecting_recipient_is_shown_its_whole_backlog_once_in_order() {
        // The quichat drain must time the whole backlog, each message shown once and in
        // order (here on the in-process stack; the tool uses a `quichat dev` child).
        let target = Target::InProcess {
            edges: 1,
            link_linger_us: None,
        };
        let summary = drain(&target, 300, 64, Duration::ZERO).await.unwrap();
        assert!(summary.is_clean(), "{summary:?}");
        assert_eq!(
            (summary.system.as_str(), summary.received),
            ("quichat", 300)
        );
        summary.assert_timeline_and_cpu();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_over_a_delayed_path_waits_a_round_trip_per_exchange_and_loses_nothing() {
        // Through the delaying proxy: the backlog still arrives whole and in order, and
        // the reconnect takes at least its two round trips (the QUIC handshake, then
        // `Hello` → `Welcome`; about a millisecond on loopback), so the delay is on the
        // path each way.
        let target = Target::InProcess {
            edges: 1,
            link_linger_us: None,
        };
        let delay = Duration::from_millis(20);
        let summary = drain(&target, 300, 64, delay).await.unwrap();
        assert!(summary.is_clean(), "{summary:?}");
        assert_eq!(summary.received, 300);
        summary.assert_timeline_and_cpu();
        assert!(summary.connect_ms >= 4.0 * 20.0, "{summary:?}");
    }

    #[tokio::test]
    async fn a_drain_larger_than_quichat_devs_inbox_is_refused_up_front() {
        let target = Target::Dev {
            binary: PathBuf::from("/nonexistent/quichat"),
            log_filter: "warn".into(),
            link_linger_us: None,
            threads: None,
        };
        let error = drain(&target, DEV_INBOX_MAX + 1, 64, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("inbox_max"), "{error}");
    }

    #[test]
    fn quichat_load_is_asked_for_exactly_the_run_described() {
        // The two sides must run the same workload: every load parameter is passed on.
        let options = RunOptions {
            pairs: 7,
            rate: 1234.5,
            duration: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            size: 100,
            offline_share: 0.0,
            drain: Duration::from_secs(4),
            progress: false,
            label: String::new(),
            admission: None,
        };
        let args = load_args(&options).join(" ");
        assert_eq!(
            args,
            "--pairs 7 --rate 1234.5 --duration 3 --warmup 0.5 --size 100 --drain 4 \
             --offline-share 0 --quiet"
        );
    }
}
