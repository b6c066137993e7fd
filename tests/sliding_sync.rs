//! Simplified Sliding Sync (MSC4186) as matrix-rust-sdk uses it: lists
//! ordered by recency with their counts, incremental answers with only the
//! rooms that changed, long polls, `required_state` (`$LAZY`, `$ME`, `*`),
//! filters, invites, room subscriptions, expired positions, and the
//! to-device, e2ee, account data, receipts and typing extensions.
//!
//! Spec: <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md>.

mod common;

use std::time::{Duration, Instant};

use common::rooms::*;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request; asserts 200.
#[track_caller]
fn sliding(client: &Client, pos: Option<&str>, timeout_ms: u64, body: &Value) -> Value {
    let (status, answer) = try_sliding(client, pos, timeout_ms, body);
    assert_eq!(status, 200, "{body}: {answer}");
    assert!(answer["pos"].is_string(), "{answer}");
    answer
}

fn try_sliding(client: &Client, pos: Option<&str>, timeout_ms: u64, body: &Value) -> (u16, Value) {
    let query = match pos {
        Some(pos) => format!("?pos={}&timeout={timeout_ms}", enc(pos)),
        None => format!("?timeout={timeout_ms}"),
    };
    client.post(&format!("{PATH}{query}"), body)
}

fn pos(answer: &Value) -> String {
    answer["pos"].as_str().unwrap().to_owned()
}

/// The room IDs of a list's first window.
fn window(answer: &Value, list: &str) -> Vec<String> {
    answer["lists"][list]["ops"][0]["room_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no list {list}: {answer}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

fn room_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["rooms"].as_object().unwrap().keys().cloned().collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// The `(type, state_key)` of a room's `required_state`.
fn state_keys(answer: &Value, room_id: &str) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = answer["rooms"][room_id]["required_state"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|event| {
            (event["type"].as_str().unwrap().to_owned(), event["state_key"].as_str().unwrap().to_owned())
        })
        .collect();
    keys.sort();
    keys
}

fn list_body(range: [u64; 2], timeline_limit: u64, required_state: Value) -> Value {
    json!({ "lists": { "all": { "ranges": [range], "timeline_limit": timeline_limit, "required_state": required_state } } })
}

// MSC4186 "Lists" and "Activity ordering": a list is the user's rooms,
// newest activity first, cut to its ranges, with `count` the whole list's
// size; "Room results": a room goes out the first time, then only with news,
// `num_live` counting the events new since the previous answer.
#[test]
fn lists_come_newest_first_with_counts_and_increments_carry_only_news() {
    let node = Node::start();
    let alice = node.register("alice");
    let (_, versions) = node.client().get("/_matrix/client/versions");
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true, "{versions}");

    let a = create_room(&alice, json!({ "name": "A" }));
    let b = create_room(&alice, json!({ "name": "B" }));
    let c = create_room(&alice, json!({ "name": "C" }));
    send_text(&alice, &a, "a is newest");
    let body = list_body([0, 1], 1, json!([["m.room.name", ""]]));
    let first = sliding(&alice, None, 0, &body);
    assert_eq!(first["lists"]["all"]["count"], 3, "{first}");
    assert!(first.get("txn_id").is_none());
    let mut with_txn = body.clone();
    with_txn["txn_id"] = json!("t1");
    with_txn["conn_id"] = json!("other");
    assert_eq!(sliding(&alice, None, 0, &with_txn)["txn_id"], "t1", "the txn_id is echoed");
    assert_eq!(window(&first, "all"), [a.clone(), c.clone()]);
    assert_eq!(room_ids(&first), sorted(vec![a.clone(), c.clone()]));
    let room = &first["rooms"][&a];
    assert_eq!(room["initial"], true);
    assert_eq!(room["name"], "A");
    assert_eq!(room["joined_count"], 1);
    assert_eq!(room["timeline"].as_array().unwrap().len(), 1, "{room}");
    assert_eq!(room["timeline"][0]["content"]["body"], "a is newest");
    assert_eq!(room["limited"], true);
    assert!(room["prev_batch"].is_string());
    assert!(room["bump_stamp"].as_i64().unwrap() > first["rooms"][&c]["bump_stamp"].as_i64().unwrap());
    assert_eq!(state_keys(&first, &a), [("m.room.name".to_owned(), String::new())]);

    // Nothing new: no rooms.
    let quiet = sliding(&alice, Some(&pos(&first)), 0, &body);
    assert_eq!(room_ids(&quiet), Vec::<String>::new(), "{quiet}");

    // A message in a room sent already: only it, not initial, one live event.
    send_text(&alice, &a, "again");
    let next = sliding(&alice, Some(&pos(&quiet)), 0, &body);
    assert_eq!(room_ids(&next), [a.as_str()], "{next}");
    let room = &next["rooms"][&a];
    assert!(room.get("initial").is_none(), "{room}");
    assert_eq!(room["num_live"], 1);
    assert_eq!(room["timeline"][0]["content"]["body"], "again");
    assert!(room.get("name").is_none(), "an unchanged name is not sent again: {room}");

    // B moves to the top and enters the window for the first time.
    send_text(&alice, &b, "b wakes up");
    let moved = sliding(&alice, Some(&pos(&next)), 0, &body);
    assert_eq!(window(&moved, "all"), [b.clone(), a.clone()]);
    assert_eq!(room_ids(&moved), [b.as_str()], "{moved}");
    assert_eq!(moved["rooms"][&b]["initial"], true);
    assert_eq!(moved["rooms"][&b]["num_live"], 1);
    assert_eq!(moved["rooms"][&b]["name"], "B");
}

