//! The quichat core (being written).

pub mod store;
