//! Relations: bundled aggregations (edits, threads, references; annotations
//! not bundled) on every read path, /relations with its filters, paging and
//! recursion, /threads, and history visibility on all of them.

mod common;
mod timeline_helpers;

use common::rooms::public_room;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};
use timeline_helpers::*;

fn edit(client: &Client, room: &str, original: &str, body: &str) -> String {
    send_event(
        client,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text", "body": format!("* {body}"),
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }),
    )
}

fn reply_in_thread(client: &Client, room: &str, root: &str, body: &str) -> String {
    send_event(
        client,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
}

fn react(client: &Client, room: &str, target: &str, key: &str) -> String {
    send_event(
        client,
        room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}),
    )
}

fn get_event(client: &Client, room: &str, event_id: &str) -> Value {
    let (status, event) =
        client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", encode(room), encode(event_id)));
    assert_eq!(status, 200, "{event}");
    event
}

fn relations(client: &Client, room: &str, path: &str, query: &str) -> (u16, Value) {
    client.get(&format!("/_matrix/client/v1/rooms/{}/relations/{path}?{query}", encode(room)))
}

fn find<'a>(events: &'a Value, event_id: &str) -> &'a Value {
    events.as_array().unwrap().iter().find(|event| event["event_id"] == event_id).expect("event missing")
}

#[test]
fn the_latest_own_edit_is_bundled_on_every_read_path() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let original = say(&alice, &room, "I like cake");
    let edits = [
        edit(&alice, &room, &original, "I like chocolate cake"),
        edit(&alice, &room, &original, "I like all cake"),
    ];
    // An edit by someone else is not valid and must not win.
    edit(&bob, &room, &original, "bob was here");
    react(&bob, &room, &original, "👍");
    // The spec's "most recent": by origin_server_ts, then the larger event ID
    // (two edits can share a millisecond).
    let latest = edits
        .iter()
        .map(|id| get_event(&alice, &room, id))
        .max_by_key(|event| {
            (event["origin_server_ts"].as_i64(), event["event_id"].as_str().unwrap().to_string())
        })
        .unwrap();
    let latest_body = latest["content"]["m.new_content"]["body"].as_str().unwrap().to_string();
    let latest = latest["event_id"].as_str().unwrap().to_string();

    let check = |event: &Value, path: &str| {
        let replace = &event["unsigned"]["m.relations"]["m.replace"];
        assert_eq!(replace["event_id"], latest.as_str(), "{path}: {event}");
        assert_eq!(replace["sender"], alice.user_id.as_str(), "{path}");
        assert_eq!(replace["content"]["m.new_content"]["body"], latest_body.as_str(), "{path}");
        // The original's content stays as sent.
        assert_eq!(event["content"]["body"], "I like cake", "{path}");
        // Annotations are not bundled (current spec).
        assert!(event["unsigned"]["m.relations"].get("m.annotation").is_none(), "{path}: {event}");
    };
    check(&get_event(&bob, &room, &original), "/event");
    let (_, page) = messages(&bob, &room, "dir=b&limit=10");
    check(find(&page["chunk"], &original), "/messages");
    let (_, context) =
        bob.get(&format!("/_matrix/client/v3/rooms/{}/context/{}?limit=2", encode(&room), encode(&original)));
    check(&context["event"], "/context");
    let (_, sync) = bob.get("/_matrix/client/v3/sync");
    check(find(&sync["rooms"]["join"][&room]["timeline"]["events"], &original), "/sync");

    // A redacted original bundles nothing.
    redact(&alice, &room, &original);
    let event = get_event(&bob, &room, &original);
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
    // An event with only another user's edit has no edit bundled.
    let second = say(&alice, &room, "second");
    edit(&bob, &room, &second, "hijacked");
    let event = get_event(&alice, &room, &second);
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
}

#[test]
fn threads_and_references_are_bundled_with_participation() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = public_room(&alice, &[&bob, &carol]);
    let root = say(&alice, &room, "thread root");
    reply_in_thread(&bob, &room, &root, "first reply");
    let second = reply_in_thread(&bob, &room, &root, "second reply");
    let edit_of_second = edit(&bob, &room, &second, "second reply, edited");
    let reference = send_event(
        &carol,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see above", "m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
    );

    for (client, participated) in [(&alice, true), (&bob, true), (&carol, false)] {
        let event = get_event(client, &room, &root);
        let thread = &event["unsigned"]["m.relations"]["m.thread"];
        assert_eq!(thread["count"], 2, "{event}");
        assert_eq!(thread["current_user_participated"], participated, "{}: {event}", client.user_id);
        assert_eq!(thread["latest_event"]["event_id"], second.as_str());
        // The latest event carries its own bundle (its edit).
        assert_eq!(
            thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"],
            edit_of_second.as_str()
        );
        assert_eq!(
            event["unsigned"]["m.relations"]["m.reference"],
            json!({"chunk": [{"event_id": reference}]})
        );
    }
}

