//! The `LogStore` contract, checked on both implementations: every test runs against
//! `MemStore` and against `RedbStore` on a real file.

// Helpers outside `#[test]` functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_util;

use protocol::{DeviceId, IdRange, MessageId};
use server::store::{AckOp, EXPIRE_MESSAGES_PER_COMMIT_MAX, StoreError, UserState, WriteBatch};
use store_util::*;

/// Far enough in the future that nothing expires in these tests unless they say so.
const LATER: u64 = 1_000_000;

#[test]
fn replay_returns_a_users_messages_in_id_order() {
    // Replay is what a reconnecting device receives: it must be in order, and only its own
    // user's log, however the appends were batched and interleaved with other users'.
    on_both_stores(|name, store| {
        store
            .commit(&appends(vec![
                message("bob", 1, LATER),
                message("ann", 2, LATER),
            ]))
            .unwrap();
        store
            .commit(&appends(vec![message("bob", 3, LATER)]))
            .unwrap();
        store
            .commit(&appends(vec![
                message("bob", 4, LATER),
                message("bob", 7, LATER),
            ]))
            .unwrap();
        let replayed = store
            .replay_checked(&user("bob"), DeviceId(1), None, 100, 0)
            .unwrap();
        assert_eq!(ids(&replayed), vec![1, 3, 4, 7], "{name}");
        assert!(
            replayed.iter().all(|m| m.message.to == user("bob")),
            "{name}"
        );
        assert_eq!(
            replayed[1],
            message("bob", 3, LATER),
            "{name}: stored as appended"
        );
        assert_eq!(pending(store, "ann", 1), vec![2], "{name}");
    });
}

#[test]
fn replay_resumes_after_a_cursor_and_honours_the_limit() {
    // The core pages through a long inbox with (cursor, limit); a page must neither repeat
    // nor skip a message.
    on_both_stores(|name, store| {
        let batch = appends((1..=10).map(|id| message("bob", id, LATER)).collect());
        store.commit(&batch).unwrap();
        let first = store
            .replay_checked(&user("bob"), DeviceId(1), None, 4, 0)
            .unwrap();
        assert_eq!(ids(&first), vec![1, 2, 3, 4], "{name}");
        let after = Some(MessageId(4));
        let second = store
            .replay_checked(&user("bob"), DeviceId(1), after, 4, 0)
            .unwrap();
        assert_eq!(ids(&second), vec![5, 6, 7, 8], "{name}");
        let rest = store
            .replay_checked(&user("bob"), DeviceId(1), Some(MessageId(8)), 4, 0)
            .unwrap();
        assert_eq!(ids(&rest), vec![9, 10], "{name}");
        let none = store.replay_checked(&user("bob"), DeviceId(1), Some(MessageId(u64::MAX)), 4, 0);
        assert_eq!(ids(&none.unwrap()), Vec::<u64>::new(), "{name}");
        let zero = store
            .replay_checked(&user("bob"), DeviceId(1), None, 0, 0)
            .unwrap();
        assert!(zero.is_empty(), "{name}: limit 0 returns nothing");
    });
}

#[test]
fn replay_skips_what_the_device_acked_and_what_expired() {
    // A device must not be sent again what it already acknowledged, and nobody is sent a
    // message past its expiry even if the expiry pass has not deleted it yet.
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 1, 0)).unwrap();
        store.commit(&seen("bob", 2, 0)).unwrap();
        let batch = appends(vec![
            message("bob", 1, LATER),
            message("bob", 2, 500),
            message("bob", 3, LATER),
        ]);
        store.commit(&batch).unwrap();
        store.commit(&ack("bob", 1, 1, 1)).unwrap();
        let for_device_1 = store
            .replay_checked(&user("bob"), DeviceId(1), None, 10, 499)
            .unwrap();
        assert_eq!(ids(&for_device_1), vec![2, 3], "{name}");
        let for_device_2 = store
            .replay_checked(&user("bob"), DeviceId(2), None, 10, 500)
            .unwrap();
        assert_eq!(ids(&for_device_2), vec![1, 3], "{name}: 2 expired at 500");
    });
}

