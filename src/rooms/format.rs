//! Events as clients see them: the client event format with `unsigned`
//! (age, transaction ID echo, redacted_because, prev_content, and the bundled
//! aggregations of [`super::aggregations`]).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#room-event-format>.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value, json};

use super::aggregations;
use crate::rooms::Engine;
use crate::storage::{JsonRef, SenderAndContent, StoredEvent, now_ms};

/// Who is looking, for the transaction ID echo.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
}

/// Formats a stored event for a client. `with_room_id` is false inside /sync's
/// per-room sections, true elsewhere. With a viewer, the event carries its
/// bundled aggregations.
pub fn client_event(
    app: &Engine,
    event: &StoredEvent,
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
) -> Value {
    format_event(app, event, viewer, with_room_id, 0)
}

/// [`client_event`] for each of a page of events, reading what their
/// `unsigned` needs (redactions, replaced state, bundled aggregations) in a
/// few queries for the whole page instead of a few per event.
pub fn client_events(
    app: &Engine,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
) -> Vec<Value> {
    format_events(app, events, viewer, with_room_id, 0)
}

/// [`client_events`] serialised already, for answers built as typed
/// structures (/sync, /messages): an event's content goes from the stored
/// text to the answer without being parsed into a value and written again.
pub fn client_events_raw(
    app: &Engine,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
) -> Vec<Box<RawValue>> {
    let related = Related::load(app, events, viewer, with_room_id, 0);
    let raw = |event| to_raw_value(&ClientEvent::new(event, viewer, with_room_id, &related));
    // Serialising these types cannot fail: they hold strings, numbers and JSON.
    events.iter().filter_map(|event| raw(event).ok()).collect()
}

/// [`client_event`] for an event nested `depth` deep in another's bundle.
pub fn format_event(
    app: &Engine,
    event: &StoredEvent,
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    depth: u32,
) -> Value {
    format_events(app, std::slice::from_ref(event), viewer, with_room_id, depth).pop().unwrap_or_default()
}

/// [`client_events`] for events nested `depth` deep in another's bundle.
fn format_events(
    app: &Engine,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    depth: u32,
) -> Vec<Value> {
    let related = Related::load(app, events, viewer, with_room_id, depth);
    let value = |event| serde_json::to_value(ClientEvent::new(event, viewer, with_room_id, &related));
    events.iter().map(|event| value(event).unwrap_or_default()).collect()
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
        app: &Engine,
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
            // A redaction is shown without what redacted it in turn:
            // redactions may redact each other (or themselves, in room
            // versions where the sender picks event IDs), so following
            // `redacted_by` further would let a peer choose how deep this goes.
            let plain = Related::default();
            let formatted = redactions.iter().map(|redaction| {
                serde_json::to_value(ClientEvent::new(redaction, None, true, &plain)).unwrap_or_default()
            });
            related.redactions =
                redactions.iter().map(|redaction| redaction.event_id.clone()).zip(formatted).collect();
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

/// An event in the client format, borrowing from the stored event and its
/// [`Related`]; fields in the order a JSON map would sort them.
#[derive(Serialize)]
struct ClientEvent<'a> {
    content: Shown<'a>,
    event_id: &'a str,
    origin_server_ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<Shown<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    unsigned: Unsigned<'a>,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    age: i64,
    #[serde(rename = "m.relations", skip_serializing_if = "Option::is_none")]
    relations: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_content: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_sender: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted_because: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
}

/// A value shown as stored, or one made for the answer.
#[derive(Serialize)]
#[serde(untagged)]
enum Shown<'a> {
    Stored(JsonRef<'a>),
    Made(Value),
}

impl<'a> ClientEvent<'a> {
    fn new(
        event: &'a StoredEvent,
        viewer: Option<Viewer<'_>>,
        with_room_id: bool,
        related: &'a Related,
    ) -> ClientEvent<'a> {
        // Only the fields shown are read: the rest of the PDU stays unparsed.
        let fields = event.json.client_fields();
        // Redactions carry `redacts` at the top level for clients in every
        // room version (from v11 it is in the content).
        let redacts = match (event.kind == "m.room.redaction", fields.redacts, fields.content) {
            (false, _, _) => None,
            (true, Some(redacts), _) => Some(Shown::Stored(redacts)),
            (true, None, Some(content)) => content.to_value().get("redacts").cloned().map(Shown::Made),
            (true, None, None) => None,
        };
        let echo_transaction = viewer.is_some_and(|viewer| {
            viewer.user_id == event.sender
                && viewer.device_id.is_some()
                && viewer.device_id == event.device_id.as_deref()
        });
        let previous = event.replaces_state.as_ref().and_then(|replaced| related.previous.get(replaced));
        ClientEvent {
            content: fields.content.map_or_else(|| Shown::Made(json!({})), Shown::Stored),
            event_id: &event.event_id,
            origin_server_ts: event.origin_server_ts,
            redacts,
            room_id: with_room_id.then_some(event.room_id.as_str()),
            sender: &event.sender,
            state_key: event.state_key.as_deref(),
            kind: &event.kind,
            unsigned: Unsigned {
                age: (now_ms() - event.origin_server_ts).max(0),
                relations: related.bundles.get(&event.event_id),
                prev_content: previous.and_then(|previous| previous.content.as_ref()),
                prev_sender: previous.map(|previous| previous.sender.as_str()),
                redacted_because: event.redacted_by.as_ref().and_then(|id| related.redactions.get(id)),
                replaces_state: event.replaces_state.as_deref(),
                transaction_id: event.txn_id.as_deref().filter(|_| echo_transaction),
            },
        }
    }
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

/// An `m.receipt` event of `receipts` as `user_id` may see them (private
/// receipts only their owner's; an empty `user_id` sees none).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#receipts>.
pub fn receipt_event(receipts: &[crate::storage::Receipt], user_id: &str) -> Value {
    let mut content = Map::new();
    for receipt in receipts {
        // Private receipts go to their owner only.
        if receipt.receipt_type == "m.read.private" && receipt.user_id != user_id {
            continue;
        }
        let mut entry = json!({ "ts": receipt.ts });
        if !receipt.thread_id.is_empty() {
            entry["thread_id"] = json!(receipt.thread_id);
        }
        let by_event = content.entry(receipt.event_id.clone()).or_insert_with(|| json!({}));
        by_event
            .as_object_mut()
            .map(|types| types.entry(receipt.receipt_type.clone()).or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
            .map(|users| users.insert(receipt.user_id.clone(), entry));
    }
    let mut event = json!({ "type": "m.receipt" });
    event["content"] = Value::Object(content);
    event
}
