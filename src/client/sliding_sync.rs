//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`:
//! Simplified Sliding Sync (MSC4186), the sync of Element X and every client
//! built on matrix-rust-sdk. The lists, filters and per-connection memory
//! are the room engine's (`rooms/sliding_sync/`); this file reads the
//! request, long-polls like /sync, builds each room's section with /sync's
//! timeline reader, and adds the extensions (to-device, e2ee, account data,
//! receipts, typing).
//!
//! Spec: <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md>,
//! the extensions: MSC3885 (to-device), MSC3884 (e2ee), MSC3959 (account
//! data), MSC3960 (receipts), MSC3961 (typing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::filter::Filter;
use super::sync::{MAX_SYNC_TIMEOUT, account_data_changes};
use super::to_device::{MAX_TO_DEVICE_PER_SYNC, MAX_TO_DEVICE_SYNC_BYTES, ToDeviceEvent};
use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_events_raw, receipt_event};
use crate::rooms::invites::{invite_state_events, strip_invite_state};
use crate::rooms::sliding_sync::{
    ConnectionKey, ConnectionState, Facts, KnownRoom, RoomEntry, ScopedConfig, SentRoom, SyncRequest, Wants,
    passes, sort_by_recency, space_children, user_rooms, window_indexes,
};
use crate::rooms::visibility::Visibility;
use crate::rooms::{e2ee, unread};
use crate::storage::{CurrentStateEntry, InboxPage, StoredEvent, TokenOwner};

/// Heroes in a room's section (as /sync's summary).
const MAX_HEROES: usize = 5;
/// Room IDs the `ops` of one answer name at most (100 lists of 16
/// overlapping ranges over every room would otherwise repeat each room
/// 1,600 times); the rest of the ops are cut short, the `count`s stay.
const MAX_OPS_ROOM_IDS: usize = 10_000;
/// Past this many wanted state events a room's whole current state is read
/// in one query rather than event by event.
const LOAD_STATE_AT_ONCE: usize = 32;

/// `POST .../org.matrix.simplified_msc3575/sync`.
pub async fn sync(app: &Rc<App>, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body: SyncRequest = request.json()?;
    body.check()?;
    let pos = request.query("pos").or(body.pos.as_deref()).map(str::to_owned);
    let timeout_ms = match request.query("timeout") {
        Some(text) => text.parse().map_err(|_| Error::InvalidParam("timeout must be an integer".into()))?,
        None => body.timeout.unwrap_or(0),
    };
    let timeout = Duration::from_millis(timeout_ms).min(MAX_SYNC_TIMEOUT);
    crate::rooms::presence::on_sync(&app.engine, &owner.user_id, request.query("set_presence"), timeout)?;
    let key: ConnectionKey =
        (owner.user_id.clone(), owner.device_id.clone(), body.conn_id.clone().unwrap_or_default());
    let previous = pos.as_deref().map(|pos| app.sliding_sync.at(&key, pos)).transpose()?;
    let deadline = Instant::now() + timeout;
    loop {
        // Listen before looking, so a wake-up between the two is not lost.
        let listener = app.notifier.listen(&owner.user_id);
        let (mut answer, state, has_news) = build(app, &owner, &body, previous.as_deref())?;
        let left = deadline.saturating_duration_since(Instant::now());
        if has_news || previous.is_none() || left.is_zero() {
            answer.pos = app.sliding_sync.advance(&key, pos.as_deref(), state);
            return Ok(Response::ok_json(&answer));
        }
        // Woken or not, the next turn answers (at the deadline, with nothing).
        let waiting = app.metrics.sync_waiting();
        crate::rooms::notify::woken_within(listener, left).await;
        drop(waiting);
    }
}

/// The answer.
#[derive(Serialize)]
struct Answer {
    /// The request's `txn_id`, echoed (matrix-rust-sdk checks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    txn_id: Option<String>,
    pos: String,
    lists: BTreeMap<String, ListAnswer>,
    rooms: BTreeMap<String, RoomAnswer>,
    extensions: Map<String, Value>,
}

