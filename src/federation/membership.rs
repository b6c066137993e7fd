//! Inbound membership handshakes: other servers' users joining, leaving and
//! knocking on rooms we are in, and invites of our users into rooms anywhere.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#joining-rooms>,
//! <https://spec.matrix.org/latest/server-server-api/#leaving-rooms-rejecting-invites>,
//! <https://spec.matrix.org/latest/server-server-api/#knocking-upon-a-room>,
//! <https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room>.

use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::acl;
use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::auth;
use crate::protocol::pdu::Pdu;
use crate::protocol::room_version::RoomVersion;
use crate::protocol::signing;
use crate::remote::pdus::{self, pdu_json, server_of};
use crate::request::{Request, Response};
use crate::rooms::incoming::{self, KnownStates, Outcome};
use crate::rooms::join_answer::JoinAnswer;
use crate::rooms::{self, Draft, LocalSignatures};

/// The room version of a room we are in, as other servers must speak it.
fn version_of(app: &App, room_id: &str) -> Result<RoomVersion> {
    rooms::room_version(app, room_id)
}

/// `GET /make_join/{roomId}/{userId}`, `/make_leave/...`, `/make_knock/...`:
/// an unsigned membership event for the remote user to sign.
pub fn make_membership(
    app: &App,
    request: &Request,
    origin: &str,
    room_id: &str,
    user_id: &str,
    membership: &str,
) -> Result<Response> {
    if server_of(user_id) != Some(origin) {
        return Err(Error::Forbidden(format!("{origin} cannot act for {user_id}")));
    }
    if !acl::server_allowed(app, room_id, origin) {
        return Err(Error::Forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    let version = version_of(app, room_id)?;
    if membership != "leave" {
        let supported: Vec<&str> =
            request.query.iter().filter(|(key, _)| key == "ver").map(|(_, value)| value.as_str()).collect();
        // Spec: without `ver` the remote supports only room version 1.
        let compatible =
            if supported.is_empty() { version.id == "1" } else { supported.contains(&version.id) };
        // Spec: the refusal names the room's version (`room_version`).
        if !compatible {
            return Err(Error::IncompatibleRoomVersion {
                room_version: version.id.to_string(),
                message: format!("the room is version {}, which your server does not support", version.id),
            });
        }
        if membership == "knock" && !version.knock_join_rule {
            return Err(Error::IncompatibleRoomVersion {
                room_version: version.id.to_string(),
                message: format!("room version {} has no knocking", version.id),
            });
        }
    }
    let state = app.storage().current_state(room_id)?;
    let mut content = Map::new();
    content.insert("membership".into(), json!(membership));
    if membership == "join" {
        if let Some(authoriser) = restricted_authoriser(app, &version, room_id, user_id)? {
            content.insert("join_authorised_via_users_server".into(), json!(authoriser));
        }
    }
    let draft = Draft::state("m.room.member", user_id, Value::Object(content));
    let template = rooms::template(app, &version, Some(room_id), user_id, &draft, &state)?;
    // Would the event be allowed? Check now rather than after the round trip.
    let mut probe = template.clone();
    probe.insert("hashes".into(), json!({ "sha256": "" }));
    probe.insert("signatures".into(), json!({}));
    if version.event_id_format == crate::protocol::room_version::EventIdFormat::V1 {
        probe.entry("event_id").or_insert(json!(format!("$probe:{}", app.config.server_name)));
    }
    let probe = crate::protocol::pdu::Pdu::from_json(&version, "$probe".into(), probe)
        .map_err(|error| Error::Internal(error.to_string()))?;
    auth::auth_check(
        &version,
        &probe,
        |kind, state_key| rooms::state_pdu(app, &version, &state, kind, state_key),
        &TrustLocal,
    )
    .map_err(|error| Error::Forbidden(error.to_string()))?;
    Ok(Response::ok(json!({ "event": template, "room_version": version.id })))
}

/// For the probe only: we will sign a restricted join ourselves.
struct TrustLocal;

impl auth::SignatureCheck for TrustLocal {
    fn event_signed_by(&self, _event: &crate::protocol::pdu::Pdu, _server_name: &str) -> bool {
        true
    }
    fn signed_by_public_key(&self, signed: &Value, public_key: &str) -> bool {
        LocalSignatures.signed_by_public_key(signed, public_key)
    }
}

/// A local user who may authorise a restricted join for `user_id`, if the
/// room is restricted and the user qualifies.
fn restricted_authoriser(
    app: &App,
    version: &RoomVersion,
    room_id: &str,
    user_id: &str,
) -> Result<Option<String>> {
    if !version.restricted_join_rule {
        return Ok(None);
    }
    let Some(join_rules) = rooms::current_state_content(app, room_id, "m.room.join_rules", "")? else {
        return Ok(None);
    };
    let rule = join_rules.get("join_rule").and_then(Value::as_str).unwrap_or_default();
    if !matches!(rule, "restricted" | "knock_restricted") {
        return Ok(None);
    }
    if matches!(app.storage().membership(room_id, user_id)?.as_deref(), Some("invite" | "join")) {
        return Ok(None);
    }
    let allowed_rooms: Vec<String> = join_rules
        .get("allow")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                .filter_map(|entry| entry.get("room_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let qualifies = allowed_rooms
        .iter()
        .any(|allowed| app.storage().membership(allowed, user_id).ok().flatten().as_deref() == Some("join"));
    if !qualifies {
        return Err(Error::matrix(
            400,
            "M_UNABLE_TO_AUTHORISE_JOIN",
            "you are not in any room that grants access",
        ));
    }
    let state = app.storage().current_state(room_id)?;
    let power = rooms::current_power(app, version, &state);
    let members = app.storage().members_with(room_id, "join")?;
    members
        .into_iter()
        .find(|member| app.is_local_user(member) && power.has_named_level(member, "invite"))
        .map(Some)
        .ok_or_else(|| Error::matrix(400, "M_UNABLE_TO_GRANT_JOIN", "no local user can authorise the join"))
}

/// `PUT /v2/send_join/...` (and the deprecated `/v1/send_join`, with `v1`):
/// the state before the join and its auth chain, streamed as they are read
/// (`rooms::join_answer`), never held whole. `omit_members` is not
/// supported: the whole state comes, and `members_omitted` says so.
pub async fn send_join(
    app: &Rc<App>,
    request: &Request,
    origin: &str,
    room_id: &str,
    event_id: &str,
    v1: bool,
) -> Result<Response> {
    let pdu = receive_membership(app, request, origin, room_id, event_id, "join").await?;
    let stored = app
        .storage()
        .event(&pdu.event_id)?
        .ok_or_else(|| Error::Internal(format!("the join {} is not stored", pdu.event_id)))?;
    let state_group = stored
        .state_group
        .ok_or_else(|| Error::Internal(format!("the join {} has no state", pdu.event_id)))?;
    let mut fields = Map::new();
    fields.insert("origin".into(), json!(app.config.server_name));
    fields.insert("event".into(), Value::Object(pdu.json.clone()));
    fields.insert("members_omitted".into(), json!(false));
    fields.insert("servers_in_room".into(), json!(app.storage().servers_in_room(room_id)?));
    let answer = JoinAnswer {
        v1,
        fields,
        state_group,
        join_event_id: pdu.event_id.clone(),
        joiner: pdu.sender.clone(),
        replaced: stored.replaces_state,
    };
    Ok(Response {
        status: 200,
        content_type: "application/json".into(),
        body: rooms::join_answer::stream(&app.engine, answer),
        headers: Vec::new(),
    })
}

/// `PUT /v2/send_leave/...`, `/v1/send_knock/...` (and the deprecated
/// `/v1/send_leave`, whose callers wrap the answer): the body of the answer.
pub async fn send_membership(
    app: &App,
    request: &Request,
    origin: &str,
    room_id: &str,
    event_id: &str,
    membership: &str,
) -> Result<Value> {
    let pdu = receive_membership(app, request, origin, room_id, event_id, membership).await?;
    match membership {
        "knock" => {
            // Spec (v1.16): whole PDUs in the room's format, the create event among them.
            let state = crate::rooms::invites::invite_state_events(app, room_id, &pdu.sender)?;
            let state: Vec<Value> = state.iter().map(pdu_json).collect();
            Ok(json!({ "knock_room_state": state }))
        }
        _ => Ok(json!({})),
    }
}

/// Checks and accepts `origin`'s signed `membership` event (join, leave or
/// knock) from the request body, and queues it for the room's other servers.
async fn receive_membership(
    app: &App,
    request: &Request,
    origin: &str,
    room_id: &str,
    event_id: &str,
    membership: &str,
) -> Result<Pdu> {
    if !acl::server_allowed(app, room_id, origin) {
        return Err(Error::Forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    let version = version_of(app, room_id)?;
    let mut json = request.json_object()?;
    // A restricted join we authorise carries our signature too.
    let restricted = json
        .get("content")
        .and_then(|content| content.get("join_authorised_via_users_server"))
        .and_then(Value::as_str)
        .is_some_and(|authoriser| app.is_local_user(authoriser));
    if membership == "join" && restricted {
        let mut redacted = Value::Object(crate::protocol::redaction::redact(&json, &version));
        signing::sign_json(&mut redacted, &app.config.server_name, &app.signing_key)
            .map_err(|error| Error::Internal(error.to_string()))?;
        if let Some(ours) =
            redacted.pointer(&format!("/signatures/{}", pointer_escape(&app.config.server_name)))
        {
            let signatures = json.entry("signatures").or_insert_with(|| json!({}));
            signatures[app.config.server_name.as_str()] = ours.clone();
        }
    }
    let pdu = pdus::verify(app, &version, json).await?;
    let is_right_event = pdu.event_id == event_id
        && pdu.room_id == room_id
        && pdu.kind == "m.room.member"
        && pdu.state_key.as_deref() == Some(pdu.sender.as_str())
        && server_of(&pdu.sender) == Some(origin)
        && pdu.content.get("membership").and_then(Value::as_str) == Some(membership);
    if !is_right_event {
        return Err(Error::BadJson(format!(
            "this is not {origin}'s {membership} event {event_id} for {room_id}"
        )));
    }
    match incoming::accept(app, &version, &pdu, &KnownStates::new())? {
        Outcome::Accepted | Outcome::Duplicate => {}
        Outcome::SoftFailed(reason) | Outcome::Rejected(reason) => return Err(Error::Forbidden(reason)),
    }
    // Everyone else in the room hears of the new member from us.
    rooms::outbox::queue_pdu_except(app, room_id, &pdu.event_id, origin)?;
    Ok(pdu)
}

fn pointer_escape(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: a server invites one
/// of our users; we countersign and remember the invite for the user's sync.
pub async fn invite(
    app: &App,
    request: &Request,
    origin: &str,
    room_id: &str,
    event_id: &str,
) -> Result<Response> {
    let body = request.json_object()?;
    let signed = accept_invite(app, origin, room_id, event_id, body).await?;
    Ok(Response::ok(json!({ "event": signed })))
}

/// `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}` (deprecated, still
/// sent by older servers): the body is the event itself, with the stripped
/// state in its `unsigned.invite_room_state`; the answer is `[200, {"event"}]`.
/// The spec has the receiver assume room version 1 or 2 (same event format);
/// a room we are in has its own version.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1inviteroomideventid>.
pub async fn invite_v1(
    app: &App,
    request: &Request,
    origin: &str,
    room_id: &str,
    event_id: &str,
) -> Result<Response> {
    let event = request.json_object()?;
    let version = app.storage().room_version(room_id)?.unwrap_or_else(|| "1".to_string());
    let invite_room_state = event
        .get("unsigned")
        .and_then(|unsigned| unsigned.get("invite_room_state"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    let mut body = Map::new();
    body.insert("room_version".into(), json!(version));
    body.insert("invite_room_state".into(), invite_room_state);
    body.insert("event".into(), Value::Object(event));
    let signed = accept_invite(app, origin, room_id, event_id, body).await?;
    Ok(Response::ok(json!([200, { "event": signed }])))
}

/// Checks and countersigns an invite (a v2 `invite` body), stores it for the
/// invitee, and answers the countersigned event.
async fn accept_invite(
    app: &App,
    origin: &str,
    room_id: &str,
    event_id: &str,
    body: Map<String, Value>,
) -> Result<Value> {
    let version_id = body.get("room_version").and_then(Value::as_str).unwrap_or("1");
    let version = RoomVersion::from_id(version_id).ok_or_else(|| Error::IncompatibleRoomVersion {
        room_version: version_id.to_string(),
        message: format!("room version {version_id} is not supported"),
    })?;
    let Some(Value::Object(json)) = body.get("event").cloned() else {
        return Err(Error::BadJson("`event` is required".into()));
    };
    let pdu = pdus::verify(app, &version, json).await?;
    let target = pdu.state_key.clone().unwrap_or_default();
    let valid = pdu.event_id == event_id
        && pdu.room_id == room_id
        && pdu.kind == "m.room.member"
        && pdu.content.get("membership").and_then(Value::as_str) == Some("invite")
        && server_of(&pdu.sender) == Some(origin)
        && app.is_local_user(&target);
    if !valid {
        return Err(Error::BadJson("this is not an invite of one of our users".into()));
    }
    if app.storage().user(&target)?.is_none_or(|user| user.deactivated) {
        return Err(Error::NotFound(format!("{target} does not exist")));
    }
    if app.storage().room_version(room_id)?.is_some() && acl::server_allowed(app, room_id, origin) {
        // We are in the room: the invite must pass the room's rules here too.
        let state = app.storage().current_state(room_id)?;
        auth::auth_check(
            &version,
            &pdu,
            |kind, state_key| rooms::state_pdu(app, &version, &state, kind, state_key),
            &LocalSignatures,
        )
        .map_err(|error| Error::Forbidden(error.to_string()))?;
    }
    let mut signed = Value::Object(pdu.json.clone());
    let mut redacted = Value::Object(crate::protocol::redaction::redact(&pdu.json, &version));
    signing::sign_json(&mut redacted, &app.config.server_name, &app.signing_key)
        .map_err(|error| Error::Internal(error.to_string()))?;
    if let Some(ours) = redacted.pointer(&format!("/signatures/{}", pointer_escape(&app.config.server_name)))
    {
        signed["signatures"][app.config.server_name.as_str()] = ours.clone();
    }
    // Whole PDUs since v1.16; clients get stripped state events.
    let stripped: Vec<Value> = body
        .get("invite_room_state")
        .and_then(Value::as_array)
        .map(|events| events.iter().filter_map(strip).collect())
        .unwrap_or_default();
    let stripped = Value::Array(stripped);
    let Value::Object(signed_map) = &signed else { unreachable!("built as an object") };
    crate::rooms::invites::store_remote_invite(
        app,
        &version,
        room_id,
        &target,
        &pdu.event_id,
        signed_map,
        &stripped,
    )?;
    Ok(signed)
}

/// A stripped state event (type, state_key, content, sender) from a PDU or
/// an already stripped event; `None` if it lacks a type or state key.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#stripped-state>.
fn strip(event: &Value) -> Option<Value> {
    let kind = event.get("type").and_then(Value::as_str)?;
    let state_key = event.get("state_key").and_then(Value::as_str)?;
    Some(json!({
        "type": kind,
        "state_key": state_key,
        "content": event.get("content").cloned().unwrap_or_else(|| json!({})),
        "sender": event.get("sender").cloned().unwrap_or(Value::Null),
    }))
}
