//! `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (MSC3266, in the spec
//! since v1.15) and the unstable paths clients called before it: a preview of
//! a room before joining it.
//!
//! A room we are in is summarised from our state; another one is asked of
//! the servers that may know it through federation `/hierarchy` (the summary
//! is the answer's `room`). Who sees what follows the spec's rules: members
//! (joined, invited, knocking) always; others when the room is public,
//! knockable, world readable, or restricted to a room they are in; an
//! unauthenticated client only public, knockable or world readable rooms.
//! Everything else is 404, as for a room that does not exist (Synapse too).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias>.

use http_types::Method;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::{RoomAliasId, RoomId, ServerName};
use crate::remote::{client, pdus::encode};
use crate::request::{Request, Response};
use crate::rooms::summary::{self, RoomSummary};

/// Servers asked for a room we do not hold, at most: each may take a
/// federation timeout, and the client is waiting.
const MAX_SERVERS_ASKED: usize = 3;

/// `via` parameters read at most (the rest are ignored).
const MAX_VIA: usize = 20;

/// The largest federation `/hierarchy` answer read: one room and its
/// children's summaries (a space caps its children at 50 on both sides).
const MAX_HIERARCHY_BYTES: usize = 1 << 20;

/// The summary fields copied from another server's answer, with their JSON
/// types: nothing else of a remote answer reaches the client.
const REMOTE_FIELDS: &[(&str, FieldType)] = &[
    ("room_id", FieldType::String),
    ("name", FieldType::String),
    ("topic", FieldType::String),
    ("canonical_alias", FieldType::String),
    ("avatar_url", FieldType::String),
    ("num_joined_members", FieldType::Integer),
    ("world_readable", FieldType::Bool),
    ("guest_can_join", FieldType::Bool),
    ("join_rule", FieldType::String),
    ("room_type", FieldType::String),
    ("room_version", FieldType::String),
    ("encryption", FieldType::String),
    ("allowed_room_ids", FieldType::Strings),
];

#[derive(Clone, Copy)]
enum FieldType {
    String,
    Integer,
    Bool,
    Strings,
}

impl FieldType {
    fn fits(self, value: &Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::Integer => value.as_u64().is_some(),
            FieldType::Bool => value.is_boolean(),
            FieldType::Strings => value.as_array().is_some_and(|items| items.iter().all(Value::is_string)),
        }
    }
}

/// `GET /room_summary/{roomIdOrAlias}` (and the unstable forms).
pub async fn room_summary(app: &App, request: &Request, room_id_or_alias: &str) -> Result<Response> {
    // The access token is optional; a bad one is still refused.
    let user_id = match request.access_token() {
        Some(_) => Some(app.authenticate(request)?.user_id),
        None => None,
    };
    let mut servers: Vec<String> = Vec::new();
    let room_id = if room_id_or_alias.starts_with('#') {
        let alias =
            RoomAliasId::parse(room_id_or_alias).map_err(|error| Error::InvalidParam(error.to_string()))?;
        if alias.server_name() == app.config.server_name {
            app.storage()
                .alias(room_id_or_alias)?
                .map(|(room_id, _)| room_id)
                .ok_or_else(|| Error::NotFound("room alias not found".into()))?
        } else {
            let (room_id, alias_servers) =
                crate::remote::queries::resolve_remote_alias(app, room_id_or_alias).await?;
            servers.extend(alias_servers);
            room_id
        }
    } else {
        RoomId::parse(room_id_or_alias)
            .map_err(|error| Error::InvalidParam(format!("{room_id_or_alias}: {error}")))?;
        room_id_or_alias.to_string()
    };
    let not_found = || Error::NotFound("room not found or not accessible".into());
    let membership = match &user_id {
        Some(user_id) => app.storage().membership(&room_id, user_id)?,
        None => None,
    };
    let local = summary::summary(app, &room_id)?;
    let resident = app.storage().server_in_room(&room_id, &app.config.server_name)?;
    let mut answer = match local {
        Some(local) if resident || user_id.is_none() => {
            if !may_see(app, user_id.as_deref(), membership.as_deref(), &local)? {
                return Err(not_found());
            }
            local.hierarchy_json()
        }
        local => {
            // Not resident: our state may be stale or missing; ask the room's servers.
            let remote = match &user_id {
                Some(user_id) => {
                    for (key, value) in &request.query {
                        if key == "via" && servers.len() < MAX_VIA {
                            servers.push(value.clone());
                        }
                    }
                    gather_servers(app, user_id, &room_id, &mut servers)?;
                    remote_summary(app, &room_id, &servers).await
                }
                // Unauthenticated clients do not make us ask other servers.
                None => None,
            };
            match (remote, local) {
                (Some(remote), _) => {
                    if !remote_may_see(app, user_id.as_deref(), membership.as_deref(), &remote)? {
                        return Err(not_found());
                    }
                    remote
                }
                (None, Some(local)) => {
                    if !may_see(app, user_id.as_deref(), membership.as_deref(), &local)? {
                        return Err(not_found());
                    }
                    local.hierarchy_json()
                }
                (None, None) => return Err(not_found()),
            }
        }
    };
    if user_id.is_some() {
        // Synapse answers `leave` for a user with no membership.
        answer.insert("membership".into(), json!(membership.as_deref().unwrap_or("leave")));
    }
    Ok(Response::ok(Value::Object(answer)))
}