/// A list's size and its windows' rooms (the `SYNC` operations Synapse
/// sends; clients of the simplified API read only `count`).
#[derive(Serialize)]
struct ListAnswer {
    count: usize,
    ops: Vec<Value>,
}

/// A room's section; absent fields are unchanged (or, with `initial`, unset).
#[derive(Default, Serialize)]
struct RoomAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heroes: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initial: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_dm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_state: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    required_state: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timeline: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limited: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unstable_expanded_timeline: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_live: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invited_count: Option<usize>,
    notification_count: u64,
    highlight_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bump_stamp: Option<i64>,
}

/// A room the request selects: what it is, the combined config, and the
/// lists that found it.
struct Selected<'a> {
    entry: &'a RoomEntry,
    wants: Wants,
    lists: Vec<&'a str>,
    subscribed: bool,
}

/// The stream positions an answer goes up to.
#[derive(Clone, Copy)]
struct Now {
    stream: i64,
    typing: i64,
}

/// Builds the answer from `previous` (none: a fresh connection), the state
/// the connection is in after it, and whether it holds news.
fn build(
    app: &App,
    owner: &TokenOwner,
    body: &SyncRequest,
    previous: Option<&ConnectionState>,
) -> Result<(Answer, ConnectionState, bool)> {
    let now = Now { stream: app.current_stream_id(), typing: app.typing.serial() };
    let since = previous.map(|state| state.stream);
    let (lists, rooms, selected_rooms, state) =
        app.in_snapshot(|| rooms_and_lists(app, owner, body, previous, now))?;
    let mut extensions = Map::new();
    let mut news = !rooms.is_empty();
    news |= to_device(app, owner, body, now, &mut extensions)?;
    news |= app.in_snapshot(|| {
        scoped_extensions(
            app,
            owner,
            body,
            since,
            previous.map(|state| state.typing),
            now,
            &selected_rooms,
            &mut extensions,
        )
    })?;
    let answer = Answer { txn_id: body.txn_id.clone(), pos: String::new(), lists, rooms, extensions };
    Ok((answer, state, news))
}

/// The selected rooms with the lists (and subscription) that chose them;
/// `initial` holds the rooms sent in full in this answer.
struct Selection {
    scope: Vec<(String, Vec<String>, bool)>,
    initial: HashSet<String>,
    timelines: HashMap<String, HashSet<String>>,
}

type Built = (BTreeMap<String, ListAnswer>, BTreeMap<String, RoomAnswer>, Selection, ConnectionState);

