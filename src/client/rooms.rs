//! Creating rooms and sending events: `/createRoom`, `/send`, `/state`,
//! `/event`, `/redact`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#creation> and
//! <https://spec.matrix.org/latest/client-server-api/#sending-events-to-a-room>.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::{RoomAliasId, UserId};
use crate::protocol::room_version::RoomVersion;
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event};
use crate::rooms::visibility::Visibility;
use crate::rooms::{self, Audience, Draft, Transaction};

#[derive(Deserialize)]
struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    invite_3pid: Vec<Map<String, Value>>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<InitialState>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

/// createRoom's invites are made in turns of this long on the one thread,
/// each turn one transaction (reading the room once) committed before the
/// next begins, so a list of thousands of invites holds the other requests
/// (the invites' syncs, `/versions`) up for no longer. Each commit writes
/// every page the turn changed, most of them index pages all over the
/// indexes by event ID and by member, so longer turns write fewer pages per
/// invite: 5,000 invites took ~5% less CPU in turns of 4 ms than of 2 ms.
const INVITE_TURN: Duration = Duration::from_millis(4);

/// `POST /createRoom`.
///
/// The room, its initial state and its first local invite are made in one
/// transaction (so a refused request leaves no room behind); the other
/// local invites follow in turns of [`INVITE_TURN`], each turn a
/// transaction whose commit the next waits for (the other requests run
/// meanwhile, and each turn's writes start a group commit of their own), as
/// Synapse makes them one by one after the room.
///
/// Invites of users on other servers are federation requests (the invitee's
/// server countersigns the invite, as for `POST /rooms/{roomId}/invite`):
/// they go out once the room is made, one after the other. As in Synapse,
/// the first one that fails ends the request with its error: the room stays
/// (its creator is in it and sees it in `/sync`), the invites before it
/// stand, the ones after it are not sent, and the failure is logged.
pub async fn create_room(app: &Rc<App>, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body: CreateRoomBody = request.json()?;
    if let Some(name) = &body.room_alias_name {
        let alias = format!("#{name}:{}", app.config.server_name);
        super::directory::check_alias_namespaces(app, request, &alias)?;
    }
    let (local, remote) = invitees(app, &owner.user_id, &body.invite)?;
    refuse_third_party_invites(&body.invite_3pid)?;
    let mut extra = Map::new();
    if body.is_direct {
        extra.insert("is_direct".into(), json!(true));
    }
    let (first, rest) = local.split_at(local.len().min(1));
    let room_id = app.in_transaction(|| {
        let room_id = create_room_with_state(app, &owner.user_id, &body)?;
        rooms::invite_in_creation(app, &room_id, &owner.user_id, first, &extra, INVITE_TURN)?;
        Ok(room_id)
    })?;
    let mut rest = rest;
    while !rest.is_empty() {
        app.durable().await?;
        let invited = rooms::invite_in_creation(app, &room_id, &owner.user_id, rest, &extra, INVITE_TURN)?;
        rest = rest.get(invited..).unwrap_or_default();
    }
    rooms::wake_room(app, &room_id, None);
    for invitee in &remote {
        if let Err(error) =
            crate::remote::join::invite_remote(&app.remote, &room_id, &owner.user_id, invitee, &extra).await
        {
            log::warn!("{} created {room_id}, but inviting {invitee} failed: {error}", owner.user_id);
            return Err(error);
        }
    }
    log::debug!(
        "{} created {room_id} with {} local and {} remote invites",
        owner.user_id,
        local.len(),
        remote.len()
    );
    Ok(Response::ok(json!({ "room_id": room_id })))
}

