//! [`CoreConfig`]: everything a core process is told, as read from TOML.
//!
//! Parsing gives plain data with defaults for every field ([`CoreConfig::from_toml`]);
//! [`CoreConfig::validate`] then checks it and derives the paths and the router's settings,
//! so a bad configuration fails at start with a clear message rather than at first use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::limits::{LANES_DEFAULT, LANES_MAX};
use protocol::{ShardId, ShardMap};
use serde::Deserialize;

use crate::error::CoreError;
use crate::router::RouterConfig;

/// The core's configuration. Every field has a default, so an empty file is valid apart
/// from the TLS files, which must be named.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// UDP address edges connect to.
    pub listen: SocketAddr,
    /// Directory for the core's files (the database unless `db_path` is set).
    pub data_dir: PathBuf,
    /// The redb file; defaults to `data_dir/core.redb`.
    pub db_path: Option<PathBuf>,
    /// The core's certificate chain (PEM), presented to edges.
    pub cert: Option<PathBuf>,
    /// The core's private key (PEM).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that edge client certificates must chain to (mutual TLS).
    pub edge_ca: Option<PathBuf>,
    /// This core's shard number.
    pub shard: u16,
    /// Every shard of the deployment (must include `shard`); users are assigned by
    /// rendezvous hashing over this list.
    pub shards: Vec<u16>,
    /// How long an undelivered message is kept, and how long an unseen device still
    /// holds messages back, in seconds.
    pub ttl_secs: u64,
    /// Most undelivered messages per recipient; more are refused with `InboxFull`.
    pub inbox_max: u64,
    /// Lanes (unidirectional streams) the core opens to each edge.
    pub lanes: u8,
    /// Frames queued per lane towards an edge. When a lane is full, the sessions whose
    /// delivery did not fit catch up from the store instead of being buffered.
    pub lane_queue: usize,
    /// Frames queued on an edge's control stream. When it is full the edge is not
    /// reading and is disconnected (`SlowConsumer`).
    pub control_queue: usize,
    /// Edge frames queued for the router. When full, edge readers wait, and QUIC flow
    /// control slows the edges down.
    pub router_queue: usize,
    /// Message ids reserved on disk at a time.
    pub id_block: u64,
    /// Messages per replay page.
    pub replay_page: usize,
    /// Most replayed messages a device may have unacknowledged before replay waits for
    /// its acks. Keep it below the edges' per-client queue (`client_queue_frames`).
    pub replay_window: usize,
    /// How often expired messages and stale devices are removed, in seconds.
    pub expire_interval_secs: u64,
    /// How long, in milliseconds, accepted messages wait for their recipients'
    /// acknowledgements before being written: a message every device acknowledges in that
    /// time is never written at all (most of them, when recipients are online). An
    /// offline recipient's sender hears `Accepted` this much later. 0 writes as soon as
    /// the disk is free.
    pub commit_delay_ms: u64,
    /// How long, in milliseconds, acknowledgements wait before being written when no
    /// message waits with them (never less than `commit_delay_ms`). A crash loses at most
    /// this much of them, which only means those messages are delivered again (the client
    /// drops what it already showed); longer waits write them in fewer, cheaper commits.
    pub ack_commit_delay_ms: u64,
    /// Most messages waiting for the disk at once; beyond it submits are refused with
    /// `Unavailable`.
    pub pending_max: usize,
    /// Most text bytes waiting for the disk at once, with the same policy.
    pub pending_bytes_max: usize,
    /// Most edge connections at once; more are refused.
    pub edges_max: usize,
    /// How long, in microseconds, frames for an edge may be held back to share
    /// datagrams when that link wrote less than this long ago (a frame after a quiet
    /// spell goes at once). Under load it caps each link at one flush per interval,
    /// cutting datagrams and CPU per message; it adds at most this much latency. 0 turns
    /// it off.
    pub edge_linger_us: u64,
    /// How long a new edge has to send `EdgeHello`, in milliseconds.
    pub hello_timeout_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        let router = RouterConfig::default();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            data_dir: PathBuf::from("quichat-data"),
            db_path: None,
            cert: None,
            key: None,
            edge_ca: None,
            shard: 0,
            shards: vec![0],
            ttl_secs: router.ttl_ms / 1000,
            inbox_max: router.inbox_max,
            lanes: LANES_DEFAULT,
            lane_queue: 1024,
            control_queue: 4096,
            router_queue: 4096,
            id_block: router.id_block,
            replay_page: router.replay_page,
            replay_window: router.replay_window,
            expire_interval_secs: router.expire_interval.as_secs(),
            commit_delay_ms: u64::try_from(router.commit_delay.as_millis()).unwrap_or(u64::MAX),
            ack_commit_delay_ms: u64::try_from(router.ack_commit_delay.as_millis())
                .unwrap_or(u64::MAX),
            pending_max: router.pending_max,
            pending_bytes_max: router.pending_bytes_max,
            edges_max: 256,
            edge_linger_us: transport::group::LINK_LINGER_US_DEFAULT,
            hello_timeout_ms: 10_000,
        }
    }
}

/// The TLS files of a validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct TlsPaths {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) edge_ca: PathBuf,
}