fn rooms_and_lists(
    app: &App,
    owner: &TokenOwner,
    body: &SyncRequest,
    previous: Option<&ConnectionState>,
    now: Now,
) -> Result<Built> {
    let user_id = owner.user_id.as_str();
    let since = previous.map(|state| state.stream);
    let facts = Facts::needed_by(body.lists.values().map(|list| &list.filters));
    // Rooms with events or receipts since the previous answer (one query):
    // the others are only looked at when their config grew, and keep their
    // bump stamps.
    let news = match since {
        Some(since) => Some(app.storage().rooms_with_news(since, now.stream)?),
        None => None,
    };
    let known = previous.zip(news.as_ref()).map(|(previous, news)| (previous.known.as_ref(), news));
    // A connection for the extensions alone (the SDK's encryption sync) needs no rooms.
    let entries = if body.lists.is_empty() && body.room_subscriptions.is_empty() {
        Vec::new()
    } else {
        user_rooms(app, user_id, since, now.stream, facts, known)?
    };
    let known: HashMap<String, KnownRoom> = entries
        .iter()
        .filter(|entry| entry.membership == "join")
        .map(|entry| (entry.room_id.clone(), KnownRoom::of(entry, facts)))
        .collect();

    let mut selected: BTreeMap<&str, Selected<'_>> = BTreeMap::new();
    let mut lists = BTreeMap::new();
    let mut ops_budget = MAX_OPS_ROOM_IDS;
    let spaces = body.lists.values().filter_map(|list| list.filters.spaces.as_ref()).flatten();
    let children_of = space_children(app, user_id, spaces)?;
    for (name, list) in &body.lists {
        let children: HashSet<String> = list
            .filters
            .spaces
            .iter()
            .flatten()
            .filter_map(|space| children_of.get(space))
            .flatten()
            .cloned()
            .collect();
        let mut matching: Vec<&RoomEntry> =
            entries.iter().filter(|entry| passes(&list.filters, entry, &children)).collect();
        sort_by_recency(&mut matching);
        let windows = list.windows();
        let mut ops = Vec::new();
        for (range, (start, end)) in window_indexes(&windows, matching.len()).into_iter().zip(windows) {
            let room_ids: Vec<&str> =
                matching[range.clone()].iter().take(ops_budget).map(|entry| entry.room_id.as_str()).collect();
            ops_budget -= room_ids.len();
            ops.push(json!({ "op": "SYNC", "range": [start, end], "room_ids": room_ids }));
            for entry in &matching[range] {
                let chosen = selected.entry(&entry.room_id).or_insert_with(|| Selected {
                    entry,
                    wants: Wants::default(),
                    lists: Vec::new(),
                    subscribed: false,
                });
                chosen.wants.add(&list.room_config());
                if !chosen.lists.contains(&name.as_str()) {
                    chosen.lists.push(name);
                }
            }
        }
        lists.insert(name.clone(), ListAnswer { count: matching.len(), ops });
    }
    // Subscriptions to rooms the user is not in (or invited to) are ignored.
    for (room_id, config) in &body.room_subscriptions {
        let Some(entry) = entries.iter().find(|entry| entry.room_id == *room_id) else { continue };
        let chosen = selected.entry(&entry.room_id).or_insert_with(|| Selected {
            entry,
            wants: Wants::default(),
            lists: Vec::new(),
            subscribed: false,
        });
        chosen.wants.add(config);
        chosen.subscribed = true;
    }

    let ignored = Rc::new(crate::rooms::visibility::ignored_users(app, user_id)?);
    let mut state = ConnectionState {
        stream: now.stream,
        typing: now.typing,
        rooms: previous.map(|previous| previous.rooms.clone()).unwrap_or_default(),
        known: Rc::new(known),
    };
    let mut rooms = BTreeMap::new();
    let mut selection = Selection { scope: Vec::new(), initial: HashSet::new(), timelines: HashMap::new() };
    for (room_id, chosen) in selected {
        let sent = previous.and_then(|previous| previous.rooms.get(room_id)).map(Rc::as_ref);
        // Quiet: sent in the previous answer, and nothing arrived in it since.
        let quiet = news.as_ref().is_some_and(|news| !news.contains(room_id))
            && sent.is_some_and(|sent| Some(sent.up_to) == since);
        let built = room(app, owner, chosen.entry, &chosen.wants, sent, (since, now, quiet), &ignored)?;
        let lists: Vec<String> = chosen.lists.iter().map(|name| (*name).to_owned()).collect();
        selection.scope.push((room_id.to_owned(), lists, chosen.subscribed));
        if let Some((answer, timeline_ids)) = built.answer {
            if answer.initial == Some(true) {
                selection.initial.insert(room_id.to_owned());
            }
            selection.timelines.insert(room_id.to_owned(), timeline_ids);
            rooms.insert(room_id.to_owned(), answer);
        }
        state.rooms.insert(room_id.to_owned(), Rc::new(built.sent));
    }
    // Rooms the user is no longer in are forgotten (a return is sent anew
    // anyway), so the memory stays as large as the user's rooms.
    if !(body.lists.is_empty() && body.room_subscriptions.is_empty()) {
        let current: HashSet<&str> = entries.iter().map(|entry| entry.room_id.as_str()).collect();
        state.rooms.retain(|room_id, _| current.contains(room_id.as_str()));
    }
    Ok((lists, rooms, selection, state))
}

