//! The bounded queue between a stream's senders ([`crate::FrameSender`]) and its writer
//! task.
//!
//! tokio's bounded channel allocates, when it is created, its first block of 32 slots and
//! a shared state padded to cache lines: about 1 KiB per queue before it carries
//! anything, and a client connection at the edge keeps at least one queue (its control
//! stream) for its whole life. This queue allocates only its shared state (about 0.2 KiB)
//! up front, its slots as frames arrive, and gives back a large slot buffer once it is
//! drained. Its behaviour is the channel's: room is a fair semaphore, so senders waiting
//! for room are served in order and `try_send` succeeds only when nobody waits; the
//! receiver sees the end once every sender is gone and the queue is empty; senders see
//! `Closed` once the receiver is gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, Semaphore, TryAcquireError};

/// Slots a drained queue may keep; a larger buffer (left by a burst) is given back.
const SLOTS_KEPT_MAX: usize = 32;

/// A queue of at most `capacity` items (at least 1).
pub(crate) fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_waker: None,
            receiver_gone: false,
        }),
        room: Semaphore::new(capacity.max(1)),
        gone: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Free slots. Closed when the receiver goes, which fails waiting senders.
    room: Semaphore,
    /// Signalled when the receiver goes (see [`Sender::closed`]).
    gone: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    /// Live [`Sender`]s: at zero, the receiver sees the end once `items` is empty.
    senders: usize,
    /// The receiver waiting for an item (or for the last sender to go).
    receiver_waker: Option<Waker>,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the state consistent (single pushes and drains).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side. Cheap to clone.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("queue::Sender")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.receiver_waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full; gives it back if the receiver is
    /// gone.
    pub(crate) async fn send(&self, item: T) -> Result<(), T> {
        match self.shared.room.acquire().await {
            Ok(permit) => {
                permit.forget();
                self.push(item);
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    /// Queues `item` if there is room now and nobody waits for room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        match self.shared.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.push(item);
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err(TrySendError::Full(item)),
            Err(TryAcquireError::Closed) => Err(TrySendError::Closed(item)),
        }
    }

    /// Adds an item whose slot is already taken.
    fn push(&self, item: T) {
        let waker = {
            let mut state = self.shared.lock();
            if state.receiver_gone {
                // The receiver went after the slot was taken: the item is dropped, as
                // it would have been with the rest of the queue.
                return;
            }
            state.items.push_back(item);
            state.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Free slots.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.room.available_permits()
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.room.is_closed()
    }

    /// Resolves when the receiver is gone.
    pub(crate) async fn closed(&self) {
        loop {
            // Registered when created, so a `notify_waiters` between the check and the
            // wait is not missed.
            let gone = self.shared.gone.notified();
            if self.is_closed() {
                return;
            }
            gone.await;
        }
    }
}

/// The receiving side (the writer task).
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.room.close();
        let items = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item may own a oneshot sender whose drop wakes
        // someone.
        drop(items);
        self.shared.gone.notify_waiters();
    }
}

impl<T> Receiver<T> {
    /// Moves up to `limit` items (at least 1) into `buf`: `Ready(n)` with how many, or
    /// `Ready(0)` once every sender is gone and nothing is left; `Pending` (and a wake-up
    /// of `cx` later) when empty.
    pub(crate) fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<T>,
        limit: usize,
    ) -> Poll<usize> {
        let mut state = self.shared.lock();
        if !state.items.is_empty() {
            let count = limit.max(1).min(state.items.len());
            buf.extend(state.items.drain(..count));
            if state.items.is_empty() && state.items.capacity() > SLOTS_KEPT_MAX {
                state.items = VecDeque::new();
            }
            drop(state);
            self.shared.room.add_permits(count);
            return Poll::Ready(count);
        }
        if state.senders == 0 {
            return Poll::Ready(0);
        }
        if !state
            .receiver_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.receiver_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv_now<T>(rx: &mut Receiver<T>, buf: &mut Vec<T>) -> Poll<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        rx.poll_recv_many(&mut cx, buf, 16)
    }

    // The queue must behave as the bounded channel it replaces: items in order, room
    // bounded, room given back as items are taken.
    #[tokio::test]
    async fn items_come_out_in_order_and_room_is_bounded() {
        let (tx, mut rx) = queue(2);
        assert_eq!(tx.capacity(), 2);
        tx.try_send(1).ok();
        tx.send(2).await.ok();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let mut buf = Vec::new();
        assert_eq!(recv_now(&mut rx, &mut buf), Poll::Ready(2));
        assert_eq!(buf, vec![1, 2]);
        assert_eq!(tx.capacity(), 2, "taking items gives their room back");
        assert_eq!(recv_now(&mut rx, &mut buf), Poll::Pending);
    }

    // A sender waiting for room is woken when the receiver takes items.
    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_for_room() {
        let (tx, mut rx) = queue(1);
        tx.send(1).await.ok();
        let waiting = tokio::spawn(async move { tx.send(2).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room: the sender waits");
        let mut buf = Vec::new();
        assert_eq!(recv_now(&mut rx, &mut buf), Poll::Ready(1));
        assert!(waiting.await.unwrap_or(false), "room came back");
        assert_eq!(recv_now(&mut rx, &mut buf), Poll::Ready(1));
        assert_eq!(buf, vec![1, 2]);
    }

    // The receiver sees the end only once every sender is gone and it has taken
    // everything; a sender sees the end as soon as the receiver is gone, waiting or not.
    #[tokio::test]
    async fn each_side_sees_the_other_go() {
        let (tx, mut rx) = queue(1);
        let other = tx.clone();
        tx.send(1).await.ok();
        drop(tx);
        let mut buf = Vec::new();
        assert_eq!(recv_now(&mut rx, &mut buf), Poll::Ready(1));
        assert_eq!(
            recv_now(&mut rx, &mut buf),
            Poll::Pending,
            "one sender is left"
        );
        other.send(2).await.ok();
        let waiting = tokio::spawn(async move {
            let closed = other.send(3).await.is_err();
            other.closed().await;
            (closed, other.is_closed())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let (closed, is_closed) = waiting.await.unwrap_or((false, false));
        assert!(closed && is_closed, "the waiting sender got its item back");

        let (tx, mut rx) = queue::<u8>(1);
        drop(tx);
        assert_eq!(recv_now(&mut rx, &mut Vec::new()), Poll::Ready(0));
    }
}
