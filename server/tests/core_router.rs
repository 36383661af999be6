#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The router's delivery semantics, with no network and a virtual clock.
//!
//! [`Harness`] plays the driver: it feeds the router edge frames, queues its outputs on
//! fake edges whose lanes have a bounded capacity (a full lane is reported back exactly
//! as the real driver does), commits batches to a [`MemStore`] — at once, or held to play
//! a slow disk — and advances time by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::frames::link::{Attach, Submit};
use protocol::{
    ConversationId, CoreFrame, DeviceId, EdgeFrame, ErrorCode, IdRange, Message, MessageId,
    SenderKey, SessionId, ShardId, ShardMap, UserId,
};
use server::router::{ACK_RANGES_WAITING_MAX, Channel, EdgeId, Now, Output, Router, RouterConfig};
use server::store::mem::MemStore;
use server::store::{
    CommitOutcome, LogStore, StoreConfig, StoreError, StoredMessage, UserState, WriteBatch,
};

const ALICE_EDGE: EdgeId = EdgeId(1);
const BOB_EDGE: EdgeId = EdgeId(2);
const ALICE: SessionId = SessionId(100);
const BOB: SessionId = SessionId(200);

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Commits as soon as the writer is free: most tests look at the pipeline itself. The
/// commit delay has its own tests (`delayed_config`).
fn config() -> RouterConfig {
    RouterConfig {
        lanes: 4,
        commit_delay: Duration::ZERO,
        ack_commit_delay: Duration::ZERO,
        ..RouterConfig::default()
    }
}

/// The default commit delay (10 ms) and acknowledgement delay (50 ms).
fn delayed_config() -> RouterConfig {
    RouterConfig {
        lanes: 4,
        ..RouterConfig::default()
    }
}

/// A store that fails commits or replay reads on cue, to play a disk error.
struct FlakyStore {
    inner: MemStore,
    fail_commits: AtomicBool,
    fail_reads: AtomicBool,
}

impl LogStore for FlakyStore {
    fn commit(&self, batch: &WriteBatch) -> Result<CommitOutcome, StoreError> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StoreError::Transaction("disk on fire".into()));
        }
        self.inner.commit(batch)
    }
    fn user_state(&self, user: &UserId) -> Result<UserState, StoreError> {
        self.inner.user_state(user)
    }
    fn replay(
        &self,
        user: &UserId,
        device: DeviceId,
        after: Option<MessageId>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Read("sector not found".into()));
        }
        self.inner.replay(user, device, after, limit, now_ms)
    }
    fn reserved_ids_through(&self) -> Result<u64, StoreError> {
        self.inner.reserved_ids_through()
    }
}

/// One fake edge: bounded lanes, and everything it received in order.
struct FakeEdge {
    /// Frames queued on each lane and not yet read by the edge.
    lanes: Vec<usize>,
    lane_capacity: usize,
    /// Everything received, in the order the router queued it.
    log: Vec<(Channel, CoreFrame)>,
    closed: Option<ErrorCode>,
}

struct Harness {
    router: Router,
    store: Arc<FlakyStore>,
    now: Now,
    edges: HashMap<EdgeId, FakeEdge>,
    /// Commit batches as soon as they are handed over; otherwise hold them.
    auto_commit: bool,
    held: Option<WriteBatch>,
    /// Every batch committed, in order.
    committed: Vec<WriteBatch>,
    next_counter: u64,
}

impl Harness {
    fn new(config: RouterConfig) -> Self {
        let store = Arc::new(FlakyStore {
            inner: MemStore::new(StoreConfig {
                device_ttl_ms: config.ttl_ms,
            }),
            fail_commits: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
        });
        Self::on_store(config, store)
    }

    /// A router over an existing store: a restart.
    fn on_store(config: RouterConfig, store: Arc<FlakyStore>) -> Self {
        let router = Router::new(config, store.clone()).unwrap();
        let now = Now {
            instant: Instant::now(),
            unix_ms: 1_700_000_000_000,
        };
        let mut h = Self {
            router,
            store,
            now,
            edges: HashMap::new(),
            auto_commit: true,
            held: None,
            committed: Vec::new(),
            next_counter: 0,
        };
        h.drive();
        assert!(
            h.router.ids_ready(),
            "the first reservation is committed before serving"
        );
        h
    }

    fn connect(&mut self, edge: EdgeId, lanes: u8, lane_capacity: usize) {
        self.router.handle_edge_connected(self.now, edge, lanes);
        self.edges.insert(
            edge,
            FakeEdge {
                lanes: vec![0; lanes as usize],
                lane_capacity,
                log: Vec::new(),
                closed: None,
            },
        );
    }

    fn frame(&mut self, edge: EdgeId, frame: EdgeFrame) {
        self.router.handle_edge_frame(self.now, edge, frame);
        self.drive();
    }

    fn attach(&mut self, edge: EdgeId, session: SessionId, name: &str, device: u64) {
        self.frame(edge, attach_frame(session, name, device));
    }

    /// Attaches without playing the driver: the test pumps replay itself.
    fn attach_unpumped(&mut self, edge: EdgeId, session: SessionId, name: &str, device: u64) {
        let frame = attach_frame(session, name, device);
        self.router.handle_edge_frame(self.now, edge, frame);
        self.drain_outputs();
    }

    /// One pump of replay with room for everything, as the driver does after an input.
    fn pump_once(&mut self) {
        self.router.pump_replay(self.now, &mut |_edge| usize::MAX);
        self.drain_outputs();
    }

    /// Connects Alice's and Bob's edges (four lanes of 1,024 each) and submits `texts`
    /// from Alice to Bob, who has no session: the backlog a replay test starts from.
    fn queue_for_offline_bob(&mut self, texts: impl IntoIterator<Item = String>) {
        self.connect(ALICE_EDGE, 4, 1024);
        self.connect(BOB_EDGE, 4, 1024);
        for text in texts {
            self.submit("alice", "bob", &text);
        }
    }

    /// Submits a message from `from` (at ALICE_EDGE/ALICE) and returns its key.
    fn submit(&mut self, from: &str, to: &str, text: &str) -> SenderKey {
        self.next_counter += 1;
        let key = SenderKey {
            epoch: 7,
            counter: self.next_counter,
        };
        let submit = Submit {
            session: ALICE,
            from: user(from),
            from_name: from.to_uppercase(),
            to: user(to),
            key,
            sent_at_ms: self.now.unix_ms,
            text: text.into(),
        };
        self.frame(ALICE_EDGE, EdgeFrame::Submit(submit));
        key
    }

    fn ack(&mut self, edge: EdgeId, session: SessionId, ids: &[MessageId]) {
        let ranges = ids.iter().map(|id| IdRange::single(*id)).collect();
        self.frame(edge, EdgeFrame::Ack { session, ranges });
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        self.router.handle_timeout(self.now);
        self.drive();
    }

