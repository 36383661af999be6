//! The core's store path against a real redb file, fsync'd: append a batch of messages
//! and acknowledge them (which deletes them), one transaction each. Compares group commit
//! (1,024 messages per commit) with one commit per message.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use protocol::{DeviceId, IdRange, Message, MessageId, SenderKey, UserId};
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

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(
        &dir.path().join("bench.redb"),
        StoreConfig {
            device_ttl_ms: u64::MAX,
        },
    )
    .unwrap();
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

criterion_group!(benches, bench);
criterion_main!(benches);
