//! `m.room.power_levels`: parsing its content per room version and answering
//! "how powerful is this user" and "what level does this action need".
//!
//! Pure: the caller hands in the power levels and create events it has.
//! Spec: <https://spec.matrix.org/latest/client-server-api/#mroompower_levels>,
//! string and float values in old rooms:
//! <https://spec.matrix.org/latest/rooms/v1/#mroompower_levels-events-accept-values-as-strings>,
//! room creators in v12: <https://spec.matrix.org/latest/rooms/v12/#authorization-rules>.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::pdu::Pdu;
use super::room_version::RoomVersion;

/// Spec (client-server `m.room.power_levels`): kick, ban and redact default to 50.
const DEFAULT_MODERATION_LEVEL: i64 = 50;
/// Spec: `state_default` is 50 when absent, with or without a power levels event.
/// (Older spec text said 0 without a power levels event; the current text and
/// Synapse say 50, and servers must agree, so we follow them.)
const DEFAULT_STATE_LEVEL: i64 = 50;
/// Spec: `notifications.room` defaults to 50.
const DEFAULT_ROOM_NOTIFICATION_LEVEL: i64 = 50;
/// Spec: without a power levels event the room creator has 100.
const CREATOR_LEVEL_WITHOUT_POWER_LEVELS: i64 = 100;
/// Spec (appendices, canonical JSON): integers lie in `[-(2**53)+1, (2**53)-1]`.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// Spec (appendices, user identifiers): user IDs are at most 255 bytes.
const MAX_USER_ID_BYTES: usize = 255;

/// The named levels of a power levels event, each `None` when absent.
const NAMED_LEVELS: [&str; 7] =
    ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"];

/// The content of an `m.room.power_levels` event, validated. Absent named
/// levels stay `None` (the auth rules need to see additions and removals); the
/// accessors apply the spec defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerLevels {
    /// `users_default`, `events_default`, ..., keyed by their JSON name.
    pub named: BTreeMap<String, i64>,
    pub users: BTreeMap<String, i64>,
    pub events: BTreeMap<String, i64>,
    /// Only meaningful from room v6 (`limit_notifications_power_levels`).
    pub notifications: BTreeMap<String, i64>,
}

/// Why a power levels content is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerLevelsError(pub String);

impl std::fmt::Display for PowerLevelsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's power: a level, or the unlimited power of a v12 room creator,
/// which compares above every integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UserPower {
    Level(i64),
    Infinite,
}

impl PowerLevels {
    /// Parses `content` as the version allows: integers only from v10
    /// (`integer_power_levels`), strings holding integers before, and floats
    /// (truncated) before v6 (`strict_canonical_json`). Every value must parse;
    /// `users` keys must be user IDs.
    pub fn from_content(version: &RoomVersion, content: &Value) -> Result<PowerLevels, PowerLevelsError> {
        let object =
            content.as_object().ok_or_else(|| PowerLevelsError("content is not an object".into()))?;
        let mut levels = PowerLevels::default();
        for name in NAMED_LEVELS {
            if let Some(value) = object.get(name) {
                levels.named.insert(name.to_owned(), level_value(version, name, value)?);
            }
        }
        levels.users = level_map(version, object.get("users"), "users")?;
        if let Some(bad) = levels.users.keys().find(|user| !is_valid_user_id(user)) {
            return Err(PowerLevelsError(format!("`{bad}` in users is not a user ID")));
        }
        levels.events = level_map(version, object.get("events"), "events")?;
        levels.notifications = if version.limit_notifications_power_levels {
            level_map(version, object.get("notifications"), "notifications")?
        } else {
            // Before v6 nothing checks `notifications`: keep what parses and
            // never reject the event over it.
            level_map(version, object.get("notifications"), "notifications").unwrap_or_default()
        };
        Ok(levels)
    }

    /// A named level (`ban`, `invite`, ...) with the spec default applied.
    pub fn named_level(&self, name: &str) -> i64 {
        self.named.get(name).copied().unwrap_or(match name {
            "ban" | "kick" | "redact" => DEFAULT_MODERATION_LEVEL,
            "state_default" => DEFAULT_STATE_LEVEL,
            _ => 0,
        })
    }

    /// The level needed to send an event of `kind`, a state event when
    /// `is_state` (spec: the *required power level*).
    pub fn required_level(&self, kind: &str, is_state: bool) -> i64 {
        match self.events.get(kind) {
            Some(level) => *level,
            None if is_state => self.named_level("state_default"),
            None => self.named_level("events_default"),
        }
    }

    /// The level needed for a notification key such as `room`.
    pub fn notification_level(&self, key: &str) -> i64 {
        match (self.notifications.get(key), key) {
            (Some(level), _) => *level,
            (None, "room") => DEFAULT_ROOM_NOTIFICATION_LEVEL,
            (None, _) => DEFAULT_MODERATION_LEVEL,
        }
    }
}