impl CoreConfig {
    /// Parses TOML; missing fields take their defaults, unknown fields are refused.
    pub fn from_toml(text: &str) -> Result<Self, CoreError> {
        toml::from_str(text).map_err(|e| CoreError::Config(e.to_string()))
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.db_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("core.redb"))
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), CoreError> {
        self.tls_paths()?;
        self.router_config()?;
        let positive = [
            ("lane_queue", self.lane_queue),
            ("control_queue", self.control_queue),
            ("router_queue", self.router_queue),
            ("edges_max", self.edges_max),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(CoreError::Config(format!("{name} must be at least 1")));
        }
        Ok(())
    }

    pub(crate) fn tls_paths(&self) -> Result<TlsPaths, CoreError> {
        let need = |p: &Option<PathBuf>, name: &str| {
            p.clone()
                .ok_or_else(|| CoreError::Config(format!("`{name}` (a PEM file) is required")))
        };
        Ok(TlsPaths {
            cert: need(&self.cert, "cert")?,
            key: need(&self.key, "key")?,
            edge_ca: need(&self.edge_ca, "edge_ca")?,
        })
    }

    /// The router's settings.
    pub fn router_config(&self) -> Result<RouterConfig, CoreError> {
        if self.lanes == 0 || self.lanes > LANES_MAX {
            return Err(CoreError::Config(format!("lanes must be 1..={LANES_MAX}")));
        }
        if !self.shards.contains(&self.shard) {
            return Err(CoreError::Config(format!(
                "shard {} is not in shards",
                self.shard
            )));
        }
        let shard_map = ShardMap::new(self.shards.iter().copied().map(ShardId).collect())
            .ok_or_else(|| CoreError::Config("shards is empty".into()))?;
        if self.ttl_secs == 0
            || self.inbox_max == 0
            || self.replay_page == 0
            || self.replay_window == 0
        {
            return Err(CoreError::Config(
                "ttl_secs, inbox_max, replay_page, replay_window must be > 0".into(),
            ));
        }
        if self.edge_linger_us > 100_000 {
            return Err(CoreError::Config(
                "edge_linger_us must be at most 100000 (every message waits up to it)".into(),
            ));
        }
        if self.commit_delay_ms > 1000 {
            return Err(CoreError::Config(
                "commit_delay_ms must be at most 1000 (senders wait for it)".into(),
            ));
        }
        if self.ack_commit_delay_ms > 10_000 {
            return Err(CoreError::Config(
                "ack_commit_delay_ms must be at most 10000 (a crash loses that much of them)"
                    .into(),
            ));
        }
        if self.id_block < 2 || self.expire_interval_secs == 0 || self.pending_max == 0 {
            return Err(CoreError::Config(
                "id_block must be >= 2; expire_interval_secs, pending_max > 0".into(),
            ));
        }
        // Replay must be able to send a page with room left for live traffic.
        let replay_headroom = self.lane_queue / 4;
        if self.replay_page + replay_headroom > self.lane_queue {
            return Err(CoreError::Config(format!(
                "replay_page ({}) must leave a quarter of lane_queue ({}) free",
                self.replay_page, self.lane_queue
            )));
        }
        Ok(RouterConfig {
            shard: ShardId(self.shard),
            shard_map,
            ttl_ms: self.ttl_secs.saturating_mul(1000),
            inbox_max: self.inbox_max,
            lanes: self.lanes,
            id_block: self.id_block,
            replay_page: self.replay_page,
            replay_window: self.replay_window,
            replay_headroom,
            expire_interval: Duration::from_secs(self.expire_interval_secs),
            pending_max: self.pending_max,
            pending_bytes_max: self.pending_bytes_max,
            commit_delay: Duration::from_millis(self.commit_delay_ms),
            ack_commit_delay: Duration::from_millis(self.ack_commit_delay_ms),
            ..RouterConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_almost_empty_file_takes_the_defaults() {
        let config = CoreConfig::from_toml(
            "cert = \"c.pem\"\nkey = \"k.pem\"\nedge_ca = \"ca.pem\"\nlisten = \"127.0.0.1:9000\"",
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.inbox_max, 10_000);
        assert_eq!(config.ttl_secs, 7 * 24 * 3600);
        assert_eq!(config.db_path(), PathBuf::from("quichat-data/core.redb"));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(
            CoreConfig::from_toml("inbox_maxx = 3").is_err(),
            "typo must not be ignored"
        );
        let no_tls = CoreConfig::default();
        assert!(matches!(no_tls.validate(), Err(CoreError::Config(m)) if m.contains("cert")));
        let wrong_shard = CoreConfig {
            shard: 3,
            ..CoreConfig::default()
        };
        assert!(wrong_shard.router_config().is_err());
        let too_many_lanes = CoreConfig {
            lanes: LANES_MAX + 1,
            ..CoreConfig::default()
        };
        assert!(too_many_lanes.router_config().is_err());
        let ack_delay_too_long = CoreConfig {
            ack_commit_delay_ms: 10_001,
            ..CoreConfig::default()
        };
        assert!(matches!(
            ack_delay_too_long.router_config(),
            Err(CoreError::Config(m)) if m.contains("ack_commit_delay_ms")
        ));
    }

    #[test]
    fn the_acknowledgement_delay_reaches_the_router() {
        let config = CoreConfig::from_toml("ack_commit_delay_ms = 200").unwrap();
        let router = config.router_config().unwrap();
        assert_eq!(router.ack_commit_delay, Duration::from_millis(200));
        let default = CoreConfig::default().router_config().unwrap();
        assert_eq!(default.ack_commit_delay, Duration::from_millis(50));
    }
}