    /// Plays the driver until nothing is left to do.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            self.drain_outputs();
            // A pump that queued frames is followed by another while sessions wait to
            // replay: the driver pumps again when the link writer takes those frames.
            loop {
                let sent_before = self.frames_sent();
                let edges = &self.edges;
                self.router.pump_replay(self.now, &mut |edge| {
                    edges.get(&edge).map_or(0, |e| {
                        e.lanes
                            .iter()
                            .map(|used| e.lane_capacity - used)
                            .min()
                            .unwrap_or(0)
                    })
                });
                self.drain_outputs();
                if self.frames_sent() == sent_before || !self.router.replay_waiting() {
                    break;
                }
            }
            if self.held.is_none()
                && let Some(batch) = self.router.poll_batch(self.now)
            {
                self.held = Some(batch);
            }
            if self.auto_commit && self.held.is_some() {
                self.finish_commit();
                continue;
            }
            return;
        }
        panic!("the router never settled");
    }

    /// Frames in the edges' logs (which only grow while the driver plays).
    fn frames_sent(&self) -> usize {
        self.edges.values().map(|e| e.log.len()).sum()
    }

    /// Lets the held batch commit (the slow disk finishes).
    fn finish_commit(&mut self) {
        let batch = self.held.take().expect("a batch is committing");
        let result = self.store.commit(&batch);
        if result.is_ok() {
            self.committed.push(batch.clone());
        }
        self.router.handle_commit(self.now, batch, result);
        self.drain_outputs();
    }

    fn drain_outputs(&mut self) {
        while let Some(out) = self.router.poll_output() {
            match &out {
                Output::Send {
                    edge,
                    channel,
                    frame,
                } => {
                    let e = self.edges.get_mut(edge).expect("send to a known edge");
                    assert!(e.closed.is_none(), "send to a closed edge");
                    if let Channel::Lane(lane) = channel {
                        assert!(
                            matches!(frame, CoreFrame::Deliver { .. }),
                            "only deliveries on lanes"
                        );
                        let used = &mut e.lanes[*lane as usize];
                        if *used >= e.lane_capacity {
                            self.router.handle_send_full(self.now, out);
                            continue;
                        }
                        *used += 1;
                    }
                    e.log.push((*channel, frame.clone()));
                }
                Output::SendEncoded {
                    edge,
                    lane,
                    session,
                    id,
                    frame,
                } => {
                    let e = self.edges.get_mut(edge).expect("send to a known edge");
                    assert!(e.closed.is_none(), "send to a closed edge");
                    // The stored bytes, as the edge reads them: a delivery of `id` to
                    // `session`, the same frame the decoded message would have made.
                    let decoded = protocol::codec::decode_exact::<CoreFrame>(frame.as_bytes())
                        .expect("an encoded delivery decodes");
                    let CoreFrame::Deliver { sessions, message } = &decoded else {
                        panic!("an encoded output is a delivery: {decoded:?}");
                    };
                    assert_eq!((sessions.as_slice(), message.id), (&[*session][..], *id));
                    let conversation = ConversationId::direct(&message.from, &message.to);
                    assert_eq!(conversation.lane(e.lanes.len() as u8), *lane, "its lane");
                    let used = &mut e.lanes[*lane as usize];
                    if *used >= e.lane_capacity {
                        self.router.handle_send_full(self.now, out);
                        continue;
                    }
                    *used += 1;
                    e.log.push((Channel::Lane(*lane), decoded));
                }
                Output::Close { edge, code, .. } => {
                    self.edges.get_mut(edge).expect("close a known edge").closed = Some(*code);
                }
            }
        }
    }

    /// The edge reads everything queued on its lanes (making room).
    fn edge_reads(&mut self, edge: EdgeId) {
        self.edges
            .get_mut(&edge)
            .unwrap()
            .lanes
            .iter_mut()
            .for_each(|l| *l = 0);
        self.drive();
    }

    /// Takes the edge's log.
    fn take_log(&mut self, edge: EdgeId) -> Vec<(Channel, CoreFrame)> {
        std::mem::take(&mut self.edges.get_mut(&edge).unwrap().log)
    }

    /// Messages delivered to `session` (taking the whole log of `edge`).
    fn delivered(&mut self, edge: EdgeId, session: SessionId) -> Vec<Message> {
        deliveries_to(&self.take_log(edge), session)
    }

    fn stored(&self, name: &str, device: u64) -> Vec<u64> {
        let stored = self
            .store
            .replay(&user(name), DeviceId(device), None, usize::MAX, 0)
            .unwrap();
        stored.iter().map(|s| s.message.id.0).collect()
    }
}

fn attach_frame(session: SessionId, name: &str, device: u64) -> EdgeFrame {
    EdgeFrame::Attach(Attach {
        session,
        user: user(name),
        device: DeviceId(device),
    })
}

fn deliveries_to(log: &[(Channel, CoreFrame)], session: SessionId) -> Vec<Message> {
    log.iter()
        .filter_map(|(_, f)| match f {
            CoreFrame::Deliver { sessions, message } if sessions.contains(&session) => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect()
}

fn accepted(log: &[(Channel, CoreFrame)]) -> Vec<(SenderKey, MessageId)> {
    log.iter()
        .filter_map(|(_, f)| match f {
            CoreFrame::Accepted { key, id, .. } => Some((*key, *id)),
            _ => None,
        })
        .collect()
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

/// Alice at one edge, Bob at another, both attached and synced.
fn alice_and_bob(config: RouterConfig) -> Harness {
    let mut h = Harness::new(config);
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 4, 1024);
    h.attach(ALICE_EDGE, ALICE, "alice", 1);
    h.attach(BOB_EDGE, BOB, "bob", 1);
    let log = h.take_log(BOB_EDGE);
    assert_eq!(
        log,
        vec![(Channel::Control, CoreFrame::Synced { session: BOB })]
    );
    h.take_log(ALICE_EDGE);
    h
}

#[test]
fn an_online_recipient_gets_the_message_before_it_is_committed() {
    // Requirement 1: "as fast as the network allows" — the push must not wait for fsync.
    let mut h = alice_and_bob(config());
    h.auto_commit = false;
    let key = h.submit("alice", "bob", "hi");
    let got = h.delivered(BOB_EDGE, BOB);
    assert_eq!(texts(&got), vec!["hi"]);
    assert_eq!(got[0].from, user("alice"));
    assert_eq!(got[0].key, key);
    assert!(h.held.is_some(), "the message is still being committed");
    assert_eq!(h.stored("bob", 1), Vec::<u64>::new(), "not on disk yet");
    assert!(
        accepted(&h.take_log(ALICE_EDGE)).is_empty(),
        "not safe yet: no Accepted"
    );
}

#[test]
fn a_message_acknowledged_before_its_batch_is_written_never_touches_the_disk() {
    // The point of pushing before committing: under load, most messages are in the
    // recipient's hands before the disk is free, and then they cost no write at all.
    let mut h = alice_and_bob(config());
    h.auto_commit = false;
    // A first message occupies the disk; the second accumulates behind it.
    let first = h.submit("alice", "bob", "first");
    let second = h.submit("alice", "bob", "second");
    let got = h.delivered(BOB_EDGE, BOB);
    assert_eq!(texts(&got), vec!["first", "second"]);
    assert!(got[0].id < got[1].id);

    h.ack(BOB_EDGE, BOB, &[got[1].id]);
    assert_eq!(
        accepted(&h.take_log(ALICE_EDGE)),
        vec![(second, got[1].id)],
        "every device has it: safe, without waiting for the disk"
    );
    h.auto_commit = true;
    h.finish_commit();
    h.drive();
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)), vec![(first, got[0].id)]);
    let written: Vec<u64> = h
        .committed
        .iter()
        .flat_map(|b| b.appends.iter().map(|s| s.message.id.0))
        .collect();
    assert_eq!(
        written,
        vec![got[0].id.0],
        "the acknowledged message was never written"
    );
    assert_eq!(h.router.stats().skipped_disk, 1);
    assert_eq!(h.router.pending_len(), 0);
}

