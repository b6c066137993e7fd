//! The notifications list behind `GET /notifications`: the events in the
//! user's joined rooms whose push rules say `notify`, newest first.
//!
//! Nothing is stored when an event arrives: the user's current push rules are
//! evaluated over each room's recent events when the list is asked for (as
//! [`super::unread`] does for the counts). So a rule changed later changes
//! the list too, and the scan is bounded per page by
//! [`MAX_SCANNED_PER_ROOM`]; paging on (`next_token`) reaches further back.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#listing-notifications>.

use serde_json::Value;

use crate::error::Result;
use crate::protocol::push_rules::Outcome;
use crate::rooms::Engine;
use crate::storage::StoredEvent;

use super::push;
use super::unread::RoomFacts;
use super::visibility::Visibility;

/// Events looked at per room and page: each costs a push-rule evaluation, so
/// a page over many quiet rooms stays a bounded amount of work.
pub const MAX_SCANNED_PER_ROOM: usize = 500;

/// One entry of the list.
pub struct Notification {
    pub event: StoredEvent,
    /// The actions of the rule that matched.
    pub actions: Vec<Value>,
    /// Whether the user's read receipt is at or after the event.
    pub read: bool,
}

/// A page of notifications.
pub struct Page {
    pub notifications: Vec<Notification>,
    /// Where the next page starts (events before this stream position), if
    /// there may be more.
    pub next: Option<i64>,
}

/// Up to `limit` notifications for `user_id` from events before stream
/// position `before`, newest first; highlights only if `only_highlight`.
pub fn list(app: &Engine, user_id: &str, before: i64, limit: usize, only_highlight: bool) -> Result<Page> {
    let ruleset = push::ruleset(app, user_id)?;
    let visibility = Visibility::new(app, user_id);
    let mut found: Vec<Notification> = Vec::new();
    // Every event at or after `complete_from` has been looked at in every room.
    let mut complete_from = i64::MIN;
    // The storage is borrowed one statement at a time.
    let rooms = app.storage().rooms_with_membership(user_id, "join")?;
    for room_id in rooms {
        let events = app.storage().room_events_backwards(&room_id, 0, before - 1, MAX_SCANNED_PER_ROOM)?;
        if events.len() == MAX_SCANNED_PER_ROOM {
            if let Some(oldest) = events.last() {
                complete_from = complete_from.max(oldest.stream_ordering);
            }
        }
        if events.iter().all(|event| event.sender == user_id) {
            continue;
        }
        let read_up_to = app.storage().receipt_position(&room_id, user_id)?.unwrap_or(0);
        let facts = RoomFacts::load(app, &room_id, user_id)?;
        let context = facts.context(user_id);
        for event in events {
            // A redacted event no longer notifies (its content is gone).
            if event.redacted_by.is_some() {
                continue;
            }
            let Some((_, rule)) = ruleset.matching_rule(&event.json, &context) else { continue };
            let outcome = Outcome::of(&rule.actions);
            if !outcome.notify || (only_highlight && !outcome.highlight) || !visibility.can_see(&event) {
                continue;
            }
            let read = event.stream_ordering <= read_up_to;
            found.push(Notification { event, actions: rule.actions.clone(), read });
        }
    }
    found.retain(|notification| complete_from <= notification.event.stream_ordering);
    found.sort_by_key(|notification| std::cmp::Reverse(notification.event.stream_ordering));
    let next = if limit < found.len() {
        found.truncate(limit);
        found.last().map(|notification| notification.event.stream_ordering)
    } else if complete_from != i64::MIN {
        Some(complete_from)
    } else {
        None
    };
    Ok(Page { notifications: found, next })
}
