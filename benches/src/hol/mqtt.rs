//! One mosquitto cell: the same workload as quichat's, over MQTT (QoS 1) and TCP, in a
//! network namespace made by `lossy-netns` whose loopback drops packets, with
//! [`TcpDelay`] adding the delay in the same namespace.
//!
//! The benchmark re-runs its own binary inside the namespace ([`run_in_namespace`]
//! starts `lossy-netns LOSS tcp -- quichat-hol --mqtt-inner SPEC`); that inner process
//! ([`run_inner`]) starts mosquitto and the clients — with [`Fan::Out`] one publisher
//! connection carrying every conversation as a topic and one subscriber connection per
//! topic, with [`Fan::In`] a publisher connection per topic and one subscriber
//! connection for all (`hol/+`) — and prints its [`MqttOutcome`] as one JSON line,
//! which the outer process reads.
//!
//! mosquitto runs with `persistence false` (messages live in memory; quichat's store is
//! fsync'd, but with every recipient online neither system waits for a disk before
//! delivering) and `set_tcp_nodelay true`; the clients set `TCP_NODELAY` too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::payload::{self, Header};
use super::tcp_delay::{DelayStats, TcpDelay};
use super::tracker::{Integrity, LatencySummary, Tracker};
use super::{Fan, LinkShape, Workload};

/// How the inner process's last stderr line starts when it fails; the outer process
/// reports the rest of the line as the reason.
pub const INNER_ERROR_PREFIX: &str = "quichat-hol inner error: ";
/// The broker's port inside the namespace (a fresh namespace has every port free).
const BROKER_PORT: u16 = 1883;
/// The NFQUEUE number [`TcpDelay`] uses.
const QUEUE_NUM: u16 = 0;
/// Longest wait for the broker to listen and every subscription to be acknowledged.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lead time between the last subscription and the first intended send.
const START_LEAD: Duration = Duration::from_millis(200);
/// Pause before a client that lost its connection tries again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Requests each client may queue before `publish` waits.
const REQUEST_QUEUE: usize = 1024;
/// QoS 1 messages the publisher may have unacknowledged (well above the ~25 a 50 ms round
/// trip needs at 500 msg/s, so the window never throttles the open-loop schedule).
const PUBLISHER_INFLIGHT: u16 = 1000;

/// Everything the inner process needs; passed to it as JSON on its command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MqttCell {
    /// The chat traffic.
    pub workload: Workload,
    /// Which side has the one connection carrying every conversation.
    pub fan: Fan,
    /// Loss (applied by `lossy-netns`, whole percents) and delay (by [`TcpDelay`]).
    pub link: LinkShape,
    /// Longest wait for the last deliveries after sending stops.
    pub drain: Duration,
    /// The mosquitto binary.
    pub broker: PathBuf,
}

/// What the inner process measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MqttOutcome {
    /// Loss probability each way.
    pub loss: f64,
    /// Latency of every measured message.
    pub latency: LatencySummary,
    /// Loss, duplicates and reordering over the whole run.
    pub integrity: Integrity,
    /// Publishes the client refused.
    pub send_errors: u64,
    /// Connections lost (every client).
    pub disconnects: u64,
    /// What the delay did.
    pub delay: DelayStats,
}

/// The mosquitto row of one loss rate: measured, or why not.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MqttRow {
    /// Measured.
    Ok(MqttOutcome),
    /// Not run: this machine cannot (no root, no `lossy-netns`, no mosquitto, …).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Ran and failed.
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// Not asked for (`--no-mqtt`, `--smoke`).
    NotRun,
}