/// What [`room`] makes: the room's section if it has news (with its
/// timeline's event IDs), and what the connection has been sent of it.
struct BuiltRoom {
    answer: Option<(RoomAnswer, HashSet<String>)>,
    sent: SentRoom,
}

/// One room's section, from what the connection was sent of it before;
/// `quiet` says no event or receipt arrived in it since the previous answer.
fn room(
    app: &App,
    owner: &TokenOwner,
    entry: &RoomEntry,
    wants: &Wants,
    sent: Option<&SentRoom>,
    (since, now, quiet): (Option<i64>, Now, bool),
    ignored: &Rc<HashSet<String>>,
) -> Result<BuiltRoom> {
    let user_id = owner.user_id.as_str();
    let room_id = entry.room_id.as_str();
    // A room never sent, or sent under another membership, is sent anew.
    let sent = sent.filter(|sent| sent.membership == entry.membership);
    let initial = sent.is_none();
    let mut next = SentRoom {
        up_to: now.stream,
        wants: wants.clone(),
        lazy_members: sent.map(|sent| sent.lazy_members.clone()).unwrap_or_default(),
        membership: entry.membership.clone(),
        is_dm: entry.is_dm,
    };
    // MSC4186: `is_dm` is sent again when `m.direct` changes it.
    let dm_changed = sent.is_some_and(|sent| sent.is_dm != entry.is_dm);
    let is_dm = if dm_changed { Some(entry.is_dm) } else { entry.is_dm.then_some(true) };
    // Sent already under the same config, and nothing happened in it since.
    let same_config = sent.is_some_and(|sent| sent.wants == *wants);
    if same_config && quiet && !dm_changed {
        return Ok(BuiltRoom { answer: None, sent: next });
    }
    // History fetched from other servers sits at negative positions; the
    // field is unsigned (ruma reads it as `UInt`), so those count as 0.
    let bump_stamp = (entry.bump_stamp != i64::MIN).then_some(entry.bump_stamp.max(0));
    if matches!(entry.membership.as_str(), "invite" | "knock") {
        if !initial {
            return Ok(BuiltRoom { answer: None, sent: next });
        }
        let invite_state = match &entry.remote_invite_state {
            Some(text) => serde_json::from_str(text).unwrap_or_else(|_| json!([])),
            None => json!(strip_invite_state(&invite_state_events(app, room_id, user_id)?)),
        };
        let answer = RoomAnswer {
            initial: Some(true),
            is_dm,
            membership: Some(entry.membership.clone()),
            invite_state: Some(invite_state),
            bump_stamp,
            ..RoomAnswer::default()
        };
        return Ok(BuiltRoom { answer: Some((answer, HashSet::new())), sent: next });
    }

    let viewer = Viewer { user_id, device_id: Some(&owner.device_id) };
    // Joined, or left or banned (history up to the departure).
    let current = app.storage().current_state_entries(room_id)?;
    let own_event = current.iter().find(|entry| entry.kind == "m.room.member" && entry.state_key == user_id);
    let own_event = match own_event {
        Some(own) if entry.membership != "join" => app.storage().event(&own.event_id)?,
        _ => None,
    };
    let up_to = match (entry.membership.as_str(), &own_event) {
        ("join", _) | (_, None) => now.stream,
        (_, Some(own)) => own.stream_ordering,
    };
    if let Some(own) = own_event.as_ref().filter(|_| entry.membership != "join") {
        // A room left without having been joined (an invite rejected, a
        // knock withdrawn, a ban before joining) shows nothing of the room
        // but the user's own membership (MSC4186 "Invite/knock/rejections").
        if !was_joined_before(app, own)? {
            let answer = RoomAnswer {
                initial: Some(true),
                membership: Some(entry.membership.clone()),
                required_state: client_events_raw(app, std::slice::from_ref(own), Some(viewer), false),
                bump_stamp,
                ..RoomAnswer::default()
            };
            return Ok(BuiltRoom { answer: initial.then_some((answer, HashSet::new())), sent: next });
        }
    }
    let expanded = sent.is_some_and(|sent| wants.timeline_limit > sent.wants.timeline_limit);
    let after = match sent {
        Some(sent) if !expanded => sent.up_to,
        _ => i64::MIN,
    };
    let visibility = Visibility::with_ignored(app, user_id, Rc::clone(ignored));
    let (timeline, limited, new_events) = if wants.timeline_limit > 0 {
        let (timeline, limited) = super::sync::timeline(
            app,
            &visibility,
            &Filter::default(),
            room_id,
            after,
            up_to,
            wants.timeline_limit,
        )?;
        let new = !timeline.is_empty();
        (timeline, limited, new)
    } else {
        let new = sent.is_some_and(|sent| sent.up_to < up_to)
            && app.storage().room_has_events_between(
                room_id,
                sent.map_or(i64::MIN, |sent| sent.up_to),
                up_to,
            )?;
        (Vec::new(), false, new)
    };

    // State: all that is wanted for a first view or a changed config,
    // otherwise what changed since the room was last sent.
    let config_changed = sent.is_some_and(|sent| sent.wants.required_state != wants.required_state);
    let changed_since = match sent {
        Some(sent) if !config_changed => Some(sent.up_to),
        _ => None,
    };
    let changed_kinds: BTreeSet<String> = match sent {
        Some(sent) => app
            .storage()
            .current_state_events(room_id, sent.up_to)?
            .into_iter()
            .filter(|event| event.stream_ordering <= up_to)
            .map(|event| event.kind)
            .collect(),
        None => BTreeSet::new(),
    };
    let visible_entries: Vec<&CurrentStateEntry> =
        current.iter().filter(|state| wants.wants_state(&state.kind, &state.state_key, user_id)).collect();
    let mut state_events = load_state(app, room_id, &visible_entries, changed_since, up_to)?;
    // `$LAZY`: the members of the timeline's senders and targets the
    // connection may not have. A member event in the timeline is sent in
    // `required_state` too: sliding sync clients take state from
    // `required_state` only, never from the timeline (MSC4186, "Room
    // results"), as matrix-rust-sdk does.
    if wants.lazy_members() {
        let mut wanted: BTreeSet<&str> = timeline.iter().map(|event| event.sender.as_str()).collect();
        wanted.extend(
            timeline
                .iter()
                .filter(|event| event.kind == "m.room.member")
                .filter_map(|event| event.state_key.as_deref()),
        );
        let have: HashSet<String> = state_events.iter().map(|event| event.event_id.clone()).collect();
        for state in &current {
            let needed = state.kind == "m.room.member"
                && wanted.contains(state.state_key.as_str())
                && !have.contains(&state.event_id)
                && next.lazy_members.get(&state.state_key) != Some(&state.event_id);
            if needed {
                state_events.extend(
                    app.storage().event(&state.event_id)?.filter(|event| event.stream_ordering <= up_to),
                );
            }
        }
    }
    // Only what `required_state` carried counts as sent (see above).
    let members = state_events.iter().filter(|event| event.kind == "m.room.member");
    next.remember_members(
        members.filter_map(|event| Some((event.state_key.as_deref()?, event.event_id.as_str()))),
    );

    let own_receipt_moved = match sent {
        Some(sent) => app
            .storage()
            .receipts_since(room_id, sent.up_to, now.stream)?
            .iter()
            .any(|receipt| receipt.user_id == user_id),
        None => false,
    };
    let news =
        initial || new_events || expanded || dm_changed || !state_events.is_empty() || own_receipt_moved;
    if !news {
        return Ok(BuiltRoom { answer: None, sent: next });
    }

    let (notification_count, highlight_count) = unread::counts(app, room_id, user_id)?;
    let content = |kind: &str, field: &str| -> Result<Option<String>> {
        Ok(crate::rooms::current_state_content(app, room_id, kind, "")?
            .and_then(|content| content.get(field).and_then(Value::as_str).map(str::to_owned))
            .filter(|value| !value.is_empty()))
    };
    let name_changed = initial || changed_kinds.contains("m.room.name");
    let members_changed = initial || changed_kinds.contains("m.room.member");
    let name = if name_changed || members_changed { content("m.room.name", "name")? } else { None };
    let avatar = if initial || changed_kinds.contains("m.room.avatar") {
        content("m.room.avatar", "url")?
    } else {
        None
    };
    let heroes = if members_changed && name.is_none() { Some(heroes(app, user_id, &current)?) } else { None };
    let count = |membership: &str| {
        current
            .iter()
            .filter(|state| state.kind == "m.room.member" && state.membership.as_deref() == Some(membership))
            .count()
    };
    let num_live = since.map(|since| timeline.iter().filter(|event| event.stream_ordering > since).count());
    let prev_batch = match timeline.first() {
        Some(first) => Some(format!("s{}", first.stream_ordering - 1)),
        None if wants.timeline_limit > 0 => Some(format!("s{up_to}")),
        None => None,
    };
    let timeline_ids: HashSet<String> = timeline.iter().map(|event| event.event_id.clone()).collect();
    let answer = RoomAnswer {
        name: if name_changed { name } else { None },
        avatar,
        heroes: heroes.filter(|heroes| !heroes.is_empty()),
        initial: initial.then_some(true),
        is_dm,
        membership: Some(entry.membership.clone()),
        invite_state: None,
        required_state: client_events_raw(app, &state_events, Some(viewer), false),
        timeline: client_events_raw(app, &timeline, Some(viewer), false),
        prev_batch,
        limited: (wants.timeline_limit > 0).then_some(limited),
        unstable_expanded_timeline: expanded.then_some(true),
        num_live,
        joined_count: members_changed.then(|| count("join")),
        invited_count: members_changed.then(|| count("invite")),
        notification_count,
        highlight_count,
        bump_stamp,
    };
    Ok(BuiltRoom { answer: Some((answer, timeline_ids)), sent: next })
}

