//! The connections benchmark (`quichat-conns`): memory per idle client connection at the
//! edge, and handshakes per second.
//!
//! - [`servers`]: the servers under test as child processes ([`servers::Servers`]), and
//!   reading a process's resident set size.
//! - [`raw_client`]: [`raw_client::Dialer`], many connections per UDP socket, and
//!   [`raw_client::IdleConn`], a welcomed connection that sits idle.
//! - This module: [`connect`] (dial a range of clients with bounded concurrency, timing
//!   each `Hello`/`Welcome`), [`wait_synced`] (every session attached at the core) and
//!   [`check_messages`] (a few messages through random connections at the end, so a
//!   connection that died quietly cannot pass for an idle one).

pub mod raw_client;
pub mod servers;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;
use protocol::SenderKey;
use rand::seq::index::sample;
use tokio::task::JoinSet;
use tokio::time::Instant;

use raw_client::{Dialer, IdleConn};

/// Failure reasons kept per phase (the rest are only counted).
const REASONS_KEPT: usize = 5;

/// What [`connect`] established.
#[derive(Debug)]
pub struct Connected {
    /// The welcomed connections, in no particular order.
    pub conns: Vec<IdleConn>,
    /// Attempts that failed.
    pub failed: usize,
    /// The first few failure reasons.
    pub reasons: Vec<String>,
    /// From the first dial to the last answer.
    pub elapsed: Duration,
    /// QUIC handshake start to `Welcome`, in microseconds.
    pub welcome_us: Histogram<u64>,
}

/// Dials clients `range` with at most `concurrency` handshakes in flight.
pub async fn connect(
    dialer: &Arc<Dialer>,
    range: Range<usize>,
    concurrency: usize,
) -> Result<Connected> {
    let mut welcome_us = Histogram::new_with_bounds(1, 120_000_000, 3)?;
    let mut conns = Vec::with_capacity(range.len());
    let mut failed = 0;
    let mut reasons = Vec::new();
    let mut in_flight = JoinSet::new();
    let mut next = range.start;
    let started = Instant::now();
    loop {
        while next < range.end && in_flight.len() < concurrency.max(1) {
            let dialer = dialer.clone();
            let index = next;
            in_flight.spawn(async move { dialer.dial(index).await });
            next += 1;
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((conn, took)) => {
                let _ = welcome_us.record((took.as_micros() as u64).max(1));
                conns.push(conn);
            }
            Err(e) => {
                failed += 1;
                if reasons.len() < REASONS_KEPT {
                    reasons.push(format!("{e:#}"));
                }
            }
        }
    }
    Ok(Connected {
        conns,
        failed,
        reasons,
        elapsed: started.elapsed(),
        welcome_us,
    })
}

/// Waits until every connection got `Synced` (its session attached at the core), all
/// within `timeout`. Returns how many did not, with the first few reasons.
pub async fn wait_synced(conns: &mut [IdleConn], timeout: Duration) -> (usize, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut missing = 0;
    let mut reasons = Vec::new();
    for conn in conns.iter_mut().filter(|c| !c.is_synced()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = conn.wait_synced(left).await {
            missing += 1;
            if reasons.len() < REASONS_KEPT {
                reasons.push(format!("{}: {e:#}", conn.user));
            }
        }
    }
    (missing, reasons)
}

/// Connections that have closed, with the first few reasons.
pub fn closed(conns: &[IdleConn]) -> (usize, Vec<String>) {
    let reasons: Vec<String> = conns
        .iter()
        .filter_map(|c| c.close_reason().map(|r| format!("{}: {r}", c.user)))
        .collect();
    let count = reasons.len();
    (count, reasons.into_iter().take(REASONS_KEPT).collect())
}

/// What [`check_messages`] found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Liveness {
    /// Messages tried.
    pub tried: usize,
    /// Messages accepted by the core and delivered to their recipient.
    pub delivered: usize,
    /// Why the others failed.
    pub failures: Vec<String>,
}

