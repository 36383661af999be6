//! `quichat edge`: run an edge relay from a TOML file, every option also a flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cmd::overrides::Overrides;

/// `quichat edge` flags. Each overrides the config key of the same name (see
/// `edge_relay::EdgeConfig` for meanings and defaults).
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// UDP address game clients connect to.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Certificate chain (PEM) presented to game clients.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for `--cert`.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The core's address (`core.address`).
    #[arg(long)]
    pub core_address: Option<String>,
    /// The name on the core's certificate (`core.server_name`).
    #[arg(long)]
    pub core_server_name: Option<String>,
    /// Microseconds frames for the core may be held back to share datagrams under load
    /// (`core.linger_us`).
    #[arg(long)]
    pub core_linger_us: Option<u64>,
    /// CA certificate(s) (PEM) the core's certificate must chain to.
    #[arg(long)]
    pub core_ca: Option<PathBuf>,
    /// Certificate (PEM) the edge presents to the core.
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) for `--client-cert`.
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// Verify tokens with the HS256 secret in this file (`auth.hs256_secret_file`).
    #[arg(long, conflicts_with = "eddsa_public_key_file")]
    pub hs256_secret_file: Option<PathBuf>,
    /// Verify tokens with the Ed25519 public key in this PEM file
    /// (`auth.eddsa_public_key_file`).
    #[arg(long)]
    pub eddsa_public_key_file: Option<PathBuf>,
    /// Largest message text, in bytes.
    #[arg(long)]
    pub text_bytes_max: Option<usize>,
    /// Sustained messages per second per user.
    #[arg(long)]
    pub send_per_second: Option<u32>,
    /// Burst of messages per user above the sustained rate.
    #[arg(long)]
    pub send_burst: Option<u32>,
    /// Lanes per client connection.
    #[arg(long)]
    pub lanes: Option<u8>,
    /// Most client connections at once.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// This edge's name, for logs.
    #[arg(long)]
    pub name: Option<String>,
    /// Frames queued per client lane before the client counts as too slow.
    #[arg(long)]
    pub client_queue_frames: Option<usize>,
    /// Messages per session awaiting the core's answer.
    #[arg(long)]
    pub inflight_per_session: Option<usize>,
    /// When to copy small deliveries into datagrams on lossy client links: auto, always
    /// or off.
    #[arg(long)]
    pub lane_copies: Option<transport::CopyPolicy>,
}

impl EdgeArgs {
    /// The configuration the file and flags describe.
    pub fn config(&self) -> Result<edge_relay::EdgeConfig> {
        let mut o = Overrides::from_file(self.config.as_deref())?;
        o.set("listen", self.listen.as_ref())?;
        o.set("cert", self.cert.as_ref())?;
        o.set("key", self.key.as_ref())?;
        o.set("core.address", self.core_address.as_ref())?;
        o.set("core.server_name", self.core_server_name.as_ref())?;
        o.set("core.linger_us", self.core_linger_us.as_ref())?;
        o.set("core_ca", self.core_ca.as_ref())?;
        o.set("client_cert", self.client_cert.as_ref())?;
        o.set("client_key", self.client_key.as_ref())?;
        o.set_only("auth", "hs256_secret_file", self.hs256_secret_file.as_ref())?;
        o.set_only(
            "auth",
            "eddsa_public_key_file",
            self.eddsa_public_key_file.as_ref(),
        )?;
        o.set("text_bytes_max", self.text_bytes_max.as_ref())?;
        o.set("send_per_second", self.send_per_second.as_ref())?;
        o.set("send_burst", self.send_burst.as_ref())?;
        o.set("lanes", self.lanes.as_ref())?;
        o.set("max_connections", self.max_connections.as_ref())?;
        o.set("name", self.name.as_ref())?;
        o.set("client_queue_frames", self.client_queue_frames.as_ref())?;
        o.set("inflight_per_session", self.inflight_per_session.as_ref())?;
        o.set("lane_copies", self.lane_copies.as_ref())?;
        Ok(edge_relay::EdgeConfig::from_toml_str(&o.to_toml()?)?)
    }
}

/// Runs the edge until Ctrl-C or SIGTERM.
pub async fn run(args: EdgeArgs) -> Result<()> {
    let config = args.config()?;
    let edge = edge_relay::Edge::start(config)
        .await
        .context("starting the edge")?;
    tracing::info!(addr = %edge.local_addr(), "edge listening for clients");
    println!("edge listening on {}", edge.local_addr());
    crate::shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    Ok(())
}
