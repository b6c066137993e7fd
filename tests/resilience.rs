//! "Will my rooms survive my server?": `hearth resilience` and
//! `GET /_hearth/admin/v1/resilience` on three federating nodes, before and
//! after a room gains a remote member, a remote admin and a remote alias.
//!
//! A room lives on every server with joined members
//! (<https://spec.matrix.org/latest/#architecture>); running it takes the
//! power to change `m.room.power_levels`
//! (<https://spec.matrix.org/latest/client-server-api/#mroompower_levels>);
//! its aliases are those of `m.room.canonical_alias`
//! (<https://spec.matrix.org/latest/client-server-api/#mroomcanonical_alias>).

mod common;

use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::rooms::{create_room, enc, get_state, join, put_state, send_text};
use common::{Client, Node, PASSWORD, assert_error, eventually};
use serde_json::{Value, json};

const DELIVERY: Duration = Duration::from_secs(20);
const REPORT: &str = "/_hearth/admin/v1/resilience";

/// One room's entry in a whole report (null when it is not there).
fn room_in(report: &Value, room_id: &str) -> Value {
    let rooms = report["rooms"].as_array().unwrap();
    rooms.iter().find(|room| room["room_id"] == room_id).cloned().unwrap_or_default()
}

/// The report on one room from the admin API.
fn room_report(admin: &Client, room_id: &str) -> Value {
    let (status, answer) = admin.get(REPORT);
    assert_eq!(status, 200, "{answer}");
    room_in(&answer, room_id)
}

/// The report on one room from `hearth resilience --json`.
fn cli_report(node: &Node, room_id: &str) -> Value {
    let (ok, output) = node.cli(&["resilience", "--json"], None);
    assert!(ok, "{output}");
    let line = output.lines().find(|line| line.starts_with('{')).unwrap_or_else(|| panic!("{output}"));
    let answer: Value = serde_json::from_str(line).unwrap();
    room_in(&answer, room_id)
}

fn server_names(report: &Value) -> Vec<String> {
    report["other_servers"]
        .as_array()
        .map(|servers| {
            servers.iter().map(|server| server["server_name"].as_str().unwrap().to_string()).collect()
        })
        .unwrap_or_default()
}

#[test]
fn rooms_live_on_once_other_servers_hold_them_with_an_admin_and_an_alias() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let c = start_federating(&ca, &[]);
    let (ok, output) = a.cli(&["user", "add", "root", "--admin", "--password-stdin"], Some(PASSWORD));
    assert!(ok, "{output}");
    let mut root = a.client();
    assert_eq!(root.login("root", PASSWORD).0, 200);
    let alice = a.register("alice");
    let lounge =
        create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "lounge", "name": "Lounge"}));
    let solo = create_room(&alice, json!({"name": "Solo"}));

    // Server admins only; the API is ours, under /_hearth.
    assert_error(&alice.get(REPORT), 403, "M_FORBIDDEN");
    assert_error(&a.client().get(REPORT), 401, "M_MISSING_TOKEN");
    assert_error(&root.post(REPORT, &json!({})), 405, "M_UNRECOGNIZED");
    assert_error(&root.get("/_hearth/admin/v1/nothing"), 404, "M_UNRECOGNIZED");

    // Before: only alice, here.
    let before = room_report(&root, &lounge);
    assert_eq!(before["verdict"], "dies_with_this_node", "{before}");
    assert_eq!(before["local_members"], 1);
    assert_eq!(before["admin_level"], 100);
    assert!(server_names(&before).is_empty(), "{before}");
    let summary = before["summary"].as_str().unwrap();
    assert!(summary.starts_with("this room dies with this node"), "{summary}");
    let (ok, text) = a.cli(&["resilience"], None);
    assert!(ok, "{text}");
    assert!(text.contains("\"Lounge\"") && text.contains("this room dies with this node"), "{text}");
    assert!(text.contains("2 rooms, 2 would die with this node"), "{text}");

    // A remote member: the room lives on at B, but no one there can run it.
    let bob = b.register("bob");
    join(&bob, &format!("#lounge:{}", a.server_name));
    send_text(&alice, &lounge, "hello");
    let report = eventually(DELIVERY, || {
        let report = room_report(&root, &lounge);
        report["other_servers"][0]["last_accepted_ts"].is_i64().then_some(report)
    });
    assert_eq!(report["verdict"], "lives_on_without_admin", "{report}");
    assert_eq!(server_names(&report), vec![b.server_name.clone()]);
    assert_eq!(report["other_servers"][0]["joined_members"], 1);
    assert_eq!(report["other_servers"][0]["admins"], json!([]));
    let summary = report["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("lives on at {}, but no one there", b.server_name)), "{summary}");

    // A remote admin on C and an alias on B: it lives on, and says where.
    let carol = c.register("carol");
    join(&carol, &lounge_alias(&a));
    eventually(DELIVERY, || (server_names(&room_report(&root, &lounge)).len() == 2).then_some(()));
    let (_, mut levels) = get_state(&alice, &lounge, "m.room.power_levels", "");
    levels["users"][&carol.user_id] = json!(100);
    put_state(&alice, &lounge, "m.room.power_levels", "", levels);
    let remote_alias = format!("#lounge-b:{}", b.server_name);
    let (status, answer) = bob.put(
        &format!("/_matrix/client/v3/directory/room/{}", enc(&remote_alias)),
        &json!({"room_id": lounge}),
    );
    assert_eq!(status, 200, "{answer}");
    put_state(
        &alice,
        &lounge,
        "m.room.canonical_alias",
        "",
        json!({"alias": lounge_alias(&a), "alt_aliases": [remote_alias]}),
    );
    let after = room_report(&root, &lounge);
    assert_eq!(after["verdict"], "lives_on", "{after}");
    assert_eq!(after["remote_aliases"], json!([remote_alias]));
    let mut expected = vec![b.server_name.clone(), c.server_name.clone()];
    expected.sort();
    assert_eq!(server_names(&after), expected);
    let on_c = after["other_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_name"] == c.server_name.as_str());
    assert_eq!(on_c.unwrap()["admins"], json!([{"user_id": carol.user_id, "power_level": 100}]));
    let summary = after["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("its admins there: {} (100)", carol.user_id)), "{summary}");
    // The command line says the same, and the other room still dies with A.
    let from_cli = cli_report(&a, &lounge);
    for key in ["verdict", "summary", "remote_aliases", "admin_level", "local_members", "name"] {
        assert_eq!(from_cli[key], after[key], "{key}: {from_cli}");
    }
    assert_eq!(room_report(&root, &solo)["verdict"], "dies_with_this_node");
    let (ok, text) = a.cli(&["resilience"], None);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("admin {} (100)", carol.user_id)), "{text}");
    assert!(text.contains(&format!("aliases elsewhere  {remote_alias}")), "{text}");
    assert!(text.contains("2 rooms, 1 would die with this node"), "{text}");

    // Seen from C, the room lives on at A (alice, its creator, who has
    // unlimited power from room v12) and B, and
    // both aliases are on other servers.
    let mut aliases = vec![lounge_alias(&a), remote_alias.clone()];
    aliases.sort();
    let from_c = eventually(DELIVERY, || {
        let report = cli_report(&c, &lounge);
        (report["remote_aliases"] == json!(aliases)).then_some(report)
    });
    assert_eq!(from_c["verdict"], "lives_on", "{from_c}");
    assert!(
        from_c["summary"].as_str().unwrap().contains(&format!("{} (creator)", alice.user_id)),
        "{from_c}"
    );
}

fn lounge_alias(node: &Node) -> String {
    format!("#lounge:{}", node.server_name)
}