/// Sends one message from each of `count` random connections to another random
/// connection, and checks each is accepted and delivered (and acknowledged).
pub async fn check_messages(conns: &mut [IdleConn], count: usize, timeout: Duration) -> Liveness {
    let pairs = count.min(conns.len() / 2);
    let picked = sample(&mut rand::rng(), conns.len(), pairs * 2).into_vec();
    let epoch: u64 = rand::random();
    let mut liveness = Liveness {
        tried: pairs,
        ..Liveness::default()
    };
    for (n, pair) in picked.chunks_exact(2).enumerate() {
        let (from, to) = (pair[0], pair[1]);
        let text = format!("liveness check {n}");
        let key = SenderKey {
            epoch,
            counter: n as u64 + 1,
        };
        match check_one(conns, from, to, key, &text, timeout).await {
            Ok(()) => liveness.delivered += 1,
            Err(e) => liveness
                .failures
                .push(format!("{} -> {}: {e:#}", conns[from].user, conns[to].user)),
        }
    }
    liveness
}

async fn check_one(
    conns: &mut [IdleConn],
    from: usize,
    to: usize,
    key: SenderKey,
    text: &str,
    timeout: Duration,
) -> Result<()> {
    let to_user = conns[to].user.clone();
    conns[to].start_reading();
    conns[from].send(&to_user, key, text.to_owned()).await?;
    let accepted = conns[from].wait_accepted(key, timeout).await?;
    let received = conns[to].receive(text, timeout).await?;
    anyhow::ensure!(
        accepted == received,
        "accepted as {accepted:?} but delivered as {received:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{Stack, StackOptions};

    const TIMEOUT: Duration = Duration::from_secs(20);

    fn dialer(stack: &Stack, secret: Vec<u8>, clients: usize, per_endpoint: usize) -> Arc<Dialer> {
        Arc::new(
            Dialer::new(
                stack.edges[0].local_addr(),
                &stack.pki.ca_cert,
                secret,
                clients,
                per_endpoint,
                TIMEOUT,
            )
            .unwrap(),
        )
    }

    // The benchmark's memory figure is only meaningful if its raw clients are real
    // sessions: welcomed by the edge, attached at the core, able to send and receive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_clients_sharing_sockets_are_attached_and_carry_messages() {
        let stack = Stack::start(StackOptions::default()).await.unwrap();
        // 24 clients, 5 per socket: the last socket is shared by fewer.
        let dialer = dialer(&stack, stack.secret.clone(), 24, 5);
        assert_eq!(dialer.endpoints(), 5);

        let mut connected = connect(&dialer, 0..24, 8).await.unwrap();
        assert_eq!(connected.failed, 0, "{:?}", connected.reasons);
        assert_eq!(connected.conns.len(), 24);
        assert_eq!(connected.welcome_us.len(), 24);
        let (not_synced, reasons) = wait_synced(&mut connected.conns, TIMEOUT).await;
        assert_eq!(not_synced, 0, "{reasons:?}");
        assert_eq!(stack.edges[0].stats().clients, 24);

        let liveness = check_messages(&mut connected.conns, 5, TIMEOUT).await;
        assert_eq!(liveness.tried, 5);
        assert_eq!(liveness.delivered, 5, "{:?}", liveness.failures);
        assert_eq!(closed(&connected.conns).0, 0);

        dialer.shutdown().await;
        stack.shutdown().await;
    }

    // A client the edge refuses must count as a failure, never as an idle connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_client_is_counted_as_failed_with_its_reason() {
        let stack = Stack::start(StackOptions::default()).await.unwrap();
        let dialer = dialer(
            &stack,
            b"not-the-edge-secret-0123456789abcdef".to_vec(),
            3,
            100,
        );

        let connected = connect(&dialer, 0..3, 3).await.unwrap();
        assert!(connected.conns.is_empty());
        assert_eq!(connected.failed, 3);
        assert!(
            connected.reasons.iter().all(|r| r.contains("refused")),
            "{:?}",
            connected.reasons
        );

        dialer.shutdown().await;
        stack.shutdown().await;
    }
}
