//! `quichat dev`: a core and an edge in one process, everything defaulted.
//!
//! The edge still reaches the core over QUIC with mutual TLS, exactly as in production;
//! only the certificates (a dev CA), the token secret and the addresses are made up and
//! written to the data directory, where the client commands find them with `--dev`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use edge_relay::config::{AuthConfig, CoreConfig as EdgeCoreLink, EdgeTlsPaths};

use crate::args::DevArgs;
use crate::devdir::DevDir;

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<()> {
    let dev = DevDir::new(&args.data);
    let pki = transport::DevPki::ensure(&dev.root).context("creating the dev certificates")?;
    dev.ensure_token_secret()?;

    let core_config = server::CoreConfig {
        // The core is only for this process's edge: loopback, any free port.
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dev.root.clone(),
        db_path: Some(dev.db_file()),
        cert: Some(pki.core_cert.clone()),
        key: Some(pki.core_key.clone()),
        edge_ca: Some(pki.ca_cert.clone()),
        commit_delay_ms: args.commit_delay_ms,
        edge_linger_us: args.link_linger_us,
        ..server::CoreConfig::default()
    };
    let core = server::Core::start(core_config)
        .await
        .context("starting the core")?;

    let mut edge_config = edge_relay::EdgeConfig::new(
        EdgeTlsPaths::from_dev_pki(&pki),
        EdgeCoreLink::new(
            core.local_addr().to_string(),
            transport::pki::DEV_SERVER_NAME,
        ),
        AuthConfig::Hs256SecretFile(dev.token_secret_file()),
    );
    edge_config.core.linger_us = args.link_linger_us;
    edge_config.listen = args.listen;
    edge_config.name = "dev-edge".into();
    edge_config.send_per_second = args.send_per_second;
    edge_config.send_burst = args.send_burst;
    let edge = match edge_relay::Edge::start(edge_config).await {
        Ok(edge) => edge,
        Err(e) => {
            core.shutdown().await;
            return Err(e).context(format!("starting the edge on {}", args.listen));
        }
    };
    let edge_addr = edge.local_addr();
    std::fs::write(dev.edge_addr_file(), format!("{edge_addr}\n"))
        .with_context(|| format!("writing {}", dev.edge_addr_file().display()))?;

    let dir = dev.root.display();
    // Print the commands with the binary actually running (e.g. `target/release/quichat`
    // under `cargo run`), so a newcomer can paste them as they are.
    let me = std::env::args().next().unwrap_or_else(|| "quichat".into());
    println!("quichat dev is running.");
    println!(
        "  edge (game clients): {edge_addr}   core (edges only): {}",
        core.local_addr()
    );
    println!("  data, certificates and token secret: {dir}");
    println!();
    println!("Try it, in two more terminals:");
    println!("  {me} listen --dev {dir} --user bob");
    println!("  {me} send --dev {dir} --from alice --to bob \"gg, rematch?\"");
    println!();
    println!(
        "From your own code: connect to {edge_addr}, trust {}, server name \"{}\",",
        pki.ca_cert.display(),
        transport::pki::DEV_SERVER_NAME
    );
    println!(
        "with a token from `{me} token --secret-file {} --user ID`.",
        dev.token_secret_file().display()
    );
    println!("Stop with Ctrl-C.");

    crate::shutdown_signal().await;
    println!("shutting down");
    edge.shutdown().await;
    core.shutdown().await;
    Ok(())
}
