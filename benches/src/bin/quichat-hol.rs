//! `quichat-hol`: the head-of-line benchmark. One client connection carries many
//! conversations through a link with delay and random loss; how late do messages arrive
//! with quichat's lanes, with everything on one stream (the TCP-like baseline, same
//! stack, same proxy), and with mosquitto over TCP under the same loss? Plus the liveness
//! case: one conversation sends a 1 MiB burst while the others keep chatting.
//!
//! ```text
//! cargo run --release -p benches --bin quichat-hol            # the full run (minutes)
//! cargo run --release -p benches --bin quichat-hol -- --smoke  # CI: seconds
//! ```
//!
//! JSON summary on stdout, tables on stderr, an SVG plot of p99 against loss. The method
//! and why it is fair: `docs/bench/hol.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use benches::hol::mqtt::{self, MqttCell, MqttRow};
use benches::hol::quichat::{self, Burst, QuichatCell, QuichatOutcome};
use benches::hol::report::{self, LivenessRow, LossRow, Report, Settings};
use benches::hol::{Fan, LinkShape, Workload};
use clap::Parser;
use client::CopyPolicy;

/// The head-of-line benchmark: quichat lanes vs one stream vs mosquitto/TCP under loss.
///
/// Every cell runs the same open-loop workload: one sending connection carries
/// CONVERSATIONS conversations, each sending RATE messages per second to its own
/// recipient connection. Every client reaches the edge through a UDP proxy that adds
/// DELAY_MS each way and drops each datagram with the given probability, each way.
/// Latency runs from a message's intended send time to its delivery. With `--fan in`
/// it is the other way round: a sending connection per conversation, one recipient
/// connection receiving them all.
///
/// For each loss rate it runs quichat with LANES lanes, quichat with 1 lane (everything
/// on one stream), and mosquitto (MQTT QoS 1 over TCP) inside a network namespace made
/// by lossy-netns, with the same delay added to every TCP packet in the kernel's queue.
/// Then the liveness case: conversation 0 sends BURST_BYTES at once (in messages of
/// BURST_MESSAGE_BYTES) while the others keep chatting; the chatty conversations'
/// latency during the burst is reported, lanes vs one stream.
///
/// The mosquitto cells need root, `ip`, `nft` and `iptables` (apt-get install -y
/// iproute2 nftables iptables mosquitto); without them that row says "skipped" and why.
///
/// Exits non-zero if any quichat cell lost, duplicated or reordered a message.
#[derive(Debug, Parser)]
#[command(name = "quichat-hol", verbatim_doc_comment)]
struct Args {
    /// Short CI run: 2 s per cell, loss 0 and 2 %, one liveness cell (0 %), no mosquitto.
    #[arg(long)]
    smoke: bool,
    /// Which side shares one connection: `out` = one sender connection to a recipient
    /// connection per conversation (head-of-line blocking on the sender's uplink);
    /// `in` = a sender connection per conversation to one recipient connection
    /// (head-of-line blocking on the recipient's downlink, streams chosen by the server).
    #[arg(long, value_enum, default_value_t = FanArg::Out)]
    fan: FanArg,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of sending before measurement starts, per cell.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Longest wait, in seconds, for the last deliveries after sending stops.
    #[arg(long, default_value_t = 20.0)]
    drain: f64,
    /// Conversations on the one sending connection (each to its own recipient).
    #[arg(long, default_value_t = 50)]
    conversations: usize,
    /// Messages per second per conversation.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Bytes per chat message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Delay added each way, in milliseconds.
    #[arg(long = "delay-ms", default_value_t = 25)]
    delay_ms: u64,
    /// Loss rates each way, in whole percents.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,5")]
    loss: Vec<u32>,
    /// Lanes in the lanes mode (the baseline always has 1).
    #[arg(long, default_value_t = protocol::limits::LANES_DEFAULT)]
    lanes: u8,
    /// Seed of the proxy's loss generator (loss rate i uses SEED + i, in both modes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measured seconds per liveness cell.
    #[arg(long = "liveness-duration", default_value_t = 10.0)]
    liveness_duration: f64,
    /// Loss rates of the liveness case, in whole percents.
    #[arg(long = "liveness-loss", value_delimiter = ',', default_value = "0,2")]
    liveness_loss: Vec<u32>,
    /// Bytes in the liveness burst.
    #[arg(long = "burst-bytes", default_value_t = 1 << 20)]
    burst_bytes: usize,
    /// Bytes per burst message (the edge's text limit is 4 KiB by default).
    #[arg(long = "burst-message-bytes", default_value_t = 4096)]
    burst_message_bytes: usize,
    /// Seconds after measurement starts when the burst is sent.
    #[arg(long = "burst-after", default_value_t = 2.0)]
    burst_after: f64,
    /// Skip the liveness case.
    #[arg(long = "no-liveness")]
    no_liveness: bool,
    /// Skip mosquitto.
    #[arg(long = "no-mqtt")]
    no_mqtt: bool,
    /// The lossy-netns script (default: ../shared/tools/lossy-netns next to the workspace).
    #[arg(long = "lossy-netns")]
    lossy_netns: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Where to write the SVG plot of p99 against loss.
    #[arg(long, default_value = "target/quichat-hol/p99-vs-loss.svg")]
    plot: PathBuf,
    /// Internal: run one mosquitto cell inside the namespace (JSON spec).
    #[arg(long = "mqtt-inner", hide = true)]
    mqtt_inner: Option<String>,
}

