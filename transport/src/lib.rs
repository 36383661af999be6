//! QUIC plumbing (being written).
