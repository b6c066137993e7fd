//! Simplified Sliding Sync (MSC4186): the request's shape and bounds, the
//! `required_state` matcher, the user's room list (filters, recency order,
//! ranges), and the per-connection memory of what each connection was sent.
//!
//! The request follows the form Synapse serves and matrix-rust-sdk sends
//! (`ranges`, `required_state` as `[type, state_key]` pairs with `*`,
//! `$LAZY` and `$ME`); the later MSC spellings `range` and `is_invited` are
//! read too.
//!
//! Connection state (`connections.rs`) lives in memory only, bounded
//! ([`connections::MAX_CONNECTIONS`] on the node,
//! [`connections::MAX_CONNECTIONS_PER_DEVICE`] per device, the least
//! recently used going first, and four positions per connection). It is what was sent
//! to a connection, not anything the user owns: losing it costs one fresh
//! start of the connection, which the MSC provides for (an unknown `pos`
//! answers 400 `M_UNKNOWN_POS` and the client starts over), so after a
//! restart every client restarts its connections once. Keeping it in SQLite
//! would write on every answer for nothing a restart needs.
//!
//! Knows nothing of HTTP: the handler (`client/sliding_sync.rs`) shapes the
//! answer. Spec: <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md>.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::protocol::identifiers::RoomId;
use crate::rooms::Engine;

mod connections;

pub use connections::{ConnectionKey, ConnectionState, Connections, SentRoom};

/// MSC4186: at most 100 lists.
pub const MAX_LISTS: usize = 100;
/// Ranges per list: a client asks for one or two windows; more is abuse.
pub const MAX_RANGES: usize = 16;
/// Room subscriptions per request: a client subscribes to the rooms on
/// screen, a few dozen at most.
pub const MAX_ROOM_SUBSCRIPTIONS: usize = 500;
/// `required_state` pairs per list or subscription.
pub const MAX_REQUIRED_STATE: usize = 100;
/// Names (list keys, `conn_id`, event types, state keys, tags): event types
/// and state keys are at most 255 bytes (spec: size limits of PDUs).
pub const MAX_NAME_BYTES: usize = 255;
/// Entries of a filter's or an extension's lists (spaces, tags, room types,
/// list names, room IDs).
pub const MAX_FILTER_ENTRIES: usize = 100;
/// The largest `timeline_limit` served, the cap /sync puts on its filters.
pub const MAX_TIMELINE_LIMIT: usize = 1000;

/// The event types that bump a room up the list (MSC4186 `bump_stamp`).
pub const BUMP_EVENT_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// The request body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SyncRequest {
    pub conn_id: Option<String>,
    /// Echoed in the answer.
    pub txn_id: Option<String>,
    /// Also accepted in the body (the MSC's later form).
    pub pos: Option<String>,
    pub timeout: Option<u64>,
    pub lists: BTreeMap<String, ListConfig>,
    pub room_subscriptions: BTreeMap<String, RoomConfig>,
    pub extensions: ExtensionsConfig,
}

/// One list: windows into the filtered, ordered room list, and what to send
/// of each room in them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListConfig {
    pub ranges: Vec<(u64, u64)>,
    pub range: Option<(u64, u64)>,
    pub timeline_limit: u64,
    pub required_state: Vec<(String, String)>,
    pub filters: ListFilters,
}

impl ListConfig {
    /// The room config of the list.
    pub fn room_config(&self) -> RoomConfig {
        RoomConfig { timeline_limit: self.timeline_limit, required_state: self.required_state.clone() }
    }

    /// The windows: `ranges`, or `range`, or (neither given) every room.
    pub fn windows(&self) -> Vec<(u64, u64)> {
        match (&self.range, self.ranges.is_empty()) {
            (_, false) => self.ranges.clone(),
            (Some(range), true) => vec![*range],
            (None, true) => vec![(0, u64::MAX)],
        }
    }
}

