//! Relations and threads: `/relations/{eventId}[/{relType}[/{eventType}]]` and
//! `/threads`, with history visibility.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#relationships-api>,
//! <https://spec.matrix.org/latest/client-server-api/#querying-threads-in-a-room>.

use serde_json::{Value, json};

use super::messages::{limit_param, position, token};
use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event, client_events};
use crate::rooms::timeline::{Direction, Window, paginate};
use crate::rooms::visibility::{Visibility, readable_up_to};
use crate::storage::RelationQuery;

/// Synapse's default page size for /relations and /threads.
const DEFAULT_RELATIONS_LIMIT: usize = 5;
/// The most related events or threads served in one page.
const MAX_RELATIONS_LIMIT: usize = 1000;
/// Spec: with `recurse`, servers SHOULD traverse at least 3 levels.
const RECURSION_DEPTH: u32 = 3;
/// `/threads` reads this many thread summaries per query while filling a page.
const THREAD_BATCH: usize = 50;

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`.
pub fn relations(
    app: &App,
    request: &Request,
    room_id: &str,
    event_id: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let direction = Direction::parse(request.query("dir"), Some(Direction::Backwards))?;
    let limit = limit_param(request, DEFAULT_RELATIONS_LIMIT, MAX_RELATIONS_LIMIT)?;
    let from = request.query("from").map(position).transpose()?;
    let to = request.query("to").map(position).transpose()?;
    let recurse = match request.query("recurse") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Error::InvalidParam("recurse must be true or false".into())),
    };
    let readable = readable_up_to(app, &owner.user_id, room_id)?;
    let not_found = || Error::NotFound("event not found".into());
    let parent = app
        .storage()
        .event(event_id)?
        .filter(|event| event.room_id == room_id && !event.outlier)
        .ok_or_else(not_found)?;
    let visibility = Visibility::new(app, &owner.user_id);
    if parent.stream_ordering > readable || !visibility.can_see(&parent) {
        return Err(not_found());
    }
    let end_of_room = app.current_stream_id().min(readable);
    let window = match direction {
        Direction::Backwards => {
            Window { lower: to.unwrap_or(0), upper: from.unwrap_or(end_of_room).min(end_of_room) }
        }
        Direction::Forwards => {
            Window { lower: from.unwrap_or(0), upper: to.unwrap_or(end_of_room).min(end_of_room) }
        }
    };
    let max_depth = if recurse == Some(true) { RECURSION_DEPTH } else { 1 };
    let page = paginate(
        direction,
        window,
        limit,
        |after, up_to, n| {
            let batch = app.storage().related_events(&RelationQuery {
                room_id,
                parent: event_id,
                rel_type,
                event_type,
                max_depth,
                after,
                up_to,
                backwards: direction == Direction::Backwards,
                limit: n,
            })?;
            visibility.prepare(&batch);
            Ok(batch)
        },
        |event| visibility.can_see(event),
    )?;
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let chunk: Vec<Value> = client_events(app, &page.events, Some(viewer), true);
    let mut body = json!({});
    body["chunk"] = Value::Array(chunk);
    if let Some(next) = page.next {
        body["next_batch"] = json!(token(next));
    }
    if let Some(from) = request.query("from") {
        body["prev_batch"] = json!(from);
    }
    if recurse.is_some() {
        body["recursion_depth"] = json!(max_depth);
    }
    Ok(Response::ok(body))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`: thread roots by latest
/// activity, newest first. `next_batch` is the position below the last
/// thread's latest reply.
pub fn threads(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let participated = match request.query("include") {
        None | Some("all") => false,
        Some("participated") => true,
        Some(other) => {
            return Err(Error::InvalidParam(format!("include must be all or participated, not {other:?}")));
        }
    };
    let limit = limit_param(request, DEFAULT_RELATIONS_LIMIT, MAX_RELATIONS_LIMIT)?.max(1);
    let readable = readable_up_to(app, &owner.user_id, room_id)?;
    let mut latest_up_to = match request.query("from") {
        Some(from) => position(from)?,
        None => i64::MAX,
    };
    let participant = participated.then_some(owner.user_id.as_str());
    let visibility = Visibility::new(app, &owner.user_id);
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let mut chunk = Vec::new();
    let mut next_batch = None;
    'pages: loop {
        let summaries =
            app.storage().thread_roots(room_id, participant, readable, latest_up_to, THREAD_BATCH)?;
        let exhausted = summaries.len() < THREAD_BATCH;
        for summary in summaries {
            if chunk.len() == limit {
                next_batch = Some(latest_up_to);
                break 'pages;
            }
            latest_up_to = summary.latest - 1;
            let root = app.storage().event(&summary.root)?;
            let Some(root) = root.filter(|root| root.room_id == room_id && !root.outlier) else { continue };
            if root.stream_ordering <= readable && visibility.can_see(&root) {
                chunk.push(client_event(app, &root, Some(viewer), true));
            }
        }
        if exhausted {
            break;
        }
    }
    let mut body = json!({});
    body["chunk"] = Value::Array(chunk);
    if let Some(next) = next_batch {
        body["next_batch"] = json!(token(next));
    }
    Ok(Response::ok(body))
}
