//! matrix-nio, a client library nobody here wrote, drives a whole session
//! against the real binary (tests/clients/nio_session.py). python3 and
//! matrix-nio must be installed (`python3 -m pip install 'matrix-nio==0.26.0'`);
//! without them this test fails, it does not skip.

mod common;

use std::process::Command;

use common::Node;

#[test]
fn matrix_nio_runs_a_full_session() {
    let python = Command::new("python3").args(["-c", "import nio"]).output();
    match python {
        Err(error) => panic!("python3 is needed for this test and cannot be run: {error}"),
        Ok(output) if !output.status.success() => panic!(
            "matrix-nio is needed for this test: python3 -m pip install 'matrix-nio==0.26.0'\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => {}
    }
    let node = Node::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nio_session.py");
    let output = Command::new("python3").arg(script).arg(&node.http).output().expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the nio session failed ({}):\n{stdout}\n{stderr}\n--- node log (tail) ---\n{}",
        output.status,
        node.log_text()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
}
