//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: a depth-first walk of a
//! space's `m.space.child` tree over the rooms this server holds.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy>
//! and <https://spec.matrix.org/latest/client-server-api/#spaces>. Children on
//! other servers need federation and are skipped for now. Other servers ask
//! for our rooms with federation `/hierarchy` ([`federation_hierarchy`]).

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::rooms::summary::{self, RoomSummary};
use crate::storage::StoredEvent;

/// Rooms per page when the client asks for none, and the most it may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// How deep the walk goes at most (and by default): deeper trees are rare and
/// each level costs state reads.
const MAX_DEPTH: usize = 20;
/// Children considered per space (Synapse's cap, against huge spaces).
const MAX_CHILDREN_PER_SPACE: usize = 50;
/// Rooms visited per request at most, whatever the page.
const MAX_ROOMS_WALKED: usize = 1000;
/// Spec (`m.space.child`): `order` is at most 50 characters of `\x20`-`\x7E`.
const MAX_ORDER_CHARS: usize = 50;

/// The walk's settings, which a `from` token pins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Walk {
    max_depth: usize,
    suggested_only: bool,
}

/// `GET /rooms/{roomId}/hierarchy`.
pub fn hierarchy(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let suggested_only = match request.query("suggested_only") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::InvalidParam("`suggested_only` must be true or false".into())),
    };
    let limit = match request.query("limit") {
        None => DEFAULT_LIMIT,
        Some(limit) => match limit.parse::<usize>() {
            Ok(limit) if limit > 0 => limit.min(MAX_LIMIT),
            _ => return Err(Error::InvalidParam("`limit` must be a positive integer".into())),
        },
    };
    let max_depth = match request.query("max_depth") {
        None => MAX_DEPTH,
        Some(depth) => depth
            .parse::<usize>()
            .map_err(|_| Error::InvalidParam("`max_depth` must be a non-negative integer".into()))?
            .min(MAX_DEPTH),
    };
    let walk = Walk { max_depth, suggested_only };
    let skip = match request.query("from") {
        None => 0,
        Some(token) => {
            let (skip, pinned) =
                parse_token(token).ok_or_else(|| Error::InvalidParam("unknown `from` token".into()))?;
            if pinned != walk {
                return Err(Error::InvalidParam(
                    "`max_depth` and `suggested_only` cannot change while paginating".into(),
                ));
            }
            skip
        }
    };

    let forbidden = || Error::Forbidden("you cannot view this room".into());
    let root = summary::summary(app, room_id)?.ok_or_else(forbidden)?;
    if !summary::may_preview(app, &owner.user_id, &root)? {
        return Err(forbidden());
    }
    let mut rooms = Vec::new();
    let mut seen = HashSet::from([room_id.to_owned()]);
    // Depth-first, children in the spec's order: a stack of (room, depth),
    // children pushed in reverse so that the first child is visited next.
    let mut stack = vec![(root, 0usize)];
    let mut more = false;
    while let Some((room, depth)) = stack.pop() {
        if rooms.len() >= skip + limit || rooms.len() >= MAX_ROOMS_WALKED {
            more = true;
            break;
        }
        let children = if room.room_type.as_deref() == Some("m.space") {
            children_of(app, &room.room_id, suggested_only)?
        } else {
            Vec::new()
        };
        if depth < max_depth {
            for child in children.iter().rev() {
                let Some(child_id) = child.state_key.as_deref() else { continue };
                if seen.contains(child_id) {
                    continue;
                }
                let Some(child_room) = summary::summary(app, child_id)? else { continue };
                if summary::may_preview(app, &owner.user_id, &child_room)? {
                    seen.insert(child_id.to_owned());
                    stack.push((child_room, depth + 1));
                }
            }
        }
        rooms.push((room, children));
    }
    let chunk: Vec<Value> =
        rooms.iter().skip(skip).map(|(room, children)| room_entry(room, children)).collect();
    let mut answer = json!({ "rooms": chunk });
    if more {
        answer["next_batch"] = json!(token(rooms.len(), walk));
    }
    Ok(Response::ok(answer))
}

fn room_entry(room: &RoomSummary, children: &[StoredEvent]) -> Value {
    let mut entry = room.hierarchy_json();
    let children_state: Vec<Value> = children
        .iter()
        .map(|child| {
            let mut stripped = crate::rooms::format::stripped_state(child);
            stripped["origin_server_ts"] = json!(child.origin_server_ts);
            stripped
        })
        .collect();
    entry.insert("children_state".into(), json!(children_state));
    Value::Object(entry)
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}`: the room and its direct
/// children, as another server's users may see them. A room is shown when
/// anyone may preview it (public, knockable, world readable), when it is
/// restricted (the asking server checks `allowed_room_ids` for its users),
/// or when a user of the asking server is joined or invited; children we
/// hold that are not shown are listed in `inaccessible_children`.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid>.
pub fn federation_hierarchy(app: &App, request: &Request, origin: &str, room_id: &str) -> Result<Response> {
    let suggested_only = request.query("suggested_only") == Some("true");
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
    Ok(Response::ok(json!({
        "room": room_entry(&root, &children),
        "children": shown,
        "inaccessible_children": inaccessible,
    })))
}

/// Whether users of `server` may see the room's summary (see [`federation_hierarchy`]).
fn server_may_see(app: &App, server: &str, room: &RoomSummary) -> Result<bool> {
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
fn children_of(app: &App, space_id: &str, suggested_only: bool) -> Result<Vec<StoredEvent>> {
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

/// `{rooms already sent}_{max_depth}_{suggested_only}`: the walk is redone from
/// the root for each page, so the token only says how far the client got.
fn token(sent: usize, walk: Walk) -> String {
    format!("{sent}_{}_{}", walk.max_depth, u8::from(walk.suggested_only))
}

fn parse_token(token: &str) -> Option<(usize, Walk)> {
    let mut parts = token.split('_');
    let sent = parts.next()?.parse().ok()?;
    let max_depth = parts.next()?.parse().ok()?;
    let suggested_only = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    parts.next().is_none().then_some((sent, Walk { max_depth, suggested_only }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_junk() {
        let walk = Walk { max_depth: 3, suggested_only: true };
        assert_eq!(parse_token(&token(7, walk)), Some((7, walk)));
        for junk in ["", "7", "7_3", "7_3_2", "x_3_1", "7_3_1_9"] {
            assert_eq!(parse_token(junk), None, "{junk}");
        }
    }

    #[test]
    fn order_strings_follow_the_spec() {
        assert!(is_valid_order("a"));
        assert!(is_valid_order(&"~".repeat(50)));
        assert!(!is_valid_order(&"a".repeat(51)));
        assert!(!is_valid_order("tab\there"));
        assert!(!is_valid_order("é"));
    }
}
