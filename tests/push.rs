//! Push rules and pushers over HTTP: the default ruleset, user rules driving
//! the unread counts of /sync, `m.push_rules` account data, and pushers.

mod common;

use common::rooms::public_room;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

const RULES: &str = "/_matrix/client/v3/pushrules";

fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Alice creates a public room and bob joins it; returns the room ID.
/// Sends a message; returns its event ID.
fn send(client: &Client, room_id: &str, txn: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
    let (status, body) = client.put(&path, &content);
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

/// `(notification_count, highlight_count)` of a room in an initial sync.
fn unread(client: &Client, room_id: &str) -> (u64, u64) {
    let (status, body) = client.get("/_matrix/client/v3/sync");
    assert_eq!(status, 200, "{body}");
    let counts = &body["rooms"]["join"][room_id]["unread_notifications"];
    (counts["notification_count"].as_u64().unwrap(), counts["highlight_count"].as_u64().unwrap())
}

fn put_ok(client: &Client, path: &str, body: &Value) {
    let (status, answer) = client.put(path, body);
    assert_eq!(status, 200, "PUT {path}: {answer}");
}

#[test]
fn ruleset_has_the_spec_defaults_and_shows_in_sync() {
    let node = Node::start();
    let alice = node.register("alice");
    let (status, body) = alice.get(&format!("{RULES}/"));
    assert_eq!(status, 200, "{body}");
    let global = &body["global"];
    assert_eq!(
        rule_ids(global, "override"),
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.contains_display_name",
            ".m.rule.is_room_mention",
            ".m.rule.roomnotif",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ]
    );
    assert_eq!(
        rule_ids(global, "underride"),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    assert_eq!(rule_ids(global, "content"), [".m.rule.contains_user_name"]);
    assert_eq!(global["content"][0]["pattern"], "alice");
    for kind in ["room", "sender"] {
        assert_eq!(global[kind], json!([]), "{kind}");
    }
    assert_eq!(
        global["override"][4],
        json!({
            "rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
            "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": alice.user_id}],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
        })
    );
    let (_, global_only) = alice.get(&format!("{RULES}/global/"));
    assert_eq!(&global_only, global);
    let (_, one) = alice.get(&format!("{RULES}/global/underride/.m.rule.message"));
    assert_eq!(
        one,
        json!({"rule_id": ".m.rule.message", "default": true, "enabled": true,
               "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
               "actions": ["notify"]})
    );

    // An initial sync carries the ruleset as `m.push_rules` account data.
    let (_, sync) = alice.get("/_matrix/client/v3/sync");
    let events = sync["account_data"]["events"].as_array().unwrap();
    let push_rules = events.iter().find(|event| event["type"] == "m.push_rules").expect("m.push_rules");
    assert_eq!(push_rules["content"], body);
    // Reading it as account data gives the same; clients cannot write it there.
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", alice.user_id);
    assert_eq!(alice.get(&path), (200, body.clone()));
    assert_error(&alice.put(&path, &json!({"global": {}})), 400, "M_BAD_JSON");
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>:
/// the user's rules decide what counts. They are applied when an event
/// arrives: a rule change applies to later events (the spec leaves it to the
/// server; Synapse does the same), so what was counted stays counted.
#[test]
fn keyword_rules_and_disabled_defaults_drive_unread_counts() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id = public_room(&alice, &[&bob]);
    let (_, first) = alice.get("/_matrix/client/v3/sync");
    let since = first["next_batch"].as_str().unwrap().to_owned();

    send(&bob, &room_id, "t1", json!({"msgtype": "m.text", "body": "hello"}));
    // Two members: the one-to-one rule notifies.
    assert_eq!(unread(&alice, &room_id), (1, 0));

    // A keyword rule that highlights, and every message rule switched off.
    put_ok(
        &alice,
        &format!("{RULES}/global/content/cake"),
        &json!({"pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]}),
    );
    for rule in [".m.rule.room_one_to_one", ".m.rule.message"] {
        put_ok(&alice, &format!("{RULES}/global/underride/{rule}/enabled"), &json!({"enabled": false}));
    }
    let (_, enabled) = alice.get(&format!("{RULES}/global/underride/.m.rule.message/enabled"));
    assert_eq!(enabled, json!({"enabled": false}));
    // The earlier message still counts; a new plain one does not.
    send(&bob, &room_id, "t2", json!({"msgtype": "m.text", "body": "more chat"}));
    assert_eq!(unread(&alice, &room_id), (1, 0));
    // The keyword counts, as a word only.
    send(&bob, &room_id, "t3", json!({"msgtype": "m.text", "body": "pancakes?"}));
    send(&bob, &room_id, "t4", json!({"msgtype": "m.text", "body": "Who wants CAKE?"}));
    assert_eq!(unread(&alice, &room_id), (2, 1));

    // The changes reached an incremental sync as `m.push_rules`.
    let (_, sync) = alice.get(&format!("/_matrix/client/v3/sync?since={since}"));
    let events = sync["account_data"]["events"].as_array().unwrap();
    let push_rules = events.iter().find(|event| event["type"] == "m.push_rules").expect("m.push_rules");
    assert_eq!(push_rules["content"]["global"]["content"][0]["pattern"], "cake");
    let message = push_rules["content"]["global"]["underride"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["rule_id"] == ".m.rule.message")
        .unwrap();
    assert_eq!(message["enabled"], false);

    // Re-enabling the message rule counts bob's next messages, not the ones
    // that arrived while it was off.
    put_ok(&alice, &format!("{RULES}/global/underride/.m.rule.message/enabled"), &json!({"enabled": true}));
    assert_eq!(unread(&alice, &room_id), (2, 1));
    send(&bob, &room_id, "t7", json!({"msgtype": "m.text", "body": "back on"}));
    assert_eq!(unread(&alice, &room_id), (3, 1));
    // Bob's own messages never count for bob.
    assert_eq!(unread(&bob, &room_id), (0, 0));
}

#[test]
fn mentions_highlight() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id = public_room(&alice, &[&bob]);
    send(&bob, &room_id, "t1", json!({"msgtype": "m.text", "body": "plain"}));
    send(
        &bob,
        &room_id,
        "t2",
        json!({"msgtype": "m.text", "body": "alice: look", "m.mentions": {"user_ids": [alice.user_id]}}),
    );
    assert_eq!(unread(&alice, &room_id), (2, 1));
    // Bob (power 0) may not notify the whole room; alice (the creator, 100) may.
    send(&bob, &room_id, "t3", json!({"msgtype": "m.text", "body": "all!", "m.mentions": {"room": true}}));
    assert_eq!(unread(&alice, &room_id), (3, 1));
    send(&alice, &room_id, "t4", json!({"msgtype": "m.text", "body": "all!", "m.mentions": {"room": true}}));
    assert_eq!(unread(&bob, &room_id), (1, 1));
    // Notices and edits do not notify.
    send(&bob, &room_id, "t5", json!({"msgtype": "m.notice", "body": "bot says"}));
    let edit = send(
        &bob,
        &room_id,
        "t6",
        json!({"msgtype": "m.text", "body": "* plain!", "m.new_content": {"msgtype": "m.text", "body": "plain!"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": "$whatever"}}),
    );
    assert_eq!(unread(&alice, &room_id), (3, 1));
    // A read receipt clears the counts.
    let receipt = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{edit}");
    let (status, body) = alice.post(&receipt, &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(unread(&alice, &room_id), (0, 0));
}

#[test]
fn rule_changes_are_validated() {
    let node = Node::start();
    let alice = node.register("alice");
    let rule = |path: &str| format!("{RULES}/global/{path}");

    // Default rules cannot be created, deleted or used as anchors.
    assert_error(&alice.delete(&rule("underride/.m.rule.message"), &json!({})), 400, "M_INVALID_PARAM");
    assert_error(&alice.put(&rule("override/.m.rule.mine"), &json!({"actions": []})), 400, "M_INVALID_PARAM");
    assert_error(&alice.put(&rule("override/a%2Fb"), &json!({"actions": []})), 400, "M_INVALID_PARAM");
    // An unknown kind: 400 (M_UNKNOWN, as the reference server answers).
    assert_error(&alice.put(&rule("nonsense/x"), &json!({"actions": []})), 400, "M_UNKNOWN");
    assert_error(&alice.put(&rule("override/x"), &json!({})), 400, "M_MISSING_PARAM");
    assert_error(&alice.put(&rule("override/x"), &json!({"actions": ["explode"]})), 400, "M_INVALID_PARAM");
    assert_error(&alice.put(&rule("content/x"), &json!({"actions": ["notify"]})), 400, "M_MISSING_PARAM");
    // A room rule's ID is not checked (the reference server takes an alias too).
    assert_eq!(alice.put(&rule("room/%23spam:example.com"), &json!({"actions": []})).0, 200);
    // Spec: an unknown before/after rule is 400 M_UNKNOWN.
    assert_error(
        &alice.put(&format!("{}?before=missing", rule("override/x")), &json!({"actions": []})),
        400,
        "M_UNKNOWN",
    );
    assert_error(
        &alice.put(&format!("{}?after=.m.rule.master", rule("override/x")), &json!({"actions": []})),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&alice.get(&rule("override/nope")), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&rule("override/nope/actions")), 404, "M_NOT_FOUND");
    assert_error(&alice.put(&rule("override/nope/enabled"), &json!({"enabled": true})), 404, "M_NOT_FOUND");
    assert_error(&alice.delete(&rule("override/nope"), &json!({})), 404, "M_NOT_FOUND");

    // Ordering with before/after among the user's own rules, after master.
    let quiet =
        json!({"conditions": [{"kind": "event_match", "key": "sender", "pattern": "@bot*"}], "actions": []});
    put_ok(&alice, &rule("override/first"), &quiet);
    put_ok(&alice, &rule("override/second"), &quiet);
    put_ok(&alice, &format!("{}?after=first", rule("override/third")), &quiet);
    put_ok(&alice, &format!("{}?before=second", rule("override/zeroth")), &quiet);
    let (_, global) = alice.get(&format!("{RULES}/global/"));
    assert_eq!(rule_ids(&global, "override")[..5], [".m.rule.master", "zeroth", "second", "first", "third"]);
    assert_eq!(
        global["override"][1],
        json!({"rule_id": "zeroth", "default": false, "enabled": true, "conditions": quiet["conditions"], "actions": []})
    );

    // Actions and enabled of own and default rules.
    let actions = json!({"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]});
    put_ok(&alice, &rule("override/first/actions"), &actions);
    put_ok(&alice, &rule("underride/.m.rule.call/actions"), &actions);
    put_ok(&alice, &rule("override/first/enabled"), &json!({"enabled": false}));
    assert_eq!(alice.get(&rule("override/first/actions")).1, actions);
    assert_eq!(alice.get(&rule("underride/.m.rule.call/actions")).1, actions);
    assert_eq!(alice.get(&rule("override/first/enabled")).1, json!({"enabled": false}));
    assert_error(&alice.put(&rule("override/first/enabled"), &json!({"enabled": "no"})), 400, "M_BAD_JSON");

    // Sender and room rules carry no conditions or pattern.
    put_ok(&alice, &rule("sender/@spam:example.org"), &json!({"actions": []}));
    assert_eq!(
        alice.get(&rule("sender/@spam:example.org")).1,
        json!({"rule_id": "@spam:example.org", "default": false, "enabled": true, "actions": []})
    );
    let (status, _) = alice.delete(&rule("override/first"), &json!({}));
    assert_eq!(status, 200);
    assert_error(&alice.get(&rule("override/first")), 404, "M_NOT_FOUND");
    // Without a token, nothing.
    assert_error(&node.client().get(&format!("{RULES}/")), 401, "M_MISSING_TOKEN");
}

#[test]
fn pushers_are_set_listed_and_deleted() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let set = "/_matrix/client/v3/pushers/set";
    let pusher = json!({
        "kind": "http", "app_id": "org.example.app.android", "pushkey": "token-1",
        "app_display_name": "Example", "device_display_name": "Phone", "profile_tag": "tag",
        "lang": "en", "data": {"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"},
    });
    let (status, body) = alice.post(set, &pusher);
    assert_eq!(status, 200, "{body}");
    let (_, listed) = alice.get("/_matrix/client/v3/pushers");
    assert_eq!(listed, json!({ "pushers": [pusher] }));

    // Bob takes over the same pushkey: alice's is removed unless he appends.
    let mut appended = pusher.clone();
    appended["append"] = json!(true);
    let (status, _) = bob.post(set, &appended);
    assert_eq!(status, 200);
    assert_eq!(alice.get("/_matrix/client/v3/pushers").1["pushers"].as_array().unwrap().len(), 1);
    let (status, _) = bob.post(set, &pusher);
    assert_eq!(status, 200);
    assert_eq!(alice.get("/_matrix/client/v3/pushers").1, json!({"pushers": []}));

    // Deleting with `kind: null`.
    let (status, _) =
        bob.post(set, &json!({"kind": null, "app_id": "org.example.app.android", "pushkey": "token-1"}));
    assert_eq!(status, 200);
    assert_eq!(bob.get("/_matrix/client/v3/pushers").1, json!({"pushers": []}));

    // Validation.
    let without = |field: &str| {
        let mut body = pusher.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    assert_error(&alice.post(set, &without("kind")), 400, "M_MISSING_PARAM");
    assert_error(&alice.post(set, &without("lang")), 400, "M_MISSING_PARAM");
    assert_error(&alice.post(set, &without("data")), 400, "M_MISSING_PARAM");
    let mut no_url = pusher.clone();
    no_url["data"] = json!({});
    assert_error(&alice.post(set, &no_url), 400, "M_MISSING_PARAM");
    let mut bad_url = pusher.clone();
    bad_url["data"]["url"] = json!("https://push.example.org/elsewhere");
    assert_error(&alice.post(set, &bad_url), 400, "M_INVALID_PARAM");
    let mut bad_kind = pusher.clone();
    bad_kind["kind"] = json!("carrier-pigeon");
    assert_error(&alice.post(set, &bad_kind), 400, "M_INVALID_PARAM");
    let mut long_app = pusher.clone();
    long_app["app_id"] = json!("x".repeat(65));
    assert_error(&alice.post(set, &long_app), 400, "M_INVALID_PARAM");
    let mut email = pusher.clone();
    email["kind"] = json!("email");
    email["app_id"] = json!("m.email");
    email["pushkey"] = json!("alice@example.org");
    assert_error(&alice.post(set, &email), 400, "M_THREEPID_NOT_FOUND");
    assert_eq!(alice.get("/_matrix/client/v3/pushers").1, json!({"pushers": []}));
}

#[test]
fn notifications_list_what_notified_newest_first() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id = public_room(&alice, &[&bob]);
    let plain = send(&bob, &room_id, "n1", json!({"msgtype": "m.text", "body": "plain"}));
    send(&bob, &room_id, "n2", json!({"msgtype": "m.notice", "body": "bot says"}));
    let mention = send(
        &bob,
        &room_id,
        "n3",
        json!({"msgtype": "m.text", "body": "alice: look", "m.mentions": {"user_ids": [alice.user_id]}}),
    );
    let event_ids = |list: &Value| -> Vec<String> {
        list["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["event"]["event_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, list) = alice.get("/_matrix/client/v3/notifications");
    assert_eq!(status, 200, "{list}");
    assert_eq!(event_ids(&list), vec![mention.clone(), plain.clone()], "{list}");
    let first = &list["notifications"][0];
    assert_eq!(first["room_id"], room_id);
    assert_eq!(first["read"], false);
    assert!(first["ts"].as_i64().is_some(), "{first}");
    assert!(
        first["actions"].as_array().unwrap().iter().any(|action| action["set_tweak"] == "highlight"),
        "{first}"
    );
    assert!(list.get("next_token").is_none(), "{list}");

    let (_, highlights) = alice.get("/_matrix/client/v3/notifications?only=highlight");
    assert_eq!(event_ids(&highlights), vec![mention.clone()]);

    // Paging: one at a time.
    let (_, page) = alice.get("/_matrix/client/v3/notifications?limit=1");
    assert_eq!(event_ids(&page), vec![mention.clone()]);
    let from = page["next_token"].as_str().expect("a next_token").to_owned();
    let (_, rest) = alice.get(&format!("/_matrix/client/v3/notifications?limit=1&from={from}"));
    assert_eq!(event_ids(&rest), vec![plain.clone()], "{rest}");
    assert_error(&alice.get("/_matrix/client/v3/notifications?from=nope"), 400, "M_INVALID_PARAM");

    // A read receipt marks them read; one's own events never notify.
    let receipt = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{mention}");
    assert_eq!(alice.post(&receipt, &json!({})).0, 200);
    let (_, read) = alice.get("/_matrix/client/v3/notifications");
    assert!(read["notifications"].as_array().unwrap().iter().all(|n| n["read"] == true), "{read}");
    let (_, bobs) = bob.get("/_matrix/client/v3/notifications");
    assert!(
        bobs["notifications"].as_array().unwrap().iter().all(|n| n["event"]["sender"] != bob.user_id),
        "{bobs}"
    );
}

/// The push rules API's paths and refusals, as the spec lists them and the
/// reference server answers them: listings end in a slash, the same paths
/// without it and unknown scopes, kinds or attributes are 400
/// `M_UNRECOGNIZED`, an unknown rule is 404 `M_NOT_FOUND`.
/// Spec: https://spec.matrix.org/latest/client-server-api/#push-rules-api
#[test]
fn push_rule_paths_answer_as_the_spec_lists_them() {
    let node = Node::start();
    let alice = node.register("alice");
    let get = |path: &str| alice.get(&format!("{RULES}{path}"));

    let (status, all) = get("/");
    assert_eq!(status, 200, "{all}");
    assert!(all["global"]["override"].is_array(), "{all}");
    let (status, global) = get("/global/");
    assert_eq!(status, 200, "{global}");
    assert_eq!(global, all["global"]);
    let (status, underride) = get("/global/underride/");
    assert_eq!(status, 200, "{underride}");
    assert_eq!(underride, all["global"]["underride"]);
    let (status, master) = get("/global/override/.m.rule.master");
    assert_eq!((status, &master["rule_id"]), (200, &json!(".m.rule.master")), "{master}");
    assert_eq!(get("/global/override/.m.rule.master/enabled"), (200, json!({"enabled": false})));
    let (status, actions) = get("/global/override/.m.rule.master/actions");
    assert_eq!(status, 200, "{actions}");
    assert!(actions["actions"].is_array(), "{actions}");

    assert_error(&get(""), 404, "M_UNRECOGNIZED");
    assert_error(&get("/global"), 400, "M_UNRECOGNIZED");
    assert_error(&get("/global/underride"), 400, "M_UNRECOGNIZED");
    assert_error(&get("/device/"), 400, "M_UNRECOGNIZED");
    assert_error(&get("/global/nonsense/"), 400, "M_UNRECOGNIZED");
    assert_error(&get("/global/override/.m.rule.master/colour"), 400, "M_UNRECOGNIZED");
    assert_error(&get("/global/override/nope"), 404, "M_NOT_FOUND");
    let put = |path: &str, body: serde_json::Value| alice.put(&format!("{RULES}{path}"), &body);
    assert_error(&put("/device/override/x", json!({"actions": []})), 400, "M_UNRECOGNIZED");
    assert_error(&put("/global/override/", json!({"actions": []})), 400, "M_UNRECOGNIZED");
    assert_error(&put("/global/override/.m.rule.master/colour", json!({})), 400, "M_UNRECOGNIZED");
    assert_error(&node.client().get(&format!("{RULES}/")), 401, "M_MISSING_TOKEN");
}

/// A pusher belongs to the access token (device) that set it: a password
/// change that logs out the other devices deletes their pushers, and so does
/// logging a device out; the device that changed the password keeps its own.
/// Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3accountpassword
/// ("... the homeserver SHOULD also delete pushers ... for the other devices")
#[test]
fn pushers_go_with_their_devices() {
    let node = Node::start();
    let phone = node.register("alice");
    let mut laptop = node.client();
    assert_eq!(laptop.login("alice", common::PASSWORD).0, 200);
    let mut tablet = node.client();
    assert_eq!(tablet.login("alice", common::PASSWORD).0, 200);
    let pusher = |pushkey: &str| {
        json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
            "app_display_name": "Example", "device_display_name": pushkey, "lang": "en",
            "data": {"url": "https://push.example.org/_matrix/push/v1/notify"}, "append": true,
        })
    };
    for (client, key) in [(&phone, "phone"), (&laptop, "laptop"), (&tablet, "tablet")] {
        assert_eq!(client.post("/_matrix/client/v3/pushers/set", &pusher(key)).0, 200);
    }
    let pushkeys = |client: &common::Client| -> Vec<String> {
        let (_, listed) = client.get("/_matrix/client/v3/pushers");
        let mut keys: Vec<String> = listed["pushers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pushkey"].as_str().unwrap().into())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(pushkeys(&phone), ["laptop", "phone", "tablet"]);

    // Logging the tablet out deletes its pusher.
    assert_eq!(tablet.post("/_matrix/client/v3/logout", &json!({})).0, 200);
    assert_eq!(pushkeys(&phone), ["laptop", "phone"]);

    // The phone changes the password (logging the others out): only its pusher stays.
    let path = "/_matrix/client/v3/account/password";
    let (status, challenge) = phone.post(path, &json!({"new_password": "a new password"}));
    assert_eq!(status, 401, "{challenge}");
    let auth = json!({"type": "m.login.password", "session": challenge["session"],
                      "identifier": {"type": "m.id.user", "user": phone.user_id}, "password": common::PASSWORD});
    let (status, body) = phone.post(path, &json!({"new_password": "a new password", "auth": auth}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushkeys(&phone), ["phone"]);
}
