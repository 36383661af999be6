//! The limits the edge enforces on what clients send, and its internal bounds.
//!
//! Business limits ([`check_text`], [`SendLimiter`]) answer the one message with a
//! `Rejected` frame; the connection stays up. Internal bounds (queue depths, timeouts)
//! are named once here, each with what happens when it is reached.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use protocol::ErrorCode;
use protocol::ids::UserId;

/// How long a new connection has to complete the TLS handshake and send `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued on a client's control stream (answers, `Synced`). Answers to the
/// client's own sends wait for room (back-pressure on that client); answers from the core
/// that find it full close the client as too slow.
pub const CLIENT_CONTROL_QUEUE_FRAMES: usize = 256;
/// Frames queued on the core link's control stream (attach, detach, acks). When full,
/// clients' control readers wait: back-pressure, nothing dropped while the link is up.
pub const CORE_CONTROL_QUEUE_FRAMES: usize = 4096;
/// Frames queued per core lane (submits). When full, the sessions' pumps wait.
pub const CORE_LANE_QUEUE_FRAMES: usize = 4096;
/// Commands (attach, detach, ack) queued for a core link task. When full, the client
/// tasks issuing them wait.
pub const LINK_COMMAND_QUEUE: usize = 4096;
/// Most submits a session's pump takes from its in-flight map per pass.
pub const PUMP_BATCH_MAX: usize = 64;
/// How long the edge waits for the core's TLS handshake and `CoreWelcome`.
pub const CORE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest and longest pause between core reconnect attempts (exponential with jitter).
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);
/// See [`RECONNECT_DELAY_MIN`].
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// How often per-user rate-limit state of users back at full allowance is dropped, so
/// the limiter's memory follows the active users, not every user ever seen.
pub const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Stream priority of control streams (higher is sent first).
pub const CONTROL_PRIORITY: i32 = 1;
/// Stream priority of message lanes.
pub const LANE_PRIORITY: i32 = 0;

/// Why one message was refused: the code and detail of a `Rejected` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub detail: String,
}

/// Checks a message's text against the edge's limit: not empty, at most `max` bytes.
/// (Valid UTF-8 is already guaranteed by the decoder.)
pub fn check_text(text: &str, max: usize) -> Result<(), Refusal> {
    if text.is_empty() {
        return Err(Refusal {
            code: ErrorCode::InvalidText,
            detail: "text is empty".into(),
        });
    }
    if text.len() > max {
        return Err(Refusal {
            code: ErrorCode::TextTooLarge,
            detail: format!(
                "text is {} bytes; this edge accepts at most {max}",
                text.len()
            ),
        });
    }
    Ok(())
}

type KeyedLimiter<C> =
    RateLimiter<UserId, DefaultKeyedStateStore<UserId>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The per-user send rate limit, shared by all of a user's devices on this edge
/// (a generic cell rate algorithm: `per_second` sustained, `burst` at once).
pub struct SendLimiter<C: Clock = DefaultClock> {
    limiter: KeyedLimiter<C>,
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl SendLimiter {
    /// A limiter on the real clock.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> SendLimiter<C> {
    /// A limiter on `clock` (tests pass a fake one).
    pub fn with_clock(per_second: NonZeroU32, burst: NonZeroU32, clock: C) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let limiter = RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock);
        Self {
            limiter,
            per_second,
            burst,
        }
    }

    /// Counts one message by `user`; refuses it if the user is over the limit.
    pub fn check(&self, user: &UserId) -> Result<(), Refusal> {
        self.limiter.check_key(user).map_err(|_| Refusal {
            code: ErrorCode::RateLimited,
            detail: format!(
                "sending faster than {} messages per second (burst {}); retry later",
                self.per_second, self.burst
            ),
        })
    }

    /// Forgets users who are back at their full allowance (their state carries no
    /// information), bounding memory to recently active users.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Users currently tracked.
    pub fn tracked_users(&self) -> usize {
        self.limiter.len()
    }
}

impl<C: Clock> std::fmt::Debug for SendLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendLimiter")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn empty_and_oversized_text_is_refused_with_its_own_code() {
        assert_eq!(check_text("", 10).unwrap_err().code, ErrorCode::InvalidText);
        assert_eq!(
            check_text("12345678901", 10).unwrap_err().code,
            ErrorCode::TextTooLarge
        );
        assert!(
            check_text("1234567890", 10).is_ok(),
            "exactly the limit is allowed"
        );
        // The limit is in bytes, not characters: 4 × 3-byte characters is 12 bytes.
        assert_eq!(
            check_text("€€€€", 10).unwrap_err().code,
            ErrorCode::TextTooLarge
        );
    }

    #[test]
    fn a_user_gets_the_burst_then_the_sustained_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = SendLimiter::with_clock(nz(10), nz(3), clock.clone());
        let alice = user("alice");
        for _ in 0..3 {
            assert!(limiter.check(&alice).is_ok());
        }
        let refusal = limiter.check(&alice).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::RateLimited);
        // One cell comes back every 100 ms at 10/s.
        clock.advance(Duration::from_millis(100));
        assert!(limiter.check(&alice).is_ok());
        assert!(limiter.check(&alice).is_err());
    }

    #[test]
    fn the_limit_is_per_user_not_global() {
        // One user flooding must not cost anyone else their allowance.
        let limiter = SendLimiter::with_clock(nz(1), nz(2), FakeRelativeClock::default());
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(limiter.check(&alice).is_ok() && limiter.check(&alice).is_ok());
        assert!(limiter.check(&alice).is_err());
        assert!(limiter.check(&bob).is_ok() && limiter.check(&bob).is_ok());
    }

    #[test]
    fn sweeping_forgets_users_back_at_full_allowance() {
        let clock = FakeRelativeClock::default();
        let limiter = SendLimiter::with_clock(nz(10), nz(2), clock.clone());
        assert!(limiter.check(&user("alice")).is_ok());
        assert_eq!(limiter.tracked_users(), 1);
        clock.advance(Duration::from_secs(1));
        limiter.sweep();
        assert_eq!(limiter.tracked_users(), 0);
    }
}
