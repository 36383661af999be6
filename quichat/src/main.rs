//! The `quichat` command: glue between the command line and the libraries.
//!
//! `args` parses the command line into plain data; each module under `cmd` turns that
//! into running configuration and calls the library crates (`server`, `edge_relay`,
//! `client`). Nothing here holds chat logic.

mod args;
mod cmd;
mod devdir;

use std::num::NonZeroUsize;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// jemalloc instead of the system allocator, with `--features jemalloc`: see
/// docs/ARCHITECTURE.md, "jemalloc for production builds".
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log at info by default; client commands keep standard error for errors.
    let default_level = match cli.command {
        Command::Dev(_) | Command::Core(_) | Command::Edge(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match build_runtime(cli.threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("quichat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => cmd::dev::run(args).await,
            Command::Core(args) => cmd::core::run(args).await,
            Command::Edge(args) => cmd::edge::run(args).await,
            Command::Token(args) => cmd::token::run(args),
            Command::Send(args) => cmd::send::run(args).await,
            Command::Listen(args) => cmd::listen::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quichat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime for `threads` threads: one thread gets tokio's current-thread
/// scheduler, where a task waking another is a queue push rather than a cross-thread
/// wake-up (measured at 5k msg/s: 111–117 → 73–81 µs of server CPU per message,
/// docs/ARCHITECTURE.md, "Runtime threads are an operator's choice").
fn build_runtime(threads: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    // Named, so an operator's `top -H` (and a profile) tells the server's threads from
    // a game's or a load generator's on the same machine.
    builder.thread_name("quichat-rt").enable_all().build()
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
