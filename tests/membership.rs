//! Membership as clients drive it, with two and three users: join by ID and by
//! alias, invite, leave, forget, kick, ban, unban, knock, the member lists,
//! power levels, and history visibility for late joiners.

mod common;

use common::rooms::*;
use common::{Node, assert_error};
use serde_json::{Value, json};

fn joined_rooms(client: &common::Client) -> Vec<String> {
    let (status, body) = client.get("/_matrix/client/v3/joined_rooms");
    assert_eq!(status, 200, "{body}");
    body["joined_rooms"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()).collect()
}

fn post(client: &common::Client, room_id: &str, action: &str, body: Value) -> (u16, Value) {
    client.post(&room_path(room_id, &format!("/{action}")), &body)
}

fn event_path(room_id: &str, event_id: &str) -> String {
    room_path(room_id, &format!("/event/{}", enc(event_id)))
}

#[test]
fn join_by_id_and_alias_invite_leave_and_forget() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let (status, _) = bob.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id)),
        &json!({"displayname": "Bob B"}),
    );
    assert_eq!(status, 200);
    let public = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "square"}));
    // By alias, through /join/{roomIdOrAlias}.
    let (status, body) = bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&format!("#square:{}", node.server_name))),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], public);
    // By ID, through /rooms/{roomId}/join.
    let (status, body) = post(&carol, &public, "join", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], public);
    // Joining twice is fine.
    assert_eq!(post(&carol, &public, "join", json!({})).0, 200);
    assert_eq!(joined_rooms(&bob), vec![public.clone()]);
    let (status, members) = alice.get(&room_path(&public, "/joined_members"));
    assert_eq!(status, 200, "{members}");
    let joined = members["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 3, "{members}");
    assert_eq!(joined[&bob.user_id]["display_name"], "Bob B", "{members}");
    // Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidjoined_members>
    // (each joined member's `display_name` and `avatar_url` from their member event).
    assert_eq!(joined[&bob.user_id], json!({"display_name": "Bob B", "avatar_url": null}), "{members}");
    // An unknown alias is 404.
    let (status, _) = bob.post(&format!("/_matrix/client/v3/join/{}", enc("#nowhere:localhost")), &json!({}));
    assert_eq!(status, 404);

    // A private room needs an invite.
    let private = create_room(&alice, json!({}));
    assert_error(&post(&carol, &private, "join", json!({})), 403, "M_FORBIDDEN");
    assert_error(&post(&bob, &private, "invite", json!({"user_id": carol.user_id})), 403, "M_FORBIDDEN");
    invite(&alice, &private, &carol.user_id);
    assert!(!joined_rooms(&carol).contains(&private));
    assert_eq!(membership_of(&alice, &private, &carol.user_id).as_deref(), Some("invite"));
    join(&carol, &private);
    assert!(joined_rooms(&carol).contains(&private));
    // Inviting someone who does not exist succeeds, as in Synapse; a bad user ID is 400.
    let (status, _) = post(&alice, &private, "invite", json!({"user_id": "@ghost:localhost"}));
    assert_eq!(status, 200);
    assert_eq!(post(&alice, &private, "invite", json!({"user_id": "ghost"})).0, 400);

    // Leaving, then sending, is forbidden; forgetting needs leaving first.
    assert_eq!(post(&carol, &private, "forget", json!({})).0, 400);
    let before_leave = send_text(&alice, &private, "before carol left");
    assert_eq!(post(&carol, &private, "leave", json!({"reason": "bye"})).0, 200);
    assert!(!joined_rooms(&carol).contains(&private));
    assert_error(&try_send(&carol, &private, &json!({"body": "still here?"})), 403, "M_FORBIDDEN");
    let (_, leave) = get_state(&alice, &private, "m.room.member", &carol.user_id);
    assert_eq!(leave, json!({"membership": "leave", "reason": "bye"}));
    // A left user still reads what they saw, but not what came after.
    assert_eq!(carol.get(&event_path(&private, &before_leave)).0, 200);
    let after_leave = send_text(&alice, &private, "after carol left");
    assert_eq!(carol.get(&event_path(&private, &after_leave)).0, 404);
    // The room is in a sync with include_leave until forgotten.
    let filter = enc(r#"{"room": {"include_leave": true}}"#);
    let synced = sync(&carol, &format!("filter={filter}"));
    assert!(synced["rooms"]["leave"].get(&private).is_some(), "{synced}");
    assert_eq!(post(&carol, &private, "forget", json!({})).0, 200);
    let synced = sync(&carol, &format!("filter={filter}"));
    assert!(synced["rooms"]["leave"].get(&private).is_none(), "a forgotten room synced: {synced}");
    // Rejoining after forgetting (by invite) works.
    invite(&alice, &private, &carol.user_id);
    join(&carol, &private);
    assert!(joined_rooms(&carol).contains(&private));
}

#[test]
fn kick_ban_unban_follow_power() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = public_room(&alice, &[&bob, &carol]);
    // Bob (power 0) may not kick or ban.
    assert_error(&post(&bob, &room, "kick", json!({"user_id": carol.user_id})), 403, "M_FORBIDDEN");
    assert_error(&post(&bob, &room, "ban", json!({"user_id": carol.user_id})), 403, "M_FORBIDDEN");
    assert_eq!(membership_of(&alice, &room, &carol.user_id).as_deref(), Some("join"));
    // Give Bob moderator power; he still cannot kick or ban Alice (higher).
    let mut power = get_state(&alice, &room, "m.room.power_levels", "").1;
    power["users"][&bob.user_id] = json!(50);
    put_state(&alice, &room, "m.room.power_levels", "", power);
    assert_error(&post(&bob, &room, "kick", json!({"user_id": alice.user_id})), 403, "M_FORBIDDEN");
    assert_error(&post(&bob, &room, "ban", json!({"user_id": alice.user_id})), 403, "M_FORBIDDEN");
    assert_eq!(membership_of(&bob, &room, &alice.user_id).as_deref(), Some("join"));
    // Bob kicks Carol; she may come back to a public room.
    let (status, body) = post(&bob, &room, "kick", json!({"user_id": carol.user_id, "reason": "cool off"}));
    assert_eq!(status, 200, "{body}");
    let (_, kicked) = get_state(&alice, &room, "m.room.member", &carol.user_id);
    assert_eq!(kicked["membership"], "leave");
    assert_eq!(kicked["reason"], "cool off");
    assert!(!joined_rooms(&carol).contains(&room));
    join(&carol, &room);
    // Kicking someone who is not in the room fails.
    let dave = node.register("dave");
    assert_eq!(post(&alice, &room, "kick", json!({"user_id": dave.user_id})).0, 403);
    // Banned: no rejoin, no sending, no invite.
    assert_eq!(post(&alice, &room, "ban", json!({"user_id": carol.user_id, "reason": "spam"})).0, 200);
    assert_eq!(membership_of(&alice, &room, &carol.user_id).as_deref(), Some("ban"));
    assert_error(&post(&carol, &room, "join", json!({})), 403, "M_FORBIDDEN");
    assert_error(&try_send(&carol, &room, &json!({"body": "let me in"})), 403, "M_FORBIDDEN");
    assert_error(&post(&alice, &room, "invite", json!({"user_id": carol.user_id})), 403, "M_FORBIDDEN");
    assert_eq!(membership_of(&alice, &room, &carol.user_id).as_deref(), Some("ban"));
    // Banning works on people who never joined.
    assert_eq!(post(&alice, &room, "ban", json!({"user_id": dave.user_id})).0, 200);
    assert_error(&post(&dave, &room, "join", json!({})), 403, "M_FORBIDDEN");
    // Unban needs power, and a ban.
    assert_error(&post(&carol, &room, "unban", json!({"user_id": carol.user_id})), 403, "M_FORBIDDEN");
    assert_eq!(post(&alice, &room, "unban", json!({"user_id": bob.user_id})).0, 403);
    assert_eq!(post(&alice, &room, "unban", json!({"user_id": carol.user_id})).0, 200);
    assert_eq!(membership_of(&alice, &room, &carol.user_id).as_deref(), Some("leave"));
    join(&carol, &room);
    // Missing user_id is 400.
    assert_error(&post(&alice, &room, "kick", json!({})), 400, "M_MISSING_PARAM");
}

