//! Helpers for quichat's integration tests and benchmarks.
//!
//! This machine's kernel has no netem, so bad networks are made in user space:
//! [`udp_proxy::UdpProxy`] sits between a client and a server on loopback and loses,
//! delays, reorders and duplicates datagrams as its [`udp_proxy::LinkConfig`] says, with a
//! seeded generator so a failing run can be replayed. Everything binds port 0 and reports
//! the address it got; there is no "free port" guessing.
//!
//! # Layout
//!
//! - [`udp_proxy`]: the proxy ([`UdpProxy`]), its configuration ([`ProxyConfig`],
//!   [`LinkConfig`]) and counters ([`ProxyStats`]).
//!
//! # Example
//!
//! Put 25 ms of delay each way and 2 % loss between a client and a server, then turn the
//! loss up mid-run:
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::{LinkConfig, ProxyConfig, UdpProxy};
//!
//! # async fn example(server_addr: std::net::SocketAddr) -> std::io::Result<()> {
//! let link = LinkConfig {
//!     delay: Duration::from_millis(25),
//!     loss: 0.02,
//!     seed: 7,
//!     ..LinkConfig::default()
//! };
//! let proxy = UdpProxy::start(ProxyConfig::new(server_addr).with_links(link)).await?;
//! let connect_to = proxy.local_addr(); // give this to the client instead of server_addr
//! # let _ = connect_to;
//!
//! // ... run traffic ...
//! proxy.set_loss(0.05).expect("0.05 is a probability");
//! // ... run more traffic ...
//!
//! let stats = proxy.stats();
//! println!("dropped {} of {}", stats.to_upstream.dropped(), stats.to_upstream.received);
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod udp_proxy;

pub use udp_proxy::{
    ConfigError, Direction, LinkConfig, LinkStats, ProxyConfig, ProxyStats, UdpProxy,
};
