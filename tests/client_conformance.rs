//! Client-server API details clients written against the reference server
//! rely on, each with the spec section (or the reference behaviour) it follows.

mod common;

use common::rooms::{create_room, room_path};
use common::{Node, PASSWORD, assert_error};
use serde_json::json;

/// Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid
#[test]
fn whois_shows_sessions_to_admins_and_to_the_user_themself() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let (ok, output) = node.cli(&["user", "add", "root", "--admin", "--password-stdin"], Some(PASSWORD));
    assert!(ok, "{output}");
    let mut root = node.client();
    assert_eq!(root.login("root", PASSWORD).0, 200);

    let path = |user_id: &str| format!("/_matrix/client/v3/admin/whois/{}", common::rooms::enc(user_id));
    // Alice about herself: her device, seen just now.
    let (status, whois) = alice.get(&path(&alice.user_id));
    assert_eq!(status, 200, "{whois}");
    assert_eq!(whois["user_id"], alice.user_id.as_str());
    let sessions = &whois["devices"][alice.device_id.as_str()]["sessions"];
    assert!(sessions[0]["connections"].is_array(), "{whois}");
    // Bob about Alice: refused.
    assert_error(&bob.get(&path(&alice.user_id)), 403, "M_FORBIDDEN");
    // The admin about Alice.
    let (status, whois) = root.get(&path(&alice.user_id));
    assert_eq!(status, 200, "{whois}");
    assert!(whois["devices"][alice.device_id.as_str()].is_object(), "{whois}");
    // Only local users; no token, no answer.
    assert_error(&root.get(&path("@someone:elsewhere.example")), 400, "M_INVALID_PARAM");
    assert_error(&root.get(&path("not a user")), 400, "M_INVALID_PARAM");
    assert_error(&node.client().get(&path(&alice.user_id)), 401, "M_MISSING_TOKEN");
}

/// The reference server also serves `POST /rooms/{roomId}/send/{eventType}`
/// (no transaction ID); clients and bots written against it use it.
#[test]
fn a_message_can_be_posted_without_a_transaction_id() {
    let node = Node::start();
    let alice = node.register("alice");
    let room_id = create_room(&alice, json!({}));
    let path = room_path(&room_id, "/send/m.room.message");
    let (status, first) = alice.post(&path, &json!({"msgtype": "m.text", "body": "one"}));
    assert_eq!(status, 200, "{first}");
    let (status, second) = alice.post(&path, &json!({"msgtype": "m.text", "body": "one"}));
    assert_eq!(status, 200, "{second}");
    // Without a transaction ID each request is a new event.
    assert_ne!(first["event_id"], second["event_id"]);
    let (status, event) =
        alice.get(&room_path(&room_id, &format!("/event/{}", first["event_id"].as_str().unwrap())));
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "one");
}

/// Older clients upload cross-signing keys under the unstable prefix; the
/// reference server answers there as on `v3`.
/// Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysdevice_signingupload
#[test]
fn cross_signing_upload_is_served_under_the_unstable_prefix() {
    let node = Node::start();
    let alice = node.register("alice");
    let key = "A".repeat(43);
    let master =
        json!({ "user_id": alice.user_id, "usage": ["master"], "keys": { format!("ed25519:{key}"): key } });
    let (status, answer) =
        alice.post("/_matrix/client/unstable/keys/device_signing/upload", &json!({ "master_key": master }));
    assert_eq!(status, 200, "{answer}");
    let (status, keys) = alice
        .post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { alice.user_id.as_str(): [] } }));
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["master_keys"][alice.user_id.as_str()]["usage"], json!(["master"]), "{keys}");
    // Other unstable paths are still unknown.
    assert_error(&alice.get("/_matrix/client/unstable/account/whoami"), 404, "M_UNRECOGNIZED");
}

/// Setting state to the content it already has makes no new event: the
/// answer is the existing event's ID (the reference server's behaviour; the
/// spec leaves it open). Other content makes one, even content set before.
/// Spec: https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey
#[test]
fn unchanged_state_answers_the_existing_event() {
    let node = Node::start();
    let alice = node.register("alice");
    let room_id = create_room(&alice, json!({"preset": "public_chat"}));
    let topic = json!({"topic": "gardening"});
    let first = common::rooms::put_state(&alice, &room_id, "m.room.topic", "", topic.clone());
    let again = common::rooms::put_state(&alice, &room_id, "m.room.topic", "", topic.clone());
    assert_eq!(first, again);
    let changed = common::rooms::put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": "bees"}));
    assert_ne!(changed, first);
    let back = common::rooms::put_state(&alice, &room_id, "m.room.topic", "", topic.clone());
    assert_ne!(back, first);
    // A non-member setting the same content is refused as any state change is.
    let stranger = node.register("stranger");
    let (status, _) = common::rooms::try_put_state(&stranger, &room_id, "m.room.topic", "", &topic);
    assert_eq!(status, 403);
    // The timeline holds one event per real change.
    let (_, messages) = alice.get(&room_path(&room_id, "/messages?dir=b&limit=50"));
    let topics = messages["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.topic").count();
    assert_eq!(topics, 3, "{messages}");
}

/// A new account is named by its localpart until its owner picks a name, so
/// clients show a name in member lists (the reference server does the same).
#[test]
fn a_new_account_is_named_by_its_localpart() {
    let node = Node::start();
    let alice = node.register("alice");
    let room_id = create_room(&alice, json!({}));
    let (status, member) = common::rooms::get_state(&alice, &room_id, "m.room.member", &alice.user_id);
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["displayname"], "alice", "{member}");
}

/// A redaction names an event of its own room: redacting another room's
/// event through this room is refused and changes nothing there.
/// Spec: https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid
#[test]
fn an_event_of_another_room_cannot_be_redacted() {
    let node = Node::start();
    let alice = node.register("alice");
    let here = create_room(&alice, json!({}));
    let there = create_room(&alice, json!({}));
    let target = common::rooms::send_text(&alice, &there, "keep me");
    let (status, answer) = alice.put(&room_path(&here, &format!("/redact/{target}/t1")), &json!({}));
    assert_eq!(status, 404, "{answer}");
    let (status, event) = alice.get(&room_path(&there, &format!("/event/{target}")));
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "keep me");
}

/// A join keeps the extra keys of its body in the member event (the
/// reference server does; clients put per-room fields there), while the keys
/// the server decides stay its own.
/// Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3joinroomidoralias
#[test]
fn a_join_keeps_the_extra_content_it_was_given() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat"}));
    let body = json!({"reason": "saying hello", "org.example.colour": "green",
                      "membership": "ban", "join_authorised_via_users_server": alice.user_id});
    let (status, answer) = bob.post(&room_path(&room_id, "/join"), &body);
    assert_eq!(status, 200, "{answer}");
    let (status, member) = common::rooms::get_state(&alice, &room_id, "m.room.member", &bob.user_id);
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(member["reason"], "saying hello", "{member}");
    assert_eq!(member["org.example.colour"], "green", "{member}");
    assert_eq!(member["displayname"], "bob", "{member}");
    assert!(member.get("join_authorised_via_users_server").is_none(), "{member}");
    let (status, _) = bob.post(&room_path(&room_id, "/leave"), &json!({}));
    assert_eq!(status, 200);
    assert_error(&bob.post(&room_path(&room_id, "/join"), &json!({"reason": 5})), 400, "M_BAD_JSON");
}