/// Whether the membership a member event replaced was `join`.
fn was_joined_before(app: &App, member_event: &StoredEvent) -> Result<bool> {
    let Some(previous) = &member_event.replaces_state else { return Ok(false) };
    let previous = app.storage().event(previous)?;
    let membership = previous
        .as_ref()
        .and_then(|event| event.json.get("content"))
        .and_then(|content| content.get("membership"));
    Ok(membership.and_then(Value::as_str) == Some("join"))
}

/// The wanted current state events: those changed in `(changed_since,
/// up_to]`, or all of them (up to `up_to`: a room left shows nothing set
/// after the departure).
fn load_state(
    app: &App,
    room_id: &str,
    wanted: &[&CurrentStateEntry],
    changed_since: Option<i64>,
    up_to: i64,
) -> Result<Vec<StoredEvent>> {
    let wanted_ids: HashSet<&str> = wanted.iter().map(|state| state.event_id.as_str()).collect();
    let keep =
        |event: &StoredEvent| wanted_ids.contains(event.event_id.as_str()) && event.stream_ordering <= up_to;
    if changed_since.is_some() || wanted.len() > LOAD_STATE_AT_ONCE {
        let after = changed_since.unwrap_or(i64::MIN);
        return Ok(app.storage().current_state_events(room_id, after)?.into_iter().filter(keep).collect());
    }
    let mut events = Vec::new();
    for state in wanted {
        // Each lookup is its own statement: the storage is borrowed once at a time.
        let event = app.storage().event(&state.event_id)?;
        events.extend(event.filter(keep));
    }
    Ok(events)
}