/// The users to invite, checked before anything is made: well-formed, at
/// most `[limits] max_create_room_invites`; duplicates and the creator are
/// left out. Returns the local users (sorted) and the users of other
/// servers apart.
fn invitees<'a>(app: &App, creator: &str, invite: &'a [String]) -> Result<(Vec<&'a str>, Vec<&'a str>)> {
    let limit = app.config.limits.max_create_room_invites;
    if limit < invite.len() {
        return Err(Error::InvalidParam(format!("cannot invite more than {limit} users at once")));
    }
    let mut seen = HashSet::with_capacity(invite.len());
    let mut local = Vec::with_capacity(invite.len());
    let mut remote = Vec::new();
    for invitee in invite {
        UserId::parse(invitee).map_err(|error| Error::InvalidParam(format!("invite {invitee}: {error}")))?;
        if invitee != creator && seen.insert(invitee.as_str()) {
            if app.is_local_user(invitee) {
                local.push(invitee.as_str());
            } else {
                remote.push(invitee.as_str());
            }
        }
    }
    // Invited in order of user ID: the member indexes (by room, then user)
    // then grow at one end, and a turn of invites rewrites a few of their
    // pages rather than one per invite (a fifth less WAL for 5,000 invites).
    local.sort_unstable();
    Ok((local, remote))
}

/// `invite_3pid`: this server binds no third-party identifiers (it talks to
/// no identity server), so such invites are refused before anything is made:
/// an entry without the keys the spec requires as Synapse does
/// (400 `M_MISSING_PARAM`), a complete one with 403 `M_FORBIDDEN`.
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3createroom>
/// (`Invite3pid`).
fn refuse_third_party_invites(invite_3pid: &[Map<String, Value>]) -> Result<()> {
    for invite in invite_3pid {
        if !["medium", "address", "id_server", "id_access_token"].iter().all(|key| invite.contains_key(*key))
        {
            return Err(Error::MissingParam(
                "all of `medium`, `address`, `id_server` and `id_access_token` are required when making a 3pid invite"
                    .into(),
            ));
        }
    }
    if !invite_3pid.is_empty() {
        return Err(Error::Forbidden("third-party invites are not supported by this server".into()));
    }
    Ok(())
}

/// Checks the request and makes the room with its state (all but the invites).
fn create_room_with_state(app: &App, creator: &str, body: &CreateRoomBody) -> Result<String> {
    let version_id = body.room_version.clone().unwrap_or_else(|| app.config.default_room_version.clone());
    let version = RoomVersion::from_id(&version_id).ok_or(Error::UnsupportedRoomVersion(version_id))?;
    let public = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => return Err(Error::BadJson(format!("unknown visibility {other}"))),
    };
    let preset = match body.preset.as_deref() {
        Some(preset @ ("private_chat" | "public_chat" | "trusted_private_chat")) => preset,
        Some(other) => return Err(Error::BadJson(format!("unknown preset {other}"))),
        None if public => "public_chat",
        None => "private_chat",
    };
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = format!("#{name}:{}", app.config.server_name);
            RoomAliasId::parse(&alias)
                .map_err(|error| Error::InvalidParam(format!("room_alias_name: {error}")))?;
            if name.contains(':') || name.contains(char::is_whitespace) {
                return Err(Error::InvalidParam("room_alias_name may not contain ':' or spaces".into()));
            }
            if app.storage().alias(&alias)?.is_some() {
                return Err(Error::matrix(400, "M_ROOM_IN_USE", "the room alias is taken"));
            }
            Some(alias)
        }
        None => None,
    };
    for state in &body.initial_state {
        if state.kind == "m.room.create" || state.kind == "m.room.member" {
            return Err(Error::BadJson(format!("initial_state may not contain {}", state.kind)));
        }
    }

    let mut create_content = body.creation_content.clone().unwrap_or_default();
    create_content.insert("room_version".into(), json!(version.id));
    if !version.implicit_room_creator {
        create_content.insert("creator".into(), json!(creator));
    }
    let room_id = rooms::create_room_with(app, &version, creator, Value::Object(create_content))?;
    let send = |draft: Draft| rooms::send_to(app, &room_id, creator, draft, None, Audience::RoomInCreation);

    send(Draft::state("m.room.member", creator, rooms::member_content(app, creator, "join", None)?))?;
    send(Draft::state("m.room.power_levels", "", power_levels(&version, creator, body, preset)))?;
    if let Some(alias) = &alias {
        app.storage().create_alias(alias, &room_id, creator)?;
        send(Draft::state("m.room.canonical_alias", "", json!({ "alias": alias })))?;
    }
    let (join_rule, history, guests) = match preset {
        "public_chat" => ("public", "shared", "forbidden"),
        _ => ("invite", "shared", "can_join"),
    };
    send(Draft::state("m.room.join_rules", "", json!({ "join_rule": join_rule })))?;
    send(Draft::state("m.room.history_visibility", "", json!({ "history_visibility": history })))?;
    send(Draft::state("m.room.guest_access", "", json!({ "guest_access": guests })))?;
    for state in &body.initial_state {
        send(Draft::state(&state.kind, &state.state_key, Value::Object(state.content.clone())))?;
    }
    if let Some(name) = &body.name {
        send(Draft::state("m.room.name", "", json!({ "name": name })))?;
    }
    if let Some(topic) = &body.topic {
        send(Draft::state("m.room.topic", "", json!({ "topic": topic })))?;
    }
    if public {
        app.storage().set_room_visibility(&room_id, true)?;
    }
    log::debug!("{creator} created {room_id} (v{})", version.id);
    Ok(room_id)
}

