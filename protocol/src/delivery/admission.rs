//! Admission: how many messages a client may have waiting for the server's answer, so
//! that an overloaded server tells senders "busy" instead of queueing their messages.
//!
//! Every queue on the way is bounded by a count, but a count is not a time: a sender that
//! offers more than the server can take fills those queues, and every message then waits
//! behind them, however long they are. This controller watches how long the server takes
//! to answer (`Accepted`) and, once answers show a standing queue, limits the messages a
//! client may have in flight; `send` beyond the limit fails with
//! [`super::SendError::Busy`] (code [`crate::ErrorCode::Unavailable`]) at once.
//!
//! The signal is CoDel's: the *least* answer time over an interval, compared with the
//! least ever seen on this connection (the base: the path's round trip and the server's
//! own time). A burst does not trip it (some answer in the interval is still quick); a
//! standing queue does (every answer is late). The limit follows AIMD: cut to 70 % of
//! what is in flight when an interval shows a queue, grown by a quarter after one that
//! does not. It never goes below [`WINDOW_MIN`], so a player typing never sees it: only a
//! client that has that many messages unanswered while the server is behind is refused.
//!
//! Answers to messages sent on an earlier connection are not used (their time includes
//! the reconnect), and the base starts again on every connection (the path may differ).

use std::time::{Duration, Instant};

/// Interval over which the least answer time is taken.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Queueing (least answer time above the base) from which an interval counts as
/// overloaded. Above the core's commit delay (10 ms by default) plus a slow fsync, so that
/// messages to offline recipients, which are answered at their commit, do not look like a
/// queue to a sender whose base comes from online ones.
pub const QUEUE_TARGET: Duration = Duration::from_millis(20);
/// The limit never goes below this many messages in flight.
pub const WINDOW_MIN: usize = 4;

/// The admission controller of one client.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Messages allowed in flight now (at most the outbox size).
    window: usize,
    window_max: usize,
    /// Queueing above which an interval counts as overloaded.
    target: Duration,
    /// The least answer time on this connection.
    base: Option<Duration>,
    /// The current interval: when it started and its least answer time.
    interval: Option<(Instant, Duration)>,
}

impl Admission {
    pub(crate) fn new(window_max: usize, target: Duration) -> Self {
        Self {
            window: window_max,
            window_max,
            target,
            base: None,
            interval: None,
        }
    }

    /// Whether one more message may be queued when `in_flight` already are.
    pub(crate) fn admits(&self, in_flight: usize) -> bool {
        in_flight < self.window
    }

    /// The current limit.
    pub(crate) fn window(&self) -> usize {
        self.window
    }

    /// A new connection: the base is measured again (the limit stays, and grows back as
    /// answers come quickly).
    pub(crate) fn handle_connected(&mut self) {
        self.base = None;
        self.interval = None;
    }

    /// The server answered a message `answer_time` after it was queued, with `in_flight`
    /// messages (that one included) unanswered.
    pub(crate) fn handle_answer(&mut self, now: Instant, answer_time: Duration, in_flight: usize) {
        let base = *self.base.get_or_insert(answer_time);
        self.base = Some(base.min(answer_time));
        match &mut self.interval {
            None => self.interval = Some((now, answer_time)),
            Some((start, least)) => {
                *least = (*least).min(answer_time);
                if now.duration_since(*start) < INTERVAL {
                    return;
                }
                let queue = least.saturating_sub(base);
                if queue > self.target {
                    self.window = (in_flight * 7 / 10).clamp(WINDOW_MIN, self.window_max);
                } else {
                    self.window = (self.window + self.window / 4 + 1).min(self.window_max);
                }
                self.interval = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Answers every millisecond for `span`, each taking `answer_time`, with `in_flight`
    /// unanswered.
    fn feed(
        a: &mut Admission,
        from: Instant,
        span: Duration,
        answer_time: Duration,
        in_flight: usize,
    ) -> Instant {
        let mut now = from;
        while now < from + span {
            a.handle_answer(now, answer_time, in_flight);
            now += MS;
        }
        now
    }

    #[test]
    fn a_standing_queue_limits_what_is_in_flight_and_it_grows_back_after() {
        let mut a = Admission::new(1024, QUEUE_TARGET);
        let t0 = Instant::now();
        // Quick answers set the base; nothing is limited.
        let t = feed(&mut a, t0, 300 * MS, 2 * MS, 4);
        assert_eq!(a.window(), 1024);
        // Every answer now takes 60 ms, with 40 in flight: limited to 28, then lower.
        let t = feed(&mut a, t, 110 * MS, 60 * MS, 40);
        assert_eq!(a.window(), 28);
        assert!(!a.admits(28));
        // The queue lasts; in flight is what the limit lets through.
        let mut t = t;
        for _ in 0..20 {
            let in_flight = a.window();
            t = feed(&mut a, t, 50 * MS, 60 * MS, in_flight);
        }
        assert_eq!(
            a.window(),
            WINDOW_MIN,
            "a lasting queue takes it to the floor"
        );
        assert!(a.admits(WINDOW_MIN - 1));
        // The queue drains: the limit grows back to the outbox size.
        feed(&mut a, t, 5000 * MS, 2 * MS, 2);
        assert_eq!(a.window(), 1024);
    }

    #[test]
    fn a_burst_of_slow_answers_within_an_interval_does_not_count() {
        let mut a = Admission::new(1024, QUEUE_TARGET);
        let t0 = Instant::now();
        let mut t = feed(&mut a, t0, 300 * MS, 2 * MS, 4);
        // Ten intervals, each with a few slow answers among quick ones.
        for _ in 0..10 {
            t = feed(&mut a, t, 80 * MS, 80 * MS, 60);
            t = feed(&mut a, t, 30 * MS, 2 * MS, 4);
        }
        assert_eq!(a.window(), 1024);
    }

    #[test]
    fn answers_slower_only_by_the_commit_delay_are_not_a_queue() {
        // A sender whose recipients went offline: every answer waits for a commit (10 ms
        // delay plus a slow 4 ms fsync) although its base came from online recipients.
        let mut a = Admission::new(1024, QUEUE_TARGET);
        let t0 = Instant::now();
        let t = feed(&mut a, t0, 300 * MS, MS, 2);
        feed(&mut a, t, 2000 * MS, 15 * MS, 20);
        assert_eq!(a.window(), 1024);
    }

    #[test]
    fn a_new_connection_measures_its_base_again() {
        // A player moving from Wi-Fi (5 ms) to mobile (120 ms) is not overloaded.
        let mut a = Admission::new(1024, QUEUE_TARGET);
        let t0 = Instant::now();
        let t = feed(&mut a, t0, 300 * MS, 5 * MS, 2);
        a.handle_connected();
        feed(&mut a, t, 2000 * MS, 120 * MS, 2);
        assert_eq!(a.window(), 1024);
    }
}
