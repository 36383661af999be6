//! One quichat cell: an in-process core and edge with `lanes` lanes, one sender client
//! carrying every conversation, one recipient client per conversation, and every client
//! behind one `testkit` UDP proxy that adds the delay and the loss.
//!
//! ```text
//! sender ──┐                                     ┌──► recipient 0
//!          ├─► UdpProxy (delay, loss) ─► edge ─► core (fan-out back through the edge)
//! recipient i ◄─┘   (each client address gets its own upstream socket)
//! ```
//!
//! The core↔edge link is not impaired: it stands for a data-centre link. Clients connect
//! over a loss-free proxy; the loss is switched on just before the first message, so
//! handshakes under loss do not eat into the measured time.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use client::{Client, CopyPolicy, Event, Events};
use protocol::{ConversationId, UserId};
use serde::Serialize;
use testkit::{LinkConfig, ProxyConfig, UdpProxy};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::payload::{self, Header};
use super::tracker::{Integrity, LatencySummary, Tracker};
use super::{Fan, LinkShape, Workload};
use crate::stack::{Stack, StackOptions};

/// The liveness case: one conversation sends a large burst in the middle of the chat.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Burst {
    /// Messages in the burst, queued at once.
    pub messages: usize,
    /// Bytes per burst message (at most the edge's text limit, 4 KiB by default).
    pub message_bytes: usize,
    /// When it starts, after measurement started.
    pub after: Duration,
}

/// Everything one cell needs.
#[derive(Clone, Debug)]
pub struct QuichatCell {
    /// The chat traffic.
    pub workload: Workload,
    /// Which side has the one connection carrying every conversation.
    pub fan: Fan,
    /// Lanes per direction (the edge announces them; 1 is the one-stream baseline).
    pub lanes: u8,
    /// Lane copies at the edge and every client (the baseline has them off: TCP-like).
    pub copies: CopyPolicy,
    /// Loss and delay between every client and the edge.
    pub link: LinkShape,
    /// Longest wait for the last deliveries after sending stops.
    pub drain: Duration,
    /// The liveness burst, sent by conversation 0, if any.
    pub burst: Option<Burst>,
}

/// What the burst did to everyone else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BurstOutcome {
    /// Messages in the burst.
    pub messages: usize,
    /// Bytes of text in the burst.
    pub bytes: usize,
    /// From the burst's start until its last message was delivered (0 if it never was).
    pub completed_ms: f64,
    /// The window the chatty conversations are measured in: from the burst's start for
    /// `max(completed_ms, 1 s)`, so a fast burst still yields enough samples.
    pub window_ms: f64,
    /// Latency of the other conversations' messages meant to be sent in the window.
    pub chatty: LatencySummary,
    /// The same, for only the conversations on another lane than the burst's (none with
    /// one lane): what lanes alone should protect.
    pub chatty_other_lanes: LatencySummary,
}

/// Counters of the proxy: what the link did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProxyCounts {
    /// Datagrams from clients towards the edge.
    pub to_edge: u64,
    /// Of those, dropped.
    pub to_edge_dropped: u64,
    /// Datagrams from the edge towards clients.
    pub to_clients: u64,
    /// Of those, dropped.
    pub to_clients_dropped: u64,
}

/// The result of one cell.
#[derive(Clone, Debug, Serialize)]
pub struct QuichatOutcome {
    /// Lanes the edge used.
    pub lanes: u8,
    /// Lane copies at the edge and every client.
    pub copies: CopyPolicy,
    /// Loss probability each way.
    pub loss: f64,
    /// Latency of every measured message (without the burst conversation, if any).
    pub latency: LatencySummary,
    /// Loss, duplicates and reordering over the whole run (warm-up and burst included).
    pub integrity: Integrity,
    /// Messages the client could not queue, or the server refused.
    pub send_errors: u64,
    /// Connections lost and re-established during the run (every client).
    pub disconnects: u64,
    /// What the proxy did.
    pub proxy: ProxyCounts,
    /// The liveness burst, if there was one.
    pub burst: Option<BurstOutcome>,
}

