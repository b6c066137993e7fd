//! Room helpers for the integration tests: create rooms, send events, sync,
//! and percent-encode path segments the way a client must.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Client, eventually};

static NEXT_TXN: AtomicUsize = AtomicUsize::new(0);

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A fresh transaction ID.
pub fn txn() -> String {
    format!("txn{}", NEXT_TXN.fetch_add(1, Ordering::SeqCst))
}

/// `/rooms/{roomId}` + rest, with the room ID encoded.
pub fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room_id))
}

/// Creates a room and returns its ID.
#[track_caller]
pub fn create_room(client: &Client, body: Value) -> String {
    let (status, answer) = client.post("/_matrix/client/v3/createRoom", &body);
    assert_eq!(status, 200, "createRoom {body}: {answer}");
    answer["room_id"].as_str().unwrap().to_string()
}

/// Sends an event of any type and returns its ID.
#[track_caller]
pub fn send(client: &Client, room_id: &str, kind: &str, content: Value) -> String {
    let path = room_path(room_id, &format!("/send/{}/{}", enc(kind), txn()));
    let (status, answer) = client.put(&path, &content);
    assert_eq!(status, 200, "send {kind} to {room_id}: {answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

/// Sends a text message and returns its ID.
#[track_caller]
pub fn send_text(client: &Client, room_id: &str, body: &str) -> String {
    send(client, room_id, "m.room.message", json!({"msgtype": "m.text", "body": body}))
}

/// Raw send answer (for error checks).
pub fn try_send(client: &Client, room_id: &str, content: &Value) -> (u16, Value) {
    client.put(&room_path(room_id, &format!("/send/m.room.message/{}", txn())), content)
}

/// Puts a state event and returns its ID.
#[track_caller]
pub fn put_state(client: &Client, room_id: &str, kind: &str, state_key: &str, content: Value) -> String {
    let answer = try_put_state(client, room_id, kind, state_key, &content);
    assert_eq!(answer.0, 200, "state {kind}/{state_key}: {}", answer.1);
    answer.1["event_id"].as_str().unwrap().to_string()
}

pub fn try_put_state(
    client: &Client,
    room_id: &str,
    kind: &str,
    state_key: &str,
    content: &Value,
) -> (u16, Value) {
    client.put(&room_path(room_id, &format!("/state/{}/{}", enc(kind), enc(state_key))), content)
}

/// The content of a state event, or the error answer.
pub fn get_state(client: &Client, room_id: &str, kind: &str, state_key: &str) -> (u16, Value) {
    client.get(&room_path(room_id, &format!("/state/{}/{}", enc(kind), enc(state_key))))
}

/// Joins a room by ID or alias.
#[track_caller]
pub fn join(client: &Client, room: &str) {
    let (status, answer) = client.post(&format!("/_matrix/client/v3/join/{}", enc(room)), &json!({}));
    assert_eq!(status, 200, "{} joins {room}: {answer}", client.user_id);
}

/// A `public_chat` room `creator` makes and each of `members` joins.
#[track_caller]
pub fn public_room(creator: &Client, members: &[&Client]) -> String {
    let room_id = create_room(creator, json!({"preset": "public_chat"}));
    for member in members {
        join(member, &room_id);
    }
    room_id
}

/// Invites a user.
#[track_caller]
pub fn invite(client: &Client, room_id: &str, user_id: &str) {
    let (status, answer) = client.post(&room_path(room_id, "/invite"), &json!({"user_id": user_id}));
    assert_eq!(status, 200, "invite {user_id}: {answer}");
}

/// `/sync` with a query string (without the `?`); asserts 200.
#[track_caller]
pub fn sync(client: &Client, query: &str) -> Value {
    let (status, answer) = client.get(&format!("/_matrix/client/v3/sync?{query}"));
    assert_eq!(status, 200, "sync {query}: {answer}");
    answer
}

/// `since=TOKEN` query part.
pub fn since(token: &Value) -> String {
    format!("since={}", enc(token.as_str().unwrap()))
}

/// The events of a joined room's timeline in a sync answer.
pub fn timeline<'a>(sync: &'a Value, room_id: &str) -> &'a Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    sync["rooms"]["join"][room_id]["timeline"]["events"].as_array().unwrap_or(&EMPTY)
}

/// The first ephemeral event of `kind` for a joined room in a sync answer.
pub fn ephemeral<'a>(sync: &'a Value, room_id: &str, kind: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room_id]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|event| event["type"] == kind)
}

/// Syncs `client` (a fresh, full sync each time) until `check` finds what it
/// waits for in the answer, for up to `within`; returns what it found.
#[track_caller]
pub fn sync_until<T>(client: &Client, within: Duration, mut check: impl FnMut(&Value) -> Option<T>) -> T {
    eventually(within, || check(&sync(client, "")))
}

/// The state keys of the `m.room.member` events in a list.
pub fn member_keys(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.member")
        .map(|event| event["state_key"].as_str().unwrap())
        .collect()
}

/// The event IDs of a list of events.
pub fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|event| event["event_id"].as_str().unwrap_or_default().to_string()).collect()
}

/// The bodies of the `m.room.message` events in a list.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits (up to `within`) until `viewer` sees `user_id`'s membership in the
/// room as `membership`.
#[track_caller]
pub fn wait_for_membership(
    viewer: &Client,
    room_id: &str,
    user_id: &str,
    membership: &str,
    within: Duration,
) {
    eventually(within, || {
        (membership_of(viewer, room_id, user_id).as_deref() == Some(membership)).then_some(())
    });
}

/// The bodies of a room's text messages as `client` sees them (up to 100,
/// newest first; `<redacted>` for a redacted one; none while `/messages`
/// fails, for polling).
pub fn message_bodies(client: &Client, room_id: &str) -> Vec<String> {
    let (_, answer) = client.get(&room_path(room_id, "/messages?dir=b&limit=100"));
    answer["chunk"]
        .as_array()
        .map(|chunk| {
            chunk
                .iter()
                .filter(|event| event["type"] == "m.room.message")
                .map(|event| event["content"]["body"].as_str().unwrap_or("<redacted>").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A user's current membership as `/state` shows it to `viewer`.
pub fn membership_of(viewer: &Client, room_id: &str, user_id: &str) -> Option<String> {
    let (status, content) = get_state(viewer, room_id, "m.room.member", user_id);
    (status == 200).then(|| content["membership"].as_str().unwrap_or_default().to_string())
}
