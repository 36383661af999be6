//! [`Mosquitto`]: the broker, started by the benchmark on loopback from a config it writes.
//!
//! Each broker lives in its own temporary directory (config, persistence file, log, and
//! the dev PKI whose edge certificate it presents), listens on two free loopback ports —
//! TLS and plain TCP — and is killed when the handle is dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use transport::DevPki;

/// Where Debian (and CI's `apt-get install -y mosquitto`) puts the broker.
pub const MOSQUITTO_BIN_DEFAULT: &str = "/usr/sbin/mosquitto";

/// How long the broker has to open its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which of the broker's listeners a client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MqttTransport {
    /// TLS 1.2/1.3 over TCP (rustls on the client), the fair match for quichat, which
    /// always encrypts.
    Tls,
    /// Plain TCP: what many games run, and mosquitto's best case.
    Tcp,
}

impl MqttTransport {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            MqttTransport::Tls => "mosquitto-tls",
            MqttTransport::Tcp => "mosquitto-tcp",
        }
    }
}

/// The broker settings the benchmark chooses.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// The mosquitto executable.
    pub binary: PathBuf,
    /// `max_inflight_messages`: QoS 1 messages sent to one client and not yet
    /// acknowledged. mosquitto's default (20) caps each recipient at 20 messages per
    /// round trip, which would throttle a fast drain; 0 means no limit, mosquitto's best
    /// case (quichat's own replay window is 128).
    pub max_inflight_messages: u32,
    /// `max_queued_messages`: messages queued per client beyond the in-flight ones,
    /// including for an offline persistent session. mosquitto's default (1000) silently
    /// drops QoS 1 messages beyond it, so it must exceed the offline drain's count and
    /// any backlog the online load builds.
    pub max_queued_messages: u64,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            binary: PathBuf::from(MOSQUITTO_BIN_DEFAULT),
            max_inflight_messages: 0,
            max_queued_messages: 10_000_000,
        }
    }
}

/// A running mosquitto, killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Holds the config, certificates, persistence file and log; removed on drop.
    dir: tempfile::TempDir,
    pki: DevPki,
    tls_port: u16,
    tcp_port: u16,
}

impl Mosquitto {
    /// Writes a config into a new temporary directory and starts the broker on it;
    /// returns once both listeners accept connections.
    pub fn start(options: &BrokerOptions) -> Result<Self> {
        if !options.binary.exists() {
            bail!(
                "{} not found: install mosquitto (`apt-get install -y mosquitto`)",
                options.binary.display()
            );
        }
        let dir = tempfile::tempdir().context("temporary directory for mosquitto")?;
        let pki = DevPki::ensure(dir.path()).context("certificates for mosquitto")?;
        let tls_port = free_port()?;
        let tcp_port = free_port()?;
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config_path,
            config_text(dir.path(), &pki, tls_port, tcp_port, options),
        )
        .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&options.binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it with `apt-get install -y mosquitto`)",
                    options.binary.display()
                )
            })?;
        let mut broker = Self {
            child,
            dir,
            pki,
            tls_port,
            tcp_port,
        };
        broker.wait_listening(&log_path)?;
        Ok(broker)
    }

    /// Polls both ports until they accept, or fails with the broker's log.
    fn wait_listening(&mut self, log_path: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.tls_port, self.tcp_port] {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            loop {
                if let Some(status) = self.child.try_wait()? {
                    let log = std::fs::read_to_string(log_path).unwrap_or_default();
                    bail!("mosquitto exited at start ({status}):\n{log}");
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(log_path).unwrap_or_default();
                    bail!("mosquitto did not listen on {addr} within {START_TIMEOUT:?}:\n{log}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of the listener for `transport`.
    pub fn port(&self, transport: MqttTransport) -> u16 {
        match transport {
            MqttTransport::Tls => self.tls_port,
            MqttTransport::Tcp => self.tcp_port,
        }
    }

    /// The CA certificate clients trust for the TLS listener.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The broker's directory (config, log, persistence file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // SIGKILL: nothing of the broker's state is needed after a run, and a kill cannot
        // hang the benchmark.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now. The broker binds it a moment later; another
/// process taking it in between makes the start fail loudly, not silently.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The mosquitto configuration for a broker in `dir`.
pub fn config_text(
    dir: &Path,
    pki: &DevPki,
    tls_port: u16,
    tcp_port: u16,
    options: &BrokerOptions,
) -> String {
    // mosquitto glues the file name to `persistence_location` as a prefix, hence the '/'.
    let persistence = format!("{}/", dir.display());
    format!(
        "# Written by quichat-vs-mosquitto for one run.
per_listener_settings false
allow_anonymous true
# Started as root (CI), mosquitto would switch to the `mosquitto` user, which cannot read
# this temporary directory. No effect when not started as root.
user root

# Persistent sessions survive a disconnect (clients connect with clean_session false).
# mosquitto writes them to disk only every autosave_interval (default 1800 s) and at
# shutdown: its QoS 1 PUBACK does not mean the message is on disk.
persistence true
persistence_location {persistence}

# Without it, Nagle's algorithm delays small messages by up to 40 ms.
set_tcp_nodelay true
max_inflight_messages {inflight}
max_queued_messages {queued}
max_queued_bytes 0

log_dest stderr
log_type error
log_type warning

listener {tls_port} 127.0.0.1
certfile {cert}
keyfile {key}

listener {tcp_port} 127.0.0.1
",
        inflight = options.max_inflight_messages,
        queued = options.max_queued_messages,
        cert = pki.edge_cert.display(),
        key = pki.edge_key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_lifts_the_limits_that_would_drop_or_throttle_the_workload() {
        // mosquitto's defaults (20 in flight, 1000 queued) would throttle the drain and
        // silently drop QoS 1 messages past the queue; the run must not measure that.
        let dir = Path::new("/tmp/x");
        let text = config_text(
            dir,
            &DevPki::paths(dir),
            1001,
            1002,
            &BrokerOptions::default(),
        );
        assert!(text.contains("max_inflight_messages 0\n"));
        assert!(text.contains("max_queued_messages 10000000\n"));
        assert!(text.contains("set_tcp_nodelay true\n"));
        assert!(text.contains("persistence true\n"));
        assert!(text.contains("persistence_location /tmp/x/\n"));
        assert!(text.contains("listener 1001 127.0.0.1\ncertfile /tmp/x/edge-cert.pem\n"));
        assert!(text.contains("listener 1002 127.0.0.1\n"));
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let options = BrokerOptions {
            binary: PathBuf::from("/nonexistent/mosquitto"),
            ..BrokerOptions::default()
        };
        let error = Mosquitto::start(&options).err().unwrap();
        assert!(format!("{error:#}").contains("apt-get install -y mosquitto"));
    }
}
