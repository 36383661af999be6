//! A set of message lanes: unidirectional streams with a queue each, written by the
//! connection's [`WriterGroup`] task.
//!
//! A conversation always maps to one lane ([`protocol::ConversationId::lane`]), so its
//! frames stay in order, while a loss on one lane does not stall the others. Each lane's
//! stream starts with [`STREAM_KIND_LANE`].
//!
//! A lane is set up when it is first used ([`LaneSenders::lane`]): only then does it get
//! its queue and a place in the writer task (through a [`LateAdder`]), and its stream is
//! opened at its first frame. Most lanes of an idle connection never carry anything; an
//! unused lane costs neither end a QUIC stream nor the peer a reader, and costs this end
//! one empty slot (a queue is about 1 KiB: tokio allocates a channel's first block of 32
//! slots up front). The peer therefore sees lanes appear one by one, in the order they
//! are first used, and possibly never all of them.

use std::sync::{Arc, OnceLock};

use protocol::frames::STREAM_KIND_LANE;
use serde::Serialize;
use tokio::sync::Notify;

use crate::framed::FrameSender;
use crate::group::{LateAdder, WriterGroup};

/// The sending side of a connection's lanes. Clones share the lanes.
#[derive(Debug)]
pub struct LaneSenders<T> {
    lanes: Arc<Lanes<T>>,
    /// Signalled whenever any lane's writer takes frames off its queue.
    room: Arc<Notify>,
}

/// The lanes of one connection, each set up at its first use.
#[derive(Debug)]
struct Lanes<T> {
    slots: Box<[OnceLock<FrameSender<T>>]>,
    /// Adds a lane to the connection's writer task when it is first used.
    adder: LateAdder<T>,
    conn: quinn::Connection,
    queue_per_lane: usize,
    priority: i32,
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

    /// Adds the lanes to `group` (each set up at its first use, its stream opened at its
    /// first frame), which the caller spawns once it holds every stream of the connection
    /// (the control stream too), so they share one writer task and their frames share
    /// datagrams. The lanes' room notification is the group's (a new one if the group has
    /// none: then nothing signals it). Fails only if the connection is already closed.
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
        let lanes = Lanes {
            slots: (0..count.max(1)).map(|_| OnceLock::new()).collect(),
            adder: group.late_adder(),
            conn: conn.clone(),
            queue_per_lane,
            priority,
        };
        let room = group.room().cloned().unwrap_or_default();
        Ok(Self {
            lanes: Arc::new(lanes),
            room,
        })
    }

    /// Signalled whenever any lane takes frames off its queue: a sender that keeps frames
    /// for full lanes back (instead of waiting on one lane and stalling the others) waits
    /// on this to try again.
    pub fn room(&self) -> &Arc<Notify> {
        &self.room
    }
}

impl<T> LaneSenders<T> {
    /// The lane with index `lane` (taken modulo the number of lanes), set up now if this
    /// is its first use.
    pub fn lane(&self, lane: u8) -> &FrameSender<T> {
        let lanes = &*self.lanes;
        lanes.slots[usize::from(lane) % lanes.slots.len()].get_or_init(|| {
            lanes.adder.add_lazy(
                &lanes.conn,
                Some(STREAM_KIND_LANE),
                lanes.priority,
                lanes.queue_per_lane,
            )
        })
    }

    /// How many lanes there are.
    pub fn count(&self) -> u8 {
        self.lanes.slots.len() as u8
    }

    /// The lanes used so far (the others hold nothing and have written nothing).
    pub fn used(&self) -> impl Iterator<Item = &FrameSender<T>> {
        self.lanes.slots.iter().filter_map(OnceLock::get)
    }

    /// The least room left in any lane's queue (a lane not used yet has all of its
    /// queue).
    pub fn capacity_min(&self) -> usize {
        self.lanes
            .slots
            .iter()
            .map(|slot| {
                slot.get()
                    .map_or(self.lanes.queue_per_lane, FrameSender::capacity)
            })
            .min()
            .unwrap_or(0)
    }
}
