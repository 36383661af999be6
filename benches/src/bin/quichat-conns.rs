//! `quichat-conns`: memory per idle client connection at the edge, and handshakes per
//! second.
//!
//! The servers run as child processes (`quichat core` + `quichat edge` by default, or
//! `quichat dev`), so each one's resident set size can be read from `/proc/<pid>/status`.
//! The tool reads it with no client connected, then connects clients in steps (default
//! 1 000, then 10 000 in all), each a full QUIC handshake plus `Hello`/`Welcome` with its
//! own token and its lanes opened, with a bounded number of handshakes in flight. Many
//! connections share one UDP socket (100 by default), so 10 000 clients fit in the
//! machine's open-file limit. After each step it waits for every session to be attached
//! at the core (`Synced`), lets things settle, and reads the servers' memory again: the
//! increase over the baseline divided by the clients is the cost of one idle connection.
//!
//! At the end the clients stay idle for longer than the idle timeout (20 s; keep-alives
//! every 5 s), then the tool checks that every connection is still open and sends a few
//! messages through random ones: a figure measured on connections that quietly died
//! would mean nothing.
//!
//! ```text
//! cargo build --release -p quichat -p benches --features quichat/jemalloc
//! target/release/quichat-conns                # 1k and 10k clients, split topology
//! target/release/quichat-conns --smoke        # 200 clients, a few seconds
//! ```
//!
//! JSON summary on standard output, a table on standard error. Exits non-zero if a client
//! failed to connect, a session was not attached, a connection closed, or a liveness
//! message was lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use benches::conns::raw_client::Dialer;
use benches::conns::servers::{ServerOptions, Servers, Topology, own_rss_kib, udp_rcvbuf_errors};
use benches::conns::{self, Liveness};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// `quichat dev` does not take a connection limit; this is the edge's default.
const DEV_MAX_CONNECTIONS: usize = 10_000;
/// How long every session has to be attached at the core after its `Welcome`.
const SYNCED_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on each step of the liveness check (send, accepted, delivered).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "quichat-conns",
    about = "Memory per idle client connection at the edge, and handshakes per second",
    long_about = "Starts the quichat servers as child processes, connects idle clients in \
                  steps (cumulative), and reads each server's resident memory \
                  (/proc/<pid>/status VmRSS) with 0 clients and after each step: the increase \
                  per client is the cost of one idle connection. Handshakes per second and the \
                  handshake time (QUIC + Hello/Welcome) come from the same run. After the last \
                  step the clients stay idle past the idle timeout, then every connection must \
                  still be open and a few messages must get through. JSON summary on stdout, \
                  table on stderr."
)]
struct Args {
    /// Total connected clients after each step, ascending (cumulative: "1000,10000"
    /// connects 1 000, measures, then 9 000 more).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    clients: Vec<usize>,
    /// Client connections sharing one UDP socket.
    #[arg(long, default_value_t = 100)]
    per_endpoint: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to wait after a step before reading memory.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Seconds the clients stay idle after the last step before the final reading and the
    /// liveness check (longer than the 20 s idle timeout, so dead connections show).
    #[arg(long, default_value_t = 25.0)]
    idle: f64,
    /// Messages sent through random connections at the end.
    #[arg(long, default_value_t = 10)]
    check: usize,
    /// Which server processes: `split` (quichat core + quichat edge; the edge's memory
    /// alone) or `dev` (quichat dev: both in one process, at most 10 000 clients).
    #[arg(long, value_enum, default_value_t = Topology::Split)]
    topology: Topology,
    /// The quichat binary (default: `quichat` next to this program).
    #[arg(long)]
    quichat: Option<PathBuf>,
    /// Seconds one client has to complete its handshake.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// `RUST_LOG` for the server processes.
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// An extra argument for `quichat edge` (or `quichat dev` with `--topology dev`),
    /// repeatable, for experiments: `--edge-arg=--lanes --edge-arg=1`.
    #[arg(long, allow_hyphen_values = true)]
    edge_arg: Vec<String>,
    /// An extra environment variable for the server processes, `KEY=VALUE`, repeatable
    /// (e.g. `--server-env MALLOC_ARENA_MAX=2`).
    #[arg(long, value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// A quick correctness run: 200 clients, short pauses; exits non-zero on any failure.
    #[arg(long)]
    smoke: bool,
}

