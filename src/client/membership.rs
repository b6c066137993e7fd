//! Room membership: join, invite, leave, forget, kick, ban, unban, knock, and
//! the member lists.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#room-membership>.

use std::rc::Rc;

use serde::ser::{SerializeMap as _, Serializer as _};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::{RoomAliasId, RoomId, ServerName, UserId};
use crate::remote;
use crate::remote::join::JoinTurn;
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event};
use crate::rooms::visibility::Visibility;
use crate::rooms::{self, Draft};

/// Resolves `!room` or `#alias` (local aliases) to a room ID.
pub fn resolve_room(app: &App, room_id_or_alias: &str) -> Result<String> {
    if room_id_or_alias.starts_with('#') {
        RoomAliasId::parse(room_id_or_alias).map_err(|error| Error::InvalidParam(error.to_string()))?;
        return app
            .storage()
            .alias(room_id_or_alias)?
            .map(|(room_id, _)| room_id)
            .ok_or_else(|| Error::NotFound("room alias not found".into()));
    }
    if !room_id_or_alias.starts_with('!') {
        return Err(Error::InvalidParam("expected a room ID or alias".into()));
    }
    RoomId::parse(room_id_or_alias)
        .map_err(|error| Error::InvalidParam(format!("{room_id_or_alias}: {error}")))?;
    Ok(room_id_or_alias.to_string())
}

fn reason(body: &Map<String, Value>) -> Result<Option<Map<String, Value>>> {
    match body.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(reason)) => {
            let mut extra = Map::new();
            extra.insert("reason".into(), json!(reason));
            Ok(Some(extra))
        }
        Some(_) => Err(Error::BadJson("`reason` must be a string".into())),
    }
}

/// The member event content a join asks for: the body's own keys are kept
/// (clients put extra fields there, and the reference server keeps them),
/// with `reason` checked, and the keys this server sets itself removed —
/// `membership`, and `join_authorised_via_users_server`, which only the
/// restricted-join check may name.
fn join_content(body: &Map<String, Value>) -> Result<Map<String, Value>> {
    reason(body)?;
    let mut content = body.clone();
    for key in ["membership", "join_authorised_via_users_server", "third_party_signed"] {
        content.remove(key);
    }
    if content.get("reason").is_some_and(Value::is_null) {
        content.remove("reason");
    }
    Ok(content)
}

fn target_user(body: &Map<String, Value>) -> Result<String> {
    let user_id = body
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::MissingParam("`user_id` is required".into()))?;
    UserId::parse(user_id).map_err(|error| Error::InvalidParam(format!("{user_id}: {error}")))?;
    Ok(user_id.to_string())
}

/// Validates a membership event a client sends through `/state`.
pub fn check_member_state(
    _app: &App,
    _sender: &str,
    state_key: &str,
    content: &Map<String, Value>,
) -> Result<()> {
    UserId::parse(state_key)
        .map_err(|error| Error::InvalidParam(format!("state key {state_key}: {error}")))?;
    match content.get("membership").and_then(Value::as_str) {
        Some("join" | "invite" | "leave" | "ban" | "knock") => Ok(()),
        _ => Err(Error::BadJson("`membership` must be join, invite, leave, ban or knock".into())),
    }
}

fn set_membership(
    app: &App,
    room_id: &str,
    sender: &str,
    target: &str,
    membership: &str,
    extra: Option<&Map<String, Value>>,
) -> Result<String> {
    if rooms::room_version(app, room_id).is_err() {
        return Err(Error::NotFound("unknown room".into()));
    }
    let content = rooms::member_content(app, target, membership, extra)?;
    rooms::send(app, room_id, sender, Draft::state("m.room.member", target, content), None)
}

/// Resolves `!room` or `#alias` (asking the alias's server if it is not ours)
/// and gathers servers to join through: the alias's, `via`/`server_name`
/// parameters, the room ID's, and the server of a pending invite's sender.
async fn resolve_with_servers(
    app: &App,
    request: &Request,
    user_id: &str,
    room_id_or_alias: &str,
) -> Result<(String, Vec<String>)> {
    let mut servers: Vec<String> = Vec::new();
    let room_id = if room_id_or_alias.starts_with('#') {
        let alias =
            RoomAliasId::parse(room_id_or_alias).map_err(|error| Error::InvalidParam(error.to_string()))?;
        if alias.server_name() == app.config.server_name {
            remote::appservice::query_alias(app, room_id_or_alias).await;
            resolve_room(app, room_id_or_alias)?
        } else {
            let (room_id, alias_servers) =
                remote::queries::resolve_remote_alias(app, room_id_or_alias).await?;
            servers.extend(alias_servers);
            room_id
        }
    } else {
        resolve_room(app, room_id_or_alias)?
    };
    for (key, value) in &request.query {
        if key == "via" || key == "server_name" {
            // Never contact a "server" that is not a server name.
            ServerName::parse(value)
                .map_err(|error| Error::InvalidParam(format!("{key} {value}: {error}")))?;
            servers.push(value.clone());
        }
    }
    let invites = app.storage().remote_invites(user_id)?;
    if let Some(invite) = invites.into_iter().find(|invite| invite.room_id == room_id) {
        if let Some((_, server)) = invite.inviter.split_once(':') {
            servers.insert(0, server.to_string());
        }
    }
    if let Some((_, server)) = room_id.split_once(':') {
        servers.push(server.to_string());
    }
    if app.storage().room_version(&room_id)?.is_some() {
        servers.extend(app.storage().servers_in_room(&room_id)?);
    }
    let mut unique = Vec::new();
    for server in servers {
        if server != app.config.server_name && !unique.contains(&server) {
            unique.push(server);
        }
    }
    Ok((room_id, unique))
}

