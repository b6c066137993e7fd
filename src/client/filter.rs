//! Sync filters: stored per user (`/user/{userId}/filter`) or given inline,
//! parsed once into [`Filter`] and applied by `/sync` and `/messages`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#filtering>.

use std::cell::OnceCell;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::glob::{self, Glob};
use crate::protocol::identifiers::{RoomId, UserId};
use crate::request::{Request, Response};
use crate::storage::StoredEvent;

/// Spec-less but Synapse's: timelines are capped at this many events per request.
pub const MAX_TIMELINE_LIMIT: usize = 1000;
/// The timeline length when the filter does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The longest `types`/`not_types` pattern: event types are at most 255
/// bytes (spec: size limits of PDUs), so longer patterns are mostly `*`s.
pub const MAX_PATTERN_CHARS: usize = 512;
/// The most patterns a `types` or `not_types` list may hold: every event
/// `/sync` or `/messages` reads is matched against each of them.
pub const MAX_PATTERNS: usize = 100;
/// The most entries a list of IDs (`senders`, `rooms`, ...) may hold.
pub const MAX_LIST_ENTRIES: usize = 1000;

/// An event filter (types, senders, rooms, limit).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    /// Any JSON number (Synapse's schema says `number`), floored into range.
    #[serde(deserialize_with = "any_number")]
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
    /// Per-thread unread counts in /sync (`unread_thread_notifications`).
    /// Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>.
    pub unread_thread_notifications: bool,
    /// The same under its unstable name (MSC3773), which clients still send.
    #[serde(rename = "org.matrix.msc3773.unread_thread_notifications")]
    pub unread_thread_notifications_unstable: bool,
    /// `not_types` and `types` compiled, on first use.
    #[serde(skip)]
    globs: OnceCell<TypeGlobs>,
}

/// The compiled patterns of an [`EventFilter`].
#[derive(Clone, Debug)]
struct TypeGlobs {
    not_types: Vec<Glob>,
    types: Option<Vec<Glob>>,
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

impl EventFilter {
    /// Whether an event of `kind` from `sender` passes.
    /// Spec: `types` and `not_types` take `*` as a wildcard for any run
    /// of characters (<https://spec.matrix.org/latest/client-server-api/#filtering>).
    pub fn allows(&self, kind: &str, sender: &str) -> bool {
        let globs = self.globs.get_or_init(|| {
            let compile = |patterns: &[String]| -> Vec<Glob> {
                patterns.iter().map(|pattern| Glob::new(pattern, glob::FILTER)).collect()
            };
            TypeGlobs { not_types: compile(&self.not_types), types: self.types.as_deref().map(compile) }
        });
        if globs.not_types.iter().any(|pattern| pattern.matches(kind)) {
            return false;
        }
        if let Some(types) = &globs.types {
            if !types.iter().any(|pattern| pattern.matches(kind)) {
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

    /// Whether /sync gives unread counts per thread.
    pub fn wants_thread_counts(&self) -> bool {
        self.unread_thread_notifications || self.unread_thread_notifications_unstable
    }

    /// The timeline limit, defaulted and capped.
    pub fn limit_or(&self, default: usize) -> usize {
        self.limit.unwrap_or(default).clamp(1, MAX_TIMELINE_LIMIT)
    }

    /// Refuses lists and patterns over the limits (`M_BAD_JSON`).
    fn check_bounds(&self) -> Result<()> {
        for patterns in [Some(&self.not_types), self.types.as_ref()].into_iter().flatten() {
            if patterns.len() > MAX_PATTERNS {
                return Err(Error::BadJson(format!(
                    "a filter's type list may hold at most {MAX_PATTERNS} patterns"
                )));
            }
            if patterns.iter().any(|pattern| pattern.chars().count() > MAX_PATTERN_CHARS) {
                return Err(Error::BadJson(format!(
                    "a filter's type patterns may have at most {MAX_PATTERN_CHARS} characters"
                )));
            }
        }
        let lists =
            [Some(&self.not_senders), self.senders.as_ref(), Some(&self.not_rooms), self.rooms.as_ref()];
        check_list_lengths(lists)
    }
}

/// Refuses ID lists longer than [`MAX_LIST_ENTRIES`] (`M_BAD_JSON`).
fn check_list_lengths<'a>(lists: impl IntoIterator<Item = Option<&'a Vec<String>>>) -> Result<()> {
    if lists.into_iter().flatten().any(|list| list.len() > MAX_LIST_ENTRIES) {
        return Err(Error::BadJson(format!("a filter's lists may hold at most {MAX_LIST_ENTRIES} entries")));
    }
    Ok(())
}

impl RoomFilter {
    /// Whether a room passes the room lists.
    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|not| not == room_id)
            && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|room| room == room_id))
    }
}

