//! The edge's configuration: plain data read from TOML, checked by
//! [`EdgeConfig::validate`] before anything starts.
//!
//! Paths and addresses are required; every tuning knob has a default, so a minimal file
//! names only the certificates, the core and the token key:
//!
//! ```toml
//! cert = "edge-cert.pem"
//! key = "edge-key.pem"
//! core_ca = "ca.pem"
//! client_cert = "edge-client-cert.pem"
//! client_key = "edge-client-key.pem"
//!
//! [core]
//! address = "127.0.0.1:4434"
//!
//! [auth]
//! hs256_secret_file = "token-secret"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use protocol::limits::{
    EDGE_NAME_BYTES_MAX, LANES_DEFAULT, LANES_MAX, TEXT_BYTES_MAX_CEILING, TEXT_BYTES_MAX_DEFAULT,
};
use serde::Deserialize;
use transport::CopyPolicy;

use crate::error::EdgeError;

/// Everything an edge needs to run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// UDP address game clients connect to. Port 0 picks a free port (see
    /// [`crate::EdgeHandle::local_addr`]). Default `0.0.0.0:4433`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain the edge presents to game clients.
    pub cert: PathBuf,
    /// PEM private key for [`EdgeConfig::cert`].
    pub key: PathBuf,
    /// Where the core shard is and the name on its certificate.
    pub core: CoreConfig,
    /// PEM CA certificate(s) the core's certificate must chain to.
    pub core_ca: PathBuf,
    /// PEM certificate the edge presents to the core (mutual TLS).
    pub client_cert: PathBuf,
    /// PEM private key for [`EdgeConfig::client_cert`].
    pub client_key: PathBuf,
    /// How client tokens are verified.
    pub auth: AuthConfig,
    /// Largest message text accepted from a client, in bytes. Default
    /// [`TEXT_BYTES_MAX_DEFAULT`], at most [`TEXT_BYTES_MAX_CEILING`].
    #[serde(default = "default_text_bytes_max")]
    pub text_bytes_max: usize,
    /// Sustained messages per second one user may send, across all their devices.
    /// Default 50.
    #[serde(default = "default_send_per_second")]
    pub send_per_second: u32,
    /// Messages a user may send in a burst above the sustained rate. Default 100.
    #[serde(default = "default_send_burst")]
    pub send_burst: u32,
    /// Message lanes per direction, towards clients and towards the core (1 is the
    /// TCP-like baseline). Default [`LANES_DEFAULT`], at most [`LANES_MAX`].
    #[serde(default = "default_lanes")]
    pub lanes: u8,
    /// Most client connections held at once; further connection attempts are refused.
    /// Default 10 000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// This edge's name, sent to the core for its logs. Default `"edge"`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Deliveries queued per client lane before the client counts as too slow and is
    /// closed with `SlowConsumer`. Default 8192 (keep it above the core's
    /// `replay_window`, 4096 by default). Slots are allocated as they fill, 32 at a time,
    /// so an idle client costs little whatever the bound.
    #[serde(default = "default_client_queue_frames")]
    pub client_queue_frames: usize,
    /// Messages per session sent to the core and not yet answered (`Accepted` or
    /// `Rejected`). When full, the edge stops reading that client's lanes until the core
    /// answers (back-pressure, not rejection). Default 256.
    #[serde(default = "default_inflight_per_session")]
    pub inflight_per_session: usize,
    /// When to send a second copy of small deliveries in a QUIC datagram, so that a
    /// packet lost on a lossy client link costs a few milliseconds instead of a round
    /// trip and a half: `"auto"` (default: while the connection is losing packets),
    /// `"always"` or `"off"`. With `"off"` the edge also neither asks for nor reads its
    /// clients' copies. See `transport::copies`.
    #[serde(default)]
    pub lane_copies: CopyPolicy,
}

/// The core shard the edge connects to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// `host:port` of the core; resolved again on every reconnect.
    pub address: String,
    /// The name the core's certificate must carry. Default: the host part of
    /// [`CoreConfig::address`].
    #[serde(default)]
    pub server_name: Option<String>,
    /// How long, in microseconds, frames for the core may be held back to share
    /// datagrams when the link wrote less than this long ago (a frame after a quiet spell
    /// goes at once). Under load it caps the link at one flush per interval, which cuts
    /// the datagrams per message and the CPU they cost; it adds at most this much latency.
    /// 0 turns it off. Default [`transport::group::LINK_LINGER_US_DEFAULT`].
    #[serde(default = "default_linger_us")]
    pub linger_us: u64,
}

