//! The delivery state machine's spec, run over [`net::Net`]: clients, an edge+core model
//! and a virtual clock, no sockets. `faults` adds random fault schedules.

mod faults;
mod net;

use std::time::Duration;

use super::{DeliveryConfig, DeliveryEvent, SendError};
use crate::error::ErrorCode;
use crate::frames::client::{ClientFrame, Limits, ServerFrame, Welcome};
use crate::ids::{IdRange, MessageId, SenderKey, SessionId, UserId};
use crate::lanes::ConversationId;
use crate::limits::TEXT_BYTES_MAX_CEILING;
use net::{Net, Stream};

const ALICE: usize = 0;
const BOB: usize = 1;

fn texts(net: &Net, node: usize) -> Vec<String> {
    net.nodes[node]
        .shown
        .iter()
        .map(|m| m.text.clone())
        .collect()
}

fn sent_keys(frames: &std::collections::VecDeque<ClientFrame>) -> Vec<u64> {
    frames
        .iter()
        .map(|f| match f {
            ClientFrame::Send(s) => s.key.counter,
            other => panic!("not a send: {other:?}"),
        })
        .collect()
}

/// Everything queued on any of the node's upstream lanes, lane by lane.
fn all_up_sends(net: &Net, node: usize) -> Vec<u64> {
    let link = net.nodes[node].link.as_ref().unwrap();
    link.up_lanes.iter().flat_map(sent_keys).collect()
}

fn accepted_keys(net: &Net, node: usize) -> Vec<SenderKey> {
    net.nodes[node]
        .answers
        .iter()
        .filter_map(|a| match a {
            DeliveryEvent::Accepted { key, .. } => Some(*key),
            _ => None,
        })
        .collect()
}

fn connected_pair() -> Net {
    let mut net = Net::new(&["alice", "bob"], DeliveryConfig::default());
    net.connect(ALICE);
    net.connect(BOB);
    net
}

#[test]
fn messages_arrive_in_order_and_are_shown_once() {
    // The basic promise: a conversation's messages reach the game in order, once each.
    let mut net = connected_pair();
    let sent: Vec<String> = (1..=5).map(|i| format!("msg {i}")).collect();
    for text in &sent {
        net.send(ALICE, BOB, text).unwrap();
    }
    net.run_until_quiet();
    assert_eq!(texts(&net, BOB), sent);
    // Bob acknowledged them all, so the core answered Alice and holds nothing.
    assert_eq!(accepted_keys(&net, ALICE).len(), 5);
    assert_eq!(net.nodes[ALICE].delivery.outbox_len(), 0);
    assert_eq!(net.stored_for(BOB), 0);
}

#[test]
fn nothing_is_transmitted_before_connected() {
    // Frames before the handshake would be a protocol violation at the edge.
    let mut net = Net::new(&["alice", "bob"], DeliveryConfig::default());
    net.send(ALICE, BOB, "early").unwrap();
    net.nodes[ALICE].delivery.ack(MessageId(3));
    assert!(net.nodes[ALICE].delivery.poll_transmit().is_none());
    net.connect(ALICE);
    let link = net.nodes[ALICE].link.as_ref().unwrap();
    assert_eq!(
        link.up_control.len(),
        1,
        "the early ack leaves once connected"
    );
    assert_eq!(all_up_sends(&net, ALICE), vec![1]);
}

