//! Tables of events against small hand-built room states. The membership
//! tables are in `membership.rs`.

mod membership;

use super::*;
use crate::protocol::fixtures::{PduBuilder, member, pdu};
use serde_json::json;

const ALICE: &str = "@alice:x"; // creator, power 100 (v12: creator, infinite)
const MODERATOR: &str = "@mod:x"; // power 50
const BOB: &str = "@bob:y"; // power 0, joined
const CAROL: &str = "@carol:z"; // not in the room

/// Fixed answers for signature checks: every event is signed by every server
/// except `unsigned.example`, and only the key `good-key` signs third-party invites.
struct TestSignatures;

impl SignatureCheck for TestSignatures {
    fn event_signed_by(&self, _event: &Pdu, server_name: &str) -> bool {
        server_name != "unsigned.example"
    }
    fn signed_by_public_key(&self, _signed: &Value, public_key: &str) -> bool {
        public_key == "good-key"
    }
}

fn version(id: &str) -> RoomVersion {
    RoomVersion::from_id(id).unwrap()
}

/// The room ID for a version: v12 rooms are named after `$create`.
fn room_of(version: &RoomVersion) -> &'static str {
    if version.room_id_from_create_event { "!create" } else { "!room:x" }
}

fn create_event(version: &RoomVersion, content: Value) -> Pdu {
    let builder = pdu("$create", "m.room.create", Some(""), ALICE).content(content);
    if version.room_id_from_create_event { builder.without_room_id().build() } else { builder.build() }
}

/// A room where Alice (creator) has 100, Moderator 50, and Bob joined with 0.
/// An empty `join_rule` leaves out the `m.room.join_rules` event.
fn base_state(version: &RoomVersion, join_rule: &str) -> Vec<Pdu> {
    let mut users = json!({ MODERATOR: 50 });
    if !version.privileged_creators {
        users[ALICE] = json!(100);
    }
    let room = room_of(version);
    let mut state = vec![
        create_event(version, json!({"creator": ALICE, "room_version": version.id})),
        member("$alice-join", ALICE, ALICE, "join").room(room).build(),
        pdu("$pl", "m.room.power_levels", Some(""), ALICE)
            .content(json!({ "users": users }))
            .room(room)
            .build(),
        pdu("$join-rules", "m.room.join_rules", Some(""), ALICE)
            .content(json!({ "join_rule": join_rule }))
            .room(room)
            .build(),
        member("$mod-join", MODERATOR, MODERATOR, "join").room(room).build(),
        member("$bob-join", BOB, BOB, "join").room(room).build(),
    ];
    // An empty join rule stands for "no m.room.join_rules event".
    state.retain(|event| !(join_rule.is_empty() && event.kind == "m.room.join_rules"));
    state
}

/// Checks `event` in version `id` against the base state with `join_rule`,
/// overridden by `extra` state events.
fn check(id: &str, join_rule: &str, extra: Vec<PduBuilder>, event: PduBuilder) -> Result<(), AuthError> {
    let version = version(id);
    let room = room_of(&version);
    let mut state = base_state(&version, join_rule);
    state.extend(extra.into_iter().map(|builder| builder.room(room).build()));
    let event = event.room(room).build();
    let lookup = |kind: &str, state_key: &str| {
        state.iter().rev().find(|event| event.state_pair() == Some((kind, state_key)))
    };
    auth_check(&version, &event, lookup, &TestSignatures)
}

fn message(sender: &str) -> PduBuilder {
    pdu("$message", "m.room.message", None, sender).content(json!({"body": "hi"}))
}

fn power_levels(sender: &str, content: Value) -> PduBuilder {
    pdu("$new-pl", "m.room.power_levels", Some(""), sender).content(content)
}

/// Runs a table of `(name, outcome, allowed)`.
fn assert_table(cases: Vec<(&str, Result<(), AuthError>, bool)>) {
    for (name, outcome, allowed) in cases {
        assert_eq!(outcome.is_ok(), allowed, "{name}: {outcome:?}");
    }
}

