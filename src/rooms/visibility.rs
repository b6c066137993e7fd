//! History visibility: whether a user may see an event, from the room's
//! `m.room.history_visibility` and the user's membership at that event, and
//! the user's ignore list (`m.ignored_user_list`): an ignored user's
//! non-state events are hidden, as Synapse hides them from /sync,
//! /messages, /context and the rest.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#history-visibility>,
//! <https://spec.matrix.org/latest/client-server-api/#ignoring-users>.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::rooms::Engine;
use crate::storage::{GroupVisibility, StoredEvent};

/// Cached (state group, user) facts kept at most; past this the cache starts
/// over (an entry is a user ID and two short strings, ~150 bytes).
const MAX_CACHED_FACTS: usize = 2048;

/// What state groups say for history visibility, per (group, user), kept
/// across requests: reading it walks a group's delta chain, and an initial
/// /sync would walk one chain per room every time. A state group never
/// changes once written and redaction keeps `history_visibility` and
/// `membership`, so an entry never goes stale; answers that name an event
/// this server does not hold yet are not kept.
#[derive(Default)]
pub struct Cache {
    facts: RefCell<HashMap<(i64, String), GroupVisibility>>,
}

impl Cache {
    fn get(&self, group: i64, user_id: &str) -> Option<GroupVisibility> {
        // The key is owned; a lookup by borrowed pair would need a custom key type.
        self.facts.borrow().get(&(group, user_id.to_owned())).cloned()
    }

    fn put(&self, group: i64, user_id: &str, facts: &GroupVisibility) {
        if facts.missing_event {
            return;
        }
        let mut cached = self.facts.borrow_mut();
        if cached.len() >= MAX_CACHED_FACTS {
            cached.clear();
        }
        cached.insert((group, user_id.to_owned()), facts.clone());
    }
}

/// Per-request memory of what each state group says, so a page of events
/// costs one lookup ([`Visibility::prepare`]), not one per event (and none
/// for groups in [`Cache`]). The memory is behind `RefCell`s so that a
/// page's reader and its filter can share one.
pub struct Visibility<'a> {
    app: &'a Engine,
    user_id: &'a str,
    by_group: RefCell<HashMap<i64, GroupVisibility>>,
    current: RefCell<HashMap<String, Option<String>>>,
    /// Per room: whether its history was only ever `shared` or
    /// `world_readable` (see [`Storage::rooms_with_closed_history`]).
    ///
    /// [`Storage::rooms_with_closed_history`]: crate::storage::Storage::rooms_with_closed_history
    open_history: RefCell<HashMap<String, bool>>,
    /// The user's ignore list, read when first needed.
    ignored: OnceCell<Rc<HashSet<String>>>,
}

impl<'a> Visibility<'a> {
    pub fn new(app: &'a Engine, user_id: &'a str) -> Self {
        Visibility {
            app,
            user_id,
            by_group: RefCell::default(),
            current: RefCell::default(),
            open_history: RefCell::default(),
            ignored: OnceCell::new(),
        }
    }

    /// As [`Visibility::new`], with the ignore list already read (a /sync
    /// reads it once for all its rooms).
    pub fn with_ignored(app: &'a Engine, user_id: &'a str, ignored: Rc<HashSet<String>>) -> Self {
        let visibility = Visibility::new(app, user_id);
        let _ = visibility.ignored.set(ignored);
        visibility
    }

    fn is_ignored(&self, sender: &str) -> bool {
        self.ignored
            .get_or_init(|| Rc::new(ignored_users(self.app, self.user_id).unwrap_or_default()))
            .contains(sender)
    }

