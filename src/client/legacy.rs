//! The legacy client API the spec still lists (deprecated since r0, used by
//! bots and test tools): the old event stream `GET /events`, a single event
//! by ID `GET /events/{eventId}`, `GET /initialSync` and
//! `GET /rooms/{roomId}/initialSync`.
//!
//! These are views over the code that serves `/sync` and `/messages`: the
//! same timeline reader ([`super::sync::timeline`], [`crate::rooms::timeline`]),
//! the same history visibility ([`Visibility`], [`readable_up_to`]), the same
//! long-poll wake-ups ([`crate::rooms::notify`]) and the same `s{position}`
//! tokens (a `/sync` `next_batch` is a valid `from`). Presence and receipts,
//! which Synapse also puts in these answers, are left empty: clients that
//! want them use `/sync`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3events>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3eventseventid>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3initialsync>,
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidinitialsync>.

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::filter::Filter;
use super::messages::{BEFORE_EVERYTHING, limit_param, position, token};
use super::sync::{MAX_SYNC_TIMEOUT, timeline};
use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event, client_events};
use crate::rooms::timeline::{Direction, Window, paginate};
use crate::rooms::visibility::{Visibility, readable_up_to};
use crate::storage::{StoredEvent, TokenOwner};

/// `GET /events` answers 10 events when `limit` is not given, as Synapse.
const DEFAULT_EVENTS_LIMIT: usize = 10;
/// One `GET /events` answer carries at most this many events (each room
/// contributes at most this many before they are merged).
const MAX_EVENTS_LIMIT: usize = 100;
/// initialSync's `limit` (events per room) when not given, as Synapse.
const DEFAULT_INITIAL_SYNC_LIMIT: usize = 10;
/// initialSync's `limit` is capped lower than `/messages`'s: it applies to
/// every room of the user at once.
const MAX_INITIAL_SYNC_LIMIT: usize = 100;

/// The `timeout` parameter in milliseconds, capped as `/sync`'s.
fn timeout_param(request: &Request) -> Result<Duration> {
    let timeout = match request.query("timeout") {
        Some(text) => Duration::from_millis(
            text.parse().map_err(|_| Error::InvalidParam("timeout must be an integer".into()))?,
        ),
        None => Duration::ZERO,
    };
    Ok(timeout.min(MAX_SYNC_TIMEOUT))
}

/// `GET /events`: the events after `from` (now when absent) in the rooms the
/// user is in (or in `room_id` alone, which may be a world-readable room the
/// user is not in), oldest first; long-polls up to `timeout` when there are
/// none. `end` is the `from` of the next call.
pub async fn events(app: &Rc<App>, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let limit = limit_param(request, DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT)?;
    let timeout = timeout_param(request)?;
    let room_id = request.query("room_id");
    let from = match request.query("from") {
        Some(text) => position(text)?,
        None => app.current_stream_id(),
    };
    // `start` is the `from` given (a /sync token stays one), or now.
    let start = request.query("from").map_or_else(|| token(from), str::to_owned);
    if let Some(room_id) = room_id
        && !Visibility::new(app, &owner.user_id).can_read_room(room_id)
    {
        return Err(Error::Forbidden("you are not allowed to read this room".into()));
    }
    let deadline = Instant::now() + timeout;
    loop {
        // Listen before looking, so a wake-up between the two is not lost.
        let listener = app.notifier.listen(&owner.user_id);
        let (chunk, end) = app.in_snapshot(|| stream_page(app, &owner, room_id, from, limit))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !chunk.is_empty() || left.is_zero() {
            return Ok(Response::ok(json!({ "start": start, "end": token(end), "chunk": chunk })));
        }
        let waiting = app.metrics.sync_waiting();
        let woke = crate::rooms::notify::woken_within(listener, left).await;
        drop(waiting);
        if !woke {
            let (chunk, end) = app.in_snapshot(|| stream_page(app, &owner, room_id, from, limit))?;
            return Ok(Response::ok(json!({ "start": start, "end": token(end), "chunk": chunk })));
        }
    }
}

