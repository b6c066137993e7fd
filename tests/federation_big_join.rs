//! Joining a big room over federation: the `send_join` answer is read as a
//! stream, its events checked and stored one batch at a time, and the state
//! the joining node ends up with is exactly the resident node's.

mod common;

use std::time::Duration;

use common::federation::{TestCa, make_membership, signed_request, start_federating};
use common::rooms::{create_room, enc, put_state, room_path};
use common::{Client, TempDir, eventually, write_file};
use serde_json::{Value, json};

/// How long federation gets to deliver something on loopback.
const DELIVERY: Duration = Duration::from_secs(30);
/// Members joined on A besides its creator: more than one batch of the
/// streamed reader (100 events), so the join reads several.
const MEMBERS: usize = 620;
/// Of those, how many leave again (their member events stay in the state).
const LEAVERS: usize = 20;
/// The application service on A whose users fill the room.
const AS_TOKEN: &str = "big-join-as-token";

fn registration() -> String {
    format!(
        "id: big-join\nurl: null\nas_token: {AS_TOKEN}\nhs_token: big-join-hs-token\n\
         sender_localpart: bigjoinbot\nrate_limited: false\nnamespaces:\n  users:\n    \
         - exclusive: true\n      regex: '@member.*'\n"
    )
}

/// The room's current state as `client` sees it: (type, state key, event ID), sorted.
fn state_of(client: &Client, room_id: &str) -> Vec<(String, String, String)> {
    let (status, answer) = client.get(&room_path(room_id, "/state"));
    assert_eq!(status, 200, "{answer}");
    let mut state: Vec<_> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
            (text("type"), text("state_key"), text("event_id"))
        })
        .collect();
    state.sort();
    state
}

/// State events as a client and a `send_join` answer both show them, for
/// comparing the two: (type, state key, sender, content), sorted.
fn state_contents(events: &[Value]) -> Vec<(String, String, String, String)> {
    let mut state: Vec<_> = events
        .iter()
        .map(|event| {
            let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
            (text("type"), text("state_key"), text("sender"), event["content"].to_string())
        })
        .collect();
    state.sort();
    state
}

fn joined_count(client: &Client, room_id: &str) -> usize {
    let (status, answer) = client.get(&room_path(room_id, "/joined_members"));
    assert_eq!(status, 200, "{answer}");
    answer["joined"].as_object().unwrap().len()
}

