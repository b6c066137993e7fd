//! Server-side search over room events: matching bodies, names and topics,
//! ordering, paging, event context, filters, redaction and history visibility.

mod common;
mod timeline_helpers;

use std::collections::HashSet;

use common::{Client, Node, assert_error};
use serde_json::{Value, json};
use timeline_helpers::*;

fn search(client: &Client, criteria: Value, next_batch: Option<&str>) -> Value {
    let path = match next_batch {
        Some(batch) => format!("/_matrix/client/v3/search?next_batch={}", encode(batch)),
        None => "/_matrix/client/v3/search".to_string(),
    };
    let (status, answer) = client.post(&path, &json!({"search_categories": {"room_events": criteria}}));
    assert_eq!(status, 200, "{answer}");
    answer["search_categories"]["room_events"].clone()
}

fn result_bodies(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["result"]["content"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn search_finds_words_orders_and_pages_exactly_once() {
    let node = Node::start();
    let alice = node.register("alice");
    let room = create_room(
        &alice,
        json!({"preset": "private_chat", "name": "Martian council", "topic": "red planets"}),
    );
    for n in 0..7 {
        say(&alice, &room, &format!("martians landed, report {n}"));
    }
    say(&alice, &room, "nothing to see here");
    say(&alice, &room, "Martians and men: martians everywhere");

    let found = search(&alice, json!({"search_term": "martians", "order_by": "recent"}), None);
    assert_eq!(found["count"], 9, "{found}"); // 8 bodies and the room name
    assert!(found["highlights"].as_array().unwrap().contains(&json!("martians")));
    // Newest first; the default filter limit is 10, so one page holds all.
    assert_eq!(result_bodies(&found)[0], "Martians and men: martians everywhere");
    assert_eq!(found["results"][0]["result"]["room_id"], room.as_str());
    assert!(found.get("next_batch").is_none(), "{found}");

    // Paging three at a time, in both orders, sees every match once.
    for order in ["recent", "rank"] {
        let mut seen = Vec::new();
        let mut batch: Option<String> = None;
        loop {
            let criteria = json!({"search_term": "martian", "order_by": order, "filter": {"limit": 3}});
            let page = search(&alice, criteria, batch.as_deref());
            assert!(page["results"].as_array().unwrap().len() <= 3);
            for result in page["results"].as_array().unwrap() {
                assert!(result["rank"].is_number(), "{result}");
                seen.push(result["result"]["event_id"].as_str().unwrap().to_string());
            }
            match page["next_batch"].as_str() {
                Some(next) => batch = Some(next.to_string()),
                None => break,
            }
            assert!(seen.len() <= 9, "{order}: {seen:?}");
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (9, 9), "{order}: {seen:?}");
    }
    // Rank puts the message with the most hits first.
    let ranked = search(&alice, json!({"search_term": "martians", "keys": ["content.body"]}), None);
    assert_eq!(result_bodies(&ranked)[0], "Martians and men: martians everywhere");
    assert_eq!(ranked["count"], 8);

    // Keys choose the field.
    let names = search(&alice, json!({"search_term": "council", "keys": ["content.name"]}), None);
    assert_eq!(names["results"][0]["result"]["type"], "m.room.name");
    let topics = search(&alice, json!({"search_term": "planet", "keys": ["content.topic"]}), None);
    assert_eq!(topics["results"][0]["result"]["type"], "m.room.topic");
    let none = search(&alice, json!({"search_term": "council", "keys": ["content.body"]}), None);
    assert_eq!(none["results"], json!([]));

    // Words all have to match, and search syntax is taken as words.
    let both = search(&alice, json!({"search_term": "martians men"}), None);
    assert_eq!(result_bodies(&both), ["Martians and men: martians everywhere"]);
    let odd = search(&alice, json!({"search_term": "\"martians\" OR NEAR(x"}), None);
    assert_eq!(odd["results"], json!([]));

    let (status, answer) =
        alice.post("/_matrix/client/v3/search", &json!({"search_categories": {"room_events": {}}}));
    assert_error(&(status, answer), 400, "M_BAD_JSON");
    let (status, answer) = alice.post(
        "/_matrix/client/v3/search",
        &json!({"search_categories": {"room_events": {"search_term": "x", "order_by": "magic"}}}),
    );
    assert_error(&(status, answer), 400, "M_INVALID_PARAM");
    let (status, answer) = alice.post(
        "/_matrix/client/v3/search?next_batch=zzz",
        &json!({"search_categories": {"room_events": {"search_term": "x"}}}),
    );
    assert_error(&(status, answer), 400, "M_INVALID_PARAM");
}

#[test]
fn search_gives_context_filters_rooms_and_forgets_redacted_events() {
    let node = Node::start();
    let alice = node.register("alice");
    let room = create_room(&alice, json!({"preset": "private_chat"}));
    let other = create_room(&alice, json!({"preset": "private_chat"}));
    say(&alice, &room, "one");
    say(&alice, &room, "two");
    let target = say(&alice, &room, "the needle");
    say(&alice, &room, "three");
    say(&alice, &other, "another needle");

    let found = search(
        &alice,
        json!({"search_term": "needle", "order_by": "recent", "filter": {"rooms": [room]},
               "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": true}}),
        None,
    );
    assert_eq!(result_bodies(&found), ["the needle"]);
    let context = &found["results"][0]["context"];
    assert_eq!(bodies(&context["events_before"]), ["two", "one"]);
    assert_eq!(bodies(&context["events_after"]), ["three"]);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert!(context["profile_info"].get(&alice.user_id).is_some(), "{context}");

    let elsewhere = search(&alice, json!({"search_term": "needle", "filter": {"not_rooms": [room]}}), None);
    assert_eq!(result_bodies(&elsewhere), ["another needle"]);
    let with_state = search(&alice, json!({"search_term": "needle", "include_state": true}), None);
    assert!(
        with_state["state"][&room].as_array().unwrap().iter().any(|event| event["type"] == "m.room.create")
    );

    redact(&alice, &room, &target);
    let after = search(&alice, json!({"search_term": "needle"}), None);
    assert_eq!(result_bodies(&after), ["another needle"]);
    assert_eq!(after["count"], 1);
}

#[test]
fn search_respects_history_visibility() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let carol = node.register("carol");
    let room = room_with_visibility(&alice, "joined");
    say(&alice, &room, "secret plans before bob");
    join(&bob, &room);
    say(&alice, &room, "public plans with bob");
    leave(&bob, &room);
    say(&alice, &room, "plans after bob left");

    let everything = search(&alice, json!({"search_term": "plans", "order_by": "recent"}), None);
    assert_eq!(result_bodies(&everything).len(), 3);
    let bobs = search(&bob, json!({"search_term": "plans"}), None);
    assert_eq!(result_bodies(&bobs), ["public plans with bob"]);
    let carols = search(&carol, json!({"search_term": "plans"}), None);
    assert_eq!(carols["results"], json!([]));
    assert_eq!(carols["count"], 0);
}

