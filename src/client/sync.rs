//! `/sync`: since tokens, long polling, filters, and the joined, invited,
//! knocked and left room sections (without ignored users' messages and
//! invites), lazy-loaded members, and the presence of newly met members.
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
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_events_raw};
use crate::rooms::invites::{invite_state, invite_state_events, strip_invite_state};
use crate::rooms::lazy_members::LazyKey;
use crate::rooms::push;
use crate::rooms::timeline::MAX_SCANNED_EVENTS;
use crate::rooms::unread;
use crate::rooms::visibility::Visibility;
use crate::storage::{CurrentStateEntry, StoredEvent, TokenOwner};

/// Spec-less but usual: a long poll waits at most this long.
pub(crate) const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Heroes in a room summary.
const MAX_HEROES: usize = 5;
/// As Synapse: a timeline is `limited` when its window holds more than this
/// many times the limit (at least [`MIN_LOOKED_AT`]) in stored events, even
/// if the filter keeps fewer than the limit of them; the client then knows
/// there is history to page back into.
const LOOK_FACTOR: usize = 2;
const MIN_LOOKED_AT: usize = 10;
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
    crate::rooms::presence::on_sync(&app.engine, &owner.user_id, request.query("set_presence"), timeout)?;
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
        let waiting = app.metrics.sync_waiting();
        let woke = crate::rooms::notify::woken_within(listener, left).await;
        drop(waiting);
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
    /// Counts per thread root, when the filter asks for them and a thread
    /// has anything unread.
    #[serde(skip_serializing_if = "Option::is_none")]
    unread_thread_notifications: Option<Value>,
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
            unread_thread_notifications: None,
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
    let (rooms, account_data, newly_met) =
        app.in_snapshot(|| rooms_and_account_data(app, owner, filter, since, now, full_state))?;

    let presence = crate::rooms::presence::sync_events(
        app,
        user_id,
        since.map(|token| token.presence),
        now.presence,
        &newly_met,
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

/// The room sections and the global account data of the answer (the part
/// of /sync that only reads), and the users the syncing user newly shares a
/// room with in the window (their presence is news).
fn rooms_and_account_data(
    app: &App,
    owner: &TokenOwner,
    filter: &Filter,
    since: Option<Token>,
    now: Token,
    full_state: bool,
) -> Result<(Rooms, Vec<Value>, BTreeSet<String>)> {
    let user_id = owner.user_id.as_str();
    // Spec: an ignored user's events and invites are not sent (read once
    // for all rooms).
    let ignored = Rc::new(crate::rooms::visibility::ignored_users(app, user_id)?);
    let mut newly_met = BTreeSet::new();
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
    // One reader of history visibility for every room; an initial sync,
    // which shows every joined room, tells it at once which rooms the user
    // is in and reads what their history allows in one query.
    let visibility = Visibility::with_ignored(app, user_id, Rc::clone(&ignored));
    if since_stream.is_none() {
        let joined: Vec<&str> = memberships
            .iter()
            .filter(|(room_id, membership)| membership == "join" && filter.room.allows_room(room_id))
            .map(|(room_id, _)| room_id.as_str())
            .collect();
        visibility.joined_now(&joined);
    }
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
                let section = joined_room(
                    app,
                    viewer,
                    filter,
                    room_id,
                    (room_since, since, now),
                    full_state,
                    &visibility,
                    &mut newly_met,
                )?;
                if let Some(section) = section {
                    join.insert(room_id.clone(), section);
                }
            }
            "invite" if since_stream.is_none() || newly(room_id) => {
                let events = invite_state_events(app, room_id, user_id)?;
                let from_ignored = events.iter().any(|event| {
                    event.kind == "m.room.member"
                        && event.state_key.as_deref() == Some(user_id)
                        && ignored.contains(&event.sender)
                });
                if !from_ignored {
                    invite.insert(
                        room_id.clone(),
                        json!({ "invite_state": { "events": strip_invite_state(&events) } }),
                    );
                }
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
                    let section = left_room(app, viewer, filter, room_id, since_stream, now, &ignored)?;
                    leave.insert(room_id.clone(), section);
                }
            }
            _ => {}
        }
    }

    // Invites into rooms this server is not in yet.
    for pending in app.storage().remote_invites(user_id)? {
        let new =
            since_stream.is_none_or(|since| pending.stream_id > since) && pending.stream_id <= now.stream;
        let wanted = filter.room.allows_room(&pending.room_id) && !ignored.contains(&pending.inviter);
        if new && wanted && !invite.contains_key(&pending.room_id) {
            let events: Value = serde_json::from_str(&pending.invite_state).unwrap_or_else(|_| json!([]));
            invite.insert(pending.room_id, json!({ "invite_state": { "events": events } }));
        }
    }

    let mut account_data = Vec::new();
    let mut room_account_data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let initial_push_rules = filter.account_data.allows(push::ACCOUNT_DATA_TYPE, user_id);
    let changes = account_data_changes(app, user_id, since_stream, now.stream, initial_push_rules)?;
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
    Ok((rooms, account_data, newly_met))
}

