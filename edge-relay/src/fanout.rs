//! What the edge does with each frame from the core: fan deliveries out to local
//! sessions and route answers to the session that asked.
//!
//! Nothing here waits. The core link carries every session's traffic, so a client whose
//! queue is full is closed as a slow consumer (it reconnects and is replayed from the
//! core's store) rather than allowed to stall everyone else.

use protocol::frames::client::{Accepted, Message, Rejected, ServerFrame};
use protocol::frames::link::CoreFrame;
use protocol::ids::SessionId;
use protocol::{ConversationId, ErrorCode};
use transport::TrySendError;

use crate::error::SessionEnd;
use crate::session::Session;
use crate::shared::Shared;
use crate::stats::Counters;

/// Acts on one frame from the core. An error means the core broke the protocol; the
/// link is then closed and re-established.
pub(crate) fn dispatch(shared: &Shared, frame: CoreFrame) -> Result<(), SessionEnd> {
    match frame {
        CoreFrame::CoreWelcome(_) => {
            return Err(SessionEnd::new(
                ErrorCode::ProtocolViolation,
                "CoreWelcome sent twice",
            ));
        }
        CoreFrame::Deliver { sessions, message } => deliver(shared, &sessions, message),
        CoreFrame::Accepted { session, key, id } => {
            if let Some(s) = shared.registry.get(session)
                && s.inflight.resolve(key)
            {
                answer(shared, &s, ServerFrame::Accepted(Accepted { key, id }));
            }
        }
        CoreFrame::Rejected { session, key, code } => {
            if let Some(s) = shared.registry.get(session)
                && s.inflight.resolve(key)
            {
                let detail = code.meaning().to_owned();
                answer(
                    shared,
                    &s,
                    ServerFrame::Rejected(Rejected { key, code, detail }),
                );
            }
        }
        CoreFrame::Synced { session } => {
            if let Some(s) = shared.registry.get(session) {
                answer(shared, &s, ServerFrame::Synced);
            }
        }
        CoreFrame::Kick { session, code } => {
            if let Some(s) = shared.registry.get(session) {
                tracing::info!(session = session.0, user = %s.user, %code, "core kicked a session");
                let reason = format!("the server ended this session: {}", code.meaning());
                transport::close(&s.conn, code, &reason);
            }
        }
    }
    Ok(())
}

/// Hands `message` to each listed session on the lane of its conversation.
fn deliver(shared: &Shared, sessions: &[SessionId], message: Message) {
    let conversation = ConversationId::direct(&message.from, &message.to);
    // Most deliveries go to one session: the last gets the message itself, not a copy.
    let Some((&last, others)) = sessions.split_last() else {
        return;
    };
    for &id in others {
        deliver_to(shared, id, conversation, message.clone());
    }
    deliver_to(shared, last, conversation, message);
}

/// Queues `message` on the lane of `conversation` of session `id`, without waiting.
fn deliver_to(shared: &Shared, id: SessionId, conversation: ConversationId, message: Message) {
    // A session that ended meanwhile is skipped: the core still stores the message until
    // that device acknowledges it.
    let Some(session) = shared.registry.get(id) else {
        return;
    };
    let lane = session.lanes.lane(conversation.lane(session.lanes.count()));
    match lane.try_send(ServerFrame::Deliver(message)) {
        Ok(()) => Counters::bump(&shared.counters.messages_out),
        Err(TrySendError::Full(_)) => slow(shared, &session, "deliveries"),
        Err(TrySendError::Closed(_)) => {}
    }
}

/// Queues an answer on a session's control stream without waiting.
fn answer(shared: &Shared, session: &Session, frame: ServerFrame) {
    match session.control.try_send(frame) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => slow(shared, session, "answers"),
        Err(TrySendError::Closed(_)) => {}
    }
}

fn slow(shared: &Shared, session: &Session, what: &str) {
    if session.close_slow(what) {
        Counters::bump(&shared.counters.slow_consumers);
    }
}
