//! The quichat core: routes messages between edges and keeps undelivered messages.
//!
//! Edges connect over QUIC with mutual TLS and speak the link frames of
//! [`protocol::frames::link`]. The core owns the users of its shard: it pushes each
//! message to the recipient's online devices at once, group-commits it to redb, answers
//! the sender `Accepted` when the message is safe (on disk, or acknowledged by every
//! device), and replays what is stored when a device connects.
//!
//! # Layout
//!
//! - [`router`]: the sans-IO [`Router`](router::Router) — sessions, delivery, the pending
//!   overlay, replay, group commit. All the delivery semantics live here and are tested
//!   with a virtual clock and no network.
//! - [`store`]: the [`LogStore`](store::LogStore) interface, `RedbStore`, and `MemStore`.
//! - `net` (private): the async driver — QUIC endpoint, per-edge readers, the router
//!   task, the writer thread. Reached through [`Core`] and [`CoreHandle`].
//! - [`config`]: [`CoreConfig`], read from TOML.
//! - [`stats`]: counters for operators and benchmarks ([`CoreStats`]).
//! - [`error`]: [`CoreError`], why a core could not start.
//!
//! # Starting a core
//! ```no_run
//! # async fn run() -> Result<(), server::CoreError> {
//! let config = server::CoreConfig::from_toml(r#"
//!     listen = "127.0.0.1:7443"
//!     data_dir = "quichat-data"
//!     cert = "core.pem"
//!     key = "core.key"
//!     edge_ca = "ca.pem"
//! "#)?;
//! let core = server::Core::start(config).await?;
//! println!("listening on {}", core.local_addr());
//! core.shutdown().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
mod net;
pub mod router;
pub mod stats;
pub mod store;

pub use config::CoreConfig;
pub use error::CoreError;
pub use net::{Core, CoreHandle};
pub use stats::CoreStats;
