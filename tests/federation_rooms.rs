//! Rooms shared between hearth nodes over federation: joins by alias,
//! messages both ways, invites, leaves, bans, typing and receipts, state
//! conflicts, and the outage story (a node stopped while the others talk
//! catches up when it returns).

mod common;

use std::time::Duration;

use common::federation::{TestCa, federating_pair, start_federating};
use common::rooms::{
    create_room, enc, ephemeral, get_state, membership_of, put_state, room_path, send_text, sync_until,
    wait_for_membership,
};
use common::{Client, Node, eventually};
use serde_json::json;

/// How long federation gets to deliver something on loopback.
const DELIVERY: Duration = Duration::from_secs(20);

/// The bodies of the text messages in a room, oldest first, as `client` sees them.
fn messages(client: &Client, room_id: &str) -> Vec<String> {
    let (status, answer) = client.get(&room_path(room_id, "/messages?dir=b&limit=200"));
    if status != 200 {
        return Vec::new();
    }
    let mut bodies: Vec<String> = answer["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect();
    bodies.reverse();
    bodies
}

fn wait_for_message(client: &Client, room_id: &str, body: &str) {
    eventually(DELIVERY, || messages(client, room_id).iter().any(|seen| seen == body).then_some(()));
}

fn joined_room_of(a: &Node, b: &Node) -> (Client, Client, String) {
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id =
        create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "lounge", "name": "Lounge"}));
    let alias = format!("#lounge:{}", a.server_name);
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!(status, 200, "bob joins through the alias: {answer}\n{}", b.log_text());
    assert_eq!(answer["room_id"], room_id);
    (alice, bob, room_id)
}

#[test]
fn a_remote_user_joins_by_alias_and_messages_flow_both_ways() {
    let (_ca, a, b) = federating_pair();
    let (alice, bob, room_id) = joined_room_of(&a, &b);
    // The room's name came with the state.
    let (status, name) = bob.get(&room_path(&room_id, "/state/m.room.name/"));
    assert_eq!((status, name["name"].as_str()), (200, Some("Lounge")));
    // Alice sees Bob's join.
    wait_for_membership(&alice, &room_id, &bob.user_id, "join", DELIVERY);

    send_text(&alice, &room_id, "hello from a");
    wait_for_message(&bob, &room_id, "hello from a");
    send_text(&bob, &room_id, "hello from b");
    wait_for_message(&alice, &room_id, "hello from b");

    // Both sides hold the same conversation in the same order.
    let expected = vec!["hello from a".to_string(), "hello from b".to_string()];
    assert_eq!(messages(&alice, &room_id), expected);
    eventually(DELIVERY, || (messages(&bob, &room_id) == expected).then_some(()));

    // The remote profile comes over federation.
    let (status, profile) = bob.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)));
    assert_eq!(status, 200, "{profile}");
}

/// A household's users joining a remote room at the same moment all get in:
/// the resident answers a few `send_join`s per server at a time and asks
/// the others to come back (429 with `retry_after_ms`), and the joining
/// server does. Spec: <https://spec.matrix.org/latest/client-server-api/#rate-limiting>.
#[test]
fn users_of_one_server_joining_at_once_all_get_in() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "hall"}));
    let alias = enc(&format!("#hall:{}", a.server_name));
    let users: Vec<Client> = (0..6).map(|index| b.register(&format!("user{index}"))).collect();
    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let joins: Vec<_> = users
            .iter()
            .map(|user| scope.spawn(|| user.post(&format!("/_matrix/client/v3/join/{alias}"), &json!({}))))
            .collect();
        joins.into_iter().map(|join| join.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}\n{}", b.log_text());
    }
    // One of them joined through A, the others here once B was in the room
    // (two joins through A at once would each have made their answer's
    // state B's, the later leaving out the earlier's member): both servers
    // see all seven members.
    let room_id = answers[0].1["room_id"].as_str().unwrap().to_string();
    for client in [&alice, &users[0]] {
        eventually(DELIVERY, || {
            let (_, members) = client.get(&room_path(&room_id, "/joined_members"));
            (members["joined"].as_object().map_or(0, |joined| joined.len()) == 7).then_some(())
        });
    }
    assert_eq!(b.log_text().matches("batches of state and auth events").count(), 1, "{}", b.log_text());
}

