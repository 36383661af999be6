//! Crash test: a child process commits batches in a loop and is killed with SIGKILL at a
//! random moment, several times over the same file. After each kill the file must open,
//! every batch whose `commit` returned `Ok` must be there in full, and the one batch that
//! may have been in flight must be there entirely or not at all.
//!
//! The child is this test binary itself, re-run with [`CHILD_DB_ENV`] set so that
//! [`crash_child_process`] does the committing: no extra binary to build. The child prints
//! `committed N` after each `Ok`; lines already in the pipe when it dies still reach us.
//!
//! The expected contents are computed by applying the same batches to a `MemStore`, so the
//! check covers messages, acks, devices and the id reservation alike. A failing run prints
//! its seed; set `QUICHAT_CRASH_SEED` to replay the same kill points.

// Helpers outside `#[test]` functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_util;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::{DeviceId, IdRange, MessageId};
use server::store::mem::MemStore;
use server::store::redb_store::RedbStore;
use server::store::{AckOp, LogStore, WriteBatch};
use store_util::*;

/// Set in the child's environment to the path of the store it must write.
const CHILD_DB_ENV: &str = "QUICHAT_STORE_CRASH_CHILD_DB";
/// Messages per batch: enough that a commit takes a while and the kill can land inside.
const MESSAGES_PER_BATCH: u64 = 64;
/// Users the batches rotate through.
const USERS: [&str; 3] = ["ann", "bob", "cy"];
/// Crash rounds over the same file.
const ROUNDS: usize = 4;
/// The child gives up on its own after this many batches or this long, in case nobody
/// kills it.
const CHILD_BATCHES_MAX: u64 = 100_000;
const CHILD_TIME_MAX: Duration = Duration::from_secs(60);
/// How long the parent waits for the child's next line before failing.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Batch number `n`, a pure function of `n` so parent and child agree on it. Device 2 of
/// every user is seen and never acks, so device 1's acks add to `acked_by` without
/// deleting: every committed message stays checkable.
fn batch(n: u64) -> WriteBatch {
    let to = USERS[(n % USERS.len() as u64) as usize];
    let first_id = n * MESSAGES_PER_BATCH + 1;
    let appends = (first_id..first_id + MESSAGES_PER_BATCH)
        .map(|id| {
            let mut stored = message(to, id, u64::MAX);
            stored.message.text = format!("batch {n} message {id} {}", "x".repeat(200));
            stored
        })
        .collect();
    // Acknowledge half of the same user's batch before last (ids below first_id).
    let acked_first = first_id.saturating_sub(USERS.len() as u64 * MESSAGES_PER_BATCH);
    let acks = vec![AckOp {
        user: user(to),
        device: DeviceId(1),
        ranges: vec![IdRange {
            first: MessageId(acked_first),
            last: MessageId(acked_first + MESSAGES_PER_BATCH / 2),
        }],
    }];
    WriteBatch {
        reserve_ids_through: Some((n + 1) * MESSAGES_PER_BATCH),
        devices_seen: vec![(user(to), DeviceId(1), n), (user(to), DeviceId(2), n)],
        appends,
        acks,
        expire_before_ms: None,
    }
}

/// The number of the first batch not yet in the store at `path`.
fn next_batch(store: &RedbStore) -> u64 {
    store.reserved_ids_through().unwrap() / MESSAGES_PER_BATCH
}

/// The child's side: commit batches until killed. Run only when the parent asks for it;
/// in a normal test run it returns at once.
#[test]
fn crash_child_process() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let store = RedbStore::open(Path::new(&path), config()).unwrap();
    let start = next_batch(&store);
    let started = Instant::now();
    for n in start..start + CHILD_BATCHES_MAX {
        if started.elapsed() > CHILD_TIME_MAX {
            break;
        }
        store.commit(&batch(n)).unwrap();
        // stdout is line-buffered: the line is in the pipe before the next commit starts.
        println!("committed {n}");
    }
}

