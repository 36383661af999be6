//! Throughput of `RedbStore` commits on a real file: prints commits/s and messages/s for
//! batches of 1, 64 and 1024 messages of 64-byte text, for appends and for the acks that
//! delete them, plus the time to reopen (with its integrity check). Ignored by default and
//! asserts no speed; run it with
//!
//! ```text
//! cargo test -p server --release --test store_bench -- --ignored --nocapture
//! ```

// Helpers outside `#[test]` functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_util;

use std::path::Path;
use std::time::{Duration, Instant};

use protocol::{DeviceId, IdRange, MessageId};
use server::store::redb_store::RedbStore;
use server::store::{AckOp, LogStore, WriteBatch};
use store_util::*;

/// Each measurement stops after this many commits or this long, whichever comes first.
const COMMITS_MAX: u64 = 2_000;
const TIME_MAX: Duration = Duration::from_secs(3);
/// Recipients the messages are spread over.
const USERS: u64 = 100;

fn recipient(id: u64) -> String {
    format!("user{}", id % USERS)
}

#[test]
#[ignore = "benchmark: run explicitly with --release --ignored --nocapture"]
fn commit_throughput() {
    // On the target's disk rather than /tmp, which may be a tmpfs where fsync is free.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    println!("batch  phase   commits/s   messages/s  commits");
    for batch_len in [1u64, 64, 1024] {
        let path = dir.path().join(format!("bench-{batch_len}.redb"));
        let store = RedbStore::open(&path, config()).unwrap();
        for user in 0..USERS {
            store.commit(&seen(&recipient(user), 1, 0)).unwrap();
        }

        // Appends: each commit stores `batch_len` new messages.
        let started = Instant::now();
        let mut commits = 0;
        let mut next_id = 1;
        while commits < COMMITS_MAX && started.elapsed() < TIME_MAX {
            let batch = appends(
                (next_id..next_id + batch_len)
                    .map(|id| message(&recipient(id), id, u64::MAX))
                    .collect(),
            );
            store.commit(&batch).unwrap();
            next_id += batch_len;
            commits += 1;
        }
        report(batch_len, "append", commits, started.elapsed());

        // Acks: each commit acknowledges (and so deletes) `batch_len` stored messages, one
        // ack op per message as a worst case for the core's batching.
        let started = Instant::now();
        let mut acked_commits = 0;
        let mut id = 1;
        while acked_commits < commits && started.elapsed() < TIME_MAX {
            let acks = (id..id + batch_len)
                .map(|id| AckOp {
                    user: user(&recipient(id)),
                    device: DeviceId(1),
                    ranges: vec![IdRange::single(MessageId(id))],
                })
                .collect();
            let deleted = store
                .commit(&WriteBatch {
                    acks,
                    ..WriteBatch::default()
                })
                .unwrap();
            assert_eq!(deleted.deleted.len() as u64, batch_len);
            id += batch_len;
            acked_commits += 1;
        }
        report(batch_len, "ack", acked_commits, started.elapsed());
        drop(store);
        reopen(&path);
    }
}

fn report(batch_len: u64, phase: &str, commits: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{batch_len:>5}  {phase:<6} {:>10.0} {:>12.0} {commits:>8}",
        commits as f64 / seconds,
        (commits * batch_len) as f64 / seconds,
    );
}

fn reopen(path: &Path) {
    let bytes = std::fs::metadata(path).unwrap().len();
    let started = Instant::now();
    let store = RedbStore::open(path, config()).unwrap();
    let elapsed = started.elapsed();
    let stored: u64 = (0..USERS)
        .map(|user| {
            store
                .user_state(&store_util::user(&recipient(user)))
                .unwrap()
                .inbox_len
        })
        .sum();
    println!(
        "       reopen of {:.1} MiB holding {stored} messages: {:.1} ms",
        bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64() * 1e3
    );
}
