//! A user-space UDP proxy that loses, delays, reorders and duplicates datagrams, standing
//! in for netem between a QUIC client and server in tests and benchmarks.
//!
//! [`UdpProxy::start`] binds a listen socket and forwards every client's datagrams to one
//! upstream address, from a socket of its own per client address, so the server sees
//! distinct clients and replies find their way back. Each direction has a [`LinkConfig`]
//! (loss, delay, jitter, reordering, duplication, seed) that can be changed while traffic
//! flows, and a [`LinkStats`] of what it did.
//!
//! # Layout
//!
//! - [`config`]: [`ProxyConfig`], [`LinkConfig`], [`Direction`], the limits, [`ConfigError`].
//! - `link`: the per-direction impairment rules as a sans-IO state machine with a timer
//!   queue, tested on a virtual clock.
//! - `driver`: the tokio tasks around it (listener, per-client upstream readers, one link
//!   task per direction).
//! - [`stats`]: [`ProxyStats`] and [`LinkStats`].

pub mod config;
mod driver;
mod link;
pub mod stats;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use config::{ConfigError, Direction, LinkConfig, ProxyConfig};
pub use stats::{LinkStats, ProxyStats};

use driver::{INGRESS_CHANNEL_CAPACITY, LinkTask, Listener};
use link::Link;
use stats::Counters;

/// A running proxy. Dropping it stops its tasks (abruptly);
/// [`shutdown`](Self::shutdown) stops them and waits until its sockets are closed.
#[derive(Debug)]
pub struct UdpProxy {
    /// The address clients send to.
    local_addr: SocketAddr,
    /// Where datagrams are forwarded.
    upstream: SocketAddr,
    /// Shared with the tasks, which count into it.
    counters: Arc<Counters>,
    /// Each direction's configuration; the link tasks pick up changes per datagram.
    to_upstream: watch::Sender<LinkConfig>,
    to_client: watch::Sender<LinkConfig>,
    /// Set to `true` to ask every task to stop.
    shutdown: watch::Sender<bool>,
    /// The listener and both link tasks. The listener owns the per-client readers.
    tasks: Vec<JoinHandle<()>>,
}

impl UdpProxy {
    /// Binds `config.listen` and starts forwarding to `config.upstream`.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] (wrapping a [`ConfigError`]) on an invalid
    /// configuration, or with the error from binding the listen socket.
    pub async fn start(config: ProxyConfig) -> io::Result<Self> {
        config
            .validate()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let socket = Arc::new(driver::bind_udp(config.listen)?);
        let local_addr = socket.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (to_upstream, to_upstream_config) = watch::channel(config.to_upstream.clone());
        let (to_client, to_client_config) = watch::channel(config.to_client.clone());
        let (to_upstream_tx, to_upstream_rx) = mpsc::channel(INGRESS_CHANNEL_CAPACITY);
        let (to_client_tx, to_client_rx) = mpsc::channel(INGRESS_CHANNEL_CAPACITY);

        let link_task = |direction, input, config_rx: watch::Receiver<LinkConfig>| LinkTask {
            link: Link::new(direction, config.link(direction).clone(), counters.clone()),
            input,
            config: config_rx,
            shutdown: shutdown_rx.clone(),
            counters: counters.clone(),
            direction,
        };
        let tasks = vec![
            tokio::spawn(driver::drive_link(link_task(
                Direction::ToUpstream,
                to_upstream_rx,
                to_upstream_config,
            ))),
            tokio::spawn(driver::drive_link(link_task(
                Direction::ToClient,
                to_client_rx,
                to_client_config,
            ))),
            tokio::spawn(
                Listener {
                    socket,
                    upstream: config.upstream,
                    max_clients: config.max_clients,
                    clients: HashMap::new(),
                    readers: JoinSet::new(),
                    to_upstream: to_upstream_tx,
                    to_client: to_client_tx,
                    counters: counters.clone(),
                    shutdown: shutdown_rx.clone(),
                }
                .run(),
            ),
        ];
        tracing::debug!(%local_addr, upstream = %config.upstream, "udp proxy started");
        Ok(Self {
            local_addr,
            upstream: config.upstream,
            counters,
            to_upstream,
            to_client,
            shutdown,
            tasks,
        })
    }

    /// The address clients send to (with the real port if `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address datagrams are forwarded to.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.counters.snapshot()
    }

    /// The current configuration of one direction.
    pub fn link(&self, direction: Direction) -> LinkConfig {
        self.sender(direction).borrow().clone()
    }

    /// Replaces one direction's configuration. It applies to every datagram the proxy
    /// handles after this returns (and possibly to a few already waiting in its channel);
    /// datagrams already delayed keep their due time.
    pub fn set_link(&self, direction: Direction, config: LinkConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.sender(direction).send_replace(config);
        Ok(())
    }

    /// Replaces both directions' configuration with `config`.
    pub fn set_links(&self, config: LinkConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.to_upstream.send_replace(config.clone());
        self.to_client.send_replace(config);
        Ok(())
    }

    /// Sets the loss probability of both directions, keeping everything else.
    pub fn set_loss(&self, loss: f64) -> Result<(), ConfigError> {
        self.modify_both(|link| link.loss = loss)
    }

    /// Sets the fixed delay of both directions, keeping everything else.
    pub fn set_delay(&self, delay: Duration) -> Result<(), ConfigError> {
        self.modify_both(|link| link.delay = delay)
    }

    /// Stops forwarding and waits until every task has ended and every socket is closed.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            // A task that panicked has nothing left to clean up; the panic was already
            // reported by the runtime.
            let _ = task.await;
        }
    }

    fn sender(&self, direction: Direction) -> &watch::Sender<LinkConfig> {
        match direction {
            Direction::ToUpstream => &self.to_upstream,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Applies `change` to both directions, or to neither if the result is invalid.
    fn modify_both(&self, change: impl Fn(&mut LinkConfig)) -> Result<(), ConfigError> {
        let mut up = self.link(Direction::ToUpstream);
        let mut down = self.link(Direction::ToClient);
        change(&mut up);
        change(&mut down);
        up.validate()?;
        down.validate()?;
        self.to_upstream.send_replace(up);
        self.to_client.send_replace(down);
        Ok(())
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