/// A createRoom inviting many users signs their invites on a second
/// thread while it stores them: a server joining afterwards checks every
/// one of them (state events badly signed would be left out of the room's
/// state there) and sees them all invited, in the order createRoom was given
/// them sorted in.
#[test]
fn the_invites_of_a_large_create_room_reach_a_joining_server_signed() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let invited: Vec<String> = (0..40).rev().map(|index| a.user_id(&format!("guest{index:02}"))).collect();
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "invited", "invite": invited}),
    );
    let bob = b.register("bob");
    let alias = enc(&format!("#invited:{}", a.server_name));
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{alias}"), &json!({}));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    let (status, members) = bob.get(&room_path(&room_id, "/members?membership=invite"));
    assert_eq!(status, 200, "{members}");
    let mut seen: Vec<String> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["state_key"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut expected = invited.clone();
    expected.sort();
    assert_eq!(seen, expected, "{}", b.log_text());
    // The room's timeline on A holds the invites in sorted order.
    let (status, timeline) = alice.get(&room_path(&room_id, "/messages?dir=f&limit=100"));
    assert_eq!(status, 200);
    let order: Vec<&str> = timeline["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["content"]["membership"] == "invite")
        .filter_map(|event| event["state_key"].as_str())
        .collect();
    assert_eq!(order, expected.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The same join sent twice at once (a client retrying) joins the user
/// once: the second waits for the first and finds the user in the room.
#[test]
fn a_remote_join_sent_twice_at_once_joins_once() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "twice"}));
    let alias = enc(&format!("#twice:{}", a.server_name));
    let bob = b.register("bob");
    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let joins: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| bob.post(&format!("/_matrix/client/v3/join/{alias}"), &json!({}))))
            .collect();
        joins.into_iter().map(|join| join.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}\n{}", b.log_text());
    }
    send_text(&bob, &room_id, "joined");
    wait_for_message(&alice, &room_id, "joined");
    let (status, timeline) = alice.get(&room_path(&room_id, "/messages?dir=f&limit=100"));
    assert_eq!(status, 200);
    let joins = timeline["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| {
            event["state_key"] == bob.user_id.as_str() && event["content"]["membership"] == "join"
        })
        .count();
    assert_eq!(joins, 1, "{timeline}");
}

#[test]
fn invites_leaves_and_bans_cross_servers() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let carol = b.register("carol");
    let room_id = create_room(&alice, json!({"preset": "private_chat", "name": "Private"}));
    let (status, answer) = alice.post(&room_path(&room_id, "/invite"), &json!({"user_id": carol.user_id}));
    assert_eq!(status, 200, "invite across servers: {answer}\n{}", a.log_text());

    // Carol sees the invite in her sync, then joins.
    let invited = eventually(DELIVERY, || {
        let (_, sync) = carol.get("/_matrix/client/v3/sync");
        sync["rooms"]["invite"].get(&room_id).cloned()
    });
    let state = invited["invite_state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|event| event["type"] == "m.room.name"), "{invited}");
    let (status, answer) = carol.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 200, "join after invite: {answer}\n{}", b.log_text());
    wait_for_membership(&alice, &room_id, &carol.user_id, "join", DELIVERY);

    send_text(&carol, &room_id, "thanks for the invite");
    wait_for_message(&alice, &room_id, "thanks for the invite");

    // Carol leaves; Alice sees it.
    let (status, _) = carol.post(&room_path(&room_id, "/leave"), &json!({}));
    assert_eq!(status, 200);
    wait_for_membership(&alice, &room_id, &carol.user_id, "leave", DELIVERY);

    // A ban of a remote user reaches their server, and they cannot come back.
    let dave = b.register("dave");
    let (status, _) = alice.post(&room_path(&room_id, "/invite"), &json!({"user_id": dave.user_id}));
    assert_eq!(status, 200);
    eventually(DELIVERY, || {
        let (_, sync) = dave.get("/_matrix/client/v3/sync");
        sync["rooms"]["invite"].get(&room_id).map(|_| ())
    });
    let (status, answer) = dave.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    wait_for_membership(&alice, &room_id, &dave.user_id, "join", DELIVERY);
    let (status, answer) =
        alice.post(&room_path(&room_id, "/ban"), &json!({"user_id": dave.user_id, "reason": "test"}));
    assert_eq!(status, 200, "{answer}");
    wait_for_membership(&dave, &room_id, &dave.user_id, "ban", DELIVERY);
    let (status, _) = dave.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 403, "a banned user rejoining");
}