// MSC4186 "High level overview": without changes the server blocks waiting
// for one (long-polling, like /v3/sync).
#[test]
fn a_long_poll_waits_and_wakes_on_a_send() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    join(&bob, &room);
    let body = list_body([0, 9], 5, json!([]));
    let first = sliding(&alice, None, 0, &body);

    let started = Instant::now();
    let idle = sliding(&alice, Some(&pos(&first)), 1500, &body);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(room_ids(&idle), Vec::<String>::new());

    let waiting = {
        let (alice, body, pos) = (alice.clone(), body.clone(), pos(&idle));
        std::thread::spawn(move || (sliding(&alice, Some(&pos), 30_000, &body), Instant::now()))
    };
    std::thread::sleep(Duration::from_millis(300));
    send_text(&bob, &room, "wake up");
    let sent = Instant::now();
    let (woken, answered) = waiting.join().unwrap();
    assert!(answered.duration_since(sent) < Duration::from_secs(2), "{:?}", answered.duration_since(sent));
    assert_eq!(woken["rooms"][&room]["timeline"][0]["content"]["body"], "wake up", "{woken}");
    assert_eq!(woken["rooms"][&room]["num_live"], 1);

    // MSC4186 "Connections": a client cancels a long poll and sends the same
    // `pos` again; the cancelled request answering late must not make the
    // answer the client did take unknown.
    let from = pos(&woken);
    let cancelled = {
        let (alice, body, from) = (alice.clone(), body.clone(), from.clone());
        std::thread::spawn(move || sliding(&alice, Some(&from), 30_000, &body))
    };
    std::thread::sleep(Duration::from_millis(300));
    let taken = sliding(&alice, Some(&from), 0, &body);
    send_text(&bob, &room, "after the retry");
    let late = cancelled.join().unwrap();
    assert_eq!(late["rooms"][&room]["timeline"][0]["content"]["body"], "after the retry", "{late}");
    let next = sliding(&alice, Some(&pos(&taken)), 0, &body);
    assert_eq!(next["rooms"][&room]["timeline"][0]["content"]["body"], "after the retry", "{next}");
}

