//! Client sessions and the registry that finds them by id.
//!
//! A [`Session`] is one welcomed client connection: who it is (verified), how to reach
//! it (its control stream and lanes), and what it has sent that the core has not yet
//! answered ([`InFlight`]). The [`Registry`] maps [`SessionId`]s to sessions; the core
//! link uses it to route deliveries and answers, the client task to add and remove.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::ErrorCode;
use protocol::frames::client::ServerFrame;
use protocol::ids::{DeviceId, SessionId, UserId};
use tokio::sync::Notify;
use transport::{FrameSender, LaneSenders};

use crate::inflight::InFlight;

/// Locks a std mutex, ignoring poisoning: every critical section here leaves its data
/// consistent even if a panic interrupts it (they are single inserts and removals).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One welcomed client connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    /// The token's `sub`: stamped on everything this session sends.
    pub(crate) user: UserId,
    /// The token's `name`.
    pub(crate) name: String,
    pub(crate) device: DeviceId,
    /// Index of the core link owning `user` (Attach, Ack and Detach go there).
    pub(crate) home_link: usize,
    pub(crate) conn: quinn::Connection,
    /// The client's control stream (answers, `Synced`).
    pub(crate) control: FrameSender<ServerFrame>,
    /// The client's delivery lanes.
    pub(crate) lanes: LaneSenders<ServerFrame>,
    pub(crate) inflight: InFlight,
    /// Wakes the session's pump: a submit arrived, or a core link (re)connected.
    pub(crate) wake: Notify,
    /// Set once the session was closed as a slow consumer, so deliveries still arriving
    /// for it before it leaves the registry do not close (and count) it again.
    pub(crate) closed_slow: AtomicBool,
}

impl Session {
    /// Closes the client because it does not read fast enough. It will reconnect and be
    /// replayed from the core's store; waiting for it would stall the core link for
    /// every other client.
    /// Returns whether this call closed it (false if it already was).
    pub(crate) fn close_slow(&self, what: &str) -> bool {
        if self.closed_slow.swap(true, Ordering::Relaxed) {
            return false;
        }
        tracing::info!(session = self.id.0, user = %self.user, device = self.device.0, "closing slow consumer");
        transport::close(
            &self.conn,
            ErrorCode::SlowConsumer,
            &format!("too slow reading {what}; reconnect to resume"),
        );
        true
    }
}

/// Every live session of this edge.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    last_id: AtomicU64,
}

impl Registry {
    /// A session id never used before by this edge process.
    pub(crate) fn next_id(&self) -> SessionId {
        SessionId(self.last_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub(crate) fn insert(&self, session: Arc<Session>) {
        lock(&self.sessions).insert(session.id, session);
    }

    pub(crate) fn remove(&self, id: SessionId) -> Option<Arc<Session>> {
        lock(&self.sessions).remove(&id)
    }

    pub(crate) fn get(&self, id: SessionId) -> Option<Arc<Session>> {
        lock(&self.sessions).get(&id).cloned()
    }

    /// Wakes every session's pump, so each re-sends what awaits an answer on a link that
    /// has just (re)connected.
    pub(crate) fn wake_all(&self) {
        for session in lock(&self.sessions).values() {
            session.wake.notify_one();
        }
    }
}
