//! The deprecated v1 membership endpoints older servers still send:
//! `send_join`, `send_leave` and `invite` answer `[200, {...}]`.
//!
//! Node A plays the older server: `hearth federation sign-event` signs its
//! events and `hearth federation request` sends them to node B.

mod common;

use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::rooms::{create_room, enc, membership_of, room_path, sync};
use common::{Node, eventually};
use serde_json::{Value, json};

const DELIVERY: Duration = Duration::from_secs(20);
const ROOM_VERSION: &str = "11";

fn federation_args(ca: &TestCa, from: &Node) -> Vec<String> {
    vec![
        "federation".into(),
        "--server-name".into(),
        from.server_name.clone(),
        "--federation-ca".into(),
        ca.certificate_file.to_str().unwrap().into(),
        "--federation-allow-ip".into(),
        "127.0.0.0/8".into(),
    ]
}

/// Sends a signed request from `from` to `to`; returns (status, answer).
fn signed(
    ca: &TestCa,
    from: &Node,
    to: &Node,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut args = federation_args(ca, from);
    args.extend(["request".into(), to.server_name.clone(), path.into(), "--method".into(), method.into()]);
    if let Some(body) = body {
        args.extend(["--body".into(), body.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, output) = from.cli(&args, None);
    let mut lines = output.lines();
    let status = lines.next().and_then(|line| line.trim().parse().ok()).unwrap_or(0);
    let answer = lines.next().and_then(|line| serde_json::from_str(line).ok()).unwrap_or(Value::Null);
    (status, answer)
}

/// Signs an event as `from`; returns (event_id, event).
fn sign(ca: &TestCa, from: &Node, event: &Value) -> (String, Value) {
    let mut args = federation_args(ca, from);
    args.extend(["sign-event".into(), "--room-version".into(), ROOM_VERSION.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, output) = from.cli(&args, Some(&event.to_string()));
    assert!(ok, "{output}");
    let answer: Value = serde_json::from_str(output.lines().next().unwrap()).unwrap();
    (answer["event_id"].as_str().unwrap().to_string(), answer["event"].clone())
}

/// A's user asks B for a membership template and signs it.
fn make(ca: &TestCa, a: &Node, b: &Node, kind: &str, room_id: &str, user_id: &str) -> (String, Value) {
    let path =
        format!("/_matrix/federation/v1/make_{kind}/{}/{}?ver={ROOM_VERSION}", enc(room_id), enc(user_id));
    let (status, answer) = signed(ca, a, b, "GET", &path, None);
    assert_eq!(status, 200, "make_{kind}: {answer}");
    let mut event = answer["event"].clone();
    event["origin_server_ts"] = json!(1_700_000_000_000_i64);
    sign(ca, a, &event)
}

/// Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_joinroomideventid,
/// https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_leaveroomideventid and
/// https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1inviteroomideventid
/// (deprecated, but servers still serve them; the answers are `[200, {...}]`).
#[test]
fn the_deprecated_v1_membership_endpoints_answer_in_their_shape() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let bob = b.register("bob");
    let dave = b.register("dave");
    let room_id = create_room(&bob, json!({"preset": "public_chat", "room_version": ROOM_VERSION}));
    let carol = a.user_id("carol");

    // v1 send_join: [200, {origin, auth_chain, state}].
    let (join_id, join) = make(&ca, &a, &b, "join", &room_id, &carol);
    let path = format!("/_matrix/federation/v1/send_join/{}/{}", enc(&room_id), enc(&join_id));
    let (status, answer) = signed(&ca, &a, &b, "PUT", &path, Some(&join));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    assert_eq!(answer[0], 200, "{answer}");
    assert_eq!(answer[1]["origin"], b.server_name.as_str(), "{answer}");
    assert!(answer[1]["state"].as_array().is_some_and(|state| !state.is_empty()), "{answer}");
    assert!(answer[1]["auth_chain"].is_array(), "{answer}");
    assert_eq!(membership_of(&bob, &room_id, &carol).as_deref(), Some("join"));

    // v1 invite: the body is the event, its stripped state in `unsigned`;
    // the answer is [200, {"event": countersigned}].
    let (_, state) = bob.get(&room_path(&room_id, "/state"));
    let id_of = |kind: &str, key: &str| -> String {
        let state = state.as_array().unwrap();
        let event = state.iter().find(|event| event["type"] == kind && event["state_key"] == key).unwrap();
        event["event_id"].as_str().unwrap().to_string()
    };
    let invite = json!({
        "type": "m.room.member",
        "state_key": dave.user_id,
        "room_id": room_id,
        "sender": carol,
        "content": {"membership": "invite"},
        "depth": 100,
        "origin_server_ts": 1_700_000_000_001_i64,
        "prev_events": [join_id],
        "auth_events": [id_of("m.room.create", ""), id_of("m.room.power_levels", ""),
            id_of("m.room.join_rules", ""), join_id],
    });
    let (invite_id, mut invite) = sign(&ca, &a, &invite);
    invite["unsigned"] = json!({"invite_room_state": [
        {"type": "m.room.join_rules", "state_key": "", "sender": bob.user_id, "content": {"join_rule": "public"}}
    ]});
    let path = format!("/_matrix/federation/v1/invite/{}/{}", enc(&room_id), enc(&invite_id));
    let (status, answer) = signed(&ca, &a, &b, "PUT", &path, Some(&invite));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    assert_eq!(answer[0], 200, "{answer}");
    assert_eq!(answer[1]["event"]["event_id"].as_str().or(Some(&invite_id)), Some(invite_id.as_str()));
    assert!(answer[1]["event"]["signatures"][b.server_name.as_str()].is_object(), "{answer}");
    // The invite then reaches the room as any event does.
    let transaction = json!({"origin": a.server_name, "origin_server_ts": 0, "pdus": [answer[1]["event"]]});
    let path = format!("/_matrix/federation/v1/send/v1-{}", common::rooms::txn());
    let (status, answer) = signed(&ca, &a, &b, "PUT", &path, Some(&transaction));
    assert_eq!(status, 200, "{answer}");
    eventually(DELIVERY, || sync(&dave, "timeout=0")["rooms"]["invite"].get(&room_id).map(|_| ()));

    // v1 send_leave: [200, {}].
    let (leave_id, leave) = make(&ca, &a, &b, "leave", &room_id, &carol);
    let path = format!("/_matrix/federation/v1/send_leave/{}/{}", enc(&room_id), enc(&leave_id));
    let (status, answer) = signed(&ca, &a, &b, "PUT", &path, Some(&leave));
    assert_eq!(status, 200, "{answer}\n{}", b.log_text());
    assert_eq!(answer, json!([200, {}]));
    assert_eq!(membership_of(&bob, &room_id, &carol).as_deref(), Some("leave"));
}
