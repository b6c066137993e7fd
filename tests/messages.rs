//! Reading history: /messages paging both ways with filters and lazy-loaded
//! members, /context, /timestamp_to_event, and history visibility on each.

mod common;
mod timeline_helpers;

use std::collections::HashSet;

use common::rooms::{member_keys, public_room};
use common::{Node, assert_error};
use serde_json::json;
use timeline_helpers::*;

#[test]
fn paging_backwards_and_forwards_covers_every_event_exactly_once() {
    let node = Node::start();
    let alice = node.register("alice");
    let room = create_room(&alice, json!({"preset": "private_chat"}));
    for n in 0..23 {
        say(&alice, &room, &format!("message {n}"));
    }
    // Backwards from the end of the room (no `from`, as v1.3 allows).
    let mut backwards = Vec::new();
    let mut query = "dir=b&limit=7".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = messages(&alice, &room, &query);
        assert_eq!(status, 200, "{page}");
        assert!(page["start"].is_string(), "{page}");
        assert!(page["chunk"].as_array().unwrap().len() <= 7);
        backwards.extend(ids(&page["chunk"]));
        pages += 1;
        match page["end"].as_str() {
            Some(end) => query = format!("dir=b&limit=7&from={end}"),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    let unique: HashSet<&String> = backwards.iter().collect();
    assert_eq!(unique.len(), backwards.len(), "an event came twice");
    // 23 messages and the room's creation events (create, member, power
    // levels, join rules, history visibility, guest access).
    assert_eq!(backwards.len(), 29, "{backwards:?}");

    let mut forwards = Vec::new();
    let mut query = "dir=f&limit=5&from=s0".to_string();
    loop {
        let (status, page) = messages(&alice, &room, &query);
        assert_eq!(status, 200, "{page}");
        forwards.extend(ids(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => query = format!("dir=f&limit=5&from={end}"),
            None => break,
        }
    }
    let mut reversed = backwards.clone();
    reversed.reverse();
    assert_eq!(forwards, reversed);

    // The newest page comes newest first, and its bodies are the last messages.
    let (_, page) = messages(&alice, &room, "dir=b&limit=3");
    assert_eq!(bodies(&page["chunk"]), ["message 22", "message 21", "message 20"]);
    // `to` stops a page.
    let (_, first) = messages(&alice, &room, "dir=b&limit=2");
    let end = first["end"].as_str().unwrap();
    let (_, bounded) = messages(&alice, &room, &format!("dir=f&from={end}&to=s999999"));
    assert_eq!(bodies(&bounded["chunk"]), ["message 21", "message 22"]);
    let (_, none) = messages(&alice, &room, &format!("dir=b&from={end}&to={end}"));
    assert_eq!(none["chunk"], json!([]));
    assert!(none.get("end").is_none(), "{none}");

    assert_error(&messages(&alice, &room, "limit=3"), 400, "M_MISSING_PARAM");
    assert_error(&messages(&alice, &room, "dir=sideways"), 400, "M_INVALID_PARAM");
    assert_error(&messages(&alice, &room, "dir=b&from=garbage"), 400, "M_INVALID_PARAM");
}

#[test]
fn filters_apply_and_lazy_loading_returns_the_senders_members() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = public_room(&alice, &[&bob, &carol]);
    say(&alice, &room, "from alice");
    say(&bob, &room, "from bob");
    send_event(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "pic", "url": "mxc://x/y"}),
    );
    send_event(&bob, &room, "org.example.custom", json!({"body": "custom"}));

    let only_messages = filter_param(&json!({"types": ["m.room.message"], "not_senders": [bob.user_id]}));
    let (status, page) = messages(&alice, &room, &format!("dir=b&filter={only_messages}"));
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["pic", "from alice"]);
    assert!(page["chunk"].as_array().unwrap().iter().all(|event| event["type"] == "m.room.message"));

    let with_url = filter_param(&json!({"contains_url": true}));
    let (_, page) = messages(&alice, &room, &format!("dir=b&filter={with_url}"));
    assert_eq!(bodies(&page["chunk"]), ["pic"]);
    assert_eq!(page["chunk"].as_array().unwrap().len(), 1);

    let wildcard = filter_param(&json!({"types": ["org.*"], "senders": [bob.user_id]}));
    let (_, page) = messages(&alice, &room, &format!("dir=b&filter={wildcard}"));
    assert_eq!(page["chunk"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["chunk"][0]["type"], "org.example.custom");

    // Lazy loading: the members of the chunk's senders, and nobody else.
    let lazy = filter_param(&json!({"lazy_load_members": true, "types": ["m.room.message"], "limit": 2}));
    let (_, page) = messages(&alice, &room, &format!("dir=b&filter={lazy}"));
    let members: HashSet<String> = page["state"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|event| assert_eq!(event["type"], "m.room.member"))
        .map(|event| event["state_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members, HashSet::from([alice.user_id.clone(), bob.user_id.clone()]), "{page}");
    let (_, plain) = messages(&alice, &room, "dir=b");
    assert_eq!(plain["state"], json!([]));
    // The same members as /joined_members lists (which once crashed the node
    // on a double storage borrow).
    let (status, joined) = alice.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", encode(&room)));
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["joined"].as_object().unwrap().len(), 3, "{joined}");

    // A stored filter works by ID (its room timeline part).
    let (status, created) = alice.post(
        &format!("/_matrix/client/v3/user/{}/filter", encode(&alice.user_id)),
        &json!({"room": {"timeline": {"senders": [carol.user_id]}}}),
    );
    assert_eq!(status, 200, "{created}");
    let filter_id = created["filter_id"].as_str().unwrap();
    let (_, page) = messages(&alice, &room, &format!("dir=b&filter={filter_id}"));
    let events = page["chunk"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["sender"], carol.user_id.as_str());

    assert_error(&messages(&alice, &room, &format!("dir=b&filter={}", encode("{nope"))), 400, "M_NOT_JSON");
    assert_error(
        &messages(
            &alice,
            &room,
            &format!("dir=b&filter={}", filter_param(&json!({"types": "m.room.message"}))),
        ),
        400,
        "M_BAD_JSON",
    );
}

#[test]
fn history_visibility_limits_what_joiners_leavers_and_strangers_read() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = room_with_visibility(&alice, "joined");
    say(&alice, &room, "before bob");
    join(&bob, &room);
    say(&alice, &room, "while bob is here");
    let (status, page) = messages(&bob, &room, "dir=b&limit=50");
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["while bob is here"], "{page}");
    // His own join is visible to him. (The room's first events predate the
    // `joined` setting: they were `shared`, which members may read.)
    let chunk = page["chunk"].as_array().unwrap();
    assert!(chunk.iter().any(|event| event["state_key"] == bob.user_id.as_str()), "{page}");
    assert!(page.get("end").is_none(), "{page}");

    leave(&bob, &room);
    say(&alice, &room, "after bob left");
    let (status, page) = messages(&bob, &room, "dir=b&limit=50");
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["while bob is here"]);
    assert_eq!(page["chunk"][0]["content"]["membership"], "leave", "his leave comes first: {page}");
    let (_, forwards) = messages(&bob, &room, "dir=f&from=s0&limit=50");
    assert_eq!(bodies(&forwards["chunk"]), ["while bob is here"]);

    // Carol was never in the room.
    assert_error(&messages(&carol, &room, "dir=b"), 403, "M_FORBIDDEN");
    // ... but a world-readable room is open to her.
    let open = room_with_visibility(&alice, "world_readable");
    say(&alice, &open, "for everyone");
    let (status, page) = messages(&carol, &open, "dir=b");
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["for everyone"]);

    // With `shared` visibility a later joiner reads everything.
    let shared = room_with_visibility(&alice, "shared");
    say(&alice, &shared, "old news");
    join(&bob, &shared);
    let (_, page) = messages(&bob, &shared, "dir=b");
    assert_eq!(bodies(&page["chunk"]), ["old news"]);
}

