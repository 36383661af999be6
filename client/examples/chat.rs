//! A tiny terminal chat: sends each line of stdin to one peer and prints what arrives.
//!
//! ```text
//! quichat dev                      # in another terminal: core + edge + dev certificates
//! export QUICHAT_TOKEN=$(quichat token alice)
//! cargo run -p client --example chat -- 127.0.0.1:4433 quichat-data/ca.pem bob
//! ```
//!
//! Arguments: `<edge address> <CA certificate PEM> <peer user id> [token]`; the token
//! may instead come from `QUICHAT_TOKEN`. The server name defaults to `localhost`
//! (`QUICHAT_SERVER_NAME` overrides it) and the device id is kept in `.quichat-device`
//! (`QUICHAT_DEVICE_FILE`). `RUST_LOG=client=debug` shows the library's logs.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use client::{Client, ClientConfig, Event, UserId, device_id_from_file, load_roots};
use tokio::sync::mpsc;

const USAGE: &str =
    "usage: chat <edge address> <ca.pem> <peer user id> [token]  (or set QUICHAT_TOKEN)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let mut args = std::env::args().skip(1);
    let edge: SocketAddr = args
        .next()
        .context(USAGE)?
        .parse()
        .context("edge address")?;
    let ca = PathBuf::from(args.next().context(USAGE)?);
    let peer: UserId = args
        .next()
        .context(USAGE)?
        .parse()
        .context("peer user id")?;
    let token = match args.next() {
        Some(token) => token,
        None => std::env::var("QUICHAT_TOKEN").context(USAGE)?,
    };
    let server_name = std::env::var("QUICHAT_SERVER_NAME").unwrap_or_else(|_| "localhost".into());
    let device_file =
        std::env::var("QUICHAT_DEVICE_FILE").unwrap_or_else(|_| ".quichat-device".into());

    let roots = load_roots(&ca)?;
    let device = device_id_from_file(device_file.as_ref())?;
    let config = ClientConfig::new(edge, server_name, roots, token, device);
    let (client, mut events) = Client::connect(config).await?;
    println!(
        "connected as {} ({}); type a line to send it to {peer}",
        client.user(),
        client.name()
    );

    // Stdin is read on a plain thread; a small bounded queue hands lines over (the
    // thread waits while it is full).
    let (lines_tx, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });

    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break }; // end of input
                if line.is_empty() {
                    continue;
                }
                match client.queue(&peer, line).await {
                    // Wait for the answer on the side, so typing is never blocked.
                    Ok(pending) => {
                        tokio::spawn(async move {
                            match pending.accepted().await {
                                Ok(accepted) => println!("  ✓ safe (#{})", accepted.id.0),
                                Err(e) => println!("  ✗ not sent: {e}"),
                            }
                        });
                    }
                    Err(e) => println!("  ✗ not sent: {e}"),
                }
            }
            event = events.next() => {
                let Some(event) = event else { break };
                match event {
                    Event::Message(m) => println!("{}: {}", m.from_name, m.text),
                    Event::Connected { session } => println!("* connected (session {})", session.0),
                    Event::Synced => println!("* up to date"),
                    Event::Disconnected { code, reason } => println!("* disconnected: {reason} ({code:?})"),
                    Event::Reconnecting { attempt, delay } => println!("* reconnecting in {delay:?} (attempt {attempt})"),
                    Event::Error(e) => println!("* {e}"),
                    other => println!("* {other:?}"),
                }
            }
        }
    }
    client.close().await;
    Ok(())
}