#[test]
fn an_unacknowledged_message_is_accepted_once_committed_and_stays_stored() {
    let mut h = alice_and_bob(config());
    let key = h.submit("alice", "bob", "hello");
    let got = h.delivered(BOB_EDGE, BOB);
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)), vec![(key, got[0].id)]);
    assert_eq!(h.stored("bob", 1), vec![got[0].id.0]);
    // A late ack still deletes it.
    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    assert_eq!(h.stored("bob", 1), Vec::<u64>::new());
    assert!(
        accepted(&h.take_log(ALICE_EDGE)).is_empty(),
        "Accepted is sent once"
    );
}

#[test]
fn an_offline_recipient_gets_stored_messages_in_order_then_synced() {
    // Requirement 2 and 3: stored while offline, replayed in order on reconnect.
    let mut h = Harness::new(RouterConfig {
        replay_page: 2,
        replay_headroom: 0,
        ..config()
    });
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 4, 1024);
    let keys: Vec<SenderKey> = (0..5)
        .map(|i| h.submit("alice", "bob", &format!("m{i}")))
        .collect();
    let acc = accepted(&h.take_log(ALICE_EDGE));
    assert_eq!(
        acc.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        keys,
        "each stored and accepted"
    );

    h.attach(BOB_EDGE, BOB, "bob", 1);
    let log = h.take_log(BOB_EDGE);
    let got = deliveries_to(&log, BOB);
    assert_eq!(texts(&got), vec!["m0", "m1", "m2", "m3", "m4"]);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        log.last(),
        Some(&(Channel::Control, CoreFrame::Synced { session: BOB }))
    );
    assert_eq!(
        log.iter()
            .filter(|(_, f)| matches!(f, CoreFrame::Synced { .. }))
            .count(),
        1
    );
}

#[test]
fn replay_waits_for_acknowledgements_beyond_the_window() {
    // Flow control: a device catching up on a backlog gets at most `replay_window`
    // messages ahead of its acknowledgements, so a burst never overflows its edge's
    // per-client queue (which would drop it as a slow consumer, over and over). As it
    // acknowledges, the rest follows, in order, then `Synced`.
    let mut h = Harness::new(RouterConfig {
        replay_page: 4,
        replay_headroom: 0,
        replay_window: 5,
        ..config()
    });
    h.queue_for_offline_bob((0..12).map(|i| format!("m{i:02}")));
    h.attach(BOB_EDGE, BOB, "bob", 1);
    let mut got = deliveries_to(&h.take_log(BOB_EDGE), BOB);
    // As many whole pages as fit the window: one page of 4 (a second would overrun it).
    assert_eq!(got.len(), 4, "only a window's worth before any ack");
    let mut all: Vec<String> = got.iter().map(|m| m.text.clone()).collect();

    let mut synced = false;
    for _ in 0..10 {
        let ids: Vec<MessageId> = got.iter().map(|m| m.id).collect();
        h.ack(BOB_EDGE, BOB, &ids);
        let log = h.take_log(BOB_EDGE);
        let more = deliveries_to(&log, BOB);
        assert!(more.len() <= 5, "never more than the window in flight");
        synced |= log
            .iter()
            .any(|(_, f)| matches!(f, CoreFrame::Synced { session } if *session == BOB));
        if more.is_empty() {
            break;
        }
        all.extend(more.iter().map(|m| m.text.clone()));
        got = more;
    }
    let expected: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    assert_eq!(all, expected, "the whole backlog, in order, once");
    assert!(synced, "Synced once the backlog was acknowledged through");
    assert!(
        h.stored("bob", 1).is_empty(),
        "everything acknowledged is gone"
    );
}

#[test]
fn messages_submitted_while_a_session_replays_come_after_the_stored_ones() {
    // The race replay must win: a message arriving between "store exhausted" and "live"
    // must be neither lost nor delivered out of order.
    let mut h = Harness::new(RouterConfig {
        replay_page: 2,
        replay_headroom: 0,
        ..config()
    });
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 1, 2); // one lane with room for exactly one page
    for i in 0..4 {
        h.submit("alice", "bob", &format!("old{i}"));
    }
    h.attach(BOB_EDGE, BOB, "bob", 1);
    // One page went out; the lane is full, so replay pauses. New messages arrive, some
    // committed, one still pending.
    h.submit("alice", "bob", "new0");
    h.auto_commit = false;
    h.submit("alice", "bob", "new1");
    h.submit("alice", "bob", "new2");
    for _ in 0..10 {
        h.edge_reads(BOB_EDGE);
    }
    let log = h.take_log(BOB_EDGE);
    let got = deliveries_to(&log, BOB);
    assert_eq!(
        texts(&got),
        vec!["old0", "old1", "old2", "old3", "new0", "new1", "new2"]
    );
    assert_eq!(
        log.last(),
        Some(&(Channel::Control, CoreFrame::Synced { session: BOB }))
    );
    // Now live: the next one is pushed at once.
    h.submit("alice", "bob", "live");
    assert_eq!(texts(&h.delivered(BOB_EDGE, BOB)), vec!["live"]);
}