/// A node joining a room through another gets the room's state from the
/// `send_join` answer (read as a stream, in batches): afterwards its current
/// state is the resident node's, event for event, memberships included.
/// Spec: <https://spec.matrix.org/latest/server-server-api/#joining-rooms> ("the
/// resident server ... returns the full state and auth chain"; the joining
/// server uses them as the room's state) and
/// <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>.
#[test]
fn a_streamed_join_of_a_big_room_gives_the_resident_servers_state() {
    let ca = TestCa::new();
    let dir = TempDir::new("big-join");
    let path = write_file(&dir.0, "registration.yaml", registration().as_bytes());
    let config = write_file(
        &dir.0,
        "hearth.toml",
        format!("app_service_config_files = [{:?}]\n", path.to_str().unwrap()).as_bytes(),
    );
    let a = start_federating(&ca, &["--config", config.to_str().unwrap()]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let room_id =
        create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "big", "name": "Big"}));
    put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": "many members"}));
    put_state(&alice, &room_id, "org.example.custom", "key", json!({"n": 1}));

    let mut service = a.client();
    service.token = Some(AS_TOKEN.into());
    for index in 0..MEMBERS {
        let localpart = format!("member{index}");
        let (status, answer) = service.post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}),
        );
        assert_eq!(status, 200, "{answer}");
        let user_id = enc(&format!("@{localpart}:{}", a.server_name));
        let (status, answer) =
            service.post(&format!("/_matrix/client/v3/join/{}?user_id={user_id}", enc(&room_id)), &json!({}));
        assert_eq!(status, 200, "{answer}");
        if index < LEAVERS {
            let path = format!("/_matrix/client/v3/rooms/{}/leave?user_id={user_id}", enc(&room_id));
            let (status, answer) = service.post(&path, &json!({}));
            assert_eq!(status, 200, "{answer}");
        }
    }

    let bob = b.register("bob");
    let alias = format!("#big:{}", a.server_name);
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!(status, 200, "bob joins through the alias: {answer}\n{}", b.log_text());
    assert_eq!(answer["room_id"], room_id.as_str());

    // The answer was read in several batches (one path: every join streams).
    let log = b.log_text();
    let line = log.lines().find(|line| line.contains(" joined ") && line.contains(" batches of state"));
    let batches: usize = line
        .and_then(|line| line.split(": ").last()?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no join line in B's log:\n{log}"));
    assert!(batches >= 2, "{line:?}");

    // Once A holds Bob's join, both nodes hold the same state, event for event.
    let on_a = eventually(DELIVERY, || {
        let state = state_of(&alice, &room_id);
        state.iter().any(|(kind, key, _)| kind == "m.room.member" && *key == bob.user_id).then_some(state)
    });
    assert!(on_a.len() > MEMBERS, "{}", on_a.len());
    assert_eq!(state_of(&bob, &room_id), on_a);
    // Memberships came with it: who is joined, who left.
    let joined = MEMBERS - LEAVERS + 2;
    assert_eq!((joined_count(&alice, &room_id), joined_count(&bob, &room_id)), (joined, joined));
    let leaver = format!("@member0:{}", a.server_name);
    let (status, content) = bob.get(&room_path(&room_id, &format!("/state/m.room.member/{}", enc(&leaver))));
    assert_eq!((status, content["membership"].clone()), (200, Value::from("leave")));

    // The streamed answer itself: another of B's users joins by a signed
    // `send_join` of its own, and the answer's state is A's state before
    // that join, event for event, with its auth chain; the same join sent again to the deprecated v1 endpoint gets
    // the same answer in v1's `[200, {...}]`.
    let (_, create) = alice.get(&room_path(&room_id, "/state/m.room.create/"));
    let version = create["room_version"].as_str().unwrap_or("1").to_string();
    let carol = b.user_id("carol");
    let (join_id, join) = make_membership(&ca, &b, &a, &version, "join", &room_id, &carol);
    let (_, before) = alice.get(&room_path(&room_id, "/state"));
    let before = state_contents(before.as_array().unwrap());
    for api in ["v2", "v1"] {
        let path = format!("/_matrix/federation/{api}/send_join/{}/{}", enc(&room_id), enc(&join_id));
        let (status, answer) = signed_request(&ca, &b, &a, "PUT", &path, Some(&join));
        assert_eq!(status, 200, "{api}: {answer}");
        let answer = if api == "v1" {
            assert_eq!(answer[0], 200, "v1 answers [200, {{...}}]");
            answer[1].clone()
        } else {
            answer
        };
        assert_eq!(answer["origin"], a.server_name.as_str());
        assert_eq!(answer["members_omitted"], false);
        assert_eq!(answer["event"]["state_key"], carol.as_str());
        let servers = answer["servers_in_room"].as_array().unwrap();
        assert!(servers.contains(&Value::from(b.server_name.as_str())), "{servers:?}");
        let state = answer["state"].as_array().unwrap();
        assert_eq!(state.len(), before.len(), "{api}: one event per state key");
        assert_eq!(state_contents(state), before, "{api}: the state before the join");
        let chain = answer["auth_chain"].as_array().unwrap();
        let kinds: Vec<&str> = chain.iter().filter_map(|event| event["type"].as_str()).collect();
        // (From room version 12 the create event is named by the room ID,
        // not in `auth_events`: it comes with the state.)
        for kind in ["m.room.power_levels", "m.room.join_rules", "m.room.member"] {
            assert!(kinds.contains(&kind), "{api}: no {kind} in the auth chain: {kinds:?}");
        }
        let mut texts: Vec<String> = chain.iter().map(Value::to_string).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), chain.len(), "{api}: an auth event came twice");
    }
}
