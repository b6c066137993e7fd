//! Rule 5, membership: joins per join rule, invites, kicks, bans, knocks and
//! third-party invites.

use super::*;

#[test]
fn joins() {
    let join = |user: &str| member("$join", user, user, "join");
    let ban_carol = || member("$ban", ALICE, CAROL, "ban");
    let invite_carol = || member("$invite", ALICE, CAROL, "invite");
    assert_table(vec![
        ("public room", check("10", "public", vec![], join(CAROL)), true),
        ("invite-only without invite", check("10", "invite", vec![], join(CAROL)), false),
        ("invite-only with invite", check("10", "invite", vec![invite_carol()], join(CAROL)), true),
        ("no join rules means invite", check("1", "", vec![], join(CAROL)), false),
        ("banned user rejoins", check("10", "public", vec![ban_carol()], join(CAROL)), false),
        ("join for someone else", check("10", "public", vec![], member("$j", BOB, CAROL, "join")), false),
        ("v6 knock rule is unknown", check("6", "knock", vec![invite_carol()], join(CAROL)), false),
        ("v7 knock room with invite", check("7", "knock", vec![invite_carol()], join(CAROL)), true),
        ("v7 knock room without invite", check("7", "knock", vec![], join(CAROL)), false),
    ]);
}

#[test]
fn first_join_of_the_creator() {
    for id in ["1", "11", "12"] {
        let version = version(id);
        let create = create_event(&version, json!({"creator": ALICE}));
        let join = |user: &str| {
            member("$join", user, user, "join").room(room_of(&version)).prev(&["$create"]).build()
        };
        let only_create = |kind: &str, _: &str| (kind == "m.room.create").then_some(&create);
        assert_eq!(auth_check(&version, &join(ALICE), only_create, &TestSignatures), Ok(()));
        assert!(auth_check(&version, &join(BOB), only_create, &TestSignatures).is_err());
    }
}

#[test]
fn restricted_joins() {
    let via = |authoriser: &str| {
        member("$join", CAROL, CAROL, "join").content(json!({
            "membership": "join", "join_authorised_via_users_server": authoriser
        }))
    };
    let plain = || member("$join", CAROL, CAROL, "join");
    let invite = || member("$invite", ALICE, CAROL, "invite");
    assert_table(vec![
        ("authorised by an admin", check("8", "restricted", vec![], via(ALICE)), true),
        ("authorised by a non-member", check("8", "restricted", vec![], via(CAROL)), false),
        ("no authoriser", check("8", "restricted", vec![], plain()), false),
        ("invited, no authoriser", check("8", "restricted", vec![invite()], plain()), true),
        ("v7 has no restricted rule", check("7", "restricted", vec![], via(ALICE)), false),
        ("unsigned by authoriser", check("8", "restricted", vec![], via("@x:unsigned.example")), false),
        (
            "authoriser below invite level",
            {
                let raise_invite = power_levels(ALICE, json!({"users": {ALICE: 100}, "invite": 10}));
                check("8", "restricted", vec![raise_invite], via(BOB))
            },
            false,
        ),
        ("v9 knock_restricted unknown", check("9", "knock_restricted", vec![], via(ALICE)), false),
        ("v10 knock_restricted", check("10", "knock_restricted", vec![], via(ALICE)), true),
    ]);
}