#[test]
fn typing_and_receipts_cross_servers() {
    let (_ca, a, b) = federating_pair();
    let (alice, bob, room_id) = joined_room_of(&a, &b);
    wait_for_membership(&alice, &room_id, &bob.user_id, "join", DELIVERY);
    let event_id = send_text(&alice, &room_id, "read me");
    wait_for_message(&bob, &room_id, "read me");

    let path = room_path(&room_id, &format!("/typing/{}", enc(&bob.user_id)));
    let (status, _) = bob.put(&path, &json!({"typing": true, "timeout": 20000}));
    assert_eq!(status, 200);
    sync_until(&alice, DELIVERY, |sync| {
        let typing = ephemeral(sync, &room_id, "m.typing")?;
        typing["content"]["user_ids"].as_array().unwrap().contains(&json!(bob.user_id)).then_some(())
    });

    let (status, _) =
        bob.post(&room_path(&room_id, &format!("/receipt/m.read/{}", enc(&event_id))), &json!({}));
    assert_eq!(status, 200);
    sync_until(&alice, DELIVERY, |sync| {
        let receipt = ephemeral(sync, &room_id, "m.receipt")?;
        (!receipt["content"][&event_id]["m.read"][&bob.user_id].is_null()).then_some(())
    });
}

/// Every message body in order, as a list, once all of `expected` arrived.
fn wait_for_all(client: &Client, room_id: &str, expected: &[String]) -> Vec<String> {
    eventually(DELIVERY, || {
        let seen = messages(client, room_id);
        expected.iter().all(|body| seen.contains(body)).then_some(seen)
    })
}

/// Both lists hold the same messages once each, and each sender's messages
/// (`during N from X`) in the order they were sent.
fn assert_same_messages_in_sender_order(seen: &[String], reference: &[String], sent: &[String]) {
    let mut sorted_seen = seen.to_vec();
    let mut sorted_reference = reference.to_vec();
    sorted_seen.sort();
    sorted_reference.sort();
    assert_eq!(sorted_seen, sorted_reference, "the same messages, each once");
    for sender in ["from a", "from b"] {
        let expected: Vec<&String> = sent.iter().filter(|body| body.ends_with(sender)).collect();
        let got: Vec<&String> = seen.iter().filter(|body| body.ends_with(sender)).collect();
        assert_eq!(got, expected, "messages {sender} in the order they were sent");
    }
}

