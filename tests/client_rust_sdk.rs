//! matrix-rust-sdk, the engine of Element X, drives a whole session against
//! the real binary (tests/clients/rust_sdk, a Cargo project of its own so the
//! server's dependency tree stays small and tokio-free): password login,
//! Simplified Sliding Sync (MSC4186) through `SyncService`, the live room list
//! of `RoomListService` with an invite, a `Timeline` that sends, receives and
//! paginates back, unread counts and read receipts, an encrypted room whose
//! keys travel as to-device messages, cross-signing with password UIA, and
//! key backup; then the node restarts under the running clients (its sliding
//! sync connections are in memory) and the clients carry on. The client
//! prints one line per step and exits non-zero on the first failure.
//!
//! The client is built by this test with the `cargo` that runs it, into
//! `$HEARTH_TEST_CLIENTS_TARGET` (default `~/.cache/hearth/test-clients`),
//! outside the clone so that a cached build survives fresh clones; a build
//! error fails the test.
//!
//! Spec: the client-server API as a whole,
//! <https://spec.matrix.org/v1.16/client-server-api/>; sliding sync is
//! MSC4186, <https://github.com/matrix-org/matrix-spec-proposals/pull/4186>.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Node, PASSWORD};

/// How long the client may run once built.
const CLIENT_DEADLINE: Duration = Duration::from_secs(150);

/// How many steps the client runs (each prints an `ok` line).
const STEPS: usize = 23;

/// Where the client is built: outside the clone, kept between runs.
fn target_dir() -> PathBuf {
    common::test_clients_dir()
}

/// Builds the client and returns the path of its binary; a build error
/// fails the test with the compiler's output.
fn build_client() -> PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/rust_sdk/Cargo.toml");
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let start = Instant::now();
    let output = Command::new(cargo)
        .args(["build", "--locked", "--manifest-path", manifest, "--target-dir"])
        .arg(&target)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run cargo to build the sdk client");
    assert!(
        output.status.success(),
        "the matrix-rust-sdk client does not build ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("sdk client built in {:?}", start.elapsed());
    target.join("debug/hearth-sdk-client")
}

/// Runs `binary` with `args`; returns whether it exited 0, and its stdout
/// and stderr. Each stdout line goes to `on_line`, whose answer (if any) is
/// written to the client's stdin. Killed (and failed) at [`CLIENT_DEADLINE`].
fn run_client(
    binary: &PathBuf,
    args: &[&str],
    mut on_line: impl FnMut(&str) -> Option<String>,
) -> (bool, String, String) {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the sdk client");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut stdout = String::new();
    let success = loop {
        match received.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(answer) = on_line(&line) {
                    let _ = stdin.write_all(answer.as_bytes());
                    let _ = stdin.flush();
                }
                stdout.push_str(&line);
                stdout.push('\n');
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            // Whatever the client printed last is read before judging.
            while let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            break status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            stdout.push_str(&format!("FAIL the client still ran after {CLIENT_DEADLINE:?}\n"));
            break false;
        }
    };
    (success, stdout, err.join().unwrap())
}

#[test]
fn matrix_rust_sdk_runs_an_element_x_session() {
    let binary = build_client();
    let mut node = Node::start();
    node.register("alice");
    node.register("bob");
    let start = Instant::now();
    let url = node.http.clone();
    let (success, stdout, stderr) =
        run_client(&binary, &[&url, "alice", "bob", PASSWORD, "--restart"], |line| {
            (line == "waiting for the node to restart").then(|| {
                node.restart();
                "restarted\n".to_string()
            })
        });
    eprintln!("sdk client ran in {:?}", start.elapsed());
    let log = node.log_text();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    let stderr_tail: Vec<&str> = stderr.lines().rev().take(200).collect();
    assert!(
        success && stdout.lines().last() == Some("every step passed"),
        "the matrix-rust-sdk session failed:\n{stdout}\n--- client stderr (tail) ---\n{}\n--- node log (tail) ---\n{}",
        stderr_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // Every step printed its line: a step skipped by mistake fails too.
    let steps = stdout.lines().filter(|line| line.starts_with("ok ")).count();
    assert_eq!(steps, STEPS, "{steps} steps passed, not {STEPS}:\n{stdout}");
    print!("{stdout}");
}
