//! The fuzz targets: each parser and matcher that takes input from the
//! network, called through the entry point the rest of the code calls, with
//! its seed corpus, its token dictionary and the cheap properties it must keep.
//!
//! A target is `fn(&[u8])`: it must return on every input, quickly, without
//! panicking; a failed property is a panic too. To fuzz another parser, write
//! such a function and a [`Target`] for it, and add a `#[test]` in `mod.rs`.
//! The glob matchers are reached through one adapter function each
//! ([`filter_glob`], [`server_acl_glob`], [`push_rule_glob`]): when a matcher's
//! implementation or entry point changes, only its adapter changes.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::Target;
use crate::client::filter::{self, MAX_TIMELINE_LIMIT};
use crate::http1::{chunked, head};
use crate::protocol::canonical_json::{self, Strictness};
use crate::protocol::identifiers::{EventId, RoomAliasId, RoomId, ServerName, UserId};
use crate::protocol::pdu::Pdu;
use crate::protocol::power_levels::{PowerLevels, RoomPower};
use crate::protocol::push_rules::{self, Context, Kind, PushRule, Ruleset};
use crate::protocol::room_version::{self, EventIdFormat};
use crate::protocol::signing::{self, PublicKey, SigningKey};
use crate::protocol::{acme, hashes, identifiers, redaction, server_acl, url_preview, x_matrix};

/// JSON inputs: room for a full event, well past the 64 KiB PDU limit's
/// share of a short run.
const MAX_JSON_INPUT: usize = 16 << 10;

/// Header values, identifiers and glob pattern + text pairs.
const MAX_SHORT_INPUT: usize = 4 << 10;

/// Tokens every JSON target shares.
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\u00e9",
    b"\\n",
    b"true",
    b"false",
    b"null",
    b"0",
    b"-0",
    b"1e10",
    b"1.5",
    b"-1",
    b"9007199254740991",
    b"9007199254740992",
    b"-9007199254740992",
    b"1e400",
    b"18446744073709551616",
    b"0.0000001",
    b"\"\":",
    b"{\"a\":",
    b"[[[[[[[[",
    b"]]]]]]]]",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80",
];

// ---------------------------------------------------------------------------
// Canonical JSON.

/// Canonical JSON is idempotent: canonicalising its own output gives the
/// same bytes; strict output parses strictly; an object encodes the same
/// through the object and the value entry points.
fn canonical_json_target(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let Ok(value) = canonical_json::parse(text, strictness) else { continue };
        let Ok(first) = canonical_json::to_string(&value, strictness) else { continue };
        let again = canonical_json::parse(&first, strictness)
            .unwrap_or_else(|error| panic!("canonical output does not parse back ({error}): {first}"));
        let second = canonical_json::to_string(&again, strictness)
            .unwrap_or_else(|error| panic!("canonical output does not encode again ({error}): {first}"));
        assert_eq!(first, second, "canonical JSON is not idempotent");
        if let Value::Object(object) = &value {
            let through_object = canonical_json::object_to_string(object, strictness).ok();
            assert_eq!(through_object.as_deref(), Some(first.as_str()), "object and value encodings differ");
        }
    }
}

pub static CANONICAL_JSON: Target = Target {
    name: "canonical_json",
    seeds: &[
        br#"{"one":1,"two":"Two"}"#,
        br#"{"b":"2","a":"1"}"#,
        br#"{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"medium":"email","address":"john.doe@example.org"},{"medium":"msisdn","address":"123456789"}]}}}"#,
        "{\"a\":\"日本語\"}".as_bytes(),
        br#"{"a":"\u0000\u001f\"\\\b\f\n\r\t\u007f"}"#,
        br#"{"a":-0,"b":1e10,"c":[1,2,3.0],"d":null,"e":true}"#,
        br#"[1.5, -1e-7, 12345678901234567890, 9007199254740992]"#,
        br#"{"\u00e9":{"":{"\ud83d\ude00":[{}]}}}"#,
        b"  \"just a string\" ",
    ],
    dictionary: JSON_TOKENS,
    max_len: MAX_JSON_INPUT,
    short_execs: 3_000,
    run: canonical_json_target,
};

// ---------------------------------------------------------------------------
// PDUs: what `remote::pdus::verify` does with a received event, short of
// fetching keys: size, event ID, fields, content hash, signature, redaction.

/// The key the PDU target checks signatures against (any fixed key will do:
/// the point is to walk the signature path, not to pass it).
fn fuzz_public_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::from_seed("1", &[7; 32]).expect("a fixed 32-byte seed");
        signing::public_key_from_base64(&key.public_key_base64()).expect("our own public key")
    })
}

