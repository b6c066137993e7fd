//! Bad input over federation: forged signatures, wrong content hashes,
//! events that fail auth, oversized PDUs, malformed transactions and events
//! for rooms the receiver is not in. Each is rejected (or, for a content
//! hash mismatch, redacted) as the spec says, and nothing else changes.
//!
//! Node A plays the misbehaving server: `hearth federation sign-event` signs
//! crafted events with A's key and `hearth federation request` sends them to B.

mod common;

use std::time::Duration;

use common::federation::{TestCa, federating_pair, federation_args};
use common::rooms::{create_room, enc, message_bodies, room_path, send_text};
use common::{Client, Node, eventually};
use serde_json::{Value, json};

const DELIVERY: Duration = Duration::from_secs(20);

struct Setup {
    ca: TestCa,
    a: Node,
    b: Node,
    alice: Client,
    mallory: Client,
    bob: Client,
    room_id: String,
}

fn setup() -> Setup {
    let (ca, a, b) = federating_pair();
    let alice = a.register("alice");
    let mallory = a.register("mallory");
    let bob = b.register("bob");
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "yard", "room_version": "11"}),
    );
    for client in [&mallory, &bob] {
        let (status, answer) = client.post(&room_path(&room_id, "/join"), &json!({}));
        if status != 200 {
            let alias = format!("#yard:{}", a.server_name);
            let (status, answer) =
                client.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
            assert_eq!(status, 200, "{answer}");
        } else {
            assert_eq!(answer["room_id"], room_id);
        }
    }
    send_text(&alice, &room_id, "legit");
    eventually(DELIVERY, || message_bodies(&bob, &room_id).contains(&"legit".to_string()).then_some(()));
    Setup { ca, a, b, alice, mallory, bob, room_id }
}

