//! The server under load: what [`Target`] says to measure, started into a [`Running`].
//!
//! - [`Target::Dev`] (the default) starts `quichat dev` as a child process on a fresh
//!   temporary directory ([`DevProcess`]), so its CPU time can be read apart from the
//!   load generator's and each run starts from an empty store. The child is killed when
//!   the [`DevProcess`] is dropped, so an error or a panic in the tool leaves no server
//!   behind.
//! - [`Target::InProcess`] runs [`crate::stack::Stack`] in this process (no separate CPU
//!   figure, but the core's and edges' counters are at hand, and several edges).
//! - [`Target::External`] is any edge, given by address, CA certificate and token secret
//!   — through a proxy, on another machine; CPU is measured for the pids given, if any.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use client::CertificateDer;
use protocol::{DeviceId, UserId};

use crate::load::cpu::Process;
use crate::stack::{Stack, StackOptions};

/// Lifetime of the tokens minted for load clients.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest wait for a started `quichat dev` to write its edge address.
const DEV_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often to look for the edge address file while waiting.
const DEV_START_POLL: Duration = Duration::from_millis(20);
/// Per-user send limits given to the server: high enough never to limit a load client,
/// so what is measured is the server, not its abuse limiter.
const SEND_PER_SECOND_UNLIMITED: u32 = 100_000;

/// How to reach an edge, and how to mint tokens it accepts.
#[derive(Clone, Debug)]
pub struct EdgeAccess {
    /// The edge's UDP address.
    pub addr: SocketAddr,
    /// The name on its certificate.
    pub server_name: String,
    /// Certificates trusted for it.
    pub roots: Vec<CertificateDer<'static>>,
    /// The HS256 token secret it verifies tokens with.
    pub secret: Vec<u8>,
}

impl EdgeAccess {
    /// Reads the CA certificate and the token secret from files.
    pub fn from_files(
        addr: SocketAddr,
        server_name: &str,
        cert: &Path,
        token_secret: &Path,
    ) -> Result<Self> {
        Ok(Self {
            addr,
            server_name: server_name.to_owned(),
            roots: client::load_roots(cert)
                .with_context(|| format!("reading the certificate {}", cert.display()))?,
            secret: edge_relay::auth::load_hs256_secret(token_secret)
                .with_context(|| format!("reading the token secret {}", token_secret.display()))?,
        })
    }

    /// A client configuration for `user` on device `device`.
    pub fn client_config(&self, user: &UserId, device: u64) -> Result<client::ClientConfig> {
        let token = edge_relay::auth::mint_hs256(&self.secret, user, None, TOKEN_TTL)?;
        Ok(client::ClientConfig::new(
            self.addr,
            self.server_name.clone(),
            self.roots.clone(),
            token,
            DeviceId(device),
        ))
    }
}

/// The runtime threads the load tools give a `quichat dev` child unless told otherwise:
/// one, because the load generator needs the machine's other core, and one thread costs
/// the least CPU per message (as mosquitto, the peer, also runs on one thread). Measured
/// on the 2-core bench machine at 5k msg/s: 111–117 µs per message with one runtime thread
/// per core, 73–81 µs with one (docs/ARCHITECTURE.md, "Runtime threads are an operator's
/// choice").
pub const SERVER_THREADS_DEFAULT: NonZeroUsize = NonZeroUsize::MIN;

/// How a `quichat dev` child was told to run its tasks, for a run's notes.
pub fn threads_note(threads: Option<NonZeroUsize>) -> String {
    match threads {
        Some(n) => format!("quichat dev ran with --threads {n}"),
        None => "quichat dev ran with its default threads (one per core)".into(),
    }
}

/// What to put under load.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start `binary dev` as a child process for each run.
    Dev {
        /// The `quichat` binary.
        binary: PathBuf,
        /// `RUST_LOG` for the child (its logging costs CPU that would be counted).
        log_filter: String,
        /// `--link-linger-us` for the child (`None`: its default).
        link_linger_us: Option<u64>,
        /// `--threads` for the child (`None`: its default, one per core).
        threads: Option<NonZeroUsize>,
    },
    /// Run a core and `edges` edges in this process.
    InProcess {
        /// Number of edges; a pair's sender and recipient use different edges when > 1.
        edges: usize,
        /// The edge↔core hold-back, µs (`None`: the default).
        link_linger_us: Option<u64>,
    },
    /// An edge that is already running.
    External {
        /// How to reach it.
        edge: EdgeAccess,
        /// Server processes whose CPU time to measure.
        pids: Vec<u32>,
    },
}