/// Redaction is idempotent and keeps the reference hash (so the event ID) of
/// hash-identified events; a PDU parsed from an event also parses redacted.
fn pdu_target(input: &[u8]) {
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(input) else { return };
    // The length picks the room version, so the same JSON meets several versions.
    let version = &room_version::ALL[input.len() % room_version::ALL.len()];
    let strictness = Strictness::for_room_version(version);
    if canonical_json::object_to_string(&event, strictness).is_err() {
        return;
    }
    if version.event_id_format != EventIdFormat::V1 {
        event.remove("event_id");
    }
    let redacted = redaction::redact(&event, version);
    assert_eq!(redaction::redact(&redacted, version), redacted, "redaction is not idempotent");
    let Ok(event_id) = hashes::event_id(&event, version) else { return };
    if version.event_id_format != EventIdFormat::V1 {
        let of_redacted = hashes::event_id(&redacted, version).ok();
        assert_eq!(of_redacted.as_deref(), Some(event_id.as_str()), "redaction changed the event ID");
        assert!(EventId::parse(&event_id).is_ok(), "computed event ID {event_id} does not parse");
    }
    let _ = hashes::content_hash(&event, version);
    let _ = hashes::verify_event_content_hash(&event, version);
    let _ = hashes::verify_event_signature(&event, version, "fuzz.example", "ed25519:1", fuzz_public_key());
    if version.room_id_from_create_event {
        let _ = hashes::room_id_from_create_event(&event, version);
    }
    let Ok(pdu) = Pdu::from_json(version, event_id.clone(), event) else { return };
    let _ = pdu.state_pair();
    let _ = PowerLevels::from_content(version, &pdu.content);
    let _ = RoomPower::new(version, Some(&pdu), Some(&pdu));
    // A redacted event keeps every field the PDU format reads.
    assert!(
        Pdu::from_json(version, event_id, redacted).is_ok(),
        "a PDU no longer parses once redacted (room version {})",
        version.id
    );
}

pub static PDU: Target = Target {
    name: "pdu",
    seeds: &[
        br#"{"type":"m.room.message","room_id":"!x:domain","sender":"@a:domain","origin_server_ts":1000000,"content":{"body":"hi","msgtype":"m.text"},"prev_events":["$p"],"auth_events":["$a"],"depth":3,"hashes":{"sha256":"abc"},"signatures":{"fuzz.example":{"ed25519:1":"c2ln"}},"unsigned":{"age":4}}"#,
        br#"{"type":"m.room.create","state_key":"","sender":"@a:x","content":{"room_version":"12","additional_creators":["@b:x"]},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":5,"hashes":{},"signatures":{}}"#,
        br#"{"event_id":"$e:x","type":"m.room.message","room_id":"!r:x","sender":"@a:x","origin":"x","content":{},"prev_events":[["$p:x",{"sha256":"h"}]],"auth_events":[["$a:x",{"sha256":"h"}]],"depth":2,"origin_server_ts":5,"prev_state":[],"membership":"join"}"#,
        br#"{"type":"m.room.redaction","room_id":"!r:x","sender":"@a:x","redacts":"$e","content":{"redacts":"$e","reason":"spam"},"prev_events":["$p"],"auth_events":[],"depth":9,"origin_server_ts":5}"#,
        br#"{"type":"m.room.power_levels","state_key":"","room_id":"!r:x","sender":"@a:x","content":{"users":{"@a:x":100,"@b:x":"50"},"users_default":0,"events":{"m.room.name":50},"notifications":{"room":50},"ban":50,"kick":1.5,"invite":9007199254740992},"prev_events":[],"auth_events":[],"depth":4,"origin_server_ts":5}"#,
        br#"{"type":"m.room.member","state_key":"@b:x","room_id":"!r:x","sender":"@b:x","content":{"membership":"invite","third_party_invite":{"signed":{"mxid":"@b:x","token":"t","signatures":{}},"display_name":"B"},"join_authorised_via_users_server":"@a:x"},"prev_events":[],"auth_events":[],"depth":5,"origin_server_ts":5}"#,
        br#"{"type":"m.room.join_rules","state_key":"","room_id":"!r:x","sender":"@a:x","content":{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!o:x"}]},"prev_events":[],"auth_events":[],"depth":6,"origin_server_ts":-1}"#,
    ],
    dictionary: &[
        b"\"type\":", b"\"room_id\":", b"\"sender\":", b"\"state_key\":", b"\"content\":", b"\"redacts\":",
        b"\"prev_events\":", b"\"auth_events\":", b"\"depth\":", b"\"origin_server_ts\":", b"\"hashes\":",
        b"\"signatures\":", b"\"unsigned\":", b"\"event_id\":", b"\"membership\":", b"\"sha256\":",
        b"\"m.room.create\"", b"\"m.room.member\"", b"\"m.room.power_levels\"", b"\"m.room.redaction\"",
        b"\"m.room.join_rules\"", b"\"m.room.history_visibility\"", b"\"m.room.aliases\"", b"\"fuzz.example\"",
        b"\"ed25519:1\"", b"\"@a:x\"", b"\"$e\"", b"\"!r:x\"", b"\"users\":", b"\"events\":",
        b"\"notifications\":", b"\"additional_creators\":", b"\"room_version\":", b"\"allow\":",
        b"\"third_party_invite\":", b"\"signed\":",
    ],
    max_len: MAX_JSON_INPUT,
    short_execs: 1_500,
    run: pdu_target,
};

