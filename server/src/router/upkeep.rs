//! Periodic work, done when `next_expiry` comes (the driver wakes for it through
//! `Router::poll_timeout`).
//!
//! - **Expiry**: at most once per `expire_interval`, the accumulating batch carries
//!   `expire_before_ms = now`, so the store deletes expired messages and forgets devices
//!   not seen within the TTL.
//! - **Device ages**: the router forgets devices by the same rule, so its view of "every
//!   known device" does not keep messages on disk that the store would release; and it
//!   refreshes the last-seen time of devices attached for a long time, so the store does
//!   not forget a device that is online.
//! - **Idle users** without sessions or pending messages are dropped from memory once
//!   their device records are durable; the store has everything to reload them.

use super::{Now, Router};

impl Router {
    pub(super) fn upkeep(&mut self, now: Now) {
        if self.next_expiry.is_some_and(|at| now.instant < at) {
            return;
        }
        self.next_expiry = Some(now.instant + self.config.expire_interval);
        self.pipeline.expire_before(now.unix_ms);

        // Refresh long sessions a few times per TTL; cheap, and never lets an online
        // device age out.
        let refresh_ms = (self.config.ttl_ms / 4).max(1);
        let mut refreshed = Vec::new();
        for session in self.sessions.values_mut() {
            if now.unix_ms.saturating_sub(session.seen_recorded_ms) >= refresh_ms {
                session.seen_recorded_ms = now.unix_ms;
                refreshed.push((session.user.clone(), session.device));
            }
        }
        let seq = self.pipeline.accumulating_seq();
        for (user, device) in refreshed {
            self.pipeline.device_seen(&user, device, now.unix_ms);
            if let Some(entry) = self.users.get_mut(&user) {
                entry.devices.insert(device, now.unix_ms);
                entry.dirty_seq = seq;
            }
        }

        let cutoff = now.unix_ms.saturating_sub(self.config.ttl_ms);
        let committed = self.pipeline.committed_seq();
        let idle = self.config.user_idle;
        self.users.retain(|_, entry| {
            entry.devices.retain(|_, seen| *seen >= cutoff);
            let forgettable = entry.sessions.is_empty()
                && entry.pending.is_empty()
                && entry.dirty_seq <= committed
                && now.instant.saturating_duration_since(entry.last_touch) >= idle;
            !forgettable
        });
    }
}