/// Reads `limit` from any JSON number, as Synapse's schema allows: fractions
/// are truncated and negatives become 0 (then clamped by [`EventFilter::limit_or`]).
fn any_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<usize>, D::Error> {
    let number: Option<f64> = Option::deserialize(deserializer)?;
    // `as` saturates: NaN is 0, huge values usize::MAX.
    Ok(number.map(|number| number.max(0.0) as usize))
}

/// What a field of a filter must hold, after Synapse's JSON schema for
/// filters (`synapse/api/filtering.py`); fields not named are free, for
/// forward compatibility, as there.
#[derive(Clone, Copy)]
enum Shape {
    Number,
    Bool,
    Strings,
    UserIds,
    RoomIds,
    EventFilter,
    RoomEventFilter,
    RoomFilter,
}

/// The fields of an `EventFilter` (`presence`, top-level `account_data`).
const EVENT_FILTER_FIELDS: &[(&str, Shape)] = &[
    ("limit", Shape::Number),
    ("senders", Shape::UserIds),
    ("not_senders", Shape::UserIds),
    ("types", Shape::Strings),
    ("not_types", Shape::Strings),
    ("org.matrix.msc3874.rel_types", Shape::Strings),
    ("org.matrix.msc3874.not_rel_types", Shape::Strings),
];

/// The fields of a `RoomEventFilter` (`timeline`, `state`, ...).
const ROOM_EVENT_FILTER_FIELDS: &[(&str, Shape)] = &[
    ("limit", Shape::Number),
    ("senders", Shape::UserIds),
    ("not_senders", Shape::UserIds),
    ("types", Shape::Strings),
    ("not_types", Shape::Strings),
    ("rooms", Shape::RoomIds),
    ("not_rooms", Shape::RoomIds),
    ("contains_url", Shape::Bool),
    ("lazy_load_members", Shape::Bool),
    ("include_redundant_members", Shape::Bool),
    ("unread_thread_notifications", Shape::Bool),
    ("org.matrix.msc3773.unread_thread_notifications", Shape::Bool),
    ("org.matrix.labels", Shape::Strings),
    ("org.matrix.not_labels", Shape::Strings),
    ("related_by_senders", Shape::Strings),
    ("related_by_rel_types", Shape::Strings),
];

/// The fields of a `RoomFilter`.
const ROOM_FILTER_FIELDS: &[(&str, Shape)] = &[
    ("rooms", Shape::RoomIds),
    ("not_rooms", Shape::RoomIds),
    ("include_leave", Shape::Bool),
    ("ephemeral", Shape::RoomEventFilter),
    ("state", Shape::RoomEventFilter),
    ("timeline", Shape::RoomEventFilter),
    ("account_data", Shape::RoomEventFilter),
];

/// The fields of a whole filter (`event_format` is checked by [`parse`]).
const FILTER_FIELDS: &[(&str, Shape)] = &[
    ("presence", Shape::EventFilter),
    ("account_data", Shape::EventFilter),
    ("room", Shape::RoomFilter),
    ("event_fields", Shape::Strings),
];

