//! The servers under test, each in its own child process so its memory can be read from
//! `/proc/<pid>/status`.
//!
//! Two topologies:
//! - [`Topology::Split`]: `quichat core` and `quichat edge` as two processes, so the edge's
//!   figure is the edge alone (the one the per-connection target is about) and the core's
//!   cost per attached session is reported beside it.
//! - [`Topology::Dev`]: `quichat dev`, core and edge in one process, as a newcomer runs it.
//!
//! Every child is started with `kill_on_drop`, so a benchmark that fails half-way leaves no
//! server running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a child has to print the address it listens on.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which processes run the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// `quichat core` + `quichat edge`: two processes, the edge's memory measured alone.
    Split,
    /// `quichat dev`: core and edge in one process.
    Dev,
}

/// One server child process.
#[derive(Debug)]
pub struct ServerProcess {
    /// What it runs: `"edge"`, `"core"` or `"dev"` (edge and core together).
    pub name: &'static str,
    /// Its process id, for `/proc/<pid>/status`.
    pub pid: u32,
    /// The child; killed when dropped.
    child: Child,
}

impl ServerProcess {
    /// Its resident set size now, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid)
    }

    /// Fails if the process has exited (a crash would make every later figure wrong).
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the {} process exited: {status}", self.name),
        }
    }
}

/// The running servers and what a client needs to reach them.
#[derive(Debug)]
pub struct Servers {
    /// The processes, the one holding the edge first.
    pub processes: Vec<ServerProcess>,
    /// Where game clients connect.
    pub edge_addr: SocketAddr,
    /// The CA certificate clients trust.
    pub ca_cert: PathBuf,
    /// The HS256 token secret the edge verifies tokens with.
    pub secret: Vec<u8>,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The `quichat` binary.
    pub quichat: PathBuf,
    /// The data directory (store, certificates, token secret); should be fresh.
    pub data_dir: PathBuf,
    /// Which processes.
    pub topology: Topology,
    /// The edge's connection limit (`Split` only: `quichat dev` keeps its default of
    /// 10 000).
    pub max_connections: usize,
    /// `RUST_LOG` for the children.
    pub log_filter: String,
    /// Extra arguments for `quichat edge` (`Split`) or `quichat dev` (`Dev`), for
    /// experiments such as `--lanes 1`.
    pub extra_args: Vec<String>,
    /// Extra environment variables for every child (e.g. `MALLOC_ARENA_MAX=2`).
    pub env: Vec<(String, String)>,
}

impl Servers {
    /// Starts the servers and waits until each has printed its address.
    pub async fn start(options: &ServerOptions) -> Result<Self> {
        if !options.quichat.exists() {
            bail!(
                "{} does not exist; build it first: cargo build --release -p quichat",
                options.quichat.display()
            );
        }
        match options.topology {
            Topology::Dev => Self::start_dev(options).await,
            Topology::Split => Self::start_split(options).await,
        }
    }

    async fn start_dev(options: &ServerOptions) -> Result<Self> {
        let dir = &options.data_dir;
        let mut command = Command::new(&options.quichat);
        command
            .arg("dev")
            .arg("--data")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(&options.extra_args);
        let (process, edge_addr) = spawn(command, "dev", "edge (game clients): ", options).await?;
        let ca_cert = transport::DevPki::paths(dir).ca_cert;
        let secret = edge_relay::auth::load_hs256_secret(&dir.join("token-secret"))?;
        Ok(Self {
            processes: vec![process],
            edge_addr,
            ca_cert,
            secret,
        })
    }

