//! Interoperability with Synapse (from PyPI, see tests/common/synapse.rs) as a
//! federation peer on loopback: joins by alias both ways, messages, edits,
//! reactions, redactions, name/topic/power changes and cross-server
//! invites and leaves, each checked through the other side's client API;
//! device lists (key uploads seen in `device_lists.changed` and `/keys/query`);
//! then each server is stopped while the other keeps sending, and catches up
//! after its restart, in order and without duplicates.
//!
//! Every wait polls with a deadline; nothing sleeps to synchronise.

mod common;

use std::time::{Duration, Instant};

use common::federation::{TestCa, start_federating};
use common::rooms::*;
use common::synapse::Synapse;
use common::{Client, Node};
use serde_json::{Value, json};

/// How long a federated event may take to show up on the other side
/// (Synapse on a loaded two-core machine is slow to fetch missing pieces).
const DEADLINE: Duration = Duration::from_secs(45);

/// Polls `check` until it gives `Some`; panics naming `what` (and the logs
/// from `logs`) at the deadline.
#[track_caller]
fn wait_for<T>(what: &str, logs: &dyn Fn() -> String, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > end {
            panic!("{what}: not seen within {DEADLINE:?}\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both servers and what to print when a wait fails.
struct Pair {
    node: Node,
    synapse: Synapse,
}

impl Pair {
    /// Two users on our node (alice, dave) and two on Synapse (bob, carol).
    fn users(&self) -> (Client, Client, Client, Client) {
        let (alice, dave) = (self.node.register("alice"), self.node.register("dave"));
        (alice, dave, self.synapse.register("bob"), self.synapse.register("carol"))
    }

    /// Stops Synapse, has `ours` (a user of our node) send a batch, starts
    /// Synapse again and waits until `theirs` (a Synapse user) has it all.
    fn catch_up_after_synapse_restart(&mut self, ours: &Client, theirs: &Client, room_id: &str) {
        self.synapse.stop();
        let sent = send_batch(ours, room_id, "while Synapse was down");
        self.synapse.restart();
        wait_bodies(self, theirs, room_id, "while Synapse was down", &sent);
    }

    /// Stops our node, has `theirs` (a Synapse user) send a batch, starts
    /// the node again and waits until `ours` (a user of our node) has it all.
    fn catch_up_after_node_restart(&mut self, theirs: &Client, ours: &Client, room_id: &str) {
        self.node.stop();
        let sent = send_batch(theirs, room_id, "while hearth was down");
        self.node.restart();
        wait_bodies(self, ours, room_id, "while hearth was down", &sent);
    }

    fn start(ca: &TestCa) -> Pair {
        let synapse = Synapse::start(ca);
        let node = start_federating(ca, &[]);
        Pair { node, synapse }
    }

    fn logs(&self) -> String {
        format!("=== hearth log ===\n{}\n=== Synapse ===\n{}", self.node.log_text(), self.synapse.log_text())
    }
}

/// The event as `client` sees it, once its server has it.
fn event_on(pair: &Pair, client: &Client, room_id: &str, event_id: &str) -> Value {
    let path = room_path(room_id, &format!("/event/{}", enc(event_id)));
    wait_for(&format!("{event_id} on {}", client.base), &|| pair.logs(), || {
        let (status, event) = client.get(&path);
        (status == 200).then_some(event)
    })
}

/// The room's timeline as `client` sees it, oldest first (up to 200 events).
fn timeline_of(client: &Client, room_id: &str) -> Vec<Value> {
    let (status, answer) = client.get(&room_path(room_id, "/messages?dir=b&limit=200"));
    if status != 200 {
        return Vec::new();
    }
    let mut events = answer["chunk"].as_array().cloned().unwrap_or_default();
    events.reverse();
    events
}

/// The relation events of `kind` to `event_id` that `client` sees.
fn relations(client: &Client, room_id: &str, event_id: &str, kind: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{}/{}", enc(room_id), enc(event_id), enc(kind));
    let (status, answer) = client.get(&path);
    if status != 200 {
        return Vec::new();
    }
    answer["chunk"].as_array().cloned().unwrap_or_default()
}

/// Waits until `viewer` sees `user_id`'s membership in the room as `membership`.
fn wait_membership(pair: &Pair, viewer: &Client, room_id: &str, user_id: &str, membership: &str) {
    wait_for(&format!("{user_id} {membership} as {} sees it", viewer.user_id), &|| pair.logs(), || {
        (membership_of(viewer, room_id, user_id).as_deref() == Some(membership)).then_some(())
    });
}

/// Waits until `client`'s /sync lists an invite to the room.
fn wait_invite(pair: &Pair, client: &Client, room_id: &str) {
    wait_for(&format!("invite to {room_id} for {}", client.user_id), &|| pair.logs(), || {
        let answer = sync(client, "timeout=0");
        answer["rooms"]["invite"].get(room_id).map(|_| ())
    });
}

/// Joins by ID or alias, retrying while the answer is a transient failure
/// (the alias server may still be fetching keys).
fn join_room(pair: &Pair, client: &Client, room: &str) -> String {
    let path = format!("/_matrix/client/v3/join/{}", enc(room));
    wait_for(&format!("{} joins {room}", client.user_id), &|| pair.logs(), || {
        let (status, answer) = client.post(&path, &json!({}));
        match status {
            200 => Some(answer["room_id"].as_str().unwrap().to_string()),
            status if status >= 500 => None,
            _ => panic!("{} joins {room}: {status} {answer}\n{}", client.user_id, pair.logs()),
        }
    })
}

/// A user on each server in a shared room, and a second user on each server
/// who is not in it yet.
struct Room<'a> {
    pair: &'a Pair,
    room_id: String,
    /// The room's creator (an admin).
    owner: &'a Client,
    /// A member from the other server.
    guest: &'a Client,
    /// Another user on the owner's server, not in the room.
    owner_friend: &'a Client,
    /// Another user on the guest's server, not in the room.
    guest_friend: &'a Client,
}

impl<'a> Room<'a> {
    /// The room's users: `[owner, guest, owner_friend, guest_friend]`.
    fn new(pair: &'a Pair, room_id: &str, users: [&'a Client; 4]) -> Room<'a> {
        let [owner, guest, owner_friend, guest_friend] = users;
        Room { pair, room_id: room_id.to_string(), owner, guest, owner_friend, guest_friend }
    }

    /// Sends from `from` and returns the event as `to` sees it.
    fn send_across(&self, from: &Client, to: &Client, kind: &str, content: Value) -> (String, Value) {
        let event_id = send(from, &self.room_id, kind, content);
        let seen = event_on(self.pair, to, &self.room_id, &event_id);
        (event_id, seen)
    }

    /// Messages, edits, reactions and redactions from `from` to `to`.
    fn messages_one_way(&self, from: &Client, to: &Client, label: &str) {
        let room_id = &self.room_id;
        let text = json!({"msgtype": "m.text", "body": format!("hello from {label}")});
        let (message_id, seen) = self.send_across(from, to, "m.room.message", text);
        assert_eq!(seen["content"]["body"], format!("hello from {label}"), "{seen}");
        assert_eq!(seen["sender"], from.user_id.as_str());

        // An edit (m.replace) of the message.
        let edit = json!({
            "msgtype": "m.text",
            "body": format!("* edited by {label}"),
            "m.new_content": {"msgtype": "m.text", "body": format!("edited by {label}")},
            "m.relates_to": {"rel_type": "m.replace", "event_id": message_id},
        });
        let (edit_id, seen) = self.send_across(from, to, "m.room.message", edit);
        assert_eq!(seen["content"]["m.relates_to"]["event_id"], message_id.as_str(), "{seen}");
        wait_for(&format!("the edit by {label} in /relations"), &|| self.pair.logs(), || {
            let found = relations(to, room_id, &message_id, "m.replace");
            found.iter().any(|event| event["event_id"] == edit_id.as_str()).then_some(())
        });

        // A reaction (m.annotation) on the message, from the receiving side.
        let reaction =
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": message_id, "key": "👍"}});
        let (reaction_id, seen) = self.send_across(to, from, "m.reaction", reaction);
        assert_eq!(seen["content"]["m.relates_to"]["key"], "👍", "{seen}");
        wait_for(&format!("the reaction to {label}'s message in /relations"), &|| self.pair.logs(), || {
            let found = relations(from, room_id, &message_id, "m.annotation");
            found.iter().any(|event| event["event_id"] == reaction_id.as_str()).then_some(())
        });

        // A redaction of another message.
        let doomed = json!({"msgtype": "m.text", "body": format!("regretted by {label}")});
        let (doomed_id, seen) = self.send_across(from, to, "m.room.message", doomed);
        assert_eq!(seen["content"]["body"], format!("regretted by {label}"));
        let path = room_path(room_id, &format!("/redact/{}/{}", enc(&doomed_id), txn()));
        let (status, answer) = from.put(&path, &json!({"reason": "oops"}));
        assert_eq!(status, 200, "redact: {answer}");
        let redaction_id = answer["event_id"].as_str().unwrap().to_string();
        event_on(self.pair, to, room_id, &redaction_id);
        let event_path = room_path(room_id, &format!("/event/{}", enc(&doomed_id)));
        wait_for(&format!("{label}'s message redacted on {}", to.base), &|| self.pair.logs(), || {
            let (_, event) = to.get(&event_path);
            (event["content"] == json!({})).then_some(())
        });
    }

    /// Name, topic and power levels set from `from`, seen on `to`.
    fn state_one_way(&self, from: &Client, to: &Client, label: &str) {
        let room_id = &self.room_id;
        for (kind, key, content) in [
            ("m.room.name", "name", format!("named by {label}")),
            ("m.room.topic", "topic", format!("topic by {label}")),
        ] {
            put_state(from, room_id, kind, "", json!({ key: content }));
            wait_for(&format!("{kind} from {label} on {}", to.base), &|| self.pair.logs(), || {
                let (status, seen) = get_state(to, room_id, kind, "");
                (status == 200 && seen[key] == content.as_str()).then_some(())
            });
        }
    }

    /// `inviter` invites `invitee` (another server's user), who joins and
    /// later leaves; each step is checked on the other server.
    fn invite_join_leave(&self, inviter: &Client, invitee: &Client) {
        let room_id = &self.room_id;
        invite(inviter, room_id, &invitee.user_id);
        wait_invite(self.pair, invitee, room_id);
        wait_membership(self.pair, inviter, room_id, &invitee.user_id, "invite");
        // The invite carries the invitee's display name, asked of their server
        // (Synapse's `include_profile_data_on_invite`; both servers do it).
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&invitee.user_id));
        let (status, profile) = invitee.get(&path);
        if status == 200 && profile["displayname"].is_string() {
            let (_, member) = get_state(inviter, room_id, "m.room.member", &invitee.user_id);
            assert_eq!(member["displayname"], profile["displayname"], "{member}\n{}", self.pair.logs());
        }
        let joined = join_room(self.pair, invitee, room_id);
        assert_eq!(&joined, room_id);
        wait_membership(self.pair, inviter, room_id, &invitee.user_id, "join");
        let (status, answer) = invitee.post(&room_path(room_id, "/leave"), &json!({}));
        assert_eq!(status, 200, "leave: {answer}");
        wait_membership(self.pair, inviter, room_id, &invitee.user_id, "leave");
    }

    /// Typing notifications and read receipts (EDUs) from `from`, seen in
    /// `to`'s /sync.
    fn ephemeral_one_way(&self, from: &Client, to: &Client, read_event_id: &str) {
        let room_id = &self.room_id;
        let path = room_path(room_id, &format!("/typing/{}", enc(&from.user_id)));
        let (status, answer) = from.put(&path, &json!({"typing": true, "timeout": 30_000}));
        assert_eq!(status, 200, "typing: {answer}");
        let path = room_path(room_id, &format!("/receipt/m.read/{}", enc(read_event_id)));
        let (status, answer) = from.post(&path, &json!({}));
        assert_eq!(status, 200, "receipt: {answer}");
        let ephemeral_has = |kind: &str, check: &dyn Fn(&Value) -> bool| {
            let answer = sync(to, "timeout=0");
            let events = answer["rooms"]["join"][room_id.as_str()]["ephemeral"]["events"].as_array().cloned();
            events.unwrap_or_default().iter().any(|event| event["type"] == kind && check(&event["content"]))
        };
        wait_for(&format!("{} typing, on {}", from.user_id, to.base), &|| self.pair.logs(), || {
            let typing = |content: &Value| {
                content["user_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == from.user_id.as_str()))
            };
            ephemeral_has("m.typing", &typing).then_some(())
        });
        wait_for(&format!("{}'s read receipt, on {}", from.user_id, to.base), &|| self.pair.logs(), || {
            let read =
                |content: &Value| content[read_event_id]["m.read"].get(from.user_id.as_str()).is_some();
            ephemeral_has("m.receipt", &read).then_some(())
        });
    }

    /// Everything of part (b), both ways.
    fn exercise(&self) {
        // The owner lets the guest change state too.
        let (status, mut power) = get_state(self.owner, &self.room_id, "m.room.power_levels", "");
        assert_eq!(status, 200, "{power}");
        power["users"][self.guest.user_id.as_str()] = json!(100);
        put_state(self.owner, &self.room_id, "m.room.power_levels", "", power);
        wait_for("the guest's power level", &|| self.pair.logs(), || {
            let (_, seen) = get_state(self.guest, &self.room_id, "m.room.power_levels", "");
            (seen["users"][self.guest.user_id.as_str()] == 100).then_some(())
        });

        self.messages_one_way(self.owner, self.guest, "the owner");
        self.messages_one_way(self.guest, self.owner, "the guest");
        self.state_one_way(self.owner, self.guest, "the owner");
        self.state_one_way(self.guest, self.owner, "the guest");
        self.invite_join_leave(self.owner, self.guest_friend);
        self.invite_join_leave(self.guest, self.owner_friend);

        // The reader's server must hold the event before the receipt: Synapse
        // accepts a receipt for an event it has not received yet but sends
        // nothing on for it.
        let (owner_message, _) = self.send_across(
            self.owner,
            self.guest,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "read me"}),
        );
        self.ephemeral_one_way(self.guest, self.owner, &owner_message);
        let (guest_message, _) = self.send_across(
            self.guest,
            self.owner,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "read me too"}),
        );
        self.ephemeral_one_way(self.owner, self.guest, &guest_message);
    }
}

