//! The legacy client API the spec still lists, deprecated but used by bots
//! and test tools: the event stream `GET /events`, `GET /events/{eventId}`,
//! `GET /initialSync` and `GET /rooms/{roomId}/initialSync`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3events>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3eventseventid>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3initialsync>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidinitialsync>.

mod common;

use std::time::{Duration, Instant};

use common::rooms::{create_room, enc, room_path, send_text};
use common::{Node, assert_error};
use serde_json::{Value, json};

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().unwrap().to_string())
        .collect()
}

/// Spec (GET /events): "This will listen for new events and return them to
/// the caller. This will block until an event is received, or until the
/// timeout is reached"; `from` is a token from a previous call (or /sync's
/// `next_batch`), the answer has `start`, `end` and `chunk`.
#[test]
fn the_event_stream_pages_and_long_polls() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat"}));
    let (status, _) = bob.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 200);
    let (status, sync) = bob.get("/_matrix/client/v3/sync");
    assert_eq!(status, 200);
    let since = sync["next_batch"].as_str().unwrap().to_string();
    for i in 0..5 {
        send_text(&alice, &room_id, &format!("m{i}"));
    }

    // From /sync's token, three at a time, oldest first, in the client format.
    let (status, first) = bob.get(&format!("/_matrix/client/v3/events?from={}&limit=3", enc(&since)));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["start"], since.as_str());
    assert_eq!(bodies(&first["chunk"]), ["m0", "m1", "m2"]);
    let event = &first["chunk"][0];
    assert_eq!(event["room_id"], room_id.as_str());
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert!(event["event_id"].is_string() && event["origin_server_ts"].is_i64(), "{event}");
    let end = first["end"].as_str().unwrap().to_string();
    let (_, second) = bob.get(&format!("/_matrix/client/v3/events?from={}&limit=3", enc(&end)));
    assert_eq!(bodies(&second["chunk"]), ["m3", "m4"]);
    let end = second["end"].as_str().unwrap().to_string();

    // Nothing new: a zero timeout answers at once, empty, at the same place.
    let (status, empty) = bob.get(&format!("/_matrix/client/v3/events?from={}&timeout=0", enc(&end)));
    assert_eq!(status, 200);
    assert_eq!(empty["chunk"], json!([]));
    assert_eq!(empty["end"], end.as_str());

    // A long poll is woken by the next event.
    let poller = bob.clone();
    let path = format!("/_matrix/client/v3/events?from={}&timeout=20000", enc(&end));
    let started = Instant::now();
    let waiting = std::thread::spawn(move || poller.get(&path));
    std::thread::sleep(Duration::from_millis(300));
    send_text(&alice, &room_id, "wake up");
    let (status, woken) = waiting.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(bodies(&woken["chunk"]), ["wake up"]);
    assert!(started.elapsed() < Duration::from_secs(15), "woken, not timed out: {:?}", started.elapsed());

    // The timeout is honoured when nothing comes.
    let end = woken["end"].as_str().unwrap();
    let started = Instant::now();
    let (status, quiet) = bob.get(&format!("/_matrix/client/v3/events?from={}&timeout=300", enc(end)));
    assert_eq!((status, quiet["chunk"].clone()), (200, json!([])));
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());

    // The stream carries invites, and a leave ends a room's events.
    let end = quiet["end"].as_str().unwrap().to_string();
    let other = create_room(&alice, json!({"invite": [bob.user_id]}));
    let (status, _) = bob.post(&room_path(&room_id, "/leave"), &json!({}));
    assert_eq!(status, 200);
    send_text(&alice, &room_id, "after bob left");
    let (_, changes) = bob.get(&format!("/_matrix/client/v3/events?from={}&limit=50", enc(&end)));
    let chunk = changes["chunk"].as_array().unwrap();
    let own = |room: &str, membership: &str| {
        chunk.iter().any(|event| {
            event["room_id"] == room
                && event["type"] == "m.room.member"
                && event["state_key"] == bob.user_id.as_str()
                && event["content"]["membership"] == membership
        })
    };
    assert!(own(&other, "invite"), "{changes}");
    assert!(own(&room_id, "leave"), "{changes}");
    assert!(bodies(&changes["chunk"]).is_empty(), "nothing after the leave: {changes}");

    // Bad tokens are refused.
    assert_error(&bob.get("/_matrix/client/v3/events?from=nonsense"), 400, "M_INVALID_PARAM");
}

