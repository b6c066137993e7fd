//! `/sync` as the spec and the reference server give it, where hearth used
//! to differ: lazy-loaded members in gapped syncs, limited timelines of newly
//! joined rooms, presence of newly met members, one's own join under
//! restrictive history visibility, ignored users, and the history a join
//! over federation brings.

mod common;

use common::federation::{TestCa, start_federating};
use common::rooms::*;
use common::{Client, Node, eventually};
use serde_json::{Value, json};

fn state_events<'a>(sync: &'a Value, room_id: &str) -> &'a Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    sync["rooms"]["join"][room_id]["state"]["events"].as_array().unwrap_or(&EMPTY)
}

/// The users whose `m.room.member` events are in a list, sorted.
fn members_in(events: &[Value]) -> Vec<String> {
    let mut members: Vec<String> = events
        .iter()
        .filter(|event| event["type"] == "m.room.member")
        .map(|event| event["state_key"].as_str().unwrap_or_default().to_string())
        .collect();
    members.sort();
    members
}

fn filter_query(filter: Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

fn presence_senders(sync: &Value) -> Vec<String> {
    sync["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["sender"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#lazy-loading-room-members>:
/// with lazy-loaded members, a sync's `state` carries the membership of the
/// timeline's senders. In a gapped (limited) incremental sync the client
/// cannot have seen them in the window it missed, so they come in `state`,
/// and only theirs.
#[test]
fn gapped_lazy_incremental_sync_carries_the_timeline_senders_members() {
    let node = Node::start();
    let [alice, bob, carol, dave] = node.register_each(["alice", "bob", "carol", "dave"]);
    let room = create_room(&alice, json!({"preset": "public_chat"}));
    for user in [&bob, &carol, &dave] {
        join(user, &room);
    }
    send_text(&alice, &room, "hello");
    send_text(&alice, &room, "hello again");
    let lazy =
        filter_query(json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true}}}));
    let first = sync(&alice, &lazy);
    assert_eq!(members_in(state_events(&first, &room)), vec![alice.user_id.clone()], "{first}");
    for index in 0..6 {
        send_text(&carol, &room, &format!("gap {index}"));
    }
    send_text(&dave, &room, "last");
    let gapped = sync(&alice, &format!("{lazy}&{}", since(&first["next_batch"])));
    let section = &gapped["rooms"]["join"][&room];
    assert_eq!(section["timeline"]["limited"], true, "{gapped}");
    assert_eq!(bodies(timeline(&gapped, &room)), vec!["gap 5", "last"]);
    assert_eq!(members_in(state_events(&gapped, &room)), vec![carol.user_id.clone(), dave.user_id.clone()]);

    // A sync that is not gapped and whose senders' membership the device
    // was sent brings no state.
    send_text(&dave, &room, "again");
    let next = sync(&alice, &format!("{lazy}&{}", since(&gapped["next_batch"])));
    assert_eq!(next["rooms"]["join"][&room]["timeline"]["limited"], false, "{next}");
    assert!(state_events(&next, &room).is_empty(), "{next}");
    // Bob, never seen by this device, speaks without a gap: his membership
    // comes along, once.
    send_text(&bob, &room, "bob here");
    let bob_speaks = sync(&alice, &format!("{lazy}&{}", since(&next["next_batch"])));
    assert_eq!(members_in(state_events(&bob_speaks, &room)), vec![bob.user_id.clone()], "{bob_speaks}");
    send_text(&bob, &room, "bob again");
    let quiet = sync(&alice, &format!("{lazy}&{}", since(&bob_speaks["next_batch"])));
    assert!(state_events(&quiet, &room).is_empty(), "{quiet}");
    // With include_redundant_members, every sender's membership comes (and
    // the syncing user's own, as Synapse sends it).
    let redundant = filter_query(json!({"room": {"timeline": {"limit": 2},
        "state": {"lazy_load_members": true, "include_redundant_members": true}}}));
    let again = sync(&alice, &format!("{redundant}&{}", since(&bob_speaks["next_batch"])));
    let both = vec![alice.user_id.clone(), bob.user_id.clone()];
    assert_eq!(members_in(state_events(&again, &room)), both, "{again}");
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#syncing> (`limited`:
/// true if the number of events returned was limited by the filter's
/// `limit`). A room joined since the last sync whose history does not fit
/// comes back limited with a `prev_batch`, as Synapse answers (sytest
/// "Newly joined room has correct timeline in incremental sync").
#[test]
fn a_newly_joined_room_with_long_history_is_limited() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = create_room(&alice, json!({"preset": "public_chat"}));
    for index in 0..11 {
        send(&alice, &room, "a.made.up.filler.type", json!({ "filler": index }));
    }
    for index in 0..6 {
        send(&alice, &room, "test.room.event", json!({ "num": index }));
    }
    let filter = filter_query(
        json!({"room": {"timeline": {"limit": 10, "types": ["test.room.event"]}, "state": {"types": []}}}),
    );
    let before = sync(&bob, &filter);
    join(&bob, &room);
    let after = sync(&bob, &format!("{filter}&{}", since(&before["next_batch"])));
    let section = &after["rooms"]["join"][&room];
    assert_eq!(timeline(&after, &room).len(), 6, "{after}");
    assert_eq!(section["timeline"]["limited"], true, "{after}");
    assert!(section["timeline"]["prev_batch"].is_string(), "{after}");

    // Without a type filter: more messages than the limit.
    let carol = node.register("carol");
    let before = sync(&carol, "");
    join(&carol, &room);
    let limit = filter_query(json!({"room": {"timeline": {"limit": 5}}}));
    let after = sync(&carol, &format!("{limit}&{}", since(&before["next_batch"])));
    assert_eq!(after["rooms"]["join"][&room]["timeline"]["limited"], true, "{after}");
    assert_eq!(timeline(&after, &room).len(), 5);
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#presence> (users
/// who share a room receive each other's presence); Synapse sends the
/// presence of newly met members in the sync that shows them joining
/// (sytest "Newly joined room includes presence in incremental sync", "Get
/// presence for newly joined members in incremental sync").
#[test]
fn newly_met_members_presence_is_delivered() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    let room = create_room(&alice, json!({"preset": "public_chat"}));
    let status = |client: &Client| format!("/_matrix/client/v3/presence/{}/status", enc(&client.user_id));
    let (code, answer) = alice.put(&status(&alice), &json!({"presence": "online", "status_msg": "a"}));
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = bob.put(&status(&bob), &json!({"presence": "online", "status_msg": "b"}));
    assert_eq!(code, 200, "{answer}");
    let alice_first = sync(&alice, "set_presence=offline");
    assert!(!presence_senders(&alice_first).contains(&bob.user_id), "{alice_first}");
    let bob_first = sync(&bob, "set_presence=offline");
    assert!(!presence_senders(&bob_first).contains(&alice.user_id), "{bob_first}");

    join(&bob, &room);
    // Alice: a new member's presence.
    let alice_next = sync(&alice, &format!("set_presence=offline&{}", since(&alice_first["next_batch"])));
    assert!(presence_senders(&alice_next).contains(&bob.user_id), "{alice_next}");
    // Bob: the presence of the members of the room he joined.
    let bob_next = sync(&bob, &format!("set_presence=offline&{}", since(&bob_first["next_batch"])));
    assert!(presence_senders(&bob_next).contains(&alice.user_id), "{bob_next}");
    // And not again after.
    let quiet = sync(&alice, &format!("set_presence=offline&{}", since(&alice_next["next_batch"])));
    assert!(!presence_senders(&quiet).contains(&bob.user_id), "{quiet}");
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#history-visibility>:
/// whatever the history visibility, a user sees their own membership events;
/// the sync that first shows a room has the user's join in its timeline.
#[test]
fn own_join_shows_in_rooms_of_joined_and_invited_history() {
    let node = Node::start();
    let alice = node.register("alice");
    for visibility in ["joined", "invited"] {
        let bob = node.register(&format!("bob-{visibility}"));
        let room = create_room(&alice, json!({"preset": "public_chat"}));
        put_state(
            &alice,
            &room,
            "m.room.history_visibility",
            "",
            json!({ "history_visibility": visibility }),
        );
        send_text(&alice, &room, "before");
        let before = sync(&bob, "");
        join(&bob, &room);
        for query in [since(&before["next_batch"]), String::new()] {
            let after = sync(&bob, &query);
            let own_join = timeline(&after, &room).iter().any(|event| {
                event["type"] == "m.room.member"
                    && event["state_key"] == bob.user_id.as_str()
                    && event["content"]["membership"] == "join"
            });
            assert!(own_join, "{visibility} {query}: {after}");
            assert!(bodies(timeline(&after, &room)).is_empty(), "{visibility}: {after}");
        }
    }
}