/// The bodies starting with `prefix` in `client`'s view of the timeline.
fn bodies_with(client: &Client, room_id: &str, prefix: &str) -> Vec<String> {
    bodies(&timeline_of(client, room_id)).into_iter().filter(|body| body.starts_with(prefix)).collect()
}

/// Waits until `client` sees exactly `expected` (in order) among the bodies
/// starting with `prefix`; more (a duplicate) or another order fails at once.
fn wait_bodies(pair: &Pair, client: &Client, room_id: &str, prefix: &str, expected: &[String]) {
    wait_for(&format!("{expected:?} on {}", client.base), &|| pair.logs(), || {
        let seen = bodies_with(client, room_id, prefix);
        assert!(
            expected.starts_with(&seen) || seen.len() < expected.len() && is_subsequence(&seen, expected),
            "{} sees {seen:?}, expected {expected:?}\n{}",
            client.base,
            pair.logs()
        );
        (seen == expected).then_some(())
    });
}

/// Whether `part` appears in `whole` in the same order (gaps allowed).
fn is_subsequence(part: &[String], whole: &[String]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|wanted| rest.any(|item| item == wanted))
}

/// Five messages sent by `from` while the other server is down.
fn send_batch(from: &Client, room_id: &str, prefix: &str) -> Vec<String> {
    (0..5)
        .map(|index| {
            let body = format!("{prefix} {index}");
            send_text(from, room_id, &body);
            body
        })
        .collect()
}