#[test]
fn both_devices_get_it_and_the_stored_copy_goes_only_after_both_acknowledged() {
    // Requirement 7: several devices; each keeps its own cursor.
    let mut h = alice_and_bob(config());
    h.attach(ALICE_EDGE, SessionId(201), "bob", 2); // bob's companion app, at alice's edge
    h.take_log(ALICE_EDGE);
    h.submit("alice", "bob", "to both");
    let phone = h.delivered(BOB_EDGE, BOB);
    let log = h.take_log(ALICE_EDGE);
    let app = deliveries_to(&log, SessionId(201));
    assert_eq!(texts(&phone), vec!["to both"]);
    assert_eq!(texts(&app), vec!["to both"]);
    let id = phone[0].id;
    assert_eq!(
        h.stored("bob", 1),
        vec![id.0],
        "committed: nobody acked before the disk"
    );

    h.ack(BOB_EDGE, BOB, &[id]);
    assert_eq!(h.stored("bob", 2), vec![id.0], "device 2 still needs it");
    assert_eq!(h.stored("bob", 1), Vec::<u64>::new(), "device 1 has it");
    h.ack(ALICE_EDGE, SessionId(201), &[id]);
    assert_eq!(
        h.stored("bob", 2),
        Vec::<u64>::new(),
        "deleted once both acknowledged"
    );
}

#[test]
fn with_two_devices_one_ack_does_not_keep_the_message_off_the_disk() {
    // The in-memory shortcut must wait for every device, or the other one loses it.
    let mut h = alice_and_bob(config());
    h.attach(ALICE_EDGE, SessionId(201), "bob", 2);
    h.auto_commit = false;
    h.submit("alice", "bob", "first"); // occupies the disk
    h.submit("alice", "bob", "second");
    let second = h.delivered(BOB_EDGE, BOB)[1].id;
    h.ack(BOB_EDGE, BOB, &[second]);
    assert!(
        accepted(&h.take_log(ALICE_EDGE)).is_empty(),
        "device 2 has not acked"
    );
    h.auto_commit = true;
    h.finish_commit();
    h.drive();
    assert_eq!(
        h.stored("bob", 2).last(),
        Some(&second.0),
        "kept for device 2"
    );
    assert!(
        !h.stored("bob", 1).contains(&second.0),
        "device 1's ack travelled with it"
    );
}

#[test]
fn a_new_device_sees_stored_messages() {
    let mut h = alice_and_bob(config());
    h.frame(BOB_EDGE, EdgeFrame::Detach { session: BOB });
    h.submit("alice", "bob", "while away");
    h.attach(BOB_EDGE, SessionId(202), "bob", 9);
    assert_eq!(
        texts(&h.delivered(BOB_EDGE, SessionId(202))),
        vec!["while away"]
    );
}

#[test]
fn a_full_inbox_rejects_with_inbox_full_until_messages_are_delivered() {
    // Requirement: "a full inbox rejects new messages with InboxFull — the sender is told".
    let mut h = Harness::new(RouterConfig {
        inbox_max: 3,
        ..config()
    });
    h.queue_for_offline_bob((0..3).map(|i| format!("m{i}")));
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)).len(), 3);
    let refused = h.submit("alice", "bob", "one too many");
    assert_eq!(
        h.take_log(ALICE_EDGE),
        vec![(
            Channel::Control,
            CoreFrame::Rejected {
                session: ALICE,
                key: refused,
                code: ErrorCode::InboxFull
            }
        )]
    );
    assert_eq!(
        h.stored("bob", 1).len(),
        3,
        "nothing was stored for the refused one"
    );

    h.attach(BOB_EDGE, BOB, "bob", 1);
    let got = h.delivered(BOB_EDGE, BOB);
    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    let key = h.submit("alice", "bob", "room again");
    let acc = accepted(&h.take_log(ALICE_EDGE));
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].0, key);
}

#[test]
fn ids_increase_and_never_repeat_after_a_restart() {
    // DESIGN: "a per-shard id that is never reused, even across a crash". Small blocks,
    // so several reservations happen, and a crash while the disk is stuck with ids handed
    // out but not committed.
    let cfg = RouterConfig {
        id_block: 4,
        ..config()
    };
    let mut h = alice_and_bob(cfg.clone());
    let mut ids = Vec::new();
    for i in 0..10 {
        h.submit("alice", "bob", &format!("a{i}"));
    }
    h.take_log(ALICE_EDGE);
    h.auto_commit = false;
    for i in 0..8 {
        h.submit("alice", "bob", &format!("lost{i}")); // never committed
    }
    ids.extend(h.delivered(BOB_EDGE, BOB).iter().map(|m| m.id.0));
    let refused = h
        .take_log(ALICE_EDGE)
        .iter()
        .filter(|(_, f)| {
            matches!(
                f,
                CoreFrame::Rejected {
                    code: ErrorCode::Unavailable,
                    ..
                }
            )
        })
        .count();
    assert!(
        refused > 0,
        "with the reservation stuck on its way to disk, ids run out"
    );
    assert_eq!(ids.len() + refused, 18);

    // Crash: the router and its unwritten batches vanish; the store survives.
    let store = h.store.clone();
    drop(h);
    let mut h = Harness::on_store(cfg, store);
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 4, 1024);
    h.attach(BOB_EDGE, BOB, "bob", 1);
    let replayed = h.delivered(BOB_EDGE, BOB);
    assert_eq!(texts(&replayed).len(), 10, "what was committed survived");
    for i in 0..10 {
        h.submit("alice", "bob", &format!("b{i}"));
    }
    ids.extend(h.delivered(BOB_EDGE, BOB).iter().map(|m| m.id.0));
    assert_eq!(ids.len() + refused, 28);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {ids:?}"
    );
}

#[test]
fn a_session_behind_a_full_lane_catches_up_from_the_store_with_nothing_lost() {
    // Bounded queues: a slow edge is not buffered for; its session replays instead.
    let mut h = Harness::new(RouterConfig {
        replay_page: 3,
        replay_headroom: 1,
        ..config()
    });
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 1, 5);
    h.attach(BOB_EDGE, BOB, "bob", 1);
    h.take_log(BOB_EDGE);
    for i in 0..20 {
        h.submit("alice", "bob", &format!("m{i:02}"));
    }
    assert!(h.router.stats().lagged > 0, "the lane filled up");
    let mut got = h.delivered(BOB_EDGE, BOB);
    assert_eq!(got.len(), 5, "only what fit was queued");
    for _ in 0..20 {
        h.edge_reads(BOB_EDGE);
        got.extend(h.delivered(BOB_EDGE, BOB));
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(
        texts(&got),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Caught up and live again.
    h.edge_reads(BOB_EDGE);
    h.submit("alice", "bob", "live");
    assert_eq!(texts(&h.delivered(BOB_EDGE, BOB)), vec!["live"]);
}

#[test]
fn a_full_control_stream_closes_the_edge_as_a_slow_consumer() {
    let mut h = Harness::new(config());
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 4, 1024);
    h.attach(BOB_EDGE, BOB, "bob", 1);
    h.take_log(BOB_EDGE);
    h.router.handle_send_full(
        h.now,
        Output::Send {
            edge: BOB_EDGE,
            channel: Channel::Control,
            frame: CoreFrame::Synced { session: BOB },
        },
    );
    h.drive();
    assert_eq!(h.edges[&BOB_EDGE].closed, Some(ErrorCode::SlowConsumer));
    // Bob's session is gone: a message to him is stored, not pushed to the dead edge.
    h.submit("alice", "bob", "later");
    assert!(h.take_log(BOB_EDGE).is_empty());
    assert_eq!(h.stored("bob", 1).len(), 1);
}

