//! Joining a big room over federation: the `send_join` answer is read as a
//! stream, its events checked and stored one batch at a time, and the state
//! the joining node ends up with is exactly the resident node's; the state
//! at an event (`/state`, `/state_ids`), streamed the same way, is the state
//! before it with its full auth chain.

mod common;

use std::collections::BTreeSet;
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
    let first_topic = put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": "many members"}));
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
    let before_ids = state_of(&alice, &room_id);
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

    // `/state` and `/state_ids` at an event give the state before it: before
    // Carol's join, A's state before the join; before a topic that replaces
    // another, the state with the earlier topic; before a message, the state
    // the message was sent in.
    a.reset_peak_rss();
    let resident = a.peak_rss_kib();
    assert_state_at(&ca, &b, &a, &room_id, &join_id, &before_ids);
    let now = state_of(&alice, &room_id);
    assert!(now.contains(&("m.room.topic".into(), String::new(), first_topic)), "{now:?}");
    let topic = put_state(&alice, &room_id, "m.room.topic", "", json!({"topic": "renamed"}));
    assert_state_at(&ca, &b, &a, &room_id, &topic, &now);
    let now = state_of(&alice, &room_id);
    let message = common::rooms::send_text(&alice, &room_id, "hello");
    assert_state_at(&ca, &b, &a, &room_id, &message, &now);
    eprintln!(
        "A's peak RSS answering /state and /state_ids at 3 events of {} state events: {} KiB (+{} KiB)",
        now.len(),
        a.peak_rss_kib(),
        a.peak_rss_kib().saturating_sub(resident)
    );
    // An event with two prev events (a fork joined again) is stored with the
    // resolution of their states: the state before it is that state, with
    // Bob's membership before this one (his join) rather than the event.
    let path =
        format!("/_matrix/federation/v1/make_join/{}/{}?ver={version}", enc(&room_id), enc(&bob.user_id));
    let (status, template) = signed_request(&ca, &b, &a, "GET", &path, None);
    assert_eq!(status, 200, "{template}");
    let mut renamed = template["event"].clone();
    renamed["content"]["displayname"] = json!("Bob on two branches");
    renamed["prev_events"] = json!([topic, message]);
    renamed["origin_server_ts"] = json!(1_700_000_000_000_i64);
    let (renamed_id, renamed) = common::federation::sign_event(&ca, &b, &version, &renamed);
    let transaction = json!({"origin": b.server_name, "origin_server_ts": 0, "pdus": [renamed]});
    let path = format!("/_matrix/federation/v1/send/{}", common::rooms::txn());
    let (status, answer) = signed_request(&ca, &b, &a, "PUT", &path, Some(&transaction));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"][&renamed_id], json!({}), "{answer}");
    assert!(now.iter().any(|(kind, key, _)| kind == "m.room.member" && *key == bob.user_id));
    assert_state_at(&ca, &b, &a, &room_id, &renamed_id, &now);

    // Nothing comes before the room's create event.
    let create_id = now.iter().find(|(kind, _, _)| kind == "m.room.create").unwrap().2.clone();
    assert_state_at(&ca, &b, &a, &room_id, &create_id, &[]);

    // B holds what came before Bob's join as outliers (or history fetched
    // after it): the state before the join is the state B stored it with,
    // but for Bob's own membership.
    let bob_join = on_a.iter().find(|(kind, key, _)| kind == "m.room.member" && *key == bob.user_id);
    let bob_join = bob_join.unwrap().2.clone();
    let before_bob: Vec<_> = on_a.iter().filter(|(_, _, id)| *id != bob_join).cloned().collect();
    assert_state_at(&ca, &a, &b, &room_id, &bob_join, &before_bob);
}

/// The ID an `auth_events` item names (room versions 1 and 2 pair it with
/// its hashes).
fn auth_event_id(item: &Value) -> &str {
    item.as_str().or_else(|| item[0].as_str()).unwrap()
}

/// `from` asks `to` for the room's state at `event_id` with
/// `GET /_matrix/federation/v1/state_ids` and `/state`: both give the state
/// before the event, `expected` (type, state key, event ID), and the same
/// full auth chain: every auth event of every state event and of every
/// chain event is in it, each once.
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1stateroomid>,
/// <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1state_idsroomid>
/// ("the state of the room before the given event" with "the full auth chain").
#[track_caller]
fn assert_state_at(
    ca: &TestCa,
    from: &common::Node,
    to: &common::Node,
    room_id: &str,
    event_id: &str,
    expected: &[(String, String, String)],
) {
    let query = format!("{}?event_id={}", enc(room_id), enc(event_id));
    let path = format!("/_matrix/federation/v1/state_ids/{query}");
    let (status, ids) = signed_request(ca, from, to, "GET", &path, None);
    assert_eq!(status, 200, "{ids}");
    let strings = |value: &Value| -> Vec<String> {
        value.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()).collect()
    };
    let mut pdu_ids = strings(&ids["pdu_ids"]);
    pdu_ids.sort();
    let mut expected_ids: Vec<String> = expected.iter().map(|(_, _, id)| id.clone()).collect();
    expected_ids.sort();
    let missing: Vec<&String> = expected_ids.iter().filter(|id| !pdu_ids.contains(id)).collect();
    let extra: Vec<&String> = pdu_ids.iter().filter(|id| !expected_ids.contains(id)).collect();
    let before = format!("the state before {event_id}: missing {missing:?}, extra {extra:?}");
    assert!(missing.is_empty() && extra.is_empty(), "{before}");
    assert_eq!(pdu_ids.len(), expected_ids.len(), "an ID came twice");
    let chain_ids = strings(&ids["auth_chain_ids"]);
    let chain_set: BTreeSet<&str> = chain_ids.iter().map(String::as_str).collect();
    assert_eq!(chain_set.len(), chain_ids.len(), "an auth chain ID came twice");

    let path = format!("/_matrix/federation/v1/state/{query}");
    let (status, state) = signed_request(ca, from, to, "GET", &path, None);
    assert_eq!(status, 200, "{state}");
    let pdus = state["pdus"].as_array().unwrap();
    let mut keys: Vec<(String, String)> = pdus
        .iter()
        .map(|event| (event["type"].as_str().unwrap().into(), event["state_key"].as_str().unwrap().into()))
        .collect();
    keys.sort();
    let expected_keys: Vec<(String, String)> =
        expected.iter().map(|(kind, key, _)| (kind.clone(), key.clone())).collect();
    assert_eq!(keys, expected_keys, "the state before {event_id}");
    let chain = state["auth_chain"].as_array().unwrap();
    assert_eq!(chain.len(), chain_ids.len(), "/state and /state_ids give the same chain");
    let texts: BTreeSet<String> = chain.iter().map(Value::to_string).collect();
    assert_eq!(texts.len(), chain.len(), "an auth event came twice");
    let kinds: BTreeSet<&str> = chain.iter().filter_map(|event| event["type"].as_str()).collect();
    for kind in ["m.room.power_levels", "m.room.join_rules", "m.room.member"] {
        assert!(expected.is_empty() || kinds.contains(kind), "no {kind} in the auth chain: {kinds:?}");
    }
    for event in pdus.iter().chain(chain) {
        for item in event["auth_events"].as_array().unwrap() {
            let id = auth_event_id(item);
            assert!(chain_set.contains(id), "{id}, an auth event of {event}, is not in the auth chain");
        }
    }
}
