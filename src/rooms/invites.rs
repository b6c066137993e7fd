//! Invites and knocks: the stripped state that describes a room to someone
//! invited to it or knocking on it (sent by `/sync` and sliding sync, and to
//! other servers with an invite or a knock), and invites of local users into
//! rooms this server is not in, kept aside (the room's DAG is not here) until
//! the user joins or declines.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#stripped-state>.

use serde_json::{Map, Value, json};

use crate::error::Result;
use crate::protocol::room_version::RoomVersion;
use crate::rooms::Engine;
use crate::rooms::format::stripped_state;
use crate::storage::StoredEvent;
use crate::storage::federation::RemoteInvite;

/// Stores a countersigned invite for `user_id` and wakes their sync. When one
/// of our users is in the room the invite arrives as a PDU as well; then
/// nothing is kept aside.
pub fn store_remote_invite(
    app: &Engine,
    version: &RoomVersion,
    room_id: &str,
    user_id: &str,
    event_id: &str,
    event: &Map<String, Value>,
    invite_state: &Value,
) -> Result<()> {
    if app.storage().server_in_room(room_id, &app.config.server_name)? {
        return Ok(());
    }
    let mut stripped: Vec<Value> = invite_state.as_array().cloned().unwrap_or_default();
    // The invite itself belongs in the stripped state the client sees.
    stripped.push(json!({
        "type": "m.room.member",
        "state_key": user_id,
        "sender": event.get("sender"),
        "content": event.get("content"),
        "event_id": event_id,
        "origin_server_ts": event.get("origin_server_ts"),
    }));
    let invite = RemoteInvite {
        room_id: room_id.to_string(),
        user_id: user_id.to_string(),
        event_id: event_id.to_string(),
        room_version: version.id.to_string(),
        inviter: event.get("sender").and_then(Value::as_str).unwrap_or_default().to_string(),
        invite_state: Value::Array(stripped).to_string(),
        stream_id: app.next_stream_id(),
    };
    app.storage().store_remote_invite(&invite)?;
    app.notifier.wake([user_id]);
    Ok(())
}

/// Stripped state for an invite or knock: the room's identity and the
/// user's own member event.
pub fn invite_state(app: &Engine, room_id: &str, user_id: &str) -> Result<Vec<Value>> {
    Ok(strip_invite_state(&invite_state_events(app, room_id, user_id)?))
}

/// [`invite_state`] of the events read already.
pub fn strip_invite_state(events: &[StoredEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|event| {
            let mut stripped = stripped_state(event);
            if event.kind == "m.room.member" {
                stripped["event_id"] = json!(event.event_id);
                stripped["origin_server_ts"] = json!(event.origin_server_ts);
            }
            stripped
        })
        .collect()
}

/// The current state events that describe a room to someone invited to it
/// or knocking on it (create, join rules, name, avatar, alias, encryption,
/// topic, and `user_id`'s membership), whole: federation sends them as PDUs.
pub fn invite_state_events(app: &Engine, room_id: &str, user_id: &str) -> Result<Vec<StoredEvent>> {
    let keys = [
        ("m.room.create", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.avatar", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.encryption", ""),
        ("m.room.topic", ""),
        ("m.room.member", user_id),
    ];
    let mut events = Vec::new();
    for (kind, state_key) in keys {
        // Each lookup is its own statement: the storage is borrowed once at a time.
        let event_id = app.storage().current_state_event(room_id, kind, state_key)?;
        if let Some(event_id) = event_id {
            let event = app.storage().event(&event_id)?;
            events.extend(event);
        }
    }
    Ok(events)
}
