//! Runs random storage operations against the redb store and the in-memory model
//! (`MemStore`) side by side, in the manner of redb's own `fuzz_redb`: every commit must
//! succeed or fail on both, delete the same messages, and leave both answering every
//! replay and user-state question identically.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protocol::{DeviceId, IdRange, Message, MessageId, SenderKey, UserId};
use server::store::mem::MemStore;
use server::store::redb_store::RedbStore;
use server::store::{AckOp, LogStore, StoreConfig, StoredMessage, WriteBatch};

const USERS: u8 = 3;
const DEVICES: u8 = 3;
const DEVICE_TTL_MS: u64 = 1_000;

#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        user: u8,
        expires_in_ms: u16,
        pre_acked_by: Option<u8>,
    },
    Ack {
        user: u8,
        device: u8,
        back: u8,
        len: u8,
    },
    Seen {
        user: u8,
        device: u8,
    },
    Expire,
    Reserve {
        more: u16,
    },
    Advance {
        ms: u16,
    },
    Commit,
    Replay {
        user: u8,
        device: u8,
        after_back: Option<u8>,
        limit: u8,
    },
}

fn user(n: u8) -> UserId {
    UserId::new(format!("u{}", n % USERS)).expect("valid id")
}

fn compare(redb: &RedbStore, mem: &MemStore, now: u64, next_id: u64) {
    for u in 0..USERS {
        let (a, b) = (redb.user_state(&user(u)), mem.user_state(&user(u)));
        assert_eq!(a.ok(), b.ok(), "user_state of u{u}");
        for d in 0..DEVICES {
            for after in [None, Some(MessageId(next_id / 2))] {
                let a = redb.replay(&user(u), DeviceId(u64::from(d)), after, 1000, now);
                let b = mem.replay(&user(u), DeviceId(u64::from(d)), after, 1000, now);
                assert_eq!(a.ok(), b.ok(), "replay of u{u} device {d} after {after:?}");
                let a = redb.replay_encoded(&user(u), DeviceId(u64::from(d)), after, 1000, now);
                let b = mem.replay_encoded(&user(u), DeviceId(u64::from(d)), after, 1000, now);
                assert_eq!(a.ok(), b.ok(), "encoded replay of u{u} device {d} after {after:?}");
            }
        }
    }
    assert_eq!(
        redb.reserved_ids_through().ok(),
        mem.reserved_ids_through().ok()
    );
}

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 64 {
        return;
    }
    let config = StoreConfig {
        device_ttl_ms: DEVICE_TTL_MS,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let redb = RedbStore::open(&dir.path().join("fuzz.redb"), config).expect("open");
    let mem = MemStore::new(config);
    let mut batch = WriteBatch::default();
    let mut now: u64 = 10_000;
    let mut next_id: u64 = 1;
    let mut reserved: u64 = 0;
    for op in ops {
        match op {
            Op::Append {
                user: u,
                expires_in_ms,
                pre_acked_by,
            } => {
                let mut stored = StoredMessage::new(
                    Message {
                        id: MessageId(next_id),
                        from: UserId::new("sender").expect("valid id"),
                        from_name: "S".into(),
                        to: user(u),
                        key: SenderKey {
                            epoch: 1,
                            counter: next_id,
                        },
                        sent_at_ms: now,
                        text: "hi".into(),
                    },
                    now + u64::from(expires_in_ms),
                );
                if let Some(d) = pre_acked_by {
                    stored.add_ack(DeviceId(u64::from(d % DEVICES)));
                }
                batch.appends.push(stored);
                next_id += 1;
            }
            Op::Ack {
                user: u,
                device,
                back,
                len,
            } => {
                let first = next_id.saturating_sub(u64::from(back)).max(1);
                batch.acks.push(AckOp {
                    user: user(u),
                    device: DeviceId(u64::from(device % DEVICES)),
                    ranges: vec![IdRange {
                        first: MessageId(first),
                        last: MessageId(first + u64::from(len % 8)),
                    }],
                });
            }
            Op::Seen { user: u, device } => {
                batch
                    .devices_seen
                    .push((user(u), DeviceId(u64::from(device % DEVICES)), now));
            }
            Op::Expire => batch.expire_before_ms = Some(now),
            Op::Reserve { more } => {
                reserved += u64::from(more);
                batch.reserve_ids_through = Some(reserved);
            }
            Op::Advance { ms } => now += u64::from(ms),
            Op::Commit => {
                let a = redb.commit(&batch);
                let b = mem.commit(&batch);
                match (&a, &b) {
                    (Ok(x), Ok(y)) => assert_eq!(x, y, "commit outcomes differ"),
                    (Err(_), Err(_)) => {}
                    _ => panic!("one store failed the batch: redb {a:?}, model {b:?}"),
                }
                batch = WriteBatch::default();
                compare(&redb, &mem, now, next_id);
            }
            Op::Replay {
                user: u,
                device,
                after_back,
                limit,
            } => {
                let after = after_back.map(|b| MessageId(next_id.saturating_sub(u64::from(b))));
                let d = DeviceId(u64::from(device % DEVICES));
                let a = redb.replay(&user(u), d, after, usize::from(limit), now);
                let b = mem.replay(&user(u), d, after, usize::from(limit), now);
                assert_eq!(a.ok(), b.ok(), "replay differs");
            }
        }
    }
});
