//! `quichat listen`: print messages as JSON lines, acknowledging each after printing.
//!
//! A message is acknowledged only after its line is written and flushed, so a listener
//! killed mid-way gets the unprinted messages again on its next run.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use client::Event;

use crate::args::ListenArgs;

/// Runs the command.
pub async fn run(args: ListenArgs) -> Result<()> {
    let mut config = crate::cmd::connect::client_config(&args.connect, args.user.as_deref())?;
    config.delivery.auto_ack = false;
    if !(args.timeout.is_finite() && args.timeout >= 0.0) {
        bail!("--timeout must be a number of seconds (0 waits forever)");
    }
    let deadline = (args.timeout > 0.0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs_f64(args.timeout));
    let (client, mut events) = client::Client::connect(config).await?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let result: Result<()> = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(next) => next,
                Err(_) => break Ok(()),
            },
            None => events.next().await,
        };
        match next {
            Some(Event::Message(m)) => {
                let line = serde_json::json!({
                    "from": m.from.as_str(),
                    "from_name": m.from_name,
                    "to": m.to.as_str(),
                    "text": m.text,
                    "id": m.id.0,
                    "sent_at_ms": m.sent_at_ms,
                });
                let mut out = stdout.lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .context("writing to standard output")?;
                client.ack(m.id);
                printed += 1;
            }
            Some(Event::Disconnected {
                code: Some(code),
                reason,
            }) if code.closes_connection() && is_permanent(code) => {
                break Err(anyhow::anyhow!("disconnected: {code}: {reason}"));
            }
            Some(other) => tracing::debug!(event = ?other, "event"),
            None => break Ok(()),
        }
    };
    // Closing flushes the acknowledgements of everything printed.
    client.close().await;
    result
}

/// Errors reconnecting cannot heal.
fn is_permanent(code: protocol::ErrorCode) -> bool {
    use protocol::ErrorCode::*;
    matches!(
        code,
        Unauthenticated | TokenExpired | UnsupportedVersion | Forbidden
    )
}
