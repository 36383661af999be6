//! Edges, sessions and the per-user state the router keeps in memory.
//!
//! A session is one device's connection at one edge, named by `(edge, session)`. It
//! starts [`Delivery::Replaying`] (catching up from the store and the pending overlay) and
//! becomes [`Delivery::Live`] in the same router step that sends its last replayed message
//! and `Synced`, so no message can fall between the two. A live session that misses a
//! delivery (a full lane) goes back to replaying from that message.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use protocol::frames::link::Attach;
use protocol::{CoreFrame, DeviceId, ErrorCode, MessageId, SessionId, UserId};

use super::{Channel, EdgeId, Now, Output, Router};
use crate::store::{StoreError, UserState};

/// A session, named the way edges name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey {
    /// The edge holding it.
    pub(crate) edge: EdgeId,
    /// The edge's session id.
    pub(crate) session: SessionId,
}

/// An edge connection.
#[derive(Debug)]
pub(crate) struct Edge {
    /// Lanes from the core to this edge.
    pub(crate) lanes: u8,
    /// Its attached sessions.
    pub(crate) sessions: HashSet<SessionId>,
}

impl Edge {
    pub(crate) fn new(lanes: u8) -> Self {
        Self {
            lanes: lanes.max(1),
            sessions: HashSet::new(),
        }
    }
}

/// How a session receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Catching up: everything above `after` (from the start if `None`) is still to be
    /// sent, from the store and then the pending overlay. Live pushes skip the session.
    Replaying {
        /// The last id sent to the session.
        after: Option<MessageId>,
    },
    /// Caught up: new messages are pushed as they are submitted.
    Live,
}

/// An attached session.
#[derive(Debug)]
pub(crate) struct Session {
    /// Whose session.
    pub(crate) user: UserId,
    /// Which device.
    pub(crate) device: DeviceId,
    /// Replaying or live.
    pub(crate) delivery: Delivery,
    /// Whether `Synced` was sent (it is sent once per session).
    pub(crate) synced: bool,
    /// Whether the session is in the replay queue.
    pub(crate) queued: bool,
    /// Replayed messages not yet acknowledged (at most the replay window).
    pub(crate) replay_unacked: BTreeSet<MessageId>,
    /// When the device's last-seen time was last written for this session (ms), so long
    /// sessions keep their device known to the store.
    pub(crate) seen_recorded_ms: u64,
}

/// A user of this shard, as far as the router knows.
#[derive(Debug)]
pub(crate) struct UserEntry {
    /// Known devices (the store's, plus those attached since) and when each was last seen.
    pub(crate) devices: BTreeMap<DeviceId, u64>,
    /// Attached sessions, in attach order.
    pub(crate) sessions: Vec<SessionKey>,
    /// Messages of the user in the store or in the committing batch (approximate if a
    /// commit raced a reload; it only feeds the inbox quota and ack filtering).
    pub(crate) durable_len: u64,
    /// Messages of the user in the accumulating batch.
    pub(crate) accumulating_len: u64,
    /// Every id of the user that may be on disk is at most this: acknowledgements of
    /// higher ids concern only pending messages and need no write.
    pub(crate) durable_max: u64,
    /// The user's pending messages (accumulating or committing).
    pub(crate) pending: BTreeSet<MessageId>,
    /// The batch sequence number that will make this user's device records durable; the
    /// user is kept in memory until it is committed.
    pub(crate) dirty_seq: u64,
    /// Last time anything concerned the user.
    pub(crate) last_touch: Instant,
}

impl UserEntry {
    /// The entry for a user just read from the store. Every id the store may hold for the
    /// user is at most `last_assigned`.
    fn load(state: UserState, last_assigned: u64, now: Now) -> Self {
        Self {
            devices: state.devices.into_iter().collect(),
            sessions: Vec::new(),
            durable_len: state.inbox_len,
            accumulating_len: 0,
            durable_max: if state.inbox_len > 0 {
                last_assigned
            } else {
                0
            },
            pending: BTreeSet::new(),
            dirty_seq: 0,
            last_touch: now.instant,
        }
    }

    /// Undelivered messages counted against the inbox quota.
    pub(crate) fn inbox_len(&self) -> u64 {
        self.durable_len + self.accumulating_len
    }
}