/// Messages a client may have waiting for the server's answer. The default (1 024) is
/// two seconds of this workload: a stall that long (the 1 MiB burst at 2 % loss takes
/// about 5 s) would make `queue` refuse messages, and the benchmark would measure the
/// outbox limit instead of the delivery latency. Open loop means every message is sent.
const OUTBOX_MAX: usize = 65_536;
/// How long a cell waits for every client to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Lead time between the last connection and the first intended send.
const START_LEAD: Duration = Duration::from_millis(200);
/// Shortest window in which chatty latency is measured during a burst.
const BURST_WINDOW_MIN: Duration = Duration::from_secs(1);

/// Runs one cell and tears everything down.
pub async fn run(cell: &QuichatCell) -> Result<QuichatOutcome> {
    let workload = &cell.workload;
    // The sender's sustained rate and bursts are far above the edge's default limits
    // (50/s, burst 100); `StackOptions::default` lifts them.
    let (lanes, copies) = (cell.lanes, cell.copies);
    let stack = Stack::start_with(StackOptions::default(), |edge| {
        edge.lanes = lanes;
        edge.lane_copies = copies;
    })
    .await?;
    let link = LinkConfig {
        delay: cell.link.delay,
        seed: cell.link.seed,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(ProxyConfig::new(stack.edges[0].local_addr()).with_links(link))
        .await
        .context("starting the UDP proxy")?;

    // Who talks to whom: conversation `c` is `senders[c]` → `recipients[c]`; with
    // `Fan::Out` every conversation has the same sender, with `Fan::In` the same recipient.
    let one = |name: &str| UserId::new(name);
    let many = |prefix: &str| {
        (0..workload.conversations)
            .map(|c| UserId::new(format!("{prefix}-{c:04}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let (sender_users, recipient_users) = match cell.fan {
        Fan::Out => (vec![one("hol-sender")?], many("hol-recipient")?),
        Fan::In => (many("hol-sender")?, vec![one("hol-recipient")?]),
    };
    let pick = |users: &[UserId], c: usize| users[c % users.len()].clone();
    let conversations: Vec<(UserId, UserId)> = (0..workload.conversations)
        .map(|c| (pick(&sender_users, c), pick(&recipient_users, c)))
        .collect();
    let disconnects = Arc::new(AtomicU64::new(0));
    let users: Vec<UserId> = sender_users
        .iter()
        .chain(&recipient_users)
        .cloned()
        .collect();
    let mut connected =
        tokio::time::timeout(CONNECT_TIMEOUT, connect_all(&stack, &proxy, &users, copies))
            .await
            .context("clients did not connect in time")??;
    let recipients = connected.split_off(sender_users.len());
    let senders = connected;

    proxy
        .set_loss(cell.link.loss)
        .context("setting the proxy's loss")?;
    let base = Instant::now();
    let now_ns = move || base.elapsed().as_nanos() as u64;
    let start_ns = now_ns() + START_LEAD.as_nanos() as u64;

    // Every client's events are drained by a task of its own: recipients record into
    // one tracker, senders only count lost connections.
    let tracker = Arc::new(std::sync::Mutex::new(Tracker::new(workload.conversations)));
    let mut drains = JoinSet::new();
    let mut recipient_clients = Vec::with_capacity(recipients.len());
    for (client, events) in recipients {
        let (tracker, disconnects) = (tracker.clone(), disconnects.clone());
        drains.spawn(async move {
            receive(events, &disconnects, |text| {
                let received = now_ns();
                if let Ok(mut tracker) = tracker.lock() {
                    tracker.record(text, received);
                }
            })
            .await;
        });
        recipient_clients.push(client);
    }
    let mut sender_clients = Vec::with_capacity(senders.len());
    for (client, events) in senders {
        let disconnects = disconnects.clone();
        drains.spawn(async move { receive(events, &disconnects, |_| {}).await });
        sender_clients.push(client);
    }

    // The sending side: one task per conversation, so nothing in this tool makes one
    // conversation wait for another; only the client library and the network can.
    let send_errors = Arc::new(AtomicU64::new(0));
    let burst_start_ns = cell
        .burst
        .map(|b| workload.measured_from_ns(start_ns) + b.after.as_nanos() as u64);
    let mut senders = JoinSet::new();
    for (conversation, (_, to)) in conversations.iter().cloned().enumerate() {
        let plan = SendPlan {
            client: sender_clients[conversation % sender_clients.len()].clone(),
            to,
            conversation,
            times: workload.schedule(conversation, start_ns).collect(),
            message_bytes: workload.message_bytes,
            burst: cell.burst.zip(burst_start_ns).filter(|_| conversation == 0),
            base,
        };
        let send_errors = send_errors.clone();
        senders.spawn(async move { (conversation, plan.run(&send_errors).await) });
    }
    let mut sent = vec![0u64; workload.conversations];
    let mut burst_seqs = 0..0;
    while let Some(joined) = senders.join_next().await {
        let (conversation, report) = joined.context("a sender task failed")?;
        sent[conversation] = report.sent;
        if let Some(seqs) = report.burst_seqs {
            burst_seqs = seqs;
        }
    }

    // Wait (bounded) for the last deliveries.
    let total: u64 = sent.iter().sum();
    let deadline = Instant::now() + cell.drain;
    while Instant::now() < deadline {
        let delivered = tracker.lock().map(|t| t.delivered()).unwrap_or(total);
        if delivered >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let tracker = tracker
        .lock()
        .map_err(|_| anyhow::anyhow!("a receiver panicked"))?
        .clone();
    let stats = proxy.stats();
    let measured_from = workload.measured_from_ns(start_ns);
    let outcome = QuichatOutcome {
        lanes: cell.lanes,
        copies: cell.copies,
        loss: cell.link.loss,
        latency: LatencySummary::from_ns(
            tracker
                .samples()
                .iter()
                .filter(|s| s.intended_ns >= measured_from)
                .filter(|s| cell.burst.is_none() || s.conversation != 0)
                .map(|s| s.latency_ns),
        ),
        integrity: tracker.integrity(&sent),
        send_errors: send_errors.load(Ordering::Relaxed),
        disconnects: disconnects.load(Ordering::Relaxed),
        proxy: ProxyCounts {
            to_edge: stats.to_upstream.received,
            to_edge_dropped: stats.to_upstream.dropped(),
            to_clients: stats.to_client.received,
            to_clients_dropped: stats.to_client.dropped(),
        },
        burst: cell.burst.zip(burst_start_ns).map(|(burst, start)| {
            let lane = |c: usize| {
                let (from, to) = &conversations[c];
                ConversationId::direct(from, to).lane(lanes)
            };
            let other_lane: Vec<bool> = (0..workload.conversations)
                .map(|c| lane(c) != lane(0))
                .collect();
            burst_outcome(&tracker, burst, start, burst_seqs, &other_lane)
        }),
    };

    // Tear down: close every client at once (each waits up to a second for its last
    // acknowledgements), then the proxy and the stack.
    let mut closing = JoinSet::new();
    for client in recipient_clients.into_iter().chain(sender_clients) {
        closing.spawn(async move { client.close().await });
    }
    while closing.join_next().await.is_some() {}
    drains.abort_all();
    proxy.shutdown().await;
    stack.shutdown().await;
    Ok(outcome)
}

type Connected = (Client, Events);

/// Connects every user through the proxy, all at once; the result is in `users` order.
async fn connect_all(
    stack: &Stack,
    proxy: &UdpProxy,
    users: &[UserId],
    copies: CopyPolicy,
) -> Result<Vec<Connected>> {
    let mut connecting = JoinSet::new();
    for (index, user) in users.iter().enumerate() {
        let mut config = stack.client_config(0, user, 1 + index as u64)?;
        config.lane_copies = copies;
        config.edge = proxy.local_addr();
        config.delivery.outbox_max = OUTBOX_MAX;
        // Likewise admission (off by default): a stall must show up as latency here.
        config.delivery.admission = None;
        connecting.spawn(async move { (index, Client::connect(config).await) });
    }
    let mut slots: Vec<Option<Connected>> = (0..users.len()).map(|_| None).collect();
    while let Some(joined) = connecting.join_next().await {
        let (index, result) = joined.context("a connect task failed")?;
        slots[index] = Some(result.with_context(|| format!("connecting {}", users[index]))?);
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Drains a client's events until it closes: message texts go to `on_text`, lost
/// connections are counted.
async fn receive(mut events: Events, disconnects: &AtomicU64, mut on_text: impl FnMut(&str)) {
    while let Some(event) = events.next().await {
        match event {
            Event::Message(message) => on_text(&message.text),
            Event::Disconnected { code, .. } if code != Some(protocol::ErrorCode::NoError) => {
                disconnects.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// What one conversation sent.
struct SendReport {
    /// Messages queued, numbered `0..sent`.
    sent: u64,
    /// The numbers of the burst's messages, if this conversation sent it.
    burst_seqs: Option<Range<u64>>,
}

/// One conversation's sending.
struct SendPlan {
    client: Client,
    to: UserId,
    conversation: usize,
    /// Intended send times of the chat messages (ns after `base`).
    times: Vec<u64>,
    message_bytes: usize,
    /// The burst and its start (ns after `base`), for the conversation that sends it.
    burst: Option<(Burst, u64)>,
    base: Instant,
}

impl SendPlan {
    /// Sends everything on schedule. Answers are awaited at the end, so waiting never
    /// delays a send.
    async fn run(self, send_errors: &AtomicU64) -> SendReport {
        let mut seq = 0u64;
        let mut pending = Vec::with_capacity(self.times.len());
        let mut burst = self.burst;
        let mut burst_seqs = None;
        for &intended_ns in &self.times {
            if let Some((b, start_ns)) = burst.filter(|(_, start)| *start <= intended_ns) {
                burst = None;
                self.sleep_until(start_ns).await;
                let first = seq;
                for _ in 0..b.messages {
                    self.queue(
                        &mut seq,
                        start_ns,
                        b.message_bytes,
                        &mut pending,
                        send_errors,
                    )
                    .await;
                }
                burst_seqs = Some(first..seq);
            }
            self.sleep_until(intended_ns).await;
            self.queue(
                &mut seq,
                intended_ns,
                self.message_bytes,
                &mut pending,
                send_errors,
            )
            .await;
        }
        for answer in pending {
            if answer.accepted().await.is_err() {
                send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        SendReport {
            sent: seq,
            burst_seqs,
        }
    }

    async fn sleep_until(&self, ns: u64) {
        tokio::time::sleep_until(self.base + Duration::from_nanos(ns)).await;
    }

    async fn queue(
        &self,
        seq: &mut u64,
        intended_ns: u64,
        bytes: usize,
        pending: &mut Vec<client::PendingSend>,
        send_errors: &AtomicU64,
    ) {
        let text = payload::encode(
            Header {
                conversation: self.conversation,
                seq: *seq,
                intended_ns,
            },
            bytes,
        );
        match self.client.queue(&self.to, text).await {
            Ok(answer) => {
                pending.push(answer);
                *seq += 1;
            }
            // Not numbered: the tracker then expects only what was queued.
            Err(e) => {
                tracing::warn!(error = %e, "a message could not be queued");
                send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Measures the chatty conversations around the burst sent by conversation 0.
/// `other_lane[c]` says whether conversation `c` rides another lane than the burst.
fn burst_outcome(
    tracker: &Tracker,
    burst: Burst,
    start_ns: u64,
    seqs: Range<u64>,
    other_lane: &[bool],
) -> BurstOutcome {
    let burst_samples = tracker
        .samples()
        .iter()
        .filter(|s| s.conversation == 0 && seqs.contains(&s.seq));
    let (count, done_ns) = burst_samples.fold((0usize, 0u64), |(n, done), s| {
        (n + 1, done.max(s.intended_ns + s.latency_ns))
    });
    let completed_ns = if count >= burst.messages {
        done_ns.saturating_sub(start_ns)
    } else {
        0
    };
    let window_ns = completed_ns.max(BURST_WINDOW_MIN.as_nanos() as u64);
    let in_window = || {
        tracker
            .samples()
            .iter()
            .filter(|s| s.conversation != 0)
            .filter(move |s| s.intended_ns >= start_ns && s.intended_ns < start_ns + window_ns)
    };
    let chatty = LatencySummary::from_ns(in_window().map(|s| s.latency_ns));
    let chatty_other_lanes = LatencySummary::from_ns(
        in_window()
            .filter(|s| other_lane.get(s.conversation).copied().unwrap_or(false))
            .map(|s| s.latency_ns),
    );
    BurstOutcome {
        messages: burst.messages,
        bytes: burst.messages * burst.message_bytes,
        completed_ms: completed_ns as f64 / 1e6,
        window_ms: window_ns as f64 / 1e6,
        chatty,
        chatty_other_lanes,
    }
}
