//! The writer thread: the only place the store is written.
//!
//! It takes one [`WriteBatch`] at a time from a channel of capacity 1, commits it (one
//! transaction, one fsync) and hands the batch back with the outcome. The router never
//! has more than one batch committing, so the channel is never full; while the disk is
//! busy, the next batch accumulates in the router. A plain thread, because a commit
//! blocks for the length of an fsync and must not hold up the async runtime.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::store::{CommitOutcome, LogStore, StoreError, WriteBatch};

/// A finished commit: the batch and what came of it.
pub(crate) type Done = (WriteBatch, Result<CommitOutcome, StoreError>);

/// The router's side of the writer.
pub(crate) struct Writer {
    /// Batches to commit (capacity 1: at most one is ever in flight).
    pub(crate) batches: SyncSender<WriteBatch>,
    /// Finished commits (capacity 1, for the same reason).
    pub(crate) done: mpsc::Receiver<Done>,
    /// The thread, joined at shutdown.
    pub(crate) thread: JoinHandle<()>,
}

/// Starts the writer thread. It ends when `Writer::batches` is dropped.
pub(crate) fn spawn(store: Arc<dyn LogStore>) -> std::io::Result<Writer> {
    let (batches, rx) = sync_channel::<WriteBatch>(1);
    let (done_tx, done) = mpsc::channel::<Done>(1);
    let thread = std::thread::Builder::new()
        .name("quichat-writer".into())
        .spawn(move || run(store.as_ref(), rx, done_tx))?;
    Ok(Writer {
        batches,
        done,
        thread,
    })
}

fn run(store: &dyn LogStore, batches: Receiver<WriteBatch>, done: mpsc::Sender<Done>) {
    while let Ok(batch) = batches.recv() {
        let result = store.commit(&batch);
        if done.blocking_send((batch, result)).is_err() {
            break; // The router is gone; nobody is waiting for this.
        }
    }
}
