//! `quichat core`: run a core shard from a TOML file, every option also a flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cmd::overrides::Overrides;

/// `quichat core` flags. Each overrides the config key of the same name (see
/// `server::CoreConfig` for meanings and defaults).
#[derive(Debug, Args)]
pub struct CoreArgs {
    /// The TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// UDP address edges connect to.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the core's files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The redb file (default: DATA_DIR/core.redb).
    #[arg(long)]
    pub db_path: Option<PathBuf>,
    /// The core's certificate chain (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The core's private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) edge client certificates must chain to.
    #[arg(long)]
    pub edge_ca: Option<PathBuf>,
    /// This core's shard number.
    #[arg(long)]
    pub shard: Option<u16>,
    /// Every shard of the deployment (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub shards: Option<Vec<u16>>,
    /// Seconds an undelivered message (and an unseen device) is kept.
    #[arg(long)]
    pub ttl_secs: Option<u64>,
    /// Most undelivered messages per recipient.
    #[arg(long)]
    pub inbox_max: Option<u64>,
    /// Lanes opened to each edge.
    #[arg(long)]
    pub lanes: Option<u8>,
    /// Frames queued per lane towards an edge.
    #[arg(long)]
    pub lane_queue: Option<usize>,
    /// Frames queued on an edge's control stream.
    #[arg(long)]
    pub control_queue: Option<usize>,
    /// Edge frames queued for the router.
    #[arg(long)]
    pub router_queue: Option<usize>,
    /// Message ids reserved on disk at a time.
    #[arg(long)]
    pub id_block: Option<u64>,
    /// Messages per replay page.
    #[arg(long)]
    pub replay_page: Option<usize>,
    /// Most replayed messages a device may have unacknowledged.
    #[arg(long)]
    pub replay_window: Option<usize>,
    /// Seconds between expiry sweeps.
    #[arg(long)]
    pub expire_interval_secs: Option<u64>,
    /// Milliseconds accepted messages wait for acknowledgements before being written.
    #[arg(long)]
    pub commit_delay_ms: Option<u64>,
    /// Most messages waiting for the disk at once.
    #[arg(long)]
    pub pending_max: Option<usize>,
    /// Most edge connections at once.
    #[arg(long)]
    pub edges_max: Option<usize>,
    /// Microseconds frames for an edge may be held back to share datagrams under load.
    #[arg(long)]
    pub edge_linger_us: Option<u64>,
    /// Milliseconds a new edge has to say hello.
    #[arg(long)]
    pub hello_timeout_ms: Option<u64>,
}

impl CoreArgs {
    /// The configuration the file and flags describe.
    pub fn config(&self) -> Result<server::CoreConfig> {
        let mut o = Overrides::from_file(self.config.as_deref())?;
        o.set("listen", self.listen.as_ref())?;
        o.set("data_dir", self.data_dir.as_ref())?;
        o.set("db_path", self.db_path.as_ref())?;
        o.set("cert", self.cert.as_ref())?;
        o.set("key", self.key.as_ref())?;
        o.set("edge_ca", self.edge_ca.as_ref())?;
        o.set("shard", self.shard.as_ref())?;
        o.set("shards", self.shards.as_ref())?;
        o.set("ttl_secs", self.ttl_secs.as_ref())?;
        o.set("inbox_max", self.inbox_max.as_ref())?;
        o.set("lanes", self.lanes.as_ref())?;
        o.set("lane_queue", self.lane_queue.as_ref())?;
        o.set("control_queue", self.control_queue.as_ref())?;
        o.set("router_queue", self.router_queue.as_ref())?;
        o.set("id_block", self.id_block.as_ref())?;
        o.set("replay_page", self.replay_page.as_ref())?;
        o.set("replay_window", self.replay_window.as_ref())?;
        o.set("expire_interval_secs", self.expire_interval_secs.as_ref())?;
        o.set("commit_delay_ms", self.commit_delay_ms.as_ref())?;
        o.set("pending_max", self.pending_max.as_ref())?;
        o.set("edges_max", self.edges_max.as_ref())?;
        o.set("edge_linger_us", self.edge_linger_us.as_ref())?;
        o.set("hello_timeout_ms", self.hello_timeout_ms.as_ref())?;
        Ok(server::CoreConfig::from_toml(&o.to_toml()?)?)
    }
}

/// Runs the core until Ctrl-C or SIGTERM.
pub async fn run(args: CoreArgs) -> Result<()> {
    let config = args.config()?;
    let core = server::Core::start(config)
        .await
        .context("starting the core")?;
    tracing::info!(addr = %core.local_addr(), "core listening for edges");
    // Scripts and tests read the bound address (the port may be 0 in the config).
    println!("core listening on {}", core.local_addr());
    crate::shutdown_signal().await;
    tracing::info!("shutting down");
    core.shutdown().await;
    Ok(())
}
