//! Redactions that loop, from a peer: in room versions 1 and 2 the sender
//! picks event IDs, so an `m.room.redaction` can name itself, and two can
//! name each other. Such a PDU once overflowed the stack of the receiving
//! node. Now they are stored and redact nothing, and the room keeps being
//! served.
//!
//! Node A plays the misbehaving server: `hearth federation sign-event` signs
//! crafted events with A's key and `hearth federation request` sends them to B.

mod common;

use std::time::{Duration, Instant};

use common::federation::{TestCa, federating_pair, federation_args, signed_request};
use common::rooms::{create_room, enc, message_bodies, room_path, send_text, txn};
use common::{Client, Node, eventually};
use serde_json::{Value, json};

const DELIVERY: Duration = Duration::from_secs(20);
/// Version 2: state resolution v2, and event IDs chosen by the sender.
const ROOM_VERSION: &str = "2";

struct Setup {
    ca: TestCa,
    a: Node,
    b: Node,
    alice: Client,
    bob: Client,
    room_id: String,
}

fn setup() -> Setup {
    let (ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_version": ROOM_VERSION}));
    let (status, answer) = bob.post(&room_path(&room_id, "/join"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    send_text(&alice, &room_id, "legit");
    eventually(DELIVERY, || message_bodies(&bob, &room_id).contains(&"legit".to_string()).then_some(()));
    Setup { ca, a, b, alice, bob, room_id }
}

impl Setup {
    /// Signs an event as A.
    fn sign(&self, event: Value) -> Value {
        let mut args = federation_args(&self.ca, &self.a);
        args.extend(["sign-event".into(), "--room-version".into(), ROOM_VERSION.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, output) = self.a.cli(&args, Some(&event.to_string()));
        assert!(ok, "{output}");
        let answer: Value = serde_json::from_str(output.lines().next().unwrap()).unwrap();
        answer["event"].clone()
    }

    /// Sends PDUs from A to B in one transaction; answers the per-PDU results.
    fn send_pdus(&self, pdus: &[Value]) -> Value {
        let body = json!({ "origin": self.a.server_name, "origin_server_ts": 0, "pdus": pdus });
        let path = format!("/_matrix/federation/v1/send/loop{}", txn());
        let (status, answer) = signed_request(&self.ca, &self.a, &self.b, "PUT", &path, Some(&body));
        assert_eq!(status, 200, "{answer}");
        answer["pdus"].clone()
    }

    /// A redaction by alice with the given ID, naming `redacts`, on top of
    /// `prev` (B's latest event when `None`).
    fn redaction(&self, event_id: &str, redacts: &str, prev: Option<&str>) -> Value {
        let (_, state) = self.bob.get(&room_path(&self.room_id, "/state"));
        let id_of = |kind: &str, key: &str| -> String {
            let state = state.as_array().unwrap();
            let event =
                state.iter().find(|event| event["type"] == kind && event["state_key"] == key).unwrap();
            event["event_id"].as_str().unwrap().to_string()
        };
        let prev = match prev {
            Some(prev) => prev.to_string(),
            None => {
                let (_, latest) = self.bob.get(&room_path(&self.room_id, "/messages?dir=b&limit=1"));
                latest["chunk"][0]["event_id"].as_str().unwrap().to_string()
            }
        };
        let auth = [
            id_of("m.room.create", ""),
            id_of("m.room.power_levels", ""),
            id_of("m.room.member", &self.alice.user_id),
        ];
        self.sign(json!({
            "event_id": event_id,
            "type": "m.room.redaction",
            "redacts": redacts,
            "room_id": self.room_id,
            "sender": self.alice.user_id,
            "origin": self.a.server_name,
            "content": {"reason": "loop"},
            "depth": 1000,
            "origin_server_ts": 1_700_000_000_000_i64,
            "prev_events": [[prev, {}]],
            "auth_events": auth.iter().map(|id| json!([id, {}])).collect::<Vec<_>>(),
        }))
    }

    /// B answers `/versions`, `/sync` and `/messages` for the room, and
    /// shows `event_id` as stored and not redacted.
    fn assert_served_unredacted(&self, event_id: &str) {
        let started = Instant::now();
        let (status, _) = self.b.client().get("/_matrix/client/versions");
        assert_eq!(status, 200);
        let (status, sync) = self.bob.get("/_matrix/client/v3/sync?timeout=0");
        assert_eq!(status, 200, "{sync}");
        assert!(sync["rooms"]["join"].get(&self.room_id).is_some(), "{sync}");
        let (status, page) = self.bob.get(&room_path(&self.room_id, "/messages?dir=b&limit=50"));
        assert_eq!(status, 200, "{page}");
        let shown = page["chunk"].as_array().unwrap().iter().find(|event| event["event_id"] == event_id);
        let shown = shown.unwrap_or_else(|| panic!("{event_id} is not in /messages: {page}"));
        assert_eq!(shown["content"]["reason"], "loop", "{shown}");
        assert!(shown["unsigned"].get("redacted_because").is_none(), "{shown}");
        let (status, event) = self.bob.get(&room_path(&self.room_id, &format!("/event/{}", enc(event_id))));
        assert_eq!(status, 200, "{event}");
        assert_eq!(event["content"]["reason"], "loop", "{event}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
}

#[test]
fn a_redaction_of_itself_is_stored_and_redacts_nothing() {
    let setup = setup();
    let self_id = format!("$selfredaction:{}", setup.a.server_name);
    let results = setup.send_pdus(&[setup.redaction(&self_id, &self_id, None)]);
    assert!(results[&self_id].get("error").is_none(), "{results}");
    setup.assert_served_unredacted(&self_id);
    assert_eq!(message_bodies(&setup.bob, &setup.room_id), vec!["legit"]);
    // The room still works both ways.
    send_text(&setup.alice, &setup.room_id, "after");
    eventually(DELIVERY, || {
        message_bodies(&setup.bob, &setup.room_id).contains(&"after".to_string()).then_some(())
    });
    send_text(&setup.bob, &setup.room_id, "reply");
    eventually(DELIVERY, || {
        message_bodies(&setup.alice, &setup.room_id).contains(&"reply".to_string()).then_some(())
    });
}

#[test]
fn redactions_of_each_other_are_stored_and_redact_nothing() {
    let setup = setup();
    let first = format!("$first:{}", setup.a.server_name);
    let second = format!("$second:{}", setup.a.server_name);
    let first_event = setup.redaction(&first, &second, None);
    let second_event = setup.redaction(&second, &first, Some(&first));
    let results = setup.send_pdus(&[first_event, second_event]);
    for id in [&first, &second] {
        assert!(results[id].get("error").is_none(), "{results}");
    }
    setup.assert_served_unredacted(&first);
    setup.assert_served_unredacted(&second);
    assert_eq!(message_bodies(&setup.bob, &setup.room_id), vec!["legit"]);

    // An ordinary redaction, and a redaction of that redaction, still apply.
    let (_, latest) = setup.bob.get(&room_path(&setup.room_id, "/messages?dir=b&limit=1"));
    let latest = latest["chunk"][0]["event_id"].as_str().unwrap().to_string();
    let (_, legit) = setup.bob.get(&room_path(&setup.room_id, "/messages?dir=b&limit=100"));
    let legit_id =
        legit["chunk"].as_array().unwrap().iter().find(|event| event["content"]["body"] == "legit").unwrap()
            ["event_id"]
            .as_str()
            .unwrap()
            .to_string();
    let outer = format!("$outer:{}", setup.a.server_name);
    let inner = format!("$inner:{}", setup.a.server_name);
    let inner_event = setup.redaction(&inner, &legit_id, Some(&latest));
    let outer_event = setup.redaction(&outer, &inner, Some(&inner));
    let results = setup.send_pdus(&[inner_event, outer_event]);
    assert!(results[&inner].get("error").is_none() && results[&outer].get("error").is_none(), "{results}");
    assert_eq!(message_bodies(&setup.bob, &setup.room_id), vec!["<redacted>"]);
    let (status, event) = setup.bob.get(&room_path(&setup.room_id, &format!("/event/{}", enc(&inner))));
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], outer.as_str(), "{event}");
    let (status, sync) = setup.bob.get("/_matrix/client/v3/sync?timeout=0");
    assert_eq!(status, 200, "{sync}");
}
