//! `quichat-load`: N sender→recipient pairs of real clients over real QUIC against a
//! `quichat dev` child process (or an in-process stack, or any edge), open loop.
//!
//! Every message has an intended send time on a fixed schedule and its latency is
//! measured from that time to delivery, so a stall (in the server or in this tool) shows
//! up as latency instead of hiding as a lower send rate. Each message's text carries its
//! pair, sequence number and times, so recipients detect loss, duplicates and reordering
//! on their own. The server's CPU time per delivered message comes from `/proc`.
//! The pieces live in `benches::load`; this file is the command line.
//!
//! ```text
//! cargo build --release -p quichat -p benches --features quichat/jemalloc
//! target/release/quichat-load --pairs 50 --rate 5000 --duration 10
//! target/release/quichat-load --sweep
//! target/release/quichat-load --smoke
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use benches::load::message::HEADER_BYTES;
use benches::load::run::{RunOptions, run};
use benches::load::server::{DevProcess, EdgeAccess, Target};
use benches::load::summary::Summary;
use benches::load::sweep::{Sweep, SweepPlan};
use benches::plot::{self, Series};
use clap::Parser;

/// Load generator for quichat: N simulated players (each a real client connection) send
/// at an offered rate, open loop; reports latency from the intended send time (HDR
/// histogram), throughput, errors, lost/duplicated/reordered messages and the server's
/// CPU time per delivered message. JSON summary on stdout, a table on stderr.
///
/// By default it starts `quichat dev` (found next to this executable; build it with
/// `cargo build --release -p quichat`) as a child process on a temporary directory for
/// each run, so the server's CPU is measured apart from this tool's. `--in-process` runs
/// the stack inside this process instead; `--edge` targets any running edge.
#[derive(Debug, Parser)]
#[command(name = "quichat-load", verbatim_doc_comment)]
struct Args {
    /// Sender→recipient pairs (each side its own client connection and UDP socket).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Offered load, messages per second over all pairs (with --sweep: the first rate).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before the measurement (checked for loss, not timed).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Message size in bytes (at least 60: the header the tool needs).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Share of recipients (0..1) that connect only after sending ended: their messages
    /// are stored and replayed; reported apart from the online latency.
    #[arg(long, default_value_t = 0.0)]
    offline_share: f64,
    /// Seconds to wait after sending for the last answers and deliveries (and again for
    /// the offline recipients' backlog).
    #[arg(long, default_value_t = 10.0)]
    drain: f64,

    /// The `quichat` binary to start (default: the one next to this executable).
    #[arg(long, conflicts_with_all = ["in_process", "edge"])]
    quichat: Option<PathBuf>,
    /// RUST_LOG for the started `quichat dev` (its logging costs CPU that is counted).
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Run the core and edge(s) inside this process instead of a `quichat dev` child
    /// (server CPU then cannot be told apart from the load generator's).
    #[arg(long, conflicts_with = "edge")]
    in_process: bool,
    /// Edges, with --in-process (a pair's two sides on different edges when >1).
    #[arg(long, default_value_t = 1, requires = "in_process")]
    edges: usize,
    /// The edge↔core hold-back, µs, both ways, for the server this tool starts (`quichat
    /// dev --link-linger-us`, or the in-process stack); 0 turns it off, to compare the
    /// datagrams per message with and without it. Default: the server's own default.
    #[arg(long, conflicts_with = "edge")]
    link_linger_us: Option<u64>,
    /// Runtime threads of the `quichat dev` this tool starts (`quichat --threads`); 0
    /// leaves the server's default, one per core. One leaves the other core of a small
    /// machine to this tool.
    #[arg(long, default_value_t = benches::load::server::SERVER_THREADS_DEFAULT.get(), conflicts_with_all = ["edge", "in_process"])]
    server_threads: usize,
    /// The senders' admission target in ms: refuse sends (`Busy`) once the server's
    /// answers show a standing queue this long; 0 turns admission off. Default: the
    /// client library's (off).
    #[arg(long)]
    admission_ms: Option<u64>,
    /// Target a running edge at this address instead of starting one.
    #[arg(long, requires_all = ["cert", "token_secret"])]
    edge: Option<SocketAddr>,
    /// With --edge: the CA certificate (PEM) the edge's certificate chains to.
    #[arg(long, requires = "edge")]
    cert: Option<PathBuf>,
    /// With --edge: the file with the HS256 token secret the edge verifies tokens with.
    #[arg(long, requires = "edge")]
    token_secret: Option<PathBuf>,
    /// With --edge: the name on the edge's certificate.
    #[arg(long, default_value = transport::pki::DEV_SERVER_NAME, requires = "edge")]
    server_name: String,
    /// With --edge: a server process whose CPU time to measure (repeat for several).
    #[arg(long = "server-pid", requires = "edge")]
    server_pids: Vec<u32>,

