//! quinn's CUBIC with a floor under its congestion window.
//!
//! A chat connection carries a few kilobytes per round trip. CUBIC halves its window on
//! every loss it sees, down to two packets, on the assumption that loss means congestion.
//! On a lossy Wi-Fi or mobile link loss is mostly noise: two percent of packets lost
//! would hold a chat connection at two packets per round trip, and every message beyond
//! that waits in quinn's queue for acknowledgements — latency added to every message, not
//! just the lost ones. With a floor of a few dozen kilobytes a connection still backs off
//! like CUBIC when it really fills a link (above the floor nothing changes), but chat-sized
//! traffic is never held back by random loss. The floor is per connection and small
//! (TCP's initial window is ten packets, about 14 KB), so it cannot flood a network.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

/// Builds CUBIC controllers whose window never drops below a floor.
#[derive(Debug)]
pub struct FlooredCubic {
    cubic: Arc<CubicConfig>,
    floor_bytes: u64,
}

impl FlooredCubic {
    /// CUBIC with its default settings, never below `floor_bytes` in flight.
    pub fn new(floor_bytes: u64) -> Self {
        Self {
            cubic: Arc::new(CubicConfig::default()),
            floor_bytes,
        }
    }
}

impl ControllerFactory for FlooredCubic {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Floored {
            inner: self.cubic.clone().build(now, current_mtu),
            floor_bytes: self.floor_bytes,
        })
    }
}

/// A controller whose window never drops below a floor.
struct Floored {
    inner: Box<dyn Controller>,
    floor_bytes: u64,
}

impl Controller for Floored {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor_bytes)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Floored {
            inner: self.inner.clone_box(),
            floor_bytes: self.floor_bytes,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor_bytes)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Random loss must not shrink a chat connection below the floor, while above it the
    // controller is CUBIC's own.
    #[test]
    fn losses_never_take_the_window_below_the_floor() {
        let now = Instant::now();
        let floor = 32 * 1024;
        let mut floored = Arc::new(FlooredCubic::new(floor)).build(now, 1200);
        let mut plain = Arc::new(CubicConfig::default()).build(now, 1200);
        assert_eq!(floored.window(), plain.window().max(floor));
        for i in 1..=10u64 {
            let at = now + std::time::Duration::from_millis(100 * i);
            floored.on_congestion_event(at, at, false, 1200);
            plain.on_congestion_event(at, at, false, 1200);
        }
        assert!(
            plain.window() < floor,
            "CUBIC alone backs off below the floor"
        );
        assert_eq!(floored.window(), floor);
        assert_eq!(floored.metrics().congestion_window, floor);
    }
}
