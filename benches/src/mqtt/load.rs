//! The online workload through mosquitto: `quichat-load`'s, over MQTT.
//!
//! N pairs, each a sender and a recipient client with persistent sessions. The recipient
//! subscribes to `u/<its id>` at QoS 1; the sender publishes there at QoS 1. Everything
//! that decides what is measured is `quichat-load`'s own code, shared from
//! [`crate::load`]: the pacer thread and schedule (open loop: latency counts from each
//! message's intended send time), the message text, the tallies (latency histograms,
//! loss, duplicates, order, the measured window), the CPU meter, and the
//! [`Summary`] it prints. Only the client differs.
//!
//! A publish counts as accepted when its `PUBACK` arrives, the counterpart of quichat's
//! `Accepted` — with the difference every report states: mosquitto acknowledges from
//! memory, quichat once the message is on disk or in the recipient's hands.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::DURABILITY_NOTE;
use super::broker::{Mosquitto, MqttTransport};
use super::client::Endpoint;
use crate::load::cpu::{CpuMeter, CpuSample, Process};
use crate::load::message::{HEADER_BYTES, Header};
use crate::load::pacer::{self, Schedule, TICKS_QUEUED_PER_PAIR, Tick};
use crate::load::run::RunOptions;
use crate::load::summary::{CpuSummary, Percentiles, Summary};
use crate::load::tally::{SeqSet, Tally, Window};

/// How long all clients have to connect (and recipients to subscribe).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between connecting the last client and the first message (as `quichat-load`).
const START_DELAY: Duration = Duration::from_millis(200);
/// How often the drain checks look at the counters.
const POLL: Duration = Duration::from_millis(20);
/// Pause after a connection error before the event loop reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Connection errors one client tolerates before giving up (each is counted).
const CONNECTION_ERRORS_MAX: u64 = 20;
/// How long clients have to disconnect at the end before their tasks are aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters shared by the tasks.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    accepted: AtomicU64,
    publish_errors: AtomicU64,
    connection_errors: AtomicU64,
    /// Set at the end: connection errors from now on are the shutdown, not failures.
    closing: AtomicBool,
}

/// One sender: the sequence numbers published and not yet written, in order, so the
/// event loop can name the message behind each packet id. Bounded by what the request
/// queue and the in-flight window hold: a seq is pushed just before its publish enters
/// the (bounded) request queue and popped when the event loop writes it.
#[derive(Default)]
struct SenderState {
    unwritten: VecDeque<u64>,
    accepted: SeqSet,
}