#[test]
fn a_node_that_was_down_catches_up_in_order_without_duplicates() {
    let (ca, a, b) = federating_pair();
    let mut c = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let carol = c.register("carol");
    let room_id =
        create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "town", "name": "Town"}));
    let alias = format!("#town:{}", a.server_name);
    for client in [&bob, &carol] {
        let (status, answer) = client.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
        assert_eq!(status, 200, "{answer}");
    }
    for client in [&alice, &bob] {
        wait_for_membership(client, &room_id, &carol.user_id, "join", DELIVERY);
    }
    send_text(&carol, &room_id, "before the outage");
    wait_for_message(&alice, &room_id, "before the outage");
    wait_for_message(&bob, &room_id, "before the outage");

    // C goes down; A and B keep talking.
    c.stop();
    let mut during = Vec::new();
    for round in 0..5 {
        for (client, name) in [(&alice, "a"), (&bob, "b")] {
            let body = format!("during {round} from {name}");
            send_text(client, &room_id, &body);
            during.push(body);
        }
    }
    let on_a = wait_for_all(&alice, &room_id, &during);
    let on_b = wait_for_all(&bob, &room_id, &during);
    // Messages sent at the same time on two servers are concurrent in the
    // DAG: each server may list them in the order they arrived. What must
    // hold everywhere is each sender's own order and that nothing repeats.
    assert_same_messages_in_sender_order(&on_a, &on_b, &during);

    // C returns and within seconds holds everything it missed, in order, once each.
    c.restart();
    let mut carol = carol;
    carol.base = c.http.clone();
    let on_c = wait_for_all(&carol, &room_id, &during);
    assert_same_messages_in_sender_order(&on_c, &on_a, &during);
    // And C's users can talk again.
    send_text(&carol, &room_id, "back again");
    wait_for_message(&alice, &room_id, "back again");
    wait_for_message(&bob, &room_id, "back again");
}

/// A node that missed more of a room than `get_missing_events` fills (its
/// peer's queue for it lost, as with a peer that sends only its latest event
/// after an outage) takes the state at the gap by event IDs (`/state_ids`),
/// fetching only the events it lacks. The room's whole state (`/state`) is
/// 8.4 MB, over the 8 MiB a node reads of other answers: by IDs it is a few
/// KB, and the node catches up.
#[test]
fn a_node_that_missed_more_than_a_gap_fill_takes_the_state_at_the_gap_by_ids() {
    catch_up_after_a_lost_queue(false);
}

/// As above, but the 8.4 MB of state was made while the node was down: it
/// lacks over 100 events of the state, so it takes the whole state
/// (`/state`), read as a stream as a join answer is.
#[test]
fn a_node_that_missed_much_state_takes_the_whole_state_at_the_gap_as_a_stream() {
    catch_up_after_a_lost_queue(true);
}

/// 140 state events of 60 KB (8.4 MB of state) made before or during B's
/// outage; then 30 messages B misses, and A's queue for B is lost. The next
/// message and state change must reach B.
fn catch_up_after_a_lost_queue(state_during_outage: bool) {
    let (_ca, mut a, mut b) = federating_pair();
    let alice = a.register("alice");
    let mut bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "heavy"}));
    let alias = enc(&format!("#heavy:{}", a.server_name));
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{alias}"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    // They reach B (when up) in transactions of 50 events, 3 MB each (over
    // the 1 MiB of other bodies).
    let filler = "x".repeat(60_000);
    let heavy_state = || {
        for index in 0..140 {
            put_state(&alice, &room_id, "org.example.heavy", &index.to_string(), json!({ "filler": filler }));
        }
    };
    if !state_during_outage {
        heavy_state();
        eventually(DELIVERY, || {
            (get_state(&bob, &room_id, "org.example.heavy", "139").0 == 200).then_some(())
        });
    }

    // B is down while A's room moves on by more than a gap fill (20 events),
    // and A's queue for B is lost.
    b.stop();
    if state_during_outage {
        heavy_state();
    }
    for index in 0..30 {
        send_text(&alice, &room_id, &format!("missed {index}"));
    }
    a.stop();
    let database = rusqlite::Connection::open(a.data_dir.0.join("hearth.db")).unwrap();
    for table in ["federation_outbox", "federation_destinations"] {
        database.execute(&format!("DELETE FROM {table} WHERE destination = ?1"), [&b.server_name]).unwrap();
    }
    drop(database);
    a.restart();
    b.restart();
    bob.base = b.http.clone();

    // The next event reaches B on top of the gap, and so does a state
    // change after it; the state B missed is B's too.
    send_text(&alice, &room_id, "after the gap");
    put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": "after the gap"}));
    wait_for_message(&bob, &room_id, "after the gap");
    eventually(DELIVERY, || {
        let (_, topic) = get_state(&bob, &room_id, "m.room.topic", "");
        (topic["topic"] == "after the gap").then_some(())
    });
    let (status, heavy) = get_state(&bob, &room_id, "org.example.heavy", "139");
    assert_eq!(status, 200, "{heavy}\n{}", b.log_text());
    assert_eq!(heavy["filler"].as_str().map(str::len), Some(60_000));
}