fn set_ignored(client: &Client, ignored: &[&str]) {
    let users: serde_json::Map<String, Value> =
        ignored.iter().map(|user| (user.to_string(), json!({}))).collect();
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&client.user_id));
    let (status, answer) = client.put(&path, &json!({ "ignored_users": users }));
    assert_eq!(status, 200, "{answer}");
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#ignoring-users>:
/// the server does not send the ignored user's events (nor their invites)
/// to the ignoring user; after the list changes, syncs follow the new list
/// at once, and a new sync stream shows what was hidden. As Synapse does,
/// `/messages` and `/context` leave the ignored user's messages out too,
/// while state events (their membership) stay.
#[test]
fn ignored_users_messages_and_invites_are_not_delivered() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = public_room(&alice, &[&bob, &carol]);
    set_ignored(&alice, &[&bob.user_id]);
    let first = sync(&alice, "");
    send_text(&bob, &room, "from bob");
    let carol_said = send_text(&carol, &room, "from carol");
    let private = create_room(&bob, json!({"preset": "private_chat"}));
    invite(&bob, &private, &alice.user_id);

    let next = sync(&alice, &since(&first["next_batch"]));
    assert_eq!(bodies(timeline(&next, &room)), vec!["from carol"], "{next}");
    assert!(next["rooms"]["invite"].get(&private).is_none(), "{next}");
    let initial = sync(&alice, "");
    assert_eq!(bodies(timeline(&initial, &room)), vec!["from carol"], "{initial}");
    // Nor do their messages count as unread.
    let unread = &initial["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(unread["notification_count"], 1, "{initial}");
    assert!(initial["rooms"]["invite"].get(&private).is_none(), "{initial}");
    // Their membership (state) stays.
    assert!(
        timeline(&initial, &room).iter().any(|event| event["state_key"] == bob.user_id.as_str()),
        "{initial}"
    );

    let (status, page) = alice.get(&room_path(&room, "/messages?dir=b&limit=50"));
    assert_eq!(status, 200);
    assert_eq!(bodies(page["chunk"].as_array().unwrap()), vec!["from carol"], "{page}");
    let (status, context) = alice.get(&room_path(&room, &format!("/context/{}?limit=10", enc(&carol_said))));
    assert_eq!(status, 200, "{context}");
    assert!(bodies(context["events_before"].as_array().unwrap()).is_empty(), "{context}");

    // Unignored: syncs follow at once, and a new stream shows what was hidden.
    set_ignored(&alice, &[]);
    let changed = sync(&alice, &since(&next["next_batch"]));
    let lists: Vec<&Value> = changed["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.ignored_user_list")
        .collect();
    assert_eq!(lists.len(), 1, "{changed}");
    send_text(&bob, &room, "bob again");
    let later = sync(&alice, &since(&changed["next_batch"]));
    assert_eq!(bodies(timeline(&later, &room)), vec!["bob again"], "{later}");
    let fresh = sync(&alice, "");
    assert_eq!(bodies(timeline(&fresh, &room)), vec!["from bob", "from carol", "bob again"], "{fresh}");
    assert!(fresh["rooms"]["invite"].get(&private).is_some(), "{fresh}");
    // Counts follow the list in force when each event arrived (as Synapse
    // does): "from bob" came while he was ignored and stays uncounted.
    assert_eq!(fresh["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 2, "{fresh}");
}

/// Spec: <https://spec.matrix.org/latest/client-server-api/#syncing> and
/// <https://spec.matrix.org/latest/client-server-api/#history-visibility>:
/// after joining a `shared` room over federation, the first sync carries the
/// recent history the user may see (limited, with a `prev_batch` that pages
/// into the earlier events), as Synapse gives it, not just the join.
#[test]
fn the_first_sync_after_a_federated_join_carries_the_visible_history() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let carol = b.register("carol");
    let room = create_room(&alice, json!({"preset": "private_chat", "name": "Shared"}));
    for index in 0..30 {
        send_text(&alice, &room, &format!("early {index}"));
    }
    // An invite over federation from a user Carol ignores is not shown
    // (<https://spec.matrix.org/latest/client-server-api/#ignoring-users>).
    let dave = a.register("dave");
    set_ignored(&carol, &[&dave.user_id]);
    let daves = create_room(&dave, json!({"preset": "private_chat"}));
    invite(&dave, &daves, &carol.user_id);
    invite(&alice, &room, &carol.user_id);
    let invited = eventually(std::time::Duration::from_secs(20), || {
        let synced = sync(&carol, "");
        synced["rooms"]["invite"].get(&room).is_some().then_some(synced)
    });
    assert!(invited["rooms"]["invite"].get(&daves).is_none(), "{invited}");
    let invited = invited["next_batch"].clone();
    let (status, answer) = carol.post(&room_path(&room, "/join"), &json!({}));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());

    let limit = filter_query(json!({"room": {"timeline": {"limit": 10}}}));
    for query in [format!("{limit}&{}", since(&invited)), limit.clone()] {
        let after = sync(&carol, &query);
        let section = &after["rooms"]["join"][&room];
        assert_eq!(section["timeline"]["limited"], true, "{query}: {after}");
        let shown = bodies(timeline(&after, &room));
        assert!(shown.contains(&"early 29".to_string()), "{query}: {after}");
        let state = state_events(&after, &room);
        assert!(state.iter().any(|event| event["type"] == "m.room.create"), "{query}: {after}");
        // The prev_batch pages into the earlier messages.
        let prev = section["timeline"]["prev_batch"].as_str().unwrap();
        let (status, page) =
            carol.get(&room_path(&room, &format!("/messages?dir=b&limit=5&from={}", enc(prev))));
        assert_eq!(status, 200, "{page}");
        let earlier = bodies(page["chunk"].as_array().unwrap());
        assert!(!earlier.is_empty(), "{page}");
        assert!(earlier.iter().all(|body| body.starts_with("early") && !shown.contains(body)), "{page}");
    }
}