/// One step's results.
struct Step {
    clients: usize,
    failed: usize,
    reasons: Vec<String>,
    not_synced: usize,
    elapsed: Duration,
    welcome_us: Histogram<u64>,
    rss_kib: Vec<(&'static str, u64)>,
    generator_rss_kib: u64,
    /// UDP datagrams the machine dropped on full receive buffers while connecting
    /// (machine-wide: includes anything else running).
    udp_rcvbuf_drops: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.clients = vec![200];
        args.settle = 1.0;
        args.idle = 3.0;
        args.concurrency = args.concurrency.min(64);
    }
    let steps = args.clients.clone();
    let Some(&clients_max) = steps.last() else {
        bail!("--clients needs at least one count");
    };
    if steps.windows(2).any(|w| w[0] >= w[1]) || steps[0] == 0 {
        bail!("--clients must be positive and ascending");
    }
    if args.topology == Topology::Dev && clients_max > DEV_MAX_CONNECTIONS {
        bail!("quichat dev allows {DEV_MAX_CONNECTIONS} clients; use --topology split");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let quichat = match args.quichat.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .join("quichat"),
    };
    let data = tempfile::tempdir().context("temporary directory")?;
    let mut servers = Servers::start(&ServerOptions {
        quichat,
        data_dir: data.path().to_owned(),
        topology: args.topology,
        max_connections: clients_max + 100,
        log_filter: args.server_log.clone(),
        extra_args: args.edge_arg.clone(),
        env: args.server_env.clone(),
    })
    .await?;
    let dialer = Arc::new(Dialer::new(
        servers.edge_addr,
        &servers.ca_cert,
        servers.secret.clone(),
        clients_max,
        args.per_endpoint,
        Duration::from_secs_f64(args.connect_timeout),
    )?);
    let settle = Duration::from_secs_f64(args.settle);

    // Baseline: the servers up, the edge linked to the core, no client.
    tokio::time::sleep(settle).await;
    servers.check_running()?;
    let baseline = servers.rss_kib()?;
    eprintln!("baseline: {}", describe_rss(&baseline));

    let mut conns = Vec::with_capacity(clients_max);
    let mut results = Vec::new();
    for &target in &steps {
        let range = conns.len()..target;
        eprintln!("connecting clients {}..{target}", range.start);
        let drops_before = udp_rcvbuf_errors().ok();
        let mut connected = conns::connect(&dialer, range, args.concurrency).await?;
        let udp_rcvbuf_drops = drops_before
            .zip(udp_rcvbuf_errors().ok())
            .map(|(before, after)| after.saturating_sub(before));
        let (not_synced, synced_reasons) =
            conns::wait_synced(&mut connected.conns, SYNCED_TIMEOUT).await;
        conns.append(&mut connected.conns);
        tokio::time::sleep(settle).await;
        servers.check_running()?;
        let step = Step {
            clients: conns.len(),
            failed: connected.failed,
            reasons: connected
                .reasons
                .into_iter()
                .chain(synced_reasons)
                .collect(),
            not_synced,
            elapsed: connected.elapsed,
            welcome_us: connected.welcome_us,
            rss_kib: servers.rss_kib()?,
            generator_rss_kib: own_rss_kib()?,
            udp_rcvbuf_drops,
        };
        eprintln!(
            "{} clients ({} failed, {} not synced): {}",
            step.clients,
            step.failed,
            step.not_synced,
            describe_rss(&step.rss_kib)
        );
        results.push(step);
    }

    eprintln!("idle for {} s", args.idle);
    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
    servers.check_running()?;
    let idle_rss = servers.rss_kib()?;
    let (closed, closed_reasons) = conns::closed(&conns);
    let liveness = conns::check_messages(&mut conns, args.check, CHECK_TIMEOUT).await;

    let failed: usize = results.iter().map(|s| s.failed + s.not_synced).sum();
    let ok = failed == 0
        && closed == 0
        && liveness.delivered == liveness.tried
        && liveness.tried == args.check.min(conns.len() / 2);
    let summary = summary(
        &args,
        &dialer,
        &baseline,
        &results,
        &idle_rss,
        conns.len(),
        (closed, &closed_reasons),
        &liveness,
        ok,
    );
    println!("{}", serde_json::to_string_pretty(&summary)?);
    print_table(&args, &baseline, &results, &idle_rss, conns.len());
    if !closed_reasons.is_empty() {
        eprintln!("closed connections, first few: {closed_reasons:?}");
    }
    for step in &results {
        if !step.reasons.is_empty() {
            eprintln!("failures at {} clients: {:?}", step.clients, step.reasons);
        }
    }
    if !liveness.failures.is_empty() {
        eprintln!("liveness failures: {:?}", liveness.failures);
    }