/// Whether this server takes part in the room now (a local user is joined),
/// so its state is current and it can make membership events itself.
fn resident(app: &App, room_id: &str) -> Result<bool> {
    if app.storage().room_version(room_id)?.is_none() {
        return Ok(false);
    }
    app.storage().server_in_room(room_id, &app.config.server_name)
}

/// `POST /join/{roomIdOrAlias}` and `POST /rooms/{roomId}/join`.
pub async fn join(app: &Rc<App>, request: &Request, room_id_or_alias: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let (room_id, servers) = resolve_with_servers(app, request, &owner.user_id, room_id_or_alias).await?;
    if app.storage().membership(&room_id, &owner.user_id)?.as_deref() == Some("join") {
        return Ok(Response::ok(json!({ "room_id": room_id })));
    }
    let mut extra = join_content(&body)?;
    if owner.is_guest && !guests_can_join(app, &room_id)? {
        return Err(Error::matrix(403, "M_GUEST_ACCESS_FORBIDDEN", "this room does not admit guests"));
    }
    loop {
        if resident(app, &room_id)? {
            if let Some(authoriser) = restricted_join_authoriser(app, &room_id, &owner.user_id)? {
                extra.insert("join_authorised_via_users_server".into(), json!(authoriser));
            }
            set_membership(app, &room_id, &owner.user_id, &owner.user_id, "join", Some(&extra))?;
            break;
        }
        if servers.is_empty() {
            return Err(Error::NotFound("no server to join this room through is known".into()));
        }
        // One join through another server per room at a time; the others
        // join here once it is done (or try themselves if it failed).
        match app.remote.joins_underway.begin(&room_id) {
            JoinTurn::Wait(ended) => {
                ended.await;
                // The join waited for may have been this user's own (a
                // request sent twice).
                if app.storage().membership(&room_id, &owner.user_id)?.as_deref() == Some("join") {
                    return Ok(Response::ok(json!({ "room_id": room_id })));
                }
            }
            JoinTurn::Ours(_underway) => {
                remote::join::join_remote(&app.remote, &owner.user_id, &room_id, &servers, &extra).await?;
                break;
            }
        }
    }
    app.storage().set_forgotten(&owner.user_id, &room_id, false)?;
    Ok(Response::ok(json!({ "room_id": room_id })))
}

/// Whether guests may join: the room's `m.room.guest_access` is `can_join`.
/// A room this server is not in has no state here to say so, so a guest
/// cannot join it (Synapse decides the same way).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#server-behaviour-17>.
fn guests_can_join(app: &App, room_id: &str) -> Result<bool> {
    if !resident(app, room_id)? {
        return Ok(false);
    }
    let content = rooms::current_state_content(app, room_id, "m.room.guest_access", "")?;
    Ok(content
        .and_then(|content| content.get("guest_access").and_then(Value::as_str).map(|v| v == "can_join"))
        == Some(true))
}

/// For a restricted room the user is not invited to: a local member with the
/// power to invite, if the user is in one of the rooms the join rule allows.
fn restricted_join_authoriser(app: &App, room_id: &str, user_id: &str) -> Result<Option<String>> {
    let Some(join_rules) = rooms::current_state_content(app, room_id, "m.room.join_rules", "")? else {
        return Ok(None);
    };
    let rule = join_rules.get("join_rule").and_then(Value::as_str).unwrap_or_default();
    if !matches!(rule, "restricted" | "knock_restricted") {
        return Ok(None);
    }
    if app.storage().membership(room_id, user_id)?.as_deref() == Some("invite") {
        return Ok(None);
    }
    let allowed = join_rules.get("allow").and_then(Value::as_array).cloned().unwrap_or_default();
    let in_allowed_room = allowed.iter().any(|entry| {
        entry.get("type").and_then(Value::as_str) == Some("m.room_membership")
            && entry.get("room_id").and_then(Value::as_str).is_some_and(|allowed| {
                app.storage().membership(allowed, user_id).ok().flatten().as_deref() == Some("join")
            })
    });
    if !in_allowed_room {
        return Ok(None);
    }
    let version = rooms::room_version(app, room_id)?;
    let state = app.storage().current_state(room_id)?;
    let power = rooms::current_power(app, &version, &state);
    let members = app.storage().server_members(room_id, &app.config.server_name, "join")?;
    Ok(members.into_iter().find(|member| power.has_named_level(member, "invite")))
}