#[test]
fn a_duplicate_on_the_wire_is_shown_once_and_acked() {
    // "A rare duplicate on the wire is acceptable, but the game sees each message once";
    // the duplicate must still be acknowledged or the core would keep it for ever.
    let mut net = connected_pair();
    net.send(ALICE, BOB, "hello").unwrap();
    let lane = ConversationId::direct(&net.user(ALICE), &net.user(BOB)).lane(4);
    assert!(net.step_up(ALICE, Stream::Lane(lane)));
    assert!(net.duplicate_down(BOB, Stream::Lane(lane)));
    assert!(net.step_down(BOB, Stream::Lane(lane)));
    assert!(net.step_down(BOB, Stream::Lane(lane)));
    assert_eq!(texts(&net, BOB), vec!["hello"]);
    let acks: Vec<&ClientFrame> = net.nodes[BOB]
        .link
        .as_ref()
        .unwrap()
        .up_control
        .iter()
        .collect();
    assert_eq!(
        acks.len(),
        2,
        "the original and the duplicate are both acknowledged"
    );
    net.run_until_quiet();
    assert_eq!(net.stored_for(BOB), 0);
}

#[test]
fn a_resend_stored_twice_by_the_core_is_shown_once_and_both_copies_acked() {
    // Alice's Accepted is lost with her connection, so she re-sends; the core stores a
    // second copy under a new id. Bob must show it once and free both copies.
    let mut net = connected_pair();
    net.disconnect(BOB);
    net.send(ALICE, BOB, "once").unwrap();
    net.run_until_quiet();
    net.flush(); // Stored: Accepted goes to Alice's control stream...
    net.disconnect(ALICE); // ...and is lost.
    net.connect(ALICE);
    net.run_until_quiet();
    net.flush();
    net.run_until_quiet();
    assert_eq!(net.stored_for(BOB), 2, "two copies under two ids");
    net.connect(BOB);
    net.run_until_quiet();
    assert_eq!(texts(&net, BOB), vec!["once"]);
    assert_eq!(net.stored_for(BOB), 0);
    assert_eq!(accepted_keys(&net, ALICE).len(), 1);
}

#[test]
fn outbox_entries_are_resent_after_reconnect_in_order_before_newer_ones() {
    // The outbox is the point of the library: what the core did not accept survives the
    // connection, and a conversation's order holds across the re-send.
    let mut net = connected_pair();
    for i in 1..=3 {
        net.send(ALICE, BOB, &format!("m{i}")).unwrap();
    }
    // The first one reaches the core and is accepted (Bob acknowledges it).
    let lane = ConversationId::direct(&net.user(ALICE), &net.user(BOB)).lane(4);
    assert!(net.step_up(ALICE, Stream::Lane(lane)));
    assert!(net.step_down(BOB, Stream::Lane(lane)));
    assert!(net.step_up(BOB, Stream::Control));
    while net.step_down(ALICE, Stream::Control) {} // Synced, then Accepted.
    assert_eq!(net.nodes[ALICE].delivery.outbox_len(), 2);
    // The connection drops with m2 and m3 in flight; m4 is written while offline.
    net.disconnect(ALICE);
    net.send(ALICE, BOB, "m4").unwrap();
    net.connect(ALICE);
    assert_eq!(all_up_sends(&net, ALICE), vec![2, 3, 4]);
    net.run_until_quiet();
    assert_eq!(texts(&net, BOB), vec!["m1", "m2", "m3", "m4"]);
    assert_eq!(net.nodes[ALICE].delivery.outbox_len(), 0);
}

#[test]
fn accepted_removes_from_the_outbox_and_a_late_duplicate_answer_is_ignored() {
    // A second Accepted (for example from a re-send stored twice) must not be reported
    // to the game as a second success.
    let mut net = connected_pair();
    let key = net.send(ALICE, BOB, "hi").unwrap();
    net.run_until_quiet();
    assert_eq!(accepted_keys(&net, ALICE), vec![key]);
    assert_eq!(net.nodes[ALICE].delivery.outbox_len(), 0);
    let now = net.now;
    let late = ServerFrame::Accepted(crate::frames::client::Accepted {
        key,
        id: MessageId(99),
    });
    net.nodes[ALICE].delivery.handle_frame(now, late);
    net.pump(ALICE);
    assert_eq!(accepted_keys(&net, ALICE), vec![key]);
}

