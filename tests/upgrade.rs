//! Room upgrades: the new room carries the state, aliases and listing over,
//! the old one is tombstoned and quietened; refusals for missing power and
//! unknown versions.

mod common;

use common::rooms::create_room;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

fn state(client: &Client, room: &str, kind: &str) -> (u16, Value) {
    client.get(&format!("/_matrix/client/v3/rooms/{room}/state/{kind}"))
}

fn upgrade(client: &Client, room: &str, body: Value) -> (u16, Value) {
    client.post(&format!("/_matrix/client/v3/rooms/{room}/upgrade"), &body)
}

#[test]
fn an_upgrade_moves_state_aliases_and_listing_and_tombstones_the_old_room() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let old = create_room(
        &alice,
        json!({ "room_version": "10", "visibility": "public", "room_alias_name": "town",
                "name": "Town square", "topic": "news", "creation_content": { "type": "org.example.kind" } }),
    );
    let (status, _) = bob.post(&format!("/_matrix/client/v3/join/{old}"), &json!({}));
    assert_eq!(status, 200);
    let (status, _) = alice.post(
        &format!("/_matrix/client/v3/rooms/{old}/ban"),
        &json!({ "user_id": "@troll:elsewhere.example" }),
    );
    assert_eq!(status, 200);

    let (status, body) = upgrade(&alice, &old, json!({ "new_version": "11" }));
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_string();
    assert_ne!(new, old);

    let (_, create) = state(&alice, &new, "m.room.create");
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["type"], "org.example.kind");
    assert_eq!(state(&alice, &new, "m.room.name").1["name"], "Town square");
    assert_eq!(state(&alice, &new, "m.room.topic").1["topic"], "news");
    assert_eq!(state(&alice, &new, "m.room.join_rules").1["join_rule"], "public");
    assert_eq!(state(&alice, &new, "m.room.power_levels").1["users"][&alice.user_id], 100);
    assert_eq!(state(&alice, &new, "m.room.member/@troll:elsewhere.example").1["membership"], "ban");
    let alias = format!("#town:{}", node.server_name);
    assert_eq!(state(&alice, &new, "m.room.canonical_alias").1["alias"], alias.as_str());

    let (_, tombstone) = state(&alice, &old, "m.room.tombstone");
    assert_eq!(tombstone["replacement_room"], new.as_str());
    // The predecessor names the tombstone event (as the reference server sets it).
    // Spec: https://spec.matrix.org/latest/client-server-api/#mroomcreate
    let tombstone_id = alice.get(&format!("/_matrix/client/v3/rooms/{old}/state?format=event"));
    let tombstone_id =
        tombstone_id.1.as_array().unwrap().iter().find(|event| event["type"] == "m.room.tombstone").unwrap()
            ["event_id"]
            .clone();
    assert_eq!(create["predecessor"]["event_id"], tombstone_id, "{create}");
    let (_, old_levels) = state(&alice, &old, "m.room.power_levels");
    assert_eq!(old_levels["events_default"], 50);
    assert_eq!(old_levels["invite"], 50);
    assert_eq!(state(&alice, &old, "m.room.canonical_alias").1, json!({}));

    let (_, resolved) =
        node.client().get(&format!("/_matrix/client/v3/directory/room/{}", alias.replace('#', "%23")));
    assert_eq!(resolved["room_id"], new.as_str());
    let (_, listing) = node.client().get(&format!("/_matrix/client/v3/directory/list/room/{old}"));
    assert_eq!(listing["visibility"], "private");
    let (_, listing) = node.client().get(&format!("/_matrix/client/v3/directory/list/room/{new}"));
    assert_eq!(listing["visibility"], "public");

    // Bob can no longer talk in the old room, and may join the new one.
    let (status, _) = bob.put(
        &format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/1"),
        &json!({ "msgtype": "m.text", "body": "hi" }),
    );
    assert_eq!(status, 403);
    let (status, body) = bob.post(&format!("/_matrix/client/v3/join/{new}"), &json!({}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn upgrades_without_power_or_to_unknown_versions_are_refused() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat", "room_version": "11" }));
    assert_error(&upgrade(&bob, &room, json!({ "new_version": "12" })), 403, "M_FORBIDDEN");
    let (status, _) = bob.post(&format!("/_matrix/client/v3/join/{room}"), &json!({}));
    assert_eq!(status, 200);
    assert_error(&upgrade(&bob, &room, json!({ "new_version": "12" })), 403, "M_FORBIDDEN");
    assert_error(&upgrade(&alice, &room, json!({ "new_version": "99" })), 400, "M_UNSUPPORTED_ROOM_VERSION");
    assert_error(&upgrade(&alice, &room, json!({})), 400, "M_BAD_JSON");
    // Nothing happened to the room.
    assert_error(&state(&alice, &room, "m.room.tombstone"), 404, "M_NOT_FOUND");
}

#[test]
fn upgrading_to_v12_makes_the_upgrader_and_additional_creators_creators() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let old = create_room(&alice, json!({ "preset": "public_chat", "room_version": "11" }));
    let (status, _) = bob.post(&format!("/_matrix/client/v3/join/{old}"), &json!({}));
    assert_eq!(status, 200);
    let levels = json!({ "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 100 } });
    let (status, body) =
        alice.put(&format!("/_matrix/client/v3/rooms/{old}/state/m.room.power_levels"), &levels);
    assert_eq!(status, 200, "{body}");

    let (status, body) =
        upgrade(&alice, &old, json!({ "new_version": "12", "additional_creators": [bob.user_id] }));
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_string();
    let (_, create) = state(&alice, &new, "m.room.create");
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    assert!(create.get("creator").is_none(), "{create}");
    // Creators hold their power through the create event, not the users map.
    let (_, levels) = state(&alice, &new, "m.room.power_levels");
    assert_eq!(levels["users"], json!({}));
    let (status, body) = bob.post(&format!("/_matrix/client/v3/join/{new}"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        bob.put(&format!("/_matrix/client/v3/rooms/{new}/state/m.room.name"), &json!({ "name": "Bob's" }));
    assert_eq!(status, 200, "{body}");
}