fn default_linger_us() -> u64 {
    transport::group::LINK_LINGER_US_DEFAULT
}

impl CoreConfig {
    /// A core at `address`, checked against `server_name`.
    pub fn new(address: impl Into<String>, server_name: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            server_name: Some(server_name.into()),
            linger_us: default_linger_us(),
        }
    }

    /// The name to check the core's certificate against.
    pub fn server_name(&self) -> &str {
        if let Some(name) = &self.server_name {
            return name;
        }
        // "host:port", "[v6]:port" or a bare host.
        let host = match self.address.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => &self.address,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Which key client tokens are verified with. Exactly one, written as a TOML table with
/// one key, e.g. `[auth]` `hs256_secret_file = "secret"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// HS256 with the shared secret in this file (its bytes, trailing whitespace
    /// removed; see [`crate::auth::load_hs256_secret`]).
    Hs256SecretFile(PathBuf),
    /// EdDSA (Ed25519) with the public key in this PEM file.
    EddsaPublicKeyFile(PathBuf),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4433))
}
fn default_text_bytes_max() -> usize {
    TEXT_BYTES_MAX_DEFAULT
}
fn default_send_per_second() -> u32 {
    50
}
fn default_send_burst() -> u32 {
    100
}
fn default_lanes() -> u8 {
    LANES_DEFAULT
}
fn default_max_connections() -> usize {
    10_000
}
fn default_name() -> String {
    "edge".into()
}
fn default_client_queue_frames() -> usize {
    8192
}
fn default_inflight_per_session() -> usize {
    256
}

impl EdgeConfig {
    /// A configuration with every default, given the required parts.
    pub fn new(tls: EdgeTlsPaths, core: CoreConfig, auth: AuthConfig) -> Self {
        Self {
            listen: default_listen(),
            cert: tls.cert,
            key: tls.key,
            core,
            core_ca: tls.core_ca,
            client_cert: tls.client_cert,
            client_key: tls.client_key,
            auth,
            text_bytes_max: default_text_bytes_max(),
            send_per_second: default_send_per_second(),
            send_burst: default_send_burst(),
            lanes: default_lanes(),
            max_connections: default_max_connections(),
            name: default_name(),
            client_queue_frames: default_client_queue_frames(),
            inflight_per_session: default_inflight_per_session(),
            lane_copies: CopyPolicy::default(),
        }
    }

