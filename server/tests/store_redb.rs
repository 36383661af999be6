//! What only the redb store promises: what was committed is still there after the
//! process goes away, and a bad file is an error, not a panic.

// Helpers outside `#[test]` functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_util;

use protocol::{DeviceId, MessageId};
use server::store::redb_store::RedbStore;
use server::store::{LogStore, StoreError, UserState, WriteBatch};
use store_util::*;

#[test]
fn everything_committed_is_there_after_reopening() {
    // The core restarts (deploy, crash): undelivered messages, device cursors (acks) and
    // the id reservation must all come back exactly.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (expected_bob, expected_ann) = {
        let store = RedbStore::open(&path, config()).unwrap();
        let mut batch = appends((1..=5).map(|id| message("bob", id, 10_000)).collect());
        batch.appends.push(message("ann", 6, 10_000));
        batch.devices_seen = vec![
            (user("bob"), DeviceId(1), 50),
            (user("bob"), DeviceId(2), 60),
        ];
        batch.reserve_ids_through = Some(1024);
        store.commit(&batch).unwrap();
        let deleted = store.commit(&ack("bob", 1, 1, 2)).unwrap().deleted;
        assert!(deleted.is_empty());
        let bob = store
            .replay(&user("bob"), DeviceId(3), None, 100, 0)
            .unwrap();
        let ann = store
            .replay(&user("ann"), DeviceId(3), None, 100, 0)
            .unwrap();
        (bob, ann)
    };
    assert_eq!(ids(&expected_bob), vec![1, 2, 3, 4, 5]);
    assert_eq!(expected_bob[0].acked_by, vec![DeviceId(1)]);

    let store = RedbStore::open(&path, config()).unwrap();
    assert_eq!(
        store
            .replay(&user("bob"), DeviceId(3), None, 100, 0)
            .unwrap(),
        expected_bob
    );
    assert_eq!(
        store
            .replay(&user("ann"), DeviceId(3), None, 100, 0)
            .unwrap(),
        expected_ann
    );
    assert_eq!(
        pending(&store, "bob", 1),
        vec![3, 4, 5],
        "device 1's acks survived"
    );
    assert_eq!(
        store.user_state(&user("bob")).unwrap(),
        UserState {
            devices: vec![(DeviceId(1), 50), (DeviceId(2), 60)],
            inbox_len: 5
        }
    );
    assert_eq!(store.reserved_ids_through().unwrap(), 1024);

    // Work continues where it stopped: device 2's ack completes messages 1 and 2.
    let deleted = store.commit(&ack("bob", 2, 1, 3)).unwrap().deleted;
    assert_eq!(
        deleted,
        vec![(user("bob"), MessageId(1)), (user("bob"), MessageId(2))]
    );
}

#[test]
fn reserved_ids_survive_a_reopen_and_never_go_backwards() {
    // After a restart the core resumes ids above this mark; a lower value from a stale
    // batch must not undo a higher one that is already on disk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path, config()).unwrap();
        let batch = WriteBatch {
            reserve_ids_through: Some(5000),
            ..WriteBatch::default()
        };
        store.commit(&batch).unwrap();
    }
    {
        let store = RedbStore::open(&path, config()).unwrap();
        assert_eq!(store.reserved_ids_through().unwrap(), 5000);
        let batch = WriteBatch {
            reserve_ids_through: Some(100),
            ..WriteBatch::default()
        };
        store.commit(&batch).unwrap();
    }
    let store = RedbStore::open(&path, config()).unwrap();
    assert_eq!(store.reserved_ids_through().unwrap(), 5000);
}

#[test]
fn a_store_file_cannot_be_opened_twice() {
    // Two cores writing one file would corrupt each other's id sequence; the second open
    // must fail cleanly.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let _first = RedbStore::open(&path, config()).unwrap();
    let second = RedbStore::open(&path, config());
    assert!(matches!(second, Err(StoreError::Open(_))), "{second:?}");
}

#[test]
fn a_file_that_is_not_a_store_is_refused_without_a_panic() {
    // A wrong path in the configuration must give an error the operator can read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the pages you are looking for\n".repeat(200),
    )
    .unwrap();
    let opened = RedbStore::open(&path, config());
    assert!(
        matches!(opened, Err(StoreError::Open(_) | StoreError::Corrupt(_))),
        "{opened:?}"
    );
}

#[test]
fn an_ack_reaching_a_record_that_does_not_decode_applies_nothing() {
    // A record damaged inside the file (written by something else, or an older bug) must
    // fail the commit as corruption, not panic, and the acks before it in the same range
    // must not half-apply: the whole commit is dropped.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path, config()).unwrap();
        store
            .commit(&appends(
                (1..=5).map(|id| message("bob", id, 10_000)).collect(),
            ))
            .unwrap();
        store
            .commit(&WriteBatch {
                devices_seen: vec![(user("bob"), DeviceId(1), 50)],
                ..WriteBatch::default()
            })
            .unwrap();
    }
    {
        // The table as the store lays it out (see `redb_store`'s module docs).
        const MESSAGES: redb::TableDefinition<(&str, u64), &[u8]> =
            redb::TableDefinition::new("messages");
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(MESSAGES)
            .unwrap()
            .insert(("bob", 4), [0xff_u8; 7].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path, config()).unwrap();

    let acked = store.commit(&ack("bob", 1, 1, 5));

    assert!(matches!(acked, Err(StoreError::Corrupt(_))), "{acked:?}");
    assert_eq!(store.user_state(&user("bob")).unwrap().inbox_len, 5);
    let left = store.commit(&ack("bob", 1, 1, 3)).unwrap().deleted;
    assert_eq!(
        left,
        (1..=3)
            .map(|id| (user("bob"), MessageId(id)))
            .collect::<Vec<_>>(),
        "messages 1-3 were still stored after the failed commit"
    );
}
