//! quichat's benchmarks.
//!
//! - `benches/codec.rs`, `benches/store.rs`: criterion micro-benchmarks (`cargo bench -p benches`).
//! - `src/bin/quichat-load.rs`: the load generator, real clients over real QUIC.
//! - [`plot`]: SVG line charts for the reports.
//! - [`stack`]: starts a core and edges in-process on a temporary directory, the way
//!   `quichat dev` does, for the load generator.

pub mod plot;
pub mod stack;
