//! Short waits for the writers' hold-back and the lane-copy delay.
//!
//! tokio's timer ticks once a millisecond and rounds a deadline up to the next tick, so
//! on its own a 1 ms hold would last 1–2 ms. A [`Deadline`] is that timer plus a check of
//! the clock: polled at or after its exact deadline (a writer is polled whenever a queue
//! wakes it), it is over at once, and otherwise the runtime's timer wakes it.
//!
//! It replaced a process-wide timer thread with exact sleeps: under load that thread had
//! to be scheduled to wake a task, which cost a context switch per hold and, on two busy
//! cores, up to milliseconds of scheduling delay. Measured at 5k msg/s (`quichat-load
//! --pairs 50 --rate 5000`, server on one runtime thread): server CPU 83–89 → 67–71 µs per
//! message and p50 1.55–1.63 → 1.19–1.20 ms, with the same 0.18–0.20 datagrams per message
//! each way on the edge↔core link (docs/ARCHITECTURE.md, "One writer task per connection,
//! and a hold-back on edge↔core links").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// A future that completes at its instant ([`Deadline::at`]): when polled at or after
/// it, or when the runtime's timer fires (at most about a millisecond later).
#[derive(Debug)]
pub struct Deadline {
    at: Instant,
    /// Boxed: most connections never wait, and an idle one should not carry a timer entry.
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    /// A wait that ends at `at`. Needs a tokio runtime with the timer enabled.
    pub fn new(at: Instant) -> Self {
        Deadline {
            at,
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
        }
    }

    /// When it completes.
    pub fn at(&self) -> Instant {
        self.at
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        self.sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_never_end_before_their_deadline() {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for us in [900u64, 300, 600, 100] {
            tasks.push(tokio::spawn(async move {
                let at = start + Duration::from_micros(us);
                Deadline::new(at).await;
                assert!(Instant::now() >= at, "woke before its deadline");
                us
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // A deadline in the past is ready at once.
        Deadline::new(start).await;
    }
}
