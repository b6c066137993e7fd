//! Hand-built DAGs resolved step by step.

use super::*;
use crate::protocol::auth::auth_types_for_event;
use crate::protocol::fixtures::{PduBuilder, member, pdu};
use serde_json::json;

const ALICE: &str = "@alice:x"; // creator
const BOB: &str = "@bob:y"; // power 50 at the start
const CAROL: &str = "@carol:z"; // joined, power 0
const DAVE: &str = "@dave:w"; // not in the room

/// Every signature checks out.
struct AllSigned;

impl SignatureCheck for AllSigned {
    fn event_signed_by(&self, _event: &Pdu, _server_name: &str) -> bool {
        true
    }
    fn signed_by_public_key(&self, _signed: &Value, _public_key: &str) -> bool {
        true
    }
}

/// A room DAG under construction: events get their auth events from the
/// state of their branch and a rising origin_server_ts, and must pass auth.
struct Dag {
    version: RoomVersion,
    room: &'static str,
    events: Events,
    clock: i64,
}

impl Dag {
    /// A public room: Alice created it (100; v12: creator), Bob has 50, Carol
    /// joined with 0. Returns the DAG and the state after these events.
    fn new(id: &str) -> (Dag, StateMap) {
        let version = RoomVersion::from_id(id).unwrap();
        let room = if version.room_id_from_create_event { "!create" } else { "!room:x" };
        let mut dag = Dag { version, room, events: Events::new(), clock: 0 };
        let mut create = pdu("$create", "m.room.create", Some(""), ALICE)
            .content(json!({"creator": ALICE, "room_version": id}));
        if version.room_id_from_create_event {
            create = create.without_room_id();
        }
        let mut users = json!({ BOB: 50 });
        if !version.privileged_creators {
            users[ALICE] = json!(100);
        }
        let state = dag.extend(
            &StateMap::new(),
            vec![
                create,
                member("$alice-join", ALICE, ALICE, "join").prev(&["$create"]),
                pdu("$pl0", "m.room.power_levels", Some(""), ALICE).content(json!({"users": users})),
                pdu("$join-rules", "m.room.join_rules", Some(""), ALICE)
                    .content(json!({"join_rule": "public"})),
                member("$bob-join", BOB, BOB, "join"),
                member("$carol-join", CAROL, CAROL, "join"),
            ],
        );
        (dag, state)
    }

    /// Appends `builders` in order on top of `state`; returns the state after.
    fn extend(&mut self, state: &StateMap, builders: Vec<PduBuilder>) -> StateMap {
        let mut state = state.clone();
        for builder in builders {
            let mut event = builder.room(self.room).build();
            // Depth (room v1 sorts by it): one past the deepest event of the branch's state.
            event.depth = 1 + state.values().map(|id| self.events[id].depth).max().unwrap_or(0);
            self.clock += 1;
            if event.origin_server_ts == 0 {
                event.origin_server_ts = self.clock;
            }
            let pairs = auth_types_for_event(
                &event.kind,
                event.state_key.as_deref(),
                &event.sender,
                &event.content,
                &self.version,
            );
            event.auth_events = pairs.iter().filter_map(|pair| state.get(pair).cloned()).collect();
            let lookup = |kind: &str, state_key: &str| {
                let key = (kind.to_owned(), state_key.to_owned());
                state.get(&key).and_then(|id| self.events.get(id))
            };
            let allowed = auth_check(&self.version, &event, lookup, &AllSigned);
            assert_eq!(allowed, Ok(()), "fixture event {} must pass auth", event.event_id);
            if let Some((kind, state_key)) = event.state_pair() {
                state.insert((kind.to_owned(), state_key.to_owned()), event.event_id.clone());
            }
            self.events.insert(event.event_id.clone(), event);
        }
        state
    }

    fn resolve(&self, state_sets: &[StateMap]) -> Result<StateMap, StateResError> {
        resolve(&self.version, state_sets, |id| self.events.get(id).cloned(), &AllSigned)
    }
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| id.to_string()).collect()
}

impl Dag {
    /// `users` plus Alice at 100, except in v12 where creators are not listed.
    fn users(&self, users: Value) -> Value {
        let mut users = users;
        if !self.version.privileged_creators {
            users[ALICE] = json!(100);
        }
        users
    }
}

fn power_levels(event_id: &str, sender: &str, users: Value) -> PduBuilder {
    pdu(event_id, "m.room.power_levels", Some(""), sender).content(json!({ "users": users }))
}

fn topic(event_id: &str, sender: &str) -> PduBuilder {
    pdu(event_id, "m.room.topic", Some(""), sender).content(json!({"topic": event_id}))
}