/// Account data changed in `(since, now]` as `(room_id, kind, content)`
/// (`room_id` empty for global), everything without `since`.
/// Spec: push rules are exposed as `m.push_rules` account data. The stored
/// row marks when they changed; the content is always the current ruleset
/// (so server-default updates show), and an initial sync has it when
/// `initial_push_rules` says so.
pub(crate) fn account_data_changes(
    app: &App,
    user_id: &str,
    since: Option<i64>,
    now: i64,
    initial_push_rules: bool,
) -> Result<Vec<(String, String, String)>> {
    let mut changes = app.storage().account_data_since(user_id, since.unwrap_or(0), now)?;
    let is_push_rules = |room_id: &str, kind: &str| room_id.is_empty() && kind == push::ACCOUNT_DATA_TYPE;
    let has_push_rules = changes.iter().any(|(room_id, kind, _)| is_push_rules(room_id, kind));
    if has_push_rules || (since.is_none() && initial_push_rules) {
        changes.retain(|(room_id, kind, _)| !is_push_rules(room_id, kind));
        let content = push::account_data_content(&push::ruleset(app, user_id)?).to_string();
        changes.push((String::new(), push::ACCOUNT_DATA_TYPE.to_owned(), content));
    }
    Ok(changes)
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

/// A joined room's section, or none when nothing in it is news. The window
/// is `(room_since, since, now)`: the room's own start (none when it shows
/// for the first time), the sync's token and now. Adds to `newly_met` the
/// users the syncing user newly shares the room with.
#[allow(clippy::too_many_arguments)]
fn joined_room(
    app: &App,
    viewer: Viewer<'_>,
    filter: &Filter,
    room_id: &str,
    (room_since, since, now): (Option<i64>, Option<Token>, Token),
    full_state: bool,
    visibility: &Visibility<'_>,
    newly_met: &mut BTreeSet<String>,
) -> Result<Option<JoinedRoom>> {
    let user_id = viewer.user_id;
    let limit = filter.room.timeline.limit_or(DEFAULT_TIMELINE_LIMIT);
    // A room shown for the first time starts before everything, history
    // fetched from other servers (at negative positions) included.
    let after = room_since.unwrap_or(i64::MIN);
    let (timeline, limited) = timeline(app, visibility, filter, room_id, after, now.stream, limit)?;
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
    let in_timeline: HashSet<&str> = timeline.iter().map(|event| event.event_id.as_str()).collect();
    let lazy = filter.room.state.lazy_load_members;
    let mut wanted_members: BTreeSet<&str> = timeline.iter().map(|event| event.sender.as_str()).collect();
    wanted_members.insert(user_id);
    let membership_changed = timeline.iter().any(|event| event.kind == "m.room.member");
    // The whole current state for a first view, a full state or a new
    // summary (a membership changed); otherwise only what can show: the
    // entries changed since the token, and the timeline senders' members
    // when they load lazily. A message in a room of 50,000 members then
    // costs an incremental sync what changed, not the room.
    let whole = is_initial || full_state || membership_changed;
    let current = match room_since {
        Some(since) if !whole => {
            let senders: Vec<&str> = if lazy { wanted_members.iter().copied().collect() } else { Vec::new() };
            let mut entries = app.storage().current_state_entries_since(room_id, since)?;
            entries.extend(app.storage().current_member_entries(room_id, &senders)?);
            entries.sort_by(|a, b| (&a.kind, &a.state_key).cmp(&(&b.kind, &b.state_key)));
            entries.dedup_by(|a, b| (&a.kind, &a.state_key) == (&b.kind, &b.state_key));
            entries
        }
        _ => app.storage().current_state_entries(room_id)?,
    };
    // Spec (lazy-loading room members): an incremental sync sends the
    // membership of the timeline's senders that the device may not have,
    // whenever it was set (all of them with `include_redundant_members`).
    let lazy_key: LazyKey =
        (user_id.to_owned(), viewer.device_id.unwrap_or_default().to_owned(), room_id.to_owned());
    let redundant = filter.room.state.include_redundant_members;
    let needs_member = |member: &str, event_id: &str| {
        lazy && !is_initial
            && !full_state
            && wanted_members.contains(member)
            && (redundant || app.lazy_members.has(&lazy_key, member, event_id) != Some(true))
    };
    let mut state_events = Vec::new();
    // One query for the current state, not one per event; an incremental
    // sync only shows state newer than its token, so it loads only that.
    let state_after = match room_since {
        Some(since) if !full_state => since,
        _ => i64::MIN,
    };
    // The state events in the timeline are not shown again: not read either.
    let timeline_ids: Vec<&str> = in_timeline.iter().copied().collect();
    // Only what can show is read: with members loaded lazily, the members
    // of the timeline's senders and no other (a first lazy view of a room
    // of 50,000 members reads a few member events, not 50,000).
    let loaded_events = if whole && !lazy {
        app.storage().current_state_events_except(room_id, state_after, &timeline_ids)?
    } else {
        let ids: Vec<&str> = current
            .iter()
            .filter(|entry| {
                entry.kind != "m.room.member" || !lazy || wanted_members.contains(entry.state_key.as_str())
            })
            .map(|entry| entry.event_id.as_str())
            .filter(|event_id| !in_timeline.contains(event_id))
            .collect();
        let mut events = app.storage().events_by_id(&ids)?;
        events.retain(|event| event.stream_ordering > state_after);
        events
    };
    let mut loaded: HashMap<String, StoredEvent> =
        loaded_events.into_iter().map(|event| (event.event_id.clone(), event)).collect();
    for CurrentStateEntry { kind, state_key, event_id, .. } in &current {
        if in_timeline.contains(event_id.as_str()) {
            continue;
        }
        let is_member = kind == "m.room.member";
        if is_member && lazy && !wanted_members.contains(state_key.as_str()) {
            continue;
        }
        let sender_member = is_member && needs_member(state_key, event_id);
        let event = match loaded.remove(event_id) {
            Some(event) => event,
            // At most one per timeline sender the device may lack.
            None if sender_member => match app.storage().event(event_id)? {
                Some(event) => event,
                None => continue,
            },
            None => continue,
        };
        if !filter.room.state.allows_event(&event) {
            continue;
        }
        // The whole state for a first view (wherever its events sit: a room
        // joined over federation has history before them); otherwise what
        // changed since the token, up to the timeline.
        let unseen = is_initial
            || full_state
            || sender_member
            || (room_since.is_some_and(|since| event.stream_ordering > since)
                && event.stream_ordering < timeline_start);
        if unseen {
            state_events.push(event);
        }
    }
    if lazy {
        if is_initial {
            app.lazy_members.reset(&lazy_key);
        }
        let members =
            state_events.iter().chain(timeline.iter()).filter(|event| event.kind == "m.room.member");
        app.lazy_members.record(
            &lazy_key,
            members.filter_map(|event| Some((event.state_key.as_deref()?, event.event_id.as_str()))),
        );
    }
    let state_events = client_events_raw(app, &state_events, Some(viewer), false);

    let mut ephemeral = Vec::new();
    if let Some(typing) = typing {
        ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
    }
    if !receipts.is_empty() {
        ephemeral.push(crate::rooms::format::receipt_event(&receipts, user_id));
    }
    let timeline_events = client_events_raw(app, &timeline, Some(viewer), false);
    let counts = unread::room_counts(app, room_id, user_id)?;
    // Spec: with per-thread counts asked for, the room's counts are the main
    // timeline's only.
    let per_thread = filter.room.timeline.wants_thread_counts();
    let (notifications, highlights) = if per_thread { counts.main } else { counts.total() };
    let thread_counts = (per_thread && !counts.threads.is_empty()).then(|| {
        let threads = counts.threads.iter().map(|thread| {
            let counts =
                json!({ "notification_count": thread.notifications, "highlight_count": thread.highlights });
            (thread.thread_id.clone(), counts)
        });
        Value::Object(threads.collect())
    });
    // Spec (presence): the presence of users newly met in the window is news.
    if since.is_some() {
        let joined = |entry: &&CurrentStateEntry| {
            entry.kind == "m.room.member" && entry.membership.as_deref() == Some("join")
        };
        if is_initial {
            newly_met.extend(current.iter().filter(joined).map(|entry| entry.state_key.clone()));
        } else if membership_changed {
            newly_met.extend(
                timeline
                    .iter()
                    .filter(|event| event.kind == "m.room.member" && membership_of(event) == Some("join"))
                    .filter_map(|event| event.state_key.clone()),
            );
        }
        newly_met.remove(user_id);
    }
    Ok(Some(JoinedRoom {
        account_data: Events::none(),
        ephemeral: Events { events: ephemeral },
        state: Events { events: state_events },
        summary: if is_initial || membership_changed { summary(user_id, &current) } else { json!({}) },
        timeline: Timeline::of(timeline_events, limited, timeline.first()),
        unread_notifications: json!({ "notification_count": notifications, "highlight_count": highlights }),
        unread_thread_notifications: thread_counts,
    }))
}

/// The `membership` of a member event's content.
fn membership_of(event: &StoredEvent) -> Option<&str> {
    event.json.get("content").and_then(|content| content.get("membership")).and_then(Value::as_str)
}

/// The newest visible events in `(after, up_to]`, oldest first, and whether
/// more were left out (as Synapse says it: more visible events than the
/// limit, or more stored events in the window than [`LOOK_FACTOR`] times
/// it). Reads at most [`MAX_SCANNED_EVENTS`] stored events.
/// The legacy `initialSync` reads its rooms with it too.
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
    let mut scanned = 0;
    // Page backwards until `limit` visible events are found or the window ends.
    loop {
        let page = app.storage().room_events_backwards(room_id, after, cursor, limit + 1)?;
        let exhausted = page.len() <= limit;
        let empty = page.is_empty();
        visibility.prepare(&page);
        for event in page {
            cursor = event.stream_ordering - 1;
            scanned += 1;
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
        // A long stretch the user may not see ends the look early.
        if scanned >= MAX_SCANNED_EVENTS {
            limited = true;
            break;
        }
    }
    if scanned > limit.saturating_mul(LOOK_FACTOR).max(MIN_LOOKED_AT) {
        limited = true;
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
    ignored: &Rc<HashSet<String>>,
) -> Result<LeftRoom> {
    let user_id = viewer.user_id;
    // Show history up to (and including) the user's leave.
    let leave_event_id = app.storage().current_state_event(room_id, "m.room.member", user_id)?;
    let leave_event = leave_event_id.and_then(|id| app.storage().event(&id).ok().flatten());
    let up_to = leave_event.as_ref().map_or(now.stream, |event| event.stream_ordering);
    let limit = filter.room.timeline.limit_or(DEFAULT_TIMELINE_LIMIT);
    let visibility = Visibility::with_ignored(app, user_id, Rc::clone(ignored));
    let after = since.unwrap_or(i64::MIN);
    let (timeline, limited) = timeline(app, &visibility, filter, room_id, after, up_to, limit)?;
    let events = client_events_raw(app, &timeline, Some(viewer), false);
    Ok(LeftRoom {
        account_data: Events::none(),
        state: Events::none(),
        timeline: Timeline::of(events, limited, timeline.first()),
    })
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
