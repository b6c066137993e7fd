//! Spaces: a space's `m.space.child` children in the spec's order and a
//! room's hierarchy entry, which the client `/hierarchy` walk and federation
//! `/hierarchy` share, and what another server may see of a space.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#spaces> and
//! <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid>.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::rooms::Engine;
use crate::rooms::format::stripped_state;
use crate::rooms::summary::{self, RoomSummary};
use crate::storage::StoredEvent;

/// Children considered per space (Synapse's cap, against huge spaces).
const MAX_CHILDREN_PER_SPACE: usize = 50;
/// Spec (`m.space.child`): `order` is at most 50 characters of `\x20`-`\x7E`.
const MAX_ORDER_CHARS: usize = 50;

/// A room's entry in a hierarchy: its summary and its children's
/// `m.space.child` events, stripped.
pub fn room_entry(room: &RoomSummary, children: &[StoredEvent]) -> Value {
    let mut entry = room.hierarchy_json();
    let children_state: Vec<Value> = children
        .iter()
        .map(|child| {
            let mut stripped = stripped_state(child);
            stripped["origin_server_ts"] = json!(child.origin_server_ts);
            stripped
        })
        .collect();
    entry.insert("children_state".into(), json!(children_state));
    Value::Object(entry)
}

/// What `GET /_matrix/federation/v1/hierarchy/{roomId}` answers `origin`:
/// the room and its direct children, as that server's users may see them. A room is shown when
/// anyone may preview it (public, knockable, world readable), when it is
/// restricted (the asking server checks `allowed_room_ids` for its users),
/// or when a user of the asking server is joined or invited; children we
/// hold that are not shown are listed in `inaccessible_children`.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid>.
pub fn server_view(app: &Engine, origin: &str, room_id: &str, suggested_only: bool) -> Result<Value> {
    let not_found = || Error::NotFound("room not found or not accessible".into());
    let root = summary::summary(app, room_id)?.ok_or_else(not_found)?;
    if !server_may_see(app, origin, &root)? {
        return Err(not_found());
    }
    let children = if root.room_type.as_deref() == Some("m.space") {
        children_of(app, room_id, suggested_only)?
    } else {
        Vec::new()
    };
    let mut shown = Vec::new();
    let mut inaccessible = Vec::new();
    for child in &children {
        let Some(child_id) = child.state_key.as_deref() else { continue };
        let Some(child_room) = summary::summary(app, child_id)? else { continue };
        if server_may_see(app, origin, &child_room)? {
            shown.push(Value::Object(child_room.hierarchy_json()));
        } else {
            inaccessible.push(json!(child_id));
        }
    }
    Ok(json!({
        "room": room_entry(&root, &children),
        "children": shown,
        "inaccessible_children": inaccessible,
    }))
}

/// Whether users of `server` may see the room's summary (see [`server_view`]).
fn server_may_see(app: &Engine, server: &str, room: &RoomSummary) -> Result<bool> {
    if room.world_readable
        || matches!(room.join_rule.as_str(), "public" | "knock" | "knock_restricted" | "restricted")
    {
        return Ok(true);
    }
    let suffix = format!(":{server}");
    for membership in ["join", "invite"] {
        if app
            .storage()
            .members_with(&room.room_id, membership)?
            .iter()
            .any(|member| member.ends_with(&suffix))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The valid `m.space.child` events of a space (those with a non-empty `via`),
/// in the spec's order: by `order`, then by timestamp, then by room ID.
pub fn children_of(app: &Engine, space_id: &str, suggested_only: bool) -> Result<Vec<StoredEvent>> {
    let state = app.storage().current_state(space_id)?;
    let mut children = Vec::new();
    for ((kind, _), event_id) in state.range(("m.space.child".to_owned(), String::new())..) {
        if kind != "m.space.child" {
            break;
        }
        let Some(event) = app.storage().event(event_id)? else { continue };
        let content = event.json.get("content").cloned().unwrap_or_default();
        let has_via = content.get("via").and_then(Value::as_array).is_some_and(|via| !via.is_empty());
        let suggested = content.get("suggested").and_then(Value::as_bool) == Some(true);
        if has_via && (suggested || !suggested_only) {
            children.push(event);
        }
    }
    children.sort_by_cached_key(|event| {
        let order =
            event.json.get("content").and_then(|content| content.get("order")).and_then(Value::as_str);
        let order = order.filter(|order| is_valid_order(order)).map(str::to_owned);
        // Children with an order come first (`None` sorts before `Some`, hence the flag).
        (order.is_none(), order, event.origin_server_ts, event.state_key.clone())
    });
    children.truncate(MAX_CHILDREN_PER_SPACE);
    Ok(children)
}

fn is_valid_order(order: &str) -> bool {
    order.chars().count() <= MAX_ORDER_CHARS && order.chars().all(|c| ('\x20'..='\x7e').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_strings_follow_the_spec() {
        assert!(is_valid_order("a"));
        assert!(is_valid_order(&"~".repeat(50)));
        assert!(!is_valid_order(&"a".repeat(51)));
        assert!(!is_valid_order("tab\there"));
        assert!(!is_valid_order("é"));
    }
}
