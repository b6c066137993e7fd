//! Presence as clients use it: setting and reading status, who may read it,
//! `m.presence` in incremental syncs, `set_presence` on `/sync`, and long
//! polls woken by a presence change.

mod common;

use std::time::{Duration, Instant};

use common::rooms::*;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

fn status_path(user_id: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user_id))
}

/// The `m.presence` events about `user_id` in a sync answer.
fn presence_of<'a>(sync: &'a Value, user_id: &str) -> Vec<&'a Value> {
    sync["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.presence" && event["sender"] == user_id)
        .collect()
}

fn put_presence(client: &Client, body: Value) {
    let (status, answer) = client.put(&status_path(&client.user_id), &body);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn set_and_get_own_and_peers_presence() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    public_room(&alice, &[&bob]);

    put_presence(&alice, json!({"presence": "online", "status_msg": "baking"}));
    let (status, own) = alice.get(&status_path(&alice.user_id));
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["presence"], "online");
    assert_eq!(own["status_msg"], "baking");
    assert_eq!(own["currently_active"], true);
    assert!(own["last_active_ago"].as_i64().is_some_and(|ago| (0..60_000).contains(&ago)), "{own}");

    // A room peer sees it; a stranger may not; nobody sets someone else's.
    let (status, seen) = bob.get(&status_path(&alice.user_id));
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["status_msg"], "baking");
    assert_error(&carol.get(&status_path(&alice.user_id)), 403, "M_FORBIDDEN");
    assert_error(&bob.put(&status_path(&alice.user_id), &json!({"presence": "offline"})), 403, "M_FORBIDDEN");

    // Bad values are refused and change nothing.
    assert_error(
        &alice.put(&status_path(&alice.user_id), &json!({"presence": "busy"})),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(&status_path(&alice.user_id), &json!({"presence": "online", "status_msg": 7})),
        400,
        "M_INVALID_PARAM",
    );
    assert_eq!(alice.put(&status_path(&alice.user_id), &json!({})).0, 400);
    assert_eq!(bob.get(&status_path(&alice.user_id)).1["status_msg"], "baking");

    // Setting again without a message clears it; unknown users are 404.
    put_presence(&alice, json!({"presence": "unavailable"}));
    let (_, idle) = bob.get(&status_path(&alice.user_id));
    assert_eq!(idle["presence"], "unavailable");
    assert!(idle.get("status_msg").is_none(), "{idle}");
    assert!(idle.get("currently_active").is_none(), "{idle}");
    assert_error(&alice.get(&status_path(&node.user_id("nobody"))), 404, "M_NOT_FOUND");
    // Someone who never set anything reads as offline.
    assert_eq!(alice.get(&status_path(&bob.user_id)).1["presence"], "offline");
}

#[test]
fn incremental_syncs_carry_presence_of_room_peers_only() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    public_room(&alice, &[&bob]);

    let first = sync(&alice, "set_presence=offline");
    let token = first["next_batch"].as_str().unwrap();
    assert_eq!(token.split('_').count(), 3, "token {token}");

    put_presence(&bob, json!({"presence": "online", "status_msg": "here"}));
    put_presence(&carol, json!({"presence": "online", "status_msg": "elsewhere"}));
    let next = sync(&alice, &format!("set_presence=offline&{}", since(&first["next_batch"])));
    let bobs = presence_of(&next, &bob.user_id);
    assert_eq!(bobs.len(), 1, "{next}");
    assert_eq!(bobs[0]["content"]["presence"], "online");
    assert_eq!(bobs[0]["content"]["status_msg"], "here");
    assert!(presence_of(&next, &carol.user_id).is_empty(), "carol shares no room: {next}");

    // Nothing changed since: nothing repeated.
    let quiet = sync(&alice, &format!("set_presence=offline&{}", since(&next["next_batch"])));
    assert!(quiet["presence"]["events"].as_array().unwrap().is_empty(), "{quiet}");

    // A token from before presence (two parts) still works: presence 0.
    let stream_and_typing: Vec<&str> = token.split('_').take(2).collect();
    let old = sync(&alice, &format!("set_presence=offline&since={}", stream_and_typing.join("_")));
    assert_eq!(presence_of(&old, &bob.user_id).len(), 1, "{old}");
    // Two parts too many, whatever the token's own length: refused.
    assert_error(&alice.get(&format!("/_matrix/client/v3/sync?since={token}_1_1")), 400, "M_INVALID_PARAM");

    // A filter that leaves presence out is obeyed.
    put_presence(&bob, json!({"presence": "unavailable"}));
    let filter = enc(&json!({"presence": {"not_types": ["m.presence"]}}).to_string());
    let filtered =
        sync(&alice, &format!("set_presence=offline&filter={filter}&{}", since(&quiet["next_batch"])));
    assert!(filtered["presence"]["events"].as_array().unwrap().is_empty(), "{filtered}");
}