#[test]
fn create_events() {
    let create = |id: &str, content: Value| {
        let version = version(id);
        auth_check(&version, &create_event(&version, content), |_, _| None::<&Pdu>, &TestSignatures)
    };
    let v10 = version("10");
    let foreign_room = pdu("$c", "m.room.create", Some(""), ALICE)
        .room("!room:elsewhere")
        .content(json!({"creator": ALICE}))
        .build();
    let with_prev = pdu("$c", "m.room.create", Some(""), ALICE)
        .content(json!({"creator": ALICE}))
        .prev(&["$earlier"])
        .build();
    let v12_with_room_id = pdu("$c", "m.room.create", Some(""), ALICE).build();
    let no_state =
        |event: &Pdu, id: &str| auth_check(&version(id), event, |_, _| None::<&Pdu>, &TestSignatures);
    assert_table(vec![
        ("v1 with creator", create("1", json!({"creator": ALICE})), true),
        ("v1 without creator", create("1", json!({})), false),
        ("v10 without creator", create("10", json!({})), false),
        ("v11 without creator", create("11", json!({})), true),
        ("known room_version", create("11", json!({"room_version": "11"})), true),
        ("unknown room_version", create("11", json!({"room_version": "99"})), false),
        ("non-string room_version", create("11", json!({"room_version": 11})), false),
        ("prev_events", no_state(&with_prev, "10"), false),
        (
            "room on another domain",
            auth_check(&v10, &foreign_room, |_, _| None::<&Pdu>, &TestSignatures),
            false,
        ),
        ("v12 with room_id", no_state(&v12_with_room_id, "12"), false),
        ("v12 additional creators", create("12", json!({"additional_creators": [BOB]})), true),
        ("v12 bad additional creator", create("12", json!({"additional_creators": ["bob"]})), false),
        ("v12 additional creators not a list", create("12", json!({"additional_creators": BOB})), false),
        ("v11 ignores additional creators", create("11", json!({"additional_creators": 5})), true),
    ]);
}

#[test]
fn power_level_changes() {
    let users = |extra: Value| {
        let mut users = json!({ALICE: 100, MODERATOR: 50});
        for (user, level) in extra.as_object().unwrap() {
            users[user] = level.clone();
        }
        users
    };
    let by = |sender: &str, content: Value| check("10", "public", vec![], power_levels(sender, content));
    assert_table(vec![
        ("admin promotes member", by(ALICE, json!({"users": users(json!({BOB: 50}))})), true),
        ("moderator raises self", by(MODERATOR, json!({"users": users(json!({MODERATOR: 100}))})), false),
        ("moderator lowers self", by(MODERATOR, json!({"users": users(json!({MODERATOR: 10}))})), true),
        (
            "moderator raises member to own level",
            by(MODERATOR, json!({"users": users(json!({BOB: 50}))})),
            true,
        ),
        (
            "moderator raises member above self",
            by(MODERATOR, json!({"users": users(json!({BOB: 51}))})),
            false,
        ),
        ("moderator demotes admin", by(MODERATOR, json!({"users": users(json!({ALICE: 0}))})), false),
        ("moderator lowers ban to 40", by(MODERATOR, json!({"users": users(json!({})), "ban": 40})), true),
        ("moderator raises kick to 60", by(MODERATOR, json!({"users": users(json!({})), "kick": 60})), false),
        (
            "moderator adds an event level",
            by(MODERATOR, json!({"users": users(json!({})), "events": {"m.room.name": 50}})),
            true,
        ),
        (
            "moderator adds a high event level",
            by(MODERATOR, json!({"users": users(json!({})), "events": {"m.room.name": 51}})),
            false,
        ),
        ("v10 string level", by(ALICE, json!({"users": users(json!({})), "ban": "50"})), false),
        (
            "v9 string level",
            check("9", "public", vec![], power_levels(ALICE, json!({"users": {ALICE: "100"}, "ban": "50"}))),
            true,
        ),
        ("bad user ID", by(ALICE, json!({"users": users(json!({"bob": 1}))})), false),
        ("member sends power levels", by(BOB, json!({"users": users(json!({}))})), false),
    ]);
    // Removing an events entry above one's own level.
    let high_event =
        power_levels(ALICE, json!({"users": users(json!({})), "events": {"m.room.tombstone": 100}}));
    let removal = power_levels(MODERATOR, json!({"users": users(json!({})), "events": {}}));
    assert!(check("10", "public", vec![high_event], removal).is_err());
    // Notifications count from v6 only.
    let notify = |id: &str| {
        let raise =
            power_levels(MODERATOR, json!({"users": users(json!({})), "notifications": {"room": 100}}));
        check(id, "public", vec![], raise)
    };
    assert!(notify("5").is_ok());
    assert!(notify("6").is_err());
    // The first power levels event is allowed whatever it says.
    let version = version("10");
    let create = create_event(&version, json!({"creator": ALICE}));
    let alice_join = member("$aj", ALICE, ALICE, "join").build();
    let first = power_levels(ALICE, json!({"users": {ALICE: 100, BOB: 9000}})).build();
    let lookup = |kind: &str, state_key: &str| match (kind, state_key) {
        ("m.room.create", "") => Some(&create),
        ("m.room.member", ALICE) => Some(&alice_join),
        _ => None,
    };
    assert_eq!(auth_check(&version, &first, lookup, &TestSignatures), Ok(()));
}