/// Display names set on each server, looked up from the other.
fn profiles_both_ways(pair: &Pair, ours: &Client, theirs: &Client) {
    for (owner, viewer, name) in [(ours, theirs, "Alice of hearth"), (theirs, ours, "Bob of Synapse")] {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&owner.user_id));
        let (status, answer) = owner.put(&path, &json!({"displayname": name}));
        assert_eq!(status, 200, "set displayname: {answer}");
        wait_for(&format!("{}'s profile from {}", owner.user_id, viewer.base), &|| pair.logs(), || {
            let (status, profile) =
                viewer.get(&format!("/_matrix/client/v3/profile/{}", enc(&owner.user_id)));
            (status == 200 && profile["displayname"] == name).then_some(())
        });
    }
}

/// (a), (b), (c) for a room created on our node: Synapse joins by alias.
#[test]
fn room_on_hearth_with_a_synapse_member() {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca);
    let (alice, dave, bob, carol) = pair.users();
    profiles_both_ways(&pair, &alice, &bob);
    let room_id = create_room(
        &alice,
        json!({"room_alias_name": "lobby", "preset": "public_chat", "room_version": "12"}),
    );
    // History from before the join: Synapse backfills it from us.
    let before: Vec<String> = (0..3).map(|index| format!("before Synapse joined {index}")).collect();
    for body in &before {
        send_text(&alice, &room_id, body);
    }
    let alias = format!("#lobby:{}", pair.node.server_name);
    assert_eq!(join_room(&pair, &bob, &alias), room_id);
    wait_membership(&pair, &alice, &room_id, &bob.user_id, "join");
    wait_bodies(&pair, &bob, &room_id, "before Synapse joined", &before);
    Room::new(&pair, &room_id, [&alice, &bob, &dave, &carol]).exercise();

    // (c) Synapse goes down; our node queues; Synapse catches up after its restart.
    pair.catch_up_after_synapse_restart(&alice, &bob, &room_id);

    // And our node goes down while Synapse sends.
    pair.catch_up_after_node_restart(&bob, &alice, &room_id);
    // Both ways still work after the restarts.
    let (_, seen) = Room::new(&pair, &room_id, [&alice, &bob, &dave, &carol]).send_across(
        &alice,
        &bob,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "after"}),
    );
    assert_eq!(seen["content"]["body"], "after");
}

