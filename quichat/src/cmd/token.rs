//! `quichat token`: mint a dev/test token signed with an HS256 secret.

use std::time::Duration;

use anyhow::{Context, Result};
use protocol::UserId;

use crate::args::TokenArgs;
use crate::devdir::read_secret;

/// Prints the token on standard output.
pub fn run(args: TokenArgs) -> Result<()> {
    let secret = read_secret(&args.secret_file)?;
    let user = UserId::new(args.user).context("--user")?;
    let token = edge_relay::auth::mint_hs256(
        &secret,
        &user,
        args.name.as_deref(),
        Duration::from_secs(args.ttl),
    )?;
    println!("{token}");
    Ok(())
}
