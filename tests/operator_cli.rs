//! The operator commands, run while the node serves on the same database:
//! `user add|passwd|deactivate|list`, `token create|list|revoke`, `backup`.

mod common;

use common::{Node, PASSWORD, TempDir, assert_error, write_file};

/// A node whose config file names the server, so that the operator commands
/// (which read the same file) make the same user IDs.
fn node_with_config() -> (Node, TempDir) {
    let dir = TempDir::new("cli-config");
    let path = write_file(&dir.0, "hearth.toml", b"server_name = \"localhost\"\nregistration = \"token\"\n");
    (Node::start_with(&["--config", path.to_str().unwrap()]), dir)
}

fn cli_ok(node: &Node, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, output) = node.cli(args, stdin);
    assert!(ok, "hearth {args:?}: {output}");
    output
}

#[test]
fn users_are_added_changed_listed_and_deactivated() {
    let (node, _config) = node_with_config();
    let output = cli_ok(&node, &["user", "add", "alice", "--password-stdin"], Some("first-password\n"));
    assert!(output.contains("created @alice:localhost"), "{output}");
    let output = cli_ok(&node, &["user", "add", "root", "--admin", "--password-stdin"], Some(PASSWORD));
    assert!(output.contains("(admin)"), "{output}");

    let mut alice = node.client();
    let (status, body) = alice.login("alice", "first-password");
    assert_eq!(status, 200, "{body}");

    // Taken names, bad names and empty passwords are refused.
    let (ok, output) = node.cli(&["user", "add", "alice", "--password-stdin"], Some("x"));
    assert!(!ok, "{output}");
    let (ok, output) = node.cli(&["user", "add", "Bad Name", "--password-stdin"], Some("x"));
    assert!(!ok, "{output}");
    let (ok, output) = node.cli(&["user", "add", "bob", "--password-stdin"], Some("\n"));
    assert!(!ok && output.contains("empty"), "{output}");

    cli_ok(&node, &["user", "passwd", "alice"], Some("second-password\n"));
    assert_error(&node.client().login("alice", "first-password"), 403, "M_FORBIDDEN");
    assert_eq!(node.client().login("alice", "second-password").0, 200);
    // The full user ID works too; unknown users are an error.
    cli_ok(&node, &["user", "passwd", "@alice:localhost"], Some("third-password\n"));
    assert_eq!(node.client().login("alice", "third-password").0, 200);
    let (ok, output) = node.cli(&["user", "passwd", "nobody"], Some("x\n"));
    assert!(!ok && output.contains("no such user"), "{output}");

    let list = cli_ok(&node, &["user", "list"], None);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines, vec!["@alice:localhost", "@root:localhost (admin)"]);

    cli_ok(&node, &["user", "deactivate", "alice"], None);
    // Her open session ends at once, and she cannot log in.
    assert_error(&alice.get("/_matrix/client/v3/account/whoami"), 401, "M_UNKNOWN_TOKEN");
    assert_error(&node.client().login("alice", "third-password"), 403, "M_USER_DEACTIVATED");
    let list = cli_ok(&node, &["user", "list"], None);
    assert!(list.contains("@alice:localhost (deactivated)"), "{list}");
    let (ok, output) = node.cli(&["user", "deactivate", "nobody"], None);
    assert!(!ok && output.contains("no such user"), "{output}");
}