/// (a), (b), (c) for a room created on Synapse (v12, its default): our user
/// joins by alias through our client API.
#[test]
fn room_on_synapse_with_a_hearth_member() {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca);
    let (alice, dave, bob, carol) = pair.users();
    let room_id = create_room(&bob, json!({"room_alias_name": "square", "preset": "public_chat"}));
    let alias = format!("#square:{}", pair.synapse.server_name);
    // Element resolves the alias before it joins: our server asks Synapse.
    // Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3directoryroomroomalias
    let resolved = wait_for("the alias through our node", &|| pair.logs(), || {
        let (status, answer) = alice.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)));
        (status == 200).then_some(answer)
    });
    assert_eq!(resolved["room_id"], room_id.as_str(), "{resolved}");
    assert_eq!(resolved["servers"][0], pair.synapse.server_name.as_str(), "{resolved}");
    // And previews the room: our node asks Synapse's federation /hierarchy.
    // Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias
    let (status, summary) = alice.get(&format!("/_matrix/client/v1/room_summary/{}", enc(&alias)));
    assert_eq!(status, 200, "{summary}\n{}", pair.logs());
    assert_eq!(summary["room_id"], room_id.as_str(), "{summary}");
    assert_eq!(summary["join_rule"], "public", "{summary}");
    assert_eq!(summary["num_joined_members"], 1, "{summary}");
    assert_eq!(summary["membership"], "leave", "{summary}");
    assert_eq!(join_room(&pair, &alice, &alias), room_id);
    let (_, create) = get_state(&alice, &room_id, "m.room.create", "");
    assert_eq!(create["room_version"], "12", "{create}");
    wait_membership(&pair, &bob, &room_id, &alice.user_id, "join");
    Room::new(&pair, &room_id, [&bob, &alice, &carol, &dave]).exercise();

    pair.catch_up_after_node_restart(&bob, &alice, &room_id);

    pair.catch_up_after_synapse_restart(&alice, &bob, &room_id);
}