#[test]
fn a_message_is_deleted_only_after_every_known_device_acked_it() {
    // A player with a game and a companion app must get every message on both: the first
    // device's ack must not delete it under the second.
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 1, 0)).unwrap();
        store.commit(&seen("bob", 2, 0)).unwrap();
        store
            .commit(&appends(vec![
                message("bob", 1, LATER),
                message("bob", 2, LATER),
            ]))
            .unwrap();

        let outcome = store.commit(&ack("bob", 1, 1, 2)).unwrap();
        assert!(outcome.deleted.is_empty(), "{name}: device 2 has not acked");
        assert_eq!(pending(store, "bob", 2), vec![1, 2], "{name}");
        assert_eq!(pending(store, "bob", 1), Vec::<u64>::new(), "{name}");

        let outcome = store.commit(&ack("bob", 2, 1, 1)).unwrap();
        assert_eq!(outcome.deleted, vec![(user("bob"), MessageId(1))], "{name}");
        assert_eq!(pending(store, "bob", 2), vec![2], "{name}");
        assert_eq!(
            store.user_state(&user("bob")).unwrap().inbox_len,
            1,
            "{name}"
        );
    });
}

#[test]
fn the_only_known_devices_ack_deletes_a_message() {
    // The common case: one device, one ack, nothing left on disk (no history).
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 7, 0)).unwrap();
        store
            .commit(&appends(vec![message("bob", 1, LATER)]))
            .unwrap();
        let outcome = store.commit(&ack("bob", 7, 1, 1)).unwrap();
        assert_eq!(outcome.deleted, vec![(user("bob"), MessageId(1))], "{name}");
        assert_eq!(pending(store, "bob", 8), Vec::<u64>::new(), "{name}");
        assert_eq!(
            store.user_state(&user("bob")).unwrap().inbox_len,
            0,
            "{name}"
        );
    });
}

#[test]
fn a_message_to_a_user_with_no_known_device_waits_for_the_first_ack() {
    // A user who never connected (or whose devices all aged out) has nobody to wait for;
    // "every known device acked" is vacuous, so the rule also requires one real ack.
    on_both_stores(|name, store| {
        store
            .commit(&appends(vec![message("bob", 1, LATER)]))
            .unwrap();
        let outcome = store.commit(&expire(10)).unwrap();
        assert!(outcome.deleted.is_empty(), "{name}: not expired, not acked");
        assert_eq!(pending(store, "bob", 1), vec![1], "{name}");

        let outcome = store.commit(&ack("bob", 3, 1, 1)).unwrap();
        assert_eq!(outcome.deleted, vec![(user("bob"), MessageId(1))], "{name}");
    });
}

#[test]
fn acks_for_unknown_ids_are_ignored_and_acking_twice_is_harmless() {
    // Acks race with deletion and are re-sent after reconnects: an ack for an id that is
    // gone, never existed, or was already applied must change nothing else.
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 1, 0)).unwrap();
        store.commit(&seen("bob", 2, 0)).unwrap();
        store
            .commit(&appends(vec![
                message("bob", 5, LATER),
                message("bob", 6, LATER),
            ]))
            .unwrap();

        let outcome = store.commit(&ack("bob", 1, 100, 200)).unwrap();
        assert!(outcome.deleted.is_empty(), "{name}");
        let outcome = store.commit(&ack("nobody", 1, 1, 10)).unwrap();
        assert!(outcome.deleted.is_empty(), "{name}");
        let reversed = WriteBatch {
            acks: vec![AckOp {
                user: user("bob"),
                device: DeviceId(1),
                ranges: vec![IdRange {
                    first: MessageId(6),
                    last: MessageId(5),
                }],
            }],
            ..WriteBatch::default()
        };
        assert!(
            store.commit(&reversed).unwrap().deleted.is_empty(),
            "{name}"
        );
        assert_eq!(
            pending(store, "bob", 1),
            vec![5, 6],
            "{name}: reversed range ignored"
        );

        store.commit(&ack("bob", 1, 5, 5)).unwrap();
        let outcome = store.commit(&ack("bob", 1, 1, 5)).unwrap();
        assert!(outcome.deleted.is_empty(), "{name}: device 2 still waits");
        let stored = store
            .replay_checked(&user("bob"), DeviceId(2), None, 10, 0)
            .unwrap();
        assert_eq!(
            stored[0].acked_by,
            vec![DeviceId(1)],
            "{name}: no duplicate ack"
        );
        assert_eq!(
            store.user_state(&user("bob")).unwrap().inbox_len,
            2,
            "{name}"
        );

        let outcome = store.commit(&ack("bob", 2, 5, 5)).unwrap();
        assert_eq!(outcome.deleted, vec![(user("bob"), MessageId(5))], "{name}");
        let outcome = store.commit(&ack("bob", 2, 5, 5)).unwrap();
        assert!(
            outcome.deleted.is_empty(),
            "{name}: a second ack deletes nothing more"
        );
    });
}

