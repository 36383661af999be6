//! Command-line arguments, parsed into plain data (ripgrep's "low args"). Validation into
//! running configuration happens in each command's module.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// quichat: QUIC chat for games.
#[derive(Debug, Parser)]
#[command(name = "quichat", version, about, propagate_version = true)]
pub struct Cli {
    /// Threads that run the servers' tasks. 1 runs everything on one thread, which costs
    /// the least CPU per message (no wake-ups between threads) but uses one core; the
    /// default is one per core. The core's store writer always has its own thread.
    #[arg(long, global = true, env = "QUICHAT_THREADS")]
    pub threads: Option<std::num::NonZeroUsize>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a core and an edge in one process with everything defaulted (for development).
    Dev(DevArgs),
    /// Run a core shard from a TOML config.
    Core(crate::cmd::core::CoreArgs),
    /// Run an edge relay from a TOML config.
    Edge(crate::cmd::edge::EdgeArgs),
    /// Print a signed token (JWT, HS256) for a user.
    Token(TokenArgs),
    /// Send one message; exits 0 once the server accepted it.
    Send(SendArgs),
    /// Print received messages as JSON lines, acknowledging each after printing.
    Listen(ListenArgs),
}

/// `quichat dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the store, certificates, the token secret and the edge address.
    #[arg(long, default_value = "quichat-data", env = "QUICHAT_DATA")]
    pub data: PathBuf,
    /// Address the edge listens on for game clients.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub listen: SocketAddr,
    /// Sustained messages per second each user may send (the edge's `send_per_second`);
    /// load generators raise it so the limit does not cap what they measure.
    #[arg(long, default_value_t = 50)]
    pub send_per_second: u32,
    /// Messages a user may send in a burst above the sustained rate (`send_burst`).
    #[arg(long, default_value_t = 100)]
    pub send_burst: u32,
    /// Milliseconds the core lets accepted messages wait for acknowledgements before
    /// writing them (the core's `commit_delay_ms`; 0 writes at once).
    #[arg(long, default_value_t = server::router::COMMIT_DELAY_MS_DEFAULT)]
    pub commit_delay_ms: u64,
    /// Microseconds the edge↔core link may hold frames back to share datagrams under load,
    /// both ways (the core's `edge_linger_us`, the edge's `core.linger_us`; 0: never).
    #[arg(long, default_value_t = transport::group::LINK_LINGER_US_DEFAULT)]
    pub link_linger_us: u64,
}

/// `quichat token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// File holding the HS256 secret (hex, or raw bytes).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// The user id (the token's `sub`).
    #[arg(long)]
    pub user: String,
    /// The display name (the token's `name`); defaults to the user id.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl: u64,
}

/// How a client command reaches an edge and who it is.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// A `quichat dev` directory: the edge address, certificate and token secret are read
    /// from it, and a token is minted for the user.
    #[arg(long, conflicts_with_all = ["edge", "cert", "token"])]
    pub dev: Option<PathBuf>,
    /// The edge's address (without `--dev`).
    #[arg(long, requires_all = ["cert", "token"])]
    pub edge: Option<SocketAddr>,
    /// The CA certificate (PEM) to trust for the edge (without `--dev`).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The token to present (without `--dev`).
    #[arg(long, env = "QUICHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The TLS server name of the edge.
    #[arg(long, default_value = transport::pki::DEV_SERVER_NAME)]
    pub server_name: String,
    /// This device's id. Defaults to one kept per user under the dev directory, or in
    /// `$HOME/.quichat-device` without `--dev`.
    #[arg(long)]
    pub device: Option<u64>,
}

/// `quichat send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    /// Where and who.
    pub connect: ConnectArgs,
    /// The sender (with `--dev`; otherwise the token says who you are).
    #[arg(long)]
    pub from: Option<String>,
    /// The recipient.
    #[arg(long)]
    pub to: String,
    /// Seconds to wait for the server to accept the message.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// The text; `-` reads standard input.
    pub text: String,
}

/// `quichat listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    /// Where and who.
    pub connect: ConnectArgs,
    /// Who is listening (with `--dev`; otherwise the token says who you are).
    #[arg(long)]
    pub user: Option<String>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many seconds (0 waits forever).
    #[arg(long, default_value_t = 0.0)]
    pub timeout: f64,
}
