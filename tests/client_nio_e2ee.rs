//! matrix-nio with end-to-end encryption (vodozemac) against the real binary:
//! two users exchange messages in an encrypted room and decrypt them
//! (tests/clients/nio_e2ee.py). python3 and matrix-nio[e2e] must be installed
//! (`python3 -m pip install 'matrix-nio[e2e]==0.26.0'`); without them this
//! test fails, it does not skip.

mod common;

use std::process::Command;

use common::Node;

#[test]
fn matrix_nio_encrypts_and_decrypts_through_the_server() {
    let python = Command::new("python3")
        .args(["-c", "from nio.crypto import ENCRYPTION_ENABLED; assert ENCRYPTION_ENABLED"])
        .output();
    match python {
        Err(error) => panic!("python3 is needed for this test and cannot be run: {error}"),
        Ok(output) if !output.status.success() => panic!(
            "matrix-nio[e2e] is needed for this test: python3 -m pip install 'matrix-nio[e2e]==0.26.0'\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => {}
    }
    let node = Node::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nio_e2ee.py");
    let output = Command::new("python3").arg(script).arg(&node.http).output().expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = node.log_text();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        output.status.success(),
        "the nio e2ee session failed ({}):\n{stdout}\n{stderr}\n--- node log (tail) ---\n{}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
}