// MSC4186 `required_state`: `*` matches any type or state key, `$ME` the
// user's own ID, and `$LAZY` members are the timeline's senders the
// connection was not sent yet; room subscriptions select a room outside
// every list, and are ignored for rooms the user is not in.
#[test]
fn required_state_lazy_me_and_wildcards_and_room_subscriptions() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let carol = node.register("carol");
    let room = create_room(&alice, json!({ "preset": "public_chat", "name": "party" }));
    join(&bob, &room);
    join(&carol, &room);
    send_text(&bob, &room, "from bob");
    let elsewhere = create_room(&carol, json!({}));
    let subscribe = |required_state: Value, conn_id: &str| {
        json!({
            "conn_id": conn_id,
            "room_subscriptions": {
                &room: { "timeline_limit": 1, "required_state": required_state },
                &elsewhere: { "timeline_limit": 1, "required_state": [] },
            }
        })
    };
    let member = |user: &Client| ("m.room.member".to_owned(), user.user_id.clone());

    let lazy_body = subscribe(json!([["m.room.member", "$LAZY"], ["m.room.name", ""]]), "lazy");
    let lazy = sliding(&alice, None, 0, &lazy_body);
    assert_eq!(room_ids(&lazy), [room.as_str()], "a room the user is not in is ignored: {lazy}");
    assert_eq!(state_keys(&lazy, &room), [member(&bob), ("m.room.name".to_owned(), String::new())]);
    assert_eq!(lazy["rooms"][&room]["joined_count"], 3);
    assert!(lazy.get("lists").is_none_or(|lists| lists.as_object().unwrap().is_empty()));
    // Carol is new to this connection, bob is not.
    send_text(&carol, &room, "from carol");
    send_text(&bob, &room, "bob again");
    let later =
        sliding(&alice, Some(&pos(&lazy)), 0, &subscribe(json!([["m.room.member", "$LAZY"]]), "lazy"));
    // The config changed (no name any more): the timeline is the last event.
    assert_eq!(state_keys(&later, &room), Vec::<(String, String)>::new(), "{later}");
    let carol_too = sliding(
        &alice,
        Some(&pos(&later)),
        0,
        &json!({ "conn_id": "lazy", "room_subscriptions": { &room: { "timeline_limit": 2, "required_state": [["m.room.member", "$LAZY"]] } } }),
    );
    assert_eq!(carol_too["rooms"][&room]["unstable_expanded_timeline"], true, "{carol_too}");
    assert_eq!(state_keys(&carol_too, &room), [member(&carol)], "{carol_too}");

    let me = sliding(&alice, None, 0, &subscribe(json!([["m.room.member", "$ME"]]), "me"));
    assert_eq!(state_keys(&me, &room), [member(&alice)]);

    let everything = sliding(&alice, None, 0, &subscribe(json!([["*", "*"]]), "all"));
    let keys = state_keys(&everything, &room);
    for wanted in [member(&alice), member(&bob), member(&carol)] {
        assert!(keys.contains(&wanted), "{keys:?}");
    }
    for kind in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
        assert!(keys.contains(&(kind.to_owned(), String::new())), "{kind}: {keys:?}");
    }
    let members = sliding(&alice, None, 0, &subscribe(json!([["m.room.member", "*"]]), "members"));
    assert_eq!(state_keys(&members, &room), sorted_pairs(vec![member(&alice), member(&bob), member(&carol)]));
}

// MSC4186 `required_state`: `$LAZY` gives the members of the timeline's
// senders, also when their member event is itself in the timeline. Clients
// take room state from `required_state` alone (matrix-rust-sdk ignores state
// events in `timeline`), so a join seen only in the timeline would leave the
// member unknown (and, in an encrypted room, without the room key).
// <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md>
#[test]
fn lazy_members_include_a_join_that_is_in_the_timeline() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    let body = json!({
        "conn_id": "lazy-join",
        "room_subscriptions": { &room: { "timeline_limit": 5, "required_state": [["m.room.member", "$LAZY"]] } }
    });
    let first = sliding(&alice, None, 0, &body);
    join(&bob, &room);
    let after = sliding(&alice, Some(&pos(&first)), 0, &body);
    let timeline = after["rooms"][&room]["timeline"].as_array().cloned().unwrap_or_default();
    assert!(
        timeline
            .iter()
            .any(|event| event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str()),
        "bob's join is in the timeline: {after}"
    );
    let member = ("m.room.member".to_owned(), bob.user_id.clone());
    assert!(state_keys(&after, &room).contains(&member), "and in required_state: {after}");
}