    /// Parses a TOML document and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, EdgeError> {
        let config: Self = toml::from_str(text).map_err(|e| EdgeError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file and validates it. Relative paths inside stay relative to the
    /// working directory.
    pub fn from_toml_file(path: &Path) -> Result<Self, EdgeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EdgeError::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_toml_str(&text)
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), EdgeError> {
        let bad = |what: String| Err(EdgeError::Config(what));
        if self.text_bytes_max == 0 || self.text_bytes_max > TEXT_BYTES_MAX_CEILING {
            return bad(format!(
                "text_bytes_max is {}; it must be between 1 and {TEXT_BYTES_MAX_CEILING}",
                self.text_bytes_max
            ));
        }
        if self.send_per_second == 0 || self.send_burst == 0 {
            return bad("send_per_second and send_burst must be at least 1".into());
        }
        if self.lanes == 0 || self.lanes > LANES_MAX {
            return bad(format!(
                "lanes is {}; it must be between 1 and {LANES_MAX}",
                self.lanes
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.client_queue_frames == 0 || self.inflight_per_session == 0 {
            return bad("client_queue_frames and inflight_per_session must be at least 1".into());
        }
        // The semaphore behind the in-flight window holds at most this many permits.
        if self.inflight_per_session > tokio::sync::Semaphore::MAX_PERMITS {
            return bad("inflight_per_session is too large".into());
        }
        if self.name.is_empty() || self.name.len() > EDGE_NAME_BYTES_MAX {
            return bad(format!("name must be 1 to {EDGE_NAME_BYTES_MAX} bytes"));
        }
        if self.core.address.is_empty() || self.core.server_name().is_empty() {
            return bad("core.address must be host:port".into());
        }
        Ok(())
    }
}

/// The certificate and key files an edge needs, grouped so [`EdgeConfig::new`] stays
/// readable. [`EdgeTlsPaths::from_dev_pki`] fills them from a [`transport::DevPki`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeTlsPaths {
    /// See [`EdgeConfig::cert`].
    pub cert: PathBuf,
    /// See [`EdgeConfig::key`].
    pub key: PathBuf,
    /// See [`EdgeConfig::core_ca`].
    pub core_ca: PathBuf,
    /// See [`EdgeConfig::client_cert`].
    pub client_cert: PathBuf,
    /// See [`EdgeConfig::client_key`].
    pub client_key: PathBuf,
}

impl EdgeTlsPaths {
    /// The dev PKI's edge certificates (for `quichat dev` and tests).
    pub fn from_dev_pki(pki: &transport::DevPki) -> Self {
        Self {
            cert: pki.edge_cert.clone(),
            key: pki.edge_key.clone(),
            core_ca: pki.ca_cert.clone(),
            client_cert: pki.edge_client_cert.clone(),
            client_key: pki.edge_client_key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        cert = "edge-cert.pem"
        key = "edge-key.pem"
        core_ca = "ca.pem"
        client_cert = "edge-client-cert.pem"
        client_key = "edge-client-key.pem"

        [core]
        address = "core.example:4434"

        [auth]
        hs256_secret_file = "secret"
    "#;

    #[test]
    fn a_minimal_file_gets_every_default() {
        let config = EdgeConfig::from_toml_str(MINIMAL).unwrap();
        assert_eq!(config.text_bytes_max, TEXT_BYTES_MAX_DEFAULT);
        assert_eq!(config.lanes, LANES_DEFAULT);
        assert_eq!(config.send_per_second, 50);
        assert_eq!(config.send_burst, 100);
        assert_eq!(config.auth, AuthConfig::Hs256SecretFile("secret".into()));
        assert_eq!(config.core.server_name(), "core.example");
    }

    #[test]
    fn the_eddsa_key_and_tuning_knobs_are_read() {
        let text = MINIMAL.replace("hs256_secret_file", "eddsa_public_key_file");
        // Top-level keys go before the first table.
        let text = format!("text_bytes_max = 100\nlanes = 1\nname = \"eu-1\"\n{text}");
        let config = EdgeConfig::from_toml_str(&text).unwrap();
        assert_eq!(config.auth, AuthConfig::EddsaPublicKeyFile("secret".into()));
        assert_eq!(
            (config.text_bytes_max, config.lanes, config.name.as_str()),
            (100, 1, "eu-1")
        );
    }

    #[test]
    fn out_of_range_values_and_typos_are_refused() {
        // A typo must not silently fall back to a default.
        assert!(EdgeConfig::from_toml_str(&format!("lanse = 4\n{MINIMAL}")).is_err());
        let too_big = format!("text_bytes_max = {}\n{MINIMAL}", TEXT_BYTES_MAX_CEILING + 1);
        assert!(EdgeConfig::from_toml_str(&too_big).is_err());
        assert!(EdgeConfig::from_toml_str(&format!("lanes = 0\n{MINIMAL}")).is_err());
        let both_keys = format!("{MINIMAL}\neddsa_public_key_file = \"k.pem\"\n");
        assert!(
            EdgeConfig::from_toml_str(&both_keys).is_err(),
            "only one token key"
        );
    }

    #[test]
    fn the_server_name_defaults_to_the_host() {
        let core = |address: &str| CoreConfig {
            address: address.into(),
            server_name: None,
            linger_us: 0,
        };
        assert_eq!(core("127.0.0.1:4434").server_name(), "127.0.0.1");
        assert_eq!(core("[::1]:4434").server_name(), "::1");
        assert_eq!(core("core.internal").server_name(), "core.internal");
        assert_eq!(
            CoreConfig::new("127.0.0.1:1", "localhost").server_name(),
            "localhost"
        );
    }
}