// ---------------------------------------------------------------------------
// The X-Matrix Authorization header.

/// A parsed header formats to a header that parses to the same thing.
fn x_matrix_target(input: &[u8]) {
    let Ok(header) = std::str::from_utf8(input) else { return };
    let Ok(parsed) = x_matrix::parse(header) else { return };
    let formatted = x_matrix::format(&parsed);
    assert_eq!(x_matrix::parse(&formatted).as_ref(), Ok(&parsed), "format/parse round trip of {formatted}");
}

pub static X_MATRIX: Target = Target {
    name: "x_matrix",
    seeds: &[
        br#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF...""#,
        b"X-Matrix origin=origin.example:8448,key=\"ed25519:1\",sig=\"abc\"",
        b"x-matrix  ORIGIN = \"a\" , Key=\"k\",\tsig=\"s\\\"q\\\\\"",
        b"X-Matrix origin=\"[::1]:8448\",destination=\"d\",key=\"ed25519:a_b\",sig=\"s\",extra=\"ignored\"",
        b"Bearer abc",
    ],
    dictionary: &[
        b"X-Matrix ", b"origin=", b"destination=", b"key=", b"sig=", b"\"", b"\\", b",", b" ", b"\t", b"=",
        b"ed25519:", b"\xc3\xa9", b"\x7f", b"\x00", b"\r\n",
    ],
    max_len: MAX_SHORT_INPUT + 64,
    short_execs: 5_000,
    run: x_matrix_target,
};

// ---------------------------------------------------------------------------
// Identifiers.

/// Every identifier parser; what parses re-serialises to its input, and its
/// parts (localpart, server name, host, port) put it back together.
fn identifiers_target(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(server) = ServerName::parse(text) {
        assert_eq!(server.as_str(), text);
        let host = server.host();
        assert!(text.starts_with(host), "host {host} is not a prefix of {text}");
        let rest = &text[host.len()..];
        assert_eq!(server.port().is_some(), !rest.is_empty(), "port of {text}");
        if let Some(port) = server.port() {
            assert_eq!(rest.strip_prefix(':').and_then(|digits| digits.parse().ok()), Some(port));
        }
    }
    if let Ok(user) = UserId::parse(text) {
        assert_eq!(user.as_str(), text);
        assert_eq!(format!("@{}:{}", user.localpart(), user.server_name()), text);
        assert!(ServerName::parse(user.server_name()).is_ok(), "server of user {text}");
        let _ = user.is_historical();
    }
    if let Ok(room) = RoomId::parse(text) {
        assert_eq!(room.as_str(), text);
        if let Some(server) = room.server_name() {
            assert!(ServerName::parse(server).is_ok(), "server of room {text}");
        }
    }
    if let Ok(event) = EventId::parse(text) {
        assert_eq!(event.as_str(), text);
        if let Some(server) = event.server_name() {
            assert!(ServerName::parse(server).is_ok(), "server of event {text}");
        }
    }
    if let Ok(alias) = RoomAliasId::parse(text) {
        assert_eq!(alias.as_str(), text);
        assert_eq!(format!("#{}:{}", alias.alias(), alias.server_name()), text);
    }
    if identifiers::validate_new_localpart(text).is_ok() {
        let server = ServerName::parse("example.org").expect("a valid server name");
        if let Ok(user) = UserId::new_local(text, &server) {
            assert_eq!(user.localpart(), text);
            assert!(UserId::parse(user.as_str()).is_ok(), "a new local user ID does not parse");
        }
    }
}

