//! The `quichat` command as people and scripts use it: `quichat dev` as a child process,
//! then `send` and `listen` against it, checking exit codes and the JSON they print.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// How long one client command may run before the test fails.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// A running `quichat dev` on a temporary directory; killed when dropped.
struct Dev {
    _process: ChildGuard,
    dir: tempfile::TempDir,
}

impl Dev {
    async fn start() -> Dev {
        Dev::start_with(&[]).await
    }

    /// `quichat dev` with `extra` flags.
    async fn start_with(extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
        let data = dir.path().join("data");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_quichat"))
            .arg("dev")
            .arg("--data")
            .arg(&data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let process = ChildGuard(child);
        let addr_file = data.join("edge-addr");
        // `quichat dev` writes the file once its edge listens.
        let _edge: SocketAddr = eventually(WAIT, "`quichat dev` to write edge-addr", || {
            std::fs::read_to_string(&addr_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .await;
        Dev {
            _process: process,
            dir,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `quichat ARGS` (with `--dev DATA` after the subcommand), feeding `stdin`.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let data = self.data();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quichat"));
        command
            .arg(args[0])
            .arg("--dev")
            .arg(&data)
            .args(&args[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
            drop(pipe);
        }
        within(
            COMMAND_WAIT,
            &format!("`quichat {}`", args.join(" ")),
            child.wait_with_output(),
        )
        .await
        .unwrap()
    }

    /// `quichat send`, which must succeed; returns its JSON line.
    async fn send(&self, from: &str, to: &str, text: &str) -> serde_json::Value {
        let out = self
            .run(&["send", "--from", from, "--to", to, text], None)
            .await;
        assert_success(&out, "send");
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "send prints one line: {lines:?}");
        lines.into_iter().next().unwrap()
    }

    /// `quichat listen --count N --timeout SECS`, which must succeed; returns its lines.
    async fn listen(&self, user: &str, count: u64, timeout_secs: u64) -> Vec<serde_json::Value> {
        let out = self
            .run(
                &[
                    "listen",
                    "--user",
                    user,
                    "--count",
                    &count.to_string(),
                    "--timeout",
                    &timeout_secs.to_string(),
                ],
                None,
            )
            .await;
        assert_success(&out, "listen");
        json_lines(&out)
    }
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "`quichat {what}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every standard-output line, parsed as JSON (a line that is not JSON fails the test).
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
        })
        .collect()
}

fn texts(lines: &[serde_json::Value]) -> Vec<&str> {
    lines.iter().map(|l| l["text"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_the_id_and_listen_prints_each_message_as_a_json_line() {
    // Scripts and bots drive quichat through these two commands: exit codes and JSON
    // fields are their interface.
    let dev = Dev::start().await;
    let before_ms = now_secs() * 1000;
    let mut ids = Vec::new();
    for text in ["gg", "rematch?", "ünïcödé ✓"] {
        let line = dev.send("alice", "bob", text).await;
        assert_eq!(line["from"], "alice");
        assert_eq!(line["to"], "bob");
        ids.push(line["id"].as_u64().expect("send prints a numeric id"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let lines = dev.listen("bob", 3, 20).await;
    assert_eq!(texts(&lines), ["gg", "rematch?", "ünïcödé ✓"]);
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(line["from"], "alice");
        // Dev tokens carry no display name: the user id stands in.
        assert_eq!(line["from_name"], "alice");
        assert_eq!(line["to"], "bob");
        assert_eq!(line["id"].as_u64(), Some(*id));
        let sent_at = line["sent_at_ms"].as_u64().unwrap();
        assert!(
            sent_at >= before_ms && sent_at <= now_secs() * 1000 + 1000,
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_server_on_one_thread_delivers_online_and_stored_messages_in_order() {
    // `--threads 1` runs the edge and the core on tokio's current-thread scheduler (the
    // load tools' default). Messages to an offline user are stored and replayed; then an
    // online listener receives the next one while it waits.
    let dev = Dev::start_with(&["--threads", "1"]).await;
    for text in ["one", "two", "three"] {
        dev.send("alice", "bob", text).await;
    }
    let lines = dev.listen("bob", 3, 20).await;
    assert_eq!(texts(&lines), ["one", "two", "three"]);

    let listener = dev.listen("bob", 1, 20);
    let sender = async {
        // Give the listener time to connect, so this one is delivered online.
        tokio::time::sleep(Duration::from_millis(500)).await;
        dev.send("alice", "bob", "four").await
    };
    let (lines, _) = tokio::join!(listener, sender);
    assert_eq!(texts(&lines), ["four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reads_the_text_from_standard_input_with_a_dash() {
    // `echo "…" | quichat send … -` is how scripts pass text that is awkward as an
    // argument; the trailing newline from `echo` is not part of the message.
    let dev = Dev::start().await;
    let out = dev
        .run(
            &["send", "--from", "alice", "--to", "bob", "-"],
            Some("from stdin, with spaces\n"),
        )
        .await;
    assert_success(&out, "send -");
    let lines = dev.listen("bob", 1, 20).await;
    assert_eq!(texts(&lines), ["from stdin, with spaces"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_of_an_oversized_text_fails_with_the_reason_on_stderr() {
    // A script must learn that its message was not sent, and why, from the exit code.
    let dev = Dev::start().await;
    let text = "y".repeat(protocol::limits::TEXT_BYTES_MAX_DEFAULT + 1);
    let out = dev
        .run(&["send", "--from", "alice", "--to", "bob", &text], None)
        .await;
    assert!(!out.status.success(), "an oversized send must fail");
    assert!(out.stdout.is_empty(), "nothing printed as if sent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&protocol::limits::TEXT_BYTES_MAX_DEFAULT.to_string()),
        "the reason names the limit: {stderr}"
    );
    // Nothing was delivered: the next message is the first bob sees.
    dev.send("alice", "bob", "a normal one").await;
    assert_eq!(texts(&dev.listen("bob", 1, 20).await), ["a normal one"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_with_a_timeout_and_nothing_to_read_exits_cleanly_with_no_output() {
    // Cron-style scripts poll with a timeout; an empty inbox is not an error.
    let dev = Dev::start().await;
    let out = dev
        .run(&["listen", "--user", "nobody", "--timeout", "1"], None)
        .await;
    assert_success(&out, "listen --timeout 1");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_second_listen_does_not_print_messages_the_first_acknowledged() {
    // `listen` acknowledges each message after printing it; the next run must start
    // after them, or a bot would answer the same message twice. Each round's `listen`
    // exits right after its last ack, the case that loses it; rounds make a lost ack
    // (a race) likely to show.
    const ROUNDS: usize = 8;
    let dev = Dev::start().await;
    dev.send("alice", "bob", "first").await;
    dev.send("alice", "bob", "second").await;
    assert_eq!(texts(&dev.listen("bob", 2, 20).await), ["first", "second"]);
    for round in 0..ROUNDS {
        let text = format!("round {round}");
        dev.send("alice", "bob", &text).await;
        assert_eq!(texts(&dev.listen("bob", 1, 20).await), [text.as_str()]);
    }
}