#[test]
fn splits_unconflicted_and_conflicted_state() {
    let state = |pairs: &[(&str, &str)]| -> StateMap {
        pairs.iter().map(|(kind, id)| (key(kind, ""), id.to_string())).collect()
    };
    let first = state(&[("m.room.create", "$c"), ("m.room.name", "$n1"), ("m.room.topic", "$t")]);
    let second = state(&[("m.room.create", "$c"), ("m.room.name", "$n2")]);
    let (unconflicted, conflicted) = split_conflicted(&[first, second]);
    assert_eq!(unconflicted, state(&[("m.room.create", "$c")]));
    let expected: BTreeSet<String> = ["$n1", "$n2", "$t"].map(String::from).into();
    assert_eq!(conflicted, expected);
}

#[test]
fn agreement_needs_no_events() {
    let (dag, state) = Dag::new("11");
    // Identical states resolve to themselves without fetching anything.
    let nothing = resolve(&dag.version, &[state.clone(), state.clone()], |_| None, &AllSigned);
    assert_eq!(nothing, Ok(state));
}

#[test]
fn ban_beats_power_levels_from_the_banned_user() {
    for id in ["2", "11", "12"] {
        let (mut dag, base) = Dag::new(id);
        let banned = dag.extend(&base, vec![member("$ban-bob", ALICE, BOB, "ban")]);
        // Bob, unaware, promotes Carol.
        let users = dag.users(json!({BOB: 50, CAROL: 50}));
        let promoted = dag.extend(&base, vec![power_levels("$pl-bob", BOB, users)]);
        let resolved = dag.resolve(&[banned, promoted]).unwrap();
        assert_eq!(resolved[&key("m.room.member", BOB)], "$ban-bob", "v{id}");
        assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl0", "v{id}");
    }
}

#[test]
fn ban_wins_a_race_with_a_join() {
    for id in ["10", "12"] {
        let (mut dag, base) = Dag::new(id);
        // Dave joins (earlier) while Alice bans him (later); order of
        // timestamps must not matter.
        let joined = dag.extend(&base, vec![member("$dave-join", DAVE, DAVE, "join")]);
        let banned = dag.extend(&base, vec![member("$dave-ban", ALICE, DAVE, "ban")]);
        for sets in [[joined.clone(), banned.clone()], [banned.clone(), joined.clone()]] {
            let resolved = dag.resolve(&sets).unwrap();
            assert_eq!(resolved[&key("m.room.member", DAVE)], "$dave-ban", "v{id}");
        }
    }
}

#[test]
fn conflicting_power_level_changes_go_to_the_more_powerful_sender() {
    for id in ["6", "11", "12"] {
        let (mut dag, base) = Dag::new(id);
        let demote_bob = dag.users(json!({BOB: 0}));
        let promote_carol = dag.users(json!({BOB: 50, CAROL: 50}));
        // Bob's change is older, but Alice outranks him, so hers goes first
        // and then his no longer passes auth.
        let by_bob = dag.extend(&base, vec![power_levels("$pl-bob", BOB, promote_carol).ts(-5)]);
        let by_alice = dag.extend(&base, vec![power_levels("$pl-alice", ALICE, demote_bob)]);
        let resolved = dag.resolve(&[by_bob, by_alice]).unwrap();
        assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl-alice", "v{id}");
    }
}