pub static IDENTIFIERS: Target = Target {
    name: "identifiers",
    seeds: &[
        b"example.org",
        b"matrix.org:8448",
        b"1.2.3.4",
        b"1.2.3.4:1",
        b"[::1]",
        b"[1234:5678::abcd]:65535",
        b"[::ffff:1.2.3.4]:80",
        b"@alice:example.org",
        b"@a:[::1]:8448",
        b"@\xc3\xa9:x",
        b"@:x",
        b"!opaque:example.org",
        b"!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        b"$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk",
        b"$e:example.org:8448",
        b"#room:example.org",
        b"#\xe2\x80\xa8:x.y",
        b"300.1.1.1",
        b"[::1",
        b"a:0",
        b"a:65536",
        b"a:00001",
    ],
    dictionary: &[
        b"@",
        b"!",
        b"$",
        b"#",
        b":",
        b".",
        b"[",
        b"]",
        b"::",
        b"8448",
        b"65535",
        b"65536",
        b"0",
        b"255.255.255.255",
        b"::ffff:",
        b"example.org",
        b"-",
        b"_",
        b"/",
        b"+",
        b"=",
        b"\x00",
        b"\xc3\xa9",
    ],
    max_len: 512,
    short_execs: 20_000,
    run: identifiers_target,
};

// ---------------------------------------------------------------------------
// Filters: the filter JSON parsed, then applied.