#[test]
fn power_level_changes_are_checked() {
    let node = Node::start();
    let [alice, bob] = node.register_each(["alice", "bob"]);
    // Version 11: the creator's power is a number here (v12 creators are above all levels).
    let room = create_room(&alice, json!({"preset": "public_chat", "room_version": "11"}));
    join(&bob, &room);
    let original = get_state(&alice, &room, "m.room.power_levels", "").1;
    let with = |path: &str, value: Value| {
        let mut content = original.clone();
        *content.pointer_mut(path).unwrap() = value;
        content
    };
    // Bob cannot raise himself.
    let mut raise = original.clone();
    raise["users"][&bob.user_id] = json!(100);
    assert_error(&try_put_state(&bob, &room, "m.room.power_levels", "", &raise), 403, "M_FORBIDDEN");
    // Invalid contents: strings for levels, bad user IDs, non-objects.
    let mut string_level = original.clone();
    string_level["users"][&bob.user_id] = json!("50");
    let mut bad_user = original.clone();
    bad_user["users"]["not-a-user-id"] = json!(10);
    for content in [
        string_level,
        bad_user,
        with("/ban", json!("lots")),
        with("/events", json!([1, 2])),
        with("/kick", json!(1.5)),
    ] {
        let (status, body) = try_put_state(&alice, &room, "m.room.power_levels", "", &content);
        assert!(status == 400 || status == 403, "{content} was accepted: {status} {body}");
    }
    assert_eq!(get_state(&alice, &room, "m.room.power_levels", "").1, original, "a refused change stuck");
    // Alice cannot give away more than she has.
    let mut too_high = original.clone();
    too_high["users"][&bob.user_id] = json!(101);
    assert_error(&try_put_state(&alice, &room, "m.room.power_levels", "", &too_high), 403, "M_FORBIDDEN");
    // A valid change goes through, and bob can then rename.
    let mut promote = original.clone();
    promote["users"][&bob.user_id] = json!(50);
    put_state(&alice, &room, "m.room.power_levels", "", promote);
    put_state(&bob, &room, "m.room.name", "", json!({"name": "bob's now"}));
    // But not change power levels (needs 100).
    assert_error(&try_put_state(&bob, &room, "m.room.power_levels", "", &original), 403, "M_FORBIDDEN");
    // events_default above his level stops his messages.
    let mut mute = get_state(&alice, &room, "m.room.power_levels", "").1;
    mute["events_default"] = json!(60);
    put_state(&alice, &room, "m.room.power_levels", "", mute);
    assert_error(&try_send(&bob, &room, &json!({"body": "hello?"})), 403, "M_FORBIDDEN");
    send_text(&alice, &room, "alice still can");
}

