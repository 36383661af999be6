//! [`Link`]: the impairments of one direction (loss, delay, jitter, reordering,
//! duplication) as a sans-IO state machine.
//!
//! Like quinn-proto, it never touches a socket or the clock: datagrams go in through
//! [`Link::handle_datagram`] with the caller's `now`, come out of [`Link::poll_transmit`]
//! when they are due, and [`Link::poll_timeout`] says when to call again. That keeps the
//! driver in [`super::driver`] a short loop and lets these rules be tested with a virtual
//! clock.
//!
//! Delayed datagrams wait in a timer queue ordered by due time, so each one is delayed on
//! its own: a datagram due in 25 ms never holds back one due sooner.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::{Direction, LinkConfig, QUEUE_BYTES_MAX, QUEUE_PACKETS_MAX};
use super::stats::{Counters, LinkCounters, bump};

/// A datagram and where it goes. `T` is whatever the driver needs to send it.
#[derive(Debug, Clone)]
pub(crate) struct Datagram<T> {
    /// The bytes, exactly as received.
    pub(crate) payload: Vec<u8>,
    /// Where to send them.
    pub(crate) to: T,
}

/// A datagram in the timer queue.
#[derive(Debug)]
struct Scheduled<T> {
    due: Instant,
    /// Ties on `due` go out in the order they were queued.
    order: u64,
    datagram: Datagram<T>,
}

// The queue orders by (due, order) only; the payload plays no part.
impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl<T> Eq for Scheduled<T> {}

impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Scheduled<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// A datagram held back so that the next one overtakes it.
#[derive(Debug)]
struct Held<T> {
    datagram: Datagram<T>,
    /// 2 when the datagram was also chosen for duplication.
    copies: u8,
    /// When it would have been due had it not been held.
    due: Instant,
    /// When it goes out anyway if no later datagram has come to overtake it.
    release_at: Instant,
}

/// The impairments of one direction.
#[derive(Debug)]
pub(crate) struct Link<T> {
    direction: Direction,
    config: LinkConfig,
    rng: SmallRng,
    /// Min-heap by due time.
    queue: BinaryHeap<Reverse<Scheduled<T>>>,
    /// Payload bytes in `queue`, held to [`QUEUE_BYTES_MAX`].
    queued_bytes: usize,
    /// At most one datagram is held back at a time; while one is, the next datagram
    /// releases it instead of being held itself.
    held: Option<Held<T>>,
    next_order: u64,
    counters: Arc<Counters>,
}

/// The random numbers drawn for every datagram, always all four and in this order, so the
/// same seed gives the same decisions whichever probabilities are set.
struct Rolls {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    jitter: f64,
}

impl<T: Clone> Link<T> {
    /// A link applying `config`, counting into `counters` for `direction`.
    pub(crate) fn new(direction: Direction, config: LinkConfig, counters: Arc<Counters>) -> Self {
        Self {
            direction,
            rng: seeded_rng(direction, config.seed),
            config,
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            held: None,
            next_order: 0,
            counters,
        }
    }

    /// Applies a new configuration to datagrams handled from now on. A new seed restarts
    /// the generator; the same seed continues it, so turning loss on mid-run stays
    /// replayable.
    pub(crate) fn set_config(&mut self, config: LinkConfig) {
        if config.seed != self.config.seed {
            self.rng = seeded_rng(self.direction, config.seed);
        }
        self.config = config;
    }

    /// Takes in a datagram that arrived at `now`: drops, delays, holds back or duplicates
    /// it as configured.
    pub(crate) fn handle_datagram(&mut self, now: Instant, datagram: Datagram<T>) {
        bump(&self.counters().received);
        let rolls = Rolls {
            loss: self.rng.random(),
            duplicate: self.rng.random(),
            reorder: self.rng.random(),
            jitter: self.rng.random(),
        };
        // `random::<f64>()` is in [0, 1): probability 0 never fires, 1 always does.
        if rolls.loss < self.config.loss {
            bump(&self.counters().dropped_loss);
            return;
        }
        let delay = self.config.delay + self.config.jitter.mul_f64(rolls.jitter);
        // `LinkConfig::validate` caps the delays, so this only saturates on a clock near
        // the end of time; sending at once then is harmless.
        let due = now.checked_add(delay).unwrap_or(now);
        let copies = if rolls.duplicate < self.config.duplicate {
            2
        } else {
            1
        };
        if let Some(held) = self.held.take() {
            // This datagram overtakes the held one, which goes right after it.
            self.enqueue(due, datagram, copies);
            bump(&self.counters().reordered);
            self.enqueue(held.due.max(due), held.datagram, held.copies);
        } else if rolls.reorder < self.config.reorder {
            let release_at = due.checked_add(self.config.reorder_hold).unwrap_or(due);
            self.held = Some(Held {
                datagram,
                copies,
                due,
                release_at,
            });
        } else {
            self.enqueue(due, datagram, copies);
        }
    }

