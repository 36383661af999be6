//! `quichat-load`: N sender→recipient pairs of real clients over real QUIC, through an
//! in-process core and edge (the `quichat dev` topology).
//!
//! Open loop: every message has an intended send time on a fixed schedule, and latency is
//! measured from that intended time to delivery, so a stall in the system (or in this
//! tool) shows up as latency instead of hiding as a lower send rate. Each message's text
//! carries its pair, sequence number and intended time, so the recipient can detect loss,
//! duplicates and reordering on its own.
//!
//! ```text
//! cargo run --release -p benches --bin quichat-load -- --pairs 50 --rate 5000 --duration 10
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use benches::stack::{Stack, StackOptions};
use clap::Parser;
use client::Event;
use hdrhistogram::Histogram;
use protocol::UserId;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "quichat-load", about = "Load generator for quichat")]
struct Args {
    /// Sender→recipient pairs (each side is its own client connection).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Offered load, messages per second over all pairs.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before measurement starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Message size in bytes (at least 60: the header the tool needs).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to wait after sending for the last deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Number of edges the pairs are spread over (a pair's two sides on different edges
    /// when there are two or more).
    #[arg(long, default_value_t = 1)]
    edges: usize,
}

/// What each recipient saw.
#[derive(Default)]
struct Received {
    /// Latency from the intended send time (open loop: includes any sending delay).
    histogram: Option<Histogram<u64>>,
    /// Latency from the moment the message was handed to the client library.
    from_send: Option<Histogram<u64>>,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    seen: Vec<BTreeSet<u64>>,
    last_seq: Vec<Option<u64>>,
}

const HEADER_BYTES: usize = 60;

fn text_for(pair: usize, seq: u64, intended_ns: u64, actual_ns: u64, size: usize) -> String {
    let mut text = format!("{pair:08} {seq:010} {intended_ns:019} {actual_ns:019}");
    debug_assert!(text.len() <= HEADER_BYTES);
    while text.len() < size {
        text.push('.');
    }
    text
}

