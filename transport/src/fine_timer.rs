//! Sub-millisecond sleeps for the link writers' hold-back.
//!
//! tokio's timer wheel ticks once a millisecond, so a 250 µs sleep lasts 1–2 ms: too
//! coarse to hold frames back for a fraction of a millisecond. This is one process-wide
//! thread that waits on a condition variable with the exact timeout (the kernel's timer
//! slack is 50 µs) and wakes the tasks whose deadline passed. It serves only short,
//! infrequent holds (one per flush of a busy link), so a mutex-guarded heap is plenty.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One registered deadline. Ordered by deadline only.
struct Entry {
    at: Instant,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// The timer thread's shared state.
struct Wheel {
    heap: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Condvar,
}

/// The most deadlines waiting at once. Each hold registers one entry (a task re-registers
/// only when its waker changes), so this is far above any real use; beyond it a sleep
/// wakes at once rather than grow the heap.
const ENTRIES_MAX: usize = 65_536;

fn wheel() -> Option<&'static Wheel> {
    static WHEEL: OnceLock<Option<&'static Wheel>> = OnceLock::new();
    *WHEEL.get_or_init(|| {
        let wheel: &'static Wheel = Box::leak(Box::new(Wheel {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("quichat-fine-timer".into())
            .spawn(move || run(wheel));
        match spawned {
            Ok(_) => Some(wheel),
            Err(e) => {
                // Without the thread every sleep ends at once: no hold-back, nothing lost.
                tracing::warn!(error = %e, "fine timer thread not started; link hold-back off");
                None
            }
        }
    })
}

fn run(wheel: &Wheel) {
    let mut heap = wheel.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                entry.waker.wake();
            }
        }
        heap = match heap.peek() {
            None => wheel.changed.wait(heap).unwrap_or_else(|e| e.into_inner()),
            Some(Reverse(next)) => {
                let timeout = next.at.saturating_duration_since(now);
                wheel
                    .changed
                    .wait_timeout(heap, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// A future that completes at `deadline`, to within the kernel's timer slack.
#[derive(Debug)]
pub struct FineSleep {
    deadline: Instant,
    /// The waker registered last, so repeated polls do not register again.
    registered: Option<Waker>,
}

/// Sleeps until `deadline` with sub-millisecond precision.
pub fn sleep_until(deadline: Instant) -> FineSleep {
    FineSleep {
        deadline,
        registered: None,
    }
}

impl FineSleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for FineSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let Some(wheel) = wheel() else {
            return Poll::Ready(());
        };
        let mut heap = wheel.heap.lock().unwrap_or_else(|e| e.into_inner());
        if heap.len() >= ENTRIES_MAX {
            return Poll::Ready(());
        }
        let earliest = heap.peek().is_none_or(|Reverse(e)| self.deadline < e.at);
        heap.push(Reverse(Entry {
            at: self.deadline,
            waker: cx.waker().clone(),
        }));
        drop(heap);
        if earliest {
            wheel.changed.notify_one();
        }
        self.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sleeps_end_at_their_deadline_in_order_and_never_early() {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for us in [900u64, 300, 600, 100] {
            tasks.push(tokio::spawn(async move {
                let at = start + Duration::from_micros(us);
                sleep_until(at).await;
                assert!(Instant::now() >= at, "woke before its deadline");
                us
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // A deadline in the past is ready at once.
        sleep_until(start).await;
    }
}
