//! Push rules: the spec's server-default ruleset, a user's ruleset merged
//! from defaults and their own rules, editing a list of rules (`before` /
//! `after`), and the evaluator that decides whether an event notifies or
//! highlights for a user.
//!
//! Pure: the caller passes the event (PDU or client format; only `type`,
//! `state_key`, `sender`, `room_id` and `content` are read), the user and the
//! room facts the conditions need. Nothing here knows where rules are stored.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#push-rules>.
//! The defaults are those of the spec versions this server advertises (up to
//! v1.12), so they include the legacy body-mention rules
//! (`.m.rule.contains_display_name`, `.m.rule.roomnotif`,
//! `.m.rule.contains_user_name`) that v1.17 dropped. As the spec (and Synapse)
//! say, those rules are skipped for events that carry `m.mentions`.

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

use super::glob::{self, Glob};
use super::power_levels::{RoomPower, UserPower};

/// The kinds of rule, in the order they are checked.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#push-rules>.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Override,
    Content,
    Room,
    Sender,
    Underride,
}

impl Kind {
    /// Every kind, most important first.
    pub const ALL: [Kind; 5] = [Kind::Override, Kind::Content, Kind::Room, Kind::Sender, Kind::Underride];

    /// The kind named in a URL or a ruleset key.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Override => "override",
            Kind::Content => "content",
            Kind::Room => "room",
            Kind::Sender => "sender",
            Kind::Underride => "underride",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One push rule.
#[derive(Clone, Debug, PartialEq)]
pub struct PushRule {
    pub rule_id: String,
    /// A server-default rule (its ID starts with `.`).
    pub default: bool,
    pub enabled: bool,
    /// `override`/`underride` only: the condition objects as given, so that
    /// conditions we do not know round-trip (and never match).
    pub conditions: Vec<Value>,
    /// `content` only: the glob matched against `content.body`.
    pub pattern: Option<String>,
    /// The action list as given (historical `dont_notify`/`coalesce` kept,
    /// ignored when evaluating).
    pub actions: Vec<Value>,
}

impl PushRule {
    /// The rule in the ruleset's JSON form for its kind.
    pub fn to_json(&self, kind: Kind) -> Value {
        let mut object = Map::new();
        object.insert("rule_id".into(), json!(self.rule_id));
        object.insert("default".into(), json!(self.default));
        object.insert("enabled".into(), json!(self.enabled));
        object.insert("actions".into(), Value::Array(self.actions.clone()));
        match kind {
            Kind::Override | Kind::Underride => {
                object.insert("conditions".into(), Value::Array(self.conditions.clone()));
            }
            Kind::Content => {
                object.insert("pattern".into(), json!(self.pattern.clone().unwrap_or_default()));
            }
            Kind::Room | Kind::Sender => {}
        }
        Value::Object(object)
    }
}

/// A change a user made to a server-default rule.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultChange {
    pub kind: Kind,
    pub rule_id: String,
    pub enabled: Option<bool>,
    pub actions: Option<Vec<Value>>,
}

/// A user's global ruleset: five lists, most important rule first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ruleset {
    rules: [Vec<PushRule>; 5],
}

/// The default rule that always comes first, before user-defined overrides.
pub const MASTER_RULE: &str = ".m.rule.master";

impl Ruleset {
    /// The spec's server-default rules for `user_id`.
    /// Spec: <https://spec.matrix.org/latest/client-server-api/#predefined-rules>.
    pub fn defaults(user_id: &str) -> Ruleset {
        let mut ruleset = Ruleset::default();
        ruleset.rules[Kind::Override.index()] = default_override_rules(user_id);
        ruleset.rules[Kind::Content.index()] = default_content_rules(user_id);
        ruleset.rules[Kind::Underride.index()] = default_underride_rules();
        ruleset
    }