/// `--fan`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FanArg {
    Out,
    In,
}

impl From<FanArg> for Fan {
    fn from(fan: FanArg) -> Self {
        match fan {
            FanArg::Out => Fan::Out,
            FanArg::In => Fan::In,
        }
    }
}

impl Args {
    /// Applies `--smoke` over whatever else was given.
    fn effective(mut self) -> Self {
        if self.smoke {
            self.duration = 2.0;
            self.warmup = 0.3;
            self.drain = 10.0;
            self.loss = vec![0, 2];
            self.no_mqtt = true;
            self.liveness_loss = vec![0];
            self.liveness_duration = 1.0;
            self.burst_after = 0.2;
        }
        self
    }

    fn workload(&self, duration: f64) -> Result<Workload> {
        let workload = Workload {
            conversations: self.conversations,
            rate_per_conversation: self.rate,
            message_bytes: self.size,
            warmup: secs(self.warmup)?,
            duration: secs(duration)?,
        };
        workload.validate().map_err(anyhow::Error::msg)?;
        Ok(workload)
    }

    fn link(&self, percent: u32, index: usize) -> Result<LinkShape> {
        if percent > 100 {
            bail!("a loss rate is a percentage, 0..=100; got {percent}");
        }
        Ok(LinkShape {
            loss: f64::from(percent) / 100.0,
            delay: Duration::from_millis(self.delay_ms),
            seed: self.seed.wrapping_add(index as u64),
        })
    }

    fn lossy_netns(&self) -> PathBuf {
        mqtt::lossy_netns_path(self.lossy_netns.as_deref())
    }
}

fn secs(value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{value} is not a duration"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse().effective();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    if let Some(spec) = &args.mqtt_inner {
        let cell: MqttCell = serde_json::from_str(spec).context("reading --mqtt-inner")?;
        match mqtt::run_inner(&cell).await {
            Ok(outcome) => {
                println!("{}", serde_json::to_string(&outcome)?);
                return Ok(());
            }
            Err(e) => {
                eprintln!("{}{e:#}", mqtt::INNER_ERROR_PREFIX);
                std::process::exit(1);
            }
        }
    }

    let report = run(&args).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    report::print_tables(&report);
    if !report.quichat_clean {
        bail!("quichat lost, duplicated or reordered messages, or refused some (see above)");
    }
    Ok(())
}