#[test]
fn expired_messages_are_deleted_and_free_the_inbox() {
    let mut h = Harness::new(RouterConfig {
        ttl_ms: 60_000,
        inbox_max: 1,
        expire_interval: Duration::from_secs(1),
        ..config()
    });
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 4, 1024);
    h.submit("alice", "bob", "stale");
    assert_eq!(h.stored("bob", 1).len(), 1);
    h.advance(Duration::from_secs(61));
    assert_eq!(h.stored("bob", 1).len(), 0, "expired and deleted");
    h.take_log(ALICE_EDGE);
    let key = h.submit("alice", "bob", "fresh");
    assert_eq!(
        accepted(&h.take_log(ALICE_EDGE)).first().map(|a| a.0),
        Some(key),
        "inbox freed"
    );
    h.attach(BOB_EDGE, BOB, "bob", 1);
    assert_eq!(texts(&h.delivered(BOB_EDGE, BOB)), vec!["fresh"]);
}

#[test]
fn the_same_device_attaching_again_replaces_the_older_session() {
    let mut h = alice_and_bob(config());
    h.attach(ALICE_EDGE, SessionId(300), "bob", 1);
    assert_eq!(
        h.take_log(BOB_EDGE),
        vec![(
            Channel::Control,
            CoreFrame::Kick {
                session: BOB,
                code: ErrorCode::SessionReplaced
            }
        )]
    );
    h.take_log(ALICE_EDGE);
    h.submit("alice", "bob", "where are you");
    assert!(h.delivered(BOB_EDGE, BOB).is_empty());
    assert_eq!(
        texts(&h.delivered(ALICE_EDGE, SessionId(300))),
        vec!["where are you"]
    );
}

#[test]
fn a_submit_for_a_user_of_another_shard_is_refused() {
    let map = ShardMap::new(vec![ShardId(0), ShardId(1)]).unwrap();
    let foreign = (0..100)
        .map(|i| format!("user{i}"))
        .find(|name| map.shard_of(&user(name)) == ShardId(1))
        .unwrap();
    let mut h = Harness::new(RouterConfig {
        shard_map: map,
        ..config()
    });
    h.connect(ALICE_EDGE, 4, 1024);
    let key = h.submit("alice", &foreign, "hello?");
    assert_eq!(
        h.take_log(ALICE_EDGE),
        vec![(
            Channel::Control,
            CoreFrame::Rejected {
                session: ALICE,
                key,
                code: ErrorCode::Unavailable
            }
        )]
    );
}

#[test]
fn a_failed_commit_is_retried_and_only_then_accepted() {
    let mut h = alice_and_bob(config());
    h.store.fail_commits.store(true, Ordering::SeqCst);
    let key = h.submit("alice", "bob", "persist me");
    assert!(
        accepted(&h.take_log(ALICE_EDGE)).is_empty(),
        "not safe while the disk fails"
    );
    assert!(h.router.stats().commit_failures >= 1);
    h.store.fail_commits.store(false, Ordering::SeqCst);
    h.advance(Duration::from_secs(1));
    let acc = accepted(&h.take_log(ALICE_EDGE));
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].0, key);
    assert_eq!(h.stored("bob", 1), vec![acc[0].1.0]);
}

#[test]
fn an_ack_for_a_message_on_disk_is_written_but_an_ack_for_a_pending_one_is_not() {
    // Acks of messages that never reached the disk must not cost a write either,
    // otherwise the in-memory shortcut saves the append but not the fsync.
    let mut h = alice_and_bob(config());
    h.auto_commit = false;
    h.submit("alice", "bob", "first");
    h.submit("alice", "bob", "second");
    let got = h.delivered(BOB_EDGE, BOB);
    h.ack(BOB_EDGE, BOB, &[got[0].id, got[1].id]);
    h.auto_commit = true;
    h.finish_commit();
    h.drive();
    let acks: Vec<Vec<IdRange>> = h
        .committed
        .iter()
        .flat_map(|b| b.acks.iter().map(|a| a.ranges.clone()))
        .collect();
    assert_eq!(
        acks,
        vec![vec![IdRange::single(got[0].id)]],
        "only the committing one"
    );
    assert_eq!(h.stored("bob", 1), Vec::<u64>::new());
}

#[test]
fn when_the_disk_falls_behind_submits_beyond_the_pending_limits_are_refused() {
    // Bounded memory: the core does not buffer without limit for a slow disk; the sender
    // is told `Unavailable` (retry later) instead.
    let mut h = alice_and_bob(RouterConfig {
        pending_max: 3,
        pending_bytes_max: 100,
        ..config()
    });
    h.take_log(BOB_EDGE);
    h.auto_commit = false;
    for i in 0..3 {
        h.submit("alice", "bob", &format!("m{i}"));
    }
    let refused = h.submit("alice", "bob", "no room");
    let unavailable = CoreFrame::Rejected {
        session: ALICE,
        key: refused,
        code: ErrorCode::Unavailable,
    };
    assert_eq!(
        h.take_log(ALICE_EDGE),
        vec![(Channel::Control, unavailable)]
    );
    assert_eq!(
        h.delivered(BOB_EDGE, BOB).len(),
        3,
        "the refused one was not pushed"
    );

    h.auto_commit = true;
    h.finish_commit();
    h.drive();
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)).len(), 3);
    let big = h.submit("alice", "bob", &"x".repeat(101));
    let log = h.take_log(ALICE_EDGE);
    assert!(
        matches!(&log[..], [(_, CoreFrame::Rejected { key, code: ErrorCode::Unavailable, .. })] if *key == big),
        "over the byte limit: {log:?}"
    );
    let fits = h.submit("alice", "bob", &"x".repeat(100));
    assert_eq!(
        accepted(&h.take_log(ALICE_EDGE)).first().map(|a| a.0),
        Some(fits)
    );
}