fn parse(text: &str) -> Option<(usize, u64, u64, u64)> {
    let mut parts = text.split(' ');
    let pair = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let intended = parts.next()?.parse().ok()?;
    let actual = parts.next()?.trim_end_matches('.').parse().ok()?;
    Some((pair, seq, intended, actual))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.size < HEADER_BYTES || args.pairs == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("need --size >= {HEADER_BYTES}, --pairs >= 1 and --rate > 0");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let stack = Stack::start(StackOptions {
        edges: args.edges,
        ..StackOptions::default()
    })
    .await?;
    let base = Instant::now();

    // Connect every pair.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for pair in 0..args.pairs {
        let from = UserId::new(format!("load-sender-{pair}"))?;
        let to = UserId::new(format!("load-recipient-{pair}"))?;
        let (tx, _tx_events) =
            client::Client::connect(stack.client_config(pair, &from, pair as u64 + 1)?)
                .await
                .context("connecting a sender")?;
        let (rx, rx_events) =
            client::Client::connect(stack.client_config(pair + 1, &to, 1_000_000 + pair as u64)?)
                .await
                .context("connecting a recipient")?;
        senders.push((tx, _tx_events, to));
        receivers.push((rx, rx_events));
    }

    let received = Arc::new(Mutex::new(Received {
        histogram: Some(Histogram::new_with_bounds(1, 60_000_000_000, 3)?),
        from_send: Some(Histogram::new_with_bounds(1, 60_000_000_000, 3)?),
        seen: vec![BTreeSet::new(); args.pairs],
        last_seq: vec![None; args.pairs],
        ..Received::default()
    }));
    let warmup_ns = (args.warmup * 1e9) as u64;
    let mut receiver_tasks = Vec::new();
    for (client, mut events) in receivers {
        let received = received.clone();
        receiver_tasks.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Event::Message(m) = event else { continue };
                let now_ns = base.elapsed().as_nanos() as u64;
                let Some((pair, seq, intended, actual)) = parse(&m.text) else {
                    continue;
                };
                let mut r = received.lock().await;
                if pair >= r.seen.len() {
                    continue;
                }
                if !r.seen[pair].insert(seq) {
                    r.duplicates += 1;
                    continue;
                }
                if r.last_seq[pair].is_some_and(|last| seq < last) {
                    r.out_of_order += 1;
                }
                r.last_seq[pair] = Some(seq);
                r.delivered += 1;
                if intended >= warmup_ns {
                    if let Some(h) = r.histogram.as_mut() {
                        let _ = h.record(now_ns.saturating_sub(intended).max(1));
                    }
                    if let Some(h) = r.from_send.as_mut() {
                        let _ = h.record(now_ns.saturating_sub(actual).max(1));
                    }
                }
            }
            drop(client);
        }));
    }

    let sent = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let interval_ns = (args.pairs as f64 / args.rate * 1e9) as u64;
    let total_ns = ((args.warmup + args.duration) * 1e9) as u64;
    let start_ns = base.elapsed().as_nanos() as u64 + 100_000_000;
    let stats_before = stack.core.stats();
    let mut sender_tasks = Vec::new();
    for (pair, (client, events, to)) in senders.into_iter().enumerate() {
        let (sent, accepted, errors) = (sent.clone(), accepted.clone(), errors.clone());
        let size = args.size;
        // Spread the pairs' schedules over one interval so they do not all fire at once.
        let offset = interval_ns * pair as u64 / args.pairs as u64;
        sender_tasks.push(tokio::spawn(async move {
            let _events = events;
            let mut answers = tokio::task::JoinSet::new();
            let mut seq = 0u64;
            loop {
                let intended = start_ns + offset + seq * interval_ns;
                if intended > start_ns + total_ns {
                    break;
                }
                tokio::time::sleep_until(base + Duration::from_nanos(intended)).await;
                let actual = base.elapsed().as_nanos() as u64;
                match client
                    .queue(&to, text_for(pair, seq, intended, actual, size))
                    .await
                {
                    Ok(pending) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let (accepted, errors) = (accepted.clone(), errors.clone());
                        answers.spawn(async move {
                            match pending.accepted().await {
                                Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                                Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                            };
                        });
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq += 1;
            }
            while answers.join_next().await.is_some() {}
            client
        }));
    }
    let mut clients = Vec::new();
    for task in sender_tasks {
        clients.push(task.await?);
    }
    let sending_done = base.elapsed();
    // Wait for the last deliveries, bounded.
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while Instant::now() < deadline {
        let delivered = received.lock().await.delivered;
        if delivered >= accepted.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats_after = stack.core.stats();
    let r = received.lock().await;
    let (Some(h), Some(hs)) = (r.histogram.as_ref(), r.from_send.as_ref()) else {
        bail!("no histogram")
    };
    let measured_secs = sending_done.as_secs_f64() - start_ns as f64 / 1e9;
    let commits = stats_after.commits - stats_before.commits;
    let committed = stats_after.committed - stats_before.committed;
    let accepted_total = accepted.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "pairs": args.pairs,
        "offered_rate": args.rate,
        "size": args.size,
        "sent": sent.load(Ordering::Relaxed),
        "accepted": accepted_total,
        "errors": errors.load(Ordering::Relaxed),
        "delivered": r.delivered,
        "lost": accepted_total.saturating_sub(r.delivered),
        "duplicates_shown": r.duplicates,
        "out_of_order": r.out_of_order,
        "throughput_msgs_per_sec": r.delivered as f64 / measured_secs,
        "latency_us": {
            "p50": h.value_at_quantile(0.50) as f64 / 1e3,
            "p90": h.value_at_quantile(0.90) as f64 / 1e3,
            "p99": h.value_at_quantile(0.99) as f64 / 1e3,
            "p999": h.value_at_quantile(0.999) as f64 / 1e3,
            "max": h.max() as f64 / 1e3,
            "samples": h.len(),
        },
        "latency_from_send_us": {
            "p50": hs.value_at_quantile(0.50) as f64 / 1e3,
            "p90": hs.value_at_quantile(0.90) as f64 / 1e3,
            "p99": hs.value_at_quantile(0.99) as f64 / 1e3,
            "p999": hs.value_at_quantile(0.999) as f64 / 1e3,
            "max": hs.max() as f64 / 1e3,
        },
        "core": {
            "commits": commits,
            "commits_per_sec": commits as f64 / measured_secs,
            "messages_committed": committed,
            "messages_skipped_disk": stats_after.skipped_disk - stats_before.skipped_disk,
        },
    });
    drop(r);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    for client in clients {
        client.close().await;
    }
    for task in receiver_tasks {
        task.abort();
    }
    stack.shutdown().await;
    Ok(())
}