/// `POST /rooms/{roomId}/invite`.
pub async fn invite(app: &Rc<App>, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    // A third-party invite (by email or phone, through an identity server)
    // names no user: refused as createRoom's `invite_3pid` is, since this
    // server binds no third-party identifiers.
    // Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidinvite-1>.
    if !body.contains_key("user_id") && body.contains_key("id_server") {
        return Err(Error::Forbidden("third-party invites are not supported by this server".into()));
    }
    let target = target_user(&body)?;
    if !app.is_local_user(&target) {
        if app.storage().room_version(room_id)?.is_none() {
            return Err(Error::Forbidden("you are not in this room".into()));
        }
        if app.storage().membership(room_id, &target)?.as_deref() == Some("join") {
            return Err(Error::Forbidden(format!("{target} is already in the room")));
        }
        let extra = reason(&body)?.unwrap_or_default();
        remote::join::invite_remote(&app.remote, room_id, &owner.user_id, &target, &extra).await?;
        return Ok(Response::ok(json!({})));
    }
    // Inviting a local user who does not exist succeeds, as in Synapse (which
    // leaves checking to the client, through the invitee's profile).
    set_membership(app, room_id, &owner.user_id, &target, "invite", reason(&body)?.as_ref())?;
    Ok(Response::ok(json!({})))
}

/// `POST /rooms/{roomId}/leave`.
pub async fn leave(app: &Rc<App>, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    // Declining an invite into a room we are not in goes through the inviter's server.
    let pending =
        app.storage().remote_invites(&owner.user_id)?.into_iter().find(|invite| invite.room_id == room_id);
    if let Some(invite) = pending {
        if app.storage().membership(room_id, &owner.user_id)?.is_none() {
            let server =
                invite.inviter.split_once(':').map(|(_, server)| server.to_string()).unwrap_or_default();
            let extra = reason(&body)?.unwrap_or_default();
            if let Err(error) =
                remote::join::reject_remote_invite(&app.remote, &owner.user_id, room_id, &server, &extra)
                    .await
            {
                // The inviting server may be gone; the invite goes from here anyway.
                log::info!("declining the invite to {room_id} through {server} failed: {error}");
            }
            app.storage().delete_remote_invite(room_id, &owner.user_id)?;
            app.notifier.wake([owner.user_id.as_str()]);
            return Ok(Response::ok(json!({})));
        }
    }
    let membership = app.storage().membership(room_id, &owner.user_id)?;
    match membership.as_deref() {
        None | Some("leave") => {
            // Leaving a room one is not in is a no-op, as in Synapse.
            if app.storage().room_version(room_id)?.is_none() {
                return Err(Error::NotFound("unknown room".into()));
            }
            return Ok(Response::ok(json!({})));
        }
        _ => {}
    }
    set_membership(app, room_id, &owner.user_id, &owner.user_id, "leave", reason(&body)?.as_ref())?;
    Ok(Response::ok(json!({})))
}

/// `POST /rooms/{roomId}/forget`.
pub fn forget(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let membership = app.storage().membership(room_id, &owner.user_id)?;
    match membership.as_deref() {
        Some("join" | "invite" | "knock") => {
            return Err(Error::matrix(400, "M_UNKNOWN", "leave the room before forgetting it"));
        }
        None if app.storage().room_version(room_id)?.is_none() => {
            return Err(Error::NotFound("unknown room".into()));
        }
        _ => {}
    }
    app.storage().set_forgotten(&owner.user_id, room_id, true)?;
    Ok(Response::ok(json!({})))
}

/// `POST /rooms/{roomId}/kick`, `/ban`, `/unban`.
pub fn moderate(app: &App, request: &Request, room_id: &str, action: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let target = target_user(&body)?;
    let current = app.storage().membership(room_id, &target)?;
    let membership = match action {
        "kick" => {
            if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
                return Err(Error::Forbidden(format!("{target} is not in the room")));
            }
            "leave"
        }
        "ban" => "ban",
        _ => {
            if current.as_deref() != Some("ban") {
                return Err(Error::Forbidden(format!("{target} is not banned")));
            }
            "leave"
        }
    };
    set_membership(app, room_id, &owner.user_id, &target, membership, reason(&body)?.as_ref())?;
    Ok(Response::ok(json!({})))
}

