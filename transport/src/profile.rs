//! Transport settings per kind of link.
//!
//! Every stream a peer may open costs memory up front (flow-control windows), so the limits
//! are set to what quichat actually uses: one control stream and at most
//! [`protocol::limits::LANES_MAX`] lanes each way.

use std::sync::Arc;
use std::time::Duration;

use protocol::limits::LANES_MAX;

use crate::congestion::FlooredCubic;

/// The congestion floor of client links: 32 KiB, about 27 full packets, twice TCP's
/// initial window. Measured (`quichat-hol`, 2 % loss, 50 ms round trip, 500 msg/s on one
/// connection): without a floor, lane copies raised p50 from 55 to 58 ms and left p99 at
/// 138 ms, the connection held at two packets per round trip; with it, p50 53 ms and p99
/// 60 ms.
pub const CLIENT_CONGESTION_FLOOR_BYTES: u32 = 32 * 1024;

/// quinn transport settings for one kind of link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportProfile {
    /// How often to send a keep-alive when idle (so NATs keep the mapping and a dead peer
    /// is noticed).
    pub keep_alive: Duration,
    /// A connection silent for this long is dead.
    pub idle_timeout: Duration,
    /// Unidirectional streams the peer may have open at once (its lanes).
    pub uni_streams: u32,
    /// Bidirectional streams the peer may have open at once (the control stream).
    pub bidi_streams: u32,
    /// Receive window per stream, bytes.
    pub stream_window: u32,
    /// Receive window for the whole connection, bytes.
    pub conn_window: u32,
    /// Bytes in flight the congestion controller allows whatever losses it saw (0: plain
    /// CUBIC, down to two packets). See [`crate::congestion`] for why chat links want one.
    pub congestion_floor: u32,
    /// Whether to probe the path for datagrams larger than QUIC's minimum of 1,200
    /// bytes (quinn's MTU discovery, up to 1,452). Off, every datagram is at most 1,200
    /// bytes, and quinn's per-connection send buffer stays at that size: it keeps the
    /// capacity of the largest datagram batch it ever built, which a larger datagram
    /// doubles to 2,400 bytes.
    pub mtu_discovery: bool,
}

impl TransportProfile {
    /// Client ↔ edge: many connections per edge, modest windows.
    pub fn client_link() -> Self {
        Self {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            uni_streams: u32::from(LANES_MAX),
            bidi_streams: 1,
            stream_window: 256 * 1024,
            conn_window: 1024 * 1024,
            congestion_floor: CLIENT_CONGESTION_FLOOR_BYTES,
            // Chat frames are small, and 1.2 KiB per idle connection matters more at an
            // edge holding tens of thousands (`quichat-conns`: 34.2 → 33.0 KiB per
            // connection); a bulk replay sends about a fifth more datagrams.
            mtu_discovery: false,
        }
    }

    /// Edge ↔ core: few connections carrying many users' traffic, large windows.
    pub fn core_link() -> Self {
        Self {
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            uni_streams: u32::from(LANES_MAX),
            bidi_streams: 1,
            stream_window: 4 * 1024 * 1024,
            conn_window: 32 * 1024 * 1024,
            // A data-centre link: loss there is congestion, so CUBIC as it is.
            congestion_floor: 0,
            // Few connections carrying everyone's traffic: larger datagrams are worth it.
            mtu_discovery: true,
        }
    }

    /// This profile, with the peer allowed only `lanes` unidirectional streams (never
    /// fewer than one) instead of [`LANES_MAX`]. A server that announces how many lanes
    /// it reads should allow no more: quinn sets up the receive state of every stream the
    /// peer may open when the connection starts, and 64 of them cost an idle client
    /// connection about 3 KiB at the edge (heaptrack, `quichat-conns`).
    pub fn with_lanes(mut self, lanes: u8) -> Self {
        self.uni_streams = u32::from(lanes.max(1));
        self
    }

    /// The quinn configuration for this profile.
    pub fn to_quinn(&self) -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        // Durations this short always fit an idle timeout; fall back to quinn's default
        // rather than panic if someone configures an absurd value.
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.max_concurrent_uni_streams(self.uni_streams.into());
        t.max_concurrent_bidi_streams(self.bidi_streams.into());
        t.stream_receive_window(self.stream_window.into());
        t.receive_window(self.conn_window.into());
        t.send_window(u64::from(self.conn_window));
        if self.congestion_floor > 0 {
            t.congestion_controller_factory(Arc::new(FlooredCubic::new(u64::from(
                self.congestion_floor,
            ))));
        }
        if !self.mtu_discovery {
            t.mtu_discovery_config(None);
        }
        Arc::new(t)
    }
}
