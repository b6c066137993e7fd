//! Unread notification and highlight counts for `/sync`, from the events a
//! user has not yet read (after their read receipt).
//!
//! The counts follow the spirit of the default push rules: messages from
//! others notify; mentions of the user (by ID, localpart or display name, or
//! `m.mentions`) and `@room` highlight.

use serde_json::Value;

use crate::app::App;
use crate::error::Result;

/// Unread events are counted this far back at most, to bound the work.
const MAX_COUNTED_EVENTS: usize = 1000;

/// `(notification_count, highlight_count)` for a user in a room.
pub fn counts(app: &App, room_id: &str, user_id: &str) -> Result<(usize, usize)> {
    let read_up_to = app.storage().receipt_position(room_id, user_id)?.unwrap_or(0);
    let events = app.storage().room_events_backwards(room_id, read_up_to, i64::MAX, MAX_COUNTED_EVENTS)?;
    if events.is_empty() {
        return Ok((0, 0));
    }
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or_default().to_lowercase();
    let displayname =
        app.storage().user(user_id)?.and_then(|user| user.displayname).map(|name| name.to_lowercase());
    let mut notifications = 0;
    let mut highlights = 0;
    for event in &events {
        if event.sender == user_id || event.redacted_by.is_some() {
            continue;
        }
        let content = event.json.get("content").cloned().unwrap_or(Value::Null);
        let notifies = match event.kind.as_str() {
            "m.room.message" | "m.room.encrypted" | "m.sticker" => {
                // Edits do not notify again.
                content.pointer("/m.relates_to/rel_type").and_then(Value::as_str) != Some("m.replace")
            }
            "m.room.member" => {
                event.state_key.as_deref() == Some(user_id)
                    && content.get("membership").and_then(Value::as_str) == Some("invite")
            }
            _ => false,
        };
        if !notifies {
            continue;
        }
        notifications += 1;
        if mentions(&content, user_id, &localpart, displayname.as_deref()) {
            highlights += 1;
        }
    }
    Ok((notifications, highlights))
}

fn mentions(content: &Value, user_id: &str, localpart: &str, displayname: Option<&str>) -> bool {
    if let Some(mentions) = content.get("m.mentions") {
        let listed = mentions
            .get("user_ids")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(user_id)));
        return listed || mentions.get("room").and_then(Value::as_bool) == Some(true);
    }
    let Some(body) = content.get("body").and_then(Value::as_str) else { return false };
    let body = body.to_lowercase();
    let word = |needle: &str| {
        !needle.is_empty()
            && body.match_indices(needle).any(|(start, _)| {
                let before = body[..start].chars().next_back();
                let after = body[start + needle.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
            })
    };
    word(&user_id.to_lowercase())
        || word(localpart)
        || displayname.is_some_and(word)
        || body.contains("@room")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mentions_match_whole_words_and_m_mentions() {
        let check = |content: Value| mentions(&content, "@alice:x", "alice", Some("alice cooper"));
        assert!(check(json!({"body": "hi alice!"})));
        assert!(!check(json!({"body": "hi malice"})));
        assert!(check(json!({"body": "@room look"})));
        assert!(check(json!({"body": "x", "m.mentions": {"user_ids": ["@alice:x"]}})));
        assert!(!check(json!({"body": "alice", "m.mentions": {}})));
    }
}
