//! A set of message lanes: unidirectional streams, each with its own writer task.
//!
//! A conversation always maps to one lane ([`protocol::ConversationId::lane`]), so its
//! frames stay in order, while a loss on one lane does not stall the others. Each lane's
//! stream starts with [`STREAM_KIND_LANE`].

use protocol::frames::STREAM_KIND_LANE;
use serde::Serialize;

use crate::framed::{FrameSender, spawn_writer};

/// The sending side of a connection's lanes.
#[derive(Debug)]
pub struct LaneSenders<T> {
    lanes: Vec<FrameSender<T>>,
}

impl<T> Clone for LaneSenders<T> {
    fn clone(&self) -> Self {
        Self {
            lanes: self.lanes.clone(),
        }
    }
}

impl<T: Serialize + Send + 'static> LaneSenders<T> {
    /// Opens `count` lanes (at least 1) on `conn`, each with a queue of `queue_per_lane`
    /// frames, at stream `priority` (higher is sent first; control streams use a higher
    /// one than lanes).
    pub async fn open(
        conn: &quinn::Connection,
        count: u8,
        queue_per_lane: usize,
        priority: i32,
    ) -> Result<Self, quinn::ConnectionError> {
        let mut lanes = Vec::with_capacity(usize::from(count.max(1)));
        for _ in 0..count.max(1) {
            let send = conn.open_uni().await?;
            // Fails only if the stream is already closed; the writer will then report it.
            let _ = send.set_priority(priority);
            lanes.push(spawn_writer(send, Some(STREAM_KIND_LANE), queue_per_lane));
        }
        Ok(Self { lanes })
    }
}

impl<T> LaneSenders<T> {
    /// The lane with index `lane` (taken modulo the number of lanes).
    pub fn lane(&self, lane: u8) -> &FrameSender<T> {
        &self.lanes[usize::from(lane) % self.lanes.len()]
    }

    /// How many lanes there are.
    pub fn count(&self) -> u8 {
        self.lanes.len() as u8
    }

    /// Every lane.
    pub fn all(&self) -> &[FrameSender<T>] {
        &self.lanes
    }
}
