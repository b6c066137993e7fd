//! `/sync`: since tokens, long polling, filters, and the joined, invited,
//! knocked and left room sections.
//!
//! A token is `s{stream}_{typing}_{presence}`: the stream position (events,
//! account data, receipts share one counter), the typing serial and the
//! presence serial (tokens from before presence, `s{stream}_{typing}`, read
//! as presence serial 0). When an answer carried only a page of the
//! device's to-device inbox, a fourth part is the stream position of the
//! last message it carried, `s{stream}_{typing}_{presence}_{to_device}`: the
//! next sync continues the inbox from there (and acknowledges up to there),
//! and the rest from `stream`.
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3sync>.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::filter::{self, DEFAULT_TIMELINE_LIMIT, Filter};
use super::to_device::ToDeviceEvent;
use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::rooms::format::{Viewer, client_events_raw, stripped_state};
use crate::rooms::push;
use crate::rooms::unread;
use crate::rooms::visibility::Visibility;
use crate::storage::{CurrentStateEntry, StoredEvent, TokenOwner};

/// Spec-less but usual: a long poll waits at most this long.
pub(crate) const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Heroes in a room summary.
const MAX_HEROES: usize = 5;

/// A position in the streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub stream: i64,
    pub typing: i64,
    pub presence: i64,
    /// Where the to-device inbox was delivered up to: `stream`, or before it
    /// when the answer carried only a page of the inbox.
    pub to_device: i64,
}

impl Token {
    pub fn encode(&self) -> String {
        if self.to_device < self.stream {
            format!("s{}_{}_{}_{}", self.stream, self.typing, self.presence, self.to_device)
        } else {
            format!("s{}_{}_{}", self.stream, self.typing, self.presence)
        }
    }

    /// The positions now.
    fn now(app: &App) -> Token {
        let stream = app.current_stream_id();
        Token { stream, typing: app.typing.serial(), presence: app.presence.serial(), to_device: stream }
    }
}

/// Parses `s{stream}_{typing}_{presence}_{to_device}` (also without the
/// last part, which is then `stream`; `s{stream}_{typing}`, and `s{stream}`
/// as /messages tokens are, whose missing parts are 0). The to-device
/// position is never past `stream`.
pub fn parse_token(text: &str) -> Result<Token> {
    let invalid = || Error::InvalidParam(format!("invalid token {text:?}"));
    let rest = text.strip_prefix('s').ok_or_else(invalid)?;
    let mut parts = rest.split('_');
    let stream: i64 = parts.next().unwrap_or_default().parse().map_err(|_| invalid())?;
    let mut next_or =
        |absent: i64| parts.next().map_or(Ok(absent), |part| part.parse::<i64>().map_err(|_| invalid()));
    let typing = next_or(0)?;
    let presence = next_or(0)?;
    let to_device = next_or(stream)?;
    if to_device > stream || parts.next().is_some() {
        return Err(invalid());
    }
    Ok(Token { stream, typing, presence, to_device })
}

/// `GET /sync`.
pub async fn sync(app: &Rc<App>, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let filter = filter::from_param(app, &owner.user_id, request.query("filter"))?;
    let since = request.query("since").map(parse_token).transpose()?;
    let full_state = request.query("full_state") == Some("true");
    let timeout = match request.query("timeout") {
        Some(text) => Duration::from_millis(
            text.parse().map_err(|_| Error::InvalidParam("timeout must be an integer".into()))?,
        ),
        None => Duration::ZERO,
    }
    .min(MAX_SYNC_TIMEOUT);
    crate::rooms::presence::on_sync(app, &owner.user_id, request.query("set_presence"), timeout)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // Listen before looking, so a wake-up between the two is not lost.
        let listener = app.notifier.listen(&owner.user_id);
        let now = Token::now(app);
        let (answer, has_news) = build(app, &owner, &filter, since, now, full_state)?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if has_news || since.is_none() || left.is_zero() || full_state {
            return Ok(Response::ok_json(&answer));
        }
        let woke = smol::future::or(
            async {
                listener.await;
                true
            },
            async {
                smol::Timer::after(left).await;
                false
            },
        )
        .await;
        if !woke {
            let now = Token::now(app);
            let (answer, _) = build(app, &owner, &filter, since, now, full_state)?;
            return Ok(Response::ok_json(&answer));
        }
    }
}

