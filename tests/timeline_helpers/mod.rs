//! Helpers shared by the history tests (messages, relations, search): rooms,
//! messages, membership and reading answers, on top of the harness.
#![allow(dead_code)]

use serde_json::{Value, json};

use crate::common::Client;
// The harness's room helpers, by the names these tests use (each test crate uses some).
use crate::common::rooms::txn;
#[allow(unused_imports)]
pub use crate::common::rooms::{create_room, enc as encode, join, send as send_event, send_text as say};

/// Creates a public room whose history visibility is `visibility`.
pub fn room_with_visibility(client: &Client, visibility: &str) -> String {
    create_room(
        client,
        json!({"preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": visibility}
        }]}),
    )
}

/// Leaves a room (must succeed).
pub fn leave(client: &Client, room_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(room_id));
    let (status, answer) = client.post(&path, &json!({}));
    assert_eq!(status, 200, "leave: {answer}");
}

/// Redacts an event.
pub fn redact(client: &Client, room_id: &str, event_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{}", encode(room_id), encode(event_id), txn());
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