/// Kinds, senders and rooms a parsed filter is applied to.
const FILTERED_EVENTS: &[(&str, &str)] = &[
    ("m.room.message", "@alice:example.org"),
    ("m.room.member", "@bob:other.example"),
    ("m.reaction", "@alice:example.org"),
    ("", ""),
    ("org.example.custom.event.with.a.long.name.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "@x:y"),
];

/// The room IDs the room lists are checked against.
const FILTERED_ROOMS: &[&str] = &["!room:example.org", "!other:example.org", ""];

fn filter_json_target(input: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(input) else { return };
    if let Ok(filter) = filter::parse(&value) {
        let room = &filter.room;
        for part in [&room.timeline, &room.state, &room.ephemeral, &room.account_data, &filter.presence] {
            for (kind, sender) in FILTERED_EVENTS {
                let _ = part.allows(kind, sender);
            }
            let limit = part.limit_or(10);
            assert!((1..=MAX_TIMELINE_LIMIT).contains(&limit), "limit {limit} out of bounds");
        }
        for room_id in FILTERED_ROOMS {
            let _ = room.allows_room(room_id);
        }
    }
    if let Ok(events) = filter::event_filter(&value) {
        for (kind, sender) in FILTERED_EVENTS {
            let _ = events.allows(kind, sender);
        }
    }
}

pub static FILTER_JSON: Target = Target {
    name: "filter_json",
    seeds: &[
        br#"{"room":{"timeline":{"types":["m.room.*"],"not_types":["m.room.member"],"limit":20,"senders":["@alice:example.org"]},"state":{"lazy_load_members":true},"rooms":["!room:example.org"],"include_leave":true},"presence":{"not_types":["*"]},"event_fields":["content.body"],"event_format":"client"}"#,
        br#"{"types":["m.*"],"not_senders":["@bob:other.example"],"contains_url":true,"limit":0}"#,
        br#"{"room":{"not_rooms":["!other:example.org"],"ephemeral":{"types":[]},"account_data":{"limit":18446744073709551615}}}"#,
        br#"{"room":{"timeline":{"types":["*.*.*","m.room.message","*"]}},"event_format":"federation"}"#,
        br#"{}"#,
    ],
    dictionary: &[
        b"\"room\":", b"\"timeline\":", b"\"state\":", b"\"ephemeral\":", b"\"account_data\":",
        b"\"presence\":", b"\"types\":", b"\"not_types\":", b"\"senders\":", b"\"not_senders\":",
        b"\"rooms\":", b"\"not_rooms\":", b"\"limit\":", b"\"contains_url\":", b"\"lazy_load_members\":",
        b"\"event_format\":", b"\"event_fields\":", b"\"include_leave\":", b"\"*\"", b"\"m.room.*\"", b"*",
        b"[\"*\"]", b"-1", b"1e3", b"null", b"true",
    ],
    max_len: MAX_JSON_INPUT,
    short_execs: 3_000,
    run: filter_json_target,
};

/// A sliding sync request body: parsed, checked against the bounds, then
/// run through the pure list machinery (filters, order, windows, combined
/// room configs) over a few made-up rooms.
fn sliding_sync_request_target(input: &[u8]) {
    use crate::rooms::sliding_sync::{self as sliding, RoomEntry, SyncRequest, Wants};
    let Ok(request) = serde_json::from_slice::<SyncRequest>(input) else { return };
    if request.check().is_err() {
        return;
    }
    let rooms: Vec<RoomEntry> = FILTERED_ROOMS
        .iter()
        .enumerate()
        .map(|(n, room_id)| RoomEntry {
            room_id: (*room_id).to_owned(),
            membership: if n == 0 { "invite".into() } else { "join".into() },
            bump_stamp: n as i64,
            is_dm: n == 1,
            room_type: (n == 2).then(|| "m.space".to_owned()),
            ..Default::default()
        })
        .collect();
    let children = std::collections::HashSet::new();
    for list in request.lists.values() {
        let mut matching: Vec<&RoomEntry> =
            rooms.iter().filter(|room| sliding::passes(&list.filters, room, &children)).collect();
        sliding::sort_by_recency(&mut matching);
        for range in sliding::window_indexes(&list.windows(), matching.len()) {
            assert!(
                range.start <= range.end && range.end <= matching.len(),
                "window {range:?} out of the list"
            );
        }
        let mut wants = Wants::default();
        wants.add(&list.room_config());
        assert!(wants.timeline_limit <= sliding::MAX_TIMELINE_LIMIT);
        for (kind, sender) in FILTERED_EVENTS {
            let _ = wants.wants_state(kind, sender, "@alice:example.org");
        }
    }
}

pub static SLIDING_SYNC_REQUEST: Target = Target {
    name: "sliding_sync_request",
    seeds: &[
        br#"{"conn_id":"room-list","txn_id":"t","lists":{"all_rooms":{"ranges":[[0,19]],"timeline_limit":1,"required_state":[["m.room.member","$LAZY"],["m.room.member","$ME"],["*","*"]],"filters":{"not_room_types":["m.space",null],"is_dm":false}}},"room_subscriptions":{"!room:example.org":{"timeline_limit":20,"required_state":[["m.room.create",""]]}},"extensions":{"to_device":{"enabled":true,"since":"5"},"e2ee":{"enabled":true},"receipts":{"enabled":true,"rooms":["*"]},"typing":{"enabled":true,"lists":["all_rooms"]}}}"#,
        br#"{"lists":{"a":{"range":[0,18446744073709551615],"timeline_limit":18446744073709551615,"filters":{"is_invited":true,"room_types":[null],"tags":["m.favourite"],"not_tags":["m.lowpriority"],"spaces":["!other:example.org"]}}}}"#,
        br#"{"lists":{"b":{"ranges":[[5,1],[0,0]]}}}"#,
        br#"{}"#,
    ],
    dictionary: &[
        b"\"lists\":", b"\"ranges\":", b"\"range\":", b"\"timeline_limit\":", b"\"required_state\":",
        b"\"filters\":", b"\"is_dm\":", b"\"is_invite\":", b"\"is_encrypted\":", b"\"room_types\":",
        b"\"not_room_types\":", b"\"tags\":", b"\"not_tags\":", b"\"spaces\":", b"\"room_subscriptions\":",
        b"\"extensions\":", b"\"conn_id\":", b"[0,0]", b"[[0,99]]", b"\"$LAZY\"", b"\"$ME\"", b"\"*\"",
        b"null", b"true", b"-1",
    ],
    max_len: MAX_JSON_INPUT,
    short_execs: 3_000,
    run: sliding_sync_request_target,
};

// ---------------------------------------------------------------------------
// Glob matchers. Each input is a pattern, a newline, then the text matched.

fn split_pattern(input: &[u8]) -> (String, String) {
    let (pattern, text) = match input.iter().position(|byte| *byte == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &input[..0]),
    };
    (String::from_utf8_lossy(pattern).into_owned(), String::from_utf8_lossy(text).into_owned())
}

/// A plain dynamic-programming glob matcher, the reference the matchers
/// under test are compared with: `O(pattern × text)`, no recursion.
/// `question_mark`: `?` matches one character (else it is literal);
/// `fold`: how characters are compared.
fn reference_glob(pattern: &str, text: &str, question_mark: bool, same: impl Fn(char, char) -> bool) -> bool {
    let text: Vec<char> = text.chars().collect();
    // row[j]: the pattern so far matches the first j characters of the text.
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for token in pattern.chars() {
        let mut next = vec![false; text.len() + 1];
        if token == '*' {
            let mut any = false;
            for (j, slot) in next.iter_mut().enumerate() {
                any |= row[j];
                *slot = any;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && ((question_mark && token == '?') || same(token, text[j - 1]));
            }
        }
        row = next;
    }
    row[text.len()]
}

