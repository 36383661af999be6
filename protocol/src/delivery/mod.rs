//! The client's delivery state machine (being written).