/// History visibility holds on the stream as on /messages: a user who is not
/// in a room sees none of its events, and `room_id` of a room one may not
/// read is refused.
#[test]
fn the_event_stream_respects_membership_and_visibility() {
    let node = Node::start();
    let alice = node.register("alice");
    let eve = node.register("eve");
    let (_, sync) = eve.get("/_matrix/client/v3/sync");
    let since = sync["next_batch"].as_str().unwrap().to_string();
    let room_id = create_room(&alice, json!({"preset": "private_chat"}));
    let secret = send_text(&alice, &room_id, "secret");
    let (status, answer) = eve.get(&format!("/_matrix/client/v3/events?from={}", enc(&since)));
    assert_eq!(status, 200);
    assert_eq!(answer["chunk"], json!([]), "{answer}");
    let answer =
        eve.get(&format!("/_matrix/client/v3/events?from={}&room_id={}", enc(&since), enc(&room_id)));
    assert_error(&answer, 403, "M_FORBIDDEN");
    // Nor one event by its ID.
    assert_error(&eve.get(&format!("/_matrix/client/v3/events/{}", enc(&secret))), 404, "M_NOT_FOUND");
    let (status, event) = alice.get(&format!("/_matrix/client/v3/events/{}", enc(&secret)));
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "secret");
    assert_eq!(event["room_id"], room_id.as_str());

    // A joined room with `history_visibility: joined`: what was said before
    // the join stays hidden from the newcomer in initialSync.
    let (status, _) = alice.put(
        &room_path(&room_id, "/state/m.room.history_visibility/"),
        &json!({"history_visibility": "joined"}),
    );
    assert_eq!(status, 200);
    send_text(&alice, &room_id, "before eve");
    let (status, _) = alice.post(&room_path(&room_id, "/invite"), &json!({"user_id": eve.user_id}));
    assert_eq!(status, 200);
    let (status, _) = eve.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 200);
    send_text(&alice, &room_id, "after eve");
    let (status, room) = eve.get(&room_path(&room_id, "/initialSync?limit=50"));
    assert_eq!(status, 200, "{room}");
    // "secret" was said while the history was `shared`: visible to members
    // who join later, as on /messages.
    assert_eq!(bodies(&room["messages"]["chunk"]), ["secret", "after eve"]);
}

