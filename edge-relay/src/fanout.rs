//! What the edge does with each frame from the core: fan deliveries out to local
//! sessions and route answers to the session that asked.
//!
//! Nothing here waits. The core link carries every session's traffic, so a client whose
//! queue is full is closed as a slow consumer (it reconnects and is replayed from the
//! core's store) rather than allowed to stall everyone else.

use protocol::codec::Encoded;
use protocol::forward::{CoreIn, Forward};
use protocol::frames::client::{Accepted, Rejected, ServerFrame};
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
pub(crate) fn dispatch(shared: &Shared, frame: CoreIn) -> Result<(), SessionEnd> {
    let frame = match frame {
        CoreIn::Deliver(forward) => {
            deliver(shared, forward);
            return Ok(());
        }
        CoreIn::Frame(frame) => frame,
    };
    match frame {
        CoreFrame::CoreWelcome(_) => {
            return Err(SessionEnd::new(
                ErrorCode::ProtocolViolation,
                "CoreWelcome sent twice",
            ));
        }
        // `read_core_frame` gives every delivery as `CoreIn::Deliver`.
        CoreFrame::Deliver { .. } => {}
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

/// Hands a delivery to each of its sessions on the lane of its conversation. The
/// sessions share one encoding of the client's frame.
fn deliver(shared: &Shared, forward: Forward) {
    for id in forward.sessions() {
        deliver_to(shared, id, forward.conversation, &forward.frame);
    }
}

/// Queues `frame` on the lane of `conversation` of session `id`, without waiting.
fn deliver_to(
    shared: &Shared,
    id: SessionId,
    conversation: ConversationId,
    frame: &Encoded<ServerFrame>,
) {
    // A session that ended meanwhile is skipped: the core still stores the message until
    // that device acknowledges it.
    let Some(session) = shared.registry.get(id) else {
        return;
    };
    let lane = session.lanes.lane(conversation.lane(session.lanes.count()));
    match lane.try_send_encoded(frame.clone()) {
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