/// The answer of a /sync, built as typed sections so that room events go in
/// serialised already (see [`client_events_raw`]); the other fields are JSON
/// values.
#[derive(Serialize)]
struct Answer {
    #[serde(flatten)]
    fields: Map<String, Value>,
    rooms: Rooms,
    to_device: Events<ToDeviceEvent>,
}

/// The `rooms` of the answer, by membership.
#[derive(Default, Serialize)]
struct Rooms {
    join: BTreeMap<String, JoinedRoom>,
    invite: Map<String, Value>,
    leave: BTreeMap<String, LeftRoom>,
    knock: Map<String, Value>,
}

/// `{"events": [...]}`.
#[derive(Serialize)]
struct Events<T> {
    events: Vec<T>,
}

impl<T> Events<T> {
    fn none() -> Events<T> {
        Events { events: Vec::new() }
    }
}

/// A room's `timeline`: the events, whether some were left out, and the
/// token to page back from.
#[derive(Serialize)]
struct Timeline {
    events: Vec<Box<RawValue>>,
    limited: bool,
    /// A token or null (an empty timeline); absent from a section that only
    /// carries account data.
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_batch: Option<Value>,
}

impl Timeline {
    fn of(events: Vec<Box<RawValue>>, limited: bool, first: Option<&StoredEvent>) -> Timeline {
        let prev_batch = first.map(|event| format!("s{}", event.stream_ordering - 1));
        Timeline { events, limited, prev_batch: Some(json!(prev_batch)) }
    }
}

/// A joined room's section.
#[derive(Serialize)]
struct JoinedRoom {
    account_data: Events<Value>,
    ephemeral: Events<Value>,
    state: Events<Box<RawValue>>,
    summary: Value,
    timeline: Timeline,
    unread_notifications: Value,
}

impl JoinedRoom {
    /// A section with nothing in it (for a room with only account data).
    fn empty() -> JoinedRoom {
        JoinedRoom {
            account_data: Events::none(),
            ephemeral: Events::none(),
            state: Events::none(),
            summary: json!({}),
            timeline: Timeline { events: Vec::new(), limited: false, prev_batch: None },
            unread_notifications: json!({ "notification_count": 0, "highlight_count": 0 }),
        }
    }
}

/// A left (or banned) room's section: history up to the departure.
#[derive(Serialize)]
struct LeftRoom {
    account_data: Events<Value>,
    state: Events<Value>,
    timeline: Timeline,
}

