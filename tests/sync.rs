//! `/sync` as clients use it: since tokens, long polls that wake promptly,
//! filters (inline and stored), full_state, lazy-loaded members, the room
//! sections, limited timelines, typing, receipts, account data, tags, unread
//! counts, summaries, and tokens that survive a restart.

mod common;

use std::time::{Duration, Instant};

use common::rooms::*;
use common::{Node, assert_error};
use serde_json::{Value, json};

fn filter_path(client: &common::Client) -> String {
    format!("/_matrix/client/v3/user/{}/filter", enc(&client.user_id))
}

/// Bob sends 15 messages, alice changes the topic, bob sends 12 more: more
/// than a default timeline, with a state change in the gap.
fn send_across_a_topic_change(alice: &common::Client, bob: &common::Client, room: &str) {
    for index in 0..15 {
        send_text(bob, room, &format!("b{index}"));
    }
    put_state(alice, room, "m.room.topic", "", json!({"topic": "mid-gap"}));
    for index in 0..12 {
        send_text(bob, room, &format!("c{index}"));
    }
}

#[test]
fn since_tokens_give_only_what_is_new() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "news"}));
    join(&bob, &room);
    send_text(&bob, &room, "one");
    let first = sync(&alice, "");
    assert_eq!(bodies(timeline(&first, &room)), vec!["one"]);
    // The room's creation is in the state or the timeline of an initial sync.
    let state = first["rooms"]["join"][&room]["state"]["events"].as_array().unwrap();
    let seen = state.iter().chain(timeline(&first, &room));
    assert!(seen.clone().any(|event| event["type"] == "m.room.create"), "{first}");
    // Nothing new: no room.
    let quiet = sync(&alice, &since(&first["next_batch"]));
    assert!(quiet["rooms"]["join"].get(&room).is_none(), "{quiet}");
    send_text(&bob, &room, "two");
    let next = sync(&alice, &since(&first["next_batch"]));
    assert_eq!(bodies(timeline(&next, &room)), vec!["two"]);
    assert_eq!(next["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert!(next["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().is_empty());
    // The same since token gives the same answer.
    let again = sync(&alice, &since(&first["next_batch"]));
    assert_eq!(ids(timeline(&again, &room)), ids(timeline(&next, &room)));
    // full_state sends the whole state even without news.
    let full = sync(&alice, &format!("{}&full_state=true", since(&next["next_batch"])));
    let state = full["rooms"]["join"][&room]["state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|event| event["type"] == "m.room.name"), "{full}");
    assert!(state.iter().any(|event| event["type"] == "m.room.create"), "{full}");
    // Bad tokens are refused.
    assert_error(&alice.get("/_matrix/client/v3/sync?since=garbage"), 400, "M_INVALID_PARAM");
}

#[test]
fn long_poll_returns_promptly_after_a_send() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let token = sync(&alice, "")["next_batch"].clone();

    // With nothing happening, the poll waits its timeout out and returns empty.
    let started = Instant::now();
    let idle = sync(&alice, &format!("{}&timeout=1500", since(&token)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "returned after {waited:?}");
    assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
    assert!(idle["rooms"]["join"].get(&room).is_none(), "{idle}");

    let poller = alice.clone();
    let query = format!("{}&timeout=20000", since(&token));
    let waiting = std::thread::spawn(move || {
        let answer = sync(&poller, &query);
        (answer, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(!waiting.is_finished(), "the long poll returned before anything happened");
    let sent_at = Instant::now();
    send_text(&bob, &room, "wake up");
    let (answer, returned_at) = waiting.join().unwrap();
    let delay = returned_at.saturating_duration_since(sent_at);
    assert!(delay < Duration::from_secs(2), "the long poll took {delay:?} after the send");
    assert_eq!(bodies(timeline(&answer, &room)), vec!["wake up"]);

    // Typing also wakes a poll.
    let query = format!("{}&timeout=20000", since(&answer["next_batch"]));
    let poller = alice.clone();
    let waiting = std::thread::spawn(move || sync(&poller, &query));
    std::thread::sleep(Duration::from_millis(500));
    let typing_at = Instant::now();
    let (status, _) = bob.put(
        &room_path(&room, &format!("/typing/{}", enc(&bob.user_id))),
        &json!({"typing": true, "timeout": 5000}),
    );
    assert_eq!(status, 200);
    let answer = waiting.join().unwrap();
    assert!(typing_at.elapsed() < Duration::from_secs(2));
    let typing = ephemeral(&answer, &room, "m.typing").expect("no typing event");
    assert_eq!(typing["content"]["user_ids"], json!([bob.user_id]));
}

/// Filters of the wrong shape are refused at upload, as Synapse refuses them
/// against its filter schema: wrong types `M_BAD_JSON`, strings that are not
/// user or room IDs where IDs are due `M_INVALID_PARAM`; unknown fields pass.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3useruseridfilter>
/// and <https://spec.matrix.org/latest/client-server-api/#filtering>.
#[test]
fn invalid_filters_are_refused_at_upload() {
    let node = Node::start();
    let alice = node.register("alice");
    for bad in [
        json!({"presence": "not_an_object"}),
        json!({"room": {"timeline": "not_an_object"}}),
        json!({"room": {"include_leave": "yes"}}),
        json!({"room": {"state": {"lazy_load_members": "true"}}}),
        json!({"room": {"timeline": {"types": "m.room.message"}}}),
        json!({"room": {"timeline": {"not_types": [1, 2]}}}),
        json!({"room": {"timeline": {"unread_thread_notifications": 1}}}),
        json!({"account_data": {"types": null}}),
        json!({"event_fields": [1]}),
        json!({"event_format": "other"}),
    ] {
        assert_error(&alice.post(&filter_path(&alice), &bad), 400, "M_BAD_JSON");
    }
    for bad in [
        json!({"room": {"timeline": {"senders": ["not_a_user_id"]}}}),
        json!({"room": {"rooms": ["not_a_room_id"]}}),
        json!({"room": {"state": {"not_rooms": ["#alias:x"]}}}),
    ] {
        assert_error(&alice.post(&filter_path(&alice), &bad), 400, "M_INVALID_PARAM");
    }
    let fine = json!({"org.example.future": {"x": [1]}, "room": {"timeline": {"limit": 2.5, "senders": [alice.user_id]}}});
    let (status, body) = alice.post(&filter_path(&alice), &fine);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn filters_inline_and_stored() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = create_room(&alice, json!({"preset": "public_chat"}));
    let other = create_room(&alice, json!({}));
    join(&bob, &room);
    for index in 0..5 {
        send_text(&bob, &room, &format!("m{index}"));
        send(&bob, &room, "org.example.noise", json!({"n": index}));
    }
    send_text(&alice, &other, "elsewhere");
    let filter = json!({"room": {"rooms": [room], "timeline": {"limit": 3, "types": ["m.room.message"]}}});
    let (status, created) = alice.post(&filter_path(&alice), &filter);
    assert_eq!(status, 200, "{created}");
    let filter_id = created["filter_id"].as_str().unwrap().to_string();
    let (status, stored) = alice.get(&format!("{}/{}", filter_path(&alice), filter_id));
    assert_eq!(status, 200);
    assert_eq!(stored, filter);
    // Others may not read or create my filters.
    assert_eq!(bob.get(&format!("{}/{}", filter_path(&alice), filter_id)).0, 403);
    assert_eq!(bob.post(&filter_path(&alice), &filter).0, 403);
    assert_eq!(alice.get(&format!("{}/999", filter_path(&alice))).0, 404);

    for query in [format!("filter={filter_id}"), format!("filter={}", enc(&filter.to_string()))] {
        let synced = sync(&alice, &query);
        assert_eq!(bodies(timeline(&synced, &room)), vec!["m2", "m3", "m4"], "{query}");
        assert!(timeline(&synced, &room).iter().all(|event| event["type"] == "m.room.message"));
        let section = &synced["rooms"]["join"][&room]["timeline"];
        assert_eq!(section["limited"], true, "{query}");
        assert!(section["prev_batch"].is_string(), "{query}");
        assert!(synced["rooms"]["join"].get(&other).is_none(), "{query}: the rooms filter leaked");
    }
    // not_types and senders.
    let noise_only =
        enc(r#"{"room": {"timeline": {"not_types": ["m.room.message", "m.room.member"], "limit": 50}}}"#);
    let synced = sync(&alice, &format!("filter={noise_only}"));
    assert!(timeline(&synced, &room).iter().all(|event| event["type"] != "m.room.message"));
    assert_eq!(
        timeline(&synced, &room).iter().filter(|event| event["type"] == "org.example.noise").count(),
        5
    );
    let from_alice =
        enc(&json!({"room": {"timeline": {"senders": [alice.user_id], "limit": 50}}}).to_string());
    let synced = sync(&alice, &format!("filter={from_alice}"));
    assert!(timeline(&synced, &room).iter().all(|event| event["sender"] == alice.user_id.as_str()));
}

#[test]
fn limited_timelines_and_lazy_loaded_members() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = public_room(&alice, &[&bob, &carol]);
    let token = sync(&alice, "")["next_batch"].clone();
    send_across_a_topic_change(&alice, &bob, &room);
    // The default limit is 10: limited, with a prev_batch; state skipped over comes in `state`.
    let gap = sync(&alice, &since(&token));
    let section = &gap["rooms"]["join"][&room];
    assert_eq!(timeline(&gap, &room).len(), 10);
    assert_eq!(section["timeline"]["limited"], true);
    assert!(section["timeline"]["prev_batch"].is_string());
    let state = section["state"]["events"].as_array().unwrap();
    assert!(
        state.iter().any(|event| event["type"] == "m.room.topic"),
        "the topic change was lost: {section}"
    );
    // Carol speaks last; a lazy-loading initial sync with limit 1 carries only the members that matter.
    send_text(&carol, &room, "carol here");
    let lazy = enc(r#"{"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}}"#);
    let synced = sync(&alice, &format!("filter={lazy}"));
    let members = member_keys(&synced["rooms"]["join"][&room]["state"]["events"]);
    assert!(members.contains(&carol.user_id.as_str()), "{members:?}");
    assert!(members.contains(&alice.user_id.as_str()), "{members:?}");
    assert!(!members.contains(&bob.user_id.as_str()), "lazy loading sent bob: {members:?}");
    // Without lazy loading every member comes.
    let synced = sync(&alice, &format!("filter={}", enc(r#"{"room": {"timeline": {"limit": 1}}}"#)));
    let count = synced["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.member")
        .count();
    assert_eq!(count, 3);
}

#[test]
fn rooms_move_between_invite_join_and_leave() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = create_room(&alice, json!({"name": "moving"}));
    let token = sync(&bob, "")["next_batch"].clone();
    invite(&alice, &room, &bob.user_id);
    let invited = sync(&bob, &since(&token));
    let events = invited["rooms"]["invite"][&room]["invite_state"]["events"].as_array().expect("no invite");
    assert!(
        events.iter().any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "moving")
    );
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str())
    );
    assert!(invited["rooms"]["join"].get(&room).is_none());
    // The invite stays in an initial sync, not in quiet incremental ones.
    assert!(sync(&bob, "")["rooms"]["invite"].get(&room).is_some());
    assert!(sync(&bob, &since(&invited["next_batch"]))["rooms"]["invite"].get(&room).is_none());

    send_text(&alice, &room, "before bob");
    join(&bob, &room);
    let joined = sync(&bob, &since(&invited["next_batch"]));
    let section = &joined["rooms"]["join"][&room];
    // A room joined in the window syncs in full: state and the timeline with the join.
    let mut seen = section["state"]["events"].as_array().unwrap().iter().chain(timeline(&joined, &room));
    assert!(seen.any(|event| event["type"] == "m.room.create"), "{section}");
    assert!(
        timeline(&joined, &room)
            .iter()
            .any(|event| event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str())
    );
    assert!(joined["rooms"]["invite"].get(&room).is_none());

    assert_eq!(alice.post(&room_path(&room, "/kick"), &json!({"user_id": bob.user_id})).0, 200);
    let left = sync(&bob, &since(&joined["next_batch"]));
    let section = &left["rooms"]["leave"][&room];
    let leave_event = section["timeline"]["events"].as_array().unwrap().last().cloned().expect("no leave");
    assert_eq!(leave_event["content"]["membership"], "leave");
    assert_eq!(leave_event["sender"], alice.user_id);
    assert!(left["rooms"]["join"].get(&room).is_none());
    // After leaving, new messages do not reach bob.
    send_text(&alice, &room, "after bob");
    let later = sync(&bob, &since(&left["next_batch"]));
    assert!(
        later["rooms"]["leave"].get(&room).is_none() && later["rooms"]["join"].get(&room).is_none(),
        "{later}"
    );
}

#[test]
fn typing_and_receipts_in_ephemeral() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let first = send_text(&alice, &room, "read me");
    let second = send_text(&alice, &room, "and me");
    let token = sync(&alice, "")["next_batch"].clone();
    let bob_token = sync(&bob, "")["next_batch"].clone();

    // Typing: for oneself only, in joined rooms only.
    let typing_path = room_path(&room, &format!("/typing/{}", enc(&bob.user_id)));
    assert_eq!(alice.put(&typing_path, &json!({"typing": true})).0, 403);
    assert_eq!(bob.put(&typing_path, &json!({"typing": "yes"})).0, 400);
    assert_eq!(bob.put(&typing_path, &json!({"typing": true, "timeout": 30000})).0, 200);
    let synced = sync(&alice, &since(&token));
    assert_eq!(ephemeral(&synced, &room, "m.typing").unwrap()["content"]["user_ids"], json!([bob.user_id]));
    assert_eq!(bob.put(&typing_path, &json!({"typing": false})).0, 200);
    let stopped = sync(&alice, &since(&synced["next_batch"]));
    assert_eq!(ephemeral(&stopped, &room, "m.typing").unwrap()["content"]["user_ids"], json!([]));

    // Private read receipts are for their owner alone.
    let receipt = |kind: &str, event_id: &str, body: Value| {
        bob.post(&room_path(&room, &format!("/receipt/{kind}/{}", enc(event_id))), &body)
    };
    assert_eq!(receipt("m.read.private", &second, json!({})).0, 200);
    let private_view = sync(&bob, &since(&bob_token));
    let own = ephemeral(&private_view, &room, "m.receipt").expect("bob does not see his private receipt");
    assert!(own["content"][&second]["m.read.private"].get(&bob.user_id).is_some(), "{own}");
    let others_view = sync(&alice, &since(&stopped["next_batch"]));
    if let Some(receipts) = ephemeral(&others_view, &room, "m.receipt") {
        assert!(!receipts.to_string().contains(&bob.user_id), "bob's private receipt leaked: {receipts}");
        assert_ne!(receipts["content"], json!({}), "an empty receipt event went to alice");
    }
    // Public receipts, threaded ones too.
    assert_eq!(receipt("m.read", &first, json!({})).0, 200);
    assert_eq!(receipt("m.read", &second, json!({"thread_id": "main"})).0, 200);
    let synced = sync(&alice, &since(&stopped["next_batch"]));
    let receipts = ephemeral(&synced, &room, "m.receipt").expect("no receipts").clone();
    assert!(receipts["content"][&first]["m.read"].get(&bob.user_id).is_some(), "{receipts}");
    assert_eq!(receipts["content"][&second]["m.read"][&bob.user_id]["thread_id"], "main", "{receipts}");
    assert!(!receipts.to_string().contains("m.read.private"), "{receipts}");
    // Bad receipts.
    assert_eq!(receipt("m.read", &first, json!({"thread_id": 5})).0, 400);
    assert_eq!(receipt("m.unknown", &first, json!({})).0, 400);
    assert_eq!(receipt("m.read", "$nope", json!({})).0, 404);
}

#[test]
fn account_data_tags_unread_counts_and_summary() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = create_room(&alice, json!({"invite": [carol.user_id], "preset": "private_chat"}));
    invite(&alice, &room, &bob.user_id);
    join(&bob, &room);
    // Summary of an unnamed room: heroes and counts.
    let synced = sync(&alice, "");
    let summary = &synced["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{summary}");
    assert_eq!(summary["m.invited_member_count"], 1, "{summary}");
    let heroes = summary["m.heroes"].as_array().unwrap();
    assert!(heroes.contains(&json!(bob.user_id)) && heroes.contains(&json!(carol.user_id)), "{summary}");
    assert!(!heroes.contains(&json!(alice.user_id)));
    let token = synced["next_batch"].clone();

    // Global and per-room account data.
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.theme", enc(&alice.user_id));
    assert_eq!(alice.put(&global, &json!({"dark": true})).0, 200);
    assert_eq!(alice.get(&global).1, json!({"dark": true}));
    assert_eq!(bob.get(&global).0, 403);
    let per_room = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.draft",
        enc(&alice.user_id),
        enc(&room)
    );
    assert_eq!(alice.put(&per_room, &json!({"text": "half a thought"})).0, 200);
    let tag =
        format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&alice.user_id), enc(&room));
    assert_eq!(alice.put(&tag, &json!({"order": 0.5})).0, 200);
    assert_eq!(alice.put(&tag.replace("m.favourite", "u.work"), &json!({})).0, 200);
    let (_, tags) =
        alice.get(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room)));
    assert_eq!(tags, json!({"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}));
    assert_eq!(alice.delete(&tag.replace("m.favourite", "u.work"), &json!({})).0, 200);
    let synced = sync(&alice, &since(&token));
    let events = synced["account_data"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|event| event["type"] == "org.example.theme" && event["content"]["dark"] == true),
        "{synced}"
    );
    let room_data = synced["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(room_data.iter().any(|event| event["type"] == "org.example.draft"), "{room_data:?}");
    let tags = room_data.iter().find(|event| event["type"] == "m.tag").expect("no tags");
    assert_eq!(tags["content"], json!({"tags": {"m.favourite": {"order": 0.5}}}));
    // Bob does not get alice's account data.
    assert!(
        sync(&bob, "")["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["type"] != "org.example.theme")
    );

    // Unread counts: messages from others notify, mentions highlight, a receipt clears them.
    for text in ["one", "two", "hey alice, look"] {
        send_text(&bob, &room, text);
    }
    let last = send_text(&bob, &room, "and @room too");
    send_text(&alice, &room, "my own message");
    let counts =
        |client: &common::Client| sync(client, "")["rooms"]["join"][&room]["unread_notifications"].clone();
    // "@room" highlights only from someone with the power to notify the room
    // (`notifications.room`, 50 by default); bob has 0.
    assert_eq!(counts(&alice), json!({"notification_count": 4, "highlight_count": 1}));
    assert_eq!(alice.post(&room_path(&room, &format!("/receipt/m.read/{}", enc(&last))), &json!({})).0, 200);
    assert_eq!(counts(&alice), json!({"notification_count": 0, "highlight_count": 0}));
}

#[test]
fn since_tokens_survive_a_restart() {
    let mut node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let token = sync(&alice, "")["next_batch"].clone();
    send_text(&bob, &room, "before the restart");
    node.restart();
    let (status, _) = alice.get("/_matrix/client/v3/account/whoami");
    assert_eq!(status, 200, "the access token did not survive");
    send_text(&bob, &room, "after the restart");
    let synced = sync(&alice, &since(&token));
    assert_eq!(bodies(timeline(&synced, &room)), vec!["before the restart", "after the restart"]);
    // Typing from before the restart's token still shows.
    assert_eq!(
        bob.put(&room_path(&room, &format!("/typing/{}", enc(&bob.user_id))), &json!({"typing": true})).0,
        200
    );
    let typed = sync(&alice, &since(&synced["next_batch"]));
    assert_eq!(
        ephemeral(&typed, &room, "m.typing").expect("typing lost after restart")["content"]["user_ids"],
        json!([bob.user_id])
    );
    // New events get new positions: nothing is delivered twice.
    let again = sync(&alice, &since(&synced["next_batch"]));
    assert!(timeline(&again, &room).is_empty(), "{again}");
    // And a long poll with a pre-restart token wakes on news.
    let query = format!("{}&timeout=10000", since(&typed["next_batch"]));
    let poller = alice.clone();
    let waiting = std::thread::spawn(move || sync(&poller, &query));
    std::thread::sleep(Duration::from_millis(500));
    send_text(&bob, &room, "wake");
    assert_eq!(bodies(timeline(&waiting.join().unwrap(), &room)), vec!["wake"]);
}

#[test]
fn prev_batch_pages_back_with_messages() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = public_room(&alice, &[&bob]);
    let token = sync(&alice, "")["next_batch"].clone();
    send_across_a_topic_change(&alice, &bob, &room);
    let gap = sync(&alice, &since(&token));
    let section = &gap["rooms"]["join"][&room];
    let prev_batch = enc(section["timeline"]["prev_batch"].as_str().unwrap());
    let (status, messages) =
        alice.get(&room_path(&room, &format!("/messages?dir=b&limit=5&from={prev_batch}")));
    assert_eq!(status, 200, "{messages}");
    // Paging back from prev_batch continues right before the timeline.
    assert_eq!(bodies(messages["chunk"].as_array().unwrap()), vec!["c1", "c0", "b14", "b13"]);
}