/// Checks a filter against the filter schema, as Synapse does before storing
/// one: a field of the wrong type (`null` included) is `M_BAD_JSON`, a
/// `senders`/`rooms` entry that is not a user or room ID `M_INVALID_PARAM`.
/// The nesting is fixed (three levels at most), so this is one pass.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3useruseridfilter>.
pub fn check_schema(value: &Value) -> Result<()> {
    check_fields("filter", value, FILTER_FIELDS)
}

fn check_fields(path: &str, value: &Value, fields: &[(&str, Shape)]) -> Result<()> {
    let Some(object) = value.as_object() else {
        return Err(Error::BadJson(format!("{path} must be an object")));
    };
    for (name, shape) in fields {
        if let Some(field) = object.get(*name) {
            check_shape(&format!("{path}.{name}"), field, *shape)?;
        }
    }
    Ok(())
}

fn check_shape(path: &str, value: &Value, shape: Shape) -> Result<()> {
    let strings = || -> Result<&Vec<Value>> {
        match value.as_array() {
            Some(list) if list.iter().all(Value::is_string) => Ok(list),
            _ => Err(Error::BadJson(format!("{path} must be a list of strings"))),
        }
    };
    let ids = |valid: fn(&str) -> bool, what: &str| -> Result<()> {
        if strings()?.iter().filter_map(Value::as_str).all(valid) {
            Ok(())
        } else {
            Err(Error::InvalidParam(format!("{path} must hold {what}")))
        }
    };
    match shape {
        Shape::Number if value.is_number() => Ok(()),
        Shape::Number => Err(Error::BadJson(format!("{path} must be a number"))),
        Shape::Bool if value.is_boolean() => Ok(()),
        Shape::Bool => Err(Error::BadJson(format!("{path} must be true or false"))),
        Shape::Strings => strings().map(|_| ()),
        Shape::UserIds => ids(|id| UserId::parse(id).is_ok(), "user IDs"),
        Shape::RoomIds => ids(|id| RoomId::parse(id).is_ok(), "room IDs"),
        Shape::EventFilter => check_fields(path, value, EVENT_FILTER_FIELDS),
        Shape::RoomEventFilter => check_fields(path, value, ROOM_EVENT_FILTER_FIELDS),
        Shape::RoomFilter => check_fields(path, value, ROOM_FILTER_FIELDS),
    }
}

/// Parses a filter's JSON; malformed filters, and filters over the limits,
/// are `M_BAD_JSON`. Stored filters go through here on every use, so one
/// stored before the limits existed answers that error too.
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
    let room = &filter.room;
    for part in [
        &room.timeline,
        &room.state,
        &room.ephemeral,
        &room.account_data,
        &filter.account_data,
        &filter.presence,
    ] {
        part.check_bounds()?;
    }
    check_list_lengths([Some(&room.not_rooms), room.rooms.as_ref(), filter.event_fields.as_ref()])?;
    Ok(filter)
}