#[test]
fn v12_creators() {
    let creators = json!({"room_version": "12", "additional_creators": [BOB]});
    let create_with_bob =
        || pdu("$create", "m.room.create", Some(""), ALICE).without_room_id().content(creators.clone());
    let admin = |user: &str| power_levels(ALICE, json!({"users": {user: 100}}));
    assert_table(vec![
        (
            "creator kicked by a 100",
            check(
                "12",
                "public",
                vec![create_with_bob(), admin(CAROL), member("$cj", CAROL, CAROL, "join")],
                member("$k", CAROL, BOB, "leave"),
            ),
            false,
        ),
        (
            "additional creator bans a moderator",
            check("12", "public", vec![create_with_bob()], member("$b", BOB, MODERATOR, "ban")),
            true,
        ),
        (
            "additional creator changes power levels",
            check(
                "12",
                "public",
                vec![create_with_bob()],
                power_levels(BOB, json!({"users": {CAROL: 1_000_000}})),
            ),
            true,
        ),
        ("power levels list a creator", check("12", "public", vec![], admin(ALICE)), false),
        (
            "power levels list an additional creator",
            check("12", "public", vec![create_with_bob()], admin(BOB)),
            false,
        ),
        ("v11 may list the creator", check("11", "public", vec![], admin(ALICE)), true),
    ]);
    // Rule 2: the room ID must name the create event.
    let version = version("12");
    let create = create_event(&version, json!({}));
    let alice_join = member("$aj", ALICE, ALICE, "join").room("!create").build();
    let lookup = |kind: &str, _: &str| match kind {
        "m.room.create" => Some(&create),
        "m.room.member" => Some(&alice_join),
        _ => None,
    };
    let in_room = |room: &str| message(ALICE).room(room).build();
    assert_eq!(auth_check(&version, &in_room("!create"), lookup, &TestSignatures), Ok(()));
    assert!(auth_check(&version, &in_room("!other"), lookup, &TestSignatures).is_err());
}

#[test]
fn general_rules_redactions_and_aliases() {
    let redaction = |sender: &str, event_id: &str, redacts: &str| {
        pdu(event_id, "m.room.redaction", None, sender).redacts(redacts)
    };
    let aliases = |sender: &str, state_key: &str| pdu("$a", "m.room.aliases", Some(state_key), sender);
    let not_federated = pdu("$create", "m.room.create", Some(""), ALICE)
        .content(json!({"creator": ALICE, "m.federate": false}));
    assert_table(vec![
        ("member sends a message", check("10", "public", vec![], message(BOB)), true),
        ("outsider sends a message", check("10", "public", vec![], message(CAROL)), false),
        (
            "member sends a topic",
            check("10", "public", vec![], pdu("$t", "m.room.topic", Some(""), BOB)),
            false,
        ),
        (
            "moderator sends a topic",
            check("10", "public", vec![], pdu("$t", "m.room.topic", Some(""), MODERATOR)),
            true,
        ),
        (
            "state key of another user",
            check("10", "public", vec![], pdu("$s", "org.example", Some(BOB), ALICE)),
            false,
        ),
        (
            "state key of oneself",
            check("10", "public", vec![], pdu("$s", "org.example", Some(ALICE), ALICE)),
            true,
        ),
        ("v1 redact another's event", check("1", "public", vec![], redaction(BOB, "$r:y", "$e:x")), false),
        ("v1 redact own server's event", check("1", "public", vec![], redaction(BOB, "$r:y", "$e:y")), true),
        ("v1 moderator redacts", check("1", "public", vec![], redaction(MODERATOR, "$r:x", "$e:y")), true),
        (
            "v3 redaction left to the redaction step",
            check("3", "public", vec![], redaction(BOB, "$r", "$e")),
            true,
        ),
        (
            "v11 redaction needs its event level",
            check(
                "11",
                "public",
                vec![power_levels(ALICE, json!({"users": {ALICE: 100}, "events": {"m.room.redaction": 10}}))],
                redaction(BOB, "$r", "$e"),
            ),
            false,
        ),
        ("v5 aliases from the sender's server", check("5", "public", vec![], aliases(CAROL, "z")), true),
        ("v5 aliases for another server", check("5", "public", vec![], aliases(CAROL, "x")), false),
        ("v6 aliases need membership", check("6", "public", vec![], aliases(CAROL, "z")), false),
        (
            "not federated, same server",
            check("10", "public", vec![not_federated.clone().room("!room:x")], message(MODERATOR)),
            true,
        ),
        (
            "not federated, other server",
            check("10", "public", vec![not_federated.room("!room:x")], message(BOB)),
            false,
        ),
    ]);
}