fn sorted_pairs(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

// MSC4186 `SlidingRoomFilter`: `is_dm` (from `m.direct`), `is_encrypted`,
// `is_invite`, `room_types`/`not_room_types`, `tags`/`not_tags` and `spaces`;
// an invite's section carries its stripped `invite_state`.
#[test]
fn filters_pick_rooms_and_invites_carry_stripped_state() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let plain = create_room(&alice, json!({ "name": "plain" }));
    let dm = create_room(&alice, json!({ "is_direct": true, "invite": [&bob.user_id] }));
    let direct = json!({ &bob.user_id: [&dm] });
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    assert_eq!(alice.put(&path, &direct).0, 200);
    let encrypted = create_room(
        &alice,
        json!({ "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }),
    );
    let space = create_room(&alice, json!({ "creation_content": { "type": "m.space" }, "name": "space" }));
    put_state(&alice, &space, "m.space.child", &plain, json!({ "via": ["localhost"] }));
    let tag_path =
        format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&alice.user_id), enc(&encrypted));
    assert_eq!(alice.put(&tag_path, &json!({ "order": 0.5 })).0, 200);
    let invited = create_room(&bob, json!({ "name": "come in" }));
    invite(&bob, &invited, &alice.user_id);

    let list = |filters: Value| json!({ "ranges": [[0, 20]], "timeline_limit": 1, "required_state": [], "filters": filters });
    let body = json!({ "lists": {
        "dm": list(json!({ "is_dm": true })),
        "not_dm": list(json!({ "is_dm": false, "is_invite": false })),
        "encrypted": list(json!({ "is_encrypted": true })),
        "invites": list(json!({ "is_invite": true })),
        "spaces": list(json!({ "room_types": ["m.space"] })),
        "no_spaces": list(json!({ "not_room_types": ["m.space"], "is_invite": false })),
        "favourites": list(json!({ "tags": ["m.favourite"] })),
        "not_favourites": list(json!({ "not_tags": ["m.favourite"], "is_invite": false })),
        "in_space": list(json!({ "spaces": [&space] })),
    } });
    let answer = sliding(&alice, None, 0, &body);
    let set = |list: &str| sorted(window(&answer, list));
    assert_eq!(set("dm"), [dm.as_str()]);
    assert_eq!(set("not_dm"), sorted(vec![plain.clone(), encrypted.clone(), space.clone()]));
    assert_eq!(set("encrypted"), [encrypted.as_str()]);
    assert_eq!(set("invites"), [invited.as_str()]);
    assert_eq!(set("spaces"), [space.as_str()]);
    assert_eq!(set("no_spaces"), sorted(vec![plain.clone(), dm.clone(), encrypted.clone()]));
    assert_eq!(set("favourites"), [encrypted.as_str()]);
    assert_eq!(set("not_favourites"), sorted(vec![plain.clone(), dm.clone(), space.clone()]));
    assert_eq!(set("in_space"), [plain.as_str()]);
    assert_eq!(answer["lists"]["invites"]["count"], 1);
    assert_eq!(answer["rooms"][&dm]["is_dm"], true);
    // A room without a name has heroes (MSC4186 `heroes`): bob, invited.
    assert_eq!(
        answer["rooms"][&dm]["heroes"],
        json!([{ "user_id": bob.user_id, "displayname": "bob" }]),
        "{answer}"
    );
    assert_eq!(answer["rooms"][&dm]["invited_count"], 1);
    assert!(answer["rooms"][&plain].get("heroes").is_none());
    assert!(answer["rooms"][&plain].get("is_dm").is_none());

    let invite_section = &answer["rooms"][&invited];
    assert_eq!(invite_section["initial"], true);
    assert_eq!(invite_section["membership"], "invite");
    let stripped = invite_section["invite_state"].as_array().unwrap();
    assert!(
        stripped.iter().any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "come in")
    );
    assert!(
        stripped.iter().any(|event| event["type"] == "m.room.member" && event["state_key"] == alice.user_id)
    );
    assert!(invite_section.get("timeline").is_none(), "{invite_section}");

    // Encryption turned on later moves the room between lists.
    put_state(&alice, &plain, "m.room.encryption", "", json!({ "algorithm": "m.megolm.v1.aes-sha2" }));
    let later = sliding(&alice, Some(&pos(&answer)), 0, &body);
    let set = |list: &str| sorted(window(&later, list));
    assert_eq!(set("encrypted"), sorted(vec![plain.clone(), encrypted.clone()]), "{later}");
    assert_eq!(set("spaces"), [space.as_str()]);
    assert_eq!(later["lists"]["dm"]["count"], 1);
}

