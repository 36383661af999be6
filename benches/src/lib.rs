//! quichat's benchmarks.
//!
//! - `benches/codec.rs`, `benches/store.rs`: criterion micro-benchmarks (`cargo bench -p benches`).
//! - `src/bin/quichat-load.rs`: the load generator, real clients over real QUIC.
//! - [`conns`]: the connections benchmark (`quichat-conns`): idle child servers, a raw
//!   client sharing UDP sockets between many connections.
//! - [`mqtt`]: quichat beside mosquitto (`quichat-vs-mosquitto`): the broker, the MQTT
//!   workload and offline drain, the quichat side in child processes.
//! - [`hol`]: the head-of-line benchmark (`quichat-hol`): cells, tracking, report.
//! - [`load`]: the pieces of `quichat-load` (server process, pacer, tallies, CPU from
//!   `/proc`, summary, sweep).
//! - [`plot`]: SVG line charts for the reports.
//! - [`stack`]: starts a core and edges in-process on a temporary directory, the way
//!   `quichat dev` does, for the load generator.

pub mod conns;
pub mod hol;
pub mod load;
pub mod mqtt;
pub mod plot;
pub mod stack;
