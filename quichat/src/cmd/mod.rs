//! One module per subcommand; `main.rs` only dispatches.

pub mod connect;
pub mod core;
pub mod dev;
pub mod edge;
pub mod listen;
pub mod overrides;
pub mod send;
pub mod token;