/// Filter `types` globs (`*` only, case-sensitive), through the filter parser
/// and `EventFilter::allows`. `None` when the parser refuses the pattern.
fn filter_glob(pattern: &str, kind: &str) -> Option<bool> {
    let filter = filter::event_filter(&json!({ "types": [pattern] })).ok()?;
    Some(filter.allows(kind, "@sender:example.org"))
}

fn filter_glob_target(input: &[u8]) {
    let (pattern, text) = split_pattern(input);
    if let Some(matched) = filter_glob(&pattern, &text) {
        let expected = reference_glob(&pattern, &text, false, |left, right| left == right);
        assert_eq!(matched, expected, "filter glob {pattern:?} on {text:?}");
    }
}

/// Server ACL globs (`*` and `?`, ASCII case-insensitive, on the host part),
/// through `server_acl::allowed` with the pattern as the only `allow` entry.
fn server_acl_glob(pattern: &str, server_name: &str) -> bool {
    server_acl::allowed(&json!({ "allow": [pattern], "deny": [] }), server_name)
}

fn server_acl_glob_target(input: &[u8]) {
    let (pattern, text) = split_pattern(input);
    let allowed = server_acl_glob(&pattern, &text);
    // Deny wins over allow.
    let both = server_acl::allowed(&json!({ "allow": [&pattern], "deny": [&pattern] }), &text);
    assert!(!both, "server ACL allows {text:?} that its deny list names ({pattern:?})");
    // Without a port or brackets the whole name is the host. A pattern over
    // the length bound is skipped, so it allows nothing. Server names are
    // ASCII (an internationalised name travels as punycode), so the
    // reference's ASCII case folding is compared on ASCII input only.
    if !text.contains([':', '[']) && text.is_ascii() && pattern.is_ascii() {
        let expected = pattern.len() <= server_acl::MAX_PATTERN_BYTES
            && reference_glob(&pattern, &text, true, |left, right| left.eq_ignore_ascii_case(&right));
        assert_eq!(allowed, expected, "server ACL glob {pattern:?} on {text:?}");
    }
}

/// Push rule globs, through the evaluator: an `event_match` condition on
/// `type` (a whole-value match), a `content` rule on `content.body` (a
/// word-bounded match) and the display name (a literal word-bounded match).
/// Answers whether the whole-value and the word-bounded rules matched;
/// `None` when the conditions' validation (what `PUT /pushrules` runs)
/// refuses the pattern. Should `PUT /pushrules` come to bound content-rule
/// patterns elsewhere, the same check belongs here.
fn push_rule_glob(pattern: &str, text: &str) -> Option<(bool, bool)> {
    const USER: &str = "@alice:example.org";
    let rule = |rule_id: &str| PushRule {
        rule_id: rule_id.to_owned(),
        default: false,
        enabled: true,
        conditions: Vec::new(),
        pattern: None,
        actions: vec![json!("notify")],
    };
    let whole = PushRule {
        conditions: vec![json!({ "kind": "event_match", "key": "type", "pattern": pattern })],
        ..rule("fuzz.whole")
    };
    push_rules::validate_conditions(&whole.conditions).ok()?;
    let words = PushRule { pattern: Some(pattern.to_owned()), ..rule("fuzz.words") };
    let power = RoomPower::new(&room_version::ALL[room_version::ALL.len() - 1], None, None);
    let context = Context { user_id: USER, display_name: Some(pattern), member_count: 3, power: &power };
    let mut event = Map::new();
    event.insert("type".into(), json!(text));
    event.insert("sender".into(), json!("@bob:example.org"));
    event.insert("room_id".into(), json!("!room:example.org"));
    event.insert("content".into(), json!({ "msgtype": "m.text", "body": text }));
    let matched = |ruleset: &Ruleset, rule_id: &str| {
        ruleset.matching_rule(&event, &context).is_some_and(|(_, rule)| rule.rule_id == rule_id)
    };
    let whole_rules = Ruleset::merged(USER, &[], [(Kind::Override, whole)]);
    let words_rules = Ruleset::merged(USER, &[], [(Kind::Content, words)]);
    let _ = words_rules.evaluate(&event, &context);
    Some((matched(&whole_rules, "fuzz.whole"), matched(&words_rules, "fuzz.words")))
}

