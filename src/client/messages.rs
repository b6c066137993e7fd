//! Reading a room's history: `/messages`, `/context/{eventId}` and
//! `/timestamp_to_event`, with filters and history visibility.
//!
//! Tokens are `s{position}` stream positions (an event with stream ordering N
//! lies after position N-1), the same positions /sync's `prev_batch` uses.
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidmessages>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidcontexteventid>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::filter::{self, EventFilter, MAX_TIMELINE_LIMIT};
use super::sync::parse_token;
use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event, client_events, client_events_raw};
use crate::rooms::timeline::{Direction, Page, Window, paginate};
use crate::rooms::visibility::{Visibility, readable_up_to};
use crate::storage::StoredEvent;

/// Spec: `/messages` returns 10 events when `limit` is not given.
const DEFAULT_MESSAGES_LIMIT: usize = 10;
/// Synapse's default for `/context` (split between before and after).
const DEFAULT_CONTEXT_LIMIT: usize = 10;
/// `/timestamp_to_event` looks at this many events nearest the timestamp for
/// one the user may see, then gives up with 404.
const MAX_TIMESTAMP_CANDIDATES: usize = 50;

/// A `limit` query parameter, defaulted and capped.
pub fn limit_param(request: &Request, default: usize, max: usize) -> Result<usize> {
    match request.query("limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .map(|limit| limit.min(max))
            .map_err(|_| Error::InvalidParam("limit must be a non-negative integer".into())),
    }
}

/// A position before every event: history fetched from other servers
/// (backfill) is stored at negative stream positions, before what this
/// server saw live.
pub const BEFORE_EVERYTHING: i64 = i64::MIN / 2;

/// A pagination token's stream position.
pub fn position(text: &str) -> Result<i64> {
    Ok(parse_token(text)?.stream)
}

/// The token for a stream position.
pub fn token(position: i64) -> String {
    format!("s{position}")
}

/// Reads one page of a room's timeline as `user_id` sees it.
fn room_page(
    app: &App,
    room_id: &str,
    visibility: &Visibility<'_>,
    filter: &EventFilter,
    direction: Direction,
    window: Window,
    limit: usize,
) -> Result<Page> {
    paginate(
        direction,
        window,
        limit,
        |after, up_to, n| {
            let batch = match direction {
                Direction::Backwards => app.storage().room_events_backwards(room_id, after, up_to, n)?,
                Direction::Forwards => app.storage().room_events_forwards(room_id, after, up_to, n)?,
            };
            visibility.prepare(&batch);
            Ok(batch)
        },
        |event| filter.allows_event(event) && visibility.can_see(event),
    )
}

/// `GET /rooms/{roomId}/messages`. Paging back past the oldest event held
/// here fetches older history from the other servers in the room first.
pub async fn messages(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    // A page only reads: one snapshot, with the lock taken once.
    let read_page = || app.in_snapshot(|| messages_page(app, request, room_id));
    let page = read_page()?;
    let backwards = Direction::parse(request.query("dir"), None)? == Direction::Backwards;
    if backwards && page.end.is_none() && crate::remote::join::backfill_older(app, room_id).await? > 0 {
        return Ok(Response::ok_json(&read_page()?));
    }
    Ok(Response::ok_json(&page))
}

/// A `/messages` answer; the events go in serialised already.
#[derive(Serialize)]
struct MessagesPage {
    chunk: Vec<Box<RawValue>>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    start: String,
    state: Vec<Value>,
}

/// One `/messages` page from what this server holds.
fn messages_page(app: &App, request: &Request, room_id: &str) -> Result<MessagesPage> {
    let owner = app.authenticate(request)?;
    let direction = Direction::parse(request.query("dir"), None)?;
    let limit = limit_param(request, DEFAULT_MESSAGES_LIMIT, MAX_TIMELINE_LIMIT)?;
    let filter = filter::event_filter_param(app, &owner.user_id, request.query("filter"))?;
    let from = request.query("from").map(position).transpose()?;
    let to = request.query("to").map(position).transpose()?;
    let readable = readable_up_to(app, &owner.user_id, room_id)?;
    let end_of_room = app.current_stream_id();
    // Since v1.3 `from` is optional: backwards starts at the end of the room,
    // forwards at its beginning.
    let start = from.unwrap_or(match direction {
        Direction::Backwards => end_of_room,
        Direction::Forwards => BEFORE_EVERYTHING,
    });
    let window = match direction {
        Direction::Backwards => Window { lower: to.unwrap_or(BEFORE_EVERYTHING), upper: start.min(readable) },
        Direction::Forwards => {
            Window { lower: start, upper: to.unwrap_or(end_of_room).min(end_of_room).min(readable) }
        }
    };
    let visibility = Visibility::new(app, &owner.user_id);
    let page = room_page(app, room_id, &visibility, &filter, direction, window, limit)?;
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let chunk = client_events_raw(app, &page.events, Some(viewer), true);
    let state = if filter.lazy_load_members {
        let senders: BTreeSet<&str> = page.events.iter().map(|event| event.sender.as_str()).collect();
        member_state(app, page.events.first(), &senders, viewer)?
    } else {
        Vec::new()
    };
    Ok(MessagesPage { chunk, end: page.next.map(token), start: token(start), state })
}