#[test]
fn with_a_commit_delay_a_message_acknowledged_in_time_is_accepted_and_never_written() {
    let mut h = alice_and_bob(delayed_config());
    let before = h.committed.len();
    let key = h.submit("alice", "bob", "hi");
    let got = h.delivered(BOB_EDGE, BOB);
    assert_eq!(texts(&got), vec!["hi"], "pushed at once, before any commit");
    assert_eq!(h.committed.len(), before, "held back for the delay");
    assert_eq!(
        h.router.batch_deadline(),
        Some(h.now.instant + Duration::from_millis(10)),
        "the driver is told when to come back"
    );
    h.advance(Duration::from_millis(3));
    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    assert_eq!(
        accepted(&h.take_log(ALICE_EDGE)),
        vec![(key, got[0].id)],
        "Accepted on the acknowledgement"
    );
    h.advance(Duration::from_millis(50));
    assert!(
        h.committed[before..]
            .iter()
            .all(|b| b.appends.is_empty() && b.acks.is_empty()),
        "neither the message nor its ack was written"
    );
    assert_eq!(h.router.stats().skipped_disk, 1);
    assert_eq!(h.router.batch_deadline(), None, "nothing waits");
}

#[test]
fn with_a_commit_delay_an_unacknowledged_message_is_written_once_the_delay_ran_out() {
    let mut h = alice_and_bob(delayed_config());
    let before = h.committed.len();
    let key = h.submit("alice", "bob", "for later");
    let id = h.delivered(BOB_EDGE, BOB)[0].id;
    h.advance(Duration::from_millis(9));
    assert_eq!(h.committed.len(), before, "not before the delay");
    assert!(accepted(&h.take_log(ALICE_EDGE)).is_empty(), "not safe yet");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.committed.len(),
        before + 1,
        "written once the delay ran out"
    );
    assert_eq!(h.stored("bob", 1), vec![id.0]);
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)), vec![(key, id)]);
}

#[test]
fn acknowledgements_with_no_message_to_write_wait_for_the_ack_delay() {
    // Bob's device saw the messages but has not acknowledged them: they are written after
    // the commit delay. His acknowledgements then wait longer: nothing in them is a promise
    // to a sender, and a catching-up device's acks should go in few large commits.
    let mut h = alice_and_bob(delayed_config());
    h.submit("alice", "bob", "1");
    h.submit("alice", "bob", "2");
    let got = h.delivered(BOB_EDGE, BOB);
    h.advance(Duration::from_millis(10));
    assert_eq!(
        h.stored("bob", 1).len(),
        2,
        "written after the commit delay"
    );
    let before = h.committed.len();

    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    h.advance(Duration::from_millis(20));
    h.ack(BOB_EDGE, BOB, &[got[1].id]);
    h.advance(Duration::from_millis(29));
    assert_eq!(h.committed.len(), before, "held for the ack delay");
    assert_eq!(
        h.router.batch_deadline(),
        Some(h.now.instant + Duration::from_millis(1)),
        "the driver is told when to come back"
    );

    h.advance(Duration::from_millis(1));
    assert_eq!(h.committed.len(), before + 1, "both acks in one commit");
    let acks = &h.committed[before].acks;
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(
        acks[0].ranges,
        vec![IdRange {
            first: got[0].id,
            last: got[1].id
        }],
        "consecutive acks of one device are one range"
    );
    assert!(h.stored("bob", 1).is_empty(), "both deleted");
}

#[test]
fn a_message_gets_its_whole_commit_delay_while_acknowledgements_wait() {
    // At a steady trickle of chat an acknowledgement is nearly always waiting in the
    // batch. A new message must still get its own commit delay, counted from its
    // arrival: acknowledged in time, it is never written (nor its acknowledgement).
    let mut h = alice_and_bob(delayed_config());
    h.submit("alice", "bob", "earlier");
    let earlier = h.delivered(BOB_EDGE, BOB);
    h.advance(Duration::from_millis(10));
    assert_eq!(
        h.stored("bob", 1).len(),
        1,
        "written after the commit delay"
    );
    h.take_log(ALICE_EDGE);
    h.ack(BOB_EDGE, BOB, &[earlier[0].id]);
    h.advance(Duration::from_millis(30));
    let before = h.committed.len();

    let key = h.submit("alice", "bob", "now");
    let got = h.delivered(BOB_EDGE, BOB);
    assert_eq!(h.committed.len(), before, "the message waits its own delay");
    assert_eq!(
        h.router.batch_deadline(),
        Some(h.now.instant + Duration::from_millis(10)),
        "due a commit delay after the message, not at once"
    );
    h.advance(Duration::from_millis(3));
    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)), vec![(key, got[0].id)]);
    h.advance(Duration::from_millis(50));
    assert!(
        h.committed[before..].iter().all(|b| b.appends.is_empty()),
        "the acknowledged message was never written"
    );
    assert_eq!(h.router.stats().skipped_disk, 1);
    assert!(
        h.stored("bob", 1).is_empty(),
        "the earlier one's ack is written"
    );
}

#[test]
fn a_device_back_before_its_acknowledgements_are_written_is_not_shown_them_again() {
    // Bob's game acknowledges and quits; it reconnects within the ack delay, while the
    // store still holds the messages. Replay must skip what he acknowledged, or the game
    // shows it twice (its de-duplication does not outlive the process).
    let mut h = alice_and_bob(delayed_config());
    for text in ["seen 1", "seen 2", "unseen"] {
        h.submit("alice", "bob", text);
    }
    let got = h.delivered(BOB_EDGE, BOB);
    h.advance(Duration::from_millis(10));
    assert_eq!(h.stored("bob", 1).len(), 3, "on disk, unacknowledged");
    h.ack(BOB_EDGE, BOB, &[got[0].id, got[1].id]);
    h.frame(BOB_EDGE, EdgeFrame::Detach { session: BOB });
    h.advance(Duration::from_millis(5));
    assert_eq!(h.stored("bob", 1).len(), 3, "the acks are not written yet");

    h.attach(BOB_EDGE, SessionId(201), "bob", 1);

    assert_eq!(
        texts(&h.delivered(BOB_EDGE, SessionId(201))),
        vec!["unseen"]
    );
    h.advance(Duration::from_millis(50));
    assert_eq!(h.stored("bob", 1), vec![got[2].id.0], "written later");
}

#[test]
fn a_replay_pump_sends_one_page_then_lets_the_driver_go_on() {
    // A device back to a large backlog must not hold the router (and everyone's live
    // traffic) while its whole window is read: one pump, one page; the driver pumps again
    // once the link writer has taken it, so the first page leaves before the next is read.
    let mut h = Harness::new(RouterConfig {
        replay_page: 2,
        replay_headroom: 0,
        ..config()
    });
    h.queue_for_offline_bob((0..5).map(|i| format!("m{i}")));
    h.attach_unpumped(BOB_EDGE, BOB, "bob", 1);
    h.pump_once();
    assert_eq!(texts(&h.delivered(BOB_EDGE, BOB)), vec!["m0", "m1"]);
    assert!(
        h.router.replay_waiting(),
        "the rest waits for the next pump"
    );

    h.drive();
    assert_eq!(texts(&h.delivered(BOB_EDGE, BOB)), vec!["m2", "m3", "m4"]);
    assert!(!h.router.replay_waiting());
}

