//! Unread notification counts in `/sync`, kept when events are stored:
//! exact however many are unread, lowered by read receipts (threaded or
//! not), raised by mentions and keywords as highlights, silent in muted
//! rooms, following rule changes for new events, per thread when the filter asks,
//! lowered by redactions and leaving, for events from this server or others.

mod common;

use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::rooms::*;
use common::{Client, Node, eventually};
use serde_json::{Value, json};

/// Alice creates a public room and bob joins it; returns the room ID.
/// The room's `unread_notifications` in an initial sync with `filter`.
fn counts_with(client: &Client, room: &str, filter: &str) -> (u64, u64, Value) {
    let query = if filter.is_empty() { String::new() } else { format!("filter={}", enc(filter)) };
    let body = sync(client, &query);
    let joined = &body["rooms"]["join"][room];
    let counts = &joined["unread_notifications"];
    (
        counts["notification_count"].as_u64().unwrap(),
        counts["highlight_count"].as_u64().unwrap(),
        joined.get("unread_thread_notifications").cloned().unwrap_or(Value::Null),
    )
}

fn counts(client: &Client, room: &str) -> (u64, u64) {
    let (notifications, highlights, _) = counts_with(client, room, "");
    (notifications, highlights)
}

#[track_caller]
fn receipt(client: &Client, room: &str, event_id: &str, body: Value) {
    let path = room_path(room, &format!("/receipt/m.read/{}", enc(event_id)));
    let (status, answer) = client.post(&path, &body);
    assert_eq!(status, 200, "{answer}");
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>:
/// `notification_count` is the number of unread notifying events (from the
/// user's push rules), `highlight_count` those that highlight; a read receipt
/// on event E marks everything up to E read
/// (<https://spec.matrix.org/latest/client-server-api/#receipts>). Counts are
/// exact well past the 1,000 events the server once stopped counting at.
#[test]
fn counts_are_exact_past_a_thousand_and_receipts_leave_what_follows() {
    const MESSAGES: usize = 1_500;
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = public_room(&alice, &[&bob]);
    let mut middle = String::new();
    for index in 0..MESSAGES {
        let event_id = send_text(&bob, &room, &format!("message {index}"));
        if index == 699 {
            middle = event_id;
        }
    }
    assert_eq!(counts(&alice, &room), (MESSAGES as u64, 0));
    // A receipt on the 700th leaves the 800 after it.
    receipt(&alice, &room, &middle, json!({}));
    assert_eq!(counts(&alice, &room), (800, 0));
    // A mention highlights.
    let mention =
        json!({"msgtype": "m.text", "body": "alice: look", "m.mentions": {"user_ids": [alice.user_id]}});
    let mentioned = send(&bob, &room, "m.room.message", mention);
    let first = sync(&alice, "");
    assert_eq!(
        first["rooms"]["join"][&room]["unread_notifications"],
        json!({"notification_count": 801, "highlight_count": 1})
    );
    // An incremental sync carries the counts too.
    send_text(&bob, &room, "one more");
    let next = sync(&alice, &since(&first["next_batch"]));
    assert_eq!(
        next["rooms"]["join"][&room]["unread_notifications"],
        json!({"notification_count": 802, "highlight_count": 1})
    );
    // A receipt behind the earlier one reads nothing more; bob's counts are
    // untouched by everything (his own messages never count).
    let (_, early) = alice.get(&room_path(&room, "/messages?dir=f&limit=5"));
    let early_id = early["chunk"][4]["event_id"].as_str().unwrap().to_owned();
    receipt(&alice, &room, &early_id, json!({}));
    assert_eq!(counts(&alice, &room), (802, 1));
    assert_eq!(counts(&bob, &room), (0, 0));
    // A receipt on the mention leaves the one after it.
    receipt(&alice, &room, &mentioned, json!({}));
    assert_eq!(counts(&alice, &room), (1, 0));
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#threaded-read-receipts>:
/// with `unread_thread_notifications` in the filter, `unread_notifications`
/// counts the main timeline only and `unread_thread_notifications` each
/// thread by its root; a receipt with a `thread_id` reads that thread only,
/// one without reads them all. Without the flag the counts cover the room.
#[test]
fn threaded_receipts_and_per_thread_counts() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = public_room(&alice, &[&bob]);
    let root = send_text(&bob, &room, "thread root");
    let in_thread = |body: &str, extra: Value| {
        let mut content = json!({"msgtype": "m.text", "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true}});
        if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
            content.extend(extra.clone());
        }
        send(&bob, &room, "m.room.message", content)
    };
    let reply_one = in_thread("reply one", json!({}));
    in_thread("reply two", json!({"m.mentions": {"user_ids": [alice.user_id]}}));
    let reply_three = in_thread("reply three", json!({}));
    send_text(&bob, &room, "main one");
    let main_two = send_text(&bob, &room, "main two");

    let threads = r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#;
    let (notifications, highlights, per_thread) = counts_with(&alice, &room, threads);
    assert_eq!((notifications, highlights), (3, 0));
    assert_eq!(per_thread, json!({ &root: {"notification_count": 3, "highlight_count": 1} }));
    // Without the flag: the whole room, no per-thread object.
    assert_eq!(counts_with(&alice, &room, ""), (6, 1, Value::Null));
    // The unstable name of the flag works too.
    let unstable = r#"{"room":{"timeline":{"org.matrix.msc3773.unread_thread_notifications":true}}}"#;
    assert_eq!(counts_with(&alice, &room, unstable).0, 3);

    // A threaded receipt on the first reply reads that thread up to it.
    receipt(&alice, &room, &reply_one, json!({"thread_id": root}));
    let (notifications, _, per_thread) = counts_with(&alice, &room, threads);
    assert_eq!(notifications, 3);
    assert_eq!(per_thread, json!({ &root: {"notification_count": 2, "highlight_count": 1} }));
    // A `main` receipt reads the main timeline only.
    receipt(&alice, &room, &main_two, json!({"thread_id": "main"}));
    let (notifications, _, per_thread) = counts_with(&alice, &room, threads);
    assert_eq!(notifications, 0);
    assert_eq!(per_thread, json!({ &root: {"notification_count": 2, "highlight_count": 1} }));
    // A reaction to a reply is in the reply's thread (reactions do not
    // notify by default, so a keyword rule makes this one count).
    let rules = "/_matrix/client/v3/pushrules/global/override/reactions";
    let rule = json!({"conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}],
                      "actions": ["notify"]});
    assert_eq!(alice.put(rules, &rule).0, 200);
    send(
        &bob,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": reply_three, "key": "+1"}}),
    );
    let (notifications, _, per_thread) = counts_with(&alice, &room, threads);
    assert_eq!(notifications, 0);
    assert_eq!(per_thread, json!({ &root: {"notification_count": 3, "highlight_count": 1} }));
    // An unthreaded receipt on the last reply reads everything up to it.
    receipt(&alice, &room, &reply_three, json!({}));
    let (notifications, highlights, per_thread) = counts_with(&alice, &room, threads);
    assert_eq!((notifications, highlights), (0, 0));
    assert_eq!(per_thread, json!({ &root: {"notification_count": 1, "highlight_count": 0} }));
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#redactions>: a
/// redacted event keeps no content, so it notifies no one any more; and a
/// user who leaves and returns starts with nothing unread
/// (<https://spec.matrix.org/latest/client-server-api/#receiving-notifications>
/// counts what is unread in rooms the user is in).
#[test]
fn redactions_and_leaving_take_events_out_of_the_counts() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = public_room(&alice, &[&bob]);
    let mention = json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [alice.user_id]}});
    let mentioned = send(&bob, &room, "m.room.message", mention);
    send_text(&bob, &room, "kept");
    assert_eq!(counts(&alice, &room), (2, 1));
    let path = room_path(&room, &format!("/redact/{}/{}", enc(&mentioned), txn()));
    let (status, answer) = bob.put(&path, &json!({"reason": "oops"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(counts(&alice, &room), (1, 0));

    let (status, answer) = alice.post(&room_path(&room, "/leave"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    join(&alice, &room);
    assert_eq!(counts(&alice, &room), (0, 0));
    send_text(&bob, &room, "welcome back");
    assert_eq!(counts(&alice, &room), (1, 0));
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>:
/// the counts are over the room's events, wherever they were sent from: a
/// message arriving over federation counts for the local members it notifies.
#[test]
fn events_from_other_servers_count() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "counted"}));
    join(&bob, &format!("#counted:{}", a.server_name));
    // Bob's messages reach alice's server, alice's reach bob's.
    send_text(&bob, &room, "from b");
    let mention = json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [alice.user_id]}});
    send(&bob, &room, "m.room.message", mention);
    send_text(&alice, &room, "from a");
    let delivery = Duration::from_secs(20);
    eventually(delivery, || (counts(&alice, &room) == (2, 1)).then_some(()));
    eventually(delivery, || (counts(&bob, &room) == (1, 0)).then_some(()));
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#conditions-1>
/// (`contains_display_name`): the name is the user's display name in the
/// room at the time, so a new name (a new member event) highlights the next
/// message that says it, and the old name no longer does.
#[test]
fn a_new_display_name_highlights_the_next_message() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = public_room(&alice, &[&bob]);
    let rename = |name: &str| {
        let content = json!({"membership": "join", "displayname": name});
        put_state(&alice, &room, "m.room.member", &alice.user_id, content);
    };
    rename("Amy");
    send_text(&bob, &room, "hello amy");
    assert_eq!(counts(&alice, &room), (1, 1));
    rename("Zed");
    send_text(&bob, &room, "hello zed");
    assert_eq!(counts(&alice, &room), (2, 2));
    send_text(&bob, &room, "where did amy go");
    assert_eq!(counts(&alice, &room), (3, 2));
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#conditions-1>
/// (`room_member_count`: the number of joined members in the room): the count
/// a rule reads follows every join and leave as it is stored, whether the
/// member event was made here or arrived from another server.
#[test]
fn the_member_count_follows_local_and_remote_joins_and_leaves() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = a.register("bob");
    let dave = a.register("dave");
    let carol = b.register("carol");
    let room = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "three"}));
    join(&bob, &room);
    // Alice's rule: a message in a room of exactly three members highlights
    // (a message only: the leave that makes it two would match too).
    let rule = json!({
        "conditions": [
            {"kind": "event_match", "key": "type", "pattern": "m.room.message"},
            {"kind": "room_member_count", "is": "3"},
        ],
        "actions": ["notify", {"set_tweak": "highlight"}],
    });
    let (status, answer) = alice.put("/_matrix/client/v3/pushrules/global/override/three", &rule);
    assert_eq!(status, 200, "{answer}");
    send_text(&bob, &room, "two of us");
    assert_eq!(counts(&alice, &room), (1, 0));
    // A local member joins and leaves.
    join(&dave, &room);
    send_text(&bob, &room, "three of us");
    assert_eq!(counts(&alice, &room), (2, 1));
    let (status, answer) = dave.post(&room_path(&room, "/leave"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    send_text(&bob, &room, "two again");
    assert_eq!(counts(&alice, &room), (3, 1));
    // A remote member joins and leaves.
    join(&carol, &format!("#three:{}", a.server_name));
    send_text(&bob, &room, "three again");
    assert_eq!(counts(&alice, &room), (4, 2));
    let (status, answer) = carol.post(&room_path(&room, "/leave"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    eventually(Duration::from_secs(20), || {
        (membership_of(&alice, &room, &carol.user_id).as_deref() == Some("leave")).then_some(())
    });
    send_text(&bob, &room, "two at last");
    assert_eq!(counts(&alice, &room), (5, 2));
}

/// An application service's exclusive users (a bridge's ghosts) are the
/// service's to serve: the events of their rooms reach it in transactions,
/// so they get no notification counts (nor pushes), as in Synapse, and a
/// bridged room of thousands of ghosts costs no push-rule evaluation per
/// ghost; the room's other members count as before.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#registration>
/// (an exclusive namespace reserves its users for the service) and
/// <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>.
#[test]
fn an_application_services_exclusive_users_get_no_counts() {
    const AS_TOKEN: &str = "unread-as-token";
    let dir = common::TempDir::new("unread-as");
    let registration = format!(
        "id: ghosts\nurl: null\nas_token: {AS_TOKEN}\nhs_token: unread-hs-token\n\
         sender_localpart: ghostbot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@ghost_.*'\n"
    );
    let path = common::write_file(&dir.0, "registration.yaml", registration.as_bytes());
    let node = Node::start_with_config(&format!("app_service_config_files = [{:?}]", path.to_str().unwrap()));
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = public_room(&alice, &[&bob]);
    let mut service = node.client();
    service.token = Some(AS_TOKEN.into());
    let (status, answer) = service.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "ghost_1", "inhibit_login": true}),
    );
    assert_eq!(status, 200, "{answer}");
    let ghost = enc(&node.user_id("ghost_1"));
    let (status, answer) =
        service.post(&format!("/_matrix/client/v3/join/{}?user_id={ghost}", enc(&room)), &json!({}));
    assert_eq!(status, 200, "{answer}");

    send_text(&alice, &room, "hello everyone");
    assert_eq!(counts(&bob, &room), (1, 0));
    let (status, body) = service.get(&format!("/_matrix/client/v3/sync?user_id={ghost}"));
    assert_eq!(status, 200, "{body}");
    let joined = &body["rooms"]["join"][room.as_str()];
    assert!(joined.is_object(), "the ghost is in the room: {body}");
    let count = joined["unread_notifications"]["notification_count"].as_u64().unwrap_or(0);
    assert_eq!(count, 0, "{joined}");
}