/// Up to [`MAX_HEROES`] members other than the user (joined, then invited,
/// then left) with their display names and avatars (MSC4186 `heroes`).
fn heroes(app: &App, user_id: &str, current: &[CurrentStateEntry]) -> Result<Vec<Value>> {
    let mut chosen = Vec::new();
    for membership in ["join", "invite", "leave"] {
        for state in current {
            let candidate = state.kind == "m.room.member"
                && state.membership.as_deref() == Some(membership)
                && state.state_key != user_id;
            if candidate && chosen.len() < MAX_HEROES {
                chosen.push(state);
            }
        }
    }
    let mut heroes = Vec::new();
    for state in chosen {
        let mut hero = json!({ "user_id": state.state_key });
        let event = app.storage().event(&state.event_id)?;
        let content = event.as_ref().and_then(|event| event.json.get("content"));
        for (from, to) in [("displayname", "displayname"), ("avatar_url", "avatar_url")] {
            if let Some(value) = content.and_then(|content| content.get(from)).and_then(Value::as_str) {
                hero[to] = json!(value);
            }
        }
        heroes.push(hero);
    }
    Ok(heroes)
}

/// The to-device extension (MSC3885): a page of the device's inbox after
/// `since`, which acknowledges (deletes) what came before it. Returns
/// whether it carried messages.
fn to_device(
    app: &App,
    owner: &TokenOwner,
    body: &SyncRequest,
    now: Now,
    out: &mut Map<String, Value>,
) -> Result<bool> {
    let Some(config) = body.extensions.to_device.as_ref().filter(|config| config.enabled == Some(true))
    else {
        return Ok(false);
    };
    let since = match config.since.as_deref() {
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|since| *since <= now.stream)
                .ok_or_else(|| Error::InvalidParam(format!("invalid to_device since {text:?}")))?,
        ),
        None => None,
    };
    let (user_id, device_id) = (owner.user_id.as_str(), owner.device_id.as_str());
    if let Some(since) = since {
        app.storage().acknowledge_to_device(user_id, device_id, since)?;
    }
    let limit = config.limit.map_or(MAX_TO_DEVICE_PER_SYNC, |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX).clamp(1, MAX_TO_DEVICE_PER_SYNC)
    });
    let page = InboxPage { max_messages: limit, max_bytes: MAX_TO_DEVICE_SYNC_BYTES };
    let (inbox, more) =
        app.storage().to_device_messages(user_id, device_id, since.unwrap_or(0), now.stream, page)?;
    let next_batch = match inbox.last() {
        Some(last) if more => last.stream_id,
        _ => now.stream,
    };
    let events: Vec<ToDeviceEvent> = inbox.into_iter().map(ToDeviceEvent::from).collect();
    let news = !events.is_empty();
    out.insert(
        "to_device".into(),
        json!({ "next_batch": next_batch.to_string(), "events": serde_json::to_value(events).unwrap_or_default() }),
    );
    Ok(news)
}

