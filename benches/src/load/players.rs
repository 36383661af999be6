//! The simulated players: a sender task per pair ([`send`]), fed ticks by the pacer and
//! collecting the server's answers, and a recipient task per pair ([`receive`]) that
//! records every delivery in a [`Tally`]. [`Live`] holds the counters the progress bar
//! shows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use client::{Client, Event, Events, PendingSend, SendError};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use protocol::UserId;
use tokio::sync::mpsc;

use crate::load::message::Header;
use crate::load::pacer::Tick;
use crate::load::tally::{SeqSet, Tally};

/// Counters shared with the progress bar.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) sent: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    /// Set once the run closes its clients: their own closing is no disconnection.
    pub(crate) closing: AtomicBool,
}

impl Live {
    fn disconnected(&self) {
        if !self.closing.load(Ordering::Relaxed) {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What one sender task ends with.
pub(crate) struct SenderReport {
    pub(crate) client: Client,
    pub(crate) accepted: SeqSet,
    pub(crate) sent: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) unanswered: u64,
}

pub(crate) fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    // A panic while holding the lock leaves counts that are still meaningful.
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A recipient: takes every event (so the bounded event queue never fills), records
/// each load message.
pub(crate) async fn receive(
    client: Client,
    mut events: Events,
    tally: Arc<Mutex<Tally>>,
    live: Arc<Live>,
    ns: impl Fn() -> u64,
) {
    while let Some(event) = events.next().await {
        match event {
            Event::Message(message) => {
                let now_ns = ns();
                if let Some(header) = Header::decode(&message.text) {
                    lock(&tally).record(&header, now_ns);
                    live.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Disconnected { .. } => live.disconnected(),
            _ => {}
        }
    }
    drop(client);
}

/// A sender's events: nothing is addressed to it, but its queue must still be drained.
pub(crate) async fn watch_sender_events(mut events: Events, live: Arc<Live>) {
    while let Some(event) = events.next().await {
        if let Event::Disconnected { .. } = event {
            live.disconnected();
        }
    }
}

pub(crate) struct SendTask<N> {
    pub(crate) pair: usize,
    pub(crate) client: Client,
    pub(crate) to: UserId,
    pub(crate) ticks: mpsc::Receiver<Tick>,
    pub(crate) size: usize,
    pub(crate) live: Arc<Live>,
    pub(crate) ns: N,
    pub(crate) answer_deadline: Instant,
}

/// A sender: sends each tick as it comes, and collects the server's answers.
pub(crate) async fn send<N: Fn() -> u64>(task: SendTask<N>) -> SenderReport {
    let SendTask {
        pair,
        client,
        to,
        mut ticks,
        size,
        live,
        ns,
        answer_deadline,
    } = task;
    let mut report = SenderReport {
        client: client.clone(),
        accepted: SeqSet::new(),
        sent: 0,
        errors: BTreeMap::new(),
        unanswered: 0,
    };
    // The answers are polled here, not in a task each: a task per message cost the
    // generator a spawn and two more wake-ups per message, on the quichat side only (the
    // MQTT clients see their PUBACKs in their event loop).
    let mut answers = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Sending first: an answer can wait, a due message cannot.
            biased;
            tick = ticks.recv() => {
                let Some(tick) = tick else { break };
                let header = Header {
                    pair,
                    seq: tick.seq,
                    intended_ns: tick.intended_ns,
                    actual_ns: ns(),
                };
                match client.queue(&to, header.encode(size)).await {
                    Ok(pending) => {
                        report.sent += 1;
                        live.sent.fetch_add(1, Ordering::Relaxed);
                        answers.push(answer(tick.seq, pending));
                    }
                    Err(e) => report.count_error(&e, &live),
                }
            }
            Some(done) = answers.next(), if !answers.is_empty() => {
                report.take_answer(done, &live);
            }
        }
    }
    // The schedule is done: wait for the remaining answers, up to the drain deadline.
    let rest = tokio::time::timeout_at(answer_deadline.into(), async {
        while let Some(done) = answers.next().await {
            report.take_answer(done, &live);
        }
    })
    .await;
    if rest.is_err() {
        report.unanswered = answers.len() as u64;
    }
    report
}

async fn answer(seq: u64, pending: PendingSend) -> (u64, Result<(), SendError>) {
    (seq, pending.accepted().await.map(|_| ()))
}

impl SenderReport {
    fn take_answer(&mut self, (seq, answer): (u64, Result<(), SendError>), live: &Live) {
        match answer {
            Ok(()) => {
                self.accepted.insert(seq);
                live.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.count_error(&e, live),
        }
    }

    fn count_error(&mut self, error: &SendError, live: &Live) {
        let kind = error
            .code()
            .map_or_else(|| "closed".to_owned(), |code| code.to_string());
        *self.errors.entry(kind).or_insert(0) += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
}