    /// The server defaults with the user's changes applied and the user's own
    /// rules (each list most important first) placed as the spec orders them:
    /// `.m.rule.master` first, then user rules, then the other defaults.
    pub fn merged(
        user_id: &str,
        changes: &[DefaultChange],
        user_rules: impl IntoIterator<Item = (Kind, PushRule)>,
    ) -> Ruleset {
        let mut defaults = Ruleset::defaults(user_id);
        for change in changes {
            let Some(rule) = defaults.find_mut(change.kind, &change.rule_id) else { continue };
            if let Some(enabled) = change.enabled {
                rule.enabled = enabled;
            }
            if let Some(actions) = &change.actions {
                rule.actions = actions.clone();
            }
        }
        let mut ruleset = Ruleset::default();
        for (kind, rule) in user_rules {
            ruleset.rules[kind.index()].push(rule);
        }
        for kind in Kind::ALL {
            let mut default_rules = std::mem::take(&mut defaults.rules[kind.index()]);
            let list = &mut ruleset.rules[kind.index()];
            let master_at = default_rules.iter().position(|rule| rule.rule_id == MASTER_RULE);
            if let Some(master) = master_at.map(|index| default_rules.remove(index)) {
                list.insert(0, master);
            }
            list.append(&mut default_rules);
        }
        ruleset
    }

    /// The rules of one kind, most important first.
    pub fn rules(&self, kind: Kind) -> &[PushRule] {
        &self.rules[kind.index()]
    }

    /// A rule by kind and ID.
    pub fn find(&self, kind: Kind, rule_id: &str) -> Option<&PushRule> {
        self.rules(kind).iter().find(|rule| rule.rule_id == rule_id)
    }

    fn find_mut(&mut self, kind: Kind, rule_id: &str) -> Option<&mut PushRule> {
        self.rules[kind.index()].iter_mut().find(|rule| rule.rule_id == rule_id)
    }

    /// The ruleset object (`{"override": [...], "content": [...], ...}`), as
    /// `GET /pushrules/` and `m.push_rules` carry it under `global`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        for kind in Kind::ALL {
            let rules = self.rules(kind).iter().map(|rule| rule.to_json(kind)).collect();
            object.insert(kind.as_str().into(), Value::Array(rules));
        }
        Value::Object(object)
    }

    /// The first enabled rule that matches `event` for the user, checking the
    /// kinds in order. Events the user sent never match: the spec forbids
    /// notifying anyone of their own events.
    pub fn matching_rule(
        &self,
        event: &Map<String, Value>,
        context: &Context<'_>,
    ) -> Option<(Kind, &PushRule)> {
        let sender = event.get("sender").and_then(Value::as_str);
        if sender == Some(context.user_id) {
            return None;
        }
        Kind::ALL.into_iter().find_map(|kind| {
            self.rules(kind)
                .iter()
                .find(|rule| rule.enabled && rule_matches(kind, rule, event, context))
                .map(|rule| (kind, rule))
        })
    }

    /// What the ruleset says to do with `event` for the user.
    pub fn evaluate(&self, event: &Map<String, Value>, context: &Context<'_>) -> Outcome {
        self.matching_rule(event, context).map(|(_, rule)| Outcome::of(&rule.actions)).unwrap_or_default()
    }
}

/// The facts about the user and the room that conditions look at.
pub struct Context<'a> {
    /// The user the rules belong to.
    pub user_id: &'a str,
    /// Their display name in the room, for `contains_display_name`.
    pub display_name: Option<&'a str>,
    /// Joined members of the room, for `room_member_count`.
    pub member_count: u64,
    /// The room's power levels, for `sender_notification_permission`.
    pub power: &'a RoomPower,
}

/// The result of evaluating an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The event generates a notification (`notify`).
    pub notify: bool,
    /// It is highlighted (`highlight` tweak, only counted when it notifies).
    pub highlight: bool,
    /// The `sound` tweak.
    pub sound: Option<String>,
}