/// As above, joining after an invite, with and without lazy-loaded members.
#[test]
fn own_join_after_an_invite_shows_under_restrictive_history() {
    let node = Node::start();
    let alice = node.register("alice");
    for visibility in ["joined", "invited"] {
        for lazy in [false, true] {
            let bob = node.register(&format!("bob-{visibility}-{lazy}"));
            let room = create_room(
                &alice,
                json!({"preset": "private_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": visibility}}]}),
            );
            send_text(&alice, &room, "before");
            let q = if lazy {
                filter_query(json!({"room": {"state": {"lazy_load_members": true}}}))
            } else {
                String::new()
            };
            let before = sync(&bob, &q);
            invite(&alice, &room, &bob.user_id);
            let invited = sync(&bob, &format!("{q}&{}", since(&before["next_batch"])));
            assert!(invited["rooms"]["invite"].get(&room).is_some());
            join(&bob, &room);
            send_text(&alice, &room, "after");
            for query in [format!("{q}&{}", since(&invited["next_batch"])), q.clone()] {
                let after = sync(&bob, &query);
                let own_join = timeline(&after, &room).iter().any(|event| {
                    event["type"] == "m.room.member"
                        && event["state_key"] == bob.user_id.as_str()
                        && event["content"]["membership"] == "join"
                });
                assert!(own_join, "{visibility} {lazy} {query}: {after}");
            }
        }
    }
}
