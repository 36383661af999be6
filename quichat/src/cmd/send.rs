//! `quichat send`: send one message and wait until it is safe.
//!
//! Exits 0 only once the core answered `Accepted` (the message is on the core's disk or in
//! the recipient's hands), printing one JSON line with its id. Anything else — refused,
//! timed out, could not connect — exits non-zero with the reason on standard error.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use protocol::UserId;

use crate::args::SendArgs;

/// Runs the command.
pub async fn run(args: SendArgs) -> Result<()> {
    let text = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the text from standard input")?;
        // A trailing newline from `echo` is not part of the message.
        if text.ends_with('\n') {
            text.pop();
        }
        text
    } else {
        args.text
    };
    let to = UserId::new(args.to).context("--to")?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let config = crate::cmd::connect::client_config(&args.connect, args.from.as_deref())?;

    let (client, _events) = tokio::time::timeout(timeout, client::Client::connect(config))
        .await
        .map_err(|_| anyhow!("timed out connecting to the edge"))??;
    let result = tokio::time::timeout(timeout, client.send(&to, text)).await;
    let from = client.user().clone();
    client.close().await;
    let accepted = result.map_err(|_| anyhow!("timed out waiting for the server to accept"))??;
    let line = serde_json::json!({
        "id": accepted.id.0,
        "from": from.as_str(),
        "to": to.as_str(),
        "epoch": accepted.key.epoch,
        "counter": accepted.key.counter,
    });
    println!("{line}");
    Ok(())
}