#[test]
fn expiry_deletes_expired_messages_and_reports_them() {
    // Undelivered messages must not pile up forever; the core learns which ones went so it
    // can drop them from memory too.
    on_both_stores(|name, store| {
        let batch = appends(vec![
            message("bob", 1, 100),
            message("ann", 2, 200),
            message("bob", 3, 300),
        ]);
        store.commit(&batch).unwrap();
        assert_eq!(
            store.user_state(&user("bob")).unwrap().inbox_len,
            2,
            "{name}"
        );

        let outcome = store.commit(&expire(200)).unwrap();
        let expected = vec![(user("bob"), MessageId(1)), (user("ann"), MessageId(2))];
        assert_eq!(
            outcome.deleted, expected,
            "{name}: expires_at <= t, oldest first"
        );
        assert_eq!(pending(store, "bob", 1), vec![3], "{name}");
        assert_eq!(
            store.user_state(&user("bob")).unwrap().inbox_len,
            1,
            "{name}"
        );
        assert_eq!(
            store.user_state(&user("ann")).unwrap(),
            UserState::default(),
            "{name}"
        );
    });
}

#[test]
fn expiry_forgets_stale_devices_and_releases_what_they_held_back() {
    // A device that has not been seen for the TTL (an uninstalled companion app) must not
    // keep its user's messages on disk forever.
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 1, 0)).unwrap();
        store.commit(&seen("bob", 2, 800)).unwrap();
        store
            .commit(&appends(vec![
                message("bob", 1, LATER),
                message("bob", 2, LATER),
            ]))
            .unwrap();
        store.commit(&ack("bob", 2, 1, 1)).unwrap();
        assert_eq!(
            pending(store, "bob", 1),
            vec![1, 2],
            "{name}: device 1 holds both"
        );

        // Device 1 was last seen at 0: at t = 1000 it is not yet older than the TTL.
        let outcome = store.commit(&expire(DEVICE_TTL_MS)).unwrap();
        assert!(outcome.deleted.is_empty(), "{name}");
        assert_eq!(
            store.user_state(&user("bob")).unwrap().devices.len(),
            2,
            "{name}"
        );

        let outcome = store.commit(&expire(DEVICE_TTL_MS + 1)).unwrap();
        assert_eq!(outcome.deleted, vec![(user("bob"), MessageId(1))], "{name}");
        let state = store.user_state(&user("bob")).unwrap();
        assert_eq!(state.devices, vec![(DeviceId(2), 800)], "{name}");
        assert_eq!(
            state.inbox_len, 1,
            "{name}: message 2 still waits for device 2"
        );
    });
}

#[test]
fn a_device_sighting_refreshes_but_never_ages_a_device() {
    // Batches from different edges may arrive out of order: an old sighting must not make
    // an active device look stale.
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 1, 500)).unwrap();
        store.commit(&seen("bob", 1, 100)).unwrap();
        let devices = store.user_state(&user("bob")).unwrap().devices;
        assert_eq!(
            devices,
            vec![(DeviceId(1), 500)],
            "{name}: the later time stays"
        );
        store.commit(&seen("bob", 1, 900)).unwrap();
        store.commit(&expire(500 + DEVICE_TTL_MS + 1)).unwrap();
        let devices = store.user_state(&user("bob")).unwrap().devices;
        assert_eq!(
            devices,
            vec![(DeviceId(1), 900)],
            "{name}: refreshed, so not forgotten"
        );
    });
}