fn power_levels(version: &RoomVersion, creator: &str, body: &CreateRoomBody, preset: &str) -> Value {
    let mut users = Map::new();
    if !version.privileged_creators {
        users.insert(creator.into(), json!(100));
    }
    if preset == "trusted_private_chat" {
        for invitee in &body.invite {
            users.insert(invitee.clone(), json!(100));
        }
    }
    let tombstone = if version.privileged_creators { 150 } else { 100 };
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": { "room": 50 },
    });
    if let Some(overrides) = &body.power_level_content_override {
        for (key, value) in overrides {
            content[key] = value.clone();
        }
    }
    content
}

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`, or `POST` without a
/// transaction ID.
pub fn send_message(
    app: &App,
    request: &Request,
    room_id: &str,
    kind: &str,
    txn_id: Option<&str>,
) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let content = request.json_object()?;
    if kind == "m.room.redaction" {
        return Err(Error::BadJson("send redactions with /redact".into()));
    }
    let txn = txn_id.map(|txn_id| Transaction { device_id: &owner.device_id, txn_id });
    let event_id =
        rooms::send(app, room_id, &owner.user_id, Draft::message(kind, Value::Object(content)), txn)?;
    Ok(Response::ok(json!({ "event_id": event_id })))
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub fn redact(app: &App, request: &Request, room_id: &str, event_id: &str, txn_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let mut content = request.json_object()?;
    content.retain(|key, _| key == "reason");
    let draft = Draft {
        kind: "m.room.redaction".into(),
        state_key: None,
        content: Value::Object(content),
        redacts: Some(event_id.to_string()),
    };
    let txn = Transaction { device_id: &owner.device_id, txn_id };
    let redaction_id = rooms::send(app, room_id, &owner.user_id, draft, Some(txn))?;
    Ok(Response::ok(json!({ "event_id": redaction_id })))
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub fn put_state(
    app: &App,
    request: &Request,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let content = request.json_object()?;
    if kind == "m.room.create" {
        return Err(Error::Forbidden("m.room.create cannot be sent".into()));
    }
    if kind == "m.room.member" {
        crate::client::membership::check_member_state(app, &owner.user_id, state_key, &content)?;
    }
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(app, room_id, &content)?;
    }
    let content = Value::Object(content);
    if kind != "m.room.member" {
        if let Some(event_id) =
            rooms::unchanged_state(app, room_id, &owner.user_id, kind, state_key, &content)?
        {
            return Ok(Response::ok(json!({ "event_id": event_id })));
        }
    }
    let guests_shut_out = kind == "m.room.guest_access"
        && content.get("guest_access").and_then(Value::as_str) != Some("can_join");
    let event_id = rooms::send(app, room_id, &owner.user_id, Draft::state(kind, state_key, content), None)?;
    if guests_shut_out {
        remove_guests(app, room_id)?;
    }
    Ok(Response::ok(json!({ "event_id": event_id })))
}

/// The spec: when `m.room.guest_access` stops being `can_join`, the server
/// MUST set its guests' membership to `leave` (each leaves, as Synapse
/// makes them leave). Spec: <https://spec.matrix.org/latest/client-server-api/#server-behaviour-17>.
fn remove_guests(app: &App, room_id: &str) -> Result<()> {
    // Collected first: the storage borrow must end before events are sent.
    let members = app.storage().server_members(room_id, &app.config.server_name, "join")?;
    for user_id in members {
        if !app.storage().is_guest(&user_id)? {
            continue;
        }
        let draft = Draft::state("m.room.member", &user_id, json!({ "membership": "leave" }));
        rooms::send(app, room_id, &user_id, draft, None)?;
    }
    Ok(())
}

/// The aliases in `m.room.canonical_alias` must be valid and point at this room.
fn check_canonical_alias(app: &App, room_id: &str, content: &Map<String, Value>) -> Result<()> {
    let mut aliases: Vec<&Value> =
        content.get("alt_aliases").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    aliases.extend(content.get("alias"));
    for alias in aliases {
        let Some(alias) = alias.as_str() else {
            return Err(Error::BadJson("aliases must be strings".into()));
        };
        let parsed = RoomAliasId::parse(alias)
            .map_err(|error| Error::matrix(400, "M_INVALID_PARAM", format!("{alias}: {error}")))?;
        if parsed.server_name() == app.config.server_name {
            let target = app.storage().alias(alias)?.map(|(room, _)| room);
            if target.as_deref() != Some(room_id) {
                return Err(Error::matrix(
                    400,
                    "M_BAD_ALIAS",
                    format!("{alias} does not point to this room"),
                ));
            }
        }
    }
    Ok(())
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub fn get_state(
    app: &App,
    request: &Request,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let event = state_event_for(app, &owner.user_id, room_id, kind, state_key)?;
    if request.query("format") == Some("event") {
        let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
        return Ok(Response::ok(client_event(app, &event, Some(viewer), true)));
    }
    Ok(Response::ok(event.json.get("content").cloned().unwrap_or_else(|| json!({}))))
}

/// The state event at a key as the user may see it: the current one if they
/// are joined, the one when they left if they left.
fn state_event_for(
    app: &App,
    user_id: &str,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<crate::storage::StoredEvent> {
    let not_found = || Error::NotFound("no such state event".into());
    let event_id = match state_group_for(app, user_id, room_id)? {
        Some(group) => app.storage().state_entry_of_group(group, kind, state_key)?,
        None => app.storage().current_state_event(room_id, kind, state_key)?,
    };
    let event_id = event_id.ok_or_else(not_found)?;
    app.storage().event(&event_id)?.ok_or_else(not_found)
}

/// `None` when the user may read the current state; the state group of their
/// leave when they left; 403 when they never could.
fn state_group_for(app: &App, user_id: &str, room_id: &str) -> Result<Option<i64>> {
    if Visibility::new(app, user_id).can_read_room(room_id) {
        return Ok(None);
    }
    let membership_event = app.storage().current_state_event(room_id, "m.room.member", user_id)?;
    if let Some(event) = membership_event.and_then(|id| app.storage().event(&id).ok().flatten()) {
        let membership = event.json.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
        if matches!(membership, Some("leave" | "ban")) {
            return Ok(event.state_group);
        }
    }
    Err(Error::Forbidden("you are not in this room".into()))
}

/// `GET /rooms/{roomId}/state`.
pub fn get_all_state(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let state = match state_group_for(app, &owner.user_id, room_id)? {
        Some(group) => app.storage().state_of_group(group)?,
        None => app.storage().current_state(room_id)?,
    };
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let mut events = Vec::with_capacity(state.len());
    for event_id in state.values() {
        // Bound first: client_event borrows the storage again.
        let event = app.storage().event(event_id)?;
        if let Some(event) = event {
            events.push(client_event(app, &event, Some(viewer), true));
        }
    }
    Ok(Response::ok(Value::Array(events)))
}

/// `GET /rooms/{roomId}/event/{eventId}`.
pub fn get_event(app: &App, request: &Request, room_id: &str, event_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let not_found = || Error::NotFound("event not found".into());
    let event = app
        .storage()
        .event(event_id)?
        .filter(|event| event.room_id == room_id && !event.outlier)
        .ok_or_else(not_found)?;
    if !Visibility::new(app, &owner.user_id).can_see(&event) {
        return Err(not_found());
    }
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    Ok(Response::ok(client_event(app, &event, Some(viewer), true)))
}
