//! Events as clients see them: the client event format with `unsigned`
//! (age, transaction ID echo, redacted_because, prev_content, and the bundled
//! aggregations of [`super::aggregations`]).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#room-event-format>.

use serde_json::{Map, Value, json};

use super::aggregations;
use crate::app::App;
use crate::storage::{StoredEvent, now_ms};

/// Who is looking, for the transaction ID echo.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
}

/// Formats a stored event for a client. `with_room_id` is false inside /sync's
/// per-room sections, true elsewhere. With a viewer, the event carries its
/// bundled aggregations.
pub fn client_event(app: &App, event: &StoredEvent, viewer: Option<Viewer<'_>>, with_room_id: bool) -> Value {
    format_event(app, event, viewer, with_room_id, 0)
}

/// [`client_event`] for an event nested `depth` deep in another's bundle.
pub fn format_event(
    app: &App,
    event: &StoredEvent,
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    depth: u32,
) -> Value {
    let mut out = Map::new();
    let json = &event.json;
    out.insert("content".into(), json.get("content").cloned().unwrap_or_else(|| json!({})));
    out.insert("event_id".into(), json!(event.event_id));
    out.insert("origin_server_ts".into(), json!(event.origin_server_ts));
    out.insert("sender".into(), json!(event.sender));
    out.insert("type".into(), json!(event.kind));
    if with_room_id {
        out.insert("room_id".into(), json!(event.room_id));
    }
    if let Some(state_key) = &event.state_key {
        out.insert("state_key".into(), json!(state_key));
    }
    // Redactions carry `redacts` at the top level for clients in every room version.
    if event.kind == "m.room.redaction" {
        let redacts = json.get("redacts").or_else(|| json.get("content").and_then(|c| c.get("redacts")));
        if let Some(redacts) = redacts {
            out.insert("redacts".into(), redacts.clone());
        }
    }
    let mut unsigned = Map::new();
    unsigned.insert("age".into(), json!((now_ms() - event.origin_server_ts).max(0)));
    if let (Some(viewer), Some(txn_id)) = (viewer, &event.txn_id) {
        if viewer.user_id == event.sender
            && viewer.device_id.is_some()
            && viewer.device_id == event.device_id.as_deref()
        {
            unsigned.insert("transaction_id".into(), json!(txn_id));
        }
    }
    if let Some(redacted_by) = &event.redacted_by {
        // Bound first: a storage borrow in the `if let` would live through the body.
        let redaction = app.storage().event(redacted_by);
        if let Ok(Some(redaction)) = redaction {
            unsigned.insert("redacted_because".into(), client_event(app, &redaction, None, true));
        }
    }
    if let Some(replaced) = &event.replaces_state {
        unsigned.insert("replaces_state".into(), json!(replaced));
        let previous = app.storage().event(replaced);
        if let Ok(Some(previous)) = previous {
            if let Some(content) = previous.json.get("content") {
                unsigned.insert("prev_content".into(), content.clone());
            }
            unsigned.insert("prev_sender".into(), json!(previous.sender));
        }
    }
    if let Some(viewer) = viewer {
        if let Some(relations) = aggregations::bundle(app, event, viewer, with_room_id, depth) {
            unsigned.insert("m.relations".into(), relations);
        }
    }
    out.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(out)
}

/// The stripped state form (type, state_key, content, sender) used for
/// invites, knocks and the room directory.
pub fn stripped_state(event: &StoredEvent) -> Value {
    json!({
        "type": event.kind,
        "state_key": event.state_key,
        "content": event.json.get("content").cloned().unwrap_or_else(|| json!({})),
        "sender": event.sender,
    })
}