#[test]
fn auth_types_follow_the_selection_algorithm() {
    let pairs = |kind: &str, state_key: Option<&str>, sender: &str, content: Value, id: &str| {
        let mut pairs = auth_types_for_event(kind, state_key, sender, &content, &version(id));
        pairs.sort();
        pairs.into_iter().map(|(kind, state_key)| format!("{kind}|{state_key}")).collect::<Vec<_>>()
    };
    assert!(pairs("m.room.create", Some(""), ALICE, json!({}), "10").is_empty());
    assert_eq!(
        pairs("m.room.message", None, BOB, json!({}), "10"),
        ["m.room.create|", "m.room.member|@bob:y", "m.room.power_levels|"]
    );
    assert_eq!(
        pairs("m.room.message", None, BOB, json!({}), "12"),
        ["m.room.member|@bob:y", "m.room.power_levels|"]
    );
    let restricted_join = json!({"membership": "join", "join_authorised_via_users_server": ALICE});
    assert_eq!(
        pairs("m.room.member", Some(BOB), BOB, restricted_join.clone(), "8"),
        [
            "m.room.create|",
            "m.room.join_rules|",
            "m.room.member|@alice:x",
            "m.room.member|@bob:y",
            "m.room.power_levels|"
        ]
    );
    assert_eq!(pairs("m.room.member", Some(BOB), BOB, restricted_join, "7").len(), 4);
    let third_party = json!({"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}});
    assert_eq!(
        pairs("m.room.member", Some(CAROL), ALICE, third_party, "10"),
        [
            "m.room.create|",
            "m.room.join_rules|",
            "m.room.member|@alice:x",
            "m.room.member|@carol:z",
            "m.room.power_levels|",
            "m.room.third_party_invite|tok"
        ]
    );
    assert_eq!(pairs("m.room.member", Some(BOB), ALICE, json!({"membership": "ban"}), "10").len(), 4);
}

#[test]
fn auth_event_lists() {
    let v10 = version("10");
    let v12 = version("12");
    let events: Vec<Pdu> = [base_state(&v10, "public"), vec![create_event(&v12, json!({}))]].concat();
    let elsewhere = member("$elsewhere", BOB, BOB, "join").room("!other:x").build();
    let fetch = |id: &str| events.iter().chain([&elsewhere]).find(|event| event.event_id == id).cloned();
    let message_with = |auth: &[&str], room: &str| message(BOB).auth(auth).room(room).build();
    let check = |version: &RoomVersion, auth: &[&str]| {
        check_auth_events(version, &message_with(auth, room_of(version)), fetch)
    };
    assert_table(vec![
        ("the right events", check(&v10, &["$create", "$pl", "$bob-join"]), true),
        ("no power levels is fine", check(&v10, &["$create", "$bob-join"]), true),
        ("missing create", check(&v10, &["$pl", "$bob-join"]), false),
        ("duplicate pair", check(&v10, &["$create", "$bob-join", "$bob-join"]), false),
        ("unneeded type", check(&v10, &["$create", "$join-rules"]), false),
        ("another user's membership", check(&v10, &["$create", "$mod-join"]), false),
        ("unknown event", check(&v10, &["$create", "$nope"]), false),
        ("auth event from another room", check(&v10, &["$create", "$elsewhere"]), false),
        ("v12 lists the create event", check(&v12, &["$create"]), false),
    ]);
    let v12_message = message(ALICE).room("!create").build();
    assert_eq!(check_auth_events(&v12, &v12_message, fetch), Ok(()));
}