impl Outcome {
    /// Reads an action list. Spec: a `highlight` tweak without a value means
    /// `true`; `dont_notify` and `coalesce` are historical and ignored.
    pub fn of(actions: &[Value]) -> Outcome {
        let mut outcome = Outcome::default();
        let mut highlight = false;
        for action in actions {
            match action {
                Value::String(name) if name == "notify" => outcome.notify = true,
                Value::Object(tweak) => match tweak.get("set_tweak").and_then(Value::as_str) {
                    Some("highlight") => {
                        highlight = tweak.get("value").is_none_or(|value| value.as_bool() == Some(true));
                    }
                    Some("sound") => {
                        outcome.sound = tweak.get("value").and_then(Value::as_str).map(str::to_owned)
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        outcome.highlight = outcome.notify && highlight;
        outcome
    }
}

/// The legacy mention rules, which stand aside when an event has `m.mentions`.
/// Spec: <https://spec.matrix.org/v1.12/client-server-api/#user-and-room-mentions>.
const LEGACY_MENTION_RULES: [&str; 3] =
    [".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"];

fn rule_matches(kind: Kind, rule: &PushRule, event: &Map<String, Value>, context: &Context<'_>) -> bool {
    if rule.default
        && LEGACY_MENTION_RULES.contains(&rule.rule_id.as_str())
        && event.get("content").and_then(|content| content.get("m.mentions")).is_some()
    {
        return false;
    }
    match kind {
        Kind::Override | Kind::Underride => {
            rule.conditions.iter().all(|condition| condition_matches(condition, event, context))
        }
        Kind::Content => {
            let body = property(event, "content.body").and_then(Value::as_str);
            match (&rule.pattern, body) {
                (Some(pattern), Some(body)) => matches_words(pattern, body),
                _ => false,
            }
        }
        Kind::Room => event.get("room_id").and_then(Value::as_str) == Some(rule.rule_id.as_str()),
        Kind::Sender => event.get("sender").and_then(Value::as_str) == Some(rule.rule_id.as_str()),
    }
}

/// One condition. Spec: <https://spec.matrix.org/latest/client-server-api/#conditions-1>;
/// unrecognised conditions never match.
fn condition_matches(condition: &Value, event: &Map<String, Value>, context: &Context<'_>) -> bool {
    let text = |name: &str| condition.get(name).and_then(Value::as_str);
    match text("kind") {
        Some("event_match") => {
            let (Some(key), Some(pattern)) = (text("key"), text("pattern")) else { return false };
            let Some(Value::String(value)) = property(event, key) else { return false };
            // Spec: for `content.body` the pattern matches words, elsewhere the whole value.
            if is_content_body(key) { matches_words(pattern, value) } else { matches_whole(pattern, value) }
        }
        Some("event_property_is") => {
            let (Some(key), Some(expected)) = (text("key"), condition.get("value")) else { return false };
            property(event, key).is_some_and(|found| scalar_equals(found, expected))
        }
        Some("event_property_contains") => {
            let (Some(key), Some(expected)) = (text("key"), condition.get("value")) else { return false };
            let Some(Value::Array(items)) = property(event, key) else { return false };
            items.iter().any(|item| scalar_equals(item, expected))
        }
        Some("contains_display_name") => {
            let body = property(event, "content.body").and_then(Value::as_str);
            match (context.display_name, body) {
                (Some(name), Some(body)) => contains_words(name, body),
                _ => false,
            }
        }
        Some("room_member_count") => {
            text("is").and_then(MemberCount::parse).is_some_and(|is| is.matches(context.member_count))
        }
        Some("sender_notification_permission") => {
            let (Some(key), Some(sender)) = (text("key"), event.get("sender").and_then(Value::as_str)) else {
                return false;
            };
            context.power.user_power(sender) >= UserPower::Level(context.power.levels.notification_level(key))
        }
        _ => false,
    }
}

/// Spec (`event_property_is`): exact matches of strings, integers, booleans and
/// `null` only; compound values and floats never match.
fn scalar_equals(found: &Value, expected: &Value) -> bool {
    match (found, expected) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Number(a), Value::Number(b)) => a.as_i64().is_some() && a.as_i64() == b.as_i64(),
        _ => false,
    }
}

/// A `room_member_count` comparison: `==`, `<`, `>`, `<=` or `>=` and a
/// decimal number (no prefix means `==`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MemberCount {
    operator: &'static str,
    count: u64,
}

impl MemberCount {
    fn parse(is: &str) -> Option<MemberCount> {
        let operator = ["==", "<=", ">=", "<", ">"].into_iter().find(|op| is.starts_with(op)).unwrap_or("==");
        let number = is.strip_prefix(operator).unwrap_or(is);
        if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        Some(MemberCount { operator, count: number.parse().ok()? })
    }

