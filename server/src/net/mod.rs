//! The async shell around the [`Router`]: QUIC endpoint, edge connections, router task,
//! writer thread.
//!
//! ```text
//!  edge conn ─ readers ─┐  (bounded: readers wait)   ┌─ try_send ─► edge lanes / control
//!  edge conn ─ readers ─┼──► router task: Router ────┤
//!                       │    (+ timeout)             └─ WriteBatch ─► writer thread ─► redb
//!                       └──────────────◄──── commit outcome ◄────────┘
//! ```
//!
//! [`Core::start`] opens the store, commits the first id reservation, and only then binds
//! the endpoint. [`CoreHandle::shutdown`] stops taking edges, flushes the accumulating
//! batch and joins the writer.

mod driver;
mod edge;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::ErrorCode;
use protocol::frames::ALPN_CORE;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use transport::TransportProfile;
use transport::tls::{self, ClientAuth};

use crate::config::CoreConfig;
use crate::error::CoreError;
use crate::router::{EdgeId, Router};
use crate::stats::{CoreStats, Counters};
use crate::store::redb_store::RedbStore;
use crate::store::{LogStore, StoreConfig, StoreError};
use driver::{Driver, now};
use edge::EdgeContext;
use writer::Writer;

/// Starts cores.
#[derive(Debug)]
pub struct Core;

/// A running core. Dropping it without [`CoreHandle::shutdown`] leaves the tasks to the
/// runtime (what is committed is safe either way).
#[derive(Debug)]
pub struct CoreHandle {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown: oneshot::Sender<()>,
    router_task: JoinHandle<Writer>,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Core {
    /// Opens the redb store named by `config` and starts serving edges.
    pub async fn start(config: CoreConfig) -> Result<CoreHandle, CoreError> {
        config.validate()?;
        let path = config.db_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let store_config = StoreConfig {
            device_ttl_ms: config.ttl_secs.saturating_mul(1000),
        };
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&path, store_config))
            .await
            .map_err(|e| StoreError::Open(format!("opening task failed: {e}")))??;
        Self::start_with_store(config, Arc::new(store)).await
    }

    /// Starts serving edges over any store (tests use `MemStore` or a failing store).
    /// The store's `device_ttl_ms` should equal `config.ttl_secs` in milliseconds.
    pub async fn start_with_store(
        config: CoreConfig,
        store: Arc<dyn LogStore>,
    ) -> Result<CoreHandle, CoreError> {
        config.validate()?;
        let router_config = config.router_config()?;
        let paths = config.tls_paths()?;
        let server_config = tls::server_config(
            tls::load_certs(&paths.cert)?,
            tls::load_key(&paths.key)?,
            ALPN_CORE,
            ClientAuth::Required(tls::load_certs(&paths.edge_ca)?),
            &TransportProfile::core_link(),
        )?;

        let mut router = Router::new(router_config, store.clone())?;
        let mut writer = writer::spawn(store)?;
        reserve_first_ids(&mut router, &mut writer).await?;
        let counters = router.counters();

        let endpoint = transport::endpoint::server_endpoint(Some(server_config), config.listen)
            .map_err(|source| CoreError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = endpoint.local_addr()?;

        // Bounded: readers wait when the router is behind (see `CoreConfig::router_queue`).
        let (inputs_tx, inputs) = mpsc::channel(config.router_queue);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let room = Arc::new(Notify::new());
        let driver = Driver {
            router,
            writer,
            links: Default::default(),
            room: room.clone(),
        };
        let router_task = tokio::spawn(driver.run(inputs, shutdown_rx));

        let ctx = Arc::new(EdgeContext {
            inputs: inputs_tx,
            shard: protocol::ShardId(config.shard),
            lanes: config.lanes,
            lane_queue: config.lane_queue,
            control_queue: config.control_queue,
            hello_timeout: Duration::from_millis(config.hello_timeout_ms),
            linger: Duration::from_micros(config.edge_linger_us),
            room,
        });
        let accept_task = tokio::spawn(accept_edges(
            endpoint.clone(),
            ctx,
            Arc::new(Semaphore::new(config.edges_max)),
        ));
        tracing::info!(addr = %local_addr, shard = config.shard, "core listening");
        Ok(CoreHandle {
            endpoint,
            local_addr,
            counters,
            shutdown,
            router_task,
            accept_task,
        })
    }
}

/// Commits the first id block before any edge is served, so the very first message
/// already has a durable id.
async fn reserve_first_ids(router: &mut Router, writer: &mut Writer) -> Result<(), CoreError> {
    while !router.ids_ready() {
        let Some(batch) = router.poll_batch(now()) else {
            // Only after a failed commit: the first reservation is refused, do not serve.
            return Err(CoreError::Store(StoreError::Transaction(
                "the first id reservation could not be committed".into(),
            )));
        };
        writer
            .batches
            .send(batch)
            .map_err(|_| CoreError::WriterGone)?;
        let (batch, result) = writer.done.recv().await.ok_or(CoreError::WriterGone)?;
        let failed = result.as_ref().err().map(ToString::to_string);
        router.handle_commit(now(), batch, result);
        if let Some(e) = failed {
            return Err(CoreError::Store(StoreError::Transaction(e)));
        }
    }
    Ok(())
}

/// Accepts edge connections, at most `slots` at once (more are refused at the door).
async fn accept_edges(endpoint: quinn::Endpoint, ctx: Arc<EdgeContext>, slots: Arc<Semaphore>) {
    let next_edge = AtomicU64::new(1);
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "edge limit reached; refusing");
            incoming.refuse();
            continue;
        };
        let edge = EdgeId(next_edge.fetch_add(1, Ordering::Relaxed));
        let ctx = ctx.clone();
        tokio::spawn(async move {
            edge::serve(incoming, edge, ctx).await;
            drop(permit);
        });
    }
}

impl CoreHandle {
    /// The UDP address the core listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters since start.
    pub fn stats(&self) -> CoreStats {
        self.counters.snapshot()
    }

    /// Stops taking edges, closes the connected ones (`ServerShutdown`), commits what has
    /// accumulated, and stops the writer thread.
    pub async fn shutdown(self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(u32::from(ErrorCode::ServerShutdown.to_u16())),
            b"core shutting down",
        );
        self.accept_task.abort();
        let _ = self.shutdown.send(());
        if let Ok(writer) = self.router_task.await {
            // Dropping the batch sender ends the thread once its last commit is done.
            let Writer {
                batches,
                done,
                thread,
            } = writer;
            drop(batches);
            drop(done);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