/// History once closed stays closed to later joiners, even when the room
/// opens it afterwards: an event's visibility is the room's
/// `history_visibility` at that event, not now (and `shared` history opened
/// later shows only what was sent from then on, with the earlier `shared`
/// stretch).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#history-visibility>.
#[test]
fn history_closed_then_opened_stays_closed_where_it_was() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = room_with_visibility(&alice, "joined");
    say(&alice, &room, "while joined-only");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", encode(&room));
    let (status, answer) = alice.put(&path, &json!({"history_visibility": "shared"}));
    assert_eq!(status, 200, "{answer}");
    say(&alice, &room, "while shared");
    join(&bob, &room);
    let (status, page) = messages(&bob, &room, "dir=b&limit=50");
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["while shared"], "{page}");
    // The initial /sync shows the same timeline.
    let (status, sync) = bob.get("/_matrix/client/v3/sync");
    assert_eq!(status, 200, "{sync}");
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(bodies(timeline), ["while shared"], "{sync}");
    // In a room always `shared`, the joiner reads everything.
    let open = room_with_visibility(&alice, "shared");
    say(&alice, &open, "old news");
    join(&bob, &open);
    let (_, sync) = bob.get("/_matrix/client/v3/sync");
    assert_eq!(bodies(&sync["rooms"]["join"][&open]["timeline"]["events"]), ["old news"], "{sync}");
}