    /// Loads what the state groups of `events` say, in one query for all
    /// the groups not known yet (none for the rooms whose every event the
    /// user sees, see [`Visibility::sees_all_of`]).
    pub fn prepare(&self, events: &[StoredEvent]) {
        self.learn_history(events.iter().map(|event| event.room_id.as_str()));
        let mut missing: Vec<i64> = {
            let known = self.by_group.borrow();
            events
                .iter()
                .filter(|event| !self.sees_all_of(&event.room_id))
                .filter_map(|event| event.state_group)
                .filter(|group| !known.contains_key(group))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        self.load(&missing);
    }

    /// [`Visibility::prepare`] for state groups named directly.
    pub fn prepare_groups(&self, groups: &[i64]) {
        let mut missing: Vec<i64> = {
            let known = self.by_group.borrow();
            groups.iter().copied().filter(|group| !known.contains_key(group)).collect()
        };
        missing.sort_unstable();
        missing.dedup();
        self.load(&missing);
    }

    fn load(&self, groups: &[i64]) {
        let mut missing = Vec::new();
        for group in groups {
            match self.app.visibility.get(*group, self.user_id) {
                Some(facts) => {
                    self.by_group.borrow_mut().insert(*group, facts);
                }
                None => missing.push(*group),
            }
        }
        if missing.is_empty() {
            return;
        }
        // A failed read leaves the groups unknown (and uncached): they show as
        // `shared` with no membership, as a group without those keys would.
        let found = self.app.storage().visibility_at_groups(&missing, self.user_id);
        let failed = found.is_err();
        let found = found.unwrap_or_default();
        let mut known = self.by_group.borrow_mut();
        for group in missing {
            let facts = found.get(&group).cloned().unwrap_or_default();
            if !failed {
                self.app.visibility.put(group, self.user_id, &facts);
            }
            known.insert(group, facts);
        }
    }

    /// Tells the reader that the user is joined to `rooms` now (as read in
    /// the same transaction) and reads what their history allows, in one
    /// query for them all.
    pub fn joined_now(&self, rooms: &[&str]) {
        let mut current = self.current.borrow_mut();
        for room_id in rooms {
            current.insert((*room_id).to_owned(), Some("join".to_owned()));
        }
        drop(current);
        self.learn_history(rooms.iter().copied());
    }

    /// Reads, in one query, which of `rooms` not known yet had history
    /// visibility other than `shared` or `world_readable`.
    fn learn_history<'r>(&self, rooms: impl Iterator<Item = &'r str>) {
        let mut unknown: Vec<&str> = {
            let known = self.open_history.borrow();
            rooms.filter(|room_id| !known.contains_key(*room_id)).collect()
        };
        if unknown.is_empty() {
            return;
        }
        unknown.sort_unstable();
        unknown.dedup();
        // A failed read counts every room as closed: the state groups decide.
        let closed = self.app.storage().rooms_with_closed_history(&unknown);
        let mut known = self.open_history.borrow_mut();
        for room_id in unknown {
            let open = closed.as_ref().is_ok_and(|closed| !closed.contains(room_id));
            known.insert(room_id.to_owned(), open);
        }
    }

    /// Whether the user sees every event of the room (whatever the state at
    /// each): joined now, in a room whose history visibility never was
    /// anything but `shared` or `world_readable`. Spec: `shared` history is
    /// visible to members joined now, `world_readable` to anyone.
    fn sees_all_of(&self, room_id: &str) -> bool {
        let open = self.open_history.borrow().get(room_id).copied();
        let open = open.unwrap_or_else(|| {
            self.learn_history(std::iter::once(room_id));
            self.open_history.borrow().get(room_id).copied().unwrap_or(false)
        });
        open && self.current_membership(room_id).as_deref() == Some("join")
    }

    /// `(history_visibility, the user's membership)` at a state group.
    fn at_group(&self, group: i64) -> (String, Option<String>) {
        if !self.by_group.borrow().contains_key(&group) {
            self.load(&[group]);
        }
        let known = self.by_group.borrow();
        let found = known.get(&group).cloned().unwrap_or_default();
        (found.history_visibility.unwrap_or_else(|| "shared".into()), found.membership)
    }

    fn current_membership(&self, room_id: &str) -> Option<String> {
        if let Some(found) = self.current.borrow().get(room_id) {
            return found.clone();
        }
        let membership = self.app.storage().membership(room_id, self.user_id).ok().flatten();
        self.current.borrow_mut().insert(room_id.to_string(), membership.clone());
        membership
    }

    /// Whether the user may see `event`.
    pub fn can_see(&self, event: &StoredEvent) -> bool {
        // Everyone sees their own membership changes.
        if event.kind == "m.room.member" && event.state_key.as_deref() == Some(self.user_id) {
            return true;
        }
        // Spec: an ignored user's events are not sent; their state (their
        // membership, say) still is, as the room's state needs it.
        if event.state_key.is_none() && event.sender != self.user_id && self.is_ignored(&event.sender) {
            return false;
        }
        self.can_see_at(&event.room_id, event.state_group)
    }

