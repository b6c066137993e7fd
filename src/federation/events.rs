//! Serving room events to other servers: single events, the state at an
//! event, auth chains, backfill and missing events.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#retrieving-events>,
//! <https://spec.matrix.org/latest/server-server-api/#backfilling-and-retrieving-missing-events>.

use std::collections::{HashSet, VecDeque};

use serde_json::{Map, Value, json};

use super::acl;
use crate::app::App;
use crate::error::{Error, Result};
use crate::remote::pdus::{auth_events_of, pdu_json, prev_events_of};
use crate::request::{Request, Response};
use crate::rooms::state_answer::{self, Form, StateAnswer};
use crate::storage::{StoredEvent, now_ms};

/// Spec-less but Synapse's: backfill and missing events give at most this many.
const MAX_EVENTS_PER_REQUEST: usize = 100;

/// May `origin` read this room's events? It must have a joined member (or
/// the room be world readable) and pass the ACL.
pub fn check_server_in_room(app: &App, origin: &str, room_id: &str) -> Result<()> {
    if app.storage().room_version(room_id)?.is_none() {
        return Err(Error::NotFound("unknown room".into()));
    }
    if !acl::server_allowed(app, room_id, origin) {
        return Err(Error::Forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    let in_room = app.storage().server_in_room(room_id, origin)?;
    let world_readable = crate::rooms::current_state_content(app, room_id, "m.room.history_visibility", "")?
        .and_then(|content| content.get("history_visibility").and_then(Value::as_str).map(str::to_owned))
        .as_deref()
        == Some("world_readable");
    if !in_room && !world_readable {
        return Err(Error::Forbidden(format!("{origin} is not in {room_id}")));
    }
    Ok(())
}

/// The auth chain of some events: every event reachable through `auth_events`.
pub fn auth_chain(app: &App, start: &[String]) -> Result<Vec<StoredEvent>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut chain = Vec::new();
    for event_id in start {
        if let Some(event) = app.storage().event(event_id)? {
            queue.extend(auth_events_of(&event));
        }
    }
    while let Some(event_id) = queue.pop_front() {
        if !seen.insert(event_id.clone()) {
            continue;
        }
        let Some(event) = app.storage().event(&event_id)? else { continue };
        queue.extend(auth_events_of(&event));
        chain.push(event);
    }
    Ok(chain)
}

fn event_in_room(app: &App, room_id: &str, event_id: &str) -> Result<StoredEvent> {
    app.storage()
        .event(event_id)?
        .filter(|event| event.room_id == room_id)
        .ok_or_else(|| Error::NotFound(format!("{event_id} is not in {room_id}")))
}

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub fn get_event(app: &App, origin: &str, event_id: &str) -> Result<Response> {
    let event = app.storage().event(event_id)?.ok_or_else(|| Error::NotFound("event not found".into()))?;
    check_server_in_room(app, origin, &event.room_id)?;
    Ok(Response::ok(json!({
        "origin": app.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": [pdu_json(&event)],
    })))
}

/// `GET /_matrix/federation/v1/state/{roomId}` and `/state_ids/{roomId}`:
/// the state before `event_id` and its auth chain (as events, or as IDs
/// with `ids_only`), streamed as they are read (`rooms::state_answer`),
/// never held whole.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1stateroomid>,
/// <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1state_idsroomid>.
pub fn get_state(
    app: &App,
    request: &Request,
    origin: &str,
    room_id: &str,
    ids_only: bool,
) -> Result<Response> {
    check_server_in_room(app, origin, room_id)?;
    let event_id =
        request.query("event_id").ok_or_else(|| Error::MissingParam("`event_id` is required".into()))?;
    let event = event_in_room(app, room_id, event_id)?;
    let turn = state_answer::take_turn(app, origin)?;
    let (form, endpoint) = if ids_only { (Form::StateIds, "/state_ids") } else { (Form::State, "/state") };
    let answer = StateAnswer {
        form,
        fields: Map::new(),
        state: state_answer::state_before(app, &event)?,
        chain_also: Vec::new(),
        label: format!("{endpoint} answer at {event_id}"),
    };
    Ok(Response {
        status: 200,
        content_type: "application/json".into(),
        body: state_answer::stream(&app.engine, answer, turn),
        headers: Vec::new(),
    })
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub fn get_event_auth(app: &App, origin: &str, room_id: &str, event_id: &str) -> Result<Response> {
    check_server_in_room(app, origin, room_id)?;
    event_in_room(app, room_id, event_id)?;
    let chain = auth_chain(app, &[event_id.to_string()])?;
    Ok(Response::ok(json!({ "auth_chain": chain.iter().map(pdu_json).collect::<Vec<_>>() })))
}

/// Walks `prev_events` back from `start`, breadth first, stopping at
/// `stop` events, collecting at most `limit` events (those in `start` included
/// when `include_start`).
fn walk_back(
    app: &App,
    room_id: &str,
    start: &[String],
    stop: &HashSet<String>,
    limit: usize,
    include_start: bool,
) -> Result<Vec<StoredEvent>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<(String, bool)> = start.iter().map(|id| (id.clone(), include_start)).collect();
    let mut found = Vec::new();
    while let Some((event_id, take)) = queue.pop_front() {
        if found.len() >= limit {
            break;
        }
        if !seen.insert(event_id.clone()) || stop.contains(&event_id) {
            continue;
        }
        let Some(event) = app.storage().event(&event_id)? else { continue };
        if event.room_id != room_id {
            continue;
        }
        for prev in prev_events_of(&event) {
            queue.push_back((prev, true));
        }
        if take {
            found.push(event);
        }
    }
    Ok(found)
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=`.
pub fn backfill(app: &App, request: &Request, origin: &str, room_id: &str) -> Result<Response> {
    check_server_in_room(app, origin, room_id)?;
    let from: Vec<String> =
        request.query.iter().filter(|(key, _)| key == "v").map(|(_, value)| value.clone()).collect();
    if from.is_empty() {
        return Err(Error::MissingParam("`v` is required".into()));
    }
    let limit = request
        .query("limit")
        .map(|text| text.parse::<usize>().map_err(|_| Error::InvalidParam("`limit` must be a number".into())))
        .transpose()?
        .unwrap_or(10)
        .min(MAX_EVENTS_PER_REQUEST);
    let events = walk_back(app, room_id, &from, &HashSet::new(), limit, true)?;
    Ok(Response::ok(json!({
        "origin": app.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": events.iter().map(pdu_json).collect::<Vec<_>>(),
    })))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
pub fn get_missing_events(app: &App, request: &Request, origin: &str, room_id: &str) -> Result<Response> {
    check_server_in_room(app, origin, room_id)?;
    let body = request.json_object()?;
    let list = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let earliest: HashSet<String> = list("earliest_events").into_iter().collect();
    let latest = list("latest_events");
    let limit =
        body.get("limit").and_then(Value::as_u64).unwrap_or(10).min(MAX_EVENTS_PER_REQUEST as u64) as usize;
    let min_depth = body.get("min_depth").and_then(Value::as_i64).unwrap_or(0);
    let mut events = walk_back(app, room_id, &latest, &earliest, limit, false)?;
    events.retain(|event| event.json.get("depth").and_then(Value::as_i64).unwrap_or(0) >= min_depth);
    // Oldest first, as Synapse sends them.
    events.sort_by_key(|event| event.json.get("depth").and_then(Value::as_i64).unwrap_or(0));
    Ok(Response::ok(json!({ "events": events.iter().map(pdu_json).collect::<Vec<_>>() })))
}