#[test]
fn context_splits_the_limit_and_respects_visibility() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = room_with_visibility(&alice, "joined");
    let ids_sent: Vec<String> = (0..9).map(|n| say(&alice, &room, &format!("m{n}"))).collect();
    let path = |event: &str, query: &str| {
        format!("/_matrix/client/v3/rooms/{}/context/{}?{query}", encode(&room), encode(event))
    };
    let (status, context) = alice.get(&path(&ids_sent[4], "limit=4"));
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["event"]["content"]["body"], "m4");
    assert_eq!(bodies(&context["events_before"]), ["m3", "m2"]);
    assert_eq!(bodies(&context["events_after"]), ["m5", "m6"]);
    assert!(context["state"].as_array().unwrap().iter().any(|event| event["type"] == "m.room.create"));
    // The tokens continue where the context stops.
    let start = context["start"].as_str().unwrap();
    let (_, earlier) = messages(&alice, &room, &format!("dir=b&limit=2&from={start}"));
    assert_eq!(bodies(&earlier["chunk"]), ["m1", "m0"]);
    let end = context["end"].as_str().unwrap();
    let (_, later) = messages(&alice, &room, &format!("dir=f&from={end}"));
    assert_eq!(bodies(&later["chunk"]), ["m7", "m8"]);

    let lazy = filter_param(&json!({"lazy_load_members": true}));
    let (_, context) = alice.get(&path(&ids_sent[8], &format!("limit=2&filter={lazy}")));
    let members = member_keys(&context["state"]);
    assert_eq!(members, [alice.user_id.as_str()]);

    join(&bob, &room);
    assert_error(&bob.get(&path(&ids_sent[4], "")), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&path("$nope", "")), 404, "M_NOT_FOUND");
    let strangers_room = create_room(&bob, json!({"preset": "private_chat"}));
    assert_error(
        &alice.get(&format!(
            "/_matrix/client/v3/rooms/{}/context/{}",
            encode(&strangers_room),
            encode(&ids_sent[0])
        )),
        403,
        "M_FORBIDDEN",
    );
}

#[test]
fn timestamp_to_event_finds_the_nearest_visible_event() {
    let node = Node::start();
    let [alice, carol] = node.register_each(["alice", "carol"]);
    let room = create_room(&alice, json!({"preset": "private_chat"}));
    let last = say(&alice, &room, "newest");
    let path = |query: &str| format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?{query}", encode(&room));
    let (status, found) = alice.get(&path("ts=0&dir=f"));
    assert_eq!(status, 200, "{found}");
    let (_, first) = messages(&alice, &room, "dir=f&from=s0&limit=1");
    assert_eq!(found["event_id"], first["chunk"][0]["event_id"]);
    assert_eq!(first["chunk"][0]["type"], "m.room.create");
    assert!(found["origin_server_ts"].is_i64());

    let (status, found) = alice.get(&path("ts=99999999999999&dir=b"));
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], last.as_str());
    assert_error(&alice.get(&path("ts=99999999999999&dir=f")), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&path("ts=0")), 400, "M_MISSING_PARAM");
    assert_error(&alice.get(&path("dir=f")), 400, "M_MISSING_PARAM");
    assert_error(&alice.get(&path("ts=soon&dir=f")), 400, "M_INVALID_PARAM");
    assert_error(&carol.get(&path("ts=0&dir=f")), 403, "M_FORBIDDEN");
}
