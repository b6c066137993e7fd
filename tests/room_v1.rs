//! Rooms of version 1, which resolve state with the original algorithm:
//! a room created here, and a room shared by two nodes whose state forks
//! while each is down in turn and merges when both are back.
//!
//! Spec: https://spec.matrix.org/latest/rooms/v1/#state-resolution

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::rooms::{create_room, get_state, join, put_state, room_path, send_text, sync, timeline};
use common::{Client, Node, eventually};
use serde_json::{Value, json};

/// How long federation gets to deliver something on loopback.
const DELIVERY: Duration = Duration::from_secs(30);

/// The room's current state as `client` sees it: `(type, state_key)` to event ID.
fn state_ids(client: &Client, room_id: &str) -> BTreeMap<(String, String), String> {
    let (status, answer) = client.get(&room_path(room_id, "/state"));
    assert_eq!(status, 200, "{answer}");
    let key = |event: &Value| {
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        (kind, event["state_key"].as_str().unwrap_or_default().to_owned())
    };
    answer.as_array().unwrap().iter().map(|event| (key(event), event["event_id"].to_string())).collect()
}

/// Spec: https://spec.matrix.org/latest/rooms/v1/ (event IDs `$opaque:server`,
/// https://spec.matrix.org/latest/rooms/v1/#event-ids) and
/// https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3createroom
/// (`room_version` chooses the version).
#[test]
fn a_room_of_version_1_is_created_and_used_here() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_version": "1", "name": "Old"}));
    let (status, create) = get_state(&alice, &room_id, "m.room.create", "");
    assert_eq!((status, &create["room_version"]), (200, &json!("1")), "{create}");
    join(&bob, &room_id);
    let topic_id = put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": "one"}));
    assert!(
        topic_id.ends_with(&format!(":{}", node.server_name)),
        "v1 event IDs name their server: {topic_id}"
    );
    send_text(&bob, &room_id, "hello");
    let answer = sync(&bob, "");
    let bodies: Vec<&Value> =
        timeline(&answer, &room_id).iter().map(|event| &event["content"]["body"]).collect();
    assert!(bodies.contains(&&json!("hello")), "{answer}");
    let (_, topic) = get_state(&bob, &room_id, "m.room.topic", "");
    assert_eq!(topic["topic"], "one");
}

/// Spec: https://spec.matrix.org/latest/rooms/v1/#state-resolution. Each
/// node changes the power levels, the topic and (one of them) the name while
/// the other is down. When both are back, both hold the same state, and it is
/// the one the v1 rules give: for power levels, ascending depth while each
/// passes auth (Bob's deeper change is allowed on top of Alice's: his); for
/// the rest, the deepest event that passes auth (Alice's last topic, Bob's
/// name).
#[test]
fn a_version_1_room_forked_across_two_nodes_converges() {
    let ca = TestCa::new();
    let mut a = start_federating(&ca, &[]);
    let mut b = start_federating(&ca, &[]);
    let mut alice = a.register("alice");
    let mut bob = b.register("bob");
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "room_version": "1", "name": "Lounge", "room_alias_name": "lounge"}),
    );
    join(&bob, &format!("#lounge:{}", a.server_name));
    // Bob gets Alice's power, so nothing either does later is refused.
    let (_, mut levels) = get_state(&alice, &room_id, "m.room.power_levels", "");
    levels["users"][&bob.user_id] = json!(100);
    put_state(&alice, &room_id, "m.room.power_levels", "", levels.clone());
    eventually(DELIVERY, || {
        let (_, seen) = get_state(&bob, &room_id, "m.room.power_levels", "");
        (seen["users"][&bob.user_id] == json!(100)).then_some(())
    });

    // A is down: Bob renames the room and changes the topic and the power
    // levels (three events deep).
    a.stop();
    put_state(&bob, &room_id, "m.room.topic", "", json!({"topic": "bob"}));
    put_state(&bob, &room_id, "m.room.name", "", json!({"name": "Bob's lounge"}));
    let mut bob_levels = levels.clone();
    bob_levels["users"]["@carol:example.org"] = json!(10);
    let bob_levels_id = put_state(&bob, &room_id, "m.room.power_levels", "", bob_levels);
    send_text(&bob, &room_id, "bob while a was down");

    // B is down, A is back: Alice changes the power levels, then the topic
    // three times (four events deep).
    b.stop();
    a.restart();
    alice.base = a.http.clone();
    let mut alice_levels = levels.clone();
    alice_levels["users"]["@dave:example.org"] = json!(20);
    put_state(&alice, &room_id, "m.room.power_levels", "", alice_levels);
    for topic in ["alice 1", "alice 2", "alice 3"] {
        put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": topic}));
    }
    send_text(&alice, &room_id, "alice while b was down");

    // Both back: the fork merges.
    b.restart();
    bob.base = b.http.clone();
    for client in [&alice, &bob] {
        eventually(DELIVERY, || {
            let (_, answer) = client.get(&room_path(&room_id, "/messages?dir=b&limit=100"));
            let bodies: Vec<&Value> = answer["chunk"]
                .as_array()
                .map(|chunk| chunk.iter().map(|event| &event["content"]["body"]).collect())
                .unwrap_or_default();
            let both = ["bob while a was down", "alice while b was down"];
            both.iter().all(|body| bodies.contains(&&json!(body))).then_some(())
        });
    }
    let on_a = eventually(DELIVERY, || {
        let (on_a, on_b) = (state_ids(&alice, &room_id), state_ids(&bob, &room_id));
        (on_a == on_b).then_some(on_a)
    });
    assert_eq!(on_a[&("m.room.power_levels".to_owned(), String::new())], json!(bob_levels_id).to_string());
    for client in [&alice, &bob] {
        let (_, topic) = get_state(client, &room_id, "m.room.topic", "");
        assert_eq!(topic["topic"], "alice 3");
        let (_, name) = get_state(client, &room_id, "m.room.name", "");
        assert_eq!(name["name"], "Bob's lounge");
    }
    // The room goes on: a message after the merge reaches the other side.
    send_text(&alice, &room_id, "after the merge");
    eventually(DELIVERY, || {
        let (_, answer) = bob.get(&room_path(&room_id, "/messages?dir=b&limit=10"));
        let chunk = answer["chunk"].as_array().cloned().unwrap_or_default();
        chunk.iter().any(|event| event["content"]["body"] == "after the merge").then_some(())
    });
    assert!(!a.log_text().contains("state resolution failed"), "{}", a.log_text());
    assert!(!b.log_text().contains("state resolution failed"), "{}", b.log_text());
}
