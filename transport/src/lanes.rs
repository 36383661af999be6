//! A set of message lanes: unidirectional streams with a queue each, written by the
//! connection's [`WriterGroup`] task.
//!
//! A conversation always maps to one lane ([`protocol::ConversationId::lane`]), so its
//! frames stay in order, while a loss on one lane does not stall the others. Each lane's
//! stream starts with [`STREAM_KIND_LANE`].
//!
//! A lane's stream is opened when the lane first carries a frame (see
//! [`WriterGroup::add_lazy`]), not with the lanes: most lanes of an idle connection never
//! carry anything, and an unopened lane costs neither end a QUIC stream nor the peer a
//! reader. The peer therefore sees lanes appear one by one, in the order they are first
//! used, and possibly never all of them.

use protocol::frames::STREAM_KIND_LANE;
use serde::Serialize;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::framed::FrameSender;
use crate::group::WriterGroup;

/// The sending side of a connection's lanes.
#[derive(Debug)]
pub struct LaneSenders<T> {
    lanes: Vec<FrameSender<T>>,
    /// Signalled whenever any lane's writer takes frames off its queue.
    room: Arc<Notify>,
}

impl<T> Clone for LaneSenders<T> {
    fn clone(&self) -> Self {
        Self {
            lanes: self.lanes.clone(),
            room: self.room.clone(),
        }
    }
}

impl<T: Serialize + Send + 'static> LaneSenders<T> {
    /// Sets up `count` lanes (at least 1) on `conn`, each with a queue of `queue_per_lane`
    /// frames, at stream `priority` (higher is sent first; control streams use a higher
    /// one than lanes). Each lane's stream is opened at its first frame. Fails only if
    /// the connection is already closed.
    pub async fn open(
        conn: &quinn::Connection,
        count: u8,
        queue_per_lane: usize,
        priority: i32,
    ) -> Result<Self, quinn::ConnectionError> {
        Self::open_notifying(
            conn,
            count,
            queue_per_lane,
            priority,
            Arc::new(Notify::new()),
        )
        .await
    }

    /// Like [`LaneSenders::open`], with every lane signalling `room` when it takes frames
    /// off its queue (see [`LaneSenders::room`]).
    pub async fn open_notifying(
        conn: &quinn::Connection,
        count: u8,
        queue_per_lane: usize,
        priority: i32,
        room: Arc<Notify>,
    ) -> Result<Self, quinn::ConnectionError> {
        let mut group = WriterGroup::new(Some(room));
        let lanes = Self::open_in(&mut group, conn, count, queue_per_lane, priority).await?;
        group.spawn();
        Ok(lanes)
    }

    /// Adds the lanes to `group` (their streams opened at their first frame), which the
    /// caller spawns once it holds every stream of the connection (the control stream
    /// too), so they share one writer task and their frames share datagrams. The lanes'
    /// room notification is the group's (a new one if the group has none: then nothing
    /// signals it). Fails only if the connection is already closed.
    pub async fn open_in(
        group: &mut WriterGroup<T>,
        conn: &quinn::Connection,
        count: u8,
        queue_per_lane: usize,
        priority: i32,
    ) -> Result<Self, quinn::ConnectionError> {
        if let Some(e) = conn.close_reason() {
            return Err(e);
        }
        let lanes = (0..count.max(1))
            .map(|_| group.add_lazy(conn, Some(STREAM_KIND_LANE), priority, queue_per_lane))
            .collect();
        let room = group.room().cloned().unwrap_or_default();
        Ok(Self { lanes, room })
    }

    /// Signalled whenever any lane takes frames off its queue: a sender that keeps frames
    /// for full lanes back (instead of waiting on one lane and stalling the others) waits
    /// on this to try again.
    pub fn room(&self) -> &Arc<Notify> {
        &self.room
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