#[test]
fn an_appended_message_already_acked_by_every_device_is_deleted_at_once() {
    // If the core appends a message some devices acked while the batch was forming, the
    // deletion rule still holds: nothing fully acknowledged stays stored.
    on_both_stores(|name, store| {
        store.commit(&seen("bob", 1, 0)).unwrap();
        let mut acked = message("bob", 1, LATER);
        acked.acked_by = vec![DeviceId(1)];
        let outcome = store
            .commit(&appends(vec![acked, message("bob", 2, LATER)]))
            .unwrap();
        assert_eq!(outcome.deleted, vec![(user("bob"), MessageId(1))], "{name}");
        assert_eq!(pending(store, "bob", 9), vec![2], "{name}");
    });
}

#[test]
fn a_batch_that_appends_a_stored_id_is_rejected_whole() {
    // Ids are never reused; if the caller breaks that, the store must refuse rather than
    // overwrite a message, and apply nothing of the batch.
    on_both_stores(|name, store| {
        store
            .commit(&appends(vec![message("bob", 1, LATER)]))
            .unwrap();
        let mut batch = appends(vec![message("bob", 2, LATER), message("bob", 1, 5)]);
        batch.devices_seen.push((user("bob"), DeviceId(1), 10));
        batch.reserve_ids_through = Some(50);
        let error = store.commit(&batch).unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidBatch(_)),
            "{name}: {error}"
        );
        assert_eq!(pending(store, "bob", 1), vec![1], "{name}");
        assert_eq!(
            store.user_state(&user("bob")).unwrap().devices,
            vec![],
            "{name}"
        );
        assert_eq!(store.reserved_ids_through().unwrap(), 0, "{name}");
    });
}

#[test]
fn reserved_ids_never_go_backwards() {
    // Ids resume above this mark after a crash; lowering it would hand out ids twice.
    on_both_stores(|name, store| {
        assert_eq!(store.reserved_ids_through().unwrap(), 0, "{name}");
        store
            .commit(&WriteBatch {
                reserve_ids_through: Some(1000),
                ..WriteBatch::default()
            })
            .unwrap();
        store
            .commit(&WriteBatch {
                reserve_ids_through: Some(10),
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(store.reserved_ids_through().unwrap(), 1000, "{name}");
        store
            .commit(&WriteBatch {
                reserve_ids_through: Some(2000),
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(store.reserved_ids_through().unwrap(), 2000, "{name}");
    });
}

#[test]
fn one_expiry_pass_deletes_a_bounded_number_of_messages_oldest_first() {
    // After a long outage a single commit must not try to delete everything at once: the
    // senders waiting on that commit's fsync would stall. The rest goes next time.
    on_both_stores(|name, store| {
        let total = EXPIRE_MESSAGES_PER_COMMIT_MAX as u64 + 3;
        // Later ids expire earlier, so "oldest first" is not the same as "lowest id first".
        let batch = appends(
            (1..=total)
                .map(|id| message("bob", id, total + 1 - id))
                .collect(),
        );
        store.commit(&batch).unwrap();
        let first = store.commit(&expire(total)).unwrap().deleted;
        assert_eq!(first.len(), EXPIRE_MESSAGES_PER_COMMIT_MAX, "{name}");
        assert_eq!(
            first[0],
            (user("bob"), MessageId(total)),
            "{name}: oldest first"
        );
        assert_eq!(pending(store, "bob", 1), vec![1, 2, 3], "{name}");
        let second = store.commit(&expire(total)).unwrap().deleted;
        let expected: Vec<_> = [3, 2, 1].map(|id| (user("bob"), MessageId(id))).to_vec();
        assert_eq!(second, expected, "{name}");
        assert_eq!(
            store.user_state(&user("bob")).unwrap().inbox_len,
            0,
            "{name}"
        );
    });
}