#[test]
fn tokens_are_listed_and_revoked() {
    let (node, _config) = node_with_config();
    let once = cli_ok(&node, &["token", "create", "--uses", "1"], None).trim().to_string();
    let forever = cli_ok(&node, &["token", "create"], None).trim().to_string();
    let weekly = cli_ok(&node, &["token", "create", "--expires", "7d"], None).trim().to_string();
    assert_eq!(once.len(), 16);
    let (ok, output) = node.cli(&["token", "create", "--expires", "soon"], None);
    assert!(!ok, "{output}");

    let list = cli_ok(&node, &["token", "list"], None);
    let line = |token: &str| {
        list.lines()
            .find(|line| line.starts_with(token))
            .unwrap_or_else(|| panic!("{token} missing from {list}"))
            .to_string()
    };
    assert!(line(&once).contains("valid  0/1 used  no expiry"), "{list}");
    assert!(line(&forever).contains("valid  0 used  no expiry"), "{list}");
    assert!(line(&weekly).contains("expires in 604"), "{list}");

    cli_ok(&node, &["token", "revoke", &forever], None);
    let list = cli_ok(&node, &["token", "list"], None);
    assert!(!list.contains(&forever), "{list}");
    let (status, body) = node
        .client()
        .get(&format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={forever}"));
    assert_eq!((status, &body["valid"]), (200, &serde_json::json!(false)), "{body}");
    let (ok, output) = node.cli(&["token", "revoke", &forever], None);
    assert!(!ok && output.contains("no such token"), "{output}");
}

#[test]
fn a_backup_taken_while_serving_holds_the_accounts() {
    let (node, _config) = node_with_config();
    cli_ok(&node, &["user", "add", "alice", "--password-stdin"], Some(PASSWORD));
    cli_ok(&node, &["user", "add", "bob", "--password-stdin"], Some(PASSWORD));

    let restored = TempDir::new("restored");
    let target = restored.0.join("backup.db");
    let output = cli_ok(&node, &["backup", target.to_str().unwrap()], None);
    assert!(output.contains("backed up to"), "{output}");
    let bytes = std::fs::read(&target).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    // An existing file is not overwritten.
    let (ok, output) = node.cli(&["backup", target.to_str().unwrap()], None);
    assert!(!ok, "{output}");

    // A node started on the backup knows both accounts.
    std::fs::rename(&target, restored.0.join("hearth.db")).unwrap();
    let copy = Node::start_in(restored, &["--server-name", "localhost"]);
    for name in ["alice", "bob"] {
        assert_eq!(copy.client().login(name, PASSWORD).0, 200, "{name}");
    }
}

#[test]
fn commands_without_the_config_use_the_server_name_the_database_records() {
    // A node run with `--server-name` and no config file records its name in
    // the database; operator commands without `--config` use it.
    let node = Node::start_with(&["--server-name", "localhost"]);
    let output = cli_ok(&node, &["user", "add", "zed", "--password-stdin"], Some(PASSWORD));
    assert!(
        output.contains("created @zed:localhost\n") || output.ends_with("created @zed:localhost"),
        "{output}"
    );
    assert_eq!(node.client().login("zed", PASSWORD).0, 200);
}

#[test]
fn a_database_refuses_another_server_name() {
    let mut node = Node::start_with(&["--server-name", "localhost"]);
    node.stop();
    let (code, output) = common::run(
        &[
            "serve",
            "--data-dir",
            node.data_dir.0.to_str().unwrap(),
            "--server-name",
            "elsewhere.example",
            "--http",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("localhost"), "{output}");
}

#[test]
fn group_options_may_follow_the_action() {
    // As people type it: `hearth user add alice --data-dir DIR`.
    let node = Node::start_with(&["--server-name", "localhost"]);
    let data_dir = node.data_dir.0.to_str().unwrap();
    let (code, output) =
        common::run(&["user", "add", "yara", "--data-dir", data_dir, "--password-stdin"], Some(PASSWORD));
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("created @yara:localhost"), "{output}");
    let (code, output) =
        common::run(&["token", "create", "--uses", "2", &format!("--data-dir={data_dir}")], None);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(node.client().login("yara", PASSWORD).0, 200);
}

#[test]
fn operator_commands_never_create_a_database() {
    let empty = TempDir::new("cli-empty");
    let data_dir = empty.0.to_str().unwrap();
    for args in [
        vec!["user", "add", "alice", "--password-stdin", "--data-dir", data_dir],
        vec!["user", "list", "--data-dir", data_dir],
        vec!["token", "create", "--data-dir", data_dir],
        vec!["key", "rotate", "--data-dir", data_dir],
        vec!["backup", "--data-dir", data_dir, "/dev/null/never"],
        vec!["check", "--data-dir", data_dir],
    ] {
        let (code, output) = common::run(&args, None);
        assert_ne!(code, Some(0), "{args:?}: {output}");
        assert!(output.contains("no database at"), "{args:?}: {output}");
    }
    assert!(!empty.0.join("hearth.db").exists());
    assert_eq!(std::fs::read_dir(&empty.0).unwrap().count(), 0);
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    // `hearth user list | head -1`: the reader goes away before the command
    // writes. Before, the write panicked (an abort and a core dump in a
    // release build); now the command ends as other Unix tools do.
    let node = Node::start_with(&["--server-name", "localhost"]);
    let data_dir = node.data_dir.0.to_str().unwrap();
    for name in ["yara", "zeno"] {
        cli_ok(&node, &["user", "add", name, "--password-stdin"], Some(PASSWORD));
    }
    for args in [vec!["--help"], vec!["user", "list", "--data-dir", data_dir]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = std::process::Command::new(common::binary())
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {:?} {stderr}", output.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