#[test]
fn concurrent_state_changes_resolve_the_same_everywhere() {
    let (_ca, a, b) = federating_pair();
    let (alice, bob, room_id) = joined_room_of(&a, &b);
    wait_for_membership(&alice, &room_id, &bob.user_id, "join", DELIVERY);
    // Give Bob the power to change the topic, then both change it at once.
    let (_, mut levels) = alice.get(&room_path(&room_id, "/state/m.room.power_levels/"));
    levels["users"][&bob.user_id] = json!(50);
    let (status, _) = alice.put(&room_path(&room_id, "/state/m.room.power_levels/"), &levels);
    assert_eq!(status, 200);
    eventually(DELIVERY, || {
        let (_, seen) = bob.get(&room_path(&room_id, "/state/m.room.power_levels/"));
        (seen["users"][&bob.user_id] == json!(50)).then_some(())
    });
    let (status_a, _) =
        alice.put(&room_path(&room_id, "/state/m.room.topic/"), &json!({"topic": "from alice"}));
    let (status_b, _) = bob.put(&room_path(&room_id, "/state/m.room.topic/"), &json!({"topic": "from bob"}));
    assert_eq!((status_a, status_b), (200, 200));
    // Both nodes settle on one topic (after each has the other's event), and agree.
    let topic = |client: &Client| -> Option<String> {
        let (_, content) = client.get(&room_path(&room_id, "/state/m.room.topic/"));
        content["topic"].as_str().map(str::to_owned)
    };
    // Each side must have both topic events before their views can be compared.
    for client in [&alice, &bob] {
        eventually(DELIVERY, || {
            let (_, answer) = client.get(&room_path(&room_id, "/messages?dir=b&limit=50"));
            let topics = answer["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|event| event["type"] == "m.room.topic")
                .count();
            (topics >= 2).then_some(())
        });
    }
    eventually(DELIVERY, || {
        let (on_a, on_b) = (topic(&alice), topic(&bob));
        (on_a.is_some() && on_a == on_b).then_some(())
    });
}

#[test]
fn history_from_before_a_remote_join_is_backfilled() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "archive"}));
    // More than the join brings along: the rest comes when Bob pages back.
    for index in 0..80 {
        send_text(&alice, &room_id, &format!("early {index}"));
    }
    let alias = format!("#archive:{}", a.server_name);
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!(status, 200, "{answer}");
    // Bob pages back from his join and finds what was said before it, in order.
    let early: Vec<String> = (0..80).map(|index| format!("early {index}")).collect();
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let query = match &from {
            Some(token) => format!("/messages?dir=b&limit=30&from={token}"),
            None => "/messages?dir=b&limit=30".to_string(),
        };
        let (status, page) = bob.get(&room_path(&room_id, &query));
        assert_eq!(status, 200, "{page}");
        for event in page["chunk"].as_array().unwrap() {
            if event["type"] == "m.room.message" {
                paged.push(event["content"]["body"].as_str().unwrap().to_string());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_string()),
            None => break,
        }
    }
    paged.reverse();
    assert_eq!(paged, early, "\n{}", b.log_text());
    assert_eq!(messages(&bob, &room_id), early);
    send_text(&alice, &room_id, "after");
    wait_for_message(&bob, &room_id, "after");
    let mut all = early.clone();
    all.push("after".into());
    assert_eq!(messages(&bob, &room_id), all);
}

