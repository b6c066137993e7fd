//! The redaction algorithm: what survives of an event when it is redacted.
//!
//! Used both for redactions proper and to compute reference hashes and event
//! signatures, so it must match other servers exactly. Works on raw JSON; knows
//! nothing of whether a redaction is allowed (that is the auth rules' job).
//! Spec: <https://spec.matrix.org/latest/client-server-api/#redactions> and the
//! "Redactions" section of each room version, e.g.
//! <https://spec.matrix.org/latest/rooms/v11/#redactions>.

use serde_json::{Map, Value};

use super::room_version::RoomVersion;

/// Top-level keys every room version keeps.
const KEPT_TOP_LEVEL_KEYS: &[&str] = &[
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
];

/// Top-level keys kept up to room v10 and no longer protected from v11.
/// Spec: <https://spec.matrix.org/latest/rooms/v11/#redactions>.
const KEPT_TOP_LEVEL_KEYS_BEFORE_V11: &[&str] = &["origin", "membership", "prev_state"];

/// Returns the redacted form of `event` under `version`'s rules.
pub fn redact(event: &Map<String, Value>, version: &RoomVersion) -> Map<String, Value> {
    let mut redacted = event.clone();
    redact_in_place(&mut redacted, version);
    redacted
}

/// Redacts `event` in place under `version`'s rules.
///
/// The result always has a `content` object: a missing or non-object
/// `content` becomes `{}`, as Synapse does, so that reference hashes agree.
pub fn redact_in_place(event: &mut Map<String, Value>, version: &RoomVersion) {
    event.retain(|key, _| {
        KEPT_TOP_LEVEL_KEYS.contains(&key.as_str())
            || (!version.updated_redaction_rules
                && KEPT_TOP_LEVEL_KEYS_BEFORE_V11.contains(&key.as_str()))
    });
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let content = match event.remove("content") {
        Some(Value::Object(content)) => redact_content(&kind, content, version),
        _ => Map::new(),
    };
    event.insert("content".to_owned(), Value::Object(content));
}

/// Returns what `content` of an event of type `kind` keeps when redacted.
pub fn redact_content(
    kind: &str,
    mut content: Map<String, Value>,
    version: &RoomVersion,
) -> Map<String, Value> {
    // Spec (v11+): `m.room.create` allows all keys.
    if kind == "m.room.create" && version.updated_redaction_rules {
        return content;
    }
    // Spec (v11+): `m.room.member` keeps the `signed` key of `third_party_invite`.
    // Like Synapse we keep an object holding only `signed` (or nothing) when
    // `third_party_invite` is an object.
    let kept_invite = if kind == "m.room.member" && version.updated_redaction_rules {
        match content.remove("third_party_invite") {
            Some(Value::Object(mut invite)) => {
                invite.retain(|key, _| key == "signed");
                Some(Value::Object(invite))
            }
            _ => None,
        }
    } else {
        None
    };
    let kept = kept_content_keys(kind, version);
    content.retain(|key, _| kept.contains(&key.as_str()));
    if let Some(invite) = kept_invite {
        content.insert("third_party_invite".to_owned(), invite);
    }
    content
}

