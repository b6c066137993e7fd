//! Helpers shared by the history tests (messages, relations, search): rooms,
//! messages, membership and reading answers, on top of the harness.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::common::Client;

static NEXT_TXN: AtomicUsize = AtomicUsize::new(0);

/// Percent-encodes a path segment (room and event IDs carry `!`, `$`, `:`).
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Creates a room with a createRoom body and returns its ID.
pub fn create_room(client: &Client, body: Value) -> String {
    let (status, answer) = client.post("/_matrix/client/v3/createRoom", &body);
    assert_eq!(status, 200, "createRoom: {answer}");
    answer["room_id"].as_str().unwrap().to_string()
}

/// Creates a public room whose history visibility is `visibility`.
pub fn room_with_visibility(client: &Client, visibility: &str) -> String {
    create_room(
        client,
        json!({"preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": visibility}
        }]}),
    )
}

/// Sends an event of any type and returns its ID.
pub fn send_event(client: &Client, room_id: &str, kind: &str, content: Value) -> String {
    let txn = NEXT_TXN.fetch_add(1, Ordering::SeqCst);
    let path = format!("/_matrix/client/v3/rooms/{}/send/{kind}/t{txn}", encode(room_id));
    let (status, answer) = client.put(&path, &content);
    assert_eq!(status, 200, "send {kind}: {answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

/// Sends an `m.text` message and returns its ID.
pub fn say(client: &Client, room_id: &str, body: &str) -> String {
    send_event(client, room_id, "m.room.message", json!({"msgtype": "m.text", "body": body}))
}

/// Joins a room (must succeed).
pub fn join(client: &Client, room_id: &str) {
    let (status, answer) = client.post(&format!("/_matrix/client/v3/join/{}", encode(room_id)), &json!({}));
    assert_eq!(status, 200, "join: {answer}");
}

/// Leaves a room (must succeed).
pub fn leave(client: &Client, room_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(room_id));
    let (status, answer) = client.post(&path, &json!({}));
    assert_eq!(status, 200, "leave: {answer}");
}

/// Redacts an event.
pub fn redact(client: &Client, room_id: &str, event_id: &str) {
    let txn = NEXT_TXN.fetch_add(1, Ordering::SeqCst);
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r{txn}", encode(room_id), encode(event_id));
    let (status, answer) = client.put(&path, &json!({}));
    assert_eq!(status, 200, "redact: {answer}");
}

/// `GET /rooms/{roomId}/messages` with a query string.
pub fn messages(client: &Client, room_id: &str, query: &str) -> (u16, Value) {
    client.get(&format!("/_matrix/client/v3/rooms/{}/messages?{query}", encode(room_id)))
}

/// The bodies of the messages in a list of client events.
pub fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The event IDs in a list of client events.
pub fn ids(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|event| event["event_id"].as_str().unwrap().to_string()).collect()
}

/// Query-string encoding of a JSON filter.
pub fn filter_param(filter: &Value) -> String {
    encode(&filter.to_string())
}