/// Runs `options` (as `quichat-load` would) through `broker`'s `transport` listener,
/// with `inflight` QoS 1 publishes in flight per sender.
pub async fn run(
    broker: &Mosquitto,
    transport: MqttTransport,
    options: &RunOptions,
    inflight: u16,
) -> Result<Summary> {
    let pairs = options.pairs;
    if pairs == 0 || options.rate.is_nan() || options.rate <= 0.0 || options.size < HEADER_BYTES {
        bail!("need at least one pair, a positive rate and a size of at least {HEADER_BYTES}");
    }
    if options.offline_share != 0.0 {
        bail!("the MQTT workload has no offline recipients (use --drain for the backlog)");
    }
    let endpoint = Endpoint::new(broker, transport, inflight)?;
    let meter = CpuMeter::new(vec![Process::Pid(broker.pid())]);
    let live = Arc::new(Live::default());
    let base = Instant::now();

    let seq_limit = {
        let secs = (options.warmup + options.duration).as_secs_f64();
        (secs * options.rate).ceil() as u64 / pairs as u64 + 2
    };
    let no_window = Window {
        from_ns: 0,
        to_ns: 0,
    };
    let tally = Arc::new(Mutex::new(Tally::new(pairs, seq_limit, no_window)?));

    // Recipients first: subscribed before anything is sent.
    let mut ready = Vec::new();
    let mut recipients = Vec::new();
    for pair in 0..pairs {
        let (client, eventloop) = endpoint.client(&recipient_id(pair));
        client
            .subscribe(topic(pair), QoS::AtLeastOnce)
            .await
            .context("queueing a subscribe")?;
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        let task = tokio::spawn(receive(
            eventloop,
            ready_tx,
            tally.clone(),
            live.clone(),
            base,
        ));
        recipients.push((client, task));
    }
    let mut senders = Vec::new();
    for pair in 0..pairs {
        let (client, eventloop) = endpoint.client(&sender_id(pair));
        let state = Arc::new(Mutex::new(SenderState::default()));
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        let task = tokio::spawn(sender_loop(
            eventloop,
            ready_tx,
            state.clone(),
            live.clone(),
        ));
        senders.push((client, state, task));
    }
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        for r in ready {
            r.await.context("a client failed before it was ready")?;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("clients not connected within {CONNECT_TIMEOUT:?}"))??;

    // The schedule, the window and the drain deadline, as quichat-load sets them.
    let start_ns = ns(base) + START_DELAY.as_nanos() as u64;
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
    lock(&tally).set_window(window);
    let drain_deadline = schedule.end_ns + options.drain.as_nanos() as u64;

    let mut outlets = Vec::with_capacity(pairs);
    let mut publishers = Vec::with_capacity(pairs);
    for (pair, (client, state, _)) in senders.iter().enumerate() {
        let (tx, rx) = mpsc::channel(TICKS_QUEUED_PER_PAIR);
        outlets.push(tx);
        publishers.push(tokio::spawn(publish(
            pair,
            client.clone(),
            rx,
            state.clone(),
            live.clone(),
            options.size,
            base,
        )));
    }
    let pacer = pacer::spawn(base, schedule, outlets).context("starting the pacer thread")?;

    sleep_until_ns(base, window.from_ns).await;
    let cpu_start = meter.sample();
    sleep_until_ns(base, window.to_ns).await;
    let cpu_end = meter.sample();
    let delivered_in_window = lock(&tally).delivered_in_window;
    let pacer_report = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow!("the pacer thread panicked"))?;
    for task in publishers {
        task.await?;
    }

    // Every PUBACK (or the deadline), then every accepted message delivered (or the
    // deadline).
    let sent = live.sent.load(Ordering::Relaxed);
    while live.accepted.load(Ordering::Relaxed) < sent && ns(base) < drain_deadline {
        tokio::time::sleep(POLL).await;
    }
    let accepted: Vec<SeqSet> = senders
        .iter()
        .map(|(_, state, _)| lock_state(state).accepted.clone())
        .collect();
    while lock(&tally).missing(&accepted) > 0 && ns(base) < drain_deadline {
        tokio::time::sleep(POLL).await;
    }

    live.closing.store(true, Ordering::Relaxed);
    for (client, _, task) in senders {
        close(client, task).await;
    }
    for (client, task) in recipients {
        close(client, task).await;
    }

    let accepted_total: u64 = accepted.iter().map(SeqSet::len).sum();
    let t = lock(&tally);
    let window_secs = (window.to_ns - window.from_ns) as f64 / 1e9;
    let mut errors_by_kind = BTreeMap::new();
    for (kind, counter) in [
        ("publish failed", &live.publish_errors),
        ("connection error", &live.connection_errors),
    ] {
        let count = counter.load(Ordering::Relaxed);
        if count > 0 {
            errors_by_kind.insert(kind.to_owned(), count);
        }
    }
    let mut notes = vec![
        format!(
            "MQTT 3.1.1 QoS 1 through mosquitto over {}; accepted = PUBACK received",
            match transport {
                MqttTransport::Tls => "TLS",
                MqttTransport::Tcp => "plain TCP",
            }
        ),
        DURABILITY_NOTE.to_owned(),
    ];
    let cpu = match (&cpu_start, &cpu_end) {
        (Ok(start), Ok(end)) => Some(cpu_summary(broker.pid(), start, end, delivered_in_window)),
        (Err(e), _) | (_, Err(e)) => {
            notes.push(format!("CPU not measured: {e:#}"));
            None
        }
    };
    Ok(Summary {
        mode: transport.name().into(),
        pairs,
        offered_rate: options.rate,
        size: options.size,
        duration_secs: options.duration.as_secs_f64(),
        warmup_secs: options.warmup.as_secs_f64(),
        offline_share: 0.0,
        sent,
        accepted: accepted_total,
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
        unanswered: sent.saturating_sub(accepted_total),
        delivered: t.delivered,
        lost: t.missing(&accepted),
        duplicates_shown: t.duplicates,
        out_of_order: t.out_of_order,
        throughput_msgs_per_sec: if window_secs > 0.0 {
            delivered_in_window as f64 / window_secs
        } else {
            0.0
        },
        latency_us: Percentiles::of(&t.from_intended),
        latency_from_send_us: Percentiles::of(&t.from_send),
        pacer_late_mean_us: pacer_report.late_mean_us,
        pacer_late_max_us: pacer_report.late_max_us,
        cpu,
        notes,
        // Fields quichat-load may add later keep their defaults (none, zero).
        ..Summary::default()
    })
}

