//! A core and its edges in this process, on a temporary directory with the dev PKI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use edge_relay::config::{AuthConfig, CoreConfig as EdgeCoreLink, EdgeTlsPaths};
use protocol::{DeviceId, UserId};
use transport::DevPki;

/// A running core with `edges.len()` edges.
pub struct Stack {
    /// The directory holding the store, certificates and token secret.
    pub dir: tempfile::TempDir,
    /// The dev PKI.
    pub pki: DevPki,
    /// The token secret.
    pub secret: Vec<u8>,
    /// The core.
    pub core: server::CoreHandle,
    /// The edges.
    pub edges: Vec<edge_relay::EdgeHandle>,
}

/// How to build the stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Number of edges.
    pub edges: usize,
    /// Per-user sustained send rate the edges allow.
    pub send_per_second: u32,
    /// Per-user burst the edges allow.
    pub send_burst: u32,
    /// The edge↔core hold-back, µs, both ways (`None`: the default).
    pub link_linger_us: Option<u64>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            edges: 1,
            send_per_second: 100_000,
            send_burst: 100_000,
            link_linger_us: None,
        }
    }
}

impl Stack {
    /// Starts a core and the edges.
    pub async fn start(options: StackOptions) -> Result<Self> {
        Self::start_with(options, |_| {}).await
    }

    /// Like [`Stack::start`], with `edit` applied to every edge's configuration just
    /// before that edge starts (for benchmarks that vary an edge setting, such as lanes).
    pub async fn start_with(
        options: StackOptions,
        edit: impl Fn(&mut edge_relay::EdgeConfig),
    ) -> Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let pki = DevPki::ensure(dir.path())?;
        let secret_file = dir.path().join("token-secret");
        std::fs::write(&secret_file, "bench-secret-0123456789abcdef0123456789")?;
        let secret = edge_relay::auth::load_hs256_secret(&secret_file)?;
        let core = server::Core::start(server::CoreConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_owned(),
            cert: Some(pki.core_cert.clone()),
            key: Some(pki.core_key.clone()),
            edge_ca: Some(pki.ca_cert.clone()),
            inbox_max: 1_000_000,
            edge_linger_us: options
                .link_linger_us
                .unwrap_or(transport::group::LINK_LINGER_US_DEFAULT),
            ..server::CoreConfig::default()
        })
        .await
        .context("starting the core")?;
        let mut edges = Vec::new();
        for i in 0..options.edges.max(1) {
            let mut config = edge_relay::EdgeConfig::new(
                EdgeTlsPaths::from_dev_pki(&pki),
                EdgeCoreLink::new(
                    core.local_addr().to_string(),
                    transport::pki::DEV_SERVER_NAME,
                ),
                AuthConfig::Hs256SecretFile(secret_file.clone()),
            );
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.name = format!("edge-{i}");
            config.send_per_second = options.send_per_second;
            config.send_burst = options.send_burst;
            if let Some(us) = options.link_linger_us {
                config.core.linger_us = us;
            }
            edit(&mut config);
            edges.push(
                edge_relay::Edge::start(config)
                    .await
                    .context("starting an edge")?,
            );
        }
        Ok(Self {
            dir,
            pki,
            secret,
            core,
            edges,
        })
    }

    /// A client configuration for `user` on edge `edge` with device `device`.
    pub fn client_config(
        &self,
        edge: usize,
        user: &UserId,
        device: u64,
    ) -> Result<client::ClientConfig> {
        let token =
            edge_relay::auth::mint_hs256(&self.secret, user, None, Duration::from_secs(3600))?;
        let roots = transport::tls::load_certs(&self.pki.ca_cert)?;
        Ok(client::ClientConfig::new(
            self.edges[edge % self.edges.len()].local_addr(),
            transport::pki::DEV_SERVER_NAME,
            roots,
            token,
            DeviceId(device),
        ))
    }

    /// The redb file of the core.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("core.redb")
    }

    /// Stops the edges, then the core.
    pub async fn shutdown(self) {
        for edge in self.edges {
            edge.shutdown().await;
        }
        self.core.shutdown().await;
    }
}