/// What to send of a room: timeline length and state.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RoomConfig {
    pub timeline_limit: u64,
    pub required_state: Vec<(String, String)>,
}

/// A list's filters; every one given must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    #[serde(alias = "is_invited")]
    pub is_invite: Option<bool>,
    pub room_types: Option<Vec<Option<String>>>,
    pub not_room_types: Vec<Option<String>>,
    pub spaces: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub not_tags: Vec<String>,
}

/// The extensions asked for (unknown ones are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionsConfig {
    pub to_device: Option<ToDeviceConfig>,
    pub e2ee: Option<ScopedConfig>,
    pub account_data: Option<ScopedConfig>,
    pub receipts: Option<ScopedConfig>,
    pub typing: Option<ScopedConfig>,
}

/// The to-device extension: `since` acknowledges what came before it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ToDeviceConfig {
    pub enabled: Option<bool>,
    pub since: Option<String>,
    pub limit: Option<u64>,
}

/// An extension that can be limited to some lists and rooms (`*`: all).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScopedConfig {
    pub enabled: Option<bool>,
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

impl ScopedConfig {
    pub fn on(config: &Option<ScopedConfig>) -> bool {
        config.as_ref().is_some_and(|config| config.enabled == Some(true))
    }

    /// Whether a room (found by these lists, or subscribed to) is in scope.
    pub fn covers(&self, room_id: &str, lists: &[&str], subscribed: bool) -> bool {
        let star = |names: &Vec<String>| names.iter().any(|name| name == "*");
        let by_list = match &self.lists {
            None => !lists.is_empty(),
            Some(names) => {
                star(names) && !lists.is_empty() || lists.iter().any(|list| names.iter().any(|n| n == list))
            }
        };
        let by_room = match &self.rooms {
            None => subscribed,
            Some(names) => star(names) && subscribed || names.iter().any(|name| name == room_id),
        };
        by_list || by_room
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidParam(format!("{what} is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(())
}

fn check_names(what: &str, names: &[String]) -> Result<()> {
    if names.len() > MAX_FILTER_ENTRIES {
        return Err(Error::InvalidParam(format!("{what} has more than {MAX_FILTER_ENTRIES} entries")));
    }
    names.iter().try_for_each(|name| check_name(what, name))
}

fn check_room_config(config: &RoomConfig) -> Result<()> {
    if config.required_state.len() > MAX_REQUIRED_STATE {
        return Err(Error::InvalidParam(format!(
            "required_state has more than {MAX_REQUIRED_STATE} entries"
        )));
    }
    for (kind, state_key) in &config.required_state {
        check_name("a required_state type", kind)?;
        check_name("a required_state state key", state_key)?;
    }
    Ok(())
}

impl SyncRequest {
    /// Refuses requests over the bounds (`M_INVALID_PARAM`).
    pub fn check(&self) -> Result<()> {
        if let Some(conn_id) = &self.conn_id {
            check_name("conn_id", conn_id)?;
        }
        if let Some(txn_id) = &self.txn_id {
            check_name("txn_id", txn_id)?;
        }
        if self.lists.len() > MAX_LISTS {
            return Err(Error::InvalidParam(format!("more than {MAX_LISTS} lists")));
        }
        for (name, list) in &self.lists {
            check_name("a list name", name)?;
            let windows = list.windows();
            if windows.len() > MAX_RANGES {
                return Err(Error::InvalidParam(format!("a list has more than {MAX_RANGES} ranges")));
            }
            if windows.iter().any(|(start, end)| start > end) {
                return Err(Error::InvalidParam("a range starts after its end".into()));
            }
            check_room_config(&list.room_config())?;
            let filters = &list.filters;
            let types = |types: &[Option<String>]| -> Result<()> {
                let named: Vec<String> = types.iter().flatten().cloned().collect();
                if types.len() > MAX_FILTER_ENTRIES {
                    return Err(Error::InvalidParam(format!(
                        "room_types has more than {MAX_FILTER_ENTRIES} entries"
                    )));
                }
                check_names("room_types", &named)
            };
            types(filters.room_types.as_deref().unwrap_or_default())?;
            types(&filters.not_room_types)?;
            check_names("spaces", filters.spaces.as_deref().unwrap_or_default())?;
            check_names("tags", filters.tags.as_deref().unwrap_or_default())?;
            check_names("not_tags", &filters.not_tags)?;
        }
        if self.room_subscriptions.len() > MAX_ROOM_SUBSCRIPTIONS {
            return Err(Error::InvalidParam(format!(
                "more than {MAX_ROOM_SUBSCRIPTIONS} room subscriptions"
            )));
        }
        for (room_id, config) in &self.room_subscriptions {
            RoomId::parse(room_id)
                .map_err(|_| Error::InvalidParam(format!("invalid room ID {room_id:?}")))?;
            check_room_config(config)?;
        }
        let extensions = &self.extensions;
        let scoped = [&extensions.e2ee, &extensions.account_data, &extensions.receipts, &extensions.typing];
        for scoped in scoped.into_iter().flatten() {
            check_names("extension lists", scoped.lists.as_deref().unwrap_or_default())?;
            check_names("extension rooms", scoped.rooms.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }
}

/// Several room configs combined into their superset (MSC4186 "Combining
/// room configs"): the longest timeline and the union of the state asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    pub timeline_limit: usize,
    /// Sorted and without repeats, so two sets compare equal.
    pub required_state: BTreeSet<(String, String)>,
}

impl Wants {
    pub fn add(&mut self, config: &RoomConfig) {
        let limit = usize::try_from(config.timeline_limit).unwrap_or(usize::MAX).min(MAX_TIMELINE_LIMIT);
        self.timeline_limit = self.timeline_limit.max(limit);
        self.required_state.extend(config.required_state.iter().cloned());
    }

    /// Whether a current state entry is asked for (`*` matches any type or
    /// state key, `$ME` the user's own ID; `$LAZY` members are chosen by
    /// the timeline, see [`Wants::lazy_members`]).
    pub fn wants_state(&self, kind: &str, state_key: &str, user_id: &str) -> bool {
        self.required_state.iter().any(|(wanted_kind, wanted_key)| {
            (wanted_kind == "*" || wanted_kind == kind)
                && (wanted_key == "*"
                    || wanted_key == state_key
                    || (wanted_key == "$ME" && state_key == user_id))
        })
    }

    /// Whether the members of the timeline's senders are asked for.
    pub fn lazy_members(&self) -> bool {
        self.required_state
            .iter()
            .any(|(kind, key)| key == "$LAZY" && (kind == "m.room.member" || kind == "*"))
    }
}

/// What the server knows of one room of the user's, for the lists.
#[derive(Clone, Debug, Default)]
pub struct RoomEntry {
    pub room_id: String,
    /// `join`, `invite`, `knock`, `leave` or `ban`.
    pub membership: String,
    /// Recency: the newest bump event's stream position, or the membership's
    /// for a room the user is not joined to.
    pub bump_stamp: i64,
    pub is_dm: bool,
    pub encrypted: bool,
    /// `type` of `m.room.create`.
    pub room_type: Option<String>,
    pub tags: BTreeSet<String>,
    /// The stripped state of an invite into a room this server is not in.
    pub remote_invite_state: Option<String>,
}

/// Whether a room passes a list's filters. `space_children` holds the
/// children of the `spaces` filter's spaces.
pub fn passes(filters: &ListFilters, room: &RoomEntry, space_children: &HashSet<String>) -> bool {
    if filters.is_dm.is_some_and(|is_dm| is_dm != room.is_dm) {
        return false;
    }
    if filters.is_encrypted.is_some_and(|encrypted| encrypted != room.encrypted) {
        return false;
    }
    if filters.is_invite.is_some_and(|invite| invite != (room.membership == "invite")) {
        return false;
    }
    if filters.not_room_types.contains(&room.room_type) {
        return false;
    }
    if filters.room_types.as_ref().is_some_and(|types| !types.contains(&room.room_type)) {
        return false;
    }
    if filters.spaces.is_some() && !space_children.contains(&room.room_id) {
        return false;
    }
    if filters.not_tags.iter().any(|tag| room.tags.contains(tag)) {
        return false;
    }
    if filters.tags.as_ref().is_some_and(|tags| !tags.iter().any(|tag| room.tags.contains(tag))) {
        return false;
    }
    true
}

/// Orders rooms newest first (ties by room ID, so the order is stable).
pub fn sort_by_recency(rooms: &mut [&RoomEntry]) {
    rooms.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
}

/// The indexes each window covers in a list of `count` rooms (inclusive
/// ranges, clipped to the list).
pub fn window_indexes(windows: &[(u64, u64)], count: usize) -> Vec<std::ops::Range<usize>> {
    windows
        .iter()
        .map(|&(start, end)| {
            let start = usize::try_from(start).unwrap_or(usize::MAX).min(count);
            let end = usize::try_from(end).unwrap_or(usize::MAX).saturating_add(1).min(count);
            start..end.max(start)
        })
        .collect()
}

/// The user's rooms as lists see them: joined, invited (also into rooms
/// this server is not in) and knocked rooms, and the rooms left or banned
/// from in `(since, now]` (so the client learns of it). `facts` says which
/// of the costlier facts (encryption, type, tags) the filters need; `known`
/// holds what the previous answer learnt of the joined rooms and the rooms
/// with events since (what only events change has not moved in the others).
pub fn user_rooms(
    app: &Engine,
    user_id: &str,
    since: Option<i64>,
    now: i64,
    facts: Facts,
    known: Option<(&HashMap<String, KnownRoom>, &HashSet<String>)>,
) -> Result<Vec<RoomEntry>> {
    let mut left_now = HashSet::new();
    if let Some(since) = since {
        for event in app.storage().membership_changes(user_id, since, now)? {
            left_now.insert(event.room_id);
        }
    }
    let ignored = super::visibility::ignored_users(app, user_id)?;
    let direct = direct_rooms(app, user_id)?;
    let memberships = app.storage().rooms_of_user(user_id)?;
    let unchanged = |room_id: &str| {
        known.and_then(|(rooms, news)| rooms.get(room_id).filter(|_| !news.contains(room_id)))
    };
    // Encryption and room types: kept from the previous answer, read room
    // by room when few changed, or for all the rooms in one query.
    let mut state_facts: HashMap<String, (bool, Option<String>)> = HashMap::new();
    if facts.state {
        let stale: Vec<&str> = memberships
            .iter()
            .map(|(room_id, _)| room_id.as_str())
            .filter(|room_id| unchanged(room_id).and_then(|known| known.state.as_ref()).is_none())
            .collect();
        if stale.len() > FACTS_ROOM_BY_ROOM {
            for event in app.storage().user_rooms_state(user_id, ["m.room.encryption", "m.room.create"])? {
                let room = state_facts.entry(event.room_id.clone()).or_default();
                if event.kind == "m.room.encryption" {
                    room.0 = true;
                } else {
                    room.1 = room_type(event.json.get("content"));
                }
            }
        } else {
            for room_id in stale {
                let content = |kind| super::current_state_content(app, room_id, kind, "");
                let facts =
                    (content("m.room.encryption")?.is_some(), room_type(content("m.room.create")?.as_ref()));
                state_facts.insert(room_id.to_owned(), facts);
            }
        }
    }
    let mut rooms = Vec::new();
    for (room_id, membership) in memberships {
        let membership_event = match membership.as_str() {
            "join" => None,
            "invite" | "knock" => {
                Some(app.storage().current_state_event(&room_id, "m.room.member", user_id)?)
            }
            "leave" | "ban"
                if left_now.contains(&room_id) && !app.storage().is_forgotten(user_id, &room_id)? =>
            {
                Some(app.storage().current_state_event(&room_id, "m.room.member", user_id)?)
            }
            _ => continue,
        };
        // Not joined: the membership's position; joined: the newest bump event's.
        let bump_stamp = match membership_event.flatten() {
            Some(event_id) => {
                let Some(event) = app.storage().event(&event_id)? else { continue };
                if membership == "invite" && ignored.contains(&event.sender) {
                    continue;
                }
                event.stream_ordering
            }
            None => match unchanged(&room_id) {
                Some(known) => known.bump_stamp,
                None => app.storage().bump_stamp(&room_id, BUMP_EVENT_TYPES)?.unwrap_or(i64::MIN),
            },
        };
        let mut entry = RoomEntry {
            is_dm: direct.contains(&room_id),
            room_id,
            membership,
            bump_stamp,
            ..Default::default()
        };
        if facts.state {
            let kept = unchanged(&entry.room_id).and_then(|known| known.state.clone());
            let (encrypted, room_type) =
                kept.or_else(|| state_facts.remove(&entry.room_id)).unwrap_or_default();
            entry.encrypted = encrypted;
            entry.room_type = room_type;
        }
        if facts.tags {
            entry.tags = tags(app, user_id, &entry.room_id)?;
        }
        rooms.push(entry);
    }
    for invite in app.storage().remote_invites(user_id)? {
        if invite.stream_id > now
            || ignored.contains(&invite.inviter)
            || rooms.iter().any(|room| room.room_id == invite.room_id)
        {
            continue;
        }
        let state: Vec<Value> = serde_json::from_str(&invite.invite_state).unwrap_or_default();
        let stripped =
            |kind: &str| state.iter().find(|event| event.get("type").and_then(Value::as_str) == Some(kind));
        let mut entry = RoomEntry {
            is_dm: direct.contains(&invite.room_id),
            encrypted: stripped("m.room.encryption").is_some(),
            room_type: room_type(stripped("m.room.create").and_then(|create| create.get("content"))),
            room_id: invite.room_id,
            membership: "invite".into(),
            bump_stamp: invite.stream_id,
            remote_invite_state: Some(invite.invite_state),
            ..Default::default()
        };
        if facts.tags {
            entry.tags = tags(app, user_id, &entry.room_id)?;
        }
        rooms.push(entry);
    }
    Ok(rooms)
}

/// The `type` of an `m.room.create` content.
fn room_type(create_content: Option<&Value>) -> Option<String> {
    create_content?.get("type")?.as_str().map(str::to_owned)
}

/// Up to this many rooms whose encryption and type changed are read room by
/// room; past it, all the user's rooms in one query.
const FACTS_ROOM_BY_ROOM: usize = 4;

/// What an answer learnt of a joined room that only the room's events change.
#[derive(Clone, Debug, Default)]
pub struct KnownRoom {
    pub bump_stamp: i64,
    /// Encrypted, and the room type (when the filters asked).
    pub state: Option<(bool, Option<String>)>,
}

impl KnownRoom {
    pub fn of(entry: &RoomEntry, facts: Facts) -> KnownRoom {
        KnownRoom {
            bump_stamp: entry.bump_stamp,
            state: facts.state.then(|| (entry.encrypted, entry.room_type.clone())),
        }
    }
}

/// Which costlier facts the filters of a request need.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    /// Encryption and room type (read from current state).
    pub state: bool,
    /// Room tags (read from room account data).
    pub tags: bool,
}

impl Facts {
    pub fn needed_by<'a>(filters: impl Iterator<Item = &'a ListFilters>) -> Facts {
        let mut facts = Facts::default();
        for filter in filters {
            facts.state |= filter.is_encrypted.is_some()
                || filter.room_types.is_some()
                || !filter.not_room_types.is_empty();
            facts.tags |= filter.tags.is_some() || !filter.not_tags.is_empty();
        }
        facts
    }
}

/// The rooms the user's `m.direct` account data names.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#mdirect>.
pub fn direct_rooms(app: &Engine, user_id: &str) -> Result<HashSet<String>> {
    let content = app.storage().account_data(user_id, "", "m.direct")?;
    let content: Value = content.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
    let Some(by_user) = content.as_object() else { return Ok(HashSet::new()) };
    Ok(by_user
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect())
}

/// A room's tags from its `m.tag` account data.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#room-tagging>.
fn tags(app: &Engine, user_id: &str, room_id: &str) -> Result<BTreeSet<String>> {
    let content = app.storage().account_data(user_id, room_id, "m.tag")?;
    let content: Value = content.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
    Ok(content
        .get("tags")
        .and_then(Value::as_object)
        .map(|tags| tags.keys().cloned().collect())
        .unwrap_or_default())
}

/// The children of each of `spaces` the user is joined to (`m.space.child`
/// state with a non-empty `via`), each space read once however many lists
/// name it. Spec: <https://spec.matrix.org/latest/client-server-api/#mspacechild>.
pub fn space_children<'a>(
    app: &Engine,
    user_id: &str,
    spaces: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, HashSet<String>>> {
    let mut children: HashMap<String, HashSet<String>> = HashMap::new();
    for space in spaces {
        if children.contains_key(space) {
            continue;
        }
        let of_space = children.entry(space.clone()).or_default();
        if app.storage().membership(space, user_id)?.as_deref() != Some("join") {
            continue;
        }
        let events = app.storage().current_state_events(space, i64::MIN)?;
        for event in events {
            let via = event
                .json
                .get("content")
                .and_then(|content| content.get("via"))
                .and_then(Value::as_array)
                .is_some_and(|via| !via.is_empty());
            if event.kind == "m.space.child" && via {
                of_space.extend(event.state_key);
            }
        }
    }
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, bump: i64) -> RoomEntry {
        RoomEntry { room_id: id.into(), membership: "join".into(), bump_stamp: bump, ..Default::default() }
    }

    #[test]
    fn rooms_sort_newest_first_and_windows_clip_to_the_list() {
        let rooms = [room("!a:x", 3), room("!b:x", 9), room("!c:x", 3)];
        let mut sorted: Vec<&RoomEntry> = rooms.iter().collect();
        sort_by_recency(&mut sorted);
        let ids: Vec<&str> = sorted.iter().map(|room| room.room_id.as_str()).collect();
        assert_eq!(ids, ["!b:x", "!a:x", "!c:x"]);
        assert_eq!(window_indexes(&[(0, 1)], 3), vec![0..2]);
        assert_eq!(window_indexes(&[(1, 99)], 3), vec![1..3]);
        assert_eq!(window_indexes(&[(5, 9)], 3), vec![3..3]);
        assert_eq!(window_indexes(&[(0, u64::MAX)], 3), vec![0..3]);
    }

    #[test]
    fn filters_all_have_to_hold() {
        let mut dm = room("!dm:x", 1);
        dm.is_dm = true;
        dm.tags.insert("m.favourite".into());
        let mut space = room("!s:x", 1);
        space.room_type = Some("m.space".into());
        space.encrypted = true;
        let mut invite = room("!i:x", 1);
        invite.membership = "invite".into();
        let none = HashSet::new();
        let check = |filters: ListFilters, expected: [bool; 3]| {
            let got = [&dm, &space, &invite].map(|room| passes(&filters, room, &none));
            assert_eq!(got, expected, "{filters:?}");
        };
        check(ListFilters::default(), [true, true, true]);
        check(ListFilters { is_dm: Some(true), ..Default::default() }, [true, false, false]);
        check(ListFilters { is_dm: Some(false), ..Default::default() }, [false, true, true]);
        check(ListFilters { is_encrypted: Some(true), ..Default::default() }, [false, true, false]);
        check(ListFilters { is_invite: Some(true), ..Default::default() }, [false, false, true]);
        check(
            ListFilters { room_types: Some(vec![Some("m.space".into())]), ..Default::default() },
            [false, true, false],
        );
        check(ListFilters { room_types: Some(vec![None]), ..Default::default() }, [true, false, true]);
        check(
            ListFilters { not_room_types: vec![Some("m.space".into())], ..Default::default() },
            [true, false, true],
        );
        check(
            ListFilters { tags: Some(vec!["m.favourite".into()]), ..Default::default() },
            [true, false, false],
        );
        let both = ListFilters {
            tags: Some(vec!["m.favourite".into()]),
            not_tags: vec!["m.favourite".into()],
            ..Default::default()
        };
        check(both, [false, false, false]);
        let children: HashSet<String> = ["!i:x".to_owned()].into();
        let spaces = ListFilters { spaces: Some(vec!["!s:x".into()]), ..Default::default() };
        assert!(passes(&spaces, &invite, &children) && !passes(&spaces, &dm, &children));
    }

    #[test]
    fn required_state_matches_wildcards_me_and_lazy() {
        let mut wants = Wants::default();
        wants.add(&RoomConfig {
            timeline_limit: 5,
            required_state: vec![("m.room.name".into(), "".into()), ("m.room.member".into(), "$ME".into())],
        });
        wants.add(&RoomConfig {
            timeline_limit: 1_000_000,
            required_state: vec![("m.room.member".into(), "$LAZY".into())],
        });
        assert_eq!(wants.timeline_limit, MAX_TIMELINE_LIMIT);
        assert!(wants.wants_state("m.room.name", "", "@me:x"));
        assert!(!wants.wants_state("m.room.topic", "", "@me:x"));
        assert!(wants.wants_state("m.room.member", "@me:x", "@me:x"));
        assert!(!wants.wants_state("m.room.member", "@other:x", "@me:x"));
        assert!(wants.lazy_members());
        let mut all = Wants::default();
        all.add(&RoomConfig { timeline_limit: 0, required_state: vec![("*".into(), "*".into())] });
        assert!(all.wants_state("m.room.member", "@other:x", "@me:x") && !all.lazy_members());
        let mut typed = Wants::default();
        typed.add(&RoomConfig {
            timeline_limit: 0,
            required_state: vec![("m.space.child".into(), "*".into())],
        });
        assert!(
            typed.wants_state("m.space.child", "!c:x", "@me:x")
                && !typed.wants_state("m.room.name", "", "@me:x")
        );
    }

    #[test]
    fn requests_over_the_bounds_are_refused() {
        let parse = |value: serde_json::Value| serde_json::from_value::<SyncRequest>(value).unwrap().check();
        assert!(
            parse(serde_json::json!({ "lists": { "a": { "ranges": [[0, 19]], "timeline_limit": 1 } } }))
                .is_ok()
        );
        assert!(parse(serde_json::json!({ "lists": { "a": { "ranges": [[5, 1]] } } })).is_err());
        let many: serde_json::Map<String, Value> =
            (0..=MAX_LISTS).map(|n| (n.to_string(), serde_json::json!({}))).collect();
        assert!(parse(serde_json::json!({ "lists": many })).is_err());
        assert!(parse(serde_json::json!({ "room_subscriptions": { "not a room": {} } })).is_err());
        let state: Vec<Value> =
            (0..=MAX_REQUIRED_STATE).map(|n| serde_json::json!(["t", n.to_string()])).collect();
        assert!(
            parse(serde_json::json!({ "room_subscriptions": { "!r:x": { "required_state": state } } }))
                .is_err()
        );
        assert!(parse(serde_json::json!({ "conn_id": "x".repeat(MAX_NAME_BYTES + 1) })).is_err());
        // Shapes serde refuses: negative limits, ranges that are not pairs.
        assert!(
            serde_json::from_value::<SyncRequest>(
                serde_json::json!({ "lists": { "a": { "timeline_limit": -1 } } })
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<SyncRequest>(
                serde_json::json!({ "lists": { "a": { "ranges": [[1]] } } })
            )
            .is_err()
        );
    }
}