#[test]
fn directories_profiles_and_openid_across_servers() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id =
        create_room(&alice, json!({"preset": "public_chat", "visibility": "public", "name": "Square"}));
    // Bob browses A's room directory through his own server.
    let path = format!("/_matrix/client/v3/publicRooms?server={}", enc(&a.server_name));
    let (status, listing) = bob.get(&path);
    assert_eq!(status, 200, "{listing}");
    assert!(listing["chunk"].as_array().unwrap().iter().any(|room| room["room_id"] == room_id), "{listing}");
    let (status, listing) = bob.post(&path, &json!({"filter": {"generic_search_term": "square"}}));
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["chunk"][0]["room_id"], room_id);

    // OpenID: a token from A proves Alice's identity to whoever asks A.
    let (status, token) = alice
        .post(&format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice.user_id)), &json!({}));
    assert_eq!(status, 200, "{token}");
    let third_party = Client::new(&a.https);
    let userinfo = format!(
        "/_matrix/federation/v1/openid/userinfo?access_token={}",
        token["access_token"].as_str().unwrap()
    );
    let (status, info) = third_party.get(&userinfo);
    assert_eq!((status, info["sub"].as_str()), (200, Some(alice.user_id.as_str())), "{info}");
    let (status, _) = third_party.get("/_matrix/federation/v1/openid/userinfo?access_token=nonsense");
    assert_eq!(status, 401);
}

/// A direct message to a user of another server: createRoom's `invite` works
/// for remote users as `POST /rooms/{roomId}/invite` does, and `is_direct`
/// reaches the invitee's `/sync`.
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3createroom>
/// (`invite`, `is_direct`) and
/// <https://spec.matrix.org/latest/client-server-api/#direct-messaging>.
#[test]
fn create_room_invites_a_remote_user_to_a_direct_message() {
    let (_ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let cara = b.register("cara");
    let (status, answer) = alice.post(
        "/_matrix/client/v3/createRoom",
        &json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [cara.user_id]}),
    );
    assert_eq!(status, 200, "createRoom inviting a remote user: {answer}\n{}", a.log_text());
    let room_id = answer["room_id"].as_str().unwrap().to_string();
    assert_eq!(membership_of(&alice, &room_id, &cara.user_id).as_deref(), Some("invite"));

    // Cara sees the invite, marked direct, in her sync.
    let invited = eventually(DELIVERY, || {
        let (_, sync) = cara.get("/_matrix/client/v3/sync");
        sync["rooms"]["invite"].get(&room_id).cloned()
    });
    let state = invited["invite_state"]["events"].as_array().unwrap();
    let own = state
        .iter()
        .find(|event| event["type"] == "m.room.member" && event["state_key"] == cara.user_id.as_str())
        .unwrap_or_else(|| panic!("her own invite in the invite state: {invited}"));
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["content"]["is_direct"], true, "{own}");
    assert_eq!(own["sender"], alice.user_id.as_str());

    // She joins, and messages flow both ways.
    let (status, answer) = cara.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 200, "join after the invite: {answer}\n{}", b.log_text());
    wait_for_membership(&alice, &room_id, &cara.user_id, "join", DELIVERY);
    send_text(&alice, &room_id, "hi cara");
    wait_for_message(&cara, &room_id, "hi cara");
    send_text(&cara, &room_id, "hi alice");
    wait_for_message(&alice, &room_id, "hi alice");
}

/// When a remote invite of createRoom fails (here: the invitee's server is
/// down), the answer is the invite's error, as in Synapse; the room stays,
/// with its creator in it and the local invites made.
#[test]
fn create_room_with_an_unreachable_remote_invitee_answers_the_error() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = a.register("bob");
    let gone = format!("@cara:localhost:{}", common::federation::free_port());
    let (status, answer) = alice
        .post("/_matrix/client/v3/createRoom", &json!({"invite": [bob.user_id, gone], "is_direct": true}));
    assert!(status >= 400, "{status} {answer}");
    assert!(answer["errcode"].is_string(), "{answer}");
    // The room exists: Alice is in it and Bob is invited.
    let (_, sync) = alice.get("/_matrix/client/v3/sync");
    let joined = sync["rooms"]["join"].as_object().unwrap();
    assert_eq!(joined.len(), 1, "{sync}");
    let (_, sync) = bob.get("/_matrix/client/v3/sync");
    assert_eq!(sync["rooms"]["invite"].as_object().map(|rooms| rooms.len()), Some(1), "{sync}");
}