    fn matches(self, members: u64) -> bool {
        match self.operator {
            "<" => members < self.count,
            ">" => members > self.count,
            "<=" => members <= self.count,
            ">=" => members >= self.count,
            _ => members == self.count,
        }
    }
}

/// Splits a dot-separated property path: `\.` is a literal dot and `\\` a
/// literal backslash; other escapes stay as they are.
/// Spec: <https://spec.matrix.org/latest/appendices/#dot-separated-property-paths>.
fn path_segments(key: &str) -> Vec<String> {
    let mut segments = vec![String::new()];
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('.' | '\\')) => {
                segments.last_mut().unwrap().push(chars.next().unwrap_or('\\'));
            }
            '.' => segments.push(String::new()),
            other => segments.last_mut().unwrap().push(other),
        }
    }
    segments
}

/// Whether a property path names `content.body` (whose patterns match words).
fn is_content_body(key: &str) -> bool {
    if key.contains('\\') {
        return path_segments(key) == ["content", "body"];
    }
    key == "content.body"
}

/// The event property at a dot-separated path. Every rule of every
/// recipient reads properties of every event, so a path without escapes
/// (all the default rules' paths) is walked without building segments.
fn property<'a>(event: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut value: Option<&Value> = None;
    let mut start = 0;
    let mut escaped = false;
    let mut bytes = key.bytes().enumerate().peekable();
    // Splits at unescaped dots; only a segment with escapes is unescaped
    // (into a new string), the others are looked up as they are.
    let mut step = |segment: &str, escaped: bool| -> Option<()> {
        let unescaped;
        let name = if escaped {
            unescaped = path_segments(segment).concat();
            unescaped.as_str()
        } else {
            segment
        };
        value = Some(match value {
            None => event.get(name)?,
            Some(outer) => outer.as_object()?.get(name)?,
        });
        Some(())
    };
    while let Some((index, byte)) = bytes.next() {
        match byte {
            b'\\' if bytes.peek().is_some_and(|(_, next)| matches!(next, b'.' | b'\\')) => {
                escaped = true;
                bytes.next();
            }
            b'.' => {
                step(key.get(start..index)?, escaped)?;
                start = index + 1;
                escaped = false;
            }
            _ => {}
        }
    }
    step(key.get(start..)?, escaped)?;
    value
}

/// Why a rule could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// `before`/`after` names a rule the user does not have.
    UnknownAnchor(String),
    /// `before`/`after` names a server-default rule (the spec forbids it).
    DefaultAnchor(String),
}

/// Puts `rule` into a user's list of one kind (most important first), per
/// `PUT /pushrules/global/{kind}/{ruleId}`: next to `before` (just more
/// important; it wins over `after`) or `after` (just less important); an
/// existing rule without either keeps its place (and its enabled state); a
/// new one becomes the most important.
pub fn place_rule(
    list: &mut Vec<PushRule>,
    mut rule: PushRule,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), PlaceError> {
    let existing = list.iter().position(|other| other.rule_id == rule.rule_id);
    if let Some(index) = existing {
        rule.enabled = list[index].enabled;
    }
    let anchor = before.map(|id| (id, 0)).or(after.map(|id| (id, 1)));
    let Some((anchor_id, offset)) = anchor else {
        match existing {
            Some(index) => list[index] = rule,
            None => list.insert(0, rule),
        }
        return Ok(());
    };
    if anchor_id.starts_with('.') {
        return Err(PlaceError::DefaultAnchor(anchor_id.to_owned()));
    }
    let mut rest: Vec<PushRule> =
        list.iter().filter(|other| other.rule_id != rule.rule_id).cloned().collect();
    let anchor_at = rest
        .iter()
        .position(|other| other.rule_id == anchor_id)
        .ok_or_else(|| PlaceError::UnknownAnchor(anchor_id.to_owned()))?;
    rest.insert(anchor_at + offset, rule);
    *list = rest;
    Ok(())
}

