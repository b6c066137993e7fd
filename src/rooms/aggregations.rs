//! Bundled aggregations: the `unsigned.m.relations` summary of an event's
//! children that every read path serves with the event.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#aggregations-of-child-events>.
//! Bundled per current spec: `m.replace` (the latest valid edit, in full, since
//! v1.7), `m.thread` (latest event, count, participation) and `m.reference`
//! (the children's IDs). `m.annotation` is deliberately not bundled: the spec
//! says reactions are not aggregated by the server.
//!
//! Cost: one indexed lookup of the children's light columns for a whole page
//! of events; the full JSON is read only for the one edit and the one thread
//! event served per event that has them.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::format::{Viewer, format_event};
use super::visibility::Visibility;
use crate::rooms::Engine;
use crate::storage::{RelationChild, StoredEvent};

/// Events nested in a bundle (a thread's latest event) get bundles of their
/// own down to this depth; the nesting stops there so no chain of relations
/// can make one event's answer grow without bound.
pub const MAX_BUNDLE_DEPTH: u32 = 2;

/// The `m.relations` objects of `events` as `viewer` sees them, by event ID,
/// for those with aggregated children. `depth` is how deep in another bundle
/// the events sit.
pub fn bundles(
    app: &Engine,
    events: &[StoredEvent],
    viewer: Viewer<'_>,
    with_room_id: bool,
    depth: u32,
) -> HashMap<String, Value> {
    let mut found = HashMap::new();
    if depth >= MAX_BUNDLE_DEPTH {
        return found;
    }
    // State events do not receive bundles (spec), nor do redacted events: the
    // spec says so for edits, and a redacted root has nothing left to summarise.
    let roots: Vec<&StoredEvent> =
        events.iter().filter(|event| event.state_key.is_none() && event.redacted_by.is_none()).collect();
    let ids: Vec<&str> = roots.iter().map(|event| event.event_id.as_str()).collect();
    // Bound first: the storage is borrowed again below.
    let children = app.storage().relation_children(&ids);
    let Ok(children) = children else { return found };
    if children.is_empty() {
        return found;
    }
    let mut by_parent: HashMap<String, Vec<RelationChild>> = HashMap::new();
    for (parent, child) in children {
        by_parent.entry(parent).or_default().push(child);
    }
    let visibility = Visibility::new(app, viewer.user_id);
    for event in roots {
        let Some(children) = by_parent.get(&event.event_id) else { continue };
        if let Some(bundle) = bundle(app, event, children, &visibility, viewer, with_room_id, depth) {
            found.insert(event.event_id.clone(), bundle);
        }
    }
    found
}

/// The `m.relations` object for `event` with its aggregated `children`
/// (oldest first), if any of them shows.
fn bundle(
    app: &Engine,
    event: &StoredEvent,
    children: &[RelationChild],
    visibility: &Visibility<'_>,
    viewer: Viewer<'_>,
    with_room_id: bool,
    depth: u32,
) -> Option<Value> {
    let mut relations = Map::new();
    if let Some(edit) = latest_edit(app, event, children, visibility) {
        relations.insert("m.replace".into(), format_event(app, &edit, Some(viewer), with_room_id, depth + 1));
    }
    let thread: Vec<&RelationChild> = children.iter().filter(|child| child.rel_type == "m.thread").collect();
    if !thread.is_empty() {
        let participated =
            event.sender == viewer.user_id || thread.iter().any(|child| child.sender == viewer.user_id);
        let latest = thread.iter().rev().find_map(|child| {
            let event = app.storage().event(&child.event_id).ok().flatten()?;
            visibility.can_see(&event).then_some(event)
        });
        if let Some(latest) = latest {
            relations.insert(
                "m.thread".into(),
                json!({
                    "latest_event": format_event(app, &latest, Some(viewer), with_room_id, depth + 1),
                    "count": thread.len(),
                    "current_user_participated": participated,
                }),
            );
        }
    }
    let references: Vec<Value> = children
        .iter()
        .filter(|child| child.rel_type == "m.reference")
        .map(|child| json!({ "event_id": child.event_id }))
        .collect();
    if !references.is_empty() {
        relations.insert("m.reference".into(), json!({ "chunk": references }));
    }
    (!relations.is_empty()).then_some(Value::Object(relations))
}

/// The most recent valid replacement of `original` the viewer may see.
///
/// Spec (validity of replacement events): same sender, same type, no state
/// key, an original that is not itself an edit, and `m.new_content` present;
/// newest by `origin_server_ts`, ties broken by the larger event ID.
fn latest_edit(
    app: &Engine,
    original: &StoredEvent,
    children: &[RelationChild],
    visibility: &Visibility<'_>,
) -> Option<StoredEvent> {
    let original_rel_type = original
        .json
        .get("content")
        .and_then(|content| content.get("m.relates_to"))
        .and_then(|relation| relation.get("rel_type"))
        .and_then(Value::as_str);
    if original_rel_type == Some("m.replace") {
        return None;
    }
    let mut candidates: Vec<&RelationChild> = children
        .iter()
        .filter(|child| {
            child.rel_type == "m.replace" && child.sender == original.sender && child.kind == original.kind
        })
        .collect();
    candidates.sort_by(|a, b| (b.origin_server_ts, &b.event_id).cmp(&(a.origin_server_ts, &a.event_id)));
    candidates.into_iter().find_map(|child| {
        let edit = app.storage().event(&child.event_id).ok().flatten()?;
        let has_new_content = edit
            .json
            .get("content")
            .and_then(|content| content.get("m.new_content"))
            .is_some_and(Value::is_object);
        // Encrypted edits carry `m.new_content` inside the ciphertext.
        let valid = edit.state_key.is_none() && (has_new_content || edit.kind == "m.room.encrypted");
        (valid && visibility.can_see(&edit)).then_some(edit)
    })
}