/// The member events of `senders` in the state at `at` (lazy-loaded members).
fn member_state(
    app: &App,
    at: Option<&StoredEvent>,
    senders: &BTreeSet<&str>,
    viewer: Viewer<'_>,
) -> Result<Vec<Value>> {
    let Some(group) = at.and_then(|event| event.state_group) else { return Ok(Vec::new()) };
    let mut state = Vec::new();
    for sender in senders {
        let event_id = app.storage().state_entry_of_group(group, "m.room.member", sender)?;
        if let Some(event) = event_id.and_then(|id| app.storage().event(&id).ok().flatten()) {
            state.push(client_event(app, &event, Some(viewer), true));
        }
    }
    Ok(state)
}

/// `GET /rooms/{roomId}/context/{eventId}`.
pub fn context(app: &App, request: &Request, room_id: &str, event_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let limit = limit_param(request, DEFAULT_CONTEXT_LIMIT, MAX_TIMELINE_LIMIT)?;
    let filter = filter::event_filter_param(app, &owner.user_id, request.query("filter"))?;
    let readable = readable_up_to(app, &owner.user_id, room_id)?;
    let not_found = || Error::NotFound("event not found".into());
    let event = app
        .storage()
        .event(event_id)?
        .filter(|event| event.room_id == room_id && !event.outlier && !event.soft_failed)
        .ok_or_else(not_found)?;
    let visibility = Visibility::new(app, &owner.user_id);
    if event.stream_ordering > readable || !visibility.can_see(&event) {
        return Err(not_found());
    }
    // Synapse's split: the smaller half before, the rest after.
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let position = event.stream_ordering;
    let before = room_page(
        app,
        room_id,
        &visibility,
        &filter,
        Direction::Backwards,
        Window { lower: BEFORE_EVERYTHING, upper: position - 1 },
        before_limit,
    )?;
    let upper = app.current_stream_id().min(readable);
    let after = room_page(
        app,
        room_id,
        &visibility,
        &filter,
        Direction::Forwards,
        Window { lower: position, upper },
        after_limit,
    )?;
    let start =
        before.next.unwrap_or_else(|| before.events.last().map_or(position - 1, |e| e.stream_ordering - 1));
    let end = after.next.unwrap_or_else(|| after.events.last().map_or(position, |e| e.stream_ordering));

    // The state at the last event returned.
    let last = after.events.last().unwrap_or(&event);
    let state_map = match last.state_group {
        Some(group) => app.storage().state_of_group(group)?,
        None => Default::default(),
    };
    let senders: BTreeSet<&str> = before
        .events
        .iter()
        .chain(after.events.iter())
        .chain(std::iter::once(&event))
        .map(|event| event.sender.as_str())
        .collect();
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let mut state = Vec::new();
    for ((kind, state_key), state_event_id) in &state_map {
        if kind == "m.room.member" && filter.lazy_load_members && !senders.contains(state_key.as_str()) {
            continue;
        }
        let Some(state_event) = app.storage().event(state_event_id)? else { continue };
        if filter.allows_event(&state_event) {
            state.push(client_event(app, &state_event, Some(viewer), true));
        }
    }
    let format = |events: &[StoredEvent]| -> Vec<Value> { client_events(app, events, Some(viewer), true) };
    Ok(Response::ok(json!({
        "event": client_event(app, &event, Some(viewer), true),
        "events_before": format(&before.events),
        "events_after": format(&after.events),
        "start": token(start),
        "end": token(end),
        "state": state,
    })))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`.
pub fn timestamp_to_event(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let ts: i64 = request
        .query("ts")
        .ok_or_else(|| Error::MissingParam("ts is required".into()))?
        .parse()
        .map_err(|_| Error::InvalidParam("ts must be an integer".into()))?;
    let direction = Direction::parse(request.query("dir"), None)?;
    let readable = readable_up_to(app, &owner.user_id, room_id)?;
    let forwards = direction == Direction::Forwards;
    let candidates = app.storage().events_near_timestamp(room_id, ts, forwards, MAX_TIMESTAMP_CANDIDATES)?;
    let visibility = Visibility::new(app, &owner.user_id);
    let found =
        candidates.iter().find(|event| event.stream_ordering <= readable && visibility.can_see(event));
    match found {
        Some(event) => Ok(Response::ok(json!({
            "event_id": event.event_id,
            "origin_server_ts": event.origin_server_ts,
        }))),
        None => Err(Error::NotFound(format!(
            "no event found from {ts} {}",
            if forwards { "forwards" } else { "backwards" }
        ))),
    }
}