/// Everything needed to answer power questions at one point of a room: the
/// power levels event (if any) and the create event.
#[derive(Clone, Debug)]
pub struct RoomPower {
    pub levels: PowerLevels,
    /// Whether a power levels event exists (without one the creator has 100).
    pub has_power_levels_event: bool,
    /// The creator (v1-v10: `content.creator`; v11+: the sender), plus in v12
    /// the `additional_creators`.
    pub creators: BTreeSet<String>,
    /// v12: creators have [`UserPower::Infinite`].
    pub privileged_creators: bool,
}

impl RoomPower {
    /// Builds the view from the current power levels and create events. A
    /// power levels event whose content does not parse (which the auth rules
    /// never let into a room) counts as one with every value defaulted.
    pub fn new(version: &RoomVersion, power_levels: Option<&Pdu>, create: Option<&Pdu>) -> Self {
        let levels = power_levels
            .and_then(|event| PowerLevels::from_content(version, &event.content).ok())
            .unwrap_or_default();
        RoomPower {
            levels,
            has_power_levels_event: power_levels.is_some(),
            creators: create.map(|c| creators(version, c)).unwrap_or_default(),
            privileged_creators: version.privileged_creators,
        }
    }

    /// A user's power (spec: "the user's power level").
    pub fn user_power(&self, user_id: &str) -> UserPower {
        if self.privileged_creators && self.creators.contains(user_id) {
            return UserPower::Infinite;
        }
        if !self.has_power_levels_event {
            let level = if self.creators.contains(user_id) { CREATOR_LEVEL_WITHOUT_POWER_LEVELS } else { 0 };
            return UserPower::Level(level);
        }
        UserPower::Level(
            self.levels
                .users
                .get(user_id)
                .copied()
                .unwrap_or_else(|| self.levels.named_level("users_default")),
        )
    }

    /// Whether `user_id` has at least the named level (`invite`, `kick`, ...).
    pub fn has_named_level(&self, user_id: &str, name: &str) -> bool {
        self.user_power(user_id) >= UserPower::Level(self.levels.named_level(name))
    }
}

/// The room creators per the create event: v1-v10 `content.creator`, v11+ the
/// sender, and from v12 also each of `content.additional_creators`.
pub fn creators(version: &RoomVersion, create: &Pdu) -> BTreeSet<String> {
    let mut creators = BTreeSet::new();
    if version.implicit_room_creator {
        creators.insert(create.sender.clone());
    } else if let Some(creator) = create.content.get("creator").and_then(Value::as_str) {
        creators.insert(creator.to_owned());
    }
    if version.privileged_creators {
        if let Some(Value::Array(extra)) = create.content.get("additional_creators") {
            creators.extend(extra.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }
    creators
}

/// A loose user ID check: `@localpart:server`, non-empty parts, at most 255
/// bytes. Historical user IDs allow odd localparts, so the localpart is not
/// restricted further. Spec: <https://spec.matrix.org/latest/appendices/#user-identifiers>.
pub fn is_valid_user_id(user_id: &str) -> bool {
    match user_id.strip_prefix('@').and_then(|rest| rest.split_once(':')) {
        Some((localpart, server)) => {
            !localpart.is_empty() && !server.is_empty() && user_id.len() <= MAX_USER_ID_BYTES
        }
        None => false,
    }
}

/// The server name of a user ID, event ID (v1/v2) or room ID (v1-v11): what
/// follows the first `:`.
pub fn domain_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(_, domain)| domain)
}

/// The distinct servers of some user IDs, sorted.
pub fn servers_of<'a>(user_ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut servers: Vec<String> = user_ids.into_iter().filter_map(domain_of).map(str::to_owned).collect();
    servers.sort();
    servers.dedup();
    servers
}

fn level_map(
    version: &RoomVersion,
    value: Option<&Value>,
    name: &str,
) -> Result<BTreeMap<String, i64>, PowerLevelsError> {
    match value {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => {
            map.iter().map(|(key, value)| Ok((key.clone(), level_value(version, name, value)?))).collect()
        }
        Some(_) => Err(PowerLevelsError(format!("`{name}` is not an object"))),
    }
}

