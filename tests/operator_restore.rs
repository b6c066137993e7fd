//! `hearth check` and `hearth restore`: a health check that runs beside the
//! node and finds damage, and a restore that brings back exactly a backup's
//! state, refuses while the node runs and refuses files that are not this
//! server's backups.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Client, Node, PASSWORD, TempDir, write_file};
use serde_json::json;

fn cli_ok(node: &Node, args: &[&str]) -> String {
    let (ok, output) = node.cli(args, None);
    assert!(ok, "hearth {args:?}: {output}");
    output
}

/// A room with one message in it; returns the room ID.
fn room_with_message(client: &Client, body: &str) -> String {
    let (status, answer) = client.post("/_matrix/client/v3/createRoom", &json!({"name": "kitchen"}));
    assert_eq!(status, 200, "{answer}");
    let room_id = answer["room_id"].as_str().unwrap().to_string();
    send(client, &room_id, body);
    room_id
}

fn send(client: &Client, room_id: &str, body: &str) {
    let txn: String = body.chars().filter(char::is_ascii_alphanumeric).collect();
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
    let (status, answer) = client.put(&path, &json!({"msgtype": "m.text", "body": body}));
    assert_eq!(status, 200, "{answer}");
}

/// The bodies of the room's messages, oldest first.
fn bodies(client: &Client, room_id: &str) -> Vec<String> {
    let (status, answer) =
        client.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100"));
    assert_eq!(status, 200, "{answer}");
    let mut bodies: Vec<String> = answer["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().unwrap().to_string())
        .collect();
    bodies.reverse();
    bodies
}

/// Runs SQL on a stopped node's database with the sqlite3 shell; false if
/// there is no sqlite3 program (the caller skips that part).
fn sqlite(database: &Path, sql: &str) -> bool {
    if Command::new("sqlite3").arg("-version").stdout(Stdio::null()).status().is_err() {
        eprintln!("no sqlite3 program: this part of the test is skipped");
        return false;
    }
    let output = Command::new("sqlite3").arg(database).arg(sql).output().unwrap();
    assert!(output.status.success(), "sqlite3: {}", String::from_utf8_lossy(&output.stderr));
    true
}

/// The data dir's file names, without the WAL's (which come and go).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with("-wal") && !name.ends_with("-shm"))
        .collect();
    names.sort();
    names
}

#[test]
fn check_passes_on_a_serving_node_and_prints_its_stats() {
    let node = Node::start_with_config("");
    let alice = node.register("alice");
    room_with_message(&alice, "hello");
    let output = cli_ok(&node, &["check"]);
    for expected in [
        "ok    integrity_check",
        "ok    foreign keys",
        "ok    schema version",
        "ok    signing key ed25519:",
        "ok    event graph",
        "users     1 (0 deactivated)",
        "rooms     1",
        "media     0 files",
        "wal       ",
        "all checks passed",
    ] {
        assert!(output.contains(expected), "{expected:?} missing from:\n{output}");
    }
    // The node is unaffected.
    send(&alice, &room_with_message(&alice, "again"), "still here");
    // Options after the action work too, and a missing database is not made.
    let empty = TempDir::new("check-empty");
    let (code, output) = common::run(&["check", "--data-dir", empty.0.to_str().unwrap()], None);
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("no database at"), "{output}");
    assert_eq!(std::fs::read_dir(&empty.0).unwrap().count(), 0);
}

#[test]
fn check_finds_a_missing_prev_event_and_a_damaged_file() {
    let mut node = Node::start_with_config("");
    let alice = node.register("alice");
    room_with_message(&alice, "hello");
    node.stop();
    assert!(node.cli(&["check"], None).0);
    let database = node.data_dir.0.join("hearth.db");
    // The message's prev event becomes one the database does not hold (an
    // UPDATE: the old sqlite3 shell cannot run the search index's insert trigger).
    let sql = "UPDATE events SET json = json_set(json, '$.prev_events', json_array('$gone'))
               WHERE stream_ordering = (SELECT MAX(stream_ordering) FROM events WHERE kind = 'm.room.message');";
    if sqlite(&database, sql) {
        let (ok, output) = node.cli(&["check"], None);
        assert!(!ok, "{output}");
        assert!(output.contains("FAIL  event graph") && output.contains("1 prev and 0 auth"), "{output}");
        assert!(output.contains("check(s) failed"), "{output}");
    }

    // Bytes lost from the file's end (a full SD card, a bad copy).
    let length = std::fs::metadata(&database).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&database).unwrap();
    file.set_len(length / 2).unwrap();
    drop(file);
    let (ok, output) = node.cli(&["check"], None);
    assert!(!ok, "{output}");
    assert!(output.contains("FAIL  integrity_check"), "{output}");
}

