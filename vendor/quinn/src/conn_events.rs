//! The queue of events from the endpoint driver to one connection's driver.
//!
//! quichat patch (see `vendor/quinn/PATCHES.md`). Upstream uses
//! `tokio::sync::mpsc::unbounded_channel`, which allocates its first block of 32 slots
//! when it is created: with a `ConnectionEvent` of about 220 bytes, 7.2 KB for every
//! connection, most of it never used by an idle one. This queue holds nothing until an
//! event arrives and gives its buffer back whenever the connection driver finds it empty,
//! so an idle connection keeps no buffer at all. It is as unbounded as the channel it
//! replaces: the endpoint driver pushes one event per received datagram, and the
//! connection driver drains the queue each time it runs.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use crate::ConnectionEvent;

/// Creates a connected sender and receiver.
pub(crate) fn channel() -> (Sender, Receiver) {
    let shared = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        sender_alive: true,
        receiver_alive: true,
    }));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

#[derive(Debug)]
struct State {
    queue: VecDeque<ConnectionEvent>,
    /// The connection driver, when it found the queue empty.
    waker: Option<Waker>,
    sender_alive: bool,
    receiver_alive: bool,
}

/// The connection driver is gone: the event was dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closed;

/// The endpoint driver's end.
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Mutex<State>>,
}

impl Sender {
    /// Queues `event` and wakes the connection driver; drops the event and says so when
    /// the connection driver is gone.
    pub(crate) fn send(&self, event: ConnectionEvent) -> Result<(), Closed> {
        let waker = {
            let mut state = self.shared.lock().unwrap();
            if !state.receiver_alive {
                return Err(Closed);
            }
            state.queue.push_back(event);
            state.waker.take()
        };
        // Woken outside the lock: the driver may run on another thread and lock at once.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock().unwrap();
            state.sender_alive = false;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The connection driver's end.
#[derive(Debug)]
pub(crate) struct Receiver {
    shared: Arc<Mutex<State>>,
}

impl Receiver {
    /// The next event; `Ready(None)` once the queue is empty and the sender is gone.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        let mut state = self.shared.lock().unwrap();
        if let Some(event) = state.queue.pop_front() {
            return Poll::Ready(Some(event));
        }
        if state.queue.capacity() != 0 {
            // Drained: give the buffer back, so an idle connection holds none.
            state.queue = VecDeque::new();
        }
        if !state.sender_alive {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock().unwrap();
        state.receiver_alive = false;
        // Events nobody will read: dropped now rather than with the endpoint's sender.
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn event() -> ConnectionEvent {
        ConnectionEvent::Close {
            error_code: crate::VarInt::from_u32(1),
            reason: bytes::Bytes::new(),
        }
    }

    #[test]
    fn delivers_in_order_then_ends_with_the_sender() {
        let (tx, mut rx) = channel();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(event()).unwrap();
        tx.send(ConnectionEvent::Close {
            error_code: crate::VarInt::from_u32(2),
            reason: bytes::Bytes::new(),
        })
        .unwrap();
        let codes: Vec<u64> = (0..2)
            .map(|_| match rx.poll_recv(&mut cx) {
                Poll::Ready(Some(ConnectionEvent::Close { error_code, .. })) => error_code.into(),
                other => panic!("expected an event, got {other:?}"),
            })
            .collect();
        assert_eq!(codes, [1, 2]);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert_eq!(rx.shared.lock().unwrap().queue.capacity(), 0);
        drop(tx);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn refuses_events_once_the_receiver_is_gone() {
        let (tx, rx) = channel();
        drop(rx);
        assert_eq!(tx.send(event()), Err(Closed));
    }
}