    /// The next datagram due at `now`, if any. Call until it returns `None`.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Datagram<T>> {
        if self
            .held
            .as_ref()
            .is_some_and(|held| held.release_at <= now)
        {
            if let Some(held) = self.held.take() {
                // Nothing overtook it in time: it goes out as it is, not counted as reordered.
                self.enqueue(held.due, held.datagram, held.copies);
            }
        }
        match self.queue.peek() {
            Some(Reverse(next)) if next.due <= now => {}
            _ => return None,
        }
        let Reverse(scheduled) = self.queue.pop()?;
        self.queued_bytes -= scheduled.datagram.payload.len();
        Some(scheduled.datagram)
    }

    /// When [`poll_transmit`](Self::poll_transmit) will next have something, if ever.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let next_due = self.queue.peek().map(|Reverse(next)| next.due);
        let release = self.held.as_ref().map(|held| held.release_at);
        match (next_due, release) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when nothing is waiting to be sent.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.held.is_none()
    }

    /// Puts `copies` copies of `datagram` in the queue, due at `due`; drops what does not
    /// fit under [`QUEUE_PACKETS_MAX`] and [`QUEUE_BYTES_MAX`].
    fn enqueue(&mut self, due: Instant, datagram: Datagram<T>, copies: u8) {
        if copies > 1 && self.fits(datagram.payload.len() * 2) {
            bump(&self.counters().duplicated);
            self.push(due, datagram.clone());
        }
        if self.fits(datagram.payload.len()) {
            self.push(due, datagram);
        } else {
            bump(&self.counters().dropped_queue_full);
        }
    }

    fn fits(&self, bytes: usize) -> bool {
        self.queue.len() < QUEUE_PACKETS_MAX && self.queued_bytes + bytes <= QUEUE_BYTES_MAX
    }

    fn push(&mut self, due: Instant, datagram: Datagram<T>) {
        self.queued_bytes += datagram.payload.len();
        let order = self.next_order;
        self.next_order += 1;
        self.queue.push(Reverse(Scheduled {
            due,
            order,
            datagram,
        }));
    }

    fn counters(&self) -> &LinkCounters {
        match self.direction {
            Direction::ToUpstream => &self.counters.to_upstream,
            Direction::ToClient => &self.counters.to_client,
        }
    }
}

