//! `quichat-vs-mosquitto`: quichat beside mosquitto, the MQTT broker many games use, on
//! the same workload, on the same machine, in one run.
//!
//! - `--rate R`: the online workload (N pairs, open loop) at one offered rate through
//!   quichat (`quichat-load`, a child process), mosquitto over TLS and mosquitto over
//!   plain TCP; a table and the ratios quichat/mosquitto.
//! - `--sweep`: for each system, the highest offered rate with p99 <= 10 ms and nothing
//!   lost (the same search for every system), and the ratio of those rates.
//! - `--drain N`: N messages queued for an offline recipient, then the time until it has
//!   them all after reconnecting. The quichat server runs with its default runtime
//!   threads (one per core) here, unlike the load modes, which give it one (see
//!   `--drain-threads`). `--drain-runs R` repeats the round of systems R times and
//!   gives quichat's median speed-up. `--drain-delay-ms D` delays every client↔server
//!   path by D each way (a round trip of 2D, as on a player's connection): quichat's
//!   clients through a delaying UDP proxy, mosquitto's TCP packets in the kernel's
//!   packet queue, for which the run moves into a network namespace (`lossy-netns`,
//!   root).
//! - `--smoke`: small versions of all three, exiting non-zero on any loss.
//!
//! JSON summary on stdout, tables on stderr. The pieces live in `benches::mqtt`; this
//! file is the command line. See `docs/bench/mosquitto.md`.
//!
//! ```text
//! cargo build --profile production -p quichat -p benches --features quichat/jemalloc
//! target/production/quichat-vs-mosquitto --rate 5000 --sweep --drain 10000 --drain-runs 6
//! ```

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use benches::hol::mqtt as mqtt_cell;
use benches::hol::tcp_delay::TcpDelay;
use benches::load::run::RunOptions;
use benches::load::server::Target;
use benches::load::sweep::{Sweep, SweepPlan};
use benches::mqtt::client::INFLIGHT_DEFAULT;
use benches::mqtt::quichat_side::{self, QuichatBinaries};
use benches::mqtt::report::{self, DrainRatios, DrainSpeedups, OnlineRatios};
use benches::mqtt::{
    BrokerOptions, DURABILITY_NOTE, DrainSummary, Mosquitto, MqttTransport, Row, drain, load,
};
use benches::plot::{self, Series};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

/// The kernel packet queue the drain's TCP delay uses (its namespace is its own).
const TCP_DELAY_QUEUE: u16 = 0;

/// quichat beside mosquitto (MQTT 3.1.1, QoS 1, persistent sessions; over TLS and over
/// plain TCP) on the same workload, on the same machine, in one run.
///
/// The online workload is quichat-load's: N sender→recipient pairs, each side its own
/// client connection, an open-loop schedule at the offered rate, latency measured from
/// each message's intended send time. quichat runs as `quichat-load` (a child process,
/// which starts `quichat dev` as its own child); mosquitto is started on loopback from a
/// config this tool writes, and driven by rumqttc clients in this process with
/// quichat-load's own pacer, tallies and CPU meter.
///
/// Modes (combine freely; at least one):
///   --rate R     one comparison at R msg/s: table and ratios quichat/mosquitto
///   --sweep      highest rate with p99 <= --p99-target-ms and nothing lost, per system
///   --drain N    time for a reconnecting recipient to receive N queued messages
///                (--drain-runs R: R rounds, and the median speed-up;
///                --drain-delay-ms D: over a path delayed D ms each way)
///   --smoke      5 pairs, 2 s, a one-step sweep, drain 500; exit non-zero on any loss
///
/// Needs `quichat` and `quichat-load` next to this executable
/// (`cargo build --release -p quichat -p benches --features quichat/jemalloc`) and mosquitto
/// (`apt-get install -y mosquitto`).
///
/// Note: mosquitto's QoS 1 PUBACK does not mean the message is on disk (persistence
/// writes only at autosave_interval or shutdown); quichat's Accepted means fsync'd or in
/// the recipient's hands.
#[derive(Debug, Parser)]
#[command(name = "quichat-vs-mosquitto", verbatim_doc_comment)]
struct Args {
    /// Compare at this offered rate (messages per second over all pairs).
    #[arg(long)]
    rate: Option<f64>,
    /// Find each system's highest rate with p99 <= --p99-target-ms and nothing lost.
    #[arg(long)]
    sweep: bool,
    /// Offline drain: messages queued for the reconnecting recipient (quichat dev keeps
    /// at most 10,000 per recipient).
    #[arg(long, value_name = "N")]
    drain: Option<u64>,
    /// Runtime threads of the `quichat dev` child in the drain (default: its own, one per
    /// core). The load modes give it one, so the load generator keeps the other core; a
    /// drain is one client catching up, and runs the server as an operator would.
    #[arg(long, value_name = "N")]
    drain_threads: Option<NonZeroUsize>,
    /// Rounds of the drain: each round drains every system once, in turn, each on a fresh
    /// server, and the summary gives quichat's median speed-up over the rounds. Several
    /// rounds in one run tell the systems apart from this machine's slow and fast spells.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::MIN)]
    drain_runs: NonZeroUsize,
    /// Delay, in ms, on every client↔server path of the drain, each way (a round trip of
    /// twice this), as on a player's home or mobile connection. quichat's clients reach
    /// the edge through a delaying UDP proxy (the edge↔core link is not delayed);
    /// mosquitto's TCP packets are held in the kernel's packet queue, for which the run
    /// moves into a network namespace made by lossy-netns (no loss; needs root,
    /// iptables, nftables). The drain alone: not with --rate, --sweep or --smoke.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    drain_delay_ms: u64,
    /// The lossy-netns script (default: ../shared/tools/lossy-netns next to the workspace).
    #[arg(long = "lossy-netns", value_name = "PATH")]
    lossy_netns: Option<PathBuf>,
    /// Set by the run that moved itself into the namespace (see --drain-delay-ms).
    #[arg(long, hide = true)]
    in_netns: bool,
    /// Small versions of every mode (seconds); exit non-zero on any loss. Overrides the
    /// load flags.
    #[arg(long)]
    smoke: bool,

