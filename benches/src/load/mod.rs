//! The pieces of `quichat-load`, the open-loop load generator (`src/bin/quichat-load.rs`
//! is the command line around them).
//!
//! Layout, in the order a run uses them:
//!
//! - [`server`]: what is measured — a `quichat dev` child process started per run
//!   ([`server::DevProcess`]), the in-process [`crate::stack::Stack`], or any edge given
//!   by address; [`server::Running`] hands out client configurations for each.
//! - [`pacer`]: the schedule. One OS thread wakes at each message's intended send time
//!   and hands a [`pacer::Tick`] to that pair's sender task.
//! - `players` (private): the simulated players — a sender task per pair, fed by the
//!   pacer and collecting the server's answers, and a recipient task per pair recording
//!   each delivery.
//! - [`message`]: the text of a load message, which carries its pair, sequence number,
//!   intended and actual send times, so a recipient can time it and detect loss,
//!   duplicates and reordering on its own.
//! - [`tally`]: what recipients saw (latency histograms, duplicates, order) and which
//!   messages senders had accepted ([`tally::SeqSet`]).
//! - [`run`]: one run — connect, send, drain, connect the offline recipients, drain
//!   again — producing a [`summary::Summary`].
//! - [`cpu`]: CPU time of the server processes and of this one, from `/proc`.
//! - [`summary`]: the JSON summary and the table printed for people.
//! - [`sweep`]: the search for the highest rate that still meets a latency target.

pub mod cpu;
pub mod message;
pub mod pacer;
mod players;
pub mod run;
pub mod server;
pub mod summary;
pub mod sweep;
pub mod tally;