/// Builds the sync answer between `since` and `now`; the flag says whether
/// it holds anything new.
fn build(
    app: &App,
    owner: &TokenOwner,
    filter: &Filter,
    since: Option<Token>,
    now: Token,
    full_state: bool,
) -> Result<(Answer, bool)> {
    let user_id = owner.user_id.as_str();
    let since_stream = since.map(|token| token.stream);
    // The rooms and account data are read from one snapshot, with the lock
    // taken once for the few hundred reads of an initial sync; the to-device
    // part below writes (it acknowledges delivered messages).
    let (rooms, account_data) =
        app.in_snapshot(|| rooms_and_account_data(app, owner, filter, since, now, full_state))?;

    let presence = crate::rooms::presence::sync_events(
        app,
        user_id,
        since.map(|token| token.presence),
        now.presence,
        |sender| filter.presence.allows("m.presence", sender),
    )?;
    let to_device_since = since.map(|token| token.to_device);
    let e2ee = super::to_device::sync_extensions(app, owner, since_stream, to_device_since, now.stream)?;
    let next = Token { to_device: e2ee.to_device_through, ..now };
    let has_news = e2ee.has_news()
        || !presence.is_empty()
        || !rooms.join.is_empty()
        || !rooms.invite.is_empty()
        || !rooms.leave.is_empty()
        || !rooms.knock.is_empty()
        || !account_data.is_empty();
    // The lists are moved in: `json!` would copy them (it serialises every
    // value it is given).
    let mut fields = json!({
        "next_batch": next.encode(),
        "account_data": { "events": [] },
        "presence": { "events": [] },
        "device_lists": { "changed": [], "left": [] },
        "device_one_time_keys_count": {},
    });
    fields["account_data"]["events"] = Value::Array(account_data);
    fields["presence"]["events"] = Value::Array(presence);
    let to_device = e2ee.write_into(&mut fields);
    let fields = match fields {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    Ok((Answer { fields, rooms, to_device: Events { events: to_device } }, has_news))
}

/// The room sections and the global account data of the answer: the part of
/// /sync that only reads.
fn rooms_and_account_data(
    app: &App,
    owner: &TokenOwner,
    filter: &Filter,
    since: Option<Token>,
    now: Token,
    full_state: bool,
) -> Result<(Rooms, Vec<Value>)> {
    let user_id = owner.user_id.as_str();
    let viewer = Viewer { user_id, device_id: Some(&owner.device_id) };
    let since_stream = since.map(|token| token.stream);
    let mut rooms = Rooms::default();
    let Rooms { join, invite, leave, knock } = &mut rooms;

    // Rooms whose membership changed in the window: the newest change per room.
    let mut changed: Vec<StoredEvent> = Vec::new();
    if let Some(since) = since_stream {
        for event in app.storage().membership_changes(user_id, since, now.stream)? {
            changed.retain(|earlier| earlier.room_id != event.room_id);
            changed.push(event);
        }
    }
    let newly = |room_id: &str| changed.iter().any(|event| event.room_id == room_id);

    // Rooms with events or receipts in the window; the others are looked at
    // only for typing (a long-poll wake-up no longer rebuilds every room).
    let news = match since_stream {
        Some(since) => Some(app.storage().rooms_with_news(since, now.stream)?),
        None => None,
    };
    let quiet = |room_id: &str| {
        news.as_ref().is_some_and(|news| !news.contains(room_id))
            && app.typing.changed_since(room_id, since.map(|token| token.typing)).is_none()
    };

    let memberships = app.storage().rooms_of_user(user_id)?;
    for (room_id, membership) in &memberships {
        if !filter.room.allows_room(room_id) {
            continue;
        }
        match membership.as_str() {
            "join" => {
                // A room joined in this window syncs as if for the first time.
                let room_since =
                    if newly(room_id) && !joined_before_window(app, user_id, room_id, since_stream)? {
                        None
                    } else {
                        since_stream
                    };
                if room_since.is_some() && !full_state && quiet(room_id) {
                    continue;
                }
                if let Some(section) =
                    joined_room(app, viewer, filter, room_id, room_since, since, now, full_state)?
                {
                    join.insert(room_id.clone(), section);
                }
            }
            "invite" if since_stream.is_none() || newly(room_id) => {
                invite.insert(
                    room_id.clone(),
                    json!({ "invite_state": { "events": invite_state(app, room_id, user_id)? } }),
                );
            }
            "knock" if since_stream.is_none() || newly(room_id) => {
                knock.insert(
                    room_id.clone(),
                    json!({ "knock_state": { "events": invite_state(app, room_id, user_id)? } }),
                );
            }
            "leave" | "ban" => {
                let include = match since_stream {
                    Some(_) => newly(room_id),
                    None => filter.room.include_leave,
                };
                if include && !app.storage().is_forgotten(user_id, room_id)? {
                    leave
                        .insert(room_id.clone(), left_room(app, viewer, filter, room_id, since_stream, now)?);
                }
            }
            _ => {}
        }
    }

    // Invites into rooms this server is not in yet.
    for pending in app.storage().remote_invites(user_id)? {
        let new =
            since_stream.is_none_or(|since| pending.stream_id > since) && pending.stream_id <= now.stream;
        if new && filter.room.allows_room(&pending.room_id) && !invite.contains_key(&pending.room_id) {
            let events: Value = serde_json::from_str(&pending.invite_state).unwrap_or_else(|_| json!([]));
            invite.insert(pending.room_id, json!({ "invite_state": { "events": events } }));
        }
    }

    let mut account_data = Vec::new();
    let mut room_account_data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut changes = app.storage().account_data_since(user_id, since_stream.unwrap_or(0), now.stream)?;
    // Spec: push rules are exposed as `m.push_rules` account data. The stored
    // row marks when they changed; the content is always the current ruleset
    // (so server-default updates show), and an initial sync always has it.
    let is_push_rules = |room_id: &str, kind: &str| room_id.is_empty() && kind == push::ACCOUNT_DATA_TYPE;
    let has_push_rules = changes.iter().any(|(room_id, kind, _)| is_push_rules(room_id, kind));
    if has_push_rules
        || (since_stream.is_none() && filter.account_data.allows(push::ACCOUNT_DATA_TYPE, user_id))
    {
        changes.retain(|(room_id, kind, _)| !is_push_rules(room_id, kind));
        let content = push::account_data_content(&push::ruleset(app, user_id)?).to_string();
        changes.push((String::new(), push::ACCOUNT_DATA_TYPE.to_owned(), content));
    }
    for (room_id, kind, content) in changes {
        let event = json!({ "type": kind, "content": serde_json::from_str::<Value>(&content).unwrap_or_else(|_| json!({})) });
        if room_id.is_empty() {
            if filter.account_data.allows(&kind, user_id) {
                account_data.push(event);
            }
        } else if filter.room.account_data.allows(&kind, user_id) {
            room_account_data.entry(room_id).or_default().push(event);
        }
    }
    for (room_id, events) in room_account_data {
        if memberships.iter().any(|(room, membership)| *room == room_id && membership == "join") {
            join.entry(room_id).or_insert_with(JoinedRoom::empty).account_data.events = events;
        }
    }
    Ok((rooms, account_data))
}

/// Whether the user was already joined when the window began (a join event in
/// the window can be a profile change).
fn joined_before_window(app: &App, user_id: &str, room_id: &str, since: Option<i64>) -> Result<bool> {
    let Some(since) = since else { return Ok(false) };
    let events = app.storage().room_events_backwards(room_id, 0, since, 1)?;
    let Some(group) = events.first().and_then(|event| event.state_group) else { return Ok(false) };
    let Some(event_id) = app.storage().state_entry_of_group(group, "m.room.member", user_id)? else {
        return Ok(false);
    };
    let membership = app.storage().event(&event_id)?.and_then(|event| {
        event.json.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str).map(str::to_owned)
    });
    Ok(membership.as_deref() == Some("join"))
}