#[test]
fn events_not_yet_indexed_at_a_crash_are_found_after_the_restart() {
    let mut node = Node::start();
    let alice = node.register("alice");
    let room = create_room(&alice, json!({"preset": "private_chat"}));
    say(&alice, &room, "indexed before the crash: pelican");
    assert_eq!(search(&alice, json!({"search_term": "pelican"}), None)["count"], 1);
    // Indexing is batched a moment after a send: kill the node before it runs.
    for n in 0..5 {
        say(&alice, &room, &format!("pelican number {n} flew by"));
    }
    node.kill9();
    node.restart();
    let found = search(&alice, json!({"search_term": "pelican", "order_by": "recent"}), None);
    assert_eq!(found["count"], 6, "{found}");
    assert_eq!(result_bodies(&found)[0], "pelican number 4 flew by");
}

/// `count` must not tell a user about matches she may not see: after she
/// left, two new messages with her word gave `count` 2 and no results.
#[test]
fn search_count_leaks_nothing_posted_after_leaving() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    for visibility in ["shared", "joined", "invited"] {
        let room = room_with_visibility(&alice, visibility);
        join(&bob, &room);
        leave(&bob, &room);
        let word = format!("zanzibar{visibility}");
        say(&alice, &room, &format!("{word} one"));
        say(&alice, &room, &format!("{word} two"));
        let bobs = search(&bob, json!({"search_term": word}), None);
        assert_eq!(bobs["results"], json!([]), "{visibility}");
        assert_eq!(bobs["count"], 0, "{visibility}: {bobs}");
        let alices = search(&alice, json!({"search_term": word}), None);
        assert_eq!(alices["count"], 2, "{visibility}");
    }
}