/// An older room version (v10) created on Synapse, and one (v11) on our
/// node: joins and messages both ways.
#[test]
fn older_room_versions_both_ways() {
    let ca = TestCa::new();
    let pair = Pair::start(&ca);
    let alice = pair.node.register("alice");
    let bob = pair.synapse.register("bob");
    let on_synapse =
        create_room(&bob, json!({"room_alias_name": "ten", "preset": "public_chat", "room_version": "10"}));
    let on_hearth = create_room(
        &alice,
        json!({"room_alias_name": "eleven", "preset": "public_chat", "room_version": "11"}),
    );
    assert_eq!(join_room(&pair, &alice, &format!("#ten:{}", pair.synapse.server_name)), on_synapse);
    assert_eq!(join_room(&pair, &bob, &format!("#eleven:{}", pair.node.server_name)), on_hearth);
    for (room_id, version) in [(&on_synapse, "10"), (&on_hearth, "11")] {
        let (_, create) = get_state(&alice, room_id, "m.room.create", "");
        assert_eq!(create["room_version"], version, "{create}");
        for (from, to) in [(&alice, &bob), (&bob, &alice)] {
            let body = format!("v{version} from {}", from.user_id);
            let event_id = send_text(from, room_id, &body);
            let seen = event_on(&pair, to, room_id, &event_id);
            assert_eq!(seen["content"]["body"], body.as_str(), "{seen}");
        }
    }
}

/// Device keys in the shape `/keys/upload` wants (the server checks shapes,
/// not signatures, so the signature here is any string).
fn shaped_device_keys(client: &Client, curve: &str) -> Value {
    json!({
        "user_id": client.user_id,
        "device_id": client.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", client.device_id): curve,
            format!("ed25519:{}", client.device_id): format!("ed-{curve}"),
        },
        "signatures": { &client.user_id: { format!("ed25519:{}", client.device_id): "sig" } },
    })
}

