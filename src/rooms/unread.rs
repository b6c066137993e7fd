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

use serde_json::Value;

use crate::app::App;
use crate::error::Result;
use crate::protocol::power_levels::RoomPower;
use crate::protocol::push_rules::Context;
use crate::storage::StateMap;

use super::push;

/// Unread events are counted this far back at most, to bound the work.
const MAX_COUNTED_EVENTS: usize = 1000;

/// `(notification_count, highlight_count)` for a user in a room.
pub fn counts(app: &App, room_id: &str, user_id: &str) -> Result<(usize, usize)> {
    let read_up_to = app.storage().receipt_position(room_id, user_id)?.unwrap_or(0);
    let events = app.storage().room_events_backwards(room_id, read_up_to, i64::MAX, MAX_COUNTED_EVENTS)?;
    if events.iter().all(|event| event.sender == user_id || event.redacted_by.is_some()) {
        return Ok((0, 0));
    }
    let ruleset = push::ruleset(app, user_id)?;
    let facts = RoomFacts::load(app, room_id, user_id)?;
    let context = facts.context(user_id);
    let mut notifications = 0;
    let mut highlights = 0;
    for event in &events {
        // A redacted event no longer notifies (its content is gone).
        if event.redacted_by.is_some() {
            continue;
        }
        let outcome = ruleset.evaluate(&event.json, &context);
        notifications += usize::from(outcome.notify);
        highlights += usize::from(outcome.highlight);
    }
    Ok((notifications, highlights))
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