    /// Find the highest rate with p99 (from the intended time) at most --p99-target-ms and
    /// nothing lost or refused: a geometric ramp from --rate, then bisection. A fresh
    /// server per run.
    #[arg(long, conflicts_with = "smoke")]
    sweep: bool,
    /// The sweep's latency target, ms.
    #[arg(long, default_value_t = 10.0)]
    p99_target_ms: f64,
    /// The sweep's ramp factor.
    #[arg(long, default_value_t = 2.0)]
    sweep_factor: f64,
    /// Stop bisecting when the bracket is this narrow (0.05 = 5 %).
    #[arg(long, default_value_t = 0.05)]
    sweep_resolution: f64,
    /// Most runs in a sweep.
    #[arg(long, default_value_t = 12)]
    sweep_runs: usize,
    /// Where the sweep writes its SVG plots.
    #[arg(long, default_value = "target/bench-plots")]
    plot_dir: PathBuf,

    /// A short self-check for CI: 5 pairs, 500 msg/s, 2 s, one offline recipient; exits
    /// non-zero unless every message arrived once and in order. Overrides the load flags.
    #[arg(long)]
    smoke: bool,
    /// No progress bar and no table (the JSON still goes to stdout).
    #[arg(long)]
    quiet: bool,
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
            eprintln!("quichat-load: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quichat-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(args: Args) -> Result<ExitCode> {
    let target = target(&args)?;
    let mut options = RunOptions {
        pairs: args.pairs,
        rate: args.rate,
        duration: secs(args.duration, "--duration")?,
        warmup: secs(args.warmup, "--warmup")?,
        size: args.size,
        offline_share: args.offline_share,
        drain: secs(args.drain, "--drain")?,
        progress: !args.quiet,
        label: String::new(),
        admission: args
            .admission_ms
            .map(|ms| (ms > 0).then(|| Duration::from_millis(ms))),
    };
    if args.smoke {
        options = RunOptions {
            pairs: 5,
            rate: 500.0,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            offline_share: 0.2,
            drain: Duration::from_secs(10),
            ..options
        };
    }
    if options.pairs == 0
        || options.rate.is_nan()
        || options.rate <= 0.0
        || options.size < HEADER_BYTES
    {
        bail!("need --pairs >= 1, --rate > 0 and --size >= {HEADER_BYTES}");
    }
    if !(0.0..=1.0).contains(&options.offline_share) {
        bail!("--offline-share must be between 0 and 1");
    }
    if args.sweep {
        return sweep(&args, &target, options).await;
    }
    let summary = run(&target, &options).await?;
    if !args.quiet {
        summary.write_table(&mut std::io::stderr().lock())?;
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if args.smoke {
        return Ok(smoke_verdict(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn target(args: &Args) -> Result<Target> {
    if args.in_process {
        return Ok(Target::InProcess {
            edges: args.edges,
            link_linger_us: args.link_linger_us,
        });
    }
    if let Some(addr) = args.edge {
        let (Some(cert), Some(secret)) = (&args.cert, &args.token_secret) else {
            bail!("--edge needs --cert and --token-secret");
        };
        return Ok(Target::External {
            edge: EdgeAccess::from_files(addr, &args.server_name, cert, secret)?,
            pids: args.server_pids.clone(),
        });
    }
    Ok(Target::Dev {
        binary: DevProcess::find_binary(args.quichat.as_deref())?,
        log_filter: args.server_log.clone(),
        link_linger_us: args.link_linger_us,
        threads: std::num::NonZeroUsize::new(args.server_threads),
    })
}

fn secs(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value}: not a duration"))
}

/// The smoke test's verdict: every accepted message delivered once, in order, nothing
/// refused, and latency actually measured.
fn smoke_verdict(summary: &Summary) -> ExitCode {
    let offline_complete = summary
        .offline
        .as_ref()
        .is_some_and(|o| o.expected > 0 && o.delivered == o.expected);
    if summary.is_clean()
        && summary.latency_us.samples > 0
        && summary.accepted == summary.sent
        && offline_complete
    {
        eprintln!("quichat-load smoke: ok");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "quichat-load smoke: FAILED (lost {}, errors {}, unanswered {}, duplicates {}, \
             out of order {}, offline complete: {offline_complete})",
            summary.lost,
            summary.errors,
            summary.unanswered,
            summary.duplicates_shown,
            summary.out_of_order
        );
        ExitCode::FAILURE
    }
}

async fn sweep(args: &Args, target: &Target, options: RunOptions) -> Result<ExitCode> {
    let p99_target_us = args.p99_target_ms * 1e3;
    let mut search = Sweep::new(SweepPlan {
        start_rate: options.rate,
        factor: args.sweep_factor.max(1.01),
        resolution: args.sweep_resolution.max(0.001),
        runs_max: args.sweep_runs.max(1),
        rate_min: 1.0,
    });
    if matches!(target, Target::External { .. }) {
        eprintln!(
            "note: against an external edge every sweep run shares the same server (and \
             its store); runs are only as independent as it is"
        );
    }
    let mut steps: Vec<(Summary, bool)> = Vec::new();
    let mut step = 0;
    while let Some(rate) = search.next_rate() {
        step += 1;
        let run_options = RunOptions {
            rate,
            label: format!("sweep {step}"),
            ..options.clone()
        };
        let summary = run(target, &run_options).await?;
        let passed = summary.passes(p99_target_us);
        search.record(rate, passed);
        if !args.quiet {
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "sweep {step}: {rate:>9.0} msg/s offered  {:>9.0} delivered/s  p50 {:>8.0} µs  \
                 p99 {:>8.0} µs  lost {}  errors {}  server CPU {}  {}",
                summary.throughput_msgs_per_sec,
                summary.latency_us.p50,
                summary.latency_us.p99,
                summary.lost,
                summary.errors,
                summary
                    .cpu
                    .as_ref()
                    .and_then(|c| c.server_us_per_message)
                    .map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs/msg")),
                if passed { "pass" } else { "FAIL" },
            )?;
        }
        steps.push((summary, passed));
    }
    let plots = match write_plots(&args.plot_dir, &steps, args.p99_target_ms) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("quichat-load: plots not written: {e:#}");
            Vec::new()
        }
    };
    if !args.quiet {
        match search.best() {
            Some(best) => eprintln!(
                "highest rate with p99 <= {} ms and nothing lost: {best:.0} msg/s \
                 (first failing: {})",
                args.p99_target_ms,
                search
                    .first_failed()
                    .map_or_else(|| "none".to_owned(), |f| format!("{f:.0} msg/s"))
            ),
            None => eprintln!(
                "no rate met p99 <= {} ms with nothing lost",
                args.p99_target_ms
            ),
        }
        for path in &plots {
            eprintln!("plot: {}", path.display());
        }
    }
    let report = serde_json::json!({
        "sweep": {
            "p99_target_ms": args.p99_target_ms,
            "best_rate": search.best(),
            "first_failed_rate": search.first_failed(),
            "plots": plots,
            "steps": steps
                .iter()
                .map(|(summary, passed)| serde_json::json!({ "passed": passed, "summary": summary }))
                .collect::<Vec<_>>(),
        }
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The sweep's two plots: latency against offered rate (log scale) and delivered against
/// offered rate.
fn write_plots(dir: &Path, steps: &[(Summary, bool)], p99_target_ms: f64) -> Result<Vec<PathBuf>> {
    let mut by_rate: Vec<&Summary> = steps.iter().map(|(s, _)| s).collect();
    by_rate.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    let series = |name: &str, y: fn(&Summary) -> f64| Series {
        name: name.to_owned(),
        points: by_rate
            .iter()
            .map(|s| (s.offered_rate, y(s)))
            .filter(|&(_, y)| y > 0.0)
            .collect(),
    };
    let latency = dir.join("load-sweep-latency.svg");
    plot::line_chart(
        &latency,
        &format!("quichat-load: latency from intended send (target p99 {p99_target_ms} ms)"),
        "offered rate (msg/s)",
        "latency (ms)",
        &[
            series("p50", |s| s.latency_us.p50 / 1e3),
            series("p99", |s| s.latency_us.p99 / 1e3),
            series("p99.9", |s| s.latency_us.p999 / 1e3),
        ],
        true,
    )?;
    let throughput = dir.join("load-sweep-throughput.svg");
    plot::line_chart(
        &throughput,
        "quichat-load: delivered against offered",
        "offered rate (msg/s)",
        "msg/s",
        &[
            series("offered", |s| s.offered_rate),
            series("delivered to online recipients", |s| {
                s.throughput_msgs_per_sec
            }),
        ],
        false,
    )?;
    Ok(vec![latency, throughput])
}