/// The events of one `/events` answer and where the next one starts: each
/// room's first `limit` visible events after `from` (read as `/messages`
/// reads forwards), merged in stream order and cut to `limit`. The rooms read
/// are those with news in the window only, so a long-poll wake-up reads the
/// rooms that changed, not every room of the user.
fn stream_page(
    app: &App,
    owner: &TokenOwner,
    room_id: Option<&str>,
    from: i64,
    limit: usize,
) -> Result<(Vec<Value>, i64)> {
    let now = app.current_stream_id();
    // Each room to read, and how far: joined rooms with news up to now; rooms
    // whose membership changed in the window (the user left, was invited,
    // banned) up to that change, so the user's own leave or invite arrives.
    let mut rooms: Vec<(String, i64)> = Vec::new();
    match room_id {
        Some(room_id) => rooms.push((room_id.to_string(), now)),
        None => {
            let news = app.storage().rooms_with_news(from, now)?;
            let memberships = app.storage().rooms_of_user(&owner.user_id)?;
            for (room_id, membership) in memberships {
                if membership == "join" && news.contains(&room_id) {
                    rooms.push((room_id, now));
                }
            }
            let changes = app.storage().membership_changes(&owner.user_id, from, now)?;
            for change in changes.iter().rev() {
                if !rooms.iter().any(|(room_id, _)| *room_id == change.room_id) {
                    rooms.push((change.room_id.clone(), change.stream_ordering));
                }
            }
        }
    };
    let visibility = Visibility::new(app, &owner.user_id);
    let mut end = now.max(from);
    let mut events: Vec<StoredEvent> = Vec::new();
    for (room_id, upper) in &rooms {
        let page = paginate(
            Direction::Forwards,
            Window { lower: from, upper: *upper },
            limit,
            |after, up_to, n| {
                let batch = app.storage().room_events_forwards(room_id, after, up_to, n)?;
                visibility.prepare(&batch);
                Ok(batch)
            },
            |event| visibility.can_see(event),
        )?;
        // Past where this room's page stopped, its events are not read yet.
        if let Some(next) = page.next {
            end = end.min(next);
        }
        events.extend(page.events);
    }
    events.sort_by_key(|event| event.stream_ordering);
    if limit < events.len() {
        events.truncate(limit);
        if let Some(last) = events.last() {
            end = end.min(last.stream_ordering);
        }
    }
    events.retain(|event| event.stream_ordering <= end);
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    Ok((client_events(app, &events, Some(viewer), true), end))
}

/// `GET /events/{eventId}`: one event the user may see, in any room
/// (deprecated for `/rooms/{roomId}/event/{eventId}`, with the same rules).
pub fn event(app: &App, request: &Request, event_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let not_found = || Error::NotFound("event not found".into());
    let event = app
        .storage()
        .event(event_id)?
        .filter(|event| !event.outlier && !event.soft_failed)
        .ok_or_else(not_found)?;
    let readable = readable_up_to(app, &owner.user_id, &event.room_id).map_err(|_| not_found())?;
    if readable < event.stream_ordering || !Visibility::new(app, &owner.user_id).can_see(&event) {
        return Err(not_found());
    }
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    Ok(Response::ok(client_event(app, &event, Some(viewer), true)))
}

/// `GET /initialSync`: every room of the user with its newest `limit`
/// events and its state, the user's account data, and `end`, the position
/// to stream from (`/events?from=` or `/sync?since=`). Rooms left or banned
/// from come only with `archived=true`, with their history up to the leave.
pub fn initial_sync(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let limit = limit_param(request, DEFAULT_INITIAL_SYNC_LIMIT, MAX_INITIAL_SYNC_LIMIT)?;
    let archived = request.query("archived") == Some("true");
    app.in_snapshot(|| {
        let now = app.current_stream_id();
        let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
        let (global, mut per_room) = account_data(app, &owner.user_id, now)?;
        let mut rooms = Vec::new();
        let memberships = app.storage().rooms_of_user(&owner.user_id)?;
        for (room_id, membership) in memberships {
            let mut room = match membership.as_str() {
                "join" => room_snapshot(app, viewer, &room_id, now, limit)?,
                "leave" | "ban" if archived && !app.storage().is_forgotten(&owner.user_id, &room_id)? => {
                    let up_to = readable_up_to(app, &owner.user_id, &room_id)?;
                    room_snapshot(app, viewer, &room_id, up_to, limit)?
                }
                "invite" => invite_snapshot(app, viewer, &room_id)?,
                _ => continue,
            };
            room.insert("room_id".into(), json!(room_id));
            room.insert("membership".into(), json!(membership));
            room.insert("visibility".into(), json!(directory_visibility(app, &room_id)?));
            if membership != "invite" {
                room.insert(
                    "account_data".into(),
                    Value::Array(per_room.remove(&room_id).unwrap_or_default()),
                );
            }
            rooms.push(Value::Object(room));
        }
        Ok(Response::ok(json!({
            "end": token(now),
            "rooms": rooms,
            "presence": [],
            "receipts": [],
            "account_data": global,
        })))
    })
}