#[test]
fn knocking_in_a_knock_room() {
    let node = Node::start();
    let [alice, carol, bob] = node.register_each(["alice", "carol", "bob"]);
    let room = create_room(
        &alice,
        json!({"room_version": "10", "initial_state": [
            {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}
        ]}),
    );
    // Joining without an invite is refused; knocking is not.
    assert_error(&post(&carol, &room, "join", json!({})), 403, "M_FORBIDDEN");
    let (status, body) =
        carol.post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), &json!({"reason": "let me in"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room);
    let knock = get_state(&alice, &room, "m.room.member", &carol.user_id).1;
    assert_eq!(knock["membership"], "knock");
    assert_eq!(knock["reason"], "let me in");
    let synced = sync(&carol, "");
    assert!(synced["rooms"]["knock"].get(&room).is_some(), "{synced}");
    // The room admits carol by invite.
    invite(&alice, &room, &carol.user_id);
    join(&carol, &room);
    assert_eq!(membership_of(&alice, &room, &carol.user_id).as_deref(), Some("join"));
    // A room that is not a knock room refuses knocks.
    let closed = create_room(&alice, json!({}));
    let (status, _) = bob.post(&format!("/_matrix/client/v3/knock/{}", enc(&closed)), &json!({}));
    assert_eq!(status, 403);
    assert!(membership_of(&alice, &closed, &bob.user_id).is_none());
}

#[test]
fn member_lists_at_a_point_and_filtered() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    let room = public_room(&alice, &[&bob]);
    let then = sync(&alice, "")["next_batch"].clone();
    join(&carol, &room);
    assert_eq!(post(&bob, &room, "leave", json!({})).0, 200);
    let members = |query: &str| -> Vec<(String, String)> {
        let (status, body) = alice.get(&room_path(&room, &format!("/members{query}")));
        assert_eq!(status, 200, "{query}: {body}");
        let mut list: Vec<(String, String)> = body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| {
                assert_eq!(event["type"], "m.room.member");
                (
                    event["state_key"].as_str().unwrap().into(),
                    event["content"]["membership"].as_str().unwrap().into(),
                )
            })
            .collect();
        list.sort();
        list
    };
    let (a, b, c) = (alice.user_id.clone(), bob.user_id.clone(), carol.user_id.clone());
    let pair = |user: &str, membership: &str| (user.to_string(), membership.to_string());
    assert_eq!(members(""), vec![pair(&a, "join"), pair(&b, "leave"), pair(&c, "join")]);
    assert_eq!(members("?membership=join"), vec![pair(&a, "join"), pair(&c, "join")]);
    assert_eq!(members("?not_membership=join"), vec![pair(&b, "leave")]);
    assert_eq!(
        members(&format!("?{}", since(&then).replace("since", "at"))),
        vec![pair(&a, "join"), pair(&b, "join")]
    );
    let joined = alice.get(&room_path(&room, "/joined_members")).1;
    assert_eq!(joined["joined"].as_object().unwrap().len(), 2, "{joined}");
    // Outsiders see no member lists.
    let dave = node.register("dave");
    assert_error(&dave.get(&room_path(&room, "/members")), 403, "M_FORBIDDEN");
    assert_error(&dave.get(&room_path(&room, "/joined_members")), 403, "M_FORBIDDEN");
    // Bob, who left, sees the members as they were when he left.
    let (status, body) = bob.get(&room_path(&room, "/members"));
    assert_eq!(status, 200, "{body}");
    let (status, _) = alice.get(&room_path(&room, "/members?at=garbage"));
    assert_eq!(status, 400);
}