impl Setup {
    /// Signs an event as A; returns (event_id, event).
    fn sign(&self, event: Value) -> (String, Value) {
        let mut args = federation_args(&self.ca, &self.a);
        args.extend(["sign-event".into(), "--room-version".into(), "11".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, output) = self.a.cli(&args, Some(&event.to_string()));
        assert!(ok, "{output}");
        let answer: Value = serde_json::from_str(output.lines().next().unwrap()).unwrap();
        (answer["event_id"].as_str().unwrap().to_string(), answer["event"].clone())
    }

    /// Sends a raw transaction body from A to B; returns (status, answer).
    fn send_transaction(&self, body: &str) -> (u16, Value) {
        let mut args = federation_args(&self.ca, &self.a);
        let path = format!("/_matrix/federation/v1/send/bad{}", common::rooms::txn());
        args.extend(["request".into(), self.b.server_name.clone(), path, "--method".into(), "PUT".into()]);
        args.extend(["--body".into(), body.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, output) = self.a.cli(&args, None);
        let mut lines = output.lines();
        let status: u16 = lines.next().and_then(|line| line.trim().parse().ok()).unwrap_or(0);
        let answer = lines.next().and_then(|line| serde_json::from_str(line).ok()).unwrap_or(Value::Null);
        (status, answer)
    }

    fn send_pdus(&self, pdus: &[Value]) -> Value {
        let body = json!({ "origin": self.a.server_name, "origin_server_ts": 0, "pdus": pdus });
        let (status, answer) = self.send_transaction(&body.to_string());
        assert_eq!(status, 200, "{answer}");
        answer["pdus"].clone()
    }

    /// A new event in the room from `sender` on top of what B has.
    fn event(&self, sender: &Client, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let (_, state) = self.bob.get(&room_path(&self.room_id, "/state"));
        let id_of = |kind: &str, key: &str| -> String {
            state.as_array().unwrap().iter().find(|e| e["type"] == kind && e["state_key"] == key).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (_, latest) = self.bob.get(&room_path(&self.room_id, "/messages?dir=b&limit=1"));
        let prev = latest["chunk"][0]["event_id"].as_str().unwrap().to_string();
        let mut event = json!({
            "type": kind,
            "room_id": self.room_id,
            "sender": sender.user_id,
            "content": content,
            "depth": 1000,
            "origin_server_ts": 1_700_000_000_000_i64,
            "prev_events": [prev],
            "auth_events": [id_of("m.room.create", ""), id_of("m.room.power_levels", ""), id_of("m.room.member", &sender.user_id)],
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }
}

#[test]
fn forged_tampered_unauthorised_oversized_and_stray_events_change_nothing() {
    let setup = setup();
    let (_, levels_before) = setup.bob.get(&room_path(&setup.room_id, "/state/m.room.power_levels/"));

    // A forged signature: rejected.
    let (forged_id, mut forged) = setup.sign(setup.event(
        &setup.alice,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "forged"}),
    ));
    let signatures = forged["signatures"][&setup.a.server_name].as_object_mut().unwrap();
    for value in signatures.values_mut() {
        *value = json!("AAAA".repeat(22));
    }
    // A mallory power grab: validly signed but fails the auth rules.
    let (grab_id, grab) = setup.sign(setup.event(
        &setup.mallory,
        "m.room.power_levels",
        Some(""),
        json!({"users": {setup.mallory.user_id.clone(): 100}}),
    ));
    // Too big.
    let (big_id, big) = setup.sign(setup.event(
        &setup.alice,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "x".repeat(70_000)}),
    ));
    // For a room B is not in.
    let mut stray_event = setup.event(&setup.alice, "m.room.message", None, json!({"body": "stray"}));
    stray_event["room_id"] = json!(format!("!nowhere:{}", setup.a.server_name));
    let (_, stray) = setup.sign(stray_event);
    // Claiming to be B's user, but signed by A only.
    let mut impostor_event = setup.event(&setup.alice, "m.room.message", None, json!({"body": "impostor"}));
    impostor_event["sender"] = json!(setup.bob.user_id);
    let (impostor_id, impostor) = setup.sign(impostor_event);

    let results = setup.send_pdus(&[forged, grab, big, stray, impostor]);
    for id in [&forged_id, &grab_id, &big_id, &impostor_id] {
        assert!(results[id]["error"].is_string(), "{id} must fail: {results}");
    }

    // Nothing of it is in B's room.
    let seen = message_bodies(&setup.bob, &setup.room_id);
    for body in ["forged", "stray", "impostor"] {
        assert!(!seen.iter().any(|message| message == body), "{body} got in: {seen:?}");
    }
    assert!(!seen.iter().any(|message| message.len() > 60_000), "the oversized event got in");
    let (_, levels_after) = setup.bob.get(&room_path(&setup.room_id, "/state/m.room.power_levels/"));
    assert_eq!(levels_after, levels_before, "the power levels changed");
    // The room still works.
    send_text(&setup.alice, &setup.room_id, "still fine");
    eventually(DELIVERY, || {
        message_bodies(&setup.bob, &setup.room_id).contains(&"still fine".to_string()).then_some(())
    });
}

#[test]
fn an_event_whose_content_hash_does_not_match_is_kept_redacted() {
    let setup = setup();
    let (event_id, mut event) = setup.sign(setup.event(
        &setup.alice,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "original"}),
    ));
    event["content"]["body"] = json!("altered on the way");
    let results = setup.send_pdus(&[event]);
    assert!(results[&event_id].get("error").is_none(), "{results}");
    let (status, stored) = setup.bob.get(&room_path(&setup.room_id, &format!("/event/{}", enc(&event_id))));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["content"], json!({}), "kept redacted: {stored}");
}

#[test]
fn malformed_transactions_are_refused() {
    let setup = setup();
    let (status, answer) = setup.send_transaction("{\"pdus\": \"not a list\"}");
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{answer}");
    let too_many: Vec<Value> = (0..51).map(|index| json!({"index": index})).collect();
    let (status, answer) = setup.send_transaction(&json!({"pdus": too_many}).to_string());
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{answer}");
    let (status, _) = setup.send_transaction("[1, 2, 3]");
    assert_eq!(status, 400);
}
