//! Invites of local users into rooms this server is not in: kept aside (the
//! room's DAG is not here) until the user joins or declines.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::Result;
use crate::protocol::room_version::RoomVersion;
use crate::storage::federation::RemoteInvite;

/// Stores a countersigned invite for `user_id` and wakes their sync. When one
/// of our users is in the room the invite arrives as a PDU as well; then
/// nothing is kept aside.
pub fn store_remote_invite(
    app: &App,
    version: &RoomVersion,
    room_id: &str,
    user_id: &str,
    event_id: &str,
    event: &Map<String, Value>,
    invite_state: &Value,
) -> Result<()> {
    let members = app.storage().members_with(room_id, "join")?;
    if members.iter().any(|member| app.is_local_user(member)) {
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