#[test]
fn history_visibility_hides_what_came_before() {
    let node = Node::start();
    let [alice, bob, carol] = node.register_each(["alice", "bob", "carol"]);
    for (visibility, before_visible, invited_visible) in
        [("joined", false, false), ("invited", false, true), ("shared", true, true)]
    {
        let room = create_room(
            &alice,
            json!({"initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}
            ]}),
        );
        let before = send_text(&alice, &room, "before the invite");
        invite(&alice, &room, &bob.user_id);
        let while_invited = send_text(&alice, &room, "while invited");
        // Not even an invitee may read the room's events or state yet.
        assert_eq!(bob.get(&event_path(&room, &before)).0, 404, "{visibility}");
        join(&bob, &room);
        let after = send_text(&alice, &room, "after the join");
        let sees = |event: &str| bob.get(&event_path(&room, event)).0 == 200;
        assert_eq!(sees(&before), before_visible, "{visibility}: before the invite");
        assert_eq!(sees(&while_invited), invited_visible, "{visibility}: while invited");
        assert!(sees(&after), "{visibility}: after the join");
        // The initial sync shows the same.
        let synced = sync(&bob, "");
        let seen = bodies(timeline(&synced, &room));
        assert_eq!(seen.contains(&"before the invite".to_string()), before_visible, "{visibility}: {seen:?}");
        assert_eq!(seen.contains(&"while invited".to_string()), invited_visible, "{visibility}: {seen:?}");
        // Someone who never joined sees nothing.
        assert_eq!(carol.get(&event_path(&room, &after)).0, 404, "{visibility}");
    }
}

/// A user ID that breaks the grammar even for historical users (a space, a
/// non-ASCII letter, a control character, an empty localpart) is refused
/// with 400 `M_INVALID_PARAM` by every membership action, before the room is
/// looked at, and changes nothing; a historical one (uppercase) is accepted.
#[test]
fn membership_actions_refuse_malformed_user_ids() {
    let node = Node::start();
    let alice = node.register("alice");
    let room = create_room(&alice, json!({}));
    let server = &node.server_name;
    let malformed = [
        format!("@A B:{server}"),
        format!("@é:{server}"),
        format!("@a\u{1}b:{server}"),
        format!("@:{server}"),
    ];
    for user_id in &malformed {
        for action in ["ban", "unban", "kick", "invite"] {
            let answer = post(&alice, &room, action, json!({ "user_id": user_id }));
            assert_error(&answer, 400, "M_INVALID_PARAM");
            // Also for a room that does not exist: the ID is checked first.
            let answer = post(&alice, "!nowhere:localhost", action, json!({ "user_id": user_id }));
            assert_error(&answer, 400, "M_INVALID_PARAM");
        }
        assert_eq!(membership_of(&alice, &room, user_id), None, "{user_id}");
    }
    // Historical IDs (uppercase, punctuation) still name users: bans work.
    let historical = format!("@Old.User!:{server}");
    let (status, body) = post(&alice, &room, "ban", json!({ "user_id": historical }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(membership_of(&alice, &room, &historical).as_deref(), Some("ban"));
}

/// Synapse answers 200 for an invite of a local user who does not exist
/// (clients check the profile first); so do we, on /invite and createRoom.
#[test]
fn inviting_a_nonexistent_local_user_succeeds_as_in_synapse() {
    let node = Node::start();
    let alice = node.register("alice");
    let ghost = node.user_id("ghost");
    let room = create_room(&alice, json!({}));
    let (status, body) = post(&alice, &room, "invite", json!({ "user_id": ghost }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(membership_of(&alice, &room, &ghost).as_deref(), Some("invite"));
    let other = create_room(&alice, json!({ "invite": [node.user_id("phantom")] }));
    assert_eq!(membership_of(&alice, &other, &node.user_id("phantom")).as_deref(), Some("invite"));
}

/// A join naming a malformed room ID or `via` server is refused with 400
/// before any server is asked.
#[test]
fn joins_refuse_malformed_room_ids_and_servers() {
    let node = Node::start();
    let alice = node.register("alice");
    let join = |target: &str| alice.post(&format!("/_matrix/client/v3/join/{}", enc(target)), &json!({}));
    assert_error(&join("!a:exa mple"), 400, "M_INVALID_PARAM");
    assert_error(&join("!tooshort"), 400, "M_INVALID_PARAM");
    let path = format!("/_matrix/client/v3/join/{}?via=bad%20server", enc("!room:elsewhere.example"));
    assert_error(&alice.post(&path, &json!({})), 400, "M_INVALID_PARAM");
}