#[allow(clippy::too_many_arguments)]
fn joined_room(
    app: &App,
    viewer: Viewer<'_>,
    filter: &Filter,
    room_id: &str,
    room_since: Option<i64>,
    since: Option<Token>,
    now: Token,
    full_state: bool,
) -> Result<Option<JoinedRoom>> {
    let user_id = viewer.user_id;
    let limit = filter.room.timeline.limit_or(DEFAULT_TIMELINE_LIMIT);
    let visibility = Visibility::new(app, user_id);
    let (timeline, limited) =
        timeline(app, &visibility, filter, room_id, room_since.unwrap_or(0), now.stream, limit)?;
    let typing = app.typing.changed_since(room_id, since.map(|token| token.typing));
    let mut receipts =
        app.storage().receipts_since(room_id, since.map_or(0, |token| token.stream), now.stream)?;
    // Others' private receipts are not news: they would show as an empty m.receipt.
    receipts.retain(|receipt| receipt.receipt_type != "m.read.private" || receipt.user_id == user_id);
    let is_initial = room_since.is_none();
    if !is_initial && timeline.is_empty() && typing.is_none() && receipts.is_empty() && !full_state {
        return Ok(None);
    }
    let timeline_start = timeline.first().map_or(now.stream + 1, |event| event.stream_ordering);

    // The state block: state up to the start of the timeline that the client
    // has not seen (everything for an initial sync).
    let current = app.storage().current_state_entries(room_id)?;
    let in_timeline: HashSet<&str> = timeline.iter().map(|event| event.event_id.as_str()).collect();
    let lazy = filter.room.state.lazy_load_members;
    let mut wanted_members: BTreeSet<&str> = timeline.iter().map(|event| event.sender.as_str()).collect();
    wanted_members.insert(user_id);
    let mut state_events = Vec::new();
    // One query for the current state, not one per event; an incremental
    // sync only shows state newer than its token, so it loads only that.
    let state_after = match room_since {
        Some(since) if !full_state => since,
        _ => i64::MIN,
    };
    let mut loaded: HashMap<String, StoredEvent> = app
        .storage()
        .current_state_events(room_id, state_after)?
        .into_iter()
        .map(|event| (event.event_id.clone(), event))
        .collect();
    for CurrentStateEntry { kind, state_key, event_id, .. } in &current {
        if in_timeline.contains(event_id.as_str()) {
            continue;
        }
        if kind == "m.room.member" && lazy && !wanted_members.contains(state_key.as_str()) {
            continue;
        }
        let Some(event) = loaded.remove(event_id) else { continue };
        if !filter.room.state.allows_event(&event) {
            continue;
        }
        let unseen = is_initial
            || full_state
            || (room_since.is_some_and(|since| event.stream_ordering > since)
                && event.stream_ordering < timeline_start);
        if unseen && event.stream_ordering < timeline_start {
            state_events.push(event);
        }
    }
    let state_events = client_events_raw(app, &state_events, Some(viewer), false);

    let mut ephemeral = Vec::new();
    if let Some(typing) = typing {
        ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
    }
    if !receipts.is_empty() {
        ephemeral.push(receipt_event(&receipts, user_id));
    }
    let timeline_events = client_events_raw(app, &timeline, Some(viewer), false);
    let (notifications, highlights) = unread::counts(app, room_id, user_id)?;
    let membership_changed = timeline.iter().any(|event| event.kind == "m.room.member");
    Ok(Some(JoinedRoom {
        account_data: Events::none(),
        ephemeral: Events { events: ephemeral },
        state: Events { events: state_events },
        summary: if is_initial || membership_changed { summary(user_id, &current) } else { json!({}) },
        timeline: Timeline::of(timeline_events, limited, timeline.first()),
        unread_notifications: json!({ "notification_count": notifications, "highlight_count": highlights }),
    }))
}

