//! [`ClientConfig`], [`Backoff`], and the helpers that fill them from files: trusted roots
//! from PEM ([`load_roots`]) and the stable device id ([`device_id_from_file`]).

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use transport::CopyPolicy;

use protocol::DeviceId;
use protocol::delivery::DeliveryConfig;
use rustls_pki_types::CertificateDer;
use transport::tls::TlsError;

/// Default for [`ClientConfig::event_queue`].
pub const EVENT_QUEUE_DEFAULT: usize = 1024;
/// Default for [`ClientConfig::connect_timeout`].
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Everything [`crate::Client::connect`] needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The edge relay's UDP address.
    pub edge: SocketAddr,
    /// The name in the edge's certificate (for `quichat dev`:
    /// [`transport::pki::DEV_SERVER_NAME`]).
    pub server_name: String,
    /// Certificates trusted to sign the edge's certificate ([`load_roots`] reads a PEM
    /// file).
    pub roots: Vec<CertificateDer<'static>>,
    /// The JWT minted by the game's backend. Replace it later with
    /// [`crate::Client::set_token`].
    pub token: String,
    /// This device's stable id ([`device_id_from_file`] keeps one on disk). The server
    /// keeps a delivery cursor per device, so a device that changes id on every start
    /// would be replayed everything not yet acknowledged by its previous ids.
    pub device: DeviceId,
    /// Outbox size, send timeout, acknowledgement mode, de-duplication memory.
    pub delivery: DeliveryConfig,
    /// How long to wait between reconnect attempts.
    pub reconnect: Backoff,
    /// Events buffered for the game (see [`crate::Events`] for what happens when full).
    pub event_queue: usize,
    /// Longest a connection attempt (QUIC handshake, `Hello`, `Welcome`, lanes) may take.
    pub connect_timeout: Duration,
    /// When to send a second copy of small messages in a QUIC datagram, so a packet lost
    /// on a lossy network costs a few milliseconds instead of a round trip and a half:
    /// [`CopyPolicy::Auto`] (the default) while the connection is losing packets,
    /// [`CopyPolicy::Always`], or [`CopyPolicy::Off`] (which also tells the edge not to
    /// send copies to this client). Copies never change what is delivered or its order.
    pub lane_copies: CopyPolicy,
}

impl ClientConfig {
    /// A configuration with every other field at its default.
    pub fn new(
        edge: SocketAddr,
        server_name: impl Into<String>,
        roots: Vec<CertificateDer<'static>>,
        token: impl Into<String>,
        device: DeviceId,
    ) -> Self {
        Self {
            edge,
            server_name: server_name.into(),
            roots,
            token: token.into(),
            device,
            delivery: DeliveryConfig::default(),
            reconnect: Backoff::default(),
            event_queue: EVENT_QUEUE_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            lane_copies: CopyPolicy::default(),
        }
    }
}

/// Exponential backoff between reconnect attempts, with jitter.
///
/// Attempt `n` (from 0) waits at most `cap = min(max, initial × 2ⁿ)`. With `jitter = 1.0`
/// (the default) the wait is uniform between `initial / 2` and `cap` — "full jitter"
/// above a floor — so a crowd of clients dropped together (an edge restarting) spreads
/// out instead of reconnecting in one wave, while the floor bounds how often any one
/// client tries: never more than once per `initial / 2` plus the connect time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first wait (its upper bound, with jitter).
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How much of the wait is random, from 0.0 (none: exactly `cap`) to 1.0 (anywhere
    /// from the floor to `cap`). Values outside are clamped.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            jitter: 1.0,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (0 for the first retry), given `random` drawn
    /// uniformly from `[0, 1)`. Deterministic, so its bounds can be tested.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let initial = self.initial.min(self.max);
        let cap = initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let floor = initial / 2;
        let spread = (cap - floor).as_secs_f64();
        // `clamp` lets NaN through; a NaN jitter (a broken config) means full jitter.
        let jitter = if self.jitter.is_nan() {
            1.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let random = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let off = Duration::try_from_secs_f64(spread * jitter * random).unwrap_or(Duration::ZERO);
        cap.saturating_sub(off).max(floor)
    }
}