#[test]
fn a_rejection_removes_from_the_outbox_with_the_cores_code() {
    // A business error answers the one message; it must not be re-sent after reconnect.
    let mut net = connected_pair();
    net.core.blocked.push((net.user(ALICE), net.user(BOB)));
    let key = net.send(ALICE, BOB, "hey").unwrap();
    net.run_until_quiet();
    assert!(matches!(
        net.nodes[ALICE].answers.as_slice(),
        [DeliveryEvent::Rejected { key: k, code: ErrorCode::Blocked, .. }] if *k == key
    ));
    net.disconnect(ALICE);
    net.connect(ALICE);
    assert!(all_up_sends(&net, ALICE).is_empty());
    assert!(texts(&net, BOB).is_empty());
}

#[test]
fn a_send_timeout_fires_and_removes_the_message() {
    // A game may prefer an error over waiting for ever while offline.
    let config = DeliveryConfig {
        send_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let mut net = Net::new(&["alice", "bob"], config);
    let key = net.send(ALICE, BOB, "anyone?").unwrap();
    assert_eq!(
        net.nodes[ALICE].delivery.poll_timeout(),
        Some(net.now + Duration::from_secs(5))
    );
    net.advance(Duration::from_secs(4));
    assert!(net.nodes[ALICE].answers.is_empty());
    net.advance(Duration::from_secs(1));
    assert!(matches!(
        net.nodes[ALICE].answers.as_slice(),
        [DeliveryEvent::Rejected { key: k, code: ErrorCode::Timeout, .. }] if *k == key
    ));
    assert_eq!(net.nodes[ALICE].delivery.outbox_len(), 0);
    assert_eq!(net.nodes[ALICE].delivery.poll_timeout(), None);
    net.connect(ALICE);
    assert!(
        all_up_sends(&net, ALICE).is_empty(),
        "a timed-out message is not sent"
    );
}

#[test]
fn a_full_outbox_refuses_new_messages_until_one_is_answered() {
    // The outbox is bounded: a game sending faster than the server accepts learns it.
    let config = DeliveryConfig {
        outbox_max: 3,
        ..Default::default()
    };
    let mut net = Net::new(&["alice", "bob"], config);
    for i in 0..3 {
        net.send(ALICE, BOB, &format!("{i}")).unwrap();
    }
    let err = net.send(ALICE, BOB, "one too many").unwrap_err();
    assert_eq!(err, SendError::OutboxFull { max: 3 });
    assert_eq!(err.code(), ErrorCode::OutboxFull);
    net.connect(ALICE);
    net.connect(BOB);
    net.run_until_quiet();
    assert!(net.send(ALICE, BOB, "room again").is_ok());
}

#[test]
fn texts_are_checked_before_queueing() {
    // The edge would reject these; failing locally is faster and clearer.
    let mut net = Net::new(&["alice", "bob"], DeliveryConfig::default());
    assert_eq!(net.send(ALICE, BOB, ""), Err(SendError::InvalidText));
    let huge = "x".repeat(TEXT_BYTES_MAX_CEILING + 1);
    assert!(matches!(
        net.send(ALICE, BOB, &huge),
        Err(SendError::TextTooLarge { .. })
    ));
    // Before any Welcome the ceiling applies; the edge's smaller limit applies after.
    let big = "x".repeat(5000);
    let queued_early = net.send(ALICE, BOB, &big).unwrap();
    net.connect(ALICE); // The model's edge allows 4096 bytes.
    assert!(matches!(
        net.nodes[ALICE].answers.as_slice(),
        [DeliveryEvent::Rejected { key, code: ErrorCode::TextTooLarge, .. }] if *key == queued_early
    ));
    assert!(all_up_sends(&net, ALICE).is_empty());
    assert_eq!(
        net.send(ALICE, BOB, &big),
        Err(SendError::TextTooLarge {
            len: 5000,
            max: 4096
        })
    );
}

#[test]
fn acks_coalesce_into_ranges() {
    // One Ack frame for a burst of deliveries, not one per message: the control stream
    // and the core's store see a range.
    let mut net = connected_pair();
    net.disconnect(BOB);
    for i in 0..10 {
        net.send(ALICE, BOB, &format!("{i}")).unwrap();
    }
    net.run_until_quiet();
    net.flush();
    net.connect(BOB);
    let lane = ConversationId::direct(&net.user(ALICE), &net.user(BOB)).lane(4);
    while net.arrive_down(BOB, Stream::Lane(lane)) {}
    net.pump(BOB);
    let control = &net.nodes[BOB].link.as_ref().unwrap().up_control;
    let ranges: Vec<&Vec<IdRange>> = control
        .iter()
        .map(|f| match f {
            ClientFrame::Ack(a) => &a.ranges,
            other => panic!("not an ack: {other:?}"),
        })
        .collect();
    let ids: Vec<MessageId> = net.nodes[BOB].shown.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(
        ranges,
        vec![&vec![IdRange {
            first: ids[0],
            last: ids[9]
        }]]
    );
}

#[test]
fn lanes_are_consistent_per_conversation() {
    // Order within a conversation rests on it riding one lane, in both directions.
    let names: Vec<String> = (0..12).map(|i| format!("friend-{i}")).collect();
    let mut users: Vec<&str> = vec!["alice"];
    users.extend(names.iter().map(String::as_str));
    let mut net = Net::new(&users, DeliveryConfig::default());
    for node in 0..users.len() {
        net.nodes[node].lanes_next = 8;
        net.connect(node);
    }
    for round in 0..3 {
        for friend in 1..users.len() {
            net.send(ALICE, friend, &format!("r{round}")).unwrap();
        }
    }
    let link = net.nodes[ALICE].link.as_ref().unwrap();
    let mut lanes_used = std::collections::BTreeSet::new();
    for (lane, frames) in link.up_lanes.iter().enumerate() {
        for frame in frames {
            let ClientFrame::Send(s) = frame else {
                panic!("not a send")
            };
            let expected = ConversationId::direct(&net.user(ALICE), &s.to).lane(8);
            assert_eq!(
                lane as u8, expected,
                "message to {} on the wrong lane",
                s.to
            );
            lanes_used.insert(lane);
        }
    }
    assert!(lanes_used.len() > 1, "conversations spread over lanes");
    // Each friend receives on the lane of the same conversation.
    net.run_until_quiet();
    for friend in 1..users.len() {
        assert_eq!(texts(&net, friend), vec!["r0", "r1", "r2"]);
    }
}

#[test]
fn a_core_crash_before_commit_loses_nothing() {
    // The message was not yet committed nor acknowledged, so not Accepted: the outbox
    // still has it and re-sends it when the connection comes back.
    let mut net = connected_pair();
    net.disconnect(BOB);
    net.send(ALICE, BOB, "survive").unwrap();
    net.run_until_quiet();
    assert_eq!(net.stored_for(BOB), 1);
    net.crash_core();
    assert_eq!(net.stored_for(BOB), 0, "lost from memory");
    net.connect(ALICE);
    net.connect(BOB);
    net.run_until_quiet();
    assert_eq!(texts(&net, BOB), vec!["survive"]);
    assert_eq!(net.nodes[ALICE].delivery.outbox_len(), 0);
}

#[test]
fn without_auto_ack_the_game_acknowledges_and_a_replay_of_a_held_message_waits() {
    // A game that saves messages before acknowledging must not have a replayed copy
    // acknowledged behind its back: the core would delete what the game has not saved.
    let config = DeliveryConfig {
        auto_ack: false,
        ..Default::default()
    };
    let mut net = Net::new(&["alice", "bob"], config);
    net.connect(ALICE);
    net.send(ALICE, BOB, "save me").unwrap();
    net.run_until_quiet();
    net.flush();
    net.run_until_quiet();
    net.connect(BOB);
    net.run_until_quiet();
    assert_eq!(texts(&net, BOB), vec!["save me"]);
    assert_eq!(net.stored_for(BOB), 1, "not acknowledged yet");
    // Reconnect: the core replays it; it is a duplicate, but still held by the game.
    net.disconnect(BOB);
    net.connect(BOB);
    net.run_until_quiet();
    assert_eq!(texts(&net, BOB), vec!["save me"]);
    assert_eq!(
        net.stored_for(BOB),
        1,
        "a held message is not acknowledged for the game"
    );
    let id = net.nodes[BOB].shown[0].id;
    net.nodes[BOB].delivery.ack(id);
    net.run_until_quiet();
    assert_eq!(net.stored_for(BOB), 0);
}

#[test]
fn a_welcome_sets_user_limits_and_lanes() {
    // The lane a message travels on depends on who we are and how many lanes the edge
    // asked for; both come from Welcome.
    let mut d = super::Delivery::new(1, DeliveryConfig::default());
    let now = std::time::Instant::now();
    let bob = UserId::new("bob").unwrap();
    d.send(now, bob.clone(), "x".into()).unwrap();
    let me = UserId::new("carol").unwrap();
    let limits = Limits {
        text_bytes_max: 100,
        send_per_second: 1,
        send_burst: 1,
        lanes: 5,
    };
    let welcome = Welcome {
        user: me.clone(),
        name: "Carol".into(),
        session: SessionId(9),
        limits,
        capabilities: 0,
    };
    d.handle_connected(now, &welcome);
    assert_eq!(d.user(), Some(&me));
    assert_eq!(d.text_bytes_max(), 100);
    let t = d.poll_transmit().unwrap();
    assert_eq!(t.lane, Some(ConversationId::direct(&me, &bob).lane(5)));
    assert!(
        d.poll_transmit().is_none(),
        "each entry once per connection"
    );
}

#[test]
fn a_full_lane_holds_back_only_its_own_conversations() {
    // Lanes exist so one busy conversation cannot stall the others. The driver's lane
    // queues are bounded; when one is full, messages of other lanes must still go out,
    // and the held-back lane must resume in its own order once it has room.
    let mut d = super::Delivery::new(1, DeliveryConfig::default());
    let now = std::time::Instant::now();
    let me = UserId::new("carol").unwrap();
    let lanes = 8;
    // Two recipients on different lanes.
    let busy = UserId::new("busy").unwrap();
    let busy_lane = ConversationId::direct(&me, &busy).lane(lanes);
    let other = (0..100)
        .map(|i| UserId::new(format!("friend-{i}")).unwrap())
        .find(|u| ConversationId::direct(&me, u).lane(lanes) != busy_lane)
        .unwrap();
    let welcome = Welcome {
        user: me.clone(),
        name: "Carol".into(),
        session: SessionId(1),
        limits: Limits {
            text_bytes_max: 4096,
            send_per_second: 1,
            send_burst: 1,
            lanes,
        },
        capabilities: 0,
    };
    d.handle_connected(now, &welcome);
    for i in 0..3 {
        d.send(now, busy.clone(), format!("busy {i}")).unwrap();
    }
    d.send(now, other.clone(), "other".into()).unwrap();
    d.send(now, busy.clone(), "busy 3".into()).unwrap();

    let text = |t: &super::Transmit| match &t.frame {
        crate::frames::client::ClientFrame::Send(s) => s.text.clone(),
        f => panic!("not a send: {f:?}"),
    };
    // The busy lane is full: only the other conversation's message goes.
    let full = |lane: Option<u8>| lane != Some(busy_lane);
    let t = d.poll_transmit_where(full).unwrap();
    assert_eq!(text(&t), "other");
    assert!(d.poll_transmit_where(full).is_none());
    assert!(d.wants_transmit(), "the busy lane's messages still wait");
    // Room again: the busy lane resumes, in order, nothing lost or repeated.
    let sent: Vec<String> = std::iter::from_fn(|| d.poll_transmit_where(|_| true))
        .map(|t| text(&t))
        .collect();
    assert_eq!(sent, vec!["busy 0", "busy 1", "busy 2", "busy 3"]);
    assert!(!d.wants_transmit());

    // A lane with room for one message at a time still keeps its order.
    let mut d2 = super::Delivery::new(2, DeliveryConfig::default());
    d2.handle_connected(now, &welcome);
    for i in 0..3 {
        d2.send(now, busy.clone(), format!("b{i}")).unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let mut room = 1;
        let t = d2
            .poll_transmit_where(|_| {
                let ok = room > 0;
                room -= 1;
                ok
            })
            .unwrap();
        order.push(text(&t));
    }
    assert_eq!(order, vec!["b0", "b1", "b2"]);
}

#[test]
fn with_admission_an_overloaded_server_makes_a_busy_sender_refuse_at_once_and_it_recovers() {
    // With admission on, a sender that outruns the server is told, instead of queueing
    // every message behind the backlog; once the server answers quickly again, it may send
    // as before.
    use super::Delivery;
    use crate::frames::client::Accepted;
    use std::time::Instant;

    let ms = Duration::from_millis(1);
    let config = DeliveryConfig {
        admission: Some(super::ADMISSION_QUEUE_TARGET),
        ..DeliveryConfig::default()
    };
    let mut d = Delivery::new(9, config);
    let welcome = Welcome {
        user: UserId::new("alice").unwrap(),
        name: "Alice".into(),
        session: SessionId(1),
        limits: Limits {
            text_bytes_max: 4096,
            send_per_second: 1000,
            send_burst: 1000,
            lanes: 8,
        },
        capabilities: 0,
    };
    let t0 = Instant::now();
    d.handle_connected(t0, &welcome);
    let bob = UserId::new("bob").unwrap();
    let mut id = 0;
    let mut answer = |d: &mut Delivery, now, key: SenderKey| {
        id += 1;
        d.handle_frame(
            now,
            ServerFrame::Accepted(Accepted {
                key,
                id: MessageId(id),
            }),
        );
    };
    // One message per millisecond. For 300 ms the server answers each within 2 ms.
    let mut now = t0;
    for _ in 0..300 {
        let key = d.send(now, bob.clone(), "hi".into()).unwrap();
        answer(&mut d, now + 2 * ms, key);
        now += ms;
    }
    // Then it falls behind: each answer takes 80 ms. Sends must soon fail with Busy
    // while dozens are still in flight, far below the outbox's 1024.
    let mut in_flight = std::collections::VecDeque::new();
    let mut busy = None;
    for _ in 0..1000 {
        while in_flight
            .front()
            .is_some_and(|&(at, _)| at + 80 * ms <= now)
        {
            let (at, key) = in_flight.pop_front().unwrap();
            answer(&mut d, at + 80 * ms, key);
        }
        match d.send(now, bob.clone(), "hi".into()) {
            Ok(key) => in_flight.push_back((now, key)),
            Err(e) => {
                busy = Some(e);
                break;
            }
        }
        now += ms;
    }
    let busy = busy.expect("the sender was never told the server is behind");
    assert!(
        matches!(busy, SendError::Busy { in_flight, .. } if in_flight < 200),
        "{busy:?}"
    );
    assert_eq!(busy.code(), ErrorCode::Unavailable);
    // The backlog drains and answers are quick again: sending works again.
    for (at, key) in in_flight.drain(..) {
        answer(&mut d, (at + 80 * ms).max(now), key);
    }
    let mut sent = 0;
    for _ in 0..2000 {
        if let Ok(key) = d.send(now, bob.clone(), "hi".into()) {
            answer(&mut d, now + 2 * ms, key);
            sent += 1;
        }
        now += ms;
    }
    assert!(
        sent > 1900,
        "only {sent} of 2000 sends went through after recovery"
    );
}