impl Target {
    /// A short name for reports: `dev-process`, `in-process` or `external`.
    pub fn mode(&self) -> &'static str {
        match self {
            Target::Dev { .. } => "dev-process",
            Target::InProcess { .. } => "in-process",
            Target::External { .. } => "external",
        }
    }

    /// Starts the server (nothing to start for an external edge).
    pub async fn start(&self) -> Result<Running> {
        match self {
            Target::Dev {
                binary,
                log_filter,
                link_linger_us,
                threads,
            } => {
                let (process, edge) =
                    DevProcess::start(binary, log_filter, *link_linger_us, *threads).await?;
                Ok(Running {
                    edges: vec![edge],
                    servers: vec![Process::Pid(process.pid())],
                    server: Server::Dev(process),
                })
            }
            Target::InProcess {
                edges,
                link_linger_us,
            } => {
                let stack = Stack::start(StackOptions {
                    edges: *edges,
                    send_per_second: SEND_PER_SECOND_UNLIMITED,
                    send_burst: SEND_PER_SECOND_UNLIMITED,
                    link_linger_us: *link_linger_us,
                })
                .await?;
                let roots = transport::tls::load_certs(&stack.pki.ca_cert)?;
                let edges = stack
                    .edges
                    .iter()
                    .map(|edge| EdgeAccess {
                        addr: edge.local_addr(),
                        server_name: transport::pki::DEV_SERVER_NAME.to_owned(),
                        roots: roots.clone(),
                        secret: stack.secret.clone(),
                    })
                    .collect();
                Ok(Running {
                    edges,
                    servers: vec![Process::This],
                    server: Server::InProcess(Box::new(stack)),
                })
            }
            Target::External { edge, pids } => Ok(Running {
                edges: vec![edge.clone()],
                servers: pids.iter().map(|&pid| Process::Pid(pid)).collect(),
                server: Server::External,
            }),
        }
    }
}

/// What keeps the server alive.
pub enum Server {
    /// A `quichat dev` child process.
    Dev(DevProcess),
    /// The in-process stack.
    InProcess(Box<Stack>),
    /// Someone else's edge.
    External,
}

/// A started server.
pub struct Running {
    /// Its edges (one, except in-process with several).
    pub edges: Vec<EdgeAccess>,
    /// The processes whose CPU time counts as the server's.
    pub servers: Vec<Process>,
    /// What keeps it alive.
    pub server: Server,
}

impl Running {
    /// A client configuration for `user` on device `device`, on edge `edge` (modulo the
    /// number of edges).
    pub fn client_config(
        &self,
        edge: usize,
        user: &UserId,
        device: u64,
    ) -> Result<client::ClientConfig> {
        let access = self
            .edges
            .get(edge % self.edges.len().max(1))
            .ok_or_else(|| anyhow!("no edge to connect to"))?;
        access.client_config(user, device)
    }

    /// The core's and edges' counters, when the stack runs in this process.
    pub fn stats(&self) -> Option<(server::CoreStats, Vec<edge_relay::EdgeStats>)> {
        match &self.server {
            Server::InProcess(stack) => Some((
                stack.core.stats(),
                stack.edges.iter().map(|e| e.stats()).collect(),
            )),
            _ => None,
        }
    }

    /// The last lines of the started `quichat dev`'s log (`None` for other targets).
    pub fn log_tail(&self) -> Option<String> {
        match &self.server {
            Server::Dev(process) => Some(process.log_tail()),
            _ => None,
        }
    }

    /// Stops what was started (an external edge is left alone).
    pub async fn shutdown(self) {
        match self.server {
            Server::Dev(process) => process.stop(),
            Server::InProcess(stack) => stack.shutdown().await,
            Server::External => {}
        }
    }
}