    for conn in &conns {
        conn.close();
    }
    dialer.shutdown().await;
    drop(servers); // kills the children
    if !ok {
        bail!(
            "{failed} clients failed to connect or attach, {closed} connections closed, \
             {} of {} liveness messages delivered",
            liveness.delivered,
            liveness.tried
        );
    }
    Ok(())
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn describe_rss(rss: &[(&str, u64)]) -> String {
    rss.iter()
        .map(|(name, kib)| format!("{name} {:.1} MiB", *kib as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The increase of each process's memory over the baseline, per client, in KiB.
fn per_conn_kib(
    baseline: &[(&'static str, u64)],
    now: &[(&'static str, u64)],
    clients: usize,
) -> Vec<(&'static str, f64)> {
    baseline
        .iter()
        .zip(now)
        .map(|((name, before), (_, after))| {
            (
                *name,
                (*after as f64 - *before as f64) / clients.max(1) as f64,
            )
        })
        .collect()
}

fn by_name<T: serde::Serialize>(pairs: &[(&str, T)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(name, v)| (name.to_string(), json!(v)))
            .collect(),
    )
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

#[allow(clippy::too_many_arguments)]
fn summary(
    args: &Args,
    dialer: &Dialer,
    baseline: &[(&'static str, u64)],
    results: &[Step],
    idle_rss: &[(&'static str, u64)],
    clients: usize,
    (closed, closed_reasons): (usize, &[String]),
    liveness: &Liveness,
    ok: bool,
) -> Value {
    let steps: Vec<Value> = results
        .iter()
        .zip(std::iter::once(0).chain(results.iter().map(|s| s.clients)))
        .map(|(s, before)| {
            let h = &s.welcome_us;
            let attempted = s.clients + s.failed - before;
            json!({
                "clients": s.clients,
                "attempted": attempted,
                "failed": s.failed,
                "not_synced": s.not_synced,
                "connect_secs": s.elapsed.as_secs_f64(),
                "handshakes_per_sec": (s.clients - before) as f64 / s.elapsed.as_secs_f64(),
                "handshake_ms": {
                    "p50": ms(h.value_at_quantile(0.50)),
                    "p99": ms(h.value_at_quantile(0.99)),
                    "max": ms(h.max()),
                },
                "rss_kib": by_name(&s.rss_kib),
                "kib_per_conn": by_name(&per_conn_kib(baseline, &s.rss_kib, s.clients)),
                "generator_rss_kib": s.generator_rss_kib,
                "udp_rcvbuf_drops": s.udp_rcvbuf_drops,
                "failures": s.reasons,
            })
        })
        .collect();
    json!({
        "topology": args.topology,
        "per_endpoint": dialer.per_endpoint(),
        "udp_sockets": dialer.endpoints(),
        "concurrency": args.concurrency,
        "settle_secs": args.settle,
        "edge_args": args.edge_arg,
        "server_env": args.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "baseline_rss_kib": by_name(baseline),
        "steps": steps,
        "after_idle": {
            "idle_secs": args.idle,
            "clients": clients,
            "closed": closed,
            "closed_reasons": closed_reasons,
            "rss_kib": by_name(idle_rss),
            "kib_per_conn": by_name(&per_conn_kib(baseline, idle_rss, clients)),
        },
        "liveness": liveness,
        "ok": ok,
    })
}

fn print_table(
    args: &Args,
    baseline: &[(&'static str, u64)],
    results: &[Step],
    idle_rss: &[(&'static str, u64)],
    clients: usize,
) {
    let names: Vec<&str> = baseline.iter().map(|(n, _)| *n).collect();
    let mut header = format!("{:<22}", "clients");
    for name in &names {
        header += &format!(
            " {:>11} {:>13}",
            format!("{name} MiB"),
            format!("{name} KiB/conn")
        );
    }
    header += &format!(
        " {:>12} {:>9} {:>9} {:>10}",
        "handshakes/s", "p50 ms", "p99 ms", "gen MiB"
    );
    eprintln!();
    eprintln!("{header}");
    let row = |label: String, rss: &[(&'static str, u64)], n: usize| {
        let mut line = format!("{label:<22}");
        for ((_, kib), (_, per)) in rss.iter().zip(per_conn_kib(baseline, rss, n)) {
            let per = if n == 0 {
                "-".to_string()
            } else {
                format!("{per:.1}")
            };
            line += &format!(" {:>11.1} {per:>13}", *kib as f64 / 1024.0);
        }
        line
    };
    eprintln!("{}", row("0".into(), baseline, 0));
    let mut before = 0;
    for s in results {
        let rate = (s.clients - before) as f64 / s.elapsed.as_secs_f64();
        before = s.clients;
        eprintln!(
            "{} {rate:>12.0} {:>9.2} {:>9.2} {:>10.1}",
            row(s.clients.to_string(), &s.rss_kib, s.clients),
            ms(s.welcome_us.value_at_quantile(0.50)),
            ms(s.welcome_us.value_at_quantile(0.99)),
            s.generator_rss_kib as f64 / 1024.0
        );
    }
    eprintln!(
        "{}",
        row(
            format!("{clients} after {} s idle", args.idle),
            idle_rss,
            clients
        )
    );
}
