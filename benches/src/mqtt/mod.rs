//! Everything `quichat-vs-mosquitto` needs: quichat beside mosquitto, the MQTT broker
//! many games use, on the same workload in one run.
//!
//! # Layout
//!
//! - [`broker`]: [`Mosquitto`], the broker started on loopback from a config written for
//!   the run (TLS and plain TCP listeners, persistence, limits lifted), killed on drop.
//! - [`client`]: rumqttc options for a persistent session; TLS through rustls with ring.
//! - [`load`]: the online workload over MQTT. It is `quichat-load`'s, built from the
//!   same pieces ([`crate::load`]: pacer thread, message text, tallies, CPU meter,
//!   summary), with rumqttc clients instead of quichat's.
//! - [`drain`]: the offline drain over MQTT.
//! - [`quichat_side`]: the quichat side in child processes: `quichat-load` (single runs
//!   and its `--sweep`), and a `quichat dev` child for the drain.
//! - [`summary`]: [`Row`] (the compared figures of one online run, read from the same
//!   JSON summary for both systems) and [`DrainSummary`].
//! - [`report`]: ratios quichat/mosquitto and the tables printed to stderr.
//!
//! The rate sweep is [`crate::load::sweep::Sweep`] for every system: `quichat-load
//! --sweep` runs it for quichat, this tool with the same plan for mosquitto.
//!
//! # What is compared, and the one asymmetry
//!
//! mosquitto's QoS 1 `PUBACK` means the broker holds the message in memory: with
//! `persistence true` it writes to disk only every `autosave_interval` (1800 s by
//! default) and at shutdown. quichat's `Accepted` means the message is fsync'd in the
//! core's store or in the recipient's hands. Every comparison carries this note.

pub mod broker;
pub mod client;
pub mod drain;
pub mod load;
pub mod quichat_side;
pub mod report;
pub mod summary;

pub use broker::{BrokerOptions, Mosquitto, MqttTransport};
pub use summary::{DrainSummary, Row};

/// A drain stops waiting once no new message came for this long, and reports what is
/// missing (rather than failing after a long timeout).
pub const DRAIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The note printed beside every quichat/mosquitto figure.
pub const DURABILITY_NOTE: &str = "mosquitto's QoS 1 PUBACK does not mean the message is on \
disk (persistence writes only at autosave_interval, default 1800 s, or shutdown); quichat's \
Accepted means fsync'd in the core's store or in the recipient's hands.";