impl Router {
    /// The user's entry, loading it from the store on first touch.
    pub(crate) fn user_entry(
        &mut self,
        user: &UserId,
        now: Now,
    ) -> Result<&mut UserEntry, StoreError> {
        if !self.users.contains_key(user) {
            let state = self.store.user_state(user)?;
            let entry = UserEntry::load(state, self.ids.last_assigned(), now);
            self.users.insert(user.clone(), entry);
        }
        match self.users.get_mut(user) {
            Some(entry) => {
                entry.last_touch = now.instant;
                Ok(entry)
            }
            // Inserted just above.
            None => Err(StoreError::Read("user entry vanished".into())),
        }
    }

    /// A device connected at an edge: register the session, replace an older session of
    /// the same device, and start replaying.
    pub(super) fn on_attach(&mut self, now: Now, edge: EdgeId, attach: Attach) {
        let key = SessionKey {
            edge,
            session: attach.session,
        };
        if self.sessions.contains_key(&key) {
            self.close_edge(edge, ErrorCode::ProtocolViolation, "session attached twice");
            return;
        }
        if self.config.shard_map.shard_of(&attach.user) != self.config.shard {
            tracing::warn!(user = %attach.user, "attach for a user of another shard");
            let frame = CoreFrame::Kick {
                session: attach.session,
                code: ErrorCode::Unavailable,
            };
            self.send(edge, Channel::Control, frame);
            return;
        }
        let seq = self.pipeline.accumulating_seq();
        let entry = match self.user_entry(&attach.user, now) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(error = %e, user = %attach.user, "loading user for attach");
                let frame = CoreFrame::Kick {
                    session: attach.session,
                    code: e.code(),
                };
                self.send(edge, Channel::Control, frame);
                return;
            }
        };
        entry.devices.insert(attach.device, now.unix_ms);
        entry.sessions.push(key);
        entry.dirty_seq = seq;
        self.pipeline
            .device_seen(&attach.user, attach.device, now.unix_ms);

        let device_key = (attach.user.clone(), attach.device);
        if let Some(old) = self.devices_online.insert(device_key, key) {
            // The device reconnected (perhaps through another edge) before the old
            // connection was noticed dead: the newer session wins.
            self.send(
                old.edge,
                Channel::Control,
                CoreFrame::Kick {
                    session: old.session,
                    code: ErrorCode::SessionReplaced,
                },
            );
            self.remove_session(old);
        }
        if let Some(e) = self.edges.get_mut(&edge) {
            e.sessions.insert(attach.session);
        }
        self.sessions.insert(
            key,
            Session {
                user: attach.user,
                device: attach.device,
                delivery: Delivery::Replaying { after: None },
                synced: false,
                queued: true,
                replay_unacked: BTreeSet::new(),
                seen_recorded_ms: now.unix_ms,
            },
        );
        self.replay_queue.push_back(key);
    }

    /// Forgets a session (detached, replaced, or its edge is gone).
    pub(super) fn remove_session(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        if let Some(entry) = self.users.get_mut(&session.user) {
            entry.sessions.retain(|k| *k != key);
        }
        let device_key = (session.user, session.device);
        if self.devices_online.get(&device_key) == Some(&key) {
            self.devices_online.remove(&device_key);
        }
        if let Some(edge) = self.edges.get_mut(&key.edge) {
            edge.sessions.remove(&key.session);
        }
        self.purge_session_outputs(key);
    }

    /// Forgets an edge and its sessions, and drops what was queued for it.
    pub(super) fn forget_edge(&mut self, edge: EdgeId) {
        let Some(gone) = self.edges.remove(&edge) else {
            return;
        };
        for session in gone.sessions {
            self.remove_session(SessionKey { edge, session });
        }
        self.outbox.retain(|out| match out {
            Output::Send { edge: e, .. } | Output::SendEncoded { edge: e, .. } => *e != edge,
            Output::Close { .. } => true,
        });
    }

    /// Removes `key` from queued deliveries and drops its queued `Synced` (returning
    /// whether one was dropped): used when a session leaves or falls behind, so nothing
    /// after the gap is sent before the gap is filled.
    pub(super) fn purge_session_outputs(&mut self, key: SessionKey) -> bool {
        let mut dropped_synced = false;
        self.outbox.retain_mut(|out| match out {
            Output::Send {
                edge,
                channel: Channel::Lane(_),
                frame: CoreFrame::Deliver { sessions, .. },
            } if *edge == key.edge => {
                sessions.retain(|s| *s != key.session);
                !sessions.is_empty()
            }
            Output::SendEncoded { edge, session, .. } => {
                !(*edge == key.edge && *session == key.session)
            }
            Output::Send {
                edge,
                channel: Channel::Control,
                frame: CoreFrame::Synced { session },
            } if *edge == key.edge && *session == key.session => {
                dropped_synced = true;
                false
            }
            _ => true,
        });
        dropped_synced
    }
}
