//! Reporting content to the server's operators: events, rooms and users. The
//! reports land in the `reports` table for the operator to read.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#reporting-content>.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::UserId;
use crate::request::{Request, Response};
use crate::storage::ReportTarget;

/// Reasons longer than this are refused: a report is read by a person, and
/// this keeps one reporter from filling the table.
const MAX_REASON_CHARS: usize = 1000;

fn reason(body: &Map<String, Value>, required: bool) -> Result<Option<String>> {
    match body.get("reason") {
        None | Some(Value::Null) if required => Err(Error::MissingParam("`reason` is required".into())),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(reason)) if reason.chars().count() > MAX_REASON_CHARS => {
            Err(Error::InvalidParam(format!("`reason` is longer than {MAX_REASON_CHARS} characters")))
        }
        Some(Value::String(reason)) => Ok(Some(reason.clone())),
        Some(_) => Err(Error::BadJson("`reason` must be a string".into())),
    }
}

/// `POST /rooms/{roomId}/report/{eventId}`: the reporter must be joined and the
/// event must be in the room, else 404 (the spec's one answer for both).
pub fn report_event(app: &App, request: &Request, room_id: &str, event_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let reason = reason(&body, false)?;
    // `score` left the spec in v1.18; Synapse still accepts -100..=0, so we keep it if sent.
    let score = match body.get("score") {
        None | Some(Value::Null) => None,
        Some(score) => match score.as_i64() {
            Some(score) if (-100..=0).contains(&score) => Some(score),
            _ => return Err(Error::InvalidParam("`score` must be an integer from -100 to 0".into())),
        },
    };
    let not_found = || Error::NotFound("the event was not found or you are not joined to the room".into());
    if app.storage().membership(room_id, &owner.user_id)?.as_deref() != Some("join") {
        return Err(not_found());
    }
    let event = app.storage().event(event_id)?;
    if !event.is_some_and(|event| event.room_id == room_id && !event.outlier) {
        return Err(not_found());
    }
    let target = ReportTarget::Event { room_id, event_id };
    app.storage().insert_report(&owner.user_id, target, reason.as_deref(), score)?;
    log::info!("{} reported {event_id} in {room_id}", owner.user_id);
    Ok(Response::ok(json!({})))
}

/// `POST /rooms/{roomId}/report`: anyone may report a room we know.
pub fn report_room(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let reason = reason(&body, true)?;
    if app.storage().room_version(room_id)?.is_none() {
        return Err(Error::NotFound("room not found".into()));
    }
    app.storage().insert_report(&owner.user_id, ReportTarget::Room { room_id }, reason.as_deref(), None)?;
    log::info!("{} reported {room_id}", owner.user_id);
    Ok(Response::ok(json!({})))
}

/// `POST /users/{userId}/report`: local users we know, or 404.
pub fn report_user(app: &App, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let reason = reason(&body, true)?;
    UserId::parse(user_id).map_err(|error| Error::InvalidParam(format!("{user_id}: {error}")))?;
    // Remote users would need federation to tell apart from unknown ones.
    if !app.is_local_user(user_id) || app.storage().user(user_id)?.is_none() {
        return Err(Error::NotFound("the user was not found".into()));
    }
    app.storage().insert_report(&owner.user_id, ReportTarget::User { user_id }, reason.as_deref(), None)?;
    log::info!("{} reported {user_id}", owner.user_id);
    Ok(Response::ok(json!({})))
}