/// A small deterministic generator for the kill points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Runs one child until it has printed `lines_before_kill` lines, waits a random few
/// hundred microseconds more, kills it, and returns every batch number it reported.
fn run_child_and_kill(path: &Path, rng: &mut Rng) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Bounded: if we fall behind, the reader thread (and so the child's pipe) waits.
    let (lines_tx, lines_rx) = mpsc::sync_channel::<u64>(1024);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may start the line with "test crash_child_process ... ".
            if let Some((_, n)) = line.rsplit_once("committed ") {
                if lines_tx.send(n.parse().unwrap()).is_err() {
                    break;
                }
            }
        }
    });

    let lines_before_kill = 1 + rng.below(40);
    let mut committed = Vec::new();
    while (committed.len() as u64) < lines_before_kill {
        match lines_rx.recv_timeout(LINE_TIMEOUT) {
            Ok(n) => committed.push(n),
            Err(error) => {
                let status = child.try_wait().unwrap();
                panic!("child stopped reporting ({error}); exit status {status:?}");
            }
        }
    }
    // Land the kill at a random point of the commit in progress (this sleep picks a
    // moment; nothing waits on it for synchronisation).
    std::thread::sleep(Duration::from_micros(rng.below(3_000)));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    // Whatever the child printed before dying is still in the pipe.
    while let Ok(n) = lines_rx.recv_timeout(LINE_TIMEOUT) {
        committed.push(n);
    }
    reader.join().unwrap();
    committed
}

/// The expected store after batches `0..=last`.
fn model_through(last: Option<u64>) -> MemStore {
    let model = MemStore::new(config());
    for n in last.map_or(0..0, |last| 0..last + 1) {
        model.commit(&batch(n)).unwrap();
    }
    model
}

/// Checks that `store` holds exactly what `model` holds.
fn assert_same(store: &RedbStore, model: &MemStore, context: &str) {
    assert_eq!(
        store.reserved_ids_through().unwrap(),
        model.reserved_ids_through().unwrap(),
        "{context}"
    );
    for to in USERS {
        let to = user(to);
        assert_eq!(
            store.user_state(&to).unwrap(),
            model.user_state(&to).unwrap(),
            "{context}"
        );
        for device in [DeviceId(1), DeviceId(2)] {
            assert_eq!(
                store.replay(&to, device, None, usize::MAX, 0).unwrap(),
                model.replay(&to, device, None, usize::MAX, 0).unwrap(),
                "{context}: replay of {to} for {device:?}"
            );
        }
    }
}

#[test]
fn every_batch_committed_before_a_sigkill_is_there_in_full() {
    // "A message is safe once it is on the core's disk": the sender is told Accepted after
    // commit returns, so a crash one instant later must not lose it, nor leave half a batch.
    let seed = std::env::var("QUICHAT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one("seed") | 1);
    eprintln!("crash test seed: {seed} (set QUICHAT_CRASH_SEED to replay)");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut last_committed: Option<u64> = None;
    for round in 0..ROUNDS {
        let reported = run_child_and_kill(&path, &mut rng);
        let start = last_committed.map_or(0, |n| n + 1);
        let expected: Vec<u64> = (start..start + reported.len() as u64).collect();
        assert_eq!(
            reported, expected,
            "round {round}: the child resumes after the last batch"
        );
        let last_reported = reported.last().copied();

        let store = RedbStore::open(&path, config()).unwrap();
        // The batch in flight at the kill may have reached the disk without being reported.
        let next = next_batch(&store);
        let reported_next = last_reported.map_or(0, |n| n + 1);
        assert!(
            next == reported_next || next == reported_next + 1,
            "round {round}: store is at batch {next}, child reported up to {last_reported:?}"
        );
        let last_present = next.checked_sub(1);
        let context = format!("round {round}, seed {seed}, batches 0..={last_present:?}");
        assert_same(&store, &model_through(last_present), &context);
        last_committed = last_present;
    }
    assert!(
        last_committed.is_some_and(|n| n + 1 >= ROUNDS as u64),
        "each child committed"
    );
}