/// `POST /knock/{roomIdOrAlias}`.
pub async fn knock(app: &Rc<App>, request: &Request, room_id_or_alias: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let (room_id, servers) = resolve_with_servers(app, request, &owner.user_id, room_id_or_alias).await?;
    if resident(app, &room_id)? || servers.is_empty() {
        set_membership(app, &room_id, &owner.user_id, &owner.user_id, "knock", reason(&body)?.as_ref())?;
    } else {
        let extra = reason(&body)?.unwrap_or_default();
        remote::join::knock_remote(&app.remote, &owner.user_id, &room_id, &servers, &extra).await?;
    }
    Ok(Response::ok(json!({ "room_id": room_id })))
}

/// `GET /joined_rooms`.
pub fn joined_rooms(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let rooms = app.storage().rooms_with_membership(&owner.user_id, "join")?;
    Ok(Response::ok(json!({ "joined_rooms": rooms })))
}

/// The state group the user may read members at: the current state when
/// joined, the state when they left otherwise.
fn readable_group(app: &App, user_id: &str, room_id: &str) -> Result<Option<i64>> {
    if Visibility::new(app, user_id).can_read_room(room_id) {
        return app.storage().room_state_group(room_id);
    }
    let event_id = app.storage().current_state_event(room_id, "m.room.member", user_id)?;
    let event = event_id.and_then(|id| app.storage().event(&id).ok().flatten());
    match event {
        Some(event)
            if matches!(
                event.json.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str),
                Some("leave" | "ban")
            ) =>
        {
            Ok(event.state_group)
        }
        _ => Err(Error::Forbidden("you are not in this room".into())),
    }
}

/// `GET /rooms/{roomId}/members` with `at`, `membership`, `not_membership`.
pub fn members(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let mut group = readable_group(app, &owner.user_id, room_id)?;
    if let Some(at) = request.query("at") {
        let position = crate::client::sync::parse_token(at)?.stream;
        let events = app.storage().room_events_backwards(room_id, 0, position, 1)?;
        if let Some(event) = events.first() {
            group = group.min(event.state_group).or(event.state_group);
        }
    }
    let Some(group) = group else { return Ok(Response::ok(json!({ "chunk": [] }))) };
    let state = app.storage().state_of_group(group)?;
    let wanted = request.query("membership");
    let unwanted = request.query("not_membership");
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let mut chunk = Vec::new();
    for ((kind, _), event_id) in &state {
        if kind != "m.room.member" {
            continue;
        }
        let Some(event) = app.storage().event(event_id)? else { continue };
        let membership = event
            .json
            .get("content")
            .and_then(|c| c.get("membership"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if wanted.is_some_and(|wanted| wanted != membership)
            || unwanted.is_some_and(|unwanted| unwanted == membership)
        {
            continue;
        }
        chunk.push(client_event(app, &event, Some(viewer), true));
    }
    Ok(Response::ok(json!({ "chunk": chunk })))
}

/// `GET /rooms/{roomId}/joined_members`.
pub fn joined_members(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if !Visibility::new(app, &owner.user_id).can_read_room(room_id) {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    // Written as the rows are read, each profile's two values as their
    // event holds them: a room of 50,000 members costs the answer's bytes,
    // not a tree of JSON values ten times their size.
    let mut body = br#"{"joined":"#.to_vec();
    let mut serializer = serde_json::Serializer::new(&mut body);
    let mut joined = serializer.serialize_map(None).map_err(json_error)?;
    let mut written = Ok(());
    app.storage().joined_member_profiles(room_id, |user_id, name, avatar| {
        let profile = MemberProfile { display_name: raw_json(name), avatar_url: raw_json(avatar) };
        if written.is_ok() {
            written = joined.serialize_entry(user_id, &profile);
        }
    })?;
    written.map_err(json_error)?;
    joined.end().map_err(json_error)?;
    body.push(b'}');
    Ok(Response::bytes(200, "application/json", body))
}

/// JSON text as a value to write as it is (`None` if it is not JSON).
fn raw_json(text: Option<&str>) -> Option<&RawValue> {
    text.and_then(|text| serde_json::from_str(text).ok())
}

/// A joined member's profile in `/joined_members`, its values as the member
/// event holds them (`null` when absent).
#[derive(serde::Serialize)]
struct MemberProfile<'a> {
    display_name: Option<&'a RawValue>,
    avatar_url: Option<&'a RawValue>,
}

fn json_error(error: serde_json::Error) -> Error {
    Error::Internal(format!("cannot write the answer: {error}"))
}