/// Pages of two, acknowledgements held back (`delayed_config`). Alice sends Bob `seen`
/// then "unseen 1" and "unseen 2"; all reach the disk unacknowledged; Bob acknowledges
/// `seen`, leaves, and comes back as session 201 before those acknowledgements are
/// written. His replay is attached but not pumped yet.
fn bob_back_before_his_acknowledgements_are_written(seen: &[String]) -> Harness {
    let mut h = Harness::new(RouterConfig {
        replay_page: 2,
        replay_headroom: 0,
        ..delayed_config()
    });
    h.connect(ALICE_EDGE, 4, 1024);
    h.connect(BOB_EDGE, 4, 1024);
    h.attach(BOB_EDGE, BOB, "bob", 1);
    for text in seen
        .iter()
        .map(String::as_str)
        .chain(["unseen 1", "unseen 2"])
    {
        h.submit("alice", "bob", text);
    }
    let got = h.delivered(BOB_EDGE, BOB);
    h.advance(Duration::from_millis(10));
    assert_eq!(
        h.stored("bob", 1).len(),
        seen.len() + 2,
        "on disk, unacknowledged"
    );
    let acked: Vec<MessageId> = got[..seen.len()].iter().map(|m| m.id).collect();
    h.ack(BOB_EDGE, BOB, &acked);
    h.frame(BOB_EDGE, EdgeFrame::Detach { session: BOB });
    h.attach_unpumped(BOB_EDGE, SessionId(201), "bob", 1);
    h
}

#[test]
fn a_replay_page_of_messages_acknowledged_since_does_not_use_up_the_pump() {
    // Bob acknowledged a whole page and came back before the acknowledgements reached the
    // disk. That page is read and skipped; the next one must still go out in the same
    // pump, since no written frame would wake the driver for it (it would wait for
    // the next expiry pass).
    let seen = ["seen 1", "seen 2"].map(String::from);
    let mut h = bob_back_before_his_acknowledgements_are_written(&seen);
    h.pump_once();
    assert_eq!(
        texts(&h.delivered(BOB_EDGE, SessionId(201))),
        vec!["unseen 1", "unseen 2"]
    );
}

#[test]
fn replay_reads_that_skip_a_whole_budget_ask_the_driver_back_at_once() {
    // More pages of messages acknowledged since than one pump may read: the pump ends
    // having sent nothing, so no lane's writer will wake the driver. The router must ask
    // for an immediate call instead of leaving the rest to its next expiry pass.
    // The default budget reads 8 pages per pump; 9 pages of seen messages exceed it.
    let seen: Vec<String> = (0..18).map(|i| format!("seen {i}")).collect();
    let mut h = bob_back_before_his_acknowledgements_are_written(&seen);

    h.pump_once();
    assert!(h.delivered(BOB_EDGE, SessionId(201)).is_empty());
    assert!(h.router.replay_waiting());
    assert!(
        h.router
            .poll_timeout()
            .is_some_and(|at| at <= h.now.instant),
        "the driver must come back at once: {:?}",
        h.router.poll_timeout()
    );
    h.router.handle_timeout(h.now);
    h.pump_once();
    assert_eq!(
        texts(&h.delivered(BOB_EDGE, SessionId(201))),
        vec!["unseen 1", "unseen 2"]
    );
}

#[test]
fn a_failed_replay_read_is_retried_when_the_router_asks_to_be_woken() {
    // The disk fails a read while Bob catches up. Nothing is lost and nothing waits for
    // the next expiry pass: the router names a retry time, and at it the backlog comes.
    let mut h = Harness::new(config());
    h.queue_for_offline_bob((0..3).map(|i| format!("m{i}")));
    h.store.fail_reads.store(true, Ordering::SeqCst);
    h.attach(BOB_EDGE, BOB, "bob", 1);
    assert!(deliveries_to(&h.take_log(BOB_EDGE), BOB).is_empty());
    assert!(h.router.replay_waiting());
    let retry = h.router.poll_timeout().expect("a retry time");
    assert!(retry > h.now.instant, "not at once: the store just failed");
    assert!(retry <= h.now.instant + config().commit_retry);

    h.store.fail_reads.store(false, Ordering::SeqCst);
    h.advance(retry - h.now.instant);
    let got = deliveries_to(&h.take_log(BOB_EDGE), BOB);
    assert_eq!(texts(&got), vec!["m0", "m1", "m2"]);
}

#[test]
fn an_idle_router_asks_to_be_woken_only_for_its_next_expiry_pass() {
    // No 50 ms tick: with nothing waiting, the driver sleeps until the expiry pass.
    let mut h = alice_and_bob(delayed_config());
    let key = h.submit("alice", "bob", "hi");
    let got = h.delivered(BOB_EDGE, BOB);
    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)), vec![(key, got[0].id)]);
    // Past every commit and acknowledgement delay: everything is settled.
    h.advance(Duration::from_millis(100));
    assert_eq!(h.router.batch_deadline(), None);
    assert_eq!(
        h.router.poll_timeout(),
        Some(h.now.instant + RouterConfig::default().expire_interval)
    );
}

#[test]
fn acknowledgements_waiting_for_a_stalled_disk_are_bounded() {
    // The disk stalls (a batch is committing and does not finish) while a device keeps
    // acknowledging in ranges that cannot merge. The waiting batch stops growing at
    // ACK_RANGES_WAITING_MAX ranges; what is dropped is counted, and costs a redelivery.
    let mut h = alice_and_bob(config());
    h.submit("alice", "bob", "stored");
    let id = h.delivered(BOB_EDGE, BOB)[0].id;
    assert_eq!(h.stored("bob", 1), vec![id.0]);
    h.auto_commit = false;
    h.submit("alice", "carol", "keeps the disk busy");
    assert!(h.held.is_some(), "a batch is committing");

    let frame = EdgeFrame::Ack {
        session: BOB,
        ranges: vec![IdRange::single(id); protocol::limits::ACK_RANGES_MAX],
    };
    let frames = ACK_RANGES_WAITING_MAX / protocol::limits::ACK_RANGES_MAX;
    for _ in 0..frames {
        h.frame(BOB_EDGE, frame.clone());
    }
    assert_eq!(
        h.router.stats().acks_dropped,
        0,
        "up to the bound, all kept"
    );
    h.frame(BOB_EDGE, frame);
    assert_eq!(
        h.router.stats().acks_dropped,
        protocol::limits::ACK_RANGES_MAX as u64
    );

    h.finish_commit();
    h.auto_commit = true;
    h.advance(Duration::from_millis(1));
    assert!(h.stored("bob", 1).is_empty(), "the kept acks were applied");
}