// MSC4186 "Connections": a position the server does not know answers 400
// `M_UNKNOWN_POS` so the client starts over; bad shapes are refused.
#[test]
fn unknown_positions_and_bad_requests_are_refused() {
    let mut node = Node::start();
    let alice = node.register("alice");
    let body = list_body([0, 9], 1, json!([]));
    assert_error(&try_sliding(&alice, Some("nonsense"), 0, &body), 400, "M_UNKNOWN_POS");
    let first = sliding(&alice, None, 0, &json!({ "conn_id": "one", "lists": body["lists"] }));
    // Another connection's position is unknown to this one.
    assert_error(&try_sliding(&alice, Some(&pos(&first)), 0, &body), 400, "M_UNKNOWN_POS");
    let same = json!({ "conn_id": "one", "lists": body["lists"] });
    let second = sliding(&alice, Some(&pos(&first)), 0, &same);
    // A retry of the first position is still served; after the second is used, it is gone.
    sliding(&alice, Some(&pos(&first)), 0, &same);
    let retried = sliding(&alice, Some(&pos(&first)), 0, &same);
    sliding(&alice, Some(&pos(&retried)), 0, &same);
    assert_error(&try_sliding(&alice, Some(&pos(&first)), 0, &same), 400, "M_UNKNOWN_POS");
    assert_error(&try_sliding(&alice, Some(&pos(&second)), 0, &same), 400, "M_UNKNOWN_POS");

    assert_error(
        &try_sliding(&alice, None, 0, &json!({ "lists": { "a": { "ranges": [[1]] } } })),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &try_sliding(&alice, None, 0, &json!({ "lists": { "a": { "timeline_limit": -1 } } })),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &try_sliding(&alice, None, 0, &json!({ "lists": { "a": { "ranges": [[9, 1]] } } })),
        400,
        "M_INVALID_PARAM",
    );
    let many: serde_json::Map<String, Value> = (0..101).map(|n| (n.to_string(), json!({}))).collect();
    assert_error(&try_sliding(&alice, None, 0, &json!({ "lists": many })), 400, "M_INVALID_PARAM");
    let subscriptions = json!({ "room_subscriptions": { "not-a-room": { "timeline_limit": 1 } } });
    assert_error(&try_sliding(&alice, None, 0, &subscriptions), 400, "M_INVALID_PARAM");
    assert_error(&alice.get(PATH), 405, "M_UNRECOGNIZED");
    assert_error(&node.client().post(PATH, &body), 401, "M_MISSING_TOKEN");

    // Connections live in memory: after a restart every position is unknown.
    let kept = sliding(&alice, Some(&pos(&retried)), 0, &same);
    node.restart();
    assert_error(&try_sliding(&alice, Some(&pos(&kept)), 0, &same), 400, "M_UNKNOWN_POS");
    sliding(&alice, None, 0, &same);
}

