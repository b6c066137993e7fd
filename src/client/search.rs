//! Server-side search: `POST /search`, the `room_events` category over the
//! FTS5 index, with filters, ordering, event context, paging and history
//! visibility. Groupings are not offered: answers carry no `groups`.
//!
//! `next_batch` is `r{position}` (recent: results below that stream
//! position) or `k{offset}` (rank: results past that many matches).
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-side-search>.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::filter::{self, DEFAULT_TIMELINE_LIMIT, EventFilter, MAX_TIMELINE_LIMIT};
use super::messages::token;
use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event, client_events};
use crate::rooms::timeline::{Direction, MAX_SCANNED_EVENTS, Window, paginate};
use crate::rooms::visibility::Visibility;
use crate::storage::{SEARCH_KEYS, SearchOrder, SearchQuery, StoredEvent, fts_expression, search_words};

/// Spec: `before_limit` and `after_limit` default to 5.
const DEFAULT_CONTEXT_SIDE: usize = 5;
/// At most this many context events on each side of a result.
const MAX_CONTEXT_SIDE: usize = 100;

#[derive(Deserialize)]
struct SearchBody {
    search_categories: Categories,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<Value>,
    order_by: Option<String>,
    event_context: Option<ContextRequest>,
    #[serde(default)]
    include_state: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContextRequest {
    before_limit: Option<usize>,
    after_limit: Option<usize>,
    include_profile: bool,
}

/// `POST /search`.
pub fn search(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body: SearchBody = request.json()?;
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Response::ok(json!({ "search_categories": {} })));
    };
    let filter = match &criteria.filter {
        Some(value) => filter::event_filter(value)?,
        None => EventFilter::default(),
    };
    let columns: Vec<&str> = match &criteria.keys {
        None => SEARCH_KEYS.iter().map(|(_, column)| *column).collect(),
        Some(keys) => keys
            .iter()
            .map(|key| {
                SEARCH_KEYS
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, column)| *column)
                    .ok_or_else(|| Error::InvalidParam(format!("unknown search key {key}")))
            })
            .collect::<Result<_>>()?,
    };
    let rank_order = match criteria.order_by.as_deref() {
        None | Some("rank") => true,
        Some("recent") => false,
        Some(other) => return Err(Error::InvalidParam(format!("unknown order_by {other}"))),
    };
    let mut order = match (request.query("next_batch"), rank_order) {
        (None, true) => SearchOrder::Rank { offset: 0 },
        (None, false) => SearchOrder::Recent { before: i64::MAX },
        (Some(batch), _) => parse_batch(batch, rank_order)?,
    };
    let limit = filter.limit_or(DEFAULT_TIMELINE_LIMIT).min(MAX_TIMELINE_LIMIT);
    crate::rooms::search_index::catch_up(app)?;

    // The rooms searched: those the user is in or has left (visibility then
    // keeps what they may see), narrowed by the filter's room lists.
    let rooms: Vec<String> = app
        .storage()
        .rooms_of_user(&owner.user_id)?
        .into_iter()
        .filter(|(_, membership)| matches!(membership.as_str(), "join" | "leave" | "ban"))
        .map(|(room_id, _)| room_id)
        .filter(|room_id| {
            !filter.not_rooms.contains(room_id)
                && filter.rooms.as_ref().is_none_or(|rooms| rooms.contains(room_id))
        })
        .collect();
    let rooms_json = json!(rooms).to_string();
    let highlights = search_words(&criteria.search_term);
    let Some(fts) = fts_expression(&criteria.search_term, &columns) else {
        return Ok(Response::ok(
            json!({ "search_categories": { "room_events": { "count": 0, "highlights": [], "results": [] } } }),
        ));
    };
    let visibility = Visibility::new(app, &owner.user_id);
    // The count covers what the user may see, as the results do: matches
    // posted after they left (or before they could read) are not counted.
    let counts = app.storage().search_counts_by_group(&fts, &rooms_json)?;
    let groups: Vec<i64> = counts.iter().filter_map(|(_, group, _)| *group).collect();
    visibility.prepare_groups(&groups);
    let count: i64 = counts
        .iter()
        .filter(|(room_id, group, _)| visibility.can_see_at(room_id, *group))
        .map(|(_, _, count)| count)
        .sum();
    let mut found: Vec<(StoredEvent, f64)> = Vec::new();
    let mut scanned = 0;
    let mut more = false;
    'batches: loop {
        let batch_size = (limit + 1).max(20);
        let batch = app.storage().search_events(&SearchQuery {
            fts: &fts,
            rooms_json: &rooms_json,
            order,
            limit: batch_size,
        })?;
        let exhausted = batch.len() < batch_size;
        for (event, rank) in batch {
            if found.len() == limit || scanned >= MAX_SCANNED_EVENTS {
                more = true;
                break 'batches;
            }
            scanned += 1;
            order = match order {
                SearchOrder::Recent { .. } => SearchOrder::Recent { before: event.stream_ordering },
                SearchOrder::Rank { offset } => SearchOrder::Rank { offset: offset + 1 },
            };
            if filter.allows_event(&event) && visibility.can_see(&event) {
                found.push((event, rank));
            }
        }
        if exhausted {
            break;
        }
    }

    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let mut results = Vec::with_capacity(found.len());
    for (event, rank) in &found {
        let mut result = json!({ "rank": rank, "result": client_event(app, event, Some(viewer), true) });
        if let Some(wanted) = &criteria.event_context {
            result["context"] = context(app, &visibility, event, wanted, viewer)?;
        }
        results.push(result);
    }
    let mut room_events = json!({ "count": count, "highlights": highlights, "results": results });
    if more {
        room_events["next_batch"] = json!(match order {
            SearchOrder::Recent { before } => format!("r{before}"),
            SearchOrder::Rank { offset } => format!("k{offset}"),
        });
    }
    if criteria.include_state {
        let mut state = Map::new();
        let result_rooms: BTreeSet<&str> = found.iter().map(|(event, _)| event.room_id.as_str()).collect();
        for room_id in result_rooms {
            if app.storage().membership(room_id, &owner.user_id)?.as_deref() != Some("join") {
                continue;
            }
            let mut events = Vec::new();
            let current = app.storage().current_state(room_id)?;
            for event_id in current.values() {
                let event = app.storage().event(event_id)?;
                if let Some(event) = event {
                    events.push(client_event(app, &event, Some(viewer), true));
                }
            }
            state.insert(room_id.to_string(), Value::Array(events));
        }
        room_events["state"] = Value::Object(state);
    }
    Ok(Response::ok(json!({ "search_categories": { "room_events": room_events } })))
}

