//! In-memory model store (being written).
