//! Unread notification and highlight counts for `/sync`: the user's push
//! rules evaluated over the events after their read receipt.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>:
//! an event counts when the first matching rule's actions say `notify`, and
//! as a highlight when they also set the `highlight` tweak.
//!
//! Room facts the conditions need (member count, the user's display name,
//! power levels) are taken from the room's current state, not the state at
//! each event; for the few events a user has unread the difference is small.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use crate::app::App;
use crate::error::Result;
use crate::protocol::power_levels::RoomPower;
use crate::protocol::push_rules::Context;
use crate::storage::{StateMap, StoredEvent};

use super::push;

/// Unread events are counted this far back at most, to bound the work.
const MAX_COUNTED_EVENTS: usize = 1000;

/// Cached (room, user) tallies kept at most; past this the cache starts over
/// (each entry is a few dozen bytes plus the two IDs).
const MAX_CACHED_TALLIES: usize = 4096;

/// The tallies of the last [`counts`] per (room, user), so that the next call
/// only evaluates the events that arrived since (a /sync used to evaluate up
/// to [`MAX_COUNTED_EVENTS`] events per room, every time).
///
/// A tally is dropped (recomputed from the receipt) when the receipt moves,
/// when a new event is a state event or a redaction (the rule context or an
/// already counted event changed), when the window would pass
/// [`MAX_COUNTED_EVENTS`], and on every change of the user's push rules or
/// ignore list ([`Cache::forget_user`]). So the counts are what a full evaluation gives.
#[derive(Default)]
pub struct Cache {
    tallies: RefCell<HashMap<(String, String), Tally>>,
}

impl Cache {
    /// Forgets the user's tallies (their push rules or ignore list changed).
    pub fn forget_user(&self, user_id: &str) {
        self.tallies.borrow_mut().retain(|(_, user), _| user != user_id);
    }

    fn get(&self, room_id: &str, user_id: &str) -> Option<Tally> {
        // The key is owned; a lookup by borrowed pair would need a custom key type.
        self.tallies.borrow().get(&(room_id.to_owned(), user_id.to_owned())).copied()
    }

    fn put(&self, room_id: &str, user_id: &str, tally: Tally) {
        let mut tallies = self.tallies.borrow_mut();
        if tallies.len() >= MAX_CACHED_TALLIES {
            tallies.clear();
        }
        tallies.insert((room_id.to_owned(), user_id.to_owned()), tally);
    }
}

/// The counts over the unread events `(read_up_to, counted_up_to]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tally {
    read_up_to: i64,
    counted_up_to: i64,
    /// Events in the window (redacted and own included), for the bound.
    events: usize,
    /// Whether an unredacted event from someone else is in the window: if not,
    /// nothing is unread.
    foreign: bool,
    notifications: usize,
    highlights: usize,
}

impl Tally {
    fn empty(read_up_to: i64) -> Tally {
        Tally {
            read_up_to,
            counted_up_to: read_up_to,
            events: 0,
            foreign: false,
            notifications: 0,
            highlights: 0,
        }
    }

    fn counts(&self) -> (usize, usize) {
        if self.foreign { (self.notifications, self.highlights) } else { (0, 0) }
    }
}

/// `(notification_count, highlight_count)` for a user in a room.
pub fn counts(app: &App, room_id: &str, user_id: &str) -> Result<(usize, usize)> {
    let read_up_to = app.storage().receipt_position(room_id, user_id)?.unwrap_or(0);
    if let Some(cached) = app.unread.get(room_id, user_id).filter(|tally| tally.read_up_to == read_up_to) {
        let newer = app.storage().room_events_backwards(
            room_id,
            cached.counted_up_to,
            i64::MAX,
            MAX_COUNTED_EVENTS,
        )?;
        if newer.is_empty() {
            return Ok(cached.counts());
        }
        let context_kept =
            newer.iter().all(|event| event.state_key.is_none() && event.kind != "m.room.redaction");
        // Once someone else's event is unread, the user's own ones count too:
        // a tally that had none evaluated nothing yet.
        let evaluated_all = cached.foreign
            || cached.events == 0
            || newer.iter().all(|event| event.sender == user_id || event.redacted_by.is_some());
        if context_kept && evaluated_all && cached.events + newer.len() <= MAX_COUNTED_EVENTS {
            let tally = tally(app, room_id, user_id, cached, &newer)?;
            app.unread.put(room_id, user_id, tally);
            return Ok(tally.counts());
        }
    }
    let events = app.storage().room_events_backwards(room_id, read_up_to, i64::MAX, MAX_COUNTED_EVENTS)?;
    let tally = tally(app, room_id, user_id, Tally::empty(read_up_to), &events)?;
    app.unread.put(room_id, user_id, tally);
    Ok(tally.counts())
}

/// `start` with `events` (newest first, all after `start.counted_up_to`) added.
fn tally(app: &App, room_id: &str, user_id: &str, start: Tally, events: &[StoredEvent]) -> Result<Tally> {
    let mut tally = start;
    tally.events += events.len();
    tally.counted_up_to =
        events.iter().map(|event| event.stream_ordering).fold(start.counted_up_to, i64::max);
    tally.foreign |= events.iter().any(|event| event.sender != user_id && event.redacted_by.is_none());
    if !tally.foreign {
        // Nothing unread: no need to load the rules and the room facts.
        return Ok(tally);
    }
    let ruleset = push::ruleset(app, user_id)?;
    let facts = RoomFacts::load(app, room_id, user_id)?;
    let context = facts.context(user_id);
    let ignored = super::visibility::ignored_users(app, user_id)?;
    for event in events {
        // A redacted event no longer notifies (its content is gone); an
        // ignored user's messages are not delivered, so they do not count.
        if event.redacted_by.is_some() || (event.state_key.is_none() && ignored.contains(&event.sender)) {
            continue;
        }
        let outcome = ruleset.evaluate(&event.json, &context);
        tally.notifications += usize::from(outcome.notify);
        tally.highlights += usize::from(outcome.highlight);
    }
    Ok(tally)
}

/// What a user's push rule conditions look at in one room.
pub struct RoomFacts {
    member_count: u64,
    display_name: Option<String>,
    power: RoomPower,
}

impl RoomFacts {
    /// Reads the facts from the room's current state.
    pub fn load(app: &App, room_id: &str, user_id: &str) -> Result<RoomFacts> {
        let member_count = app.storage().member_count(room_id, "join")?;
        let display_name = display_name(app, room_id, user_id)?;
        let version = super::room_version(app, room_id)?;
        let mut power_state = StateMap::new();
        for kind in ["m.room.power_levels", "m.room.create"] {
            if let Some(event_id) = app.storage().current_state_event(room_id, kind, "")? {
                power_state.insert((kind.to_owned(), String::new()), event_id);
            }
        }
        let power = super::current_power(app, &version, &power_state);
        Ok(RoomFacts { member_count, display_name, power })
    }

    /// The evaluation context for `user_id`.
    pub fn context<'a>(&'a self, user_id: &'a str) -> Context<'a> {
        Context {
            user_id,
            display_name: self.display_name.as_deref(),
            member_count: self.member_count,
            power: &self.power,
        }
    }
}

/// The user's display name in the room (from their member event; their
/// profile's if they have none).
fn display_name(app: &App, room_id: &str, user_id: &str) -> Result<Option<String>> {
    match super::current_state_content(app, room_id, "m.room.member", user_id)? {
        Some(member) => Ok(member.get("displayname").and_then(Value::as_str).map(str::to_owned)),
        None => Ok(app.storage().user(user_id)?.and_then(|user| user.displayname)),
    }
}