fn push_rule_glob_target(input: &[u8]) {
    let (pattern, text) = split_pattern(input);
    let Some((whole, _words)) = push_rule_glob(&pattern, &text) else { return };
    // Spec: case-insensitive, `*` any run and `?` one character.
    let expected =
        reference_glob(&pattern.to_lowercase(), &text.to_lowercase(), true, |left, right| left == right);
    assert_eq!(whole, expected, "push rule glob {pattern:?} on {text:?}");
}

/// Tokens of every glob input.
const GLOB_TOKENS: &[&[u8]] = &[
    b"*",
    b"?",
    b"**",
    b"*a",
    b"a*",
    b"\n",
    b".",
    b":",
    b"[",
    b"]",
    b"\xc3\xa9",
    b"\xc4\xb0",
    b"\xe1\xba\x9e",
    b"m.room.",
    b"example.org",
    b"aaaaaaaaaaaaaaaa",
    b" ",
    b"_",
    b"@room",
];

/// Glob seeds: pattern, newline, text.
const GLOB_SEEDS: &[&[u8]] = &[
    b"m.room.*\nm.room.message",
    b"*.example.org\nmatrix.example.org:8448",
    b"?.example\na.example",
    b"*a*a*a*b\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    b"cake*lie\nThe cake is a lie",
    b"\xc4\xb0*\n\xc4\xb0stanbul",
    b"*\n",
    b"\n",
    b"[::1]\n[::1]:8448",
    b"literal\nliteral",
];

pub static FILTER_GLOB: Target = Target {
    name: "filter_glob",
    seeds: GLOB_SEEDS,
    dictionary: GLOB_TOKENS,
    max_len: MAX_SHORT_INPUT,
    short_execs: 3_000,
    run: filter_glob_target,
};

pub static SERVER_ACL_GLOB: Target = Target {
    name: "server_acl_glob",
    seeds: GLOB_SEEDS,
    dictionary: GLOB_TOKENS,
    max_len: MAX_SHORT_INPUT,
    short_execs: 3_000,
    run: server_acl_glob_target,
};

pub static PUSH_RULE_GLOB: Target = Target {
    name: "push_rule_glob",
    seeds: GLOB_SEEDS,
    dictionary: GLOB_TOKENS,
    max_len: MAX_SHORT_INPUT,
    // Each execution evaluates whole rulesets: the slowest target in debug builds.
    short_execs: 500,
    run: push_rule_glob_target,
};

// ---------------------------------------------------------------------------
// The HTTP/1.1 codec: request and response heads, chunked bodies.

/// Bytes a header value may hold once parsed: visible ASCII, space and tab.
fn is_clean_header_value(value: &str) -> bool {
    value.bytes().all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte))
}

/// A head that parses is parsed again the same from its own bytes, says how
/// long it is within the input, and holds only clean header bytes; the
/// chunked decoder ends, errs or asks for more, always making progress.
fn http_head_target(input: &[u8]) {
    if let Ok(Some((parsed, length))) = head::parse_request(input) {
        assert!(length <= input.len(), "head length {length} past the input");
        let again = head::parse_request(input.get(..length).unwrap_or_default());
        assert_eq!(again, Ok(Some((parsed.clone(), length))), "the head's own bytes parse the same");
        for (name, value) in parsed.headers.iter() {
            assert!(
                !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_graphic()),
                "header name {name:?}"
            );
            assert!(is_clean_header_value(value), "header value {value:?}");
        }
    }
    if let Ok(Some((parsed, length))) = head::parse_response(input) {
        assert!(length <= input.len(), "head length {length} past the input");
        for (_, value) in parsed.headers.iter() {
            assert!(is_clean_header_value(value), "header value {value:?}");
        }
    }
    let mut decoder = chunked::Decoder::default();
    let mut rest = input;
    let mut output = [0u8; 64];
    while !rest.is_empty() && !decoder.is_done() {
        match decoder.decode(rest, &mut output) {
            Ok((0, 0)) => panic!("the chunked decoder made no progress"),
            Ok((used, filled)) => {
                assert!(used <= rest.len() && filled <= output.len());
                rest = rest.get(used..).unwrap_or_default();
            }
            Err(_) => break,
        }
    }
}

pub static HTTP_HEAD: Target = Target {
    name: "http_head",
    seeds: &[
        b"GET /_matrix/client/versions HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\nX: b\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Matrix: a\r\n\r\nhi",
        b"4;ext=1\r\nwiki\r\n0\r\nTrailer: x\r\n\r\n",
    ],
    dictionary: &[
        b"\r\n", b"\n", b": ", b"Content-Length", b"Transfer-Encoding", b"chunked", b"gzip", b"Expect: 100-continue",
        b"HTTP/1.0", b"HTTP/1.1", b"\xc3\xa9", b"\x00", b"\t", b" ", b";", b"0\r\n\r\n", b"ffffffffffffffff",
    ],
    max_len: 32 << 10,
    short_execs: 5_000,
    run: http_head_target,
};