/// The push rules decide what counts, evaluated when the event is stored:
/// an `m.mentions` of the user highlights
/// (<https://spec.matrix.org/latest/client-server-api/#mentioning-the-bot-and-other-users>,
/// `.m.rule.is_user_mention`); a keyword (content) rule matches whole words
/// only; a room rule with no actions mutes the room, except for overrides
/// such as a mention, which come first
/// (<https://spec.matrix.org/latest/client-server-api/#push-rules>). A rule
/// change applies to events stored after it; what already counted stays
/// counted (the spec leaves this to the server; Synapse does the same).
#[test]
fn mentions_keywords_muted_rooms_and_rule_changes() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = public_room(&alice, &[&bob]);
    let muted = public_room(&alice, &[&bob]);
    let mention = |room: &str, body: &str| {
        let content = json!({"msgtype": "m.text", "body": body, "m.mentions": {"user_ids": [alice.user_id]}});
        send(&bob, room, "m.room.message", content);
    };

    mention(&room, "have a look");
    assert_eq!(counts(&alice, &room), (1, 1));

    let keyword = "/_matrix/client/v3/pushrules/global/content/tea";
    let rule = json!({"pattern": "tea", "actions": ["notify", {"set_tweak": "highlight"}]});
    assert_eq!(alice.put(keyword, &rule).0, 200);
    send_text(&bob, &room, "time for tea");
    assert_eq!(counts(&alice, &room), (2, 2));
    send_text(&bob, &room, "a steady hand");
    assert_eq!(counts(&alice, &room), (3, 2), "a keyword matches whole words");

    let mute = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&muted));
    assert_eq!(alice.put(&mute, &json!({"actions": []})).0, 200);
    send_text(&bob, &muted, "nobody hears this");
    assert_eq!(counts(&alice, &muted), (0, 0));
    mention(&muted, "but this one");
    assert_eq!(counts(&alice, &muted), (1, 1), "a mention overrides a muted room");

    assert_eq!(alice.delete(keyword, &json!({})).0, 200);
    send_text(&bob, &room, "more tea");
    assert_eq!(counts(&alice, &room), (4, 2), "earlier highlights stay, new events follow the new rules");
    assert_eq!(alice.delete(&mute, &json!({})).0, 200);
    send_text(&bob, &muted, "heard again");
    assert_eq!(counts(&alice, &muted), (2, 1));
}
