//! Model check: random sequences of batches run against `RedbStore` and `MemStore` side by
//! side, comparing every answer after every commit, and checking the deletion rule as an
//! invariant of its own (so a bug shared by both stores still fails).

// Helpers outside `#[test]` functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_util;

use proptest::prelude::*;
use protocol::{DeviceId, IdRange, MessageId};
use server::store::mem::MemStore;
use server::store::redb_store::RedbStore;
use server::store::{AckOp, LogStore, WriteBatch};
use store_util::*;

/// The users and devices of the model: few, so that operations collide often.
const USERS: [&str; 3] = ["ann", "bob", "cy"];
const DEVICES: u64 = 3;
/// A device that never acknowledges anything: replaying for it shows the whole log.
const OBSERVER: DeviceId = DeviceId(99);

/// One piece of a batch; times and ids are relative, made absolute by [`Model::batch`].
#[derive(Clone, Debug)]
enum Op {
    /// Device `device` of `user` is seen now.
    Seen { user: usize, device: u64 },
    /// `count` messages to `user`, expiring `ttl_ms` from now, acked by `acked_by` already.
    Append {
        user: usize,
        count: u64,
        ttl_ms: u64,
        acked_by: Vec<u64>,
    },
    /// `device` of `user` acks `len` ids starting `back` below the next id (or a reversed
    /// range when `reversed`).
    Ack {
        user: usize,
        device: u64,
        back: u64,
        len: u64,
        reversed: bool,
    },
    /// Reserve ids up to `through`.
    Reserve { through: u64 },
    /// Run expiry at now.
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..USERS.len(), 0..DEVICES).prop_map(|(user, device)| Op::Seen { user, device }),
        3 => (0..USERS.len(), 1..4u64, duration_ms(3_000), proptest::collection::vec(0..DEVICES, 0..2))
            .prop_map(|(user, count, ttl_ms, acked_by)| Op::Append { user, count, ttl_ms, acked_by }),
        3 => (0..USERS.len(), 0..DEVICES, 0..12u64, 0..6u64, proptest::bool::weighted(0.1))
            .prop_map(|(user, device, back, len, reversed)| Op::Ack { user, device, back, len, reversed }),
        1 => (0..200u64).prop_map(|through| Op::Reserve { through }),
        1 => Just(Op::Expire),
    ]
}

/// A duration in ms: mostly multiples of 250 (a quarter of the device TTL), so that times
/// land exactly on the `<=` / `<` boundaries of expiry, and sometimes anything.
fn duration_ms(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![3 => (0..=max / 250).prop_map(|n| n * 250), 1 => 0..=max]
}

/// A step: the clock advances, then one batch of operations is committed.
fn step() -> impl Strategy<Value = (u64, Vec<Op>)> {
    (duration_ms(500), proptest::collection::vec(op(), 1..5))
}

/// The test's clock and id counter.
struct Model {
    now_ms: u64,
    next_id: u64,
}

impl Model {
    fn batch(&mut self, ops: &[Op]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Seen { user, device } => {
                    batch
                        .devices_seen
                        .push((user_named(*user), DeviceId(*device), self.now_ms))
                }
                Op::Append {
                    user,
                    count,
                    ttl_ms,
                    acked_by,
                } => {
                    for _ in 0..*count {
                        self.next_id += 1;
                        let mut stored = message(USERS[*user], self.next_id, self.now_ms + ttl_ms);
                        stored.acked_by = acked_by.iter().map(|d| DeviceId(*d)).collect();
                        batch.appends.push(stored);
                    }
                }
                Op::Ack {
                    user,
                    device,
                    back,
                    len,
                    reversed,
                } => {
                    let first = (self.next_id + 1).saturating_sub(*back);
                    let last = first + len;
                    let (first, last) = if *reversed {
                        (last + 1, first)
                    } else {
                        (first, last)
                    };
                    batch.acks.push(AckOp {
                        user: user_named(*user),
                        device: DeviceId(*device),
                        ranges: vec![IdRange {
                            first: MessageId(first),
                            last: MessageId(last),
                        }],
                    });
                }
                Op::Reserve { through } => {
                    let through = batch.reserve_ids_through.unwrap_or(0).max(*through);
                    batch.reserve_ids_through = Some(through);
                }
                Op::Expire => batch.expire_before_ms = Some(self.now_ms),
            }
        }
        batch
    }
}

fn user_named(index: usize) -> protocol::UserId {
    user(USERS[index])
}

/// Compares every answer both stores give, and checks the deletion rule holds.
fn compare(redb: &RedbStore, mem: &MemStore, now_ms: u64, next_id: u64) {
    assert_eq!(
        redb.reserved_ids_through().unwrap(),
        mem.reserved_ids_through().unwrap()
    );
    for index in 0..USERS.len() {
        let who = user_named(index);
        let state = redb.user_state(&who).unwrap();
        assert_eq!(state, mem.user_state(&who).unwrap(), "user_state of {who}");

        let all = redb.replay(&who, OBSERVER, None, usize::MAX, 0).unwrap();
        assert_eq!(
            state.inbox_len,
            all.len() as u64,
            "inbox_len of {who} counts its log"
        );
        let known: Vec<DeviceId> = state.devices.iter().map(|(device, _)| *device).collect();
        for stored in &all {
            assert!(
                !stored.is_done(&known),
                "{who}'s {:?} should have been deleted",
                stored
            );
        }

        let mid = Some(MessageId(next_id / 2));
        for device in (0..DEVICES).map(DeviceId).chain([OBSERVER]) {
            for (after, limit, at) in [
                (None, usize::MAX, now_ms),
                (mid, 2, now_ms),
                (None, 3, now_ms + 1_500),
            ] {
                assert_eq!(
                    redb.replay(&who, device, after, limit, at).unwrap(),
                    mem.replay(&who, device, after, limit, at).unwrap(),
                    "replay of {who} for {device:?} after {after:?} limit {limit} at {at}"
                );
                // redb's bytes read in place; the model's messages encoded afresh.
                assert_eq!(
                    redb.replay_encoded(&who, device, after, limit, at).unwrap(),
                    mem.replay_encoded(&who, device, after, limit, at).unwrap(),
                    "encoded replay of {who} for {device:?} after {after:?} limit {limit} at {at}"
                );
            }
        }
    }
}

proptest! {
    // Every case opens a real file and fsyncs every commit, so fewer cases than the default.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn redb_store_behaves_like_the_model(steps in proptest::collection::vec(step(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(&dir.path().join("model.redb"), config()).unwrap();
        let mem = MemStore::new(config());
        // The clock starts at 1 so that every message expires after 0, and replaying at 0
        // shows a user's whole log.
        let mut model = Model { now_ms: 1, next_id: 0 };
        for (advance_ms, ops) in &steps {
            model.now_ms += advance_ms;
            let batch = model.batch(ops);
            let from_redb = redb.commit(&batch).unwrap();
            let from_mem = mem.commit(&batch).unwrap();
            prop_assert_eq!(&from_redb, &from_mem, "outcome of {:?}", batch);
            compare(&redb, &mem, model.now_ms, model.next_id);
        }
    }
}