/// Checks an action list: `notify` (and the historical `dont_notify` and
/// `coalesce`), or `{"set_tweak": name, ...}` objects.
pub fn validate_actions(actions: &[Value]) -> Result<(), String> {
    for action in actions {
        match action {
            Value::String(name) if matches!(name.as_str(), "notify" | "dont_notify" | "coalesce") => {}
            Value::Object(tweak) if tweak.get("set_tweak").is_some_and(Value::is_string) => {}
            other => return Err(format!("unrecognised action {other}")),
        }
    }
    Ok(())
}

/// Checks a list of conditions: each an object with a string `kind`.
pub fn validate_conditions(conditions: &[Value]) -> Result<(), String> {
    for condition in conditions {
        if !condition.get("kind").is_some_and(Value::is_string) {
            return Err("each condition needs a string `kind`".into());
        }
        if let Some(pattern) = condition.get("pattern").and_then(Value::as_str) {
            validate_pattern(pattern)?;
        }
    }
    Ok(())
}

/// Checks a glob pattern a user gives (a content rule's `pattern`, an
/// `event_match` condition's): at most [`MAX_PATTERN_CHARS`].
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!("a pattern may have at most {MAX_PATTERN_CHARS} characters"));
    }
    Ok(())
}

/// The longest glob pattern a push rule may have. Every rule is matched
/// against every event in the user's rooms, and a word-bounded match costs up
/// to `body × pattern`; what is matched (an identifier, a type, a word in a
/// message) is rarely longer than the 255 bytes the spec allows identifiers,
/// and display names (matched as literal patterns) are at most 256 characters
/// here. Longer patterns (stored before this limit existed, or a display name
/// set by another server) never match.
pub const MAX_PATTERN_CHARS: usize = 256;

/// Whether the glob `pattern` matches the whole of `value`.
fn matches_whole(pattern: &str, value: &str) -> bool {
    if validate_pattern(pattern).is_err() {
        return false;
    }
    // Most patterns are plain ASCII names (`m.room.message`): the glob would
    // compare them character by character, ignoring ASCII case, as this does.
    let plain = |text: &str| text.is_ascii();
    if plain(pattern) && plain(value) && !pattern.bytes().any(|byte| matches!(byte, b'*' | b'?')) {
        return pattern.eq_ignore_ascii_case(value);
    }
    Glob::new(pattern, glob::PUSH_RULE).matches(value)
}

/// Whether the glob `pattern` matches a substring of `value` that starts and
/// ends at word boundaries.
fn matches_words(pattern: &str, value: &str) -> bool {
    if !pattern.bytes().any(|byte| matches!(byte, b'*' | b'?')) && absent_ascii(pattern, value) {
        return false;
    }
    validate_pattern(pattern).is_ok() && Glob::new(pattern, glob::PUSH_RULE).matches_words(value)
}

/// Whether `literal` does not occur in `value` at all, ignoring ASCII case,
/// when both are ASCII: then no word-bounded match exists either. The
/// common answer for every recipient's name rules over every message, found
/// without compiling a glob (`false` is no answer: non-ASCII text may
/// lowercase into ASCII letters).
fn absent_ascii(literal: &str, value: &str) -> bool {
    literal.is_ascii()
        && value.is_ascii()
        && !value.to_ascii_lowercase().contains(&literal.to_ascii_lowercase())
}

/// Whether `text` (taken literally, `*` and `?` included) occurs in `value`
/// bounded by word boundaries. An empty `text` never matches.
fn contains_words(text: &str, value: &str) -> bool {
    !text.is_empty()
        && !absent_ascii(text, value)
        && validate_pattern(text).is_ok()
        && Glob::literal(text, glob::PUSH_RULE.ignore_case).matches_words(value)
}

fn default_rule(rule_id: &str, enabled: bool, conditions: Value, actions: Value) -> PushRule {
    let as_list = |value: Value| match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    PushRule {
        rule_id: rule_id.to_owned(),
        default: true,
        enabled,
        conditions: as_list(conditions),
        pattern: None,
        actions: as_list(actions),
    }
}