#[test]
fn a_restore_brings_back_exactly_the_backup() {
    let mut node = Node::start_with_config("");
    let alice = node.register("alice");
    let room_id = room_with_message(&alice, "before");
    let backups = TempDir::new("backups");
    let backup = backups.0.join("monday.db");
    cli_ok(&node, &["backup", backup.to_str().unwrap()]);

    // Life goes on after the backup.
    let bob = node.register("bob");
    send(&alice, &room_id, "after");
    assert_eq!(bodies(&bob, &room_with_message(&bob, "bobs")), ["bobs"]);

    // Refused while the node runs, and nothing changed.
    let before = files(&node.data_dir.0);
    let (ok, output) = node.cli(&["restore", backup.to_str().unwrap()], None);
    assert!(!ok, "{output}");
    assert!(output.contains("in use") && output.contains("nothing changed"), "{output}");
    assert_eq!(files(&node.data_dir.0), before);
    assert_eq!(node.client().login("bob", PASSWORD).0, 200);
    send(&alice, &room_id, "still serving");

    node.stop();
    let output = cli_ok(&node, &["restore", backup.to_str().unwrap()]);
    assert!(output.contains("restored") && output.contains("server name localhost"), "{output}");
    assert!(output.contains("the previous database is kept at"), "{output}");
    let kept: Vec<String> = files(&node.data_dir.0)
        .into_iter()
        .filter(|name| name.starts_with("hearth.db.before-restore-"))
        .collect();
    assert!(!kept.is_empty(), "{:?}", files(&node.data_dir.0));
    assert!(!node.data_dir.0.join("hearth.db.restoring").exists());

    node.restart();
    let mut alice = node.client();
    assert_eq!(alice.login("alice", PASSWORD).0, 200);
    assert_eq!(bodies(&alice, &room_id), ["before"]);
    common::assert_error(&node.client().login("bob", PASSWORD), 403, "M_FORBIDDEN");
    let output = cli_ok(&node, &["check"]);
    assert!(output.contains("users     1 (0 deactivated)"), "{output}");
    // The database kept aside holds the later state, whole.
    let aside = node.data_dir.0.join(&kept[0]);
    let aside_dir = TempDir::new("aside");
    std::fs::copy(&aside, aside_dir.0.join("hearth.db")).unwrap();
    let (code, output) = common::run(&["check", "--data-dir", aside_dir.0.to_str().unwrap()], None);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("users     2 (0 deactivated)"), "{output}");
}

#[test]
fn a_restore_refuses_what_is_not_this_servers_backup() {
    let mut node = Node::start_with(&["--server-name", "localhost"]);
    let (ok, output) = node.cli(&["user", "add", "carol", "--password-stdin"], Some(PASSWORD));
    assert!(ok, "{output}");
    node.stop();
    let scratch = TempDir::new("not-backups");
    let before = files(&node.data_dir.0);
    let database = std::fs::read(node.data_dir.0.join("hearth.db")).unwrap();

    let text = write_file(&scratch.0, "notes.txt", b"shopping list: milk, eggs\n");
    let (ok, output) = node.cli(&["restore", text.to_str().unwrap()], None);
    assert!(!ok && output.contains("not an SQLite database"), "{output}");

    // An SQLite database, but not hearth's.
    let other_app = scratch.0.join("other-app.db");
    if sqlite(&other_app, "CREATE TABLE recipes (name TEXT);") {
        let (ok, output) = node.cli(&["restore", other_app.to_str().unwrap()], None);
        assert!(!ok && output.contains("not a hearth database"), "{output}");
    }

    // A sound backup of another server.
    let other = Node::start_with(&["--server-name", "elsewhere.test"]);
    let foreign = scratch.0.join("elsewhere.db");
    assert!(other.cli(&["backup", foreign.to_str().unwrap()], None).0);
    let (ok, output) = node.cli(&["restore", foreign.to_str().unwrap()], None);
    assert!(!ok && output.contains("elsewhere.test") && output.contains("nothing changed"), "{output}");

    // Nothing changed: the same files, the same content, and the node starts on it.
    assert_eq!(files(&node.data_dir.0), before);
    assert_eq!(std::fs::read(node.data_dir.0.join("hearth.db")).unwrap().len(), database.len());
    node.restart();
    assert_eq!(node.client().login("carol", PASSWORD).0, 200);
}

#[test]
fn a_restore_replaces_a_damaged_database() {
    let mut node = Node::start_with_config("");
    let alice = node.register("alice");
    let room_id = room_with_message(&alice, "kept");
    let backups = TempDir::new("backups-damaged");
    let backup = backups.0.join("backup.db");
    cli_ok(&node, &["backup", backup.to_str().unwrap()]);
    node.stop();
    // The SD card lost the file's second half.
    let database = node.data_dir.0.join("hearth.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(node.data_dir.0.join(format!("hearth.db{suffix}")));
    }
    let length = std::fs::metadata(&database).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&database).unwrap().set_len(length / 2).unwrap();
    assert!(!node.cli(&["check"], None).0);

    let output = cli_ok(&node, &["restore", backup.to_str().unwrap()]);
    assert!(output.contains("damaged") && output.contains("restored"), "{output}");
    cli_ok(&node, &["check"]);
    node.restart();
    let mut alice = node.client();
    assert_eq!(alice.login("alice", PASSWORD).0, 200);
    assert_eq!(bodies(&alice, &room_id), ["kept"]);
}
