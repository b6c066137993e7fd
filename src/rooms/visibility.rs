//! History visibility: whether a user may see an event, from the room's
//! `m.room.history_visibility` and the user's membership at that event.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#history-visibility>.

use std::collections::HashMap;

use serde_json::Value;

use crate::app::App;
use crate::error::{Error, Result};
use crate::storage::StoredEvent;

/// Per-request memory of what each state group says, so a page of events
/// costs a few lookups, not one per event.
pub struct Visibility<'a> {
    app: &'a App,
    user_id: &'a str,
    by_group: HashMap<i64, (String, Option<String>)>,
    current: HashMap<String, Option<String>>,
}

impl<'a> Visibility<'a> {
    pub fn new(app: &'a App, user_id: &'a str) -> Self {
        Visibility { app, user_id, by_group: HashMap::new(), current: HashMap::new() }
    }

    /// `(history_visibility, the user's membership)` at a state group.
    fn at_group(&mut self, group: i64) -> (String, Option<String>) {
        if let Some(found) = self.by_group.get(&group) {
            return found.clone();
        }
        let storage = self.app.storage();
        let content_at = |kind: &str, state_key: &str| -> Option<Value> {
            let event_id = storage.state_entry_of_group(group, kind, state_key).ok().flatten()?;
            storage.event(&event_id).ok().flatten()?.json.get("content").cloned()
        };
        let visibility = content_at("m.room.history_visibility", "")
            .and_then(|content| content.get("history_visibility").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "shared".into());
        let membership = content_at("m.room.member", self.user_id)
            .and_then(|content| content.get("membership").and_then(Value::as_str).map(str::to_owned));
        drop(storage);
        self.by_group.insert(group, (visibility.clone(), membership.clone()));
        (visibility, membership)
    }

    fn current_membership(&mut self, room_id: &str) -> Option<String> {
        if let Some(found) = self.current.get(room_id) {
            return found.clone();
        }
        let membership = self.app.storage().membership(room_id, self.user_id).ok().flatten();
        self.current.insert(room_id.to_string(), membership.clone());
        membership
    }

    /// Whether the user may see `event`.
    pub fn can_see(&mut self, event: &StoredEvent) -> bool {
        // Everyone sees their own membership changes.
        if event.kind == "m.room.member" && event.state_key.as_deref() == Some(self.user_id) {
            return true;
        }
        let Some(group) = event.state_group else { return false };
        let (visibility, membership) = self.at_group(group);
        if visibility == "world_readable" || membership.as_deref() == Some("join") {
            return true;
        }
        match visibility.as_str() {
            "shared" => self.current_membership(&event.room_id).as_deref() == Some("join"),
            "invited" => membership.as_deref() == Some("invite"),
            _ => false,
        }
    }

    /// Whether the user may read the room's state and history at all now
    /// (joined, or the room is world readable).
    pub fn can_read_room(&mut self, room_id: &str) -> bool {
        if self.current_membership(room_id).as_deref() == Some("join") {
            return true;
        }
        let Ok(Some(group)) = self.app.storage().room_state_group(room_id) else { return false };
        self.at_group(group).0 == "world_readable"
    }
}

/// The newest stream position of a room's history a user may read: the end of
/// the room when joined (or the room is world readable), their departure when
/// they left or were banned. Anyone else gets 403, as Synapse answers.
pub fn readable_up_to(app: &App, user_id: &str, room_id: &str) -> Result<i64> {
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
