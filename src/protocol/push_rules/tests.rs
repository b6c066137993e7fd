//! Table-driven tests of the default ruleset and the evaluator.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::*;
use crate::protocol::power_levels::PowerLevels;

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const ROOM: &str = "!room:example.org";

/// A room where bob has `bob_level`, everyone else 0, `@room` needs 50.
fn power(bob_level: i64) -> RoomPower {
    RoomPower {
        levels: PowerLevels {
            named: BTreeMap::new(),
            users: BTreeMap::from([(BOB.to_owned(), bob_level)]),
            events: BTreeMap::new(),
            notifications: BTreeMap::new(),
        },
        has_power_levels_event: true,
        creators: BTreeSet::new(),
        privileged_creators: false,
    }
}

fn event(kind: &str, sender: &str, content: Value) -> Map<String, Value> {
    let event = json!({ "type": kind, "sender": sender, "room_id": ROOM, "content": content });
    event.as_object().unwrap().clone()
}

fn state(kind: &str, state_key: &str, sender: &str, content: Value) -> Map<String, Value> {
    let mut event = event(kind, sender, content);
    event.insert("state_key".into(), json!(state_key));
    event
}

fn message(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// The rule expected to match, with whether it notifies and highlights.
type Expected<'a> = Option<(&'a str, bool, bool)>;

/// The rule that matches for alice (display name "Alice", `members` joined),
/// and whether it notifies and highlights.
fn check(ruleset: &Ruleset, event: &Map<String, Value>, members: u64, expected: Expected<'_>) {
    let power = power(50);
    let context =
        Context { user_id: ALICE, display_name: Some("Alice"), member_count: members, power: &power };
    let found = ruleset.matching_rule(event, &context).map(|(_, rule)| {
        let outcome = Outcome::of(&rule.actions);
        (rule.rule_id.as_str(), outcome.notify, outcome.highlight)
    });
    assert_eq!(found, expected, "{}", Value::Object(event.clone()));
}