/// Parses a `next_batch` token; it must match the requested order.
fn parse_batch(batch: &str, rank_order: bool) -> Result<SearchOrder> {
    let invalid = || Error::InvalidParam(format!("invalid next_batch {batch:?}"));
    let (kind, number) = batch.split_at_checked(1).ok_or_else(invalid)?;
    let number: i64 = number.parse().map_err(|_| invalid())?;
    match (kind, rank_order) {
        ("k", true) if number >= 0 => Ok(SearchOrder::Rank { offset: number }),
        ("r", false) => Ok(SearchOrder::Recent { before: number }),
        _ => Err(invalid()),
    }
}

/// The events around a result, with tokens and (if asked) the senders' profiles.
fn context(
    app: &App,
    visibility: &Visibility<'_>,
    event: &StoredEvent,
    wanted: &ContextRequest,
    viewer: Viewer<'_>,
) -> Result<Value> {
    let side = |limit: Option<usize>| limit.unwrap_or(DEFAULT_CONTEXT_SIDE).min(MAX_CONTEXT_SIDE);
    let room_id = event.room_id.as_str();
    let position = event.stream_ordering;
    let before = paginate(
        Direction::Backwards,
        Window { lower: 0, upper: position - 1 },
        side(wanted.before_limit),
        |after, up_to, n| app.storage().room_events_backwards(room_id, after, up_to, n),
        |event| visibility.can_see(event),
    )?;
    let after = paginate(
        Direction::Forwards,
        Window { lower: position, upper: app.current_stream_id() },
        side(wanted.after_limit),
        |after, up_to, n| app.storage().room_events_forwards(room_id, after, up_to, n),
        |event| visibility.can_see(event),
    )?;
    let start = before.events.last().map_or(position - 1, |e| e.stream_ordering - 1);
    let end = after.events.last().map_or(position, |e| e.stream_ordering);
    let format = |events: &[StoredEvent]| -> Vec<Value> { client_events(app, events, Some(viewer), true) };
    let mut context = json!({
        "events_before": format(&before.events),
        "events_after": format(&after.events),
        "start": token(start),
        "end": token(end),
    });
    if wanted.include_profile {
        let mut profiles = BTreeMap::new();
        let senders: BTreeSet<&str> = before
            .events
            .iter()
            .chain(after.events.iter())
            .chain(std::iter::once(event))
            .map(|event| event.sender.as_str())
            .collect();
        if let Some(group) = event.state_group {
            for sender in senders {
                let member = app.storage().state_entry_of_group(group, "m.room.member", sender)?;
                let Some(member) = member.and_then(|id| app.storage().event(&id).ok().flatten()) else {
                    continue;
                };
                let content = member.json.get("content").cloned().unwrap_or_else(|| json!({}));
                profiles.insert(
                    sender.to_string(),
                    json!({ "displayname": content.get("displayname"), "avatar_url": content.get("avatar_url") }),
                );
            }
        }
        context["profile_info"] = json!(profiles);
    }
    Ok(context)
}