    /// Whether the user may see an event of `room_id` whose state is `group`
    /// (any event but the user's own membership changes, which they always see).
    pub fn can_see_at(&self, room_id: &str, group: Option<i64>) -> bool {
        let Some(group) = group else { return false };
        if self.sees_all_of(room_id) {
            return true;
        }
        let (visibility, membership) = self.at_group(group);
        if visibility == "world_readable" || membership.as_deref() == Some("join") {
            return true;
        }
        match visibility.as_str() {
            "shared" => self.current_membership(room_id).as_deref() == Some("join"),
            "invited" => membership.as_deref() == Some("invite"),
            _ => false,
        }
    }

    /// Whether the user may read the room's state and history at all now
    /// (joined, or the room is world readable).
    pub fn can_read_room(&self, room_id: &str) -> bool {
        if self.current_membership(room_id).as_deref() == Some("join") {
            return true;
        }
        let Ok(Some(group)) = self.app.storage().room_state_group(room_id) else { return false };
        self.at_group(group).0 == "world_readable"
    }
}

/// The users `user_id` ignores: the keys of `ignored_users` in their
/// `m.ignored_user_list` account data (nothing when absent or malformed).
pub fn ignored_users(app: &Engine, user_id: &str) -> Result<HashSet<String>> {
    let Some(content) = app.storage().account_data(user_id, "", IGNORED_USER_LIST)? else {
        return Ok(HashSet::new());
    };
    Ok(parse_ignored(&content))
}

/// The account data type of the ignore list.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

fn parse_ignored(content: &str) -> HashSet<String> {
    let content: Value = serde_json::from_str(content).unwrap_or(Value::Null);
    content
        .get("ignored_users")
        .and_then(Value::as_object)
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default()
}

/// The newest stream position of a room's history a user may read: the end of
/// the room when joined (or the room is world readable), their departure when
/// they left or were banned. Anyone else gets 403, as Synapse answers.
pub fn readable_up_to(app: &Engine, user_id: &str, room_id: &str) -> Result<i64> {
    if Visibility::new(app, user_id).can_read_room(room_id) {
        return Ok(i64::MAX);
    }
    let membership_event = app.storage().current_state_event(room_id, "m.room.member", user_id)?;
    if let Some(event) = membership_event.and_then(|id| app.storage().event(&id).ok().flatten()) {
        let membership = event.json.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
        if matches!(membership, Some("leave" | "ban")) {
            return Ok(event.stream_ordering);
        }
    }
    Err(Error::Forbidden("you are not allowed to read this room".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(membership: &str, missing_event: bool) -> GroupVisibility {
        GroupVisibility { history_visibility: None, membership: Some(membership.into()), missing_event }
    }

    #[test]
    fn ignore_lists_parse_leniently() {
        let ignored = parse_ignored(r#"{"ignored_users": {"@a:x": {}, "@b:x": {"x": 1}}}"#);
        assert_eq!(ignored, HashSet::from(["@a:x".to_string(), "@b:x".to_string()]));
        for junk in ["", "[]", r#"{"ignored_users": []}"#, r#"{"ignored_users": null}"#] {
            assert!(parse_ignored(junk).is_empty(), "{junk}");
        }
    }

    #[test]
    fn the_cache_keeps_settled_answers_per_group_and_user_within_its_bound() {
        let cache = Cache::default();
        cache.put(1, "@a:x", &facts("join", false));
        cache.put(2, "@a:x", &facts("join", true));
        assert_eq!(cache.get(1, "@a:x"), Some(facts("join", false)));
        assert_eq!(cache.get(1, "@b:x"), None);
        // An answer naming an event not held yet may change: not kept.
        assert_eq!(cache.get(2, "@a:x"), None);
        for group in 0..MAX_CACHED_FACTS as i64 {
            cache.put(100 + group, "@a:x", &facts("leave", false));
        }
        assert!(cache.facts.borrow().len() <= MAX_CACHED_FACTS);
        assert_eq!(cache.get(1, "@a:x"), None);
    }
}