/// The MQTT client id of pair `pair`'s recipient (fixed: its session persists).
pub fn recipient_id(pair: usize) -> String {
    format!("load-recipient-{pair}")
}

fn sender_id(pair: usize) -> String {
    format!("load-sender-{pair}")
}

/// The topic pair `pair`'s recipient subscribes to: `u/<recipient>`.
pub fn topic(pair: usize) -> String {
    format!("u/{}", recipient_id(pair))
}

fn ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

async fn sleep_until_ns(base: Instant, ns: u64) {
    tokio::time::sleep_until((base + Duration::from_nanos(ns)).into()).await;
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    // A panic while holding the lock leaves counts that are still meaningful.
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_state(state: &Mutex<SenderState>) -> MutexGuard<'_, SenderState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Server CPU (the broker) and this process's over the window, per delivered message.
fn cpu_summary(pid: u32, start: &CpuSample, end: &CpuSample, delivered: u64) -> CpuSummary {
    let usage = end.since(start);
    let per_message = |d: Duration| {
        if delivered > 0 {
            d.as_secs_f64() * 1e6 / delivered as f64
        } else {
            0.0
        }
    };
    let window_secs = usage.wall.as_secs_f64();
    CpuSummary {
        method: "utime+stime from /proc/<pid>/stat at the start and end of the measured \
                 window (mosquitto), divided by the messages delivered in it"
            .into(),
        window_secs,
        server_secs: Some(usage.server.as_secs_f64()),
        server_us_per_message: Some(per_message(usage.server)),
        server_cores: Some(usage.server.as_secs_f64() / window_secs.max(f64::MIN_POSITIVE)),
        load_generator_secs: usage.load_generator.as_secs_f64(),
        load_generator_us_per_message: per_message(usage.load_generator),
        server_pids: vec![pid],
    }
}

/// Sends `DISCONNECT` and waits (bounded) for the client's event loop task to end.
async fn close<T>(client: AsyncClient, task: JoinHandle<T>) {
    // If the request queue is full the event loop is stuck; the timeout below ends it.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.disconnect()).await;
    let abort = task.abort_handle();
    if tokio::time::timeout(CLOSE_TIMEOUT, task).await.is_err() {
        abort.abort();
    }
}

/// A sender's publishing side: one QoS 1 publish per tick from the pacer.
async fn publish(
    pair: usize,
    client: AsyncClient,
    mut ticks: mpsc::Receiver<Tick>,
    state: Arc<Mutex<SenderState>>,
    live: Arc<Live>,
    size: usize,
    base: Instant,
) {
    let topic = topic(pair);
    while let Some(tick) = ticks.recv().await {
        let header = Header {
            pair,
            seq: tick.seq,
            intended_ns: tick.intended_ns,
            actual_ns: ns(base),
        };
        // Before the publish enters the request queue, so the event loop finds it when
        // it writes the packet.
        lock_state(&state).unwritten.push_back(tick.seq);
        match client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, header.encode(size))
            .await
        {
            Ok(()) => {
                live.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                lock_state(&state).unwritten.pop_back();
                live.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A sender's event loop: maps packet ids to sequence numbers as publishes are written
/// and records each `PUBACK` as that message accepted.
async fn sender_loop(
    mut eventloop: EventLoop,
    ready: oneshot::Sender<()>,
    state: Arc<Mutex<SenderState>>,
    live: Arc<Live>,
) {
    let mut ready = Some(ready);
    // Packet id → sequence number, for publishes written and not yet acknowledged.
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut connection_errors = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                // A packet id still in flight is a re-send after a reconnect, not a new
                // message: in-flight ids are unique.
                if !in_flight.contains_key(&pkid)
                    && let Some(seq) = lock_state(&state).unwritten.pop_front()
                {
                    in_flight.insert(pkid, seq);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(seq) = in_flight.remove(&ack.pkid)
                    && lock_state(&state).accepted.insert(seq)
                {
                    live.accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                if live.closing.load(Ordering::Relaxed) {
                    break;
                }
                tracing::warn!(%error, "MQTT sender connection error");
                live.connection_errors.fetch_add(1, Ordering::Relaxed);
                connection_errors += 1;
                if connection_errors >= CONNECTION_ERRORS_MAX {
                    break;
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

/// A recipient's event loop: records every message in the tally.
async fn receive(
    mut eventloop: EventLoop,
    ready: oneshot::Sender<()>,
    tally: Arc<Mutex<Tally>>,
    live: Arc<Live>,
    base: Instant,
) {
    let mut ready = Some(ready);
    let mut connection_errors = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now_ns = ns(base);
                if let Some(header) = std::str::from_utf8(&publish.payload)
                    .ok()
                    .and_then(Header::decode)
                {
                    lock(&tally).record(&header, now_ns);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                if live.closing.load(Ordering::Relaxed) {
                    break;
                }
                tracing::warn!(%error, "MQTT recipient connection error");
                live.connection_errors.fetch_add(1, Ordering::Relaxed);
                connection_errors += 1;
                if connection_errors >= CONNECTION_ERRORS_MAX {
                    break;
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::BrokerOptions;

    fn small_run() -> RunOptions {
        RunOptions {
            pairs: 2,
            rate: 200.0,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(200),
            size: 64,
            offline_share: 0.0,
            drain: Duration::from_secs(10),
            progress: false,
            label: String::new(),
            admission: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_through_mosquitto_arrives_once_in_order_over_tls_and_tcp() {
        // The comparison is only worth reading if the MQTT side really delivers what it
        // counts: every publish acknowledged, delivered once, in order, and timed.
        for transport in [MqttTransport::Tls, MqttTransport::Tcp] {
            let broker = Mosquitto::start(&BrokerOptions::default()).unwrap();
            let summary = run(&broker, transport, &small_run(), 100).await.unwrap();
            assert_eq!(summary.mode, transport.name());
            assert!(summary.sent > 0, "{summary:?}");
            assert_eq!(summary.accepted, summary.sent, "{summary:?}");
            assert_eq!(summary.delivered, summary.sent, "{summary:?}");
            assert_eq!(
                (summary.lost, summary.errors, summary.unanswered),
                (0, 0, 0),
                "{summary:?}"
            );
            assert_eq!((summary.duplicates_shown, summary.out_of_order), (0, 0));
            assert!(summary.latency_us.samples > 0);
            assert!(
                summary
                    .cpu
                    .as_ref()
                    .is_some_and(|c| c.server_pids == [broker.pid()])
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tls_listener_refuses_plain_mqtt() {
        // "Both encrypted" must be true of the TLS row: a client speaking plain MQTT to
        // that port never gets a session.
        let broker = Mosquitto::start(&BrokerOptions::default()).unwrap();
        let mut endpoint = Endpoint::new(&broker, MqttTransport::Tcp, 10).unwrap();
        endpoint.port = broker.port(MqttTransport::Tls);
        let (_client, mut eventloop) = endpoint.client("plain-on-tls");
        let outcome = tokio::time::timeout(Duration::from_secs(20), eventloop.poll())
            .await
            .unwrap();
        assert!(
            !matches!(outcome, Ok(Event::Incoming(Packet::ConnAck(_)))),
            "{outcome:?}"
        );
    }
}