#[test]
fn relations_filter_page_and_recurse() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let root = say(&alice, &room, "root");
    let replies: Vec<String> =
        (0..5).map(|n| reply_in_thread(&bob, &room, &root, &format!("reply {n}"))).collect();
    let reaction = react(&alice, &room, &root, "🎉");
    let nested = react(&alice, &room, &replies[0], "👀");
    say(&alice, &room, "unrelated");

    let (status, all) = relations(&alice, &room, &encode(&root), "");
    assert_eq!(status, 200, "{all}");
    // Default: newest first, 5 per page, no recursion.
    assert_eq!(ids(&all["chunk"])[0], reaction);
    assert_eq!(all["chunk"].as_array().unwrap().len(), 5);
    assert!(all.get("recursion_depth").is_none());
    let (_, rest) =
        relations(&alice, &room, &encode(&root), &format!("from={}", all["next_batch"].as_str().unwrap()));
    assert_eq!(ids(&rest["chunk"]), [replies[0].as_str()]);
    assert!(rest.get("next_batch").is_none(), "{rest}");
    assert!(rest["prev_batch"].is_string());

    // Forwards, one at a time, covers each thread reply once, oldest first.
    let mut seen = Vec::new();
    let mut query = "dir=f&limit=1".to_string();
    loop {
        let (status, page) = relations(&alice, &room, &format!("{}/m.thread", encode(&root)), &query);
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(next) => query = format!("dir=f&limit=1&from={next}"),
            None => break,
        }
        assert!(seen.len() <= 5, "{seen:?}");
    }
    assert_eq!(seen, replies);

    let (_, by_type) = relations(&alice, &room, &format!("{}/m.annotation/m.reaction", encode(&root)), "");
    assert_eq!(ids(&by_type["chunk"]), [reaction.as_str()]);
    let (_, none) = relations(&alice, &room, &format!("{}/m.annotation/m.room.message", encode(&root)), "");
    assert_eq!(none["chunk"], json!([]));

    // Recursion reaches the reaction to a thread reply.
    let (_, deep) = relations(&alice, &room, &encode(&root), "recurse=true&limit=50");
    assert_eq!(deep["recursion_depth"], 3);
    let deep_ids = ids(&deep["chunk"]);
    assert!(deep_ids.contains(&nested) && deep_ids.len() == 7, "{deep_ids:?}");
    let (_, shallow) = relations(&alice, &room, &encode(&root), "recurse=false&limit=50");
    assert!(!ids(&shallow["chunk"]).contains(&nested));
    assert_eq!(shallow["recursion_depth"], 1);

    // A redacted child drops out.
    redact(&alice, &room, &reaction);
    let (_, after) = relations(&alice, &room, &format!("{}/m.annotation", encode(&root)), "");
    assert_eq!(after["chunk"], json!([]));

    assert_error(&relations(&alice, &room, &encode("$missing"), ""), 404, "M_NOT_FOUND");
    assert_error(&relations(&alice, &room, &encode(&root), "dir=up"), 400, "M_INVALID_PARAM");
}

#[test]
fn relations_and_threads_respect_history_visibility() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = room_with_visibility(&alice, "joined");
    let early = say(&alice, &room, "early root");
    reply_in_thread(&alice, &room, &early, "early reply");
    join(&bob, &room);
    let later = say(&alice, &room, "later root");
    reply_in_thread(&alice, &room, &later, "later reply");

    assert_error(&relations(&bob, &room, &encode(&early), ""), 404, "M_NOT_FOUND");
    let (status, visible) = relations(&bob, &room, &encode(&later), "");
    assert_eq!(status, 200, "{visible}");
    assert_eq!(bodies(&visible["chunk"]), ["later reply"]);
    assert_error(&relations(&carol, &room, &encode(&later), ""), 403, "M_FORBIDDEN");

    let threads = |client: &Client, query: &str| {
        client.get(&format!("/_matrix/client/v1/rooms/{}/threads?{query}", encode(&room)))
    };
    let (_, list) = threads(&alice, "");
    assert_eq!(ids(&list["chunk"]), [later.clone(), early.clone()]);
    let (_, list) = threads(&bob, "");
    assert_eq!(ids(&list["chunk"]), [later.as_str()]);
    assert_error(&threads(&carol, ""), 403, "M_FORBIDDEN");
}

#[test]
fn threads_list_by_latest_activity_and_participation() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let first = say(&alice, &room, "first thread");
    let second = say(&bob, &room, "second thread");
    let third = say(&bob, &room, "third thread");
    reply_in_thread(&bob, &room, &second, "in second");
    reply_in_thread(&bob, &room, &third, "in third");
    reply_in_thread(&bob, &room, &first, "in first, most recent");
    say(&alice, &room, "not a thread");

    let threads = |client: &Client, query: &str| {
        let (status, list) =
            client.get(&format!("/_matrix/client/v1/rooms/{}/threads?{query}", encode(&room)));
        assert_eq!(status, 200, "{list}");
        list
    };
    let list = threads(&alice, "");
    assert_eq!(ids(&list["chunk"]), [first.clone(), third.clone(), second.clone()]);
    assert_eq!(list["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 1);
    // Paging, one thread per page.
    let page = threads(&alice, "limit=1");
    assert_eq!(ids(&page["chunk"]), [first.as_str()]);
    let next = page["next_batch"].as_str().unwrap();
    let page = threads(&alice, &format!("limit=2&from={next}"));
    assert_eq!(ids(&page["chunk"]), [third.clone(), second.clone()]);
    assert!(page.get("next_batch").is_none(), "{page}");
    // Alice took part only in the thread she started.
    let mine = threads(&alice, "include=participated");
    assert_eq!(ids(&mine["chunk"]), [first.as_str()]);
    let bobs = threads(&bob, "include=participated");
    assert_eq!(ids(&bobs["chunk"]).len(), 3);
    assert_error(
        &alice.get(&format!("/_matrix/client/v1/rooms/{}/threads?include=some", encode(&room))),
        400,
        "M_INVALID_PARAM",
    );
}
