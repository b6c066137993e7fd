//! Room aliases, the published room directory, the user directory and reports,
//! driven over HTTP against the real binary.

mod common;

use std::collections::HashSet;

use common::rooms::create_room;
use common::{Client, Node, assert_error};
use serde_json::json;

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", alias.replace('#', "%23"))
}

fn join(client: &Client, room: &str) {
    let (status, body) = client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn aliases_are_created_resolved_listed_and_deleted() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    let alias = format!("#lounge:{}", node.server_name);

    let (status, body) = alice.put(&alias_path(&alias), &json!({ "room_id": room }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = node.client().get(&alias_path(&alias));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["servers"], json!([node.server_name]));

    // A taken alias: the spec's 409 M_UNKNOWN.
    join(&bob, &room);
    assert_error(&bob.put(&alias_path(&alias), &json!({ "room_id": room })), 409, "M_UNKNOWN");
    // Not a member, an unknown room, a remote alias, a bad alias.
    let other = create_room(&alice, json!({}));
    assert_error(
        &bob.put(&alias_path(&format!("#b:{}", node.server_name)), &json!({ "room_id": other })),
        403,
        "M_FORBIDDEN",
    );
    let unknown = format!("!nowhere:{}", node.server_name);
    assert_error(
        &bob.put(&alias_path(&format!("#c:{}", node.server_name)), &json!({ "room_id": unknown })),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put(&alias_path("#x:elsewhere.example"), &json!({ "room_id": room })),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&alice.put(&alias_path("lounge"), &json!({ "room_id": room })), 400, "M_INVALID_PARAM");
    assert_error(
        &node.client().get(&alias_path(&format!("#missing:{}", node.server_name))),
        404,
        "M_NOT_FOUND",
    );

    let (status, body) = bob.get(&format!("/_matrix/client/v3/rooms/{room}/aliases"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["aliases"], json!([alias]));
    let carol = node.register("carol");
    assert_error(&carol.get(&format!("/_matrix/client/v3/rooms/{room}/aliases")), 403, "M_FORBIDDEN");

    // Bob (power 0) may not delete Alice's alias; Alice, its creator, may.
    assert_error(&bob.delete(&alias_path(&alias), &json!({})), 403, "M_FORBIDDEN");
    let (status, body) = alice.delete(&alias_path(&alias), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_error(&node.client().get(&alias_path(&alias)), 404, "M_NOT_FOUND");
    assert_error(&alice.delete(&alias_path(&alias), &json!({})), 404, "M_NOT_FOUND");
}

#[test]
fn deleting_the_canonical_alias_updates_the_room_and_moderators_may_delete() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let alias = format!("#main:{}", node.server_name);
    let room = create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "main" }));
    join(&bob, &room);
    let bob_alias = format!("#bobs:{}", node.server_name);
    let (status, body) = bob.put(&alias_path(&bob_alias), &json!({ "room_id": room }));
    assert_eq!(status, 200, "{body}");
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias");
    let (status, body) = alice.put(&path, &json!({ "alias": alias, "alt_aliases": [bob_alias] }));
    assert_eq!(status, 200, "{body}");

    // Alice may change the canonical alias, so she may delete Bob's alias.
    let (status, body) = alice.delete(&alias_path(&bob_alias), &json!({}));
    assert_eq!(status, 200, "{body}");
    let (_, content) = alice.get(&path);
    assert_eq!(content, json!({ "alias": alias, "alt_aliases": [] }));
    let (status, body) = alice.delete(&alias_path(&alias), &json!({}));
    assert_eq!(status, 200, "{body}");
    let (_, content) = alice.get(&path);
    assert_eq!(content, json!({ "alt_aliases": [] }));
}

