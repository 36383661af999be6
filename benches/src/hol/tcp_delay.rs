//! [`TcpDelay`]: a fixed delay on every TCP packet of a network namespace, made in user
//! space with the kernel's packet queue (NFQUEUE), since this kernel has no netem.
//!
//! An iptables `NFQUEUE` rule on the input hook hands each TCP packet to a queue; a
//! thread here holds it for the delay and then lets it through. (iptables rather than
//! nft: this kernel has the xtables `NFQUEUE` target but not nftables' `queue`
//! expression. Whether `lossy-netns`'s drop rule runs before or after it does not
//! matter: every packet gets both the loss draw and the delay.)
//! On loopback every packet passes the input hook exactly once, so each direction gets
//! the delay once: a 25 ms delay makes a 50 ms round trip that both TCP ends see, and
//! their loss recovery runs on that round trip, as it would on a real path. (A TCP proxy
//! that delays the byte stream would not do this: it terminates TCP, so retransmissions
//! would run on a loopback round trip of microseconds, flattering TCP under loss.)
//!
//! Packets are released in arrival order. The thread polls the queue every
//! [`POLL_INTERVAL`], so a packet may be held up to that much longer than the delay.

use std::collections::VecDeque;
use std::io;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// How often the thread looks for new packets and due ones.
pub const POLL_INTERVAL: Duration = Duration::from_micros(200);
/// Packets the kernel queues for us before it drops new ones (as a full router buffer
/// would). At the benchmark's few thousand packets a second and 25 ms, about 100 wait.
pub const QUEUE_PACKETS_MAX: u32 = 16_384;

/// What the delay thread did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DelayStats {
    /// Packets delayed.
    pub packets: u64,
    /// Most any packet was released after its due time, in milliseconds.
    pub late_ms_max: f64,
}

/// A running delay. [`TcpDelay::stop`] removes the rule and lets held packets go.
#[derive(Debug)]
pub struct TcpDelay {
    queue_num: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<DelayStats>>>,
}

impl TcpDelay {
    /// Delays every TCP packet entering this namespace by `delay`, through queue
    /// `queue_num`. Must run as root inside a namespace of its own: it adds a firewall rule.
    pub fn start(queue_num: u16, delay: Duration) -> Result<Self> {
        let mut queue = nfq::Queue::open().context("opening the netfilter queue socket")?;
        queue
            .bind(queue_num)
            .context("binding the netfilter queue (is nfnetlink_queue available?)")?;
        // Metadata only: the packet is let through unchanged, so its bytes need not cross.
        queue.set_copy_range(queue_num, 0)?;
        queue.set_queue_max_len(queue_num, QUEUE_PACKETS_MAX)?;
        queue.set_nonblocking(true);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tcp-delay".into())
                .spawn(move || hold(queue, delay, &stop))
                .context("starting the delay thread")?
        };
        let delay = Self {
            queue_num,
            stop,
            thread: Some(thread),
        };
        // Only now that someone listens: a queue rule with no listener drops everything.
        iptables("-A", queue_num).context("adding the NFQUEUE rule")?;
        Ok(delay)
    }

    /// Removes the rule, releases what is held and stops the thread.
    pub fn stop(mut self) -> Result<DelayStats> {
        let removed = iptables("-D", self.queue_num);
        self.stop.store(true, Ordering::Relaxed);
        let stats = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.context("the delay thread failed")?,
            Some(Err(_)) => bail!("the delay thread panicked"),
            None => DelayStats::default(),
        };
        removed.context("removing the NFQUEUE rule")?;
        Ok(stats)
    }
}

impl Drop for TcpDelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Appends (`-A`) or deletes (`-D`) the rule queueing every incoming TCP packet.
fn iptables(action: &str, queue_num: u16) -> Result<()> {
    let status = Command::new("iptables")
        .args([action, "INPUT", "-p", "tcp", "-j", "NFQUEUE", "--queue-num"])
        .arg(queue_num.to_string())
        .status()
        .context("running iptables")?;
    if !status.success() {
        bail!("iptables {action} INPUT … NFQUEUE failed ({status})");
    }
    Ok(())
}

/// The delay loop: take what arrived, stamp it with its due time, let through what is due.
fn hold(mut queue: nfq::Queue, delay: Duration, stop: &AtomicBool) -> io::Result<DelayStats> {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut stats = DelayStats::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        loop {
            match queue.recv() {
                Ok(message) => {
                    held.push_back((Instant::now() + delay, message));
                    stats.packets += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        while let Some((due, _)) = held.front() {
            if *due > now && !stopping {
                break;
            }
            let late = now.saturating_duration_since(*due);
            if let Some((_, mut message)) = held.pop_front() {
                message.set_verdict(nfq::Verdict::Accept);
                queue.verdict(message)?;
                stats.late_ms_max = stats.late_ms_max.max(late.as_secs_f64() * 1e3);
            }
        }
        if stopping {
            return Ok(stats);
        }
        let until_due = held
            .front()
            .map_or(POLL_INTERVAL, |(due, _)| due.saturating_duration_since(now));
        std::thread::sleep(until_due.min(POLL_INTERVAL));
    }
}
