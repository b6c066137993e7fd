//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: a depth-first walk of a
//! space's `m.space.child` tree over the rooms this server holds.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy>
//! and <https://spec.matrix.org/latest/client-server-api/#spaces>. Children on
//! other servers need federation and are skipped for now. A space's children
//! and each room's entry come from the room engine (`rooms::hierarchy`), which
//! federation `/hierarchy` shares.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::hierarchy;
use crate::rooms::summary;

/// Rooms per page when the client asks for none, and the most it may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// How deep the walk goes at most (and by default): deeper trees are rare and
/// each level costs state reads.
const MAX_DEPTH: usize = 20;
/// Rooms visited per request at most, whatever the page.
const MAX_ROOMS_WALKED: usize = 1000;

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
            hierarchy::children_of(app, &room.room_id, suggested_only)?
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
        rooms.iter().skip(skip).map(|(room, children)| hierarchy::room_entry(room, children)).collect();
    let mut answer = json!({ "rooms": chunk });
    if more {
        answer["next_batch"] = json!(token(rooms.len(), walk));
    }
    Ok(Response::ok(answer))
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
}