fn event_match(key: &str, pattern: &str) -> Value {
    json!({ "kind": "event_match", "key": key, "pattern": pattern })
}

/// Spec: default override rules, in the spec's order.
fn default_override_rules(user_id: &str) -> Vec<PushRule> {
    let sound_default = json!({ "set_tweak": "sound", "value": "default" });
    let highlight = json!({ "set_tweak": "highlight" });
    vec![
        default_rule(MASTER_RULE, false, json!([]), json!([])),
        default_rule(
            ".m.rule.suppress_notices",
            true,
            json!([event_match("content.msgtype", "m.notice")]),
            json!([]),
        ),
        default_rule(
            ".m.rule.invite_for_me",
            true,
            json!([
                event_match("type", "m.room.member"),
                event_match("content.membership", "invite"),
                event_match("state_key", user_id),
            ]),
            json!(["notify", sound_default]),
        ),
        default_rule(".m.rule.member_event", true, json!([event_match("type", "m.room.member")]), json!([])),
        default_rule(
            ".m.rule.is_user_mention",
            true,
            json!([{ "kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id }]),
            json!(["notify", sound_default, highlight]),
        ),
        default_rule(
            ".m.rule.contains_display_name",
            true,
            json!([{ "kind": "contains_display_name" }]),
            json!(["notify", sound_default, highlight]),
        ),
        default_rule(
            ".m.rule.is_room_mention",
            true,
            json!([
                { "kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true },
                { "kind": "sender_notification_permission", "key": "room" },
            ]),
            json!(["notify", highlight]),
        ),
        default_rule(
            ".m.rule.roomnotif",
            true,
            json!([
                event_match("content.body", "@room"),
                { "kind": "sender_notification_permission", "key": "room" },
            ]),
            json!(["notify", highlight]),
        ),
        default_rule(
            ".m.rule.tombstone",
            true,
            json!([event_match("type", "m.room.tombstone"), event_match("state_key", "")]),
            json!(["notify", highlight]),
        ),
        default_rule(".m.rule.reaction", true, json!([event_match("type", "m.reaction")]), json!([])),
        default_rule(
            ".m.rule.room.server_acl",
            true,
            json!([event_match("type", "m.room.server_acl"), event_match("state_key", "")]),
            json!([]),
        ),
        default_rule(
            ".m.rule.suppress_edits",
            true,
            json!([{ "kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace" }]),
            json!([]),
        ),
    ]
}

/// Spec: the default content rule (the user's localpart in a message body).
fn default_content_rules(user_id: &str) -> Vec<PushRule> {
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or_default();
    let mut rule = default_rule(
        ".m.rule.contains_user_name",
        true,
        json!([]),
        json!(["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }]),
    );
    rule.pattern = Some(localpart.to_owned());
    vec![rule]
}

/// Spec: default underride rules, in the spec's order.
fn default_underride_rules() -> Vec<PushRule> {
    let sound = |name: &str| json!({ "set_tweak": "sound", "value": name });
    let one_to_one = json!({ "kind": "room_member_count", "is": "2" });
    vec![
        default_rule(
            ".m.rule.call",
            true,
            json!([event_match("type", "m.call.invite")]),
            json!(["notify", sound("ring")]),
        ),
        default_rule(
            ".m.rule.encrypted_room_one_to_one",
            true,
            json!([one_to_one, event_match("type", "m.room.encrypted")]),
            json!(["notify", sound("default")]),
        ),
        default_rule(
            ".m.rule.room_one_to_one",
            true,
            json!([one_to_one, event_match("type", "m.room.message")]),
            json!(["notify", sound("default")]),
        ),
        default_rule(
            ".m.rule.message",
            true,
            json!([event_match("type", "m.room.message")]),
            json!(["notify"]),
        ),
        default_rule(
            ".m.rule.encrypted",
            true,
            json!([event_match("type", "m.room.encrypted")]),
            json!(["notify"]),
        ),
    ]
}
