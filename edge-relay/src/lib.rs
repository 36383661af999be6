//! The quichat edge relay: terminates game clients' QUIC connections and speaks to the
//! core for them.
//!
//! An edge verifies each client's token, enforces limits (text size, per-user send
//! rate), stamps the verified sender on everything it forwards, batches traffic to the
//! core over one mutual-TLS QUIC connection per shard, and fans the core's deliveries out
//! to its local clients. It holds no durable state: kill it and its clients reconnect
//! elsewhere with nothing lost.
//!
//! # Using it
//!
//! Build an [`EdgeConfig`] (from TOML, or [`EdgeConfig::new`]), call [`Edge::start`],
//! keep the [`EdgeHandle`]; [`EdgeHandle::shutdown`] stops it. [`auth::mint_hs256`] mints
//! the tokens clients present.
//!
//! # Layout
//!
//! - [`config`]: [`EdgeConfig`] and its parts, with defaults and validation.
//! - [`auth`]: JWT verification ([`auth::TokenVerifier`]) and minting.
//! - [`limits`]: text and rate limits ([`limits::SendLimiter`]) and every internal bound.
//! - `edge`: [`Edge::start`], the accept loop, [`EdgeHandle`].
//! - `handshake`: TLS → `Hello` → token → `Welcome`.
//! - `client`: one client session: control reader, lane readers, stamping.
//! - `inflight`: a session's submits awaiting the core's answer (bounded: back-pressure).
//! - `pump`: the one writer per session of its submits to the core, re-sending after
//!   a reconnect.
//! - `upstream`: the core link: connect, re-attach, reconnect with backoff.
//! - `fanout`: frames from the core → the right sessions; slow consumers are closed.
//! - `session`, `shared`, `stats`: the registry of sessions, shared state, counters.
//!
//! # Invariants
//!
//! - The sender of a message is always the token's `sub`; no client frame names one.
//! - Nothing from the core link waits on a client: a full client queue closes that
//!   client with `SlowConsumer`.
//! - Every queue is bounded; see [`limits`] for each bound and its policy.
//! - A message stays in its session's in-flight map until the core answers it, and is
//!   re-sent, in order, after every core reconnect.

pub mod auth;
mod client;
pub mod config;
mod edge;
mod error;
mod fanout;
mod handshake;
mod inflight;
pub mod limits;
mod pump;
mod session;
mod shared;
mod stats;
mod upstream;

pub use config::{AuthConfig, CoreConfig, EdgeConfig, EdgeTlsPaths};
pub use edge::{Edge, EdgeHandle};
pub use error::EdgeError;
pub use stats::EdgeStats;
