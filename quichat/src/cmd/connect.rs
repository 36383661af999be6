//! Turns the client commands' connection flags into a `client::ClientConfig`.
//!
//! With `--dev DIR` everything comes from the dev directory and a token is minted for the
//! named user; otherwise `--edge`, `--cert` and `--token` say it all.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use protocol::{DeviceId, UserId};

use crate::args::ConnectArgs;
use crate::devdir::DevDir;

/// How long a dev token minted by the CLI lives.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Builds the client configuration for `user` (required with `--dev`).
pub fn client_config(args: &ConnectArgs, user: Option<&str>) -> Result<client::ClientConfig> {
    let (edge, roots, token, device) = match &args.dev {
        Some(dir) => {
            let dev = DevDir::new(dir);
            let Some(user) = user else {
                bail!("with --dev, name the user (--from for send, --user for listen)");
            };
            let user = UserId::new(user).context("user id")?;
            let secret =
                crate::devdir::read_secret(&dev.token_secret_file()).with_context(|| {
                    format!(
                        "no dev token secret in {} (start `quichat dev` first)",
                        dir.display()
                    )
                })?;
            let token = edge_relay::auth::mint_hs256(&secret, &user, None, DEV_TOKEN_TTL)?;
            let device = match args.device {
                Some(id) => DeviceId(id),
                None => dev.device_for(&user)?,
            };
            let roots = transport::tls::load_certs(&dev.ca_cert())?;
            (dev.edge_addr()?, roots, token, device)
        }
        None => {
            let (Some(edge), Some(cert), Some(token)) = (args.edge, &args.cert, &args.token) else {
                bail!("give either --dev DIR, or all of --edge, --cert and --token");
            };
            if user.is_some() {
                bail!("--from/--user only go with --dev; otherwise the token names the user");
            }
            let device = match args.device {
                Some(id) => DeviceId(id),
                None => client::device_id_from_file(&home_device_file())
                    .context("keeping this machine's device id")?,
            };
            (
                edge,
                transport::tls::load_certs(cert)?,
                token.clone(),
                device,
            )
        }
    };
    Ok(client::ClientConfig::new(
        edge,
        args.server_name.clone(),
        roots,
        token,
        device,
    ))
}

fn home_device_file() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".quichat-device")
}