#[test]
fn mainline_ordering_lets_the_newer_power_levels_decide() {
    let (mut dag, base) = Dag::new("11");
    // Branch one: Alice re-issues the power levels, then sets a topic.
    let users = json!({ALICE: 100, BOB: 50});
    let first = dag.extend(&base, vec![power_levels("$pl1", ALICE, users), topic("$topic-alice", ALICE)]);
    // Branch two: Bob sets a topic much later, citing the older power levels.
    let second = dag.extend(&base, vec![topic("$topic-bob", BOB).ts(1000)]);
    let resolved = dag.resolve(&[first, second]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl1");
    assert_eq!(resolved[&key("m.room.topic", "")], "$topic-alice");

    // The ordering itself: deeper in the mainline first, then by timestamp.
    let order = mainline_order(
        &dag.events,
        Some(&"$pl1".to_owned()),
        ids(&["$topic-alice", "$topic-bob", "$carol-join"]),
    );
    // $carol-join cites $pl0 (position 1), $topic-bob too but later,
    // $topic-alice cites $pl1 (position 0).
    assert_eq!(order, ids(&["$carol-join", "$topic-bob", "$topic-alice"]));
    // Without a power levels event every position is infinite: timestamps decide.
    let order = mainline_order(&dag.events, None, ids(&["$topic-bob", "$topic-alice"]));
    assert_eq!(order, ids(&["$topic-alice", "$topic-bob"]));
}

#[test]
fn topological_order_breaks_ties_by_power_then_time_then_id() {
    let (mut dag, base) = Dag::new("11");
    let join_rules = |event_id: &str, sender: &str, ts: i64| {
        pdu(event_id, "m.room.join_rules", Some(""), sender).content(json!({"join_rule": "public"})).ts(ts)
    };
    // Bob re-issues the power levels late; Alice's topic cites them, early.
    let users = dag.users(json!({BOB: 50}));
    dag.extend(&base, vec![power_levels("$b-parent", BOB, users).ts(50), topic("$a-child", ALICE).ts(5)]);
    // On another branch, two join rules by Bob at the same time, and one by Alice.
    dag.extend(
        &base,
        vec![
            join_rules("$z-same", BOB, 20),
            join_rules("$y-same", BOB, 20),
            join_rules("$a-late", ALICE, 90),
        ],
    );
    let order = |list: &[&str]| {
        let set: BTreeSet<String> = ids(list).into_iter().collect();
        reverse_topological_power_order(&dag.version, &dag.events, &set)
    };
    // Same power: the timestamp, then the event ID. The auth edge keeps
    // $a-child after $b-parent despite Alice's power and its early timestamp.
    assert_eq!(
        order(&["$b-parent", "$a-child", "$y-same", "$z-same"]),
        ids(&["$y-same", "$z-same", "$b-parent", "$a-child"])
    );
    // Greater power goes first whatever the timestamps.
    assert_eq!(order(&["$z-same", "$a-late", "$b-parent"]), ids(&["$a-late", "$z-same", "$b-parent"]));
}

#[test]
fn auth_difference_and_conflicted_subgraph() {
    for (id, subgraph_included) in [("11", false), ("12", true)] {
        let (mut dag, base) = Dag::new(id);
        // Shared: Alice makes Dave a moderator ($pl1), Dave joins.
        let moderators = dag.users(json!({BOB: 50, DAVE: 50}));
        let shared = dag.extend(
            &base,
            vec![power_levels("$pl1", ALICE, moderators), member("$dave-join", DAVE, DAVE, "join")],
        );
        // Branch one: Dave sets the topic. Branch two: Alice changes the
        // power levels and Dave sets some state of his own.
        let first = dag.extend(&shared, vec![topic("$dave-topic", DAVE)]);
        let changed = dag.users(json!({BOB: 50, DAVE: 50, CAROL: 10}));
        let second = dag.extend(
            &shared,
            vec![power_levels("$pl2", ALICE, changed), pdu("$dave-state", "org.example", Some(DAVE), DAVE)],
        );
        let sets = [first, second];
        let (_, conflicted) = split_conflicted(&sets);
        let expected: BTreeSet<String> =
            ["$dave-topic", "$pl1", "$pl2", "$dave-state"].map(String::from).into();
        assert_eq!(conflicted, expected, "v{id}");
        let full = full_conflicted_set(&dag.version, &dag.events, &sets, &conflicted);
        // $dave-join is in both full auth chains, so not in the auth
        // difference; but it lies on the path $dave-topic -> $dave-join ->
        // $pl1 between conflicted events, so v2.1 adds it.
        assert_eq!(full.contains("$dave-join"), subgraph_included, "v{id}: {full:?}");
        // $pl0 is below every conflicted event: on no such path.
        assert!(!full.contains("$pl0"), "v{id}: {full:?}");
        assert!(conflicted.is_subset(&full), "v{id}");
        // Both resolve the same way here: Alice's later power levels, Dave's topic.
        let resolved = dag.resolve(&sets).unwrap();
        assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl2", "v{id}");
        assert_eq!(resolved[&key("m.room.topic", "")], "$dave-topic", "v{id}");
    }
}

#[test]
fn auth_difference_brings_in_events_replaced_on_one_side() {
    let (mut dag, base) = Dag::new("11");
    // Branch one: Dave joins then leaves. Branch two: nothing. Dave's join is
    // in no state set but in branch one's auth chain only.
    let first = dag.extend(
        &base,
        vec![member("$dave-join", DAVE, DAVE, "join"), member("$dave-leave", DAVE, DAVE, "leave")],
    );
    let (_, conflicted) = split_conflicted(&[first.clone(), base.clone()]);
    assert!(!conflicted.contains("$dave-join"));
    let full = full_conflicted_set(&dag.version, &dag.events, &[first.clone(), base.clone()], &conflicted);
    assert!(full.contains("$dave-join"), "{full:?}");
    let resolved = dag.resolve(&[first, base]).unwrap();
    assert_eq!(resolved[&key("m.room.member", DAVE)], "$dave-leave");
}

// Room v1: <https://spec.matrix.org/latest/rooms/v1/#state-resolution>.

/// The order v1 gives events of equal depth: descending `sha1(event_id)`
/// first.
fn sha1_hex(event_id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, event_id.as_bytes()).as_ref().to_vec()
}