// MSC3885 (to-device extension): messages come until the client's `since`
// passes them; MSC3884 (e2ee extension): one-time key counts, and device
// list changes of users sharing a room.
#[test]
fn to_device_and_e2ee_extensions() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    join(&bob, &room);
    let extensions = |since: Option<&str>| {
        let mut to_device = json!({ "enabled": true });
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({ "extensions": { "to_device": to_device, "e2ee": { "enabled": true } } })
    };
    let upload = json!({ "one_time_keys": { "signed_curve25519:AAAA": { "key": "k1" }, "signed_curve25519:AAAB": { "key": "k2" } } });
    assert_eq!(bob.post("/_matrix/client/v3/keys/upload", &upload).0, 200);
    let first = sliding(&bob, None, 0, &extensions(None));
    assert_eq!(first["extensions"]["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 2, "{first}");
    assert_eq!(first["extensions"]["to_device"]["events"], json!([]));
    let since = first["extensions"]["to_device"]["next_batch"].as_str().unwrap().to_owned();

    let message = json!({ "messages": { &bob.user_id: { &bob.device_id: { "secret": 1 } } } });
    assert_eq!(alice.put("/_matrix/client/v3/sendToDevice/m.test/one", &message).0, 200);
    let device_keys = json!({ "device_keys": {
        "user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": { format!("curve25519:{}", alice.device_id): "c", format!("ed25519:{}", alice.device_id): "e" },
        "signatures": { &alice.user_id: { format!("ed25519:{}", alice.device_id): "s" } },
    } });
    assert_eq!(alice.post("/_matrix/client/v3/keys/upload", &device_keys).0, 200);
    let next = sliding(&bob, Some(&pos(&first)), 10_000, &extensions(Some(&since)));
    let events = next["extensions"]["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{next}");
    assert_eq!(events[0]["content"]["secret"], 1);
    assert_eq!(events[0]["sender"], alice.user_id);
    assert_eq!(next["extensions"]["e2ee"]["device_lists"]["changed"], json!([alice.user_id]), "{next}");
    // Not acknowledged yet: the same `since` gives the message again.
    let again = sliding(&bob, Some(&pos(&next)), 0, &extensions(Some(&since)));
    assert_eq!(again["extensions"]["to_device"]["events"].as_array().unwrap().len(), 1, "{again}");
    // Past it, it is gone for good.
    let later = next["extensions"]["to_device"]["next_batch"].as_str().unwrap().to_owned();
    let acked = sliding(&bob, Some(&pos(&again)), 0, &extensions(Some(&later)));
    assert_eq!(acked["extensions"]["to_device"]["events"], json!([]), "{acked}");
    let old = sliding(&bob, Some(&pos(&acked)), 0, &extensions(Some(&since)));
    assert_eq!(old["extensions"]["to_device"]["events"], json!([]), "{old}");
    assert_error(&try_sliding(&bob, None, 0, &extensions(Some("soon"))), 400, "M_INVALID_PARAM");
}

// MSC3959 (account data), MSC3960 (receipts) and MSC3961 (typing): the
// changes since the previous answer, for the rooms of the lists.
#[test]
fn account_data_receipts_and_typing_extensions() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let room = create_room(&alice, json!({ "preset": "public_chat" }));
    join(&bob, &room);
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.setting", enc(&alice.user_id));
    assert_eq!(alice.put(&global, &json!({ "on": true })).0, 200);
    let mut body = list_body([0, 9], 1, json!([]));
    body["extensions"] = json!({
        "account_data": { "enabled": true },
        "receipts": { "enabled": true },
        "typing": { "enabled": true },
    });
    let first = sliding(&alice, None, 0, &body);
    let global_events = first["extensions"]["account_data"]["global"].as_array().unwrap();
    assert!(
        global_events
            .iter()
            .any(|event| event["type"] == "org.example.setting" && event["content"]["on"] == true)
    );
    assert!(global_events.iter().any(|event| event["type"] == "m.push_rules"), "{first}");

    let message = send_text(&bob, &room, "read me");
    let quiet = sliding(&alice, Some(&pos(&first)), 0, &body);
    let receipt_path = room_path(&room, &format!("/receipt/m.read/{}", enc(&message)));
    assert_eq!(bob.post(&receipt_path, &json!({})).0, 200);
    let typing_path = room_path(&room, &format!("/typing/{}", enc(&bob.user_id)));
    assert_eq!(bob.put(&typing_path, &json!({ "typing": true, "timeout": 30000 })).0, 200);
    let room_data = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.room",
        enc(&alice.user_id),
        enc(&room)
    );
    assert_eq!(alice.put(&room_data, &json!({ "colour": "blue" })).0, 200);
    let next = sliding(&alice, Some(&pos(&quiet)), 0, &body);
    let extensions = &next["extensions"];
    let receipt = &extensions["receipts"]["rooms"][&room];
    assert_eq!(receipt["type"], "m.receipt", "{next}");
    assert!(receipt["content"][&message]["m.read"][&bob.user_id]["ts"].is_number(), "{receipt}");
    assert_eq!(extensions["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob.user_id]), "{next}");
    let room_events = extensions["account_data"]["rooms"][&room].as_array().unwrap();
    assert_eq!(room_events[0]["type"], "org.example.room");
    assert_eq!(room_events[0]["content"]["colour"], "blue");
    assert!(extensions["account_data"]["global"].as_array().unwrap().is_empty(), "{next}");

    // Typing stopping is news too.
    assert_eq!(bob.put(&typing_path, &json!({ "typing": false })).0, 200);
    let stopped = sliding(&alice, Some(&pos(&next)), 5000, &body);
    assert_eq!(
        stopped["extensions"]["typing"]["rooms"][&room]["content"]["user_ids"],
        json!([]),
        "{stopped}"
    );
}

// MSC4186 "Room results": a room is sent again when it has news since it
// was last sent, even news from while it was out of every window; and
// `is_dm` is sent again when `m.direct` changes it.
#[test]
fn rooms_back_in_a_window_bring_what_they_missed_and_dm_changes_are_sent() {
    let node = Node::start();
    let alice = node.register("alice");
    let a = create_room(&alice, json!({ "name": "A" }));
    send_text(&alice, &a, "a first");
    let narrow = list_body([0, 0], 10, json!([["m.room.topic", ""]]));
    let first = sliding(&alice, None, 0, &narrow);
    assert_eq!(room_ids(&first), [a.as_str()]);
    let b = create_room(&alice, json!({ "name": "B" }));
    let second = sliding(&alice, Some(&pos(&first)), 0, &narrow);
    assert_eq!(window(&second, "all"), [b.as_str()]);
    // A topic is no bump: A stays out of the window while it changes.
    put_state(&alice, &a, "m.room.topic", "", json!({ "topic": "while away" }));
    let third = sliding(&alice, Some(&pos(&second)), 0, &narrow);
    assert_eq!(room_ids(&third), Vec::<String>::new(), "{third}");
    let wide = list_body([0, 1], 10, json!([["m.room.topic", ""]]));
    let back = sliding(&alice, Some(&pos(&third)), 0, &wide);
    assert_eq!(room_ids(&back), [a.as_str()], "{back}");
    let room = &back["rooms"][&a];
    assert!(room.get("initial").is_none(), "{room}");
    assert_eq!(room["timeline"].as_array().unwrap().len(), 1, "only what it missed: {room}");
    assert_eq!(room["timeline"][0]["type"], "m.room.topic");
    assert_eq!(state_keys(&back, &a), [("m.room.topic".to_owned(), String::new())]);

    let path = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    assert_eq!(alice.put(&path, &json!({ "@someone:localhost": [&a] })).0, 200);
    let dm = sliding(&alice, Some(&pos(&back)), 0, &wide);
    assert_eq!(dm["rooms"][&a]["is_dm"], true, "{dm}");
    assert!(dm["rooms"].get(&b).is_none(), "{dm}");
    assert_eq!(alice.put(&path, &json!({})).0, 200);
    let not_dm = sliding(&alice, Some(&pos(&dm)), 0, &wide);
    assert_eq!(not_dm["rooms"][&a]["is_dm"], false, "{not_dm}");
}

// MSC4186 "Lists": rooms left go out once so the client learns of it; a
// rejected invite shows nothing of the room but the user's own membership
// ("Invite/knock/rejections"), and a room left after joining shows its
// history up to the departure.
#[test]
fn rejected_invites_and_left_rooms_go_out_once_with_no_more_than_allowed() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let secret = create_room(&bob, json!({ "name": "secret", "preset": "private_chat" }));
    send_text(&bob, &secret, "for members only");
    invite(&bob, &secret, &alice.user_id);
    let left = create_room(&bob, json!({ "preset": "public_chat" }));
    join(&alice, &left);
    let body = list_body([0, 9], 5, json!([["*", "*"]]));
    let first = sliding(&alice, None, 0, &body);
    assert_eq!(first["lists"]["all"]["count"], 2, "{first}");
    assert_eq!(first["rooms"][&secret]["membership"], "invite");

    for room in [&secret, &left] {
        assert_eq!(alice.post(&room_path(room, "/leave"), &json!({})).0, 200);
    }
    let next = sliding(&alice, Some(&pos(&first)), 0, &body);
    let rejected = &next["rooms"][&secret];
    assert_eq!(rejected["membership"], "leave", "{next}");
    assert_eq!(state_keys(&next, &secret), [("m.room.member".to_owned(), alice.user_id.clone())], "{next}");
    assert!(rejected.get("timeline").is_none() && rejected.get("name").is_none(), "{rejected}");
    let departed = &next["rooms"][&left];
    assert_eq!(departed["membership"], "leave");
    let timeline = departed["timeline"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["content"]["membership"], "leave", "{departed}");
    // Once told, the rooms are gone from the list.
    send_text(&bob, &left, "after alice left");
    let after = sliding(&alice, Some(&pos(&next)), 0, &body);
    assert_eq!(after["lists"]["all"]["count"], 0, "{after}");
    assert_eq!(room_ids(&after), Vec::<String>::new(), "{after}");
}