#[test]
fn invites_kicks_and_bans() {
    let carol_joined = || member("$carol-join", CAROL, CAROL, "join");
    let carol_banned = || member("$carol-ban", ALICE, CAROL, "ban");
    assert_table(vec![
        ("member invites", check("10", "invite", vec![], member("$i", BOB, CAROL, "invite")), true),
        ("non-member invites", check("10", "invite", vec![], member("$i", CAROL, "@d:z", "invite")), false),
        (
            "invite a joined user",
            check("10", "invite", vec![carol_joined()], member("$i", BOB, CAROL, "invite")),
            false,
        ),
        (
            "invite a banned user",
            check("10", "invite", vec![carol_banned()], member("$i", ALICE, CAROL, "invite")),
            false,
        ),
        (
            "moderator kicks member",
            check("10", "public", vec![], member("$k", MODERATOR, BOB, "leave")),
            true,
        ),
        (
            "member kicks moderator",
            check("10", "public", vec![], member("$k", BOB, MODERATOR, "leave")),
            false,
        ),
        (
            "moderator kicks admin",
            check("10", "public", vec![], member("$k", MODERATOR, ALICE, "leave")),
            false,
        ),
        ("member leaves", check("10", "public", vec![], member("$l", BOB, BOB, "leave")), true),
        ("outsider leaves", check("10", "public", vec![], member("$l", CAROL, CAROL, "leave")), false),
        ("moderator bans member", check("10", "public", vec![], member("$b", MODERATOR, BOB, "ban")), true),
        ("moderator bans admin", check("10", "public", vec![], member("$b", MODERATOR, ALICE, "ban")), false),
        (
            "moderator unbans",
            check("10", "public", vec![carol_banned()], member("$u", MODERATOR, CAROL, "leave")),
            true,
        ),
        (
            "member unbans",
            check("10", "public", vec![carol_banned()], member("$u", BOB, CAROL, "leave")),
            false,
        ),
        ("unknown membership", check("10", "public", vec![], member("$x", BOB, BOB, "dance")), false),
    ]);
}

#[test]
fn knocks() {
    let knock = |sender: &str, target: &str| member("$knock", sender, target, "knock");
    let carol_knocked = || member("$carol-knock", CAROL, CAROL, "knock");
    assert_table(vec![
        ("v7 knock room", check("7", "knock", vec![], knock(CAROL, CAROL)), true),
        ("v6 has no knock", check("6", "knock", vec![], knock(CAROL, CAROL)), false),
        ("public room", check("7", "public", vec![], knock(CAROL, CAROL)), false),
        ("knock for someone else", check("7", "knock", vec![], knock(BOB, CAROL)), false),
        ("knock while joined", check("7", "knock", vec![], knock(BOB, BOB)), false),
        (
            "knock while banned",
            check("7", "knock", vec![member("$b", ALICE, CAROL, "ban")], knock(CAROL, CAROL)),
            false,
        ),
        ("v10 knock_restricted", check("10", "knock_restricted", vec![], knock(CAROL, CAROL)), true),
        (
            "rescind a knock",
            check("7", "knock", vec![carol_knocked()], member("$l", CAROL, CAROL, "leave")),
            true,
        ),
    ]);
}

#[test]
fn third_party_invites() {
    let third_party = |sender: &str, key: &str| {
        pdu("$3pi", "m.room.third_party_invite", Some("tok"), sender)
            .content(json!({"public_key": key, "public_keys": [{"public_key": "other"}]}))
    };
    let invite = |mxid: &str| {
        member("$invite", ALICE, CAROL, "invite").content(json!({
            "membership": "invite",
            "third_party_invite": {"signed": {"mxid": mxid, "token": "tok", "signatures": {}}}
        }))
    };
    assert_table(vec![
        (
            "signed by the invite's key",
            check("10", "invite", vec![third_party(ALICE, "good-key")], invite(CAROL)),
            true,
        ),
        (
            "signed by another key",
            check("10", "invite", vec![third_party(ALICE, "bad-key")], invite(CAROL)),
            false,
        ),
        ("mxid differs", check("10", "invite", vec![third_party(ALICE, "good-key")], invite(BOB)), false),
        ("no invite event", check("10", "invite", vec![], invite(CAROL)), false),
        (
            "invite from someone else",
            check("10", "invite", vec![third_party(BOB, "good-key")], invite(CAROL)),
            false,
        ),
        ("send the invite event", check("10", "invite", vec![], third_party(BOB, "k")), true),
        (
            "send it below invite level",
            {
                let raise_invite = power_levels(ALICE, json!({"users": {ALICE: 100}, "invite": 10}));
                check("10", "invite", vec![raise_invite], third_party(BOB, "k"))
            },
            false,
        ),
    ]);
}