fn level_value(version: &RoomVersion, name: &str, value: &Value) -> Result<i64, PowerLevelsError> {
    let bad = || PowerLevelsError(format!("bad power level in `{name}`: {value}"));
    let level = match value {
        Value::Number(number) => match number.as_i64() {
            Some(integer) => integer,
            // Rooms v1-v5 accept floats, truncated towards zero.
            None if !version.strict_canonical_json => match number.as_f64() {
                Some(float) if float.is_finite() && float.abs() < MAX_SAFE_INTEGER as f64 => {
                    float.trunc() as i64
                }
                _ => return Err(bad()),
            },
            None => return Err(bad()),
        },
        Value::String(text) if !version.integer_power_levels => {
            parse_stringy_integer(text).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&level) {
        return Err(bad());
    }
    Ok(level)
}

/// Spec (v1 "values as strings"): optional surrounding whitespace, an optional
/// single `+` or `-`, then base-10 digits (leading zeros allowed).
fn parse_stringy_integer(text: &str) -> Option<i64> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    let magnitude: i64 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fixtures::pdu;
    use serde_json::json;

    fn version(id: &str) -> RoomVersion {
        RoomVersion::from_id(id).unwrap()
    }

    #[test]
    fn parses_values_per_room_version() {
        // (room version, content, expected `ban` or None for an error)
        let cases = [
            ("1", json!({"ban": 30}), Some(30)),
            ("1", json!({"ban": " +0030 "}), Some(30)),
            ("1", json!({"ban": "-7"}), Some(-7)),
            ("1", json!({"ban": 30.9}), Some(30)),
            ("5", json!({"ban": 5.114698E4}), Some(51146)),
            ("6", json!({"ban": 30.5}), None),
            ("9", json!({"ban": "30"}), Some(30)),
            ("9", json!({"ban": "3 0"}), None),
            ("9", json!({"ban": "0x10"}), None),
            ("9", json!({"ban": "+-1"}), None),
            ("10", json!({"ban": "30"}), None),
            ("10", json!({"ban": true}), None),
            ("10", json!({"ban": 9007199254740992_i64}), None),
            ("10", json!({}), Some(50)),
            ("10", json!({"events": {"m.room.name": "1"}}), None),
            ("9", json!({"users": {"not-a-user": 1}}), None),
            ("9", json!({"users": []}), None),
            ("11", json!({"notifications": {"room": 1}}), Some(50)),
            ("6", json!({"notifications": {"room": "x"}}), None),
            ("5", json!({"notifications": {"room": "x"}}), Some(50)),
        ];
        for (id, content, expected) in cases {
            let parsed = PowerLevels::from_content(&version(id), &content);
            assert_eq!(parsed.map(|levels| levels.named_level("ban")).ok(), expected, "v{id} {content}");
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let levels = PowerLevels::default();
        let expected = [
            ("users_default", 0),
            ("events_default", 0),
            ("state_default", 50),
            ("ban", 50),
            ("kick", 50),
            ("redact", 50),
            ("invite", 0),
        ];
        for (name, level) in expected {
            assert_eq!(levels.named_level(name), level, "{name}");
        }
        assert_eq!(levels.notification_level("room"), 50);
        assert_eq!(levels.required_level("m.room.name", true), 50);
        assert_eq!(levels.required_level("m.room.message", false), 0);
    }

    #[test]
    fn user_power_before_and_after_power_levels() {
        let v10 = version("10");
        let create = pdu("$create", "m.room.create", Some(""), "@alice:x")
            .content(json!({"creator": "@alice:x"}))
            .build();
        let power = RoomPower::new(&v10, None, Some(&create));
        assert_eq!(power.user_power("@alice:x"), UserPower::Level(100));
        assert_eq!(power.user_power("@bob:x"), UserPower::Level(0));

        let levels = pdu("$pl", "m.room.power_levels", Some(""), "@alice:x")
            .content(json!({"users": {"@bob:x": 20}, "users_default": 5}))
            .build();
        let power = RoomPower::new(&v10, Some(&levels), Some(&create));
        assert_eq!(power.user_power("@alice:x"), UserPower::Level(5));
        assert_eq!(power.user_power("@bob:x"), UserPower::Level(20));
        assert!(power.has_named_level("@bob:x", "invite"));
        assert!(!power.has_named_level("@bob:x", "kick"));
    }

    #[test]
    fn v12_creators_have_infinite_power() {
        let v12 = version("12");
        let create = pdu("$create", "m.room.create", Some(""), "@alice:x")
            .content(json!({"additional_creators": ["@carol:y"]}))
            .build();
        let levels = pdu("$pl", "m.room.power_levels", Some(""), "@alice:x")
            .content(json!({"users": {"@bob:x": 9007199254740991_i64}}))
            .build();
        let power = RoomPower::new(&v12, Some(&levels), Some(&create));
        assert_eq!(power.user_power("@alice:x"), UserPower::Infinite);
        assert_eq!(power.user_power("@carol:y"), UserPower::Infinite);
        assert!(power.user_power("@bob:x") < UserPower::Infinite);
        // v11 ignores `additional_creators`.
        let power = RoomPower::new(&version("11"), None, Some(&create));
        assert_eq!(power.user_power("@alice:x"), UserPower::Level(100));
        assert_eq!(power.user_power("@carol:y"), UserPower::Level(0));
    }

    #[test]
    fn user_ids_and_domains() {
        for (id, valid) in [
            ("@a:x", true),
            ("@a:x:8448", true),
            ("a:x", false),
            ("@:x", false),
            ("@a:", false),
            ("@a", false),
        ] {
            assert_eq!(is_valid_user_id(id), valid, "{id}");
        }
        assert_eq!(domain_of("@a:x:8448"), Some("x:8448"));
        assert_eq!(domain_of("$abc"), None);
    }
}
