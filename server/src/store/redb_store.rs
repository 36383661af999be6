//! redb store (being written).