/// Reads the trusted root certificates from a PEM file (the CA that signed the edge's
/// certificate; for `quichat dev`, its `ca.pem`).
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    transport::tls::load_certs(path)
}

/// The device id kept in `path`: read if the file exists, otherwise chosen at random and
/// written there (creating parent directories), so a device keeps one id across runs.
///
/// The file holds the id as 16 hexadecimal digits. A file that exists but does not hold
/// one is an error (`InvalidData`), never silently replaced: a new id would make the
/// server treat this as a new device.
pub fn device_id_from_file(path: &Path) -> io::Result<DeviceId> {
    match fs::read_to_string(path) {
        Ok(text) => return parse_device_id(&text, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let id = DeviceId(rand::random());
    // `create_new` so two processes starting at once agree on one id: the loser reads the
    // winner's file instead of overwriting it.
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            writeln!(file, "{:016x}", id.0)?;
            file.sync_all()?;
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            parse_device_id(&fs::read_to_string(path)?, path)
        }
        Err(e) => Err(e),
    }
}

fn parse_device_id(text: &str, path: &Path) -> io::Result<DeviceId> {
    let text = text.trim();
    if text.is_empty() || text.len() > 16 {
        return Err(bad_device_file(path));
    }
    u64::from_str_radix(text, 16)
        .map(DeviceId)
        .map_err(|_| bad_device_file(path))
}

fn bad_device_file(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} does not hold a device id (16 hexadecimal digits)",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_device_id_is_created_once_and_kept() {
        // The server keeps a cursor per device: the id must survive restarts.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("device-id");
        let first = device_id_from_file(&path).unwrap();
        let second = device_id_from_file(&path).unwrap();
        assert_eq!(first, second);
        let other = device_id_from_file(&dir.path().join("other")).unwrap();
        assert_ne!(first, other, "two devices get two ids");
    }

    #[test]
    fn a_corrupt_device_id_file_is_an_error_not_replaced() {
        // Replacing it would silently turn this into a new device.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device-id");
        fs::write(&path, "not hex\n").unwrap();
        let err = device_id_from_file(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not hex\n");
    }

    #[test]
    fn roots_load_from_a_pem_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = transport::DevPki::ensure(dir.path()).unwrap();
        assert_eq!(load_roots(&pki.ca_cert).unwrap().len(), 1);
        assert!(load_roots(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn without_jitter_the_backoff_doubles_up_to_the_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        let delays: Vec<u128> = (0..6).map(|n| b.delay(n, 0.7).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn a_nan_in_the_backoff_config_does_not_panic() {
        // Configs come from files; a bad value must not crash the reconnect loop.
        let b = Backoff {
            jitter: f64::NAN,
            ..Backoff::default()
        };
        let d = b.delay(3, f64::NAN);
        assert!(d >= b.initial / 2 && d <= b.max);
    }

    proptest! {
        #[test]
        fn backoff_stays_between_the_floor_and_the_cap(
            initial_ms in 1u64..10_000,
            max_ms in 1u64..120_000,
            jitter in -1.0f64..2.0,
            attempt in 0u32..100,
            random in 0.0f64..1.0,
        ) {
            // The floor bounds how often a client retries; the cap bounds how long a
            // player waits after the network comes back.
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                jitter,
            };
            let d = b.delay(attempt, random);
            let initial = b.initial.min(b.max);
            prop_assert!(d >= initial / 2, "{d:?} below the floor");
            prop_assert!(d <= b.max, "{d:?} above the max");
            let cap = initial.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(b.max);
            prop_assert!(d <= cap, "{d:?} above this attempt's cap {cap:?}");
        }
    }
}