#[test]
fn a_message_to_write_takes_waiting_acknowledgements_along() {
    // The ack delay never holds back a sender: once a message must be written, the batch
    // is due at the message's commit delay, and the waiting acknowledgement goes along.
    let mut h = alice_and_bob(delayed_config());
    h.submit("alice", "bob", "old");
    let old = h.delivered(BOB_EDGE, BOB)[0].id;
    h.advance(Duration::from_millis(10));
    let before = h.committed.len();
    h.ack(BOB_EDGE, BOB, &[old]);
    h.advance(Duration::from_millis(5));
    let key = h.submit("alice", "bob", "new");
    let new = h.delivered(BOB_EDGE, BOB)[0].id;
    h.advance(Duration::from_millis(9));
    assert_eq!(h.committed.len(), before, "not before the commit delay");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.committed.len(), before + 1);
    assert_eq!(h.committed[before].appends.len(), 1);
    assert_eq!(h.committed[before].acks.len(), 1);
    assert_eq!(h.stored("bob", 1), vec![new.0]);
    assert_eq!(accepted(&h.take_log(ALICE_EDGE)).last(), Some(&(key, new)));
}

#[test]
fn many_acknowledged_ranges_do_not_wait_out_the_ack_delay() {
    // The batch's memory is bounded: at commit_batch_max ranges it goes at once.
    let mut h = alice_and_bob(RouterConfig {
        commit_batch_max: 3,
        ..delayed_config()
    });
    for text in ["1", "2", "3", "4", "5"] {
        h.submit("alice", "bob", text);
    }
    let got = h.delivered(BOB_EDGE, BOB);
    h.advance(Duration::from_millis(10));
    assert_eq!(h.stored("bob", 1).len(), 5);
    let before = h.committed.len();
    // Every other id: ranges that cannot merge.
    h.ack(BOB_EDGE, BOB, &[got[0].id]);
    h.ack(BOB_EDGE, BOB, &[got[2].id]);
    assert_eq!(h.committed.len(), before);
    h.ack(BOB_EDGE, BOB, &[got[4].id]);
    assert_eq!(h.committed.len(), before + 1, "three ranges go at once");
    assert_eq!(h.stored("bob", 1), vec![got[1].id.0, got[3].id.0]);
}

#[test]
fn a_full_batch_does_not_wait_out_the_commit_delay() {
    let mut h = alice_and_bob(RouterConfig {
        commit_batch_max: 3,
        ..delayed_config()
    });
    let before = h.committed.len();
    h.submit("alice", "bob", "1");
    h.submit("alice", "bob", "2");
    assert_eq!(h.committed.len(), before);
    h.submit("alice", "bob", "3");
    assert_eq!(h.committed.len(), before + 1, "three messages go at once");
    assert_eq!(h.committed[before].appends.len(), 3);
}

#[test]
fn a_clean_shutdown_flush_ignores_the_commit_delay() {
    let mut h = alice_and_bob(delayed_config());
    h.submit("alice", "bob", "last words");
    assert!(h.router.poll_batch(h.now).is_none(), "still waiting");
    let batch = h
        .router
        .poll_batch_flush(h.now)
        .expect("a flush hands the batch over at once");
    assert_eq!(batch.appends.len(), 1);
}

#[test]
fn a_stored_delivery_refused_by_a_full_lane_comes_again_in_order() {
    // Stored messages are replayed in the store's own encoding. The router asks for room
    // before each page, so a full lane should never refuse one; if one is refused all the
    // same, that message and every later one must still reach the device once and in
    // order, like a live push that lags.
    let mut h = Harness::new(RouterConfig {
        replay_page: 4,
        replay_headroom: 0,
        ..config()
    });
    h.queue_for_offline_bob((0..4).map(|i| format!("m{i}")));
    assert_eq!(
        h.stored("bob", 1).len(),
        4,
        "on disk: replayed from the store"
    );
    h.attach_unpumped(BOB_EDGE, BOB, "bob", 1);
    h.take_log(BOB_EDGE);

    h.router.pump_replay(h.now, &mut |_edge| usize::MAX);
    // The driver queues the first page's first frame; the second finds its lane full.
    let Some(Output::SendEncoded { id: first, .. }) = h.router.poll_output() else {
        panic!("a stored message goes out in its stored encoding");
    };
    let refused = h.router.poll_output().expect("a second delivery");
    let Output::SendEncoded { id: second, .. } = &refused else {
        panic!("a stored message goes out in its stored encoding: {refused:?}");
    };
    let second = *second;
    h.router.handle_send_full(h.now, refused);
    h.drive();

    let again: Vec<MessageId> = h.delivered(BOB_EDGE, BOB).iter().map(|m| m.id).collect();
    let stored: Vec<MessageId> = h.stored("bob", 1).into_iter().map(MessageId).collect();
    assert_eq!(first, stored[0]);
    assert_eq!(second, stored[1]);
    assert_eq!(
        again,
        stored[1..],
        "from the refused one on, once each, in order"
    );
}

#[test]
fn replay_waits_until_a_whole_page_fits_the_window_again() {
    // Acknowledgements come back a few at a time. Replay must not read the store for
    // each handful they free (a read per ack: silly window), but wait until a page fits,
    // and lose or repeat nothing by waiting.
    let mut h = Harness::new(RouterConfig {
        replay_page: 4,
        replay_headroom: 0,
        replay_window: 8,
        ..config()
    });
    h.queue_for_offline_bob((0..14).map(|i| format!("m{i:02}")));
    h.attach(BOB_EDGE, BOB, "bob", 1);
    let first = deliveries_to(&h.take_log(BOB_EDGE), BOB);
    assert_eq!(first.len(), 8, "two pages fill the window");
    let mut all: Vec<String> = first.iter().map(|m| m.text.clone()).collect();

    // Three acknowledged: less than a page free, nothing is sent.
    h.ack(BOB_EDGE, BOB, &[first[0].id, first[1].id, first[2].id]);
    assert!(deliveries_to(&h.take_log(BOB_EDGE), BOB).is_empty());
    // The fourth frees a page: exactly one page follows.
    h.ack(BOB_EDGE, BOB, &[first[3].id]);
    let second = deliveries_to(&h.take_log(BOB_EDGE), BOB);
    assert_eq!(second.len(), 4);
    all.extend(second.iter().map(|m| m.text.clone()));

    // The rest, once everything sent is acknowledged: the last two, then `Synced`.
    let sent: Vec<MessageId> = first[4..].iter().chain(&second).map(|m| m.id).collect();
    h.ack(BOB_EDGE, BOB, &sent);
    let log = h.take_log(BOB_EDGE);
    all.extend(deliveries_to(&log, BOB).iter().map(|m| m.text.clone()));
    let expected: Vec<String> = (0..14).map(|i| format!("m{i:02}")).collect();
    assert_eq!(all, expected, "everything once, in order");
    assert!(
        log.iter()
            .any(|(_, f)| matches!(f, CoreFrame::Synced { session } if *session == BOB))
    );
}