// ---------------------------------------------------------------------------
// Link previews: the Open Graph extractor over fetched pages.

/// The extractor returns on any page; every value it answers is a string
/// within the length bound, keyed `og:*`. The image header reader returns
/// on any bytes.
fn url_preview_target(input: &[u8]) {
    let _ = url_preview::image_dimensions(input);
    let og = url_preview::extract(&String::from_utf8_lossy(input));
    for (key, value) in &og {
        assert!(key.starts_with("og:"), "key {key:?}");
        let text = value.as_str().unwrap_or_else(|| panic!("value of {key} is not a string: {value}"));
        assert!(text.chars().count() <= url_preview::MAX_VALUE_CHARS, "value of {key} too long");
    }
}

pub static URL_PREVIEW: Target = Target {
    name: "url_preview",
    seeds: &[
        b"<html><head><title>T</title><meta property=\"og:title\" content=\"A &amp; B\"></head></html>",
        b"<meta name='description' content='d'><meta property=og:image content=/i.png>",
        b"<!-- <meta property=og:title content=x> --><script>'<title>'</script><title>&#x41;</title>",
    ],
    dictionary: &[
        b"<",
        b">",
        b"</",
        b"<!--",
        b"-->",
        b"<meta ",
        b"<title>",
        b"</title>",
        b"<script>",
        b"</script>",
        b"property=",
        b"name=",
        b"content=",
        b"\"",
        b"'",
        b"og:title",
        b"og:image",
        b"&amp;",
        b"&#x",
        b"&#",
        b";",
        b"\xc3\xa9",
        b"\x00",
    ],
    max_len: 32 << 10,
    short_execs: 3_000,
    run: url_preview_target,
};

/// A certificate from an ACME CA: its serial and validity read from the DER
/// (`protocol::acme::certificate_facts`), and the CA's JSON objects.
fn acme_target(input: &[u8]) {
    if let Ok(facts) = acme::certificate_facts(input) {
        // Validity comes from two-digit fields: years 0 to 9999 at most.
        let bound = 253_402_300_800; // 10000-01-01
        assert!(facts.not_before.abs() < bound && facts.not_after.abs() < bound);
        assert!(facts.serial.len() <= 2 * input.len());
    }
    if let Ok(authorization) = serde_json::from_slice::<acme::Authorization>(input) {
        if let Some((_, token)) = authorization.challenge("tls-alpn-01") {
            assert!(acme::is_valid_token(token));
        }
        let _ = authorization.failure();
    }
    let _ = serde_json::from_slice::<acme::Order>(input);
}

pub static ACME: Target = Target {
    name: "acme",
    seeds: &[
        // Certificate { TBSCertificate { [0] v3, serial 0x1234, {}, {}, validity } }
        b"\x30\x2f\x30\x2d\xa0\x03\x02\x01\x02\x02\x02\x12\x34\x30\x00\x30\x00\x30\x1e\
          \x17\x0d700101000000Z\x17\x0d491231235959Z",
        b"\x30\x2d\x30\x2b\x02\x01\x01\x30\x00\x30\x00\x30\x22\
          \x18\x0f20000301000000Z\x18\x0f99991231235959Z",
        br#"{"status": "pending", "identifier": {"type": "dns", "value": "a.example"},
             "challenges": [{"type": "tls-alpn-01", "url": "https://ca/c", "token": "DGyRejmCefe7v4NfDGDKfA",
             "error": {"type": "urn:ietf:params:acme:error:connection", "detail": "refused"}}]}"#,
        br#"{"status": "valid", "authorizations": ["https://ca/a"], "finalize": "https://ca/f",
             "certificate": "https://ca/c"}"#,
    ],
    dictionary: &[
        b"\x30",
        b"\x02",
        b"\x17\x0d",
        b"\x18\x0f",
        b"\x81",
        b"\x82\xff\xff",
        b"\x84\xff\xff\xff\xff",
        b"Z",
        b"99",
        b"00",
        b"\"status\"",
        b"\"challenges\"",
        b"\"token\"",
        b"\"tls-alpn-01\"",
    ],
    max_len: 4 << 10,
    short_execs: 3_000,
    run: acme_target,
};