/// The e2ee (MSC3884), account data (MSC3959), receipts (MSC3960) and
/// typing (MSC3961) extensions, for the rooms in their scope. Returns
/// whether they hold news.
#[allow(clippy::too_many_arguments)]
fn scoped_extensions(
    app: &App,
    owner: &TokenOwner,
    body: &SyncRequest,
    since: Option<i64>,
    typing_since: Option<i64>,
    now: Now,
    selection: &Selection,
    out: &mut Map<String, Value>,
) -> Result<bool> {
    let user_id = owner.user_id.as_str();
    let extensions = &body.extensions;
    let mut news = false;
    let in_scope = |config: &ScopedConfig| -> Vec<&(String, Vec<String>, bool)> {
        let covered = |(room_id, lists, subscribed): &&(String, Vec<String>, bool)| {
            let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
            config.covers(room_id, &lists, *subscribed)
        };
        selection.scope.iter().filter(covered).collect()
    };

    if ScopedConfig::on(&extensions.e2ee) {
        let (changed, left) = match since {
            Some(since) => e2ee::device_list_delta(app, user_id, since, now.stream)?,
            None => (Vec::new(), Vec::new()),
        };
        news |= !changed.is_empty() || !left.is_empty();
        out.insert(
            "e2ee".into(),
            json!({
                "device_lists": { "changed": changed, "left": left },
                "device_one_time_keys_count": super::keys::one_time_key_counts(app, user_id, &owner.device_id)?,
                "device_unused_fallback_key_types": app.storage().unused_fallback_key_types(user_id, &owner.device_id)?,
            }),
        );
    }

    if let Some(config) =
        extensions.account_data.as_ref().filter(|_| ScopedConfig::on(&extensions.account_data))
    {
        let changes = account_data_changes(app, user_id, since, now.stream, true)?;
        // Rooms sent in full get all their account data.
        let all = if since.is_some() && !selection.initial.is_empty() {
            app.storage().account_data_since(user_id, 0, now.stream)?
        } else {
            Vec::new()
        };
        let scope: HashSet<&str> =
            in_scope(config).into_iter().map(|(room_id, _, _)| room_id.as_str()).collect();
        let mut global = Vec::new();
        let mut by_room: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        let parse = |content: &str| serde_json::from_str::<Value>(content).unwrap_or_else(|_| json!({}));
        for (room_id, kind, content) in &changes {
            if room_id.is_empty() {
                global.push(json!({ "type": kind, "content": parse(content) }));
            } else if scope.contains(room_id.as_str()) {
                by_room.entry(room_id.clone()).or_default().insert(kind.clone(), parse(content));
            }
        }
        for (room_id, kind, content) in &all {
            if selection.initial.contains(room_id) && scope.contains(room_id.as_str()) {
                by_room.entry(room_id.clone()).or_default().insert(kind.clone(), parse(content));
            }
        }
        news |= since.is_some() && (!global.is_empty() || !by_room.is_empty());
        let rooms: Map<String, Value> = by_room
            .into_iter()
            .map(|(room_id, events)| {
                let events: Vec<Value> = events
                    .into_iter()
                    .map(|(kind, content)| json!({ "type": kind, "content": content }))
                    .collect();
                (room_id, Value::Array(events))
            })
            .collect();
        out.insert("account_data".into(), json!({ "global": global, "rooms": rooms }));
    }

    if let Some(config) = extensions.receipts.as_ref().filter(|_| ScopedConfig::on(&extensions.receipts)) {
        let with_news = match since {
            Some(since) => Some(app.storage().rooms_with_news(since, now.stream)?),
            None => None,
        };
        let mut by_room = Map::new();
        for (room_id, _, _) in in_scope(config) {
            let initial = selection.initial.contains(room_id);
            if !initial && with_news.as_ref().is_some_and(|news| !news.contains(room_id)) {
                continue;
            }
            let after = if initial { i64::MIN } else { since.unwrap_or(i64::MIN) };
            let mut receipts = app.storage().receipts_since(room_id, after, now.stream)?;
            receipts.retain(|receipt| receipt.receipt_type != "m.read.private" || receipt.user_id == user_id);
            // A room sent in full gets the receipts of its timeline and the user's own.
            if initial {
                let timeline = selection.timelines.get(room_id);
                receipts.retain(|receipt| {
                    receipt.user_id == user_id || timeline.is_some_and(|ids| ids.contains(&receipt.event_id))
                });
            }
            if !receipts.is_empty() {
                by_room.insert(room_id.clone(), receipt_event(&receipts, user_id));
            }
        }
        news |= since.is_some() && !by_room.is_empty();
        out.insert("receipts".into(), json!({ "rooms": by_room }));
    }

    if let Some(config) = extensions.typing.as_ref().filter(|_| ScopedConfig::on(&extensions.typing)) {
        let mut by_room = Map::new();
        for (room_id, _, _) in in_scope(config) {
            let since = if selection.initial.contains(room_id) { None } else { typing_since };
            if let Some(users) = app.typing.changed_since(room_id, since) {
                by_room
                    .insert(room_id.clone(), json!({ "type": "m.typing", "content": { "user_ids": users } }));
            }
        }
        news |= typing_since.is_some() && !by_room.is_empty();
        out.insert("typing".into(), json!({ "rooms": by_room }));
    }
    Ok(news)
}
