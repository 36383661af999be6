//! The core's store path against a real redb file, fsync'd: append a batch of messages
//! and acknowledge them (which deletes them), one transaction each. Compares group commit
//! (1,024 messages per commit) with one commit per message.
//!
//! `store drain acks` times what an offline drain leaves the writer: one recipient's
//! 10,000 stored messages acknowledged in order, a contiguous range per commit (the
//! appends that queued them are set-up, not timed).
//!
//! `store replay page` times what the core does per replay page of a drain: read 256 of
//! a recipient's stored messages and turn each into a `Deliver` frame's bytes, either by
//! decoding the record and encoding the frame (`decode+encode`) or by splicing the
//! stored message's bytes behind the frame's header (`stored bytes`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use protocol::codec;
use protocol::{CoreFrame, DeviceId, IdRange, Message, MessageId, SenderKey, SessionId, UserId};
use server::store::redb_store::RedbStore;
use server::store::{AckOp, LogStore, StoreConfig, StoredMessage, WriteBatch};

fn message(id: u64) -> StoredMessage {
    StoredMessage::new(
        Message {
            id: MessageId(id),
            from: UserId::new("sender").unwrap(),
            from_name: "Sender".into(),
            to: UserId::new(format!("user-{}", id % 64)).unwrap(),
            key: SenderKey {
                epoch: 1,
                counter: id,
            },
            sent_at_ms: 1_795_000_000_000,
            text: "x".repeat(64),
        },
        u64::MAX,
    )
}

/// A store in a fresh temporary directory (kept alive by the returned guard), whose
/// devices never go stale.
fn open_store() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(
        &dir.path().join("bench.redb"),
        StoreConfig {
            device_ttl_ms: u64::MAX,
        },
    )
    .unwrap();
    (dir, store)
}

fn bench(c: &mut Criterion) {
    let (_dir, store) = open_store();
    let device = DeviceId(1);
    let mut seen = WriteBatch::default();
    for u in 0..64 {
        seen.devices_seen
            .push((UserId::new(format!("user-{u}")).unwrap(), device, 1));
    }
    store.commit(&seen).unwrap();
    let mut next_id = 1u64;

    let mut group = c.benchmark_group("store append+ack (fsync)");
    group.sample_size(20);
    for batch in [1usize, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("{batch} per commit"), |b| {
            b.iter_batched(
                || {
                    let first = next_id;
                    next_id += batch as u64;
                    (first..next_id).map(message).collect::<Vec<_>>()
                },
                |messages| {
                    let appends = WriteBatch {
                        appends: messages.clone(),
                        ..WriteBatch::default()
                    };
                    store.commit(&appends).unwrap();
                    let acks = messages
                        .iter()
                        .map(|m| AckOp {
                            user: m.message.to.clone(),
                            device,
                            ranges: vec![IdRange::single(m.message.id)],
                        })
                        .collect();
                    store
                        .commit(&WriteBatch {
                            acks,
                            ..WriteBatch::default()
                        })
                        .unwrap();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Messages queued for the drain's one recipient.
const DRAIN_MESSAGES: u64 = 10_000;

fn drain_message(id: u64) -> StoredMessage {
    let mut stored = message(id);
    stored.message.to = UserId::new("drain-recipient").unwrap();
    stored
}

fn bench_drain_acks(c: &mut Criterion) {
    let (_dir, store) = open_store();
    let recipient = UserId::new("drain-recipient").unwrap();
    let device = DeviceId(1);
    store
        .commit(&WriteBatch {
            devices_seen: vec![(recipient.clone(), device, 1)],
            ..WriteBatch::default()
        })
        .unwrap();
    let mut next_id = 1u64;

    let mut group = c.benchmark_group("store drain acks (fsync)");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DRAIN_MESSAGES));
    for per_commit in [256u64, 2048] {
        group.bench_function(format!("{per_commit} per commit"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let first = next_id;
                    next_id += DRAIN_MESSAGES;
                    for chunk in (first..next_id).collect::<Vec<_>>().chunks(1024) {
                        let appends = chunk.iter().map(|&id| drain_message(id)).collect();
                        store
                            .commit(&WriteBatch {
                                appends,
                                ..WriteBatch::default()
                            })
                            .unwrap();
                    }
                    let started = Instant::now();
                    let mut from = first;
                    while from < next_id {
                        let to = (from + per_commit).min(next_id) - 1;
                        let ack = AckOp {
                            user: recipient.clone(),
                            device,
                            ranges: vec![IdRange {
                                first: MessageId(from),
                                last: MessageId(to),
                            }],
                        };
                        let outcome = store
                            .commit(&WriteBatch {
                                acks: vec![ack],
                                ..WriteBatch::default()
                            })
                            .unwrap();
                        assert_eq!(outcome.deleted.len() as u64, to - from + 1);
                        from = to + 1;
                    }
                    timed += started.elapsed();
                }
                timed
            });
        });
    }
    group.finish();
}

/// Messages per replay page (the core's default `replay_page`).
const REPLAY_PAGE: usize = 256;

fn bench_replay_page(c: &mut Criterion) {
    let (_dir, store) = open_store();
    let recipient = UserId::new("drain-recipient").unwrap();
    let device = DeviceId(1);
    let appends = (1..=DRAIN_MESSAGES).map(drain_message).collect();
    store
        .commit(&WriteBatch {
            devices_seen: vec![(recipient.clone(), device, 1)],
            appends,
            ..WriteBatch::default()
        })
        .unwrap();
    let session = SessionId(3);
    // The pages of a whole drain, in turn, so reads do not all hit one page's cache.
    let mut after = None;
    let mut next_page = move |read: &mut dyn FnMut(Option<MessageId>) -> Option<MessageId>| {
        after = read(after).filter(|id| id.0 < DRAIN_MESSAGES);
    };

    let mut group = c.benchmark_group("store replay page");
    group.throughput(Throughput::Elements(REPLAY_PAGE as u64));
    let mut out = BytesMut::new();
    group.bench_function("decode+encode", |b| {
        b.iter(|| {
            next_page(&mut |after| {
                let page = store
                    .replay(&recipient, device, after, REPLAY_PAGE, 0)
                    .unwrap();
                out.clear();
                let last = page.last().map(|stored| stored.message.id);
                for stored in page {
                    let frame = CoreFrame::Deliver {
                        sessions: vec![session],
                        message: stored.message,
                    };
                    codec::encode(&frame, &mut out).unwrap();
                }
                last
            })
        })
    });
    group.bench_function("stored bytes", |b| {
        b.iter(|| {
            next_page(&mut |after| {
                let page = store
                    .replay_encoded(&recipient, device, after, REPLAY_PAGE, 0)
                    .unwrap();
                out.clear();
                for message in &page {
                    let frame = message.deliver_frame(session).unwrap();
                    out.extend_from_slice(frame.as_bytes());
                }
                page.last().map(|message| message.id())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_drain_acks, bench_replay_page);
criterion_main!(benches);
