//! Starting and stopping an edge: [`Edge::start`] builds everything from an
//! [`EdgeConfig`] and returns an [`EdgeHandle`].

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use protocol::ErrorCode;
use protocol::ShardMap;
use protocol::frames::client::Limits;
use protocol::frames::{ALPN_CLIENT, ALPN_CORE};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use transport::TransportProfile;
use transport::tls::{self, ClientAuth};

use crate::auth;
use crate::client;
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::limits::{LIMITER_SWEEP_INTERVAL, SendLimiter};
use crate::session::Registry;
use crate::shared::{Settings, Shared};
use crate::stats::{Counters, EdgeStats};
use crate::upstream::{self, CoreLink, LinkParams};

/// How long [`EdgeHandle::shutdown`] waits for tasks to finish before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Starts edges. (A namespace: the running edge is an [`EdgeHandle`].)
#[derive(Debug)]
pub enum Edge {}

impl Edge {
    /// Validates `config`, loads the certificates and the token key, binds the client
    /// endpoint and starts the core links. Returns as soon as clients can connect: the
    /// core need not be reachable (its links keep retrying, and clients' messages wait
    /// for it). Must be called within a tokio runtime.
    pub async fn start(config: EdgeConfig) -> Result<EdgeHandle, EdgeError> {
        config.validate()?;
        let verifier = auth::verifier_from_config(&config.auth)?;
        let server_config = tls::server_config(
            tls::load_certs(&config.cert)?,
            tls::load_key(&config.key)?,
            ALPN_CLIENT,
            ClientAuth::None,
            // Clients open at most the lanes announced in `Welcome`.
            &TransportProfile::client_link().with_lanes(config.lanes),
        )?;
        let client_config = tls::client_config(
            tls::load_certs(&config.core_ca)?,
            ALPN_CORE,
            Some((
                tls::load_certs(&config.client_cert)?,
                tls::load_key(&config.client_key)?,
            )),
            &TransportProfile::core_link(),
        )?;
        let per_second = NonZeroU32::new(config.send_per_second)
            .ok_or_else(|| EdgeError::Config("send_per_second must be at least 1".into()))?;
        let burst = NonZeroU32::new(config.send_burst)
            .ok_or_else(|| EdgeError::Config("send_burst must be at least 1".into()))?;
        let endpoint = transport::endpoint::server_endpoint(Some(server_config), config.listen)
            .map_err(|source| EdgeError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = endpoint.local_addr().map_err(|source| EdgeError::Bind {
            addr: config.listen,
            source,
        })?;

        // One shard for now; every lookup already goes through the map.
        let shards = ShardMap::single();
        let (links, receivers): (Vec<_>, Vec<_>) = shards
            .shards()
            .iter()
            .map(|&shard| CoreLink::new(shard))
            .unzip();
        let settings = Settings {
            text_bytes_max: config.text_bytes_max,
            lanes: config.lanes,
            client_queue_frames: config.client_queue_frames,
            inflight_per_session: config.inflight_per_session,
            lane_copies: config.lane_copies,
            limits: Limits {
                text_bytes_max: u32::try_from(config.text_bytes_max).unwrap_or(u32::MAX),
                send_per_second: config.send_per_second,
                send_burst: config.send_burst,
                lanes: config.lanes,
            },
        };
        let shared = Arc::new(Shared {
            settings,
            verifier,
            limiter: SendLimiter::new(per_second, burst),
            registry: Registry::default(),
            links: links.clone(),
            shards,
            counters: Counters::default(),
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let params = LinkParams {
            core: config.core.clone(),
            client_config,
            edge_name: config.name.clone(),
            lanes: config.lanes,
        };
        for (link, commands) in links.into_iter().zip(receivers) {
            tasks.spawn(upstream::run(
                link,
                shared.clone(),
                params.clone(),
                commands,
                shutdown_rx.clone(),
            ));
        }
        tasks.spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            config.max_connections,
            shutdown_rx.clone(),
        ));
        tasks.spawn(sweep_limiter(shared.clone(), shutdown_rx));
        tracing::info!(%local_addr, core = %config.core.address, name = %config.name, "edge started");
        Ok(EdgeHandle {
            local_addr,
            endpoint,
            shared,
            shutdown,
            tasks,
        })
    }
}

/// A running edge. Dropping it stops the edge abruptly (tasks aborted); call
/// [`EdgeHandle::shutdown`] to close clients and the core link cleanly.
#[derive(Debug)]
pub struct EdgeHandle {
    local_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl EdgeHandle {
    /// The UDP address clients connect to (useful when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the edge's counters.
    pub fn stats(&self) -> EdgeStats {
        let mut stats = self.shared.counters.snapshot();
        for link in &self.shared.links {
            let link = link.stats();
            stats.core_links_up += u64::from(link.up);
            stats.frames_to_core += link.frames;
            stats.datagrams_to_core += link.datagrams;
            stats.bytes_to_core += link.bytes;
        }
        stats
    }

    /// Closes every client with `ServerShutdown` (they reconnect elsewhere, nothing is
    /// lost: edges hold no durable state), closes the core links and waits briefly for
    /// the tasks to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(
            quinn::VarInt::from_u32(u32::from(ErrorCode::ServerShutdown.to_u16())),
            b"edge shutting down",
        );
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("edge tasks did not stop in time; aborting them");
            self.tasks.shutdown().await;
        }
        // Let the close frames reach the peers.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        tracing::info!("edge stopped");
    }
}

/// Accepts client connections, up to `max_connections` at once.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        clients.spawn(client::serve(shared.clone(), incoming, permit));
                    }
                    Err(_) => {
                        // At the limit: refuse before any handshake work, so a flood of
                        // attempts costs almost nothing. The client retries with backoff.
                        Counters::bump(&shared.counters.refused);
                        tracing::warn!(max_connections, remote = %incoming.remote_address(),
                            "connection limit reached; refusing");
                        incoming.refuse();
                    }
                }
            }
            Some(_) = clients.join_next() => {}
            _ = shutdown.changed() => break,
        }
    }
    endpoint.close(
        quinn::VarInt::from_u32(u32::from(ErrorCode::ServerShutdown.to_u16())),
        b"edge shutting down",
    );
    // Each client task ends once its (now closed) connection reports it.
    while clients.join_next().await.is_some() {}
}

/// Periodically drops rate-limit state of users back at full allowance.
async fn sweep_limiter(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LIMITER_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.limiter.sweep(),
            _ = shutdown.changed() => return,
        }
    }
}
