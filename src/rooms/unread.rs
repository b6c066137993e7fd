//! Unread notification and highlight counts: per user, room and thread,
//! kept at write time. `push_actions` decides, when an event is stored,
//! which local members it notifies and raises their counters in the same
//! transaction; a read receipt takes the events it covers out; /sync (and
//! the push gateway's badge) only read the counters. Exact, with no cap, and
//! a read costs the same at 10 or 10,000 unread.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>,
//! threads: <https://spec.matrix.org/latest/client-server-api/#threaded-read-receipts>.
//! An unthreaded receipt on event E reads every thread up to E; a threaded
//! one (`main` or a thread root) reads that thread up to E. A receipt behind
//! an earlier one reads nothing more (as Synapse ignores it for counting).
//!
//! What counts follows the rules in force when an event arrives (see
//! `push_actions`): changing push rules or the ignore list applies to new
//! events only. A redacted event stops counting. Leaving a room forgets its
//! counts. Events stored before the counters existed (schema migration 17)
//! start from zero.

use serde_json::Value;

use crate::error::Result;
use crate::protocol::power_levels::RoomPower;
use crate::protocol::push_rules::Context;
use crate::rooms::Engine;
use crate::storage::{MAIN_THREAD, StateMap, StoredEvent};

pub use crate::storage::ThreadCounts;

/// A user's counts in a room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomCounts {
    /// The main timeline's `(notification_count, highlight_count)`.
    pub main: (u64, u64),
    /// Each thread with anything unread, by root event ID.
    pub threads: Vec<ThreadCounts>,
}

impl RoomCounts {
    /// The counts over the whole room, threads included.
    pub fn total(&self) -> (u64, u64) {
        self.threads.iter().fold(self.main, |(notifications, highlights), thread| {
            (notifications + thread.notifications, highlights + thread.highlights)
        })
    }
}

/// A user's counts in a room, per thread: one indexed read of a few rows.
pub fn room_counts(app: &Engine, room_id: &str, user_id: &str) -> Result<RoomCounts> {
    let mut counts = RoomCounts::default();
    for thread in app.storage().unread_counts(user_id, room_id)? {
        if thread.thread_id == MAIN_THREAD {
            counts.main = (thread.notifications, thread.highlights);
        } else {
            counts.threads.push(thread);
        }
    }
    Ok(counts)
}

/// `(notification_count, highlight_count)` for a user in a room, threads included.
pub fn counts(app: &Engine, room_id: &str, user_id: &str) -> Result<(u64, u64)> {
    Ok(room_counts(app, room_id, user_id)?.total())
}

/// The user's notification count over all their rooms (a push's badge).
pub fn total_notifications(app: &Engine, user_id: &str) -> Result<u64> {
    app.storage().unread_total(user_id)
}

/// A read receipt on `event`, unthreaded (`thread_id` empty) or in one thread
/// (`main` or a root's ID): returns whether the user's counts went down.
pub fn read_up_to(app: &Engine, user_id: &str, event: &StoredEvent, thread_id: &str) -> Result<bool> {
    let thread = Some(thread_id).filter(|thread| !thread.is_empty());
    app.storage().read_unread_up_to(user_id, &event.room_id, thread, event.stream_ordering)
}

/// Takes a redacted event out of everyone's counts: those it can count for
/// are the room's push audience (its local members but a bridge's ghosts;
/// who left has no counts there), kept in memory, so a redaction in a room
/// of thousands of ghosts looks up none of them.
pub fn forget_redacted(app: &Engine, target: &StoredEvent) -> Result<()> {
    let users = super::push_actions::audience(app, &target.room_id)?;
    app.storage().forget_unread_event(&target.room_id, target.stream_ordering, &users)
}

/// Forgets a user's counts in a room they left (or were kicked or banned
/// from), so a later return starts afresh.
pub fn forget_departed(app: &Engine, pdu: &crate::protocol::pdu::Pdu) -> Result<()> {
    if pdu.kind != "m.room.member" {
        return Ok(());
    }
    let membership = pdu.content.get("membership").and_then(Value::as_str);
    let (Some("leave" | "ban"), Some(user_id)) = (membership, pdu.state_key.as_deref()) else {
        return Ok(());
    };
    app.storage().forget_unread_room(user_id, &pdu.room_id)
}

/// What a user's push rule conditions look at in one room.
pub struct RoomFacts {
    member_count: u64,
    display_name: Option<String>,
    power: RoomPower,
}

impl RoomFacts {
    /// Reads the facts from the room's current state.
    pub fn load(app: &Engine, room_id: &str, user_id: &str) -> Result<RoomFacts> {
        let facts = RoomFacts::of_room(app, room_id)?;
        Ok(RoomFacts { display_name: display_name(app, room_id, user_id)?, ..facts })
    }

    /// The facts of the room alone (no display name: see [`RoomFacts::context_as`]).
    pub fn of_room(app: &Engine, room_id: &str) -> Result<RoomFacts> {
        let member_count = app.storage().member_count(room_id, "join")?;
        let version = super::room_version(app, room_id)?;
        let mut power_state = StateMap::new();
        for kind in ["m.room.power_levels", "m.room.create"] {
            if let Some(event_id) = app.storage().current_state_event(room_id, kind, "")? {
                power_state.insert((kind.to_owned(), String::new()), event_id);
            }
        }
        let power = super::current_power(app, &version, &power_state);
        Ok(RoomFacts { member_count, display_name: None, power })
    }

    /// Takes a member joining (`joined`) or leaving (a joined member's
    /// membership changing) into the member count.
    pub fn count_member(&mut self, joined: bool) {
        self.member_count =
            if joined { self.member_count.saturating_add(1) } else { self.member_count.saturating_sub(1) };
    }

    /// The evaluation context for `user_id` (the one [`RoomFacts::load`] read).
    pub fn context<'a>(&'a self, user_id: &'a str) -> Context<'a> {
        self.context_as(user_id, self.display_name.as_deref())
    }

    /// The evaluation context for `user_id`, whose display name in the room is `display_name`.
    pub fn context_as<'a>(&'a self, user_id: &'a str, display_name: Option<&'a str>) -> Context<'a> {
        Context { user_id, display_name, member_count: self.member_count, power: &self.power }
    }
}

/// The user's display name in the room (from their member event; their
/// profile's if they have none).
fn display_name(app: &Engine, room_id: &str, user_id: &str) -> Result<Option<String>> {
    match super::current_state_content(app, room_id, "m.room.member", user_id)? {
        Some(member) => Ok(member.get("displayname").and_then(Value::as_str).map(str::to_owned)),
        None => Ok(app.storage().user(user_id)?.and_then(|user| user.displayname)),
    }
}
