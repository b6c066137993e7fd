//! Sync filters: stored per user (`/user/{userId}/filter`) or given inline,
//! parsed once into [`Filter`] and applied by `/sync` and `/messages`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#filtering>.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::storage::StoredEvent;

/// Spec-less but Synapse's: timelines are capped at this many events per request.
pub const MAX_TIMELINE_LIMIT: usize = 1000;
/// The timeline length when the filter does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;

/// An event filter (types, senders, rooms, limit).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<usize>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub contains_url: Option<bool>,
}

/// The room part of a filter.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub account_data: EventFilter,
}

/// A whole filter.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub room: RoomFilter,
    pub account_data: EventFilter,
    pub presence: EventFilter,
    pub event_fields: Option<Vec<String>>,
    pub event_format: Option<String>,
}

/// Whether `pattern` (with `*` wildcards) matches `text`.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(mut remaining) = text.strip_prefix(prefix) else { return false };
            if rest.is_empty() {
                return true;
            }
            loop {
                if glob(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

impl EventFilter {
    /// Whether an event of `kind` from `sender` passes.
    pub fn allows(&self, kind: &str, sender: &str) -> bool {
        if self.not_types.iter().any(|pattern| glob(pattern, kind)) {
            return false;
        }
        if let Some(types) = &self.types {
            if !types.iter().any(|pattern| glob(pattern, kind)) {
                return false;
            }
        }
        if self.not_senders.iter().any(|not| not == sender) {
            return false;
        }
        if let Some(senders) = &self.senders {
            if !senders.iter().any(|allowed| allowed == sender) {
                return false;
            }
        }
        true
    }

    /// Whether a stored event passes (types, senders, contains_url).
    pub fn allows_event(&self, event: &StoredEvent) -> bool {
        if !self.allows(&event.kind, &event.sender) {
            return false;
        }
        if let Some(wanted) = self.contains_url {
            let has_url = event.json.get("content").and_then(|content| content.get("url")).is_some();
            if has_url != wanted {
                return false;
            }
        }
        true
    }

    /// The timeline limit, defaulted and capped.
    pub fn limit_or(&self, default: usize) -> usize {
        self.limit.unwrap_or(default).clamp(1, MAX_TIMELINE_LIMIT)
    }
}

impl RoomFilter {
    /// Whether a room passes the room lists.
    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|not| not == room_id)
            && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|room| room == room_id))
    }
}

/// Parses a filter's JSON; malformed filters are `M_BAD_JSON`.
pub fn parse(value: &Value) -> Result<Filter> {
    if !value.is_object() {
        return Err(Error::BadJson("a filter must be a JSON object".into()));
    }
    let filter: Filter = serde_json::from_value(value.clone())
        .map_err(|error| Error::BadJson(format!("invalid filter: {error}")))?;
    if let Some(format) = &filter.event_format {
        if format != "client" && format != "federation" {
            return Err(Error::BadJson("event_format must be client or federation".into()));
        }
    }
    Ok(filter)
}

/// The filter a request names: inline JSON (starting with `{`) or a stored ID.
pub fn from_param(app: &App, user_id: &str, param: Option<&str>) -> Result<Filter> {
    let Some(param) = param else { return Ok(Filter::default()) };
    if param.trim_start().starts_with('{') {
        let value: Value =
            serde_json::from_str(param).map_err(|error| Error::NotJson(format!("filter: {error}")))?;
        return parse(&value);
    }
    let filter_id: i64 = param.parse().map_err(|_| Error::InvalidParam(format!("unknown filter {param}")))?;
    let json = app
        .storage()
        .filter(user_id, filter_id)?
        .ok_or_else(|| Error::InvalidParam(format!("unknown filter {param}")))?;
    parse(&serde_json::from_str(&json).unwrap_or(Value::Null))
}

/// The `RoomEventFilter` a `filter` query parameter gives (/messages,
/// /context): inline JSON, or a stored filter's `room.timeline` part.
pub fn event_filter_param(app: &App, user_id: &str, param: Option<&str>) -> Result<EventFilter> {
    let Some(param) = param else { return Ok(EventFilter::default()) };
    if param.trim_start().starts_with('{') {
        let value: Value =
            serde_json::from_str(param).map_err(|error| Error::NotJson(format!("filter: {error}")))?;
        return event_filter(&value);
    }
    Ok(from_param(app, user_id, Some(param))?.room.timeline)
}

/// Parses a `RoomEventFilter` object; malformed ones are `M_BAD_JSON`.
pub fn event_filter(value: &Value) -> Result<EventFilter> {
    if !value.is_object() {
        return Err(Error::BadJson("a filter must be a JSON object".into()));
    }
    serde_json::from_value(value.clone()).map_err(|error| Error::BadJson(format!("invalid filter: {error}")))
}

/// `POST /user/{userId}/filter`.
pub fn create(app: &App, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only create filters for yourself".into()));
    }
    let body = Value::Object(request.json_object()?);
    parse(&body)?;
    let filter_id = app.storage().create_filter(user_id, &body.to_string())?;
    Ok(Response::ok(json!({ "filter_id": filter_id.to_string() })))
}

/// `GET /user/{userId}/filter/{filterId}`.
pub fn get(app: &App, request: &Request, user_id: &str, filter_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only read your own filters".into()));
    }
    let not_found = || Error::NotFound("no such filter".into());
    let filter_id: i64 = filter_id.parse().map_err(|_| not_found())?;
    let json = app.storage().filter(user_id, filter_id)?.ok_or_else(not_found)?;
    Ok(Response::ok(serde_json::from_str(&json).unwrap_or_else(|_| json!({}))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_spec_says() {
        assert!(glob("m.*", "m.room.message"));
        assert!(glob("*", "anything"));
        assert!(glob("m.room.*age", "m.room.message"));
        assert!(!glob("m.room.*", "org.example"));
        assert!(glob("m.room.message", "m.room.message"));
    }

    #[test]
    fn event_filters_apply_types_and_senders() {
        let filter: EventFilter = serde_json::from_value(json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@spam:x"]
        }))
        .unwrap();
        assert!(filter.allows("m.room.message", "@a:x"));
        assert!(!filter.allows("m.room.member", "@a:x"));
        assert!(!filter.allows("m.reaction", "@a:x"));
        assert!(!filter.allows("m.room.message", "@spam:x"));
    }

    #[test]
    fn malformed_filters_are_bad_json() {
        assert!(parse(&json!({"room": {"timeline": {"limit": "ten"}}})).is_err());
        assert!(parse(&json!([])).is_err());
        assert!(parse(&json!({"event_format": "xml"})).is_err());
        assert!(parse(&json!({"room": {"timeline": {"limit": 5}}})).is_ok());
    }
}