    /// Sender→recipient pairs (each side its own connection).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before the measurement (checked, not timed).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Message size in bytes (at least 60).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to wait after sending for the last answers and deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain_wait: f64,

    /// The sweep's latency target: p99 from the intended send time, ms.
    #[arg(long, default_value_t = 10.0)]
    p99_target_ms: f64,
    /// The sweep's first rate.
    #[arg(long, default_value_t = 1000.0)]
    sweep_start: f64,
    /// The sweep's ramp factor.
    #[arg(long, default_value_t = 2.0)]
    sweep_factor: f64,
    /// Stop bisecting when the bracket is this narrow (0.05 = 5 %).
    #[arg(long, default_value_t = 0.05)]
    sweep_resolution: f64,
    /// Most runs per system in a sweep.
    #[arg(long, default_value_t = 12)]
    sweep_runs: usize,
    /// Where the sweep writes its SVG plots.
    #[arg(long, default_value = "target/bench-plots/vs-mosquitto")]
    plot_dir: PathBuf,

    /// Which systems to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "quichat,mosquitto-tls,mosquitto-tcp"
    )]
    systems: Vec<System>,
    /// QoS 1 publishes in flight per MQTT client (quichat's outbox holds 1024).
    #[arg(long, default_value_t = INFLIGHT_DEFAULT)]
    inflight: u16,
    /// mosquitto's `max_inflight_messages` per client (0: no limit; its default is 20).
    #[arg(long, default_value_t = 0)]
    mqtt_max_inflight: u32,
    /// mosquitto's `max_queued_messages` per client (its default, 1000, drops QoS 1
    /// messages beyond it).
    #[arg(long, default_value_t = 10_000_000)]
    mqtt_max_queued: u64,
    /// The mosquitto executable.
    #[arg(long, default_value = benches::mqtt::broker::MOSQUITTO_BIN_DEFAULT)]
    mosquitto: PathBuf,
    /// An extra argument for every `quichat-load` run (repeatable), e.g.
    /// `--quichat-load-arg=--server-log --quichat-load-arg=info`.
    #[arg(long = "quichat-load-arg", allow_hyphen_values = true)]
    quichat_load_args: Vec<String>,
    /// The `quichat` binary to run as the server (default: the one next to this
    /// executable), for the drain and, through `quichat-load`, the online runs: how two
    /// builds are compared against the same tools.
    #[arg(long, value_name = "PATH")]
    quichat: Option<PathBuf>,
}