/// The `content` keys an event of type `kind` keeps under `version`'s rules.
fn kept_content_keys(kind: &str, version: &RoomVersion) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    match kind {
        "m.room.member" => {
            keys.push("membership");
            // Spec (v9+): also `join_authorised_via_users_server`.
            if version.restricted_join_rule_fix {
                keys.push("join_authorised_via_users_server");
            }
        }
        // Before v11 (v11+ returned early above): only `creator`.
        "m.room.create" => keys.push("creator"),
        "m.room.join_rules" => {
            keys.push("join_rule");
            // Spec (v8+): also `allow`.
            if version.restricted_join_rule {
                keys.push("allow");
            }
        }
        "m.room.power_levels" => {
            keys.extend([
                "ban",
                "events",
                "events_default",
                "kick",
                "redact",
                "state_default",
                "users",
                "users_default",
            ]);
            // Spec (v11+): also `invite`.
            if version.updated_redaction_rules {
                keys.push("invite");
            }
        }
        // Spec (v1 to v5): `m.room.aliases` keeps `aliases`.
        "m.room.aliases" if version.special_case_aliases => keys.push("aliases"),
        "m.room.history_visibility" => keys.push("history_visibility"),
        // Spec (v11+): `m.room.redaction` keeps `redacts`.
        "m.room.redaction" if version.updated_redaction_rules => keys.push("redacts"),
        _ => {}
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::room_version::ALL;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("fixtures are objects"),
        }
    }

    /// An event of type `kind` with the given content and every top-level key
    /// any version protects, plus some that no version protects.
    fn event(kind: &str, content: Value) -> Map<String, Value> {
        object(json!({
            "event_id": "$e:x", "type": kind, "room_id": "!r:x", "sender": "@a:x",
            "state_key": "", "content": content, "hashes": {"sha256": "h"},
            "signatures": {"x": {"ed25519:1": "s"}}, "depth": 3, "prev_events": [],
            "auth_events": [], "origin_server_ts": 5, "origin": "x",
            "membership": "join", "prev_state": [], "unsigned": {"age": 1},
            "redacts": "$other:x", "extra": true
        }))
    }

    fn redacted_content(id: &str, kind: &str, content: Value) -> Value {
        let version = RoomVersion::from_id(id).unwrap();
        Value::Object(
            redact(&event(kind, content), &version)["content"]
                .as_object()
                .unwrap()
                .clone(),
        )
    }

    #[test]
    fn top_level_keys_before_and_from_v11() {
        for version in ALL {
            let redacted = redact(&event("m.room.message", json!({"body": "hi"})), &version);
            let mut keys: Vec<&str> = redacted.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut expected: Vec<&str> = KEPT_TOP_LEVEL_KEYS.to_vec();
            if !version.updated_redaction_rules {
                expected.extend(KEPT_TOP_LEVEL_KEYS_BEFORE_V11);
            }
            expected.sort_unstable();
            assert_eq!(keys, expected, "room version {}", version.id);
            assert_eq!(redacted["content"], json!({}));
        }
    }

    /// `(first room version, expected content)`, oldest first.
    type Steps = Vec<(u8, Value)>;

    #[test]
    fn content_keys_per_type_and_version() {
        let member = json!({
            "membership": "join", "displayname": "A", "avatar_url": "mxc://x/y",
            "join_authorised_via_users_server": "@b:x",
            "third_party_invite": {"display_name": "d", "signed": {"token": "t"}}
        });
        let create = json!({"creator": "@a:x", "room_version": "1", "m.federate": false});
        let join_rules =
            json!({"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1});
        let power_levels = json!({
            "ban": 50, "events": {}, "events_default": 0, "invite": 0, "kick": 50,
            "redact": 50, "state_default": 50, "users": {}, "users_default": 0,
            "notifications": {"room": 50}
        });
        let aliases = json!({"aliases": ["#a:x"], "x": 1});
        let history = json!({"history_visibility": "shared", "x": 1});
        let redaction = json!({"redacts": "$e:x", "reason": "spam"});
        let message = json!({"body": "hi", "msgtype": "m.text"});

        let member_v1 = json!({"membership": "join"});
        let member_v9 = json!({"membership": "join", "join_authorised_via_users_server": "@b:x"});
        let member_v11 = json!({
            "membership": "join", "join_authorised_via_users_server": "@b:x",
            "third_party_invite": {"signed": {"token": "t"}}
        });
        let power_v1 = json!({
            "ban": 50, "events": {}, "events_default": 0, "kick": 50, "redact": 50,
            "state_default": 50, "users": {}, "users_default": 0
        });
        let mut power_v11 = power_v1.clone();
        power_v11["invite"] = json!(0);

        // (type, content, [(first version, expected content)]): the expectation
        // holds from that version until the next entry.
        let cases: Vec<(&str, &Value, Steps)> = vec![
            (
                "m.room.member",
                &member,
                vec![(1, member_v1), (9, member_v9), (11, member_v11)],
            ),
            (
                "m.room.create",
                &create,
                vec![(1, json!({"creator": "@a:x"})), (11, create.clone())],
            ),
            (
                "m.room.join_rules",
                &join_rules,
                vec![
                    (1, json!({"join_rule": "restricted"})),
                    (
                        8,
                        json!({"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}),
                    ),
                ],
            ),
            (
                "m.room.power_levels",
                &power_levels,
                vec![(1, power_v1), (11, power_v11)],
            ),
            (
                "m.room.aliases",
                &aliases,
                vec![(1, json!({"aliases": ["#a:x"]})), (6, json!({}))],
            ),
            (
                "m.room.history_visibility",
                &history,
                vec![(1, json!({"history_visibility": "shared"}))],
            ),
            (
                "m.room.redaction",
                &redaction,
                vec![(1, json!({})), (11, json!({"redacts": "$e:x"}))],
            ),
            ("m.room.message", &message, vec![(1, json!({}))]),
        ];
        for (kind, content, steps) in cases {
            for number in 1..=12u8 {
                let expected = &steps
                    .iter()
                    .rev()
                    .find(|(first, _)| *first <= number)
                    .unwrap()
                    .1;
                let actual = redacted_content(&number.to_string(), kind, content.clone());
                assert_eq!(&actual, expected, "{kind} in room v{number}");
            }
        }
    }

    #[test]
    fn third_party_invite_without_signed_keeps_an_empty_object() {
        let content = json!({"membership": "invite", "third_party_invite": {"display_name": "d"}});
        assert_eq!(
            redacted_content("11", "m.room.member", content),
            json!({"membership": "invite", "third_party_invite": {}})
        );
        let content = json!({"membership": "invite", "third_party_invite": "junk"});
        assert_eq!(
            redacted_content("11", "m.room.member", content),
            json!({"membership": "invite"})
        );
    }

    #[test]
    fn missing_or_odd_content_becomes_an_empty_object() {
        let version = RoomVersion::from_id("10").unwrap();
        let mut no_content = event("m.room.member", json!({}));
        no_content.remove("content");
        assert_eq!(redact(&no_content, &version)["content"], json!({}));
        let odd = event("m.room.member", json!("text"));
        assert_eq!(redact(&odd, &version)["content"], json!({}));
    }

    #[test]
    fn redaction_is_idempotent() {
        for version in ALL {
            let once = redact(
                &event("m.room.member", json!({"membership": "join", "x": 1})),
                &version,
            );
            assert_eq!(redact(&once, &version), once, "room version {}", version.id);
        }
    }
}