/// A `quichat dev` child process on its own temporary directory. Dropping it kills the
/// process and then removes the directory.
pub struct DevProcess {
    child: Child,
    log: PathBuf,
    /// Removed when dropped, which is after `Drop::drop` below killed the child.
    dir: tempfile::TempDir,
}

impl DevProcess {
    /// The `quichat` binary: `explicit` if given, else the one next to this executable
    /// (cargo puts both in `target/<profile>/`).
    pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(path) = explicit {
            if path.is_file() {
                return Ok(path.to_owned());
            }
            bail!("--quichat {}: no such file", path.display());
        }
        let exe = std::env::current_exe().context("finding this executable")?;
        let name = format!("quichat{}", std::env::consts::EXE_SUFFIX);
        // Test and bench executables live one level down, in `target/<profile>/deps/`.
        let candidates = exe
            .ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join(&name))
            .collect::<Vec<_>>();
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| {
                let dir = exe.parent().unwrap_or(Path::new(".")).display().to_string();
                anyhow!(
                    "no `quichat` binary next to {} (looked in {dir}): build it with \
                 `cargo build --release -p quichat` (the same profile as this tool), or \
                 pass --quichat PATH",
                    exe.display()
                )
            })
    }

    /// Starts `binary dev` on a fresh temporary directory (under `$TMPDIR`: keep that on
    /// a real disk, since the store fsyncs there) and waits for its edge.
    pub async fn start(
        binary: &Path,
        log_filter: &str,
        link_linger_us: Option<u64>,
        threads: Option<NonZeroUsize>,
    ) -> Result<(Self, EdgeAccess)> {
        let dir = tempfile::Builder::new()
            .prefix("quichat-load-")
            .tempdir()
            .context("creating a temporary directory")?;
        let log = dir.path().join("quichat-dev.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(binary);
        command.arg("dev");
        if let Some(us) = link_linger_us {
            command.args(["--link-linger-us", &us.to_string()]);
        }
        if let Some(threads) = threads {
            command.args(["--threads", &threads.to_string()]);
        }
        let child = command
            .arg("--data")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(["--send-per-second", &SEND_PER_SECOND_UNLIMITED.to_string()])
            .args(["--send-burst", &SEND_PER_SECOND_UNLIMITED.to_string()])
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} dev", binary.display()))?;
        let mut process = DevProcess { child, log, dir };
        let edge = process.wait_for_edge().await?;
        Ok((process, edge))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child wrote its edge address, then reads what clients need.
    async fn wait_for_edge(&mut self) -> Result<EdgeAccess> {
        let root = self.dir.path();
        let addr_file = root.join("edge-addr");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "quichat dev exited ({status}) before its edge was up:\n{}",
                    self.log_tail()
                );
            }
            // The file may exist but still be empty for a moment: retry until it parses.
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                return EdgeAccess::from_files(
                    addr,
                    transport::pki::DEV_SERVER_NAME,
                    &transport::DevPki::paths(root).ca_cert,
                    &root.join("token-secret"),
                );
            }
            if started.elapsed() > DEV_START_TIMEOUT {
                bail!(
                    "quichat dev wrote no edge address in {DEV_START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(DEV_START_POLL).await;
        }
    }

    /// The last lines of the child's log (standard error).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the child and removes its directory.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        // SIGKILL: the directory is thrown away, so there is nothing to shut down cleanly
        // for, and a kill cannot hang.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_quichat_binary_is_named_in_the_error() {
        let error = DevProcess::find_binary(Some(Path::new("/nonexistent/quichat"))).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/quichat"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_server_that_exits_at_start_is_reported_not_waited_for() {
        // `false` exits at once, like a `quichat dev` that cannot bind its port: the tool
        // must say so promptly instead of waiting out its start timeout.
        let started = Instant::now();
        let Err(error) = DevProcess::start(Path::new("false"), "warn", None, None).await else {
            panic!("`false` cannot be a server");
        };
        assert!(error.to_string().contains("exited"), "{error}");
        assert!(started.elapsed() < DEV_START_TIMEOUT);
    }
}