#[test]
fn set_presence_on_sync_marks_the_syncing_user() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    public_room(&alice, &[&bob]);

    // `offline` leaves presence alone.
    sync(&bob, "set_presence=offline");
    assert_eq!(alice.get(&status_path(&bob.user_id)).1["presence"], "offline");
    // The default is `online`, and the user sees their own presence.
    let own = sync(&bob, "");
    assert_eq!(alice.get(&status_path(&bob.user_id)).1["presence"], "online");
    assert_eq!(presence_of(&own, &bob.user_id)[0]["content"]["presence"], "online", "{own}");
    // `unavailable` as asked; a later `online` sync does not undo a chosen `unavailable`.
    sync(&bob, "set_presence=unavailable");
    assert_eq!(alice.get(&status_path(&bob.user_id)).1["presence"], "unavailable");
    sync(&bob, "");
    assert_eq!(alice.get(&status_path(&bob.user_id)).1["presence"], "unavailable");
    put_presence(&bob, json!({"presence": "online"}));
    assert_eq!(alice.get(&status_path(&bob.user_id)).1["presence"], "online");
    assert_error(&bob.get("/_matrix/client/v3/sync?set_presence=away"), 400, "M_INVALID_PARAM");
}

#[test]
fn a_long_poll_wakes_on_a_presence_change() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    public_room(&alice, &[&bob]);
    let token = sync(&alice, "")["next_batch"].clone();

    let poller = alice.clone();
    let query = format!("{}&timeout=20000", since(&token));
    let waiting = std::thread::spawn(move || (sync(&poller, &query), Instant::now()));
    std::thread::sleep(Duration::from_millis(700));
    assert!(!waiting.is_finished(), "the long poll returned before anything happened");
    let changed_at = Instant::now();
    put_presence(&bob, json!({"presence": "online", "status_msg": "awake"}));
    let (answer, returned_at) = waiting.join().unwrap();
    let delay = returned_at.saturating_duration_since(changed_at);
    assert!(delay < Duration::from_secs(2), "the long poll took {delay:?} after the change");
    assert_eq!(presence_of(&answer, &bob.user_id)[0]["content"]["status_msg"], "awake", "{answer}");
}

#[test]
fn presence_crosses_servers_to_room_peers() {
    use common::federation::{TestCa, start_federating};
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "porch"}));
    let alias = format!("#porch:{}", a.server_name);
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!(status, 200, "{answer}");
    let token = sync(&alice, "set_presence=offline")["next_batch"].clone();

    put_presence(&bob, json!({"presence": "online", "status_msg": "from afar"}));
    let seen = common::eventually(Duration::from_secs(20), || {
        let answer = sync(&alice, &format!("set_presence=offline&{}", since(&token)));
        let events = presence_of(&answer, &bob.user_id);
        events.first().map(|event| event["content"].clone())
    });
    assert_eq!(seen["presence"], "online", "{seen}");
    assert_eq!(seen["status_msg"], "from afar");
    let (status, direct) = alice.get(&status_path(&bob.user_id));
    assert_eq!(status, 200, "{direct}");
    assert_eq!(direct["status_msg"], "from afar");
}