/// The generator for one direction. The direction is mixed in so that both directions of
/// a proxy configured with one seed do not drop in lock-step.
fn seeded_rng(direction: Direction, seed: u64) -> SmallRng {
    let salt = match direction {
        Direction::ToUpstream => 0,
        Direction::ToClient => 0x9E37_79B9_7F4A_7C15,
    };
    SmallRng::seed_from_u64(seed ^ salt)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn link(config: LinkConfig) -> Link<u32> {
        Link::new(Direction::ToUpstream, config, Arc::default())
    }

    fn datagram(seq: u32) -> Datagram<u32> {
        Datagram {
            payload: seq.to_be_bytes().to_vec(),
            to: seq,
        }
    }

    /// Drains everything due at `now`, returning the sequence numbers in send order.
    fn drain(link: &mut Link<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| link.poll_transmit(now))
            .map(|d| d.to)
            .collect()
    }

    /// Sends `count` datagrams at `now` and returns which came out, after letting the
    /// link run until idle.
    fn run(link: &mut Link<u32>, count: u32) -> Vec<u32> {
        let start = Instant::now();
        let mut out = Vec::new();
        for seq in 0..count {
            link.handle_datagram(start, datagram(seq));
            out.extend(drain(link, start));
        }
        // Bounded: each timeout releases at least one datagram.
        for _ in 0..=(2 * count) {
            let Some(at) = link.poll_timeout() else { break };
            out.extend(drain(link, at));
        }
        assert!(link.is_idle());
        out
    }

    #[test]
    fn a_perfect_link_passes_everything_in_order_at_once() {
        let mut link = link(LinkConfig::default());
        let now = Instant::now();
        link.handle_datagram(now, datagram(1));
        link.handle_datagram(now, datagram(2));
        assert_eq!(drain(&mut link, now), vec![1, 2]);
        assert!(link.is_idle());
    }

    #[test]
    fn delayed_datagrams_are_delayed_independently_not_one_after_another() {
        // A queue that slept `delay` per datagram would release one datagram per 25 ms;
        // a timer queue releases all 100 together, 25 ms after they arrived.
        let delay = Duration::from_millis(25);
        let mut link = link(LinkConfig {
            delay,
            ..LinkConfig::default()
        });
        let start = Instant::now();
        for seq in 0..100 {
            link.handle_datagram(start, datagram(seq));
        }
        assert!(drain(&mut link, start + delay - Duration::from_millis(1)).is_empty());
        assert_eq!(link.poll_timeout(), Some(start + delay));
        assert_eq!(
            drain(&mut link, start + delay),
            (0..100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_later_datagram_with_a_shorter_delay_goes_first() {
        // Lowering the delay at runtime must not leave new datagrams stuck behind old ones.
        let mut link = link(LinkConfig {
            delay: Duration::from_millis(50),
            ..LinkConfig::default()
        });
        let start = Instant::now();
        link.handle_datagram(start, datagram(1));
        link.set_config(LinkConfig::default());
        link.handle_datagram(start, datagram(2));
        assert_eq!(drain(&mut link, start), vec![2]);
        assert_eq!(drain(&mut link, start + Duration::from_millis(50)), vec![1]);
    }

    #[test]
    fn full_loss_drops_everything_and_counts_it() {
        let counters = Arc::<Counters>::default();
        let mut link = Link::new(
            Direction::ToClient,
            LinkConfig {
                loss: 1.0,
                ..LinkConfig::default()
            },
            counters.clone(),
        );
        let now = Instant::now();
        for seq in 0..10 {
            link.handle_datagram(now, datagram(seq));
        }
        assert!(drain(&mut link, now).is_empty());
        let stats = counters.snapshot().to_client;
        assert_eq!((stats.received, stats.dropped_loss), (10, 10));
    }

    #[test]
    fn full_duplication_sends_every_datagram_twice_in_order() {
        let mut link = link(LinkConfig {
            duplicate: 1.0,
            ..LinkConfig::default()
        });
        assert_eq!(run(&mut link, 3), vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn a_held_back_datagram_goes_right_after_the_next_one() {
        // With reorder = 1 every datagram that can be held is: 0 is held, 1 releases it,
        // 2 is held, 3 releases it, … and the last one goes out after `reorder_hold`.
        let counters = Arc::<Counters>::default();
        let mut link = Link::new(
            Direction::ToUpstream,
            LinkConfig {
                reorder: 1.0,
                ..LinkConfig::default()
            },
            counters.clone(),
        );
        assert_eq!(run(&mut link, 5), vec![1, 0, 3, 2, 4]);
        assert_eq!(counters.snapshot().to_upstream.reordered, 2);
    }

    #[test]
    fn a_held_back_datagram_is_released_when_nothing_overtakes_it() {
        let hold = Duration::from_millis(10);
        let mut link = link(LinkConfig {
            reorder: 1.0,
            reorder_hold: hold,
            ..LinkConfig::default()
        });
        let start = Instant::now();
        link.handle_datagram(start, datagram(7));
        assert!(drain(&mut link, start).is_empty());
        assert_eq!(link.poll_timeout(), Some(start + hold));
        assert_eq!(drain(&mut link, start + hold), vec![7]);
    }

    #[test]
    fn the_same_seed_replays_the_same_drops_and_another_seed_does_not() {
        // A failing run is replayed by reusing its seed.
        let lossy = |seed| LinkConfig {
            loss: 0.5,
            seed,
            ..LinkConfig::default()
        };
        let first = run(&mut link(lossy(42)), 200);
        let again = run(&mut link(lossy(42)), 200);
        let other = run(&mut link(lossy(43)), 200);
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert!(!first.is_empty() && first.len() < 200);
    }

    #[test]
    fn the_two_directions_decide_independently_with_one_seed() {
        let config = LinkConfig {
            loss: 0.5,
            ..LinkConfig::default()
        };
        let mut up = Link::new(Direction::ToUpstream, config.clone(), Arc::default());
        let mut down = Link::new(Direction::ToClient, config, Arc::default());
        assert_ne!(run(&mut up, 200), run(&mut down, 200));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing() {
        let counters = Arc::<Counters>::default();
        let delay = Duration::from_secs(1);
        let mut link = Link::new(
            Direction::ToUpstream,
            LinkConfig {
                delay,
                ..LinkConfig::default()
            },
            counters.clone(),
        );
        let start = Instant::now();
        let count = u32::try_from(QUEUE_PACKETS_MAX).unwrap() + 3;
        for seq in 0..count {
            link.handle_datagram(start, datagram(seq));
        }
        assert_eq!(counters.snapshot().to_upstream.dropped_queue_full, 3);
        assert_eq!(drain(&mut link, start + delay).len(), QUEUE_PACKETS_MAX);
    }
}