/// Spec (GET /initialSync): every room of the user with `membership`,
/// `messages` (`chunk`, `start`, `end`) and `state`; `end` to stream from;
/// `limit` per room; left rooms only with `archived=true`.
#[test]
fn initial_sync_lists_rooms_with_messages_and_state() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room_id =
        create_room(&alice, json!({"preset": "public_chat", "name": "Old school", "visibility": "public"}));
    for i in 0..4 {
        send_text(&alice, &room_id, &format!("m{i}"));
    }
    let left = create_room(&alice, json!({"name": "Left"}));
    send_text(&alice, &left, "last words");
    let (status, _) = alice.post(&room_path(&left, "/leave"), &json!({}));
    assert_eq!(status, 200);
    let invited = create_room(&bob, json!({"invite": [alice.user_id]}));

    let answer = alice.try_request("GET", "/_matrix/client/v3/initialSync?limit=2", None);
    let (status, answer) = answer.unwrap_or_else(|error| panic!("{error}\n{}", node.log_text()));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["end"].is_string(), "{answer}");
    let rooms = answer["rooms"].as_array().unwrap();
    let find = |rooms: &[Value], id: &str| rooms.iter().find(|room| room["room_id"] == id).cloned();
    let room = find(rooms, &room_id).expect("the joined room");
    assert_eq!(room["membership"], "join");
    assert_eq!(room["visibility"], "public");
    assert_eq!(bodies(&room["messages"]["chunk"]), ["m2", "m3"]);
    assert!(room["messages"]["start"].is_string() && room["messages"]["end"].is_string(), "{room}");
    let state = room["state"].as_array().unwrap();
    assert!(
        state.iter().any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Old school")
    );
    assert!(state.iter().any(|event| event["type"] == "m.room.create"));
    assert!(find(rooms, &left).is_none(), "left rooms only when archived");
    let invite = find(rooms, &invited).expect("the invite");
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["inviter"], bob.user_id.as_str());

    // `start` pages back into the older messages through /messages.
    let start = room["messages"]["start"].as_str().unwrap();
    let (status, older) =
        alice.get(&room_path(&room_id, &format!("/messages?dir=b&limit=10&from={}", enc(start))));
    assert_eq!(status, 200);
    let mut earlier = bodies(&older["chunk"]);
    earlier.reverse();
    assert_eq!(earlier, ["m0", "m1"]);

    // `end` streams on with /events.
    send_text(&alice, &room_id, "after the snapshot");
    let end = answer["end"].as_str().unwrap();
    let (_, stream) = alice.get(&format!("/_matrix/client/v3/events?from={}", enc(end)));
    assert_eq!(bodies(&stream["chunk"]), ["after the snapshot"]);

    // Archived rooms come with their history up to the leave.
    let (status, answer) = alice.get("/_matrix/client/v3/initialSync?archived=true");
    assert_eq!(status, 200);
    let room = find(answer["rooms"].as_array().unwrap(), &left).expect("the left room");
    assert_eq!(room["membership"], "leave");
    assert_eq!(bodies(&room["messages"]["chunk"]), ["last words"]);

    // Bounded: an absurd limit is capped, a malformed one refused.
    let (status, _) = alice.get("/_matrix/client/v3/initialSync?limit=1000000000");
    assert_eq!(status, 200);
    assert_error(&alice.get("/_matrix/client/v3/initialSync?limit=-1"), 400, "M_INVALID_PARAM");
}

/// Spec (GET /rooms/{roomId}/initialSync): one room's snapshot; refused to
/// a user who may not read the room.
#[test]
fn room_initial_sync_is_one_room_of_initial_sync() {
    let node = Node::start();
    let alice = node.register("alice");
    let eve = node.register("eve");
    let room_id = create_room(&alice, json!({"preset": "private_chat", "topic": "hello"}));
    send_text(&alice, &room_id, "one");
    let (status, room) = alice.get(&room_path(&room_id, "/initialSync"));
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["room_id"], room_id.as_str());
    assert_eq!(room["membership"], "join");
    assert_eq!(room["visibility"], "private");
    assert_eq!(bodies(&room["messages"]["chunk"]), ["one"]);
    assert!(room["state"].as_array().unwrap().iter().any(|event| event["type"] == "m.room.topic"));
    assert_error(&eve.get(&room_path(&room_id, "/initialSync")), 403, "M_FORBIDDEN");

    // A world-readable room can be looked at from outside.
    let (status, _) = alice.put(
        &room_path(&room_id, "/state/m.room.history_visibility/"),
        &json!({"history_visibility": "world_readable"}),
    );
    assert_eq!(status, 200);
    send_text(&alice, &room_id, "two");
    let (status, room) = eve.get(&room_path(&room_id, "/initialSync"));
    assert_eq!(status, 200, "{room}");
    assert!(room.get("membership").is_none(), "{room}");
    // Only what was said once the room was world readable, as on /messages.
    assert_eq!(bodies(&room["messages"]["chunk"]), ["two"]);
}