impl MqttRow {
    /// The outcome, if measured.
    pub fn outcome(&self) -> Option<&MqttOutcome> {
        match self {
            Self::Ok(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// Where `lossy-netns` is: `explicit` if given, else the shared tools next to the
/// workspace (`../shared/tools/lossy-netns`, from the workspace or from the current
/// directory).
pub fn lossy_netns_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/lossy-netns"),
        PathBuf::from("../shared/tools/lossy-netns"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or(&candidates[0])
        .clone()
}

/// Why the mosquitto cells cannot run on this machine, if they cannot.
pub fn unavailable(lossy_netns: &Path, broker: &Path) -> Option<String> {
    if !lossy_netns.is_file() {
        return Some(format!("{} not found", lossy_netns.display()));
    }
    if !broker.is_file() {
        return Some(format!(
            "{} not found (apt-get install -y mosquitto)",
            broker.display()
        ));
    }
    for tool in ["ip", "nft", "iptables"] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` not found (apt-get install -y nftables iproute2 iptables: \
                 lossy-netns needs the first two, the TCP delay the third)"
            ));
        }
    }
    match effective_uid() {
        Some(0) => None,
        Some(uid) => Some(format!(
            "lossy-netns needs root (network namespaces, nftables); running as uid {uid}"
        )),
        None => Some("cannot tell whether this process runs as root".into()),
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The effective user id, from `/proc/self/status` (no `unsafe` `geteuid` needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs one cell in a fresh lossy namespace by re-invoking this binary with
/// `--mqtt-inner`; waits at most `timeout`.
pub async fn run_in_namespace(cell: &MqttCell, lossy_netns: &Path, timeout: Duration) -> MqttRow {
    let percent = cell.link.loss * 100.0;
    if (percent - percent.round()).abs() > 1e-9 || !(0.0..=100.0).contains(&percent) {
        return MqttRow::Skipped {
            reason: format!("lossy-netns takes whole percents; {percent} % is not one"),
        };
    }
    match run_child(cell, lossy_netns, percent.round() as u32, timeout).await {
        Ok(outcome) => MqttRow::Ok(outcome),
        Err(e) => MqttRow::Failed {
            reason: format!("{e:#}"),
        },
    }
}

async fn run_child(
    cell: &MqttCell,
    lossy_netns: &Path,
    percent: u32,
    timeout: Duration,
) -> Result<MqttOutcome> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let spec = serde_json::to_string(cell)?;
    let mut child = tokio::process::Command::new(lossy_netns)
        .arg(percent.to_string())
        .arg("tcp")
        .arg("--")
        .arg(exe)
        .arg("--mqtt-inner")
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", lossy_netns.display()))?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(s) = stdout.as_mut() {
            s.read_to_string(&mut out).await?;
        }
        if let Some(s) = stderr.as_mut() {
            s.read_to_string(&mut err).await?;
        }
        let status = child.wait().await?;
        anyhow::Ok((status, out, err))
    };
    let (status, out, err) = tokio::time::timeout(timeout, collect)
        .await
        .context("the namespace run did not finish in time")??;
    for line in err.lines() {
        eprintln!("  [mosquitto cell] {line}");
    }
    if !status.success() {
        let why = err
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(INNER_ERROR_PREFIX))
            .unwrap_or("no message");
        bail!("the namespace run failed ({status}): {why}");
    }
    let line = out
        .lines()
        .last()
        .context("the namespace run printed nothing")?;
    serde_json::from_str(line).context("reading the namespace run's result")
}

/// The inner process: runs inside the namespace `lossy-netns` made. Refuses to run in
/// the machine's own namespace, where its firewall rule and MTU change would do harm.
pub async fn run_inner(cell: &MqttCell) -> Result<MqttOutcome> {
    // `ip netns identify` names the namespace this process is in, if `ip netns` made it;
    // in the machine's own namespace it prints nothing.
    let identify = std::process::Command::new("ip")
        .args(["netns", "identify"])
        .output()
        .context("running ip netns identify")?;
    let name = String::from_utf8_lossy(&identify.stdout).trim().to_owned();
    if !name.starts_with("lossy-") {
        bail!("--mqtt-inner must run inside lossy-netns (this namespace: {name:?})");
    }
    // Ethernet-sized packets, as on a real path (loopback would otherwise carry 64 KiB
    // segments, each lost or kept as one).
    let mtu = std::process::Command::new("ip")
        .args(["link", "set", "lo", "mtu", "1500"])
        .status()
        .context("running ip")?;
    if !mtu.success() {
        bail!("ip link set lo mtu 1500 failed ({mtu})");
    }
    let delay = TcpDelay::start(QUEUE_NUM, cell.link.delay)?;
    let dir = tempfile::tempdir()?;
    let mut broker = start_broker(&cell.broker, dir.path()).await?;
    let result = measure(cell).await;
    // Our own child, by its handle; persistence is off, so nothing is lost by killing it.
    let _ = broker.kill().await;
    let delay_stats = delay.stop()?;
    let mut outcome = result?;
    outcome.delay = delay_stats;
    Ok(outcome)
}

/// Writes a config and starts mosquitto; returns once it accepts connections.
async fn start_broker(binary: &Path, dir: &Path) -> Result<tokio::process::Child> {
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {BROKER_PORT} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             set_tcp_nodelay true\n\
             max_inflight_messages 1000\n\
             max_queued_messages 100000\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n"
        ),
    )?;
    let child = tokio::process::Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", BROKER_PORT))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!("mosquitto did not listen within {SETUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn options(id: String) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", BROKER_PORT);
    options
        .set_keep_alive(Duration::from_secs(30))
        // A persistent session: after a reconnect the broker still has the subscription
        // and the unacknowledged messages, and the publisher re-sends its own, as QoS 1
        // promises. (A clean session would lose both.)
        .set_clean_session(false)
        .set_request_channel_capacity(REQUEST_QUEUE);
    options
}

fn event_loop(client_options: MqttOptions) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(client_options, REQUEST_QUEUE);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    (client, events)
}

async fn measure(cell: &MqttCell) -> Result<MqttOutcome> {
    let workload = &cell.workload;
    let base = Instant::now();
    let now_ns = move || base.elapsed().as_nanos() as u64;
    let tracker = Arc::new(std::sync::Mutex::new(Tracker::new(workload.conversations)));
    let disconnects = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = JoinSet::new();
    // `Fan::Out`: one publisher connection, a subscriber connection per topic.
    // `Fan::In`: a publisher connection per topic, one subscriber connection for all.
    let subscriptions: Vec<(String, String)> = match cell.fan {
        Fan::Out => (0..workload.conversations)
            .map(|c| (format!("hol-sub-{c:04}"), topic(c)))
            .collect(),
        Fan::In => vec![("hol-sub".into(), "hol/+".into())],
    };
    let publisher_ids: Vec<String> = match cell.fan {
        Fan::Out => vec!["hol-pub".into()],
        Fan::In => (0..workload.conversations)
            .map(|c| format!("hol-pub-{c:04}"))
            .collect(),
    };
    let mut subscribers = Vec::new();
    for (id, filter) in &subscriptions {
        let (client, events) = event_loop(options(id.clone()));
        client
            .subscribe(filter.clone(), QoS::AtLeastOnce)
            .await
            .context("queueing a subscription")?;
        let tracker = tracker.clone();
        loops.spawn(drive(
            events,
            stop_rx.clone(),
            disconnects.clone(),
            Some(subscribed.clone()),
            move |text| {
                let received = now_ns();
                if let Ok(mut tracker) = tracker.lock() {
                    tracker.record(text, received);
                }
            },
        ));
        subscribers.push(client);
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while subscribed.load(Ordering::Relaxed) < subscriptions.len() as u64 {
        if Instant::now() > deadline {
            bail!("subscriptions not acknowledged within {SETUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut publishers = Vec::new();
    for id in publisher_ids {
        let mut publisher_options = options(id);
        publisher_options.set_inflight(PUBLISHER_INFLIGHT);
        let (publisher, events) = event_loop(publisher_options);
        loops.spawn(drive(
            events,
            stop_rx.clone(),
            disconnects.clone(),
            None,
            |_| {},
        ));
        publishers.push(publisher);
    }

    let start_ns = now_ns() + START_LEAD.as_nanos() as u64;
    let send_errors = Arc::new(AtomicU64::new(0));
    let mut senders = JoinSet::new();
    for conversation in 0..workload.conversations {
        let times: Vec<u64> = workload.schedule(conversation, start_ns).collect();
        let publisher = publishers[conversation % publishers.len()].clone();
        let send_errors = send_errors.clone();
        let bytes = workload.message_bytes;
        senders.spawn(async move {
            let mut seq = 0u64;
            for intended_ns in times {
                tokio::time::sleep_until(base + Duration::from_nanos(intended_ns)).await;
                let text = payload::encode(
                    Header {
                        conversation,
                        seq,
                        intended_ns,
                    },
                    bytes,
                );
                match publisher
                    .publish(topic(conversation), QoS::AtLeastOnce, false, text)
                    .await
                {
                    Ok(()) => seq += 1,
                    Err(_) => {
                        send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (conversation, seq)
        });
    }
    let mut sent = vec![0u64; workload.conversations];
    while let Some(joined) = senders.join_next().await {
        let (conversation, count) = joined.context("a publisher task failed")?;
        sent[conversation] = count;
    }
    let total: u64 = sent.iter().sum();
    let deadline = Instant::now() + cell.drain;
    while Instant::now() < deadline {
        if tracker.lock().map(|t| t.delivered()).unwrap_or(total) >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let tracker = tracker
        .lock()
        .map_err(|_| anyhow::anyhow!("a subscriber panicked"))?
        .clone();
    let measured_from = workload.measured_from_ns(start_ns);
    let outcome = MqttOutcome {
        loss: cell.link.loss,
        latency: LatencySummary::from_ns(
            tracker
                .samples()
                .iter()
                .filter(|s| s.intended_ns >= measured_from)
                .map(|s| s.latency_ns),
        ),
        integrity: tracker.integrity(&sent),
        send_errors: send_errors.load(Ordering::Relaxed),
        disconnects: disconnects.load(Ordering::Relaxed),
        delay: DelayStats::default(),
    };
    for client in subscribers.iter().chain(&publishers) {
        // Best effort: the broker is killed right after anyway.
        let _ = client.try_disconnect();
    }
    stop_tx.send_replace(true);
    while loops.join_next().await.is_some() {}
    Ok(outcome)
}

fn topic(conversation: usize) -> String {
    format!("hol/{conversation:04}")
}

/// Polls one client's event loop until `stop`: publishes go to `on_text`, subscription
/// acknowledgements are counted, lost connections counted and retried after a pause.
async fn drive(
    mut events: EventLoop,
    mut stop: watch::Receiver<bool>,
    disconnects: Arc<AtomicU64>,
    subscribed: Option<Arc<AtomicU64>>,
    mut on_text: impl FnMut(&str) + Send,
) {
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                on_text(std::str::from_utf8(&publish.payload).unwrap_or(""));
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(subscribed) = &subscribed {
                    subscribed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "MQTT connection lost");
                disconnects.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT_PAUSE) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}