/// The device keys `viewer`'s server gives for `owner`'s device.
fn queried_keys(viewer: &Client, owner: &Client) -> (Value, Value) {
    let body = json!({ "device_keys": { &owner.user_id: [] } });
    let (status, answer) = viewer.post("/_matrix/client/v3/keys/query", &body);
    assert_eq!(status, 200, "{answer}");
    (answer["device_keys"][&owner.user_id][&owner.device_id]["keys"].clone(), answer["failures"].clone())
}

/// Waits until `viewer` sees `owner` in `device_lists.changed` after `since`.
fn wait_device_list_change(pair: &Pair, viewer: &Client, owner: &Client, since: &str) {
    wait_for(
        &format!("{} in {}'s device_lists.changed", owner.user_id, viewer.user_id),
        &|| pair.logs(),
        || {
            let seen = sync(viewer, &format!("since={since}&timeout=1000"));
            let changed = seen["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
            changed.contains(&json!(owner.user_id)).then_some(())
        },
    );
}

/// Device lists across servers, both ways: a key upload on one server
/// reaches the other's users in `device_lists.changed` (an
/// `m.device_list_update` EDU) and its `/keys/query`; our node answers the
/// second query from its cache, with Synapse stopped; master keys reach the
/// other side too (`m.signing_key_update`).
/// Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>,
/// <https://spec.matrix.org/latest/client-server-api/#extensions-to-sync>.
#[test]
fn device_lists_both_ways() {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca);
    let alice = pair.node.register("alice");
    let bob = pair.synapse.register("bob");
    let room_id = create_room(&alice, json!({"room_alias_name": "keys", "preset": "public_chat"}));
    let alias = format!("#keys:{}", pair.node.server_name);
    assert_eq!(join_room(&pair, &bob, &alias), room_id);
    wait_membership(&pair, &alice, &room_id, &bob.user_id, "join");

    // Synapse to us: bob uploads keys, alice sees the change and the keys.
    let alice_since = sync(&alice, "")["next_batch"].as_str().unwrap().to_string();
    let bob_keys = shaped_device_keys(&bob, "bobcurve");
    let (status, answer) = bob.post("/_matrix/client/v3/keys/upload", &json!({ "device_keys": bob_keys }));
    assert_eq!(status, 200, "{answer}");
    wait_device_list_change(&pair, &alice, &bob, &alice_since);
    let (keys, failures) = queried_keys(&alice, &bob);
    assert_eq!(keys, bob_keys["keys"], "{failures}\n{}", pair.logs());

    // Us to Synapse: alice uploads keys, bob sees the change and the keys.
    let bob_since = sync(&bob, "")["next_batch"].as_str().unwrap().to_string();
    let alice_keys = shaped_device_keys(&alice, "alicecurve");
    let (status, answer) =
        alice.post("/_matrix/client/v3/keys/upload", &json!({ "device_keys": alice_keys }));
    assert_eq!(status, 200, "{answer}");
    wait_device_list_change(&pair, &bob, &alice, &bob_since);
    wait_for("alice's keys on Synapse", &|| pair.logs(), || {
        (queried_keys(&bob, &alice).0 == alice_keys["keys"]).then_some(())
    });

    // Cross-signing master keys both ways (`m.signing_key_update`).
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    for (owner, viewer, seed) in [(&alice, &bob, 1u8), (&bob, &alice, 2u8)] {
        let master = master_key(owner, seed);
        let (status, answer) = owner.post(path, &json!({ "master_key": master }));
        assert_eq!(status, 200, "{answer}");
        wait_for(&format!("{}'s master key on {}", owner.user_id, viewer.base), &|| pair.logs(), || {
            let body = json!({ "device_keys": { &owner.user_id: [] } });
            let (_, answer) = viewer.post("/_matrix/client/v3/keys/query", &body);
            (answer["master_keys"][&owner.user_id]["keys"] == master["keys"]).then_some(())
        });
    }

    // Our node answers from its cache: Synapse is not asked.
    pair.synapse.stop();
    let (keys, failures) = queried_keys(&alice, &bob);
    assert_eq!(keys, bob_keys["keys"]);
    assert_eq!(failures, json!({}));
}

/// A cross-signing master key for `owner` (a real ed25519 public key: the
/// servers decode it).
fn master_key(owner: &Client, seed: u8) -> Value {
    use base64::Engine;
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]));
    let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(pair.pk.as_ref());
    json!({ "user_id": owner.user_id, "usage": ["master"], "keys": { format!("ed25519:{public}"): public } })
}