/// The newest visible events in `(after, up_to]`, oldest first, and whether
/// more were left out. The legacy `initialSync` reads its rooms with it too.
pub(crate) fn timeline(
    app: &App,
    visibility: &Visibility<'_>,
    filter: &Filter,
    room_id: &str,
    after: i64,
    up_to: i64,
    limit: usize,
) -> Result<(Vec<StoredEvent>, bool)> {
    let mut events = Vec::new();
    let mut cursor = up_to;
    let mut limited = false;
    // Page backwards until `limit` visible events are found or the window ends.
    loop {
        let page = app.storage().room_events_backwards(room_id, after, cursor, limit + 1)?;
        let exhausted = page.len() <= limit;
        let empty = page.is_empty();
        visibility.prepare(&page);
        for event in page {
            cursor = event.stream_ordering - 1;
            if !filter.room.timeline.allows_event(&event) || !visibility.can_see(&event) {
                continue;
            }
            if events.len() == limit {
                limited = true;
                break;
            }
            events.push(event);
        }
        if limited || exhausted || empty {
            break;
        }
    }
    events.reverse();
    Ok((events, limited))
}

fn left_room(
    app: &App,
    viewer: Viewer<'_>,
    filter: &Filter,
    room_id: &str,
    since: Option<i64>,
    now: Token,
) -> Result<LeftRoom> {
    let user_id = viewer.user_id;
    // Show history up to (and including) the user's leave.
    let leave_event_id = app.storage().current_state_event(room_id, "m.room.member", user_id)?;
    let leave_event = leave_event_id.and_then(|id| app.storage().event(&id).ok().flatten());
    let up_to = leave_event.as_ref().map_or(now.stream, |event| event.stream_ordering);
    let limit = filter.room.timeline.limit_or(DEFAULT_TIMELINE_LIMIT);
    let visibility = Visibility::new(app, user_id);
    let (timeline, limited) = timeline(app, &visibility, filter, room_id, since.unwrap_or(0), up_to, limit)?;
    let events = client_events_raw(app, &timeline, Some(viewer), false);
    Ok(LeftRoom {
        account_data: Events::none(),
        state: Events::none(),
        timeline: Timeline::of(events, limited, timeline.first()),
    })
}