#[test]
fn default_rules_follow_the_spec_order() {
    let ruleset = Ruleset::defaults(ALICE);
    let ids = |kind| ruleset.rules(kind).iter().map(|rule| rule.rule_id.as_str()).collect::<Vec<_>>();
    assert_eq!(
        ids(Kind::Override),
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.contains_display_name",
            ".m.rule.is_room_mention",
            ".m.rule.roomnotif",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ]
    );
    assert_eq!(ids(Kind::Content), [".m.rule.contains_user_name"]);
    assert_eq!(ruleset.rules(Kind::Content)[0].pattern.as_deref(), Some("alice"));
    assert_eq!(
        ids(Kind::Underride),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    let json = ruleset.to_json();
    assert_eq!(
        json["override"][2]["conditions"][2],
        json!({"kind": "event_match", "key": "state_key", "pattern": ALICE})
    );
    assert_eq!(
        json["override"][0],
        json!({"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []})
    );
    assert_eq!(json["room"], json!([]));
}

#[test]
fn default_rules_decide_as_the_spec_says() {
    let ruleset = Ruleset::defaults(ALICE);
    let cases: Vec<(Map<String, Value>, u64, Expected<'_>)> = vec![
        (event("m.room.message", BOB, message("hello")), 3, Some((".m.rule.message", true, false))),
        (event("m.room.message", BOB, message("hello")), 2, Some((".m.rule.room_one_to_one", true, false))),
        (event("m.room.message", ALICE, message("my own")), 3, None),
        (
            event("m.room.message", BOB, json!({"msgtype": "m.notice", "body": "bot"})),
            3,
            Some((".m.rule.suppress_notices", false, false)),
        ),
        (
            event("m.room.message", BOB, json!({"body": "hi", "m.mentions": {"user_ids": [ALICE]}})),
            3,
            Some((".m.rule.is_user_mention", true, true)),
        ),
        (
            event("m.room.message", BOB, json!({"body": "hi", "m.mentions": {"user_ids": ["@carol:x"]}})),
            3,
            Some((".m.rule.message", true, false)),
        ),
        (
            event("m.room.message", BOB, json!({"body": "all", "m.mentions": {"room": true}})),
            3,
            Some((".m.rule.is_room_mention", true, true)),
        ),
        // Legacy body mentions (the v1.12 defaults) highlight...
        (
            event("m.room.message", BOB, message("Alice: hi")),
            3,
            Some((".m.rule.contains_display_name", true, true)),
        ),
        (event("m.room.message", BOB, message("look @room")), 3, Some((".m.rule.roomnotif", true, true))),
        (
            event("m.room.message", BOB, message("ping alice")),
            3,
            Some((".m.rule.contains_display_name", true, true)),
        ),
        (event("m.room.message", BOB, message("the alicebot")), 3, Some((".m.rule.message", true, false))),
        // ...unless the event says whom it mentions.
        (
            event("m.room.message", BOB, json!({"body": "alice: hi @room", "m.mentions": {}})),
            3,
            Some((".m.rule.message", true, false)),
        ),
        (
            event(
                "m.room.message",
                BOB,
                json!({"body": "* fixed", "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}),
            ),
            3,
            Some((".m.rule.suppress_edits", false, false)),
        ),
        (event("m.reaction", BOB, json!({})), 3, Some((".m.rule.reaction", false, false))),
        (
            state("m.room.member", ALICE, BOB, json!({"membership": "invite"})),
            3,
            Some((".m.rule.invite_for_me", true, false)),
        ),
        (
            state("m.room.member", "@carol:x", BOB, json!({"membership": "invite"})),
            3,
            Some((".m.rule.member_event", false, false)),
        ),
        (
            state("m.room.tombstone", "", BOB, json!({"replacement_room": "!new:x"})),
            3,
            Some((".m.rule.tombstone", true, true)),
        ),
        // A tombstone with a state key, or not as state, is not the room's tombstone.
        (state("m.room.tombstone", "x", BOB, json!({})), 3, None),
        (event("m.room.tombstone", BOB, json!({})), 3, None),
        (state("m.room.server_acl", "", BOB, json!({})), 3, Some((".m.rule.room.server_acl", false, false))),
        (event("m.call.invite", BOB, json!({})), 3, Some((".m.rule.call", true, false))),
        (
            event("m.room.encrypted", BOB, json!({})),
            2,
            Some((".m.rule.encrypted_room_one_to_one", true, false)),
        ),
        (event("m.room.encrypted", BOB, json!({})), 5, Some((".m.rule.encrypted", true, false))),
        (state("m.room.topic", "", BOB, json!({"topic": "x"})), 3, None),
    ];
    for (event, members, expected) in cases {
        check(&ruleset, &event, members, expected);
    }
}

#[test]
fn room_mentions_need_the_senders_notification_power() {
    let ruleset = Ruleset::defaults(ALICE);
    let event = event("m.room.message", BOB, json!({"body": "all", "m.mentions": {"room": true}}));
    for (level, rule) in [(0, ".m.rule.message"), (49, ".m.rule.message"), (50, ".m.rule.is_room_mention")] {
        let power = power(level);
        let context = Context { user_id: ALICE, display_name: None, member_count: 3, power: &power };
        assert_eq!(ruleset.matching_rule(&event, &context).unwrap().1.rule_id, rule, "level {level}");
    }
}

fn user_rule(rule_id: &str, conditions: Value, pattern: Option<&str>, actions: Value) -> PushRule {
    PushRule {
        rule_id: rule_id.to_owned(),
        default: false,
        enabled: true,
        conditions: conditions.as_array().cloned().unwrap_or_default(),
        pattern: pattern.map(str::to_owned),
        actions: actions.as_array().cloned().unwrap_or_default(),
    }
}

#[test]
fn user_rules_come_after_master_and_before_other_defaults() {
    let notify_highlight = json!(["notify", {"set_tweak": "highlight"}]);
    let user_rules = vec![
        (Kind::Content, user_rule("cake", json!(null), Some("cake*"), notify_highlight.clone())),
        (Kind::Room, user_rule(ROOM, json!(null), None, json!([]))),
        (Kind::Override, user_rule("quiet-bots", json!([event_match("sender", "@bot*")]), None, json!([]))),
    ];
    let changes = [DefaultChange {
        kind: Kind::Underride,
        rule_id: ".m.rule.message".into(),
        enabled: None,
        actions: Some(vec![json!("notify"), json!({"set_tweak": "sound", "value": "bing"})]),
    }];
    let ruleset = Ruleset::merged(ALICE, &changes, user_rules);
    assert_eq!(ruleset.rules(Kind::Override)[0].rule_id, ".m.rule.master");
    assert_eq!(ruleset.rules(Kind::Override)[1].rule_id, "quiet-bots");
    assert_eq!(ruleset.to_json()["content"][0]["pattern"], "cake*");
    assert_eq!(ruleset.find(Kind::Underride, ".m.rule.message").unwrap().actions[1]["value"], "bing");
    // The room rule silences the room, but content rules are checked before it.
    check(&ruleset, &event("m.room.message", BOB, message("hello")), 3, Some((ROOM, false, false)));
    check(&ruleset, &event("m.room.message", BOB, message("Cakes!")), 3, Some(("cake", true, true)));
    check(
        &ruleset,
        &event("m.room.message", "@bot1:x", message("cake")),
        3,
        Some(("quiet-bots", false, false)),
    );

    // Enabling master silences everything, user rules included.
    let master = DefaultChange {
        kind: Kind::Override,
        rule_id: MASTER_RULE.into(),
        enabled: Some(true),
        actions: None,
    };
    let ruleset = Ruleset::merged(ALICE, &[master], Vec::new());
    check(&ruleset, &event("m.room.message", BOB, message("hello")), 3, Some((MASTER_RULE, false, false)));
}

#[test]
fn disabled_rules_never_match() {
    let change = DefaultChange {
        kind: Kind::Underride,
        rule_id: ".m.rule.message".into(),
        enabled: Some(false),
        actions: None,
    };
    let ruleset = Ruleset::merged(ALICE, &[change], Vec::new());
    check(&ruleset, &event("m.room.message", BOB, message("hello")), 3, None);
}

/// Whether one condition holds for an event, with alice as display name "Alice".
fn condition(condition: Value, event: &Map<String, Value>, members: u64) -> bool {
    let power = power(50);
    let context =
        Context { user_id: ALICE, display_name: Some("Alice"), member_count: members, power: &power };
    condition_matches(&condition, event, &context)
}

#[test]
fn conditions_match_as_the_spec_says() {
    let create = state(
        "m.room.create",
        "",
        BOB,
        json!({"m.federate": true, "n": 5, "f": 1.5, "nothing": null, "tags": ["a", 1, true, null, {"x": 1}], "a.b": {"c\\d": "deep"}}),
    );
    let body = event("m.room.message", BOB, json!({"body": "Hey Alice, lunch?", "m.mentions": {}}));
    let cases = [
        (json!({"kind": "event_match", "key": "type", "pattern": "m.room.*"}), &create, true),
        (json!({"kind": "event_match", "key": "type", "pattern": "m.room"}), &create, false),
        // Not a string: never matches, even `*`.
        (json!({"kind": "event_match", "key": "content.n", "pattern": "*"}), &create, false),
        (json!({"kind": "event_match", "key": "content.missing", "pattern": "*"}), &create, false),
        (json!({"kind": "event_match", "key": "content.body", "pattern": "lunch"}), &body, true),
        (json!({"kind": "event_match", "key": "content.body", "pattern": "lun"}), &body, false),
        (json!({"kind": "event_property_is", "key": "content.m\\.federate", "value": true}), &create, true),
        (
            json!({"kind": "event_property_is", "key": "content.m\\.federate", "value": "true"}),
            &create,
            false,
        ),
        (json!({"kind": "event_property_is", "key": "content.m\\.federate", "value": 1}), &create, false),
        (json!({"kind": "event_property_is", "key": "content.n", "value": 5}), &create, true),
        (json!({"kind": "event_property_is", "key": "content.f", "value": 1.5}), &create, false),
        (json!({"kind": "event_property_is", "key": "content.nothing", "value": null}), &create, true),
        (json!({"kind": "event_property_is", "key": "content.missing", "value": null}), &create, false),
        (json!({"kind": "event_property_is", "key": "content.a\\.b.c\\d", "value": "deep"}), &create, true),
        (json!({"kind": "event_property_is", "key": "content.tags", "value": "a"}), &create, false),
        (json!({"kind": "event_property_contains", "key": "content.tags", "value": "a"}), &create, true),
        (json!({"kind": "event_property_contains", "key": "content.tags", "value": 1}), &create, true),
        (json!({"kind": "event_property_contains", "key": "content.tags", "value": null}), &create, true),
        (json!({"kind": "event_property_contains", "key": "content.tags", "value": "b"}), &create, false),
        (json!({"kind": "event_property_contains", "key": "content.n", "value": 5}), &create, false),
        (json!({"kind": "contains_display_name"}), &body, true),
        (json!({"kind": "contains_display_name"}), &create, false),
        (json!({"kind": "sender_notification_permission", "key": "room"}), &body, true),
        (json!({"kind": "no_such_condition"}), &body, false),
        (json!({"key": "type", "pattern": "*"}), &body, false),
    ];
    for (index, (cond, event, expected)) in cases.into_iter().enumerate() {
        assert_eq!(condition(cond.clone(), event, 3), expected, "case {index}: {cond}");
    }
}

#[test]
fn member_count_comparisons() {
    let cases = [
        ("2", 2, true),
        ("2", 3, false),
        ("==2", 2, true),
        ("<3", 2, true),
        ("<3", 3, false),
        (">3", 4, true),
        (">3", 3, false),
        ("<=10", 10, true),
        ("<=10", 11, false),
        (">=10", 10, true),
        (">=10", 9, false),
        ("", 0, false),
        ("<", 0, false),
        ("two", 2, false),
        ("=2", 2, false),
        ("-1", 0, false),
    ];
    let event = event("m.room.message", BOB, message("x"));
    for (is, members, expected) in cases {
        let cond = json!({"kind": "room_member_count", "is": is});
        assert_eq!(condition(cond, &event, members), expected, "{is:?} with {members}");
    }
}

#[test]
fn actions_are_read_with_historical_ones_ignored() {
    let cases = [
        (json!(["notify"]), (true, false, None)),
        (json!(["dont_notify"]), (false, false, None)),
        (json!(["notify", "coalesce"]), (true, false, None)),
        (json!(["notify", {"set_tweak": "highlight"}]), (true, true, None)),
        (json!(["notify", {"set_tweak": "highlight", "value": false}]), (true, false, None)),
        (json!([{"set_tweak": "highlight"}]), (false, false, None)),
        (json!(["notify", {"set_tweak": "sound", "value": "ring"}]), (true, false, Some("ring"))),
    ];
    for (actions, (notify, highlight, sound)) in cases {
        let outcome = Outcome::of(actions.as_array().unwrap());
        assert_eq!(outcome, Outcome { notify, highlight, sound: sound.map(str::to_owned) }, "{actions}");
    }
    assert!(validate_actions(&[json!("notify"), json!({"set_tweak": "sound", "value": "x"})]).is_ok());
    assert!(validate_actions(&[json!("explode")]).is_err());
    assert!(validate_actions(&[json!({"value": 1})]).is_err());
    assert!(validate_conditions(&[json!({"kind": "event_match"})]).is_ok());
    assert!(validate_conditions(&[json!({"key": "type"})]).is_err());
}

#[test]
fn rules_are_placed_before_after_or_first() {
    let rule = |id: &str| user_rule(id, json!([]), None, json!([]));
    let ids = |list: &[PushRule]| list.iter().map(|rule| rule.rule_id.clone()).collect::<Vec<_>>();
    let mut list = Vec::new();
    place_rule(&mut list, rule("a"), None, None).unwrap();
    place_rule(&mut list, rule("b"), None, None).unwrap();
    assert_eq!(ids(&list), ["b", "a"]);
    place_rule(&mut list, rule("c"), None, Some("a")).unwrap();
    assert_eq!(ids(&list), ["b", "a", "c"]);
    place_rule(&mut list, rule("d"), Some("a"), Some("c")).unwrap();
    assert_eq!(ids(&list), ["b", "d", "a", "c"]);
    // Moving an existing rule keeps its enabled state.
    list[3].enabled = false;
    place_rule(&mut list, rule("c"), Some("b"), None).unwrap();
    assert_eq!(ids(&list), ["c", "b", "d", "a"]);
    assert!(!list[0].enabled);
    // Updating in place keeps the position.
    place_rule(&mut list, user_rule("d", json!([]), None, json!(["notify"])), None, None).unwrap();
    assert_eq!(ids(&list), ["c", "b", "d", "a"]);
    assert_eq!(list[2].actions, [json!("notify")]);
    assert_eq!(
        place_rule(&mut list, rule("e"), Some("zzz"), None),
        Err(PlaceError::UnknownAnchor("zzz".into()))
    );
    assert_eq!(
        place_rule(&mut list, rule("e"), None, Some(".m.rule.message")),
        Err(PlaceError::DefaultAnchor(".m.rule.message".into()))
    );
    assert_eq!(ids(&list), ["c", "b", "d", "a"]);
}

#[test]
fn property_paths_unescape_dots_and_backslashes() {
    let cases = [
        ("content.body", vec!["content", "body"]),
        ("content.m\\.mentions.user_ids", vec!["content", "m.mentions", "user_ids"]),
        ("content.m\\\\foo", vec!["content", "m\\foo"]),
        ("content.m\\x", vec!["content", "m\\x"]),
        ("type", vec!["type"]),
    ];
    for (key, expected) in cases {
        assert_eq!(path_segments(key), expected, "{key}");
    }
}

#[test]
fn patterns_over_the_limit_are_refused_and_never_match() {
    let long = format!("{}*", "a".repeat(MAX_PATTERN_CHARS));
    assert!(validate_pattern(&long).is_err());
    assert!(validate_pattern(&"a".repeat(MAX_PATTERN_CHARS)).is_ok());
    assert!(validate_conditions(&[json!({"kind": "event_match", "key": "type", "pattern": long})]).is_err());
    assert!(!matches_whole(&long, &"a".repeat(300)));
    assert!(!matches_words(&long, &"a".repeat(300)));
    assert!(matches_whole("a*", &"a".repeat(300)));
    // Backtracking patterns cost nothing.
    let body = format!("@v:{}.example", "a".repeat(200));
    assert!(!matches_words("*a*a*a*a*a*a*a*a*b", &body));
    assert!(!matches_whole("*a*a*a*a*a*a*a*a*b", &body));
}

#[test]
fn plain_patterns_and_paths_take_the_short_way_with_the_same_answers() {
    // Each (pattern, value) is answered as the compiled glob answers it.
    let cases = [
        ("m.room.message", "m.room.message"),
        ("M.Room.Message", "m.room.message"),
        ("m.room.message", "m.room.messages"),
        ("m.room.*", "m.room.message"),
        ("m.room.?essage", "m.room.message"),
        ("k", "\u{212a}"),
        ("\u{212a}", "k"),
        ("é", "É"),
        ("", ""),
    ];
    for (pattern, value) in cases {
        let compiled = glob::Glob::new(pattern, glob::PUSH_RULE).matches(value);
        assert_eq!(matches_whole(pattern, value), compiled, "{pattern} / {value}");
    }
    let sent = event("m.room.message", "@bob:x", json!({"body": "hi", "m.mentions": {"room": true}}));
    assert_eq!(property(&sent, "content.body"), Some(&json!("hi")));
    assert_eq!(property(&sent, "content.m\\.mentions.room"), Some(&json!(true)));
    let odd = event("m.room.message", "@bob:x", json!({"a\\b": 1, "a.b": {"c\\d": 2}, "x\\y": 3}));
    assert_eq!(property(&odd, "content.a\\\\b"), Some(&json!(1)));
    assert_eq!(property(&odd, "content.a\\.b.c\\\\d"), Some(&json!(2)));
    assert_eq!(property(&odd, "content.x\\y"), Some(&json!(3)));
    assert_eq!(property(&sent, "content..body"), None);
    assert_eq!(property(&sent, "content.body.deeper"), None);
    assert!(is_content_body("content.body") && !is_content_body("content\\.body"));
    assert!(!is_content_body("content.bod\\y") && !is_content_body("con\\tent.body"));
}

#[test]
fn words_absent_as_text_are_answered_without_the_glob_and_the_same() {
    // Each (pattern or name, body) is answered as the compiled glob answers
    // it, whether the quick substring check decides it or not.
    let cases = [
        ("alice", "hello Alice!"),
        ("alice", "hello alicex"),
        ("alice", "hello bob"),
        ("ALICE", "alice"),
        ("k", "\u{212a} is kelvin"),
        ("ali*", "hello alison"),
        ("al?ce", "alice"),
        ("alice", "hello"),
        ("é", "É"),
    ];
    for (pattern, body) in cases {
        let compiled = glob::Glob::new(pattern, glob::PUSH_RULE).matches_words(body);
        assert_eq!(matches_words(pattern, body), compiled, "{pattern} / {body}");
        let literal = glob::Glob::literal(pattern, glob::PUSH_RULE.ignore_case).matches_words(body);
        assert_eq!(contains_words(pattern, body), literal, "{pattern} / {body}");
    }
    assert!(contains_words("Alice", "hi ALICE") && !contains_words("Alice", "hi Bob"));
}
