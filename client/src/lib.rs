//! The quichat client library: what a game links to chat.
//!
//! A [`Client`] is one user on one device, connected over QUIC to an edge relay. It
//! handles the hard parts — reconnecting, re-sending what the server had not accepted,
//! acknowledging deliveries, and showing each message once — so the game sees a plain
//! stream of [`Event`]s and a `send` that tells it when a message is safe.
//!
//! # Connect
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use client::{Client, ClientConfig, device_id_from_file, load_roots};
//!
//! let roots = load_roots(Path::new("quichat-data/ca.pem"))?;
//! // Keep the device id somewhere that survives restarts: the server keeps a delivery
//! // cursor per device.
//! let device = device_id_from_file(Path::new("save/quichat-device"))?;
//! let token = std::env::var("QUICHAT_TOKEN")?; // minted by your game's backend
//! let config = ClientConfig::new("127.0.0.1:4433".parse()?, "localhost", roots, token, device);
//! let (client, mut events) = Client::connect(config).await?;
//! println!("connected as {}", client.user());
//! # Ok(()) }
//! ```
//!
//! `connect` returns once the edge has verified the token and said `Welcome`; a failure
//! there (bad token, unreachable edge) is returned as a [`ConnectError`] with the edge's
//! code, not retried. From then on a driver task (on your tokio runtime) keeps the
//! connection.
//!
//! # Send
//!
//! ```no_run
//! # async fn demo(client: client::Client) -> Result<(), client::Error> {
//! let bob: protocol::UserId = "bob".parse().expect("a valid user id");
//! let accepted = client.send(&bob, "gg wp").await?;
//! println!("safe as message {}", accepted.id.0);
//! # Ok(()) }
//! ```
//!
//! [`Client::send`] resolves when the server answers:
//!
//! - **`Ok(Accepted)`** means the message is **safe**: it is on the core's disk, or every
//!   device of the recipient the server knows (seen within the TTL) has acknowledged it. It will be delivered (or has
//!   been) even if the sender's game, the edge or the core crashes now.
//! - **`Err(SendError::Local(_))`**: refused before sending (empty, larger than the
//!   edge's limit, outbox full). Nothing was sent.
//! - **`Err(SendError::Rejected { code, .. })`**: the server refused it (`Blocked`,
//!   `InboxFull`, `RateLimited`, …) and will not deliver it; or `code` is `Timeout`
//!   because [`DeliveryConfig::send_timeout`] passed — the library stopped waiting, but
//!   the message may still arrive.
//!
//! `send` works while disconnected: the message waits in the **outbox** and goes out
//! when the connection is back. To send without waiting for each answer, use
//! [`Client::queue`] and await [`PendingSend::accepted`] later. Messages to one
//! recipient arrive in the order they were sent.
//!
//! # Receive
//!
//! ```no_run
//! # async fn demo(mut events: client::Events) {
//! use client::Event;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(m) => println!("{}: {}", m.from_name, m.text),
//!         Event::Disconnected { code, reason } => eprintln!("offline: {code:?} {reason}"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! Each message is shown **once**, in order per sender, however often it crossed the
//! wire (re-sends and replays are recognised by the sender's key). From a game loop,
//! poll with [`Events::try_next`] instead of awaiting.
//!
//! The event queue is bounded ([`ClientConfig::event_queue`]). **When the game stops
//! draining events, the client stops reading deliveries**: QUIC flow control pushes back
//! to the edge, which may then disconnect the client as a slow consumer
//! (`SlowConsumer`). Nothing is lost — the client reconnects and the server replays
//! what was not acknowledged — but drain events promptly, and from somewhere that does
//! not itself wait on `send`.
//!
//! # Acknowledgements
//!
//! A delivered message stays stored on the server until this device acknowledges it.
//! By default ([`DeliveryConfig::auto_ack`]) a message is acknowledged when the game takes
//! it from [`Events`]. A game that must save messages first turns `auto_ack` off and
//! calls [`Client::ack`] after saving; until then the server keeps the message and
//! replays it after a reconnect (the client hides the repeat). After a restart of the
//! game, messages not acknowledged are shown again: de-duplication lives in memory.
//!
//! # Reconnects
//!
//! Any connection loss starts a reconnect loop: [`Event::Disconnected`], then
//! [`Event::Reconnecting`] with the wait (exponential backoff with jitter, see
//! [`Backoff`]), then [`Event::Connected`] — or [`Event::Error`] and another attempt.
//! The outbox survives: everything not yet `Accepted` is re-sent, oldest first and before
//! anything newer, with its original key, so the recipient shows it once.
//!
//! Some errors cannot heal by retrying: `Unauthenticated`, `TokenExpired`,
//! `UnsupportedVersion`, `Forbidden`, and `SessionReplaced` (this device connected again
//! elsewhere). After one, the client emits `Disconnected` with that code and stops
//! reconnecting; fetch a fresh token and call [`Client::set_token`] to resume.
//!
//! # Errors
//!
//! [`ConnectError`] (connecting) and [`SendError`] (one message) each carry a
//! [`protocol::ErrorCode`] where there is one (`code()`); [`Error`] unites them for `?`.
//! The codes and their meanings are listed once, in [`protocol::ErrorCode`].
//!
//! # Limits
//!
//! - Text: valid UTF-8, 1 byte up to the edge's limit (4 KiB by default; announced in
//!   `Welcome`), checked before sending.
//! - Outbox: [`DeliveryConfig::outbox_max`] messages awaiting an answer (1024); beyond,
//!   `send` fails with `OutboxFull` at once.
//! - Admission (opt-in, [`DeliveryConfig::admission`]): when the server's answers show a
//!   standing queue (the quickest answer in 100 ms is slower than the quickest on this
//!   connection by more than the configured time), a client with several messages
//!   unanswered may have fewer in flight (never fewer than 4), and `send` beyond that
//!   fails with `Busy` (code `Unavailable`) at once: an overloaded server tells the
//!   sender instead of queueing its messages behind the backlog. For automated senders;
//!   off by default.
//! - Events: [`ClientConfig::event_queue`] (1024), with the backpressure above.
//! - Rate: the edge allows `send_per_second` with a burst; beyond, sends are `Rejected`
//!   with `RateLimited`.
//!
//! # Runtime
//!
//! The client spawns its tasks on the tokio runtime it is connected from (one driver
//! and one writer per client, plus quinn's connection and endpoint tasks). A message
//! passes through several of them, and on a multi-threaded runtime each hand-off may
//! wake another worker thread. If the game has no other use for a multi-threaded
//! runtime, run the client on a runtime with one worker (or the current-thread
//! scheduler on a thread of its own): measured with `quichat-load` (100 clients in one
//! process, 5,000 msg/s), the clients' CPU per message was 86 µs on one worker against
//! 114 µs on two.
//!
//! Most of a message's path through the client is quinn's, rustls' and tokio's code. A
//! game built with link-time optimisation (`lto = "fat"` or `"thin"` and
//! `codegen-units = 1` in its release profile) lets the compiler inline across those
//! crates: the same benchmark's clients used 6–16 % less CPU per message.
//!
//! # Layout
//!
//! - [`config`]: [`ClientConfig`], [`Backoff`], [`load_roots`], [`device_id_from_file`].
//! - `handle`: [`Client`] and [`PendingSend`], the game's side.
//! - `events`: [`Event`] and [`Events`].
//! - `driver`: the task that owns the connection and the sans-IO
//!   [`protocol::delivery::Delivery`] (outbox, acknowledgements, de-duplication).
//! - `link`: one connection, from dial to ready.
//! - `inbound`: the edge's streams on that connection, read by the driver itself.
//! - [`error`]: [`ConnectError`], [`SendError`], [`Error`].

pub mod config;
mod driver;
pub mod error;
mod events;
mod handle;
mod inbound;
mod link;
mod shared;

pub use config::{Backoff, ClientConfig, device_id_from_file, load_roots};
pub use error::{ConnectError, Error, SendError};
pub use events::{Event, Events};
pub use handle::{Client, PendingSend};
pub use protocol::delivery::DeliveryConfig;
pub use protocol::frames::client::Accepted;
pub use protocol::{DeviceId, ErrorCode, Message, MessageId, SenderKey, SessionId, UserId};
pub use rustls_pki_types::CertificateDer;
pub use transport::CopyPolicy;
pub use transport::tls::TlsError;