/// Stripped state for an invite or knock: the room's identity and the
/// user's own member event.
pub fn invite_state(app: &App, room_id: &str, user_id: &str) -> Result<Vec<Value>> {
    let events = invite_state_events(app, room_id, user_id)?;
    Ok(events
        .iter()
        .map(|event| {
            let mut stripped = stripped_state(event);
            if event.kind == "m.room.member" {
                stripped["event_id"] = json!(event.event_id);
                stripped["origin_server_ts"] = json!(event.origin_server_ts);
            }
            stripped
        })
        .collect())
}

/// The current state events that describe a room to someone invited to it
/// or knocking on it (create, join rules, name, avatar, alias, encryption,
/// topic, and `user_id`'s membership), whole: federation sends them as PDUs.
pub fn invite_state_events(app: &App, room_id: &str, user_id: &str) -> Result<Vec<StoredEvent>> {
    let keys = [
        ("m.room.create", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.avatar", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.encryption", ""),
        ("m.room.topic", ""),
        ("m.room.member", user_id),
    ];
    let mut events = Vec::new();
    for (kind, state_key) in keys {
        // Each lookup is its own statement: the storage is borrowed once at a time.
        let event_id = app.storage().current_state_event(room_id, kind, state_key)?;
        if let Some(event_id) = event_id {
            let event = app.storage().event(&event_id)?;
            events.extend(event);
        }
    }
    Ok(events)
}

fn receipt_event(receipts: &[crate::storage::Receipt], user_id: &str) -> Value {
    let mut content = Map::new();
    for receipt in receipts {
        // Private receipts go to their owner only.
        if receipt.receipt_type == "m.read.private" && receipt.user_id != user_id {
            continue;
        }
        let mut entry = json!({ "ts": receipt.ts });
        if !receipt.thread_id.is_empty() {
            entry["thread_id"] = json!(receipt.thread_id);
        }
        let by_event = content.entry(receipt.event_id.clone()).or_insert_with(|| json!({}));
        by_event
            .as_object_mut()
            .map(|types| types.entry(receipt.receipt_type.clone()).or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
            .map(|users| users.insert(receipt.user_id.clone(), entry));
    }
    let mut event = json!({ "type": "m.receipt" });
    event["content"] = Value::Object(content);
    event
}

/// `m.heroes` and member counts, from the room's current state.
fn summary(user_id: &str, current: &[CurrentStateEntry]) -> Value {
    let with = |wanted: &str| -> Vec<&str> {
        current
            .iter()
            .filter(|entry| entry.kind == "m.room.member" && entry.membership.as_deref() == Some(wanted))
            .map(|entry| entry.state_key.as_str())
            .collect()
    };
    let (joined, invited) = (with("join"), with("invite"));
    let mut summary = json!({
        "m.joined_member_count": joined.len(),
        "m.invited_member_count": invited.len(),
    });
    let named = current.iter().any(|entry| {
        matches!(entry.kind.as_str(), "m.room.name" | "m.room.canonical_alias") && entry.state_key.is_empty()
    });
    if !named {
        let heroes: Vec<&str> = joined
            .iter()
            .chain(invited.iter())
            .copied()
            .filter(|member| *member != user_id)
            .take(MAX_HEROES)
            .collect();
        summary["m.heroes"] = json!(heroes);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_a_to_device_position_only_when_it_lags() {
        let token = Token { stream: 40, typing: 7, presence: 9, to_device: 40 };
        assert_eq!(token.encode(), "s40_7_9");
        assert_eq!(parse_token("s40_7_9").unwrap(), token);
        let paged = Token { to_device: 31, ..token };
        assert_eq!(paged.encode(), "s40_7_9_31");
        assert_eq!(parse_token("s40_7_9_31").unwrap(), paged);
        // Older and shorter tokens.
        assert_eq!(parse_token("s40").unwrap(), Token { stream: 40, typing: 0, presence: 0, to_device: 40 });
        assert_eq!(parse_token("s-3").unwrap().to_device, -3);
        for junk in ["s40_7_9_41", "s40_7_9_31_1", "s40_7_9_x", "40_7_9", "s", "s40__9"] {
            assert!(parse_token(junk).is_err(), "{junk}");
        }
    }
}