    async fn start_split(options: &ServerOptions) -> Result<Self> {
        let dir = &options.data_dir;
        let pki = transport::DevPki::ensure(dir).context("creating the dev certificates")?;
        let secret_file = dir.join("token-secret");
        std::fs::write(&secret_file, "conns-bench-secret-0123456789abcdef0123")
            .with_context(|| format!("writing {}", secret_file.display()))?;
        let secret = edge_relay::auth::load_hs256_secret(&secret_file)?;

        let mut core = Command::new(&options.quichat);
        core.arg("core")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .arg("--cert")
            .arg(&pki.core_cert)
            .arg("--key")
            .arg(&pki.core_key)
            .arg("--edge-ca")
            .arg(&pki.ca_cert);
        let (core, core_addr) = spawn(core, "core", "core listening on ", options)
            .await
            .context("starting quichat core")?;

        let mut edge = Command::new(&options.quichat);
        edge.arg("edge")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--cert")
            .arg(&pki.edge_cert)
            .arg("--key")
            .arg(&pki.edge_key)
            .arg("--core-address")
            .arg(core_addr.to_string())
            .arg("--core-server-name")
            .arg(transport::pki::DEV_SERVER_NAME)
            .arg("--core-ca")
            .arg(&pki.ca_cert)
            .arg("--client-cert")
            .arg(&pki.edge_client_cert)
            .arg("--client-key")
            .arg(&pki.edge_client_key)
            .arg("--hs256-secret-file")
            .arg(&secret_file)
            .arg("--max-connections")
            .arg(options.max_connections.to_string())
            .args(&options.extra_args);
        let (edge, edge_addr) = spawn(edge, "edge", "edge listening on ", options)
            .await
            .context("starting quichat edge")?;
        Ok(Self {
            processes: vec![edge, core],
            edge_addr,
            ca_cert: pki.ca_cert,
            secret,
        })
    }

    /// Each process's resident set size now, in KiB, by name.
    pub fn rss_kib(&self) -> Result<Vec<(&'static str, u64)>> {
        self.processes
            .iter()
            .map(|p| Ok((p.name, p.rss_kib()?)))
            .collect()
    }

    /// Fails if any server process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(ServerProcess::check_running)
    }
}

/// Starts `command` and reads its standard output until a line containing `marker`
/// followed by a socket address. Later output is drained in the background so the child
/// never blocks on a full pipe.
async fn spawn(
    mut command: Command,
    name: &'static str,
    marker: &str,
    options: &ServerOptions,
) -> Result<(ServerProcess, SocketAddr)> {
    command
        .env("RUST_LOG", &options.log_filter)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {name}"))?;
    let pid = child
        .id()
        .with_context(|| format!("{name} exited at once"))?;
    let stdout = child.stdout.take().context("child standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(STARTUP_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split(marker).nth(1) {
                let word = rest.split_whitespace().next().unwrap_or_default();
                return word
                    .parse::<SocketAddr>()
                    .with_context(|| format!("{name} printed a bad address: {line}"));
            }
        }
        bail!("{name} ended its output before printing its address")
    })
    .await
    .with_context(|| format!("{name} did not print its address in time"))??;
    // Keep reading so a chatty child never blocks on a full pipe; ends with the child.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((ServerProcess { name, pid, child }, addr))
}

/// The resident set size of process `pid` (`VmRSS` in `/proc/<pid>/status`), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    rss_kib_from(&PathBuf::from(format!("/proc/{pid}/status")))
}

/// This process's resident set size, in KiB.
pub fn own_rss_kib() -> Result<u64> {
    rss_kib_from(Path::new("/proc/self/status"))
}

fn rss_kib_from(path: &Path) -> Result<u64> {
    let status =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {}", path.display()))
}

/// The `VmRSS` value of a `/proc/<pid>/status` text, in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value = words.next()?.parse().ok()?;
    // The kernel always writes kB; anything else would be a different file format.
    (words.next()? == "kB").then_some(value)
}

/// The machine-wide count of UDP datagrams dropped because a socket's receive buffer was
/// full (`RcvbufErrors` in `/proc/net/snmp`). Dropped handshake packets are retransmitted
/// only after a timeout (1 s for the first flight), which shows in the handshake p99.
pub fn udp_rcvbuf_errors() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
    parse_udp_rcvbuf_errors(&snmp).context("no Udp RcvbufErrors in /proc/net/snmp")
}

fn parse_udp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    // Two lines start with "Udp:": the field names, then the values.
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tquichat\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
    }

    #[test]
    fn a_status_without_vm_rss_is_an_error_not_zero() {
        // Kernel threads have no VmRSS; reading 0 would make the per-connection figure lie.
        assert_eq!(parse_vm_rss("Name:\tkthreadd\nState:\tS\n"), None);
    }

    #[test]
    fn udp_receive_buffer_drops_are_read_by_column_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 2 7 90 5 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    UdpLite: 0 0 0 0 9\n";
        assert_eq!(parse_udp_rcvbuf_errors(snmp), Some(5));
    }

    #[test]
    fn own_rss_is_positive() {
        assert!(own_rss_kib().unwrap() > 0);
    }
}