/// Whether the requester may see a room we hold: members (joined, invited,
/// knocking) and whoever the space hierarchy shows it to; an anonymous
/// client only a public, knockable or world-readable room.
fn may_see(app: &App, user_id: Option<&str>, membership: Option<&str>, room: &RoomSummary) -> Result<bool> {
    match user_id {
        None => Ok(open_to_anyone(&room.join_rule, room.world_readable)),
        Some(_) if matches!(membership, Some("join" | "invite" | "knock")) => Ok(true),
        Some(user_id) => summary::may_preview(app, user_id, room),
    }
}

/// The spec's rooms anyone may preview: `public`, `knock`, `knock_restricted`
/// join rules, or `world_readable` history.
fn open_to_anyone(join_rule: &str, world_readable: bool) -> bool {
    world_readable || matches!(join_rule, "public" | "knock" | "knock_restricted")
}

/// [`may_see`] for a summary another server sent.
fn remote_may_see(
    app: &App,
    user_id: Option<&str>,
    membership: Option<&str>,
    room: &Map<String, Value>,
) -> Result<bool> {
    let join_rule = room.get("join_rule").and_then(Value::as_str).unwrap_or("invite");
    let world_readable = room.get("world_readable").and_then(Value::as_bool) == Some(true);
    if open_to_anyone(join_rule, world_readable) {
        return Ok(true);
    }
    let Some(user_id) = user_id else { return Ok(false) };
    if matches!(membership, Some("join" | "invite" | "knock")) {
        return Ok(true);
    }
    let invited = app
        .storage()
        .remote_invites(user_id)?
        .iter()
        .any(|invite| Some(invite.room_id.as_str()) == room.get("room_id").and_then(Value::as_str));
    if invited {
        return Ok(true);
    }
    if join_rule == "restricted" {
        let allowed = room.get("allowed_room_ids").and_then(Value::as_array).cloned().unwrap_or_default();
        for allowed in allowed.iter().filter_map(Value::as_str) {
            if app.storage().membership(allowed, user_id)?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Adds the servers that may know the room: the inviter's of a pending
/// invite, the room ID's (rooms before v12 name one), and the room's
/// servers as we last knew them. Ours and duplicates are dropped.
fn gather_servers(app: &App, user_id: &str, room_id: &str, servers: &mut Vec<String>) -> Result<()> {
    let invites = app.storage().remote_invites(user_id)?;
    if let Some(invite) = invites.iter().find(|invite| invite.room_id == room_id) {
        if let Some((_, server)) = invite.inviter.split_once(':') {
            servers.insert(0, server.to_string());
        }
    }
    if let Some((_, server)) = room_id.split_once(':') {
        servers.push(server.to_string());
    }
    if app.storage().room_version(room_id)?.is_some() {
        servers.extend(app.storage().servers_in_room(room_id)?);
    }
    let mut unique: Vec<String> = Vec::new();
    for server in servers.drain(..) {
        if server != app.config.server_name && ServerName::parse(&server).is_ok() && !unique.contains(&server)
        {
            unique.push(server);
        }
    }
    *servers = unique;
    Ok(())
}

/// The room's summary from the first of `servers` that gives one through
/// federation `/hierarchy`.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid>.
async fn remote_summary(app: &App, room_id: &str, servers: &[String]) -> Option<Map<String, Value>> {
    let path = format!("/_matrix/federation/v1/hierarchy/{}?suggested_only=true", encode(room_id));
    for server in servers.iter().take(MAX_SERVERS_ASKED) {
        match client::request_with_limit(app, server, Method::Get, &path, None, MAX_HIERARCHY_BYTES).await {
            Ok((200, answer)) => match answer.get("room").and_then(|room| sanitize(room_id, room)) {
                Some(room) => return Some(room),
                None => log::info!("{server} sent a bad summary of {room_id}"),
            },
            Ok((status, _)) => log::debug!("{server} answered the hierarchy of {room_id} with {status}"),
            Err(error) => log::info!("asking {server} for the hierarchy of {room_id} failed: {error}"),
        }
    }
    None
}

/// The known summary fields of a remote `room`, if it is the room asked for
/// and has what the spec requires.
fn sanitize(room_id: &str, room: &Value) -> Option<Map<String, Value>> {
    if room.get("room_id").and_then(Value::as_str) != Some(room_id) {
        return None;
    }
    let mut out = Map::new();
    for (field, kind) in REMOTE_FIELDS {
        if let Some(value) = room.get(*field).filter(|value| kind.fits(value)) {
            out.insert((*field).to_string(), value.clone());
        }
    }
    let required = ["num_joined_members", "world_readable", "guest_can_join"];
    required.iter().all(|field| out.contains_key(*field)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_summaries_keep_only_known_well_typed_fields() {
        let room = json!({
            "room_id": "!r:x", "num_joined_members": 3, "world_readable": false,
            "guest_can_join": false, "name": 5, "topic": "hi", "children_state": [{}],
            "allowed_room_ids": ["!a:x", 1], "join_rule": "public",
        });
        let out = sanitize("!r:x", &room).unwrap();
        assert_eq!(out.get("topic"), Some(&json!("hi")));
        assert!(!out.contains_key("name"));
        assert!(!out.contains_key("children_state"));
        assert!(!out.contains_key("allowed_room_ids"));
        assert_eq!(sanitize("!other:x", &room), None);
        assert_eq!(sanitize("!r:x", &json!({"room_id": "!r:x"})), None);
    }

    #[test]
    fn anyone_sees_public_knockable_and_world_readable_rooms() {
        for rule in ["public", "knock", "knock_restricted"] {
            assert!(open_to_anyone(rule, false), "{rule}");
        }
        assert!(open_to_anyone("invite", true));
        assert!(!open_to_anyone("invite", false));
        assert!(!open_to_anyone("restricted", false));
    }
}
