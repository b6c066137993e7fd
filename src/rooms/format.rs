//! Events as clients see them: the client event format with `unsigned`
//! (age, transaction ID echo, redacted_because, prev_content, and the bundled
//! aggregations of [`super::aggregations`]).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#room-event-format>.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::aggregations;
use crate::app::App;
use crate::storage::{SenderAndContent, StoredEvent, now_ms};

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

/// [`client_event`] for each of a page of events, reading what their
/// `unsigned` needs (redactions, replaced state, bundled aggregations) in a
/// few queries for the whole page instead of a few per event.
pub fn client_events(
    app: &App,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
) -> Vec<Value> {
    format_events(app, events, viewer, with_room_id, 0)
}

/// [`client_event`] for an event nested `depth` deep in another's bundle.
pub fn format_event(
    app: &App,
    event: &StoredEvent,
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    depth: u32,
) -> Value {
    format_events(app, std::slice::from_ref(event), viewer, with_room_id, depth).pop().unwrap_or_default()
}

/// [`client_events`] for events nested `depth` deep in another's bundle.
fn format_events(
    app: &App,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    depth: u32,
) -> Vec<Value> {
    let related = Related::load(app, events, viewer, with_room_id, depth);
    events.iter().map(|event| format_one(event, viewer, with_room_id, &related)).collect()
}

/// What the `unsigned` sections of a page of events show of other events,
/// by the ID of the event it belongs to or names. Storage errors leave
/// entries out (the event is served without them), as a missing event would.
#[derive(Default)]
struct Related {
    /// `redacted_by` -> the redaction, formatted.
    redactions: HashMap<String, Value>,
    /// `replaces_state` -> that event's sender and content.
    previous: HashMap<String, SenderAndContent>,
    /// Event ID -> its `m.relations`.
    bundles: HashMap<String, Value>,
}

impl Related {
    fn load(
        app: &App,
        events: &[StoredEvent],
        viewer: Option<Viewer<'_>>,
        with_room_id: bool,
        depth: u32,
    ) -> Related {
        let mut related = Related::default();
        let redacted_by: Vec<&str> = events.iter().filter_map(|event| event.redacted_by.as_deref()).collect();
        if !redacted_by.is_empty() {
            // Bound first: formatting borrows the storage again.
            let redactions = app.storage().events_by_id(&redacted_by).unwrap_or_default();
            let formatted = format_events(app, &redactions, None, true, 0);
            related.redactions =
                redactions.into_iter().map(|redaction| redaction.event_id).zip(formatted).collect();
        }
        let replaced: Vec<&str> = events.iter().filter_map(|event| event.replaces_state.as_deref()).collect();
        if !replaced.is_empty() {
            related.previous = app.storage().senders_and_contents(&replaced).unwrap_or_default();
        }
        if let Some(viewer) = viewer {
            related.bundles = aggregations::bundles(app, events, viewer, with_room_id, depth);
        }
        related
    }
}

fn format_one(
    event: &StoredEvent,
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    related: &Related,
) -> Value {
    let mut out = Map::new();
    // Only the fields shown are read: the rest of the PDU stays unparsed.
    let fields = event.json.client_fields();
    out.insert("content".into(), fields.content.unwrap_or_else(|| json!({})));
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
        let in_content = || out.get("content").and_then(|content| content.get("redacts")).cloned();
        if let Some(redacts) = fields.redacts.or_else(in_content) {
            out.insert("redacts".into(), redacts);
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
    if let Some(redaction) = event.redacted_by.as_ref().and_then(|id| related.redactions.get(id)) {
        unsigned.insert("redacted_because".into(), redaction.clone());
    }
    if let Some(replaced) = &event.replaces_state {
        unsigned.insert("replaces_state".into(), json!(replaced));
        if let Some(previous) = related.previous.get(replaced) {
            if let Some(content) = &previous.content {
                unsigned.insert("prev_content".into(), content.clone());
            }
            unsigned.insert("prev_sender".into(), json!(previous.sender));
        }
    }
    if let Some(relations) = related.bundles.get(&event.event_id) {
        unsigned.insert("m.relations".into(), relations.clone());
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