async fn run(args: &Args) -> Result<Report> {
    let workload = args.workload(args.duration)?;
    let drain = secs(args.drain)?;
    let lossy_netns = args.lossy_netns();
    let mqtt_unavailable = if args.no_mqtt {
        None
    } else {
        mqtt::unavailable(&lossy_netns, &args.mosquitto)
    };
    if let Some(reason) = &mqtt_unavailable {
        eprintln!("mosquitto cells skipped: {reason}");
    }
    let fan = args.fan.into();
    // The product's default (lanes, copies while the link loses packets), lanes alone,
    // and the TCP-like baseline: one stream, no copies.
    let (auto, off) = (CopyPolicy::Auto, CopyPolicy::Off);
    let quichat_cell =
        |lanes: u8, copies, link: LinkShape, workload: &Workload, burst| QuichatCell {
            workload: workload.clone(),
            fan,
            lanes,
            copies,
            link,
            drain,
            burst,
        };

    let mut rows = Vec::new();
    let mut loss_free = None;
    for (index, &percent) in args.loss.iter().enumerate() {
        let link = args.link(percent, index)?;
        let lanes = run_cell(&quichat_cell(args.lanes, auto, link, &workload, None)).await?;
        let lanes_no_copies =
            run_cell(&quichat_cell(args.lanes, off, link, &workload, None)).await?;
        let one_stream = run_cell(&quichat_cell(1, off, link, &workload, None)).await?;
        let mosquitto = if args.no_mqtt {
            MqttRow::NotRun
        } else if let Some(reason) = &mqtt_unavailable {
            MqttRow::Skipped {
                reason: reason.clone(),
            }
        } else {
            eprintln!("cell: mosquitto, loss {percent} %");
            let cell = MqttCell {
                workload: workload.clone(),
                fan,
                link,
                drain,
                broker: args.mosquitto.clone(),
            };
            let timeout = workload.warmup + workload.duration + drain + Duration::from_secs(60);
            mqtt::run_in_namespace(&cell, &lossy_netns, timeout).await
        };
        if percent == 0 {
            loss_free = Some(lanes.latency);
        }
        rows.push(LossRow::new(
            link.loss,
            lanes,
            lanes_no_copies,
            one_stream,
            mosquitto,
            loss_free.as_ref(),
        ));
    }

    let mut liveness = Vec::new();
    let burst = Burst {
        messages: args.burst_bytes.div_ceil(args.burst_message_bytes.max(1)),
        message_bytes: args.burst_message_bytes,
        after: secs(args.burst_after)?,
    };
    if burst.message_bytes < benches::hol::payload::HEADER_BYTES {
        bail!("--burst-message-bytes must be at least the message header");
    }
    if !args.no_liveness {
        let workload = args.workload(args.liveness_duration)?;
        for (index, &percent) in args.liveness_loss.iter().enumerate() {
            let link = args.link(percent, index)?;
            let lanes = run_cell(&quichat_cell(
                args.lanes,
                auto,
                link,
                &workload,
                Some(burst),
            ))
            .await?;
            let one_stream = run_cell(&quichat_cell(1, off, link, &workload, Some(burst))).await?;
            liveness.push(LivenessRow::new(link.loss, lanes, one_stream));
        }
    }

    let quichat_clean = rows
        .iter()
        .flat_map(|r| [&r.lanes, &r.lanes_no_copies, &r.one_stream])
        .chain(liveness.iter().flat_map(|r| [&r.lanes, &r.one_stream]))
        .all(|o| o.integrity.is_clean() && o.send_errors == 0);
    let mut report = Report {
        settings: Settings {
            conversations: args.conversations,
            rate_per_conversation: args.rate,
            message_bytes: args.size,
            delay_ms_each_way: args.delay_ms as f64,
            duration_secs: args.duration,
            warmup_secs: args.warmup,
            lanes: args.lanes,
            seed: args.seed,
            burst_messages: burst.messages,
            burst_message_bytes: burst.message_bytes,
            smoke: args.smoke,
            fan,
        },
        rows,
        liveness,
        quichat_clean,
        plot: None,
    };
    if !report.rows.is_empty() {
        match report::plot(&report, &args.plot) {
            Ok(()) => report.plot = Some(args.plot.display().to_string()),
            Err(e) => eprintln!("no plot: {e:#}"),
        }
    }
    Ok(report)
}

async fn run_cell(cell: &QuichatCell) -> Result<QuichatOutcome> {
    eprintln!(
        "cell: quichat, {} lane(s), copies {}, loss {} %{}",
        cell.lanes,
        cell.copies,
        cell.link.loss * 100.0,
        if cell.burst.is_some() {
            ", with the burst"
        } else {
            ""
        }
    );
    quichat::run(cell)
        .await
        .with_context(|| format!("quichat cell with {} lane(s)", cell.lanes))
}