impl Args {
    /// Whether any mosquitto variant runs.
    fn runs_mosquitto(&self) -> bool {
        self.systems.iter().any(|s| s.transport().is_some())
    }
}

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    /// quichat, through `quichat-load` (QUIC, TLS 1.3).
    Quichat,
    /// mosquitto over TLS.
    MosquittoTls,
    /// mosquitto over plain TCP.
    MosquittoTcp,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Quichat => "quichat",
            System::MosquittoTls => MqttTransport::Tls.name(),
            System::MosquittoTcp => MqttTransport::Tcp.name(),
        }
    }

    fn transport(self) -> Option<MqttTransport> {
        match self {
            System::Quichat => None,
            System::MosquittoTls => Some(MqttTransport::Tls),
            System::MosquittoTcp => Some(MqttTransport::Tcp),
        }
    }
}

/// What every run needs.
struct Context {
    args: Args,
    binaries: Option<QuichatBinaries>,
    broker: BrokerOptions,
}

impl Context {
    fn binaries(&self) -> Result<&QuichatBinaries> {
        self.binaries
            .as_ref()
            .context("quichat's executables were not looked up")
    }

    /// The delay on each client↔server path of the drain, each way.
    fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.args.drain_delay_ms)
    }

    /// The load options at `rate`, as `quichat-load` takes them.
    fn options(&self, rate: f64) -> Result<RunOptions> {
        let secs = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .with_context(|| format!("{flag} {value}: not a duration"))
        };
        Ok(RunOptions {
            pairs: self.args.pairs,
            rate,
            duration: secs(self.args.duration, "--duration")?,
            warmup: secs(self.args.warmup, "--warmup")?,
            size: self.args.size,
            offline_share: 0.0,
            drain: secs(self.args.drain_wait, "--drain-wait")?,
            progress: false,
            label: String::new(),
            admission: None,
        })
    }

    fn plan(&self) -> SweepPlan {
        SweepPlan {
            start_rate: self.args.sweep_start,
            factor: self.args.sweep_factor.max(1.01),
            resolution: self.args.sweep_resolution.max(0.001),
            runs_max: self.args.sweep_runs.max(1),
            rate_min: 1.0,
        }
    }

    /// One online run of a mosquitto variant on a fresh broker: its row and full summary.
    async fn mosquitto_run(
        &self,
        transport: MqttTransport,
        options: &RunOptions,
    ) -> Result<(Row, Value)> {
        let broker = Mosquitto::start(&self.broker)?;
        let summary = load::run(&broker, transport, options, self.args.inflight).await?;
        let json = serde_json::to_value(&summary)?;
        Ok((Row::from_summary_json(transport.name(), &json)?, json))
    }

    /// One online run of `system`, on a fresh server.
    async fn online(&self, system: System, options: &RunOptions) -> Result<(Row, Value)> {
        eprintln!(
            "{} at {} msg/s ({} pairs, {} s)...",
            system.name(),
            options.rate,
            options.pairs,
            options.duration.as_secs_f64()
        );
        match system.transport() {
            None => {
                quichat_side::run_load(
                    &self.binaries()?.quichat_load,
                    options,
                    &self.args.quichat_load_args,
                )
                .await
            }
            Some(transport) => self.mosquitto_run(transport, options).await,
        }
    }

    /// One offline drain of `system`, on a fresh server.
    async fn drain(&self, system: System, messages: u64) -> Result<DrainSummary> {
        eprintln!("{}: draining {messages} queued messages...", system.name());
        match system.transport() {
            None => {
                let target = Target::Dev {
                    binary: self.binaries()?.quichat.clone(),
                    log_filter: "warn".into(),
                    link_linger_us: None,
                    threads: self.args.drain_threads,
                };
                quichat_side::drain(&target, messages, self.args.size, self.drain_delay()).await
            }
            Some(transport) => {
                let broker = Mosquitto::start(&self.broker)?;
                drain::run(
                    &broker,
                    transport,
                    messages,
                    self.args.size,
                    self.args.inflight,
                )
                .await
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("quichat-vs-mosquitto: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quichat-vs-mosquitto: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(mut args: Args) -> Result<ExitCode> {
    if args.smoke {
        args.pairs = 5;
        args.duration = 2.0;
        args.warmup = 0.5;
        args.drain_wait = 5.0;
        args.rate = Some(args.rate.unwrap_or(500.0));
        args.drain = Some(args.drain.unwrap_or(500));
        args.sweep = true;
        // One step per system: enough to exercise the sweep end to end in seconds.
        args.sweep_start = 500.0;
        args.sweep_runs = 1;
    }
    if args.rate.is_none() && !args.sweep && args.drain.is_none() {
        bail!("choose at least one of --rate R, --sweep, --drain N, --smoke (see --help)");
    }
    if args.systems.is_empty() {
        bail!("--systems is empty");
    }
    if args.drain_delay_ms > 0 {
        if args.rate.is_some() || args.sweep || args.drain.is_none() {
            bail!(
                "--drain-delay-ms delays the drain alone: give --drain N, without --rate, \
                 --sweep or --smoke"
            );
        }
        if args.runs_mosquitto() && !args.in_netns {
            return rerun_in_namespace(&args).await;
        }
    }
    if let Some(quichat) = &args.quichat {
        // The online runs start the server through `quichat-load`.
        args.quichat_load_args
            .extend(["--quichat".to_owned(), quichat.display().to_string()]);
    }
    let binaries = if args.systems.contains(&System::Quichat) {
        Some(QuichatBinaries::next_to_current_exe(
            args.quichat.as_deref(),
        )?)
    } else {
        None
    };
    let broker = BrokerOptions {
        binary: args.mosquitto.clone(),
        max_inflight_messages: args.mqtt_max_inflight,
        max_queued_messages: args.mqtt_max_queued,
    };
    let ctx = Context {
        args,
        binaries,
        broker,
    };
    ctx.options(1.0)?;

    let mut output = json!({
        "tool": "quichat-vs-mosquitto",
        "note": DURABILITY_NOTE,
        "params": {
            "pairs": ctx.args.pairs,
            "duration_secs": ctx.args.duration,
            "warmup_secs": ctx.args.warmup,
            "size": ctx.args.size,
            "drain_wait_secs": ctx.args.drain_wait,
            "drain_delay_ms": ctx.args.drain_delay_ms,
            "systems": ctx.args.systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "mqtt_client_inflight": ctx.args.inflight,
            "mosquitto_max_inflight_messages": ctx.args.mqtt_max_inflight,
            "mosquitto_max_queued_messages": ctx.args.mqtt_max_queued,
        },
    });
    // Every run that lost, refused, duplicated or reordered a message.
    let mut unclean = Vec::new();

    if let Some(rate) = ctx.args.rate {
        let (value, bad) = compare(&ctx, rate).await?;
        output["compare"] = value;
        unclean.extend(bad);
    }
    if ctx.args.sweep {
        let (value, bad) = sweep(&ctx).await?;
        output["sweep"] = value;
        unclean.extend(bad);
    }
    if let Some(messages) = ctx.args.drain {
        let (value, bad) = drains(&ctx, messages).await?;
        output["drain"] = value;
        unclean.extend(bad);
    }

    output["clean"] = json!(unclean.is_empty());
    output["unclean_runs"] = json!(unclean);
    println!("{}", serde_json::to_string_pretty(&output)?);
    if unclean.is_empty() {
        if ctx.args.smoke {
            eprintln!("quichat-vs-mosquitto smoke: ok");
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "lost, refused, unanswered, duplicated or reordered messages in: {}",
        unclean.join(", ")
    );
    if ctx.args.smoke {
        eprintln!("quichat-vs-mosquitto smoke: FAILED");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every system at one rate, and quichat's ratios to each mosquitto variant.
async fn compare(ctx: &Context, rate: f64) -> Result<(Value, Vec<String>)> {
    let options = ctx.options(rate)?;
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    let mut unclean = Vec::new();
    for &system in &ctx.args.systems {
        let (row, summary) = ctx.online(system, &options).await?;
        if !row.is_clean() {
            unclean.push(format!("{} at {rate} msg/s", row.system));
        }
        rows.push(row);
        summaries.push(json!({ "system": system.name(), "summary": summary }));
    }
    let ratios: Vec<OnlineRatios> = match rows.iter().find(|r| r.system == "quichat") {
        Some(q) => rows
            .iter()
            .filter(|r| r.system != "quichat")
            .map(|m| OnlineRatios::of(q, m))
            .collect(),
        None => Vec::new(),
    };
    let title = format!(
        "online: {rate} msg/s offered, {} pairs, {} B, {} s measured (+{} s warm-up)",
        ctx.args.pairs, ctx.args.size, ctx.args.duration, ctx.args.warmup
    );
    eprint!("\n{}\n", report::online_table(&title, &rows, &ratios));
    Ok((
        json!({ "rate": rate, "rows": rows, "ratios": ratios, "summaries": summaries }),
        unclean,
    ))
}

/// The sweep for every system: `quichat-load --sweep` for quichat, the same search
/// ([`Sweep`], same plan, same bar) here for mosquitto.
async fn sweep(ctx: &Context) -> Result<(Value, Vec<String>)> {
    let plan = ctx.plan();
    let p99_target_us = ctx.args.p99_target_ms * 1e3;
    let mut options = ctx.options(plan.start_rate)?;
    if ctx.args.smoke {
        options.duration = Duration::from_secs(1);
        options.warmup = Duration::from_millis(250);
    }
    let mut systems = Vec::new();
    let mut best = Vec::new();
    let mut series = Vec::new();
    let mut unclean = Vec::new();
    for &system in &ctx.args.systems {
        let (steps, best_rate) = match system.transport() {
            None => {
                eprintln!(
                    "quichat: quichat-load --sweep from {} msg/s...",
                    plan.start_rate
                );
                let found = quichat_side::run_sweep(
                    &ctx.binaries()?.quichat_load,
                    &options,
                    &plan,
                    ctx.args.p99_target_ms,
                    &ctx.args.plot_dir.join("quichat-load"),
                    &ctx.args.quichat_load_args,
                )
                .await?;
                (found.steps, found.best_rate)
            }
            Some(_) => {
                let mut search = Sweep::new(plan);
                let mut steps = Vec::new();
                while let Some(rate) = search.next_rate() {
                    let (row, _) = ctx
                        .online(
                            system,
                            &RunOptions {
                                rate,
                                ..options.clone()
                            },
                        )
                        .await?;
                    let passed = row.passes(p99_target_us);
                    search.record(rate, passed);
                    steps.push((row, passed));
                }
                (steps, search.best())
            }
        };
        for (row, passed) in &steps {
            eprintln!(
                "  {} at {:.0} msg/s: delivered {:.0}/s, p99 {:.3} ms, lost {}, errors {} -> {}",
                row.system,
                row.offered_rate,
                row.throughput_msgs_per_sec,
                row.latency_us.p99 / 1e3,
                row.lost,
                row.errors,
                if *passed { "pass" } else { "fail" }
            );
            if !row.is_clean() && ctx.args.smoke {
                unclean.push(format!(
                    "{} sweep at {} msg/s",
                    row.system, row.offered_rate
                ));
            }
        }
        let mut points: Vec<(f64, f64)> = steps
            .iter()
            .map(|(r, _)| (r.offered_rate, r.latency_us.p99 / 1e3))
            .filter(|&(_, p99)| p99 > 0.0)
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            name: system.name().into(),
            points,
        });
        best.push((system.name().to_owned(), best_rate));
        systems.push(json!({
            "system": system.name(),
            "best_rate": best_rate,
            "steps": steps
                .iter()
                .map(|(row, passed)| json!({ "passed": passed, "row": row }))
                .collect::<Vec<_>>(),
        }));
    }
    let quichat_best = best
        .iter()
        .find(|(s, _)| s == "quichat")
        .and_then(|(_, r)| *r);
    let ratios: Vec<Value> = best
        .iter()
        .filter(|(s, _)| s != "quichat")
        .map(|(s, r)| json!({ "versus": s, "best_rate_ratio": report::ratio(quichat_best, *r) }))
        .collect();
    eprint!(
        "\n{}\n",
        report::sweep_table(ctx.args.p99_target_ms, &best, quichat_best)
    );
    let chart = ctx.args.plot_dir.join("p99-vs-rate.svg");
    let chart = match plot::line_chart(
        &chart,
        &format!(
            "p99 latency from intended send against offered rate (target {} ms)",
            ctx.args.p99_target_ms
        ),
        "offered rate (msg/s)",
        "p99 latency (ms)",
        &series,
        true,
    ) {
        Ok(()) => {
            eprintln!("plot: {}", chart.display());
            Some(chart)
        }
        Err(e) => {
            eprintln!("quichat-vs-mosquitto: plot not written: {e:#}");
            None
        }
    };
    Ok((
        json!({
            "p99_target_ms": ctx.args.p99_target_ms,
            "plan": {
                "start_rate": plan.start_rate,
                "factor": plan.factor,
                "resolution": plan.resolution,
                "runs_max": plan.runs_max,
            },
            "systems": systems,
            "ratios": ratios,
            "plot": chart,
        }),
        unclean,
    ))
}

/// The offline drain for every system, and quichat's speed-up over each mosquitto.
async fn drains(ctx: &Context, messages: u64) -> Result<(Value, Vec<String>)> {
    // mosquitto's side of the delay: every TCP packet in this namespace (only the MQTT
    // clients and the broker use TCP here), each way.
    let tcp_delay =
        if ctx.args.in_netns && ctx.args.runs_mosquitto() && !ctx.drain_delay().is_zero() {
            // The rule holds every TCP packet of the namespace: never add it to a machine's
            // own (a hand-typed `--in-netns`).
            if !only_loopback()? {
                bail!("--in-netns outside a namespace of its own: it has interfaces besides lo");
            }
            Some(TcpDelay::start(TCP_DELAY_QUEUE, ctx.drain_delay())?)
        } else {
            None
        };
    let result = drain_rounds(ctx, messages).await;
    let delayed = match tcp_delay {
        Some(delay) => Some(delay.stop()?),
        None => None,
    };
    let (mut value, unclean) = result?;
    value["delay_ms_each_way"] = json!(ctx.args.drain_delay_ms);
    if let Some(stats) = delayed {
        eprintln!(
            "drain: mosquitto's TCP packets delayed: {}, released at most {:.2} ms late",
            stats.packets, stats.late_ms_max
        );
        value["tcp_delay"] = json!(stats);
    }
    Ok((value, unclean))
}

/// Whether this process's network namespace has no interface but loopback, as the one
/// lossy-netns makes.
fn only_loopback() -> Result<bool> {
    let dev =
        std::fs::read_to_string("/proc/self/net/dev").context("reading /proc/self/net/dev")?;
    // Two header lines, then one line per interface: `name: counters…`.
    Ok(dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .all(|name| name.trim() == "lo"))
}

/// Moves this run into a network namespace made by lossy-netns (no loss), where it may
/// delay TCP packets without touching the machine's own firewall: the same command line,
/// marked `--in-netns`. Its output is this run's.
async fn rerun_in_namespace(args: &Args) -> Result<ExitCode> {
    let lossy_netns = mqtt_cell::lossy_netns_path(args.lossy_netns.as_deref());
    if let Some(reason) = mqtt_cell::unavailable(&lossy_netns, &args.mosquitto) {
        bail!(
            "--drain-delay-ms with mosquitto needs a network namespace: {reason} \
             (--systems quichat runs without one)"
        );
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    let status = tokio::process::Command::new(&lossy_netns)
        .args(["0", "tcp", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .arg("--in-netns")
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("starting {}", lossy_netns.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Every round of the drain.
async fn drain_rounds(ctx: &Context, messages: u64) -> Result<(Value, Vec<String>)> {
    let mut runs = Vec::new();
    let mut ratios: Vec<DrainRatios> = Vec::new();
    let mut unclean = Vec::new();
    for round in 1..=ctx.args.drain_runs.get() {
        let round = u32::try_from(round).unwrap_or(u32::MAX);
        let mut this_round = Vec::new();
        for &system in &ctx.args.systems {
            let mut run = ctx.drain(system, messages).await?;
            run.round = round;
            if !run.is_clean() {
                unclean.push(format!("{} drain (round {round})", run.system));
            }
            this_round.push(run);
        }
        if let Some(q) = this_round.iter().find(|r| r.system == "quichat") {
            ratios.extend(
                this_round
                    .iter()
                    .filter(|r| r.system != "quichat")
                    .map(|m| DrainRatios::of(q, m)),
            );
        }
        runs.extend(this_round);
    }
    let speedups = DrainSpeedups::of(&ratios);
    eprint!("\n{}\n", report::drain_table(&runs, &ratios, &speedups));
    let setup = "quichat: the recipient connected once before (its device is known, so each \
                 message is committed to disk before Accepted), then went offline; mosquitto: \
                 a persistent session (clean_session false) subscribed at QoS 1, then \
                 disconnected. The clock runs from the recipient's reconnect to its last \
                 message.";
    let threads = benches::load::server::threads_note(ctx.args.drain_threads);
    eprintln!("drain: {threads}");
    if ctx.args.drain_delay_ms > 0 {
        eprintln!(
            "drain: every client↔server path delayed {} ms each way",
            ctx.args.drain_delay_ms
        );
    }
    Ok((
        json!({
            "messages": messages,
            "setup": setup,
            "quichat_threads": threads,
            "runs": runs,
            "ratios": ratios,
            "speedups": speedups,
        }),
        unclean,
    ))
}