/// `GET /rooms/{roomId}/initialSync`: one room as initialSync gives it, for
/// a member, a former member (up to their departure) or anyone when the
/// room is world readable; 403 otherwise, as `/messages`.
pub fn room_initial_sync(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let limit = limit_param(request, DEFAULT_INITIAL_SYNC_LIMIT, MAX_INITIAL_SYNC_LIMIT)?;
    app.in_snapshot(|| {
        let now = app.current_stream_id();
        let up_to = readable_up_to(app, &owner.user_id, room_id)?.min(now);
        let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
        let mut room = room_snapshot(app, viewer, room_id, up_to, limit)?;
        room.insert("room_id".into(), json!(room_id));
        let membership = app
            .storage()
            .rooms_of_user(&owner.user_id)?
            .into_iter()
            .find(|(room, _)| room == room_id)
            .map(|(_, membership)| membership);
        if let Some(membership) = membership {
            room.insert("membership".into(), json!(membership));
        }
        room.insert("visibility".into(), json!(directory_visibility(app, room_id)?));
        let (_, mut per_room) = account_data(app, &owner.user_id, now)?;
        room.insert("account_data".into(), Value::Array(per_room.remove(room_id).unwrap_or_default()));
        room.insert("presence".into(), json!([]));
        room.insert("receipts".into(), json!([]));
        Ok(Response::ok(Value::Object(room)))
    })
}

/// A room's newest `limit` visible events up to `up_to` (read as `/sync`
/// reads a timeline) as `messages`, and its state there as `state`.
fn room_snapshot(
    app: &App,
    viewer: Viewer<'_>,
    room_id: &str,
    up_to: i64,
    limit: usize,
) -> Result<Map<String, Value>> {
    let visibility = Visibility::new(app, viewer.user_id);
    let (events, _) =
        timeline(app, &visibility, &Filter::default(), room_id, BEFORE_EVERYTHING, up_to, limit)?;
    // `start` pages back (`/messages?dir=b&from=`) into what was left out.
    let start = events.first().map_or(up_to, |event| event.stream_ordering - 1);
    let state_events = if up_to < app.current_stream_id() {
        state_at(app, room_id, up_to)?
    } else {
        app.storage().current_state_events(room_id, i64::MIN)?
    };
    let mut room = Map::new();
    room.insert(
        "messages".into(),
        json!({
            "chunk": client_events(app, &events, Some(viewer), true),
            "start": token(start),
            "end": token(up_to),
        }),
    );
    room.insert("state".into(), Value::Array(client_events(app, &state_events, Some(viewer), true)));
    Ok(room)
}

/// The state of a room after its newest event at or before `at`.
fn state_at(app: &App, room_id: &str, at: i64) -> Result<Vec<StoredEvent>> {
    let newest = app.storage().room_events_backwards(room_id, BEFORE_EVERYTHING, at, 1)?;
    let Some(group) = newest.first().and_then(|event| event.state_group) else { return Ok(Vec::new()) };
    let mut events = Vec::new();
    let state = app.storage().state_of_group(group)?;
    for event_id in state.values() {
        if let Some(event) = app.storage().event(event_id)? {
            events.push(event);
        }
    }
    events.sort_by_key(|event| event.stream_ordering);
    Ok(events)
}

/// An invited room in initialSync: who invited the user, and the invite.
fn invite_snapshot(app: &App, viewer: Viewer<'_>, room_id: &str) -> Result<Map<String, Value>> {
    let mut room = Map::new();
    let invite_id = app.storage().current_state_event(room_id, "m.room.member", viewer.user_id)?;
    if let Some(invite) = invite_id.and_then(|id| app.storage().event(&id).ok().flatten()) {
        room.insert("inviter".into(), json!(invite.sender));
        room.insert("invite".into(), client_event(app, &invite, Some(viewer), true));
    }
    Ok(room)
}

/// `public` when the room is in the room directory, `private` otherwise.
fn directory_visibility(app: &App, room_id: &str) -> Result<&'static str> {
    Ok(if app.storage().room_is_public(room_id)? { "public" } else { "private" })
}

/// The user's account data now: the global events, and each room's.
type AccountData = (Vec<Value>, std::collections::BTreeMap<String, Vec<Value>>);

fn account_data(app: &App, user_id: &str, now: i64) -> Result<AccountData> {
    let mut global = Vec::new();
    let mut per_room: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let stored = app.storage().account_data_since(user_id, i64::MIN, now)?;
    for (room_id, kind, content) in stored {
        let content = serde_json::from_str::<Value>(&content).unwrap_or_else(|_| json!({}));
        let event = json!({ "type": kind, "content": content });
        if room_id.is_empty() {
            global.push(event);
        } else {
            per_room.entry(room_id).or_default().push(event);
        }
    }
    Ok((global, per_room))
}