#[test]
fn the_directory_lists_published_rooms_and_pages_cover_each_room_once() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let mut public = Vec::new();
    for index in 0..5 {
        let body = json!({ "visibility": "public", "name": format!("Room {index}"), "topic": if index == 2 { "gardening tips" } else { "chat" } });
        public.push(create_room(&alice, body));
    }
    join(&bob, &public[3]);
    let private = create_room(&alice, json!({ "name": "Secret" }));

    // The whole list, largest room first, without an access token.
    let (status, body) = node.client().get("/_matrix/client/v3/publicRooms");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_room_count_estimate"], 5);
    let chunk = body["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["room_id"], public[3].as_str());
    assert_eq!(chunk[0]["num_joined_members"], 2);
    assert_eq!(chunk[0]["join_rule"], "public");
    assert_eq!(chunk[0]["world_readable"], false);
    assert!(chunk.iter().all(|room| room["room_id"] != private.as_str()));

    // Pages of two: each room exactly once, and prev_batch leads back.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/publicRooms?limit=2&since={token}"),
            None => "/_matrix/client/v3/publicRooms?limit=2".to_string(),
        };
        let (status, body) = alice.get(&path);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["prev_batch"].is_string(), pages > 0, "{body}");
        seen.extend(
            body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|room| room["room_id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match body["next_batch"].as_str() {
            Some(next) => since = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);
    assert_error(&alice.get("/_matrix/client/v3/publicRooms?since=bogus"), 400, "M_INVALID_PARAM");

    // Filtered by a search term (topic, case-insensitive) and by room type.
    let (status, body) = alice
        .post("/_matrix/client/v3/publicRooms", &json!({ "filter": { "generic_search_term": "GARDEN" } }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(body["chunk"][0]["room_id"], public[2].as_str());
    let (_, body) =
        alice.post("/_matrix/client/v3/publicRooms", &json!({ "filter": { "room_types": ["m.space"] } }));
    assert_eq!(body["chunk"], json!([]));
    let (_, body) =
        alice.post("/_matrix/client/v3/publicRooms", &json!({ "filter": { "room_types": [null] } }));
    assert_eq!(body["chunk"].as_array().unwrap().len(), 5);
    let (status, _) = alice.post("/_matrix/client/v3/publicRooms?server=elsewhere.example", &json!({}));
    assert_eq!(status, 502);
}

#[test]
fn directory_visibility_needs_power_in_the_room() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    let path = format!("/_matrix/client/v3/directory/list/room/{room}");
    let (_, body) = node.client().get(&path);
    assert_eq!(body, json!({ "visibility": "private" }));

    assert_error(&bob.put(&path, &json!({ "visibility": "public" })), 403, "M_FORBIDDEN");
    join(&bob, &room);
    assert_error(&bob.put(&path, &json!({ "visibility": "public" })), 403, "M_FORBIDDEN");
    let (status, body) = alice.put(&path, &json!({ "visibility": "public" }));
    assert_eq!(status, 200, "{body}");
    let (_, body) = node.client().get(&path);
    assert_eq!(body, json!({ "visibility": "public" }));
    let (_, body) = node.client().get("/_matrix/client/v3/publicRooms");
    assert_eq!(body["chunk"][0]["room_id"], room.as_str());
    assert_error(&alice.put(&path, &json!({ "visibility": "hidden" })), 400, "M_INVALID_PARAM");
    let unknown = format!("/_matrix/client/v3/directory/list/room/!nope:{}", node.server_name);
    assert_error(&node.client().get(&unknown), 404, "M_NOT_FOUND");

    let (status, _) = alice.put(&path, &json!({ "visibility": "private" }));
    assert_eq!(status, 200);
    let (_, body) = node.client().get("/_matrix/client/v3/publicRooms");
    assert_eq!(body["chunk"], json!([]));
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3user_directorysearch>
/// (users sharing a room with the searcher, and users joined to rooms with a
/// `public` join rule or `world_readable` history; Synapse's default scope).
#[test]
fn the_user_directory_finds_room_mates_and_public_room_members_only() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let carol = node.register("carol");
    let dave = node.register("dave");
    let (status, _) = bob.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
        &json!({ "displayname": "Bobby Tables" }),
    );
    assert_eq!(status, 200);
    // Alice and Bob share a private room; Carol is alone in a public one; Dave in a private one.
    let shared = create_room(&alice, json!({ "preset": "private_chat", "invite": [bob.user_id] }));
    join(&bob, &shared);
    create_room(&carol, json!({ "preset": "public_chat" }));
    create_room(&dave, json!({ "preset": "private_chat" }));

    let search = |term: &str, limit: Option<u64>| {
        let mut body = json!({ "search_term": term });
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        let (status, answer) = alice.post("/_matrix/client/v3/user_directory/search", &body);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let found = search("TABLES", None);
    assert_eq!(found["results"], json!([{ "user_id": bob.user_id, "display_name": "Bobby Tables" }]));
    assert_eq!(found["limited"], false);
    assert_eq!(search("carol", None)["results"][0]["user_id"], carol.user_id.as_str());
    assert_eq!(search("dave", None)["results"], json!([]));
    let limited = search(&node.server_name, Some(1));
    assert_eq!(limited["results"].as_array().unwrap().len(), 1);
    assert_eq!(limited["limited"], true);
    assert_error(&alice.post("/_matrix/client/v3/user_directory/search", &json!({})), 400, "M_MISSING_PARAM");
}

/// Who is searchable is decided by the rooms' current state: a user whose
/// only public room becomes invite-only drops out, one in a private room
/// whose history is `world_readable` is found, and a room mate who leaves
/// drops out. The searcher is not a result of their own private rooms
/// (Synapse's `users_who_share_private_rooms` pairs distinct users).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3user_directorysearch>.
#[test]
fn the_user_directory_follows_join_rules_history_visibility_and_leaves() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let carol = node.register("carol");
    let erin = node.register("erin");
    let search = |term: &str| {
        let (status, answer) =
            alice.post("/_matrix/client/v3/user_directory/search", &json!({ "search_term": term }));
        assert_eq!(status, 200, "{answer}");
        let results = answer["results"].as_array().unwrap();
        results.iter().map(|result| result["user_id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let shared = create_room(&alice, json!({ "preset": "private_chat", "invite": [bob.user_id] }));
    join(&bob, &shared);
    let carols = create_room(&carol, json!({ "preset": "public_chat" }));
    let erins = create_room(&erin, json!({ "preset": "private_chat" }));
    assert_eq!(search("bob"), [bob.user_id.as_str()]);
    assert_eq!(search("carol"), [carol.user_id.as_str()]);
    assert_eq!(search("erin"), Vec::<String>::new());
    assert_eq!(search("alice"), Vec::<String>::new());

    // Carol's room stops being public: she is no longer found.
    let path = format!("/_matrix/client/v3/rooms/{carols}/state/m.room.join_rules/");
    assert_eq!(carol.put(&path, &json!({ "join_rule": "invite" })).0, 200);
    assert_eq!(search("carol"), Vec::<String>::new());
    // Erin's private room becomes world-readable: she is found.
    let path = format!("/_matrix/client/v3/rooms/{erins}/state/m.room.history_visibility/");
    assert_eq!(erin.put(&path, &json!({ "history_visibility": "world_readable" })).0, 200);
    assert_eq!(search("erin"), [erin.user_id.as_str()]);
    // Bob leaves the only room he shared with alice.
    assert_eq!(bob.post(&format!("/_matrix/client/v3/rooms/{shared}/leave"), &json!({})).0, 200);
    assert_eq!(search("bob"), Vec::<String>::new());
}

#[test]
fn reports_need_membership_for_events_and_a_known_room() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    let (_, sent) = alice.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
        &json!({ "msgtype": "m.text", "body": "hi" }),
    );
    let event_id = sent["event_id"].as_str().unwrap();
    let report = format!("/_matrix/client/v3/rooms/{room}/report/{event_id}");

    // Not joined: 404, as for an unknown event.
    assert_error(&bob.post(&report, &json!({ "reason": "rude" })), 404, "M_NOT_FOUND");
    join(&bob, &room);
    let (status, body) = bob.post(&report, &json!({ "reason": "rude", "score": -100 }));
    assert_eq!(status, 200, "{body}");
    let unknown = format!("/_matrix/client/v3/rooms/{room}/report/$nothing");
    assert_error(&bob.post(&unknown, &json!({ "reason": "rude" })), 404, "M_NOT_FOUND");
    assert_error(&bob.post(&report, &json!({ "score": 5 })), 400, "M_INVALID_PARAM");

    // Rooms may be reported by anyone; unknown rooms are 404.
    let carol = node.register("carol");
    let (status, body) =
        carol.post(&format!("/_matrix/client/v3/rooms/{room}/report"), &json!({ "reason": "spam" }));
    assert_eq!(status, 200, "{body}");
    let nowhere = format!("/_matrix/client/v3/rooms/!nowhere:{}/report", node.server_name);
    assert_error(&carol.post(&nowhere, &json!({ "reason": "spam" })), 404, "M_NOT_FOUND");
    let (status, body) =
        carol.post(&format!("/_matrix/client/v3/users/{}/report", alice.user_id), &json!({ "reason": "x" }));
    assert_eq!(status, 200, "{body}");
    let ghost = format!("/_matrix/client/v3/users/@ghost:{}/report", node.server_name);
    assert_error(&carol.post(&ghost, &json!({ "reason": "x" })), 404, "M_NOT_FOUND");
}