/// The filter a request names: inline JSON (starting with `{`) or a stored ID.
pub fn from_param(app: &App, user_id: &str, param: Option<&str>) -> Result<Filter> {
    let Some(param) = param else { return Ok(Filter::default()) };
    if param.trim_start().starts_with('{') {
        let value: Value =
            serde_json::from_str(param).map_err(|error| Error::NotJson(format!("filter: {error}")))?;
        check_schema(&value)?;
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

/// Parses a `RoomEventFilter` object; malformed ones, and ones over the
/// limits, are `M_BAD_JSON`.
pub fn event_filter(value: &Value) -> Result<EventFilter> {
    if !value.is_object() {
        return Err(Error::BadJson("a filter must be a JSON object".into()));
    }
    let filter: EventFilter = serde_json::from_value(value.clone())
        .map_err(|error| Error::BadJson(format!("invalid filter: {error}")))?;
    filter.check_bounds()?;
    Ok(filter)
}

/// `POST /user/{userId}/filter`.
pub fn create(app: &App, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only create filters for yourself".into()));
    }
    let body = Value::Object(request.json_object()?);
    check_schema(&body)?;
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
    fn type_globs_match_like_the_spec_says() {
        let allows = |pattern: &str, kind: &str| {
            let filter = event_filter(&json!({ "types": [pattern] })).unwrap();
            filter.allows(kind, "@a:x")
        };
        assert!(allows("m.*", "m.room.message"));
        assert!(allows("*", "anything"));
        assert!(allows("m.room.*age", "m.room.message"));
        assert!(!allows("m.room.*", "org.example"));
        assert!(allows("m.room.message", "m.room.message"));
        assert!(!allows("M.room.message", "m.room.message"));
        assert!(!allows("m.room.?essage", "m.room.message"));
        assert!(!allows("************Z", "m.room.message"));
    }

    #[test]
    fn filters_over_the_limits_are_bad_json() {
        let stars = "*".repeat(500_000);
        assert!(parse(&json!({"room": {"timeline": {"types": [stars]}}})).is_err());
        assert!(event_filter(&json!({"not_types": ["x".repeat(MAX_PATTERN_CHARS + 1)]})).is_err());
        assert!(event_filter(&json!({"types": ["x".repeat(MAX_PATTERN_CHARS)]})).is_ok());
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|index| format!("t{index}")).collect();
        assert!(parse(&json!({"presence": {"types": many}})).is_err());
        let senders: Vec<String> = (0..=MAX_LIST_ENTRIES).map(|index| format!("@u{index}:x")).collect();
        assert!(parse(&json!({"room": {"state": {"not_senders": senders}}})).is_err());
        assert!(parse(&json!({"room": {"rooms": senders}})).is_err());
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
    fn the_schema_refuses_what_synapse_refuses() {
        let bad_json = |value: Value| matches!(check_schema(&value), Err(Error::BadJson(_)));
        let invalid = |value: Value| matches!(check_schema(&value), Err(Error::InvalidParam(_)));
        assert!(bad_json(json!({"presence": "not_an_object"})));
        assert!(bad_json(json!({"room": {"timeline": "not_an_object"}})));
        assert!(bad_json(json!({"room": {"include_leave": "yes"}})));
        assert!(bad_json(json!({"room": {"state": {"lazy_load_members": 1}}})));
        assert!(bad_json(json!({"room": {"timeline": {"types": [1]}}})));
        assert!(bad_json(json!({"room": {"timeline": {"types": null}}})));
        assert!(bad_json(json!({"account_data": {"not_types": "m.*"}})));
        assert!(bad_json(json!({"room": {"timeline": {"unread_thread_notifications": "yes"}}})));
        assert!(bad_json(json!({"event_fields": "content.body"})));
        assert!(bad_json(json!({"room": {"timeline": {"limit": "10"}}})));
        assert!(invalid(json!({"room": {"timeline": {"senders": ["alice"]}}})));
        assert!(invalid(json!({"room": {"rooms": ["not_a_room"]}})));
        assert!(invalid(json!({"presence": {"not_senders": ["@:"]}})));
        // Unknown fields are free; numbers of any kind are limits.
        let fine = json!({
            "future": {"anything": [1, null]},
            "room": {"timeline": {"limit": 2.5, "senders": ["@a:x"], "rooms": ["!r:x"], "x": 1}},
        });
        assert!(check_schema(&fine).is_ok());
        assert_eq!(parse(&fine).unwrap().room.timeline.limit_or(10), 2);
        assert_eq!(
            parse(&json!({"room": {"timeline": {"limit": -3}}})).unwrap().room.timeline.limit_or(10),
            1
        );
    }

    #[test]
    fn malformed_filters_are_bad_json() {
        assert!(parse(&json!({"room": {"timeline": {"limit": "ten"}}})).is_err());
        assert!(parse(&json!([])).is_err());
        assert!(parse(&json!({"event_format": "xml"})).is_err());
        assert!(parse(&json!({"room": {"timeline": {"limit": 5}}})).is_ok());
    }
}