#[test]
fn v1_keeps_a_key_only_one_state_has_as_unconflicted() {
    // "A conflict occurs between states where those states have different
    // event_ids for the same (event_type, state_key)": a missing key is none.
    let (mut dag, base) = Dag::new("1");
    let joined = dag.extend(&base, vec![member("$dave-join", DAVE, DAVE, "join")]);
    let resolved = dag.resolve(&[base.clone(), joined.clone()]).unwrap();
    assert_eq!(resolved, joined);
    // Identical states need no events at all.
    let nothing = resolve(&dag.version, &[base.clone(), base.clone()], |_| None, &AllSigned);
    assert_eq!(nothing, Ok(base));
}

#[test]
fn v1_power_levels_apply_in_ascending_depth_while_each_passes_auth() {
    let (mut dag, base) = Dag::new("1");
    let demote_bob = json!({ALICE: 100, BOB: 0});
    let promote_carol = json!({ALICE: 100, BOB: 50, CAROL: 50});
    // Alice demotes Bob (shallow); Bob, unaware, promotes Carol deeper down
    // his branch. Alice's comes first, and Bob's then fails against it.
    let by_alice = dag.extend(&base, vec![power_levels("$pl-alice", ALICE, demote_bob.clone())]);
    let by_bob = dag
        .extend(&base, vec![topic("$topic-bob", BOB), power_levels("$pl-bob", BOB, promote_carol.clone())]);
    let resolved = dag.resolve(&[by_alice.clone(), by_bob.clone()]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl-alice");
    // Order of the state sets does not matter.
    assert_eq!(dag.resolve(&[by_bob, by_alice]).unwrap(), resolved);

    // The other way round: Bob's is shallower, and Alice's deeper one is
    // allowed on top of it, so the deeper one stands.
    let (mut dag, base) = Dag::new("1");
    let by_bob = dag.extend(&base, vec![power_levels("$pl-bob", BOB, promote_carol)]);
    let by_alice =
        dag.extend(&base, vec![topic("$topic-alice", ALICE), power_levels("$pl-alice", ALICE, demote_bob)]);
    let resolved = dag.resolve(&[by_bob, by_alice]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl-alice");
    // The topic was only in one state: not a conflict.
    assert_eq!(resolved[&key("m.room.topic", "")], "$topic-alice");
}

#[test]
fn v1_equal_depths_order_by_descending_sha1() {
    let (mut dag, base) = Dag::new("1");
    // Alice and Bob both change the power levels at the same depth, each
    // change allowed on top of the other: the one sorted last wins, and
    // that is the one of lowest sha1(event_id).
    let first =
        dag.extend(&base, vec![power_levels("$pl-a", ALICE, json!({ALICE: 100, BOB: 50, CAROL: 10}))]);
    let second = dag.extend(&base, vec![power_levels("$pl-b", BOB, json!({ALICE: 100, BOB: 50, CAROL: 20}))]);
    let expected = if sha1_hex("$pl-a") < sha1_hex("$pl-b") { "$pl-a" } else { "$pl-b" };
    let resolved = dag.resolve(&[first, second]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], expected);
}

#[test]
fn v1_join_rules_are_checked_against_the_resolved_power_levels() {
    let (mut dag, base) = Dag::new("1");
    // Alice demotes Bob; Bob, unaware, makes the room invite-only (deeper).
    let demoted = dag.extend(&base, vec![power_levels("$pl-alice", ALICE, json!({ALICE: 100, BOB: 0}))]);
    let invite_only =
        pdu("$jr-bob", "m.room.join_rules", Some(""), BOB).content(json!({"join_rule": "invite"}));
    let by_bob = dag.extend(&base, vec![topic("$topic-bob", BOB), invite_only]);
    let resolved = dag.resolve(&[demoted, by_bob]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl-alice");
    // $jr-bob would pass against the original power levels; against the
    // partially resolved state R it does not.
    assert_eq!(resolved[&key("m.room.join_rules", "")], "$join-rules");
}

#[test]
fn v1_members_resolve_by_depth_against_the_resolved_join_rules() {
    // Dave joins while Alice bans him: whichever is deeper, the ban stands
    // (a join on top of a ban fails, a ban on top of a join passes).
    for join_deeper in [false, true] {
        let (mut dag, base) = Dag::new("1");
        let mut join = vec![member("$dave-join", DAVE, DAVE, "join")];
        let mut ban = vec![member("$dave-ban", ALICE, DAVE, "ban")];
        match join_deeper {
            true => join.insert(0, topic("$topic-bob", BOB)),
            false => ban.insert(0, topic("$topic-alice", ALICE)),
        }
        let joined = dag.extend(&base, join);
        let banned = dag.extend(&base, ban);
        let resolved = dag.resolve(&[joined, banned]).unwrap();
        assert_eq!(resolved[&key("m.room.member", DAVE)], "$dave-ban", "join deeper: {join_deeper}");
    }

    // Alice makes the room invite-only and kicks Carol, while Carol, unaware,
    // leaves and rejoins deeper down her branch.
    let (mut dag, base) = Dag::new("1");
    let invite_only =
        pdu("$jr-alice", "m.room.join_rules", Some(""), ALICE).content(json!({"join_rule": "invite"}));
    let kicked = dag.extend(&base, vec![invite_only, member("$carol-kick", ALICE, CAROL, "leave")]);
    let rejoined = dag.extend(
        &base,
        vec![
            topic("$topic-bob", BOB),
            member("$carol-leave", CAROL, CAROL, "leave"),
            member("$carol-rejoin", CAROL, CAROL, "join"),
        ],
    );
    let resolved = dag.resolve(&[kicked, rejoined]).unwrap();
    assert_eq!(resolved[&key("m.room.join_rules", "")], "$jr-alice");
    // Ascending depth: $carol-kick, then $carol-rejoin, which fails in an
    // invite-only room where Carol has left: the kick stands.
    assert_eq!(resolved[&key("m.room.member", CAROL)], "$carol-kick");
}

#[test]
fn v1_other_keys_take_the_deepest_event_that_passes_auth() {
    let (mut dag, base) = Dag::new("1");
    let by_alice = dag.extend(&base, vec![topic("$topic-alice", ALICE)]);
    let by_bob =
        dag.extend(&base, vec![pdu("$name-alice", "m.room.name", Some(""), ALICE), topic("$topic-bob", BOB)]);
    // Bob's topic is deeper and passes: it wins.
    let resolved = dag.resolve(&[by_alice.clone(), by_bob.clone()]).unwrap();
    assert_eq!(resolved[&key("m.room.topic", "")], "$topic-bob");

    // If Bob was demoted below the topic level meanwhile (state_default 50),
    // his topic fails in R and Alice's shallower one is picked.
    let demoted = dag.extend(&by_alice, vec![power_levels("$pl-alice", ALICE, json!({ALICE: 100, BOB: 0}))]);
    let resolved = dag.resolve(&[demoted, by_bob]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl-alice");
    assert_eq!(resolved[&key("m.room.topic", "")], "$topic-alice");
}

#[test]
fn v1_events_that_cannot_be_fetched_take_no_part() {
    let (mut dag, base) = Dag::new("1");
    let by_alice = dag.extend(&base, vec![topic("$topic-alice", ALICE)]);
    let by_bob = dag.extend(&base, vec![topic("$topic-bob", BOB)]);
    let fetch = |id: &str| (id != "$topic-bob").then(|| dag.events.get(id).cloned()).flatten();
    let resolved = resolve(&dag.version, &[by_alice, by_bob], fetch, &AllSigned).unwrap();
    assert_eq!(resolved[&key("m.room.topic", "")], "$topic-alice");
}

#[test]
fn v1_when_no_candidate_passes_the_shallowest_one_stays() {
    // Where the spec is silent, Synapse keeps the candidate of least depth.
    let (mut dag, base) = Dag::new("1");
    let demoted = dag.extend(
        &base,
        vec![topic("$topic-bob-1", BOB), power_levels("$pl-alice", ALICE, json!({ALICE: 100, BOB: 0}))],
    );
    let other = dag
        .extend(&base, vec![pdu("$name-alice", "m.room.name", Some(""), ALICE), topic("$topic-bob-2", BOB)]);
    let resolved = dag.resolve(&[demoted, other]).unwrap();
    assert_eq!(resolved[&key("m.room.power_levels", "")], "$pl-alice");
    assert_eq!(resolved[&key("m.room.topic", "")], "$topic-bob-1");
}
