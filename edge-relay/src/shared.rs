//! The state every task of one edge shares.

use std::sync::Arc;

use protocol::ShardMap;
use protocol::frames::client::Limits;
use protocol::ids::UserId;

use crate::auth::TokenVerifier;
use crate::limits::SendLimiter;
use crate::session::Registry;
use crate::stats::Counters;
use crate::upstream::CoreLink;

/// The validated settings client tasks need.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) text_bytes_max: usize,
    pub(crate) lanes: u8,
    pub(crate) client_queue_frames: usize,
    pub(crate) inflight_per_session: usize,
    /// When deliveries are copied into datagrams; `Off` also means the edge does not
    /// read its clients' copies.
    pub(crate) lane_copies: transport::CopyPolicy,
    /// What `Welcome` announces.
    pub(crate) limits: Limits,
}

/// Shared by the accept loop, every client task and every core link task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) verifier: TokenVerifier,
    pub(crate) limiter: SendLimiter,
    pub(crate) registry: Registry,
    /// One link per shard of `shards`, in the same order.
    pub(crate) links: Vec<Arc<CoreLink>>,
    pub(crate) shards: ShardMap,
    pub(crate) counters: Counters,
}

impl Shared {
    /// Index in [`Shared::links`] of the link to the shard that owns `user`.
    pub(crate) fn link_index(&self, user: &UserId) -> usize {
        let shard = self.shards.shard_of(user);
        // Every shard of the map has a link (built together in `Edge::start`).
        self.links
            .iter()
            .position(|link| link.shard == shard)
            .unwrap_or(0)
    }
}
