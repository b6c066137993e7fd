//! What a client asks its server about other servers' rooms and users, and
//! the server asks over federation: remote room aliases, the invitee's
//! profile in a remote invite, and the room summary of a remote room.
//! Two hearth nodes on loopback.

mod common;

use std::time::Duration;

use common::federation::{TestCa, start_federating};
use common::rooms::{create_room, enc, get_state, invite};
use common::{Client, assert_error, eventually};
use serde_json::json;

const DELIVERY: Duration = Duration::from_secs(20);

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

/// Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3directoryroomroomalias
/// "Requests that a server resolve a room alias to a room ID. The server will
/// use the federation API to resolve the alias if the domain part of the
/// alias does not correspond to the server's own domain."
#[test]
fn a_remote_alias_resolves_through_its_server() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "hall"}));
    let alias = format!("#hall:{}", a.server_name);

    // Asked of A (retrying while B fetches A's keys on a loaded machine).
    let answer = eventually(DELIVERY, || {
        let (status, answer) = bob.get(&alias_path(&alias));
        (status == 200).then_some(answer)
    });
    assert_eq!(answer["room_id"], room_id, "{answer}");
    let servers: Vec<&str> =
        answer["servers"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    assert_eq!(servers.first(), Some(&a.server_name.as_str()), "{answer}");

    // An alias A does not know: 404 M_NOT_FOUND, as for a local one.
    assert_error(&bob.get(&alias_path(&format!("#nowhere:{}", a.server_name))), 404, "M_NOT_FOUND");
    // Unauthenticated, as the spec allows.
    let (status, answer) = Client::new(&b.http).get(&alias_path(&alias));
    assert_eq!((status, &answer["room_id"]), (200, &json!(room_id)), "{answer}");

    // The answer is cached briefly: A deleting the alias is not seen at once.
    let (status, answer) = alice.delete(&alias_path(&alias), &json!({}));
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = bob.get(&alias_path(&alias));
    assert_eq!((status, &answer["room_id"]), (200, &json!(room_id)), "cached: {answer}");

    // A join by the alias uses the same answer.
    let (status, answer) = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({}));
    assert_eq!((status, &answer["room_id"]), (200, &json!(room_id)), "{answer}\n{}", b.log_text());
}

/// Synapse fills the invitee's profile into an invite (its
/// `include_profile_data_on_invite`, on by default), so that clients name
/// the invitee; for a user of another server it asks that server.
/// Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1queryprofile
/// and https://spec.matrix.org/latest/client-server-api/#mroommember (`displayname`, `avatar_url`).
#[test]
fn an_invite_to_a_remote_user_carries_their_profile() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    for (field, value) in [("displayname", "Bob of B"), ("avatar_url", "mxc://b/avatar")] {
        let path = format!("/_matrix/client/v3/profile/{}/{field}", enc(&bob.user_id));
        let (status, answer) = bob.put(&path, &json!({ field: value }));
        assert_eq!(status, 200, "{answer}");
    }
    let room_id = create_room(&alice, json!({"preset": "private_chat"}));
    invite(&alice, &room_id, &bob.user_id);
    let (status, member) = get_state(&alice, &room_id, "m.room.member", &bob.user_id);
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["membership"], "invite", "{member}");
    assert_eq!(member["displayname"], "Bob of B", "{member}");
    assert_eq!(member["avatar_url"], "mxc://b/avatar", "{member}");
}

fn summary_path(room: &str) -> String {
    format!("/_matrix/client/v1/room_summary/{}", enc(room))
}

/// Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias
/// (a room this server is not in is summarised by asking its servers, here
/// through https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid).
#[test]
fn the_summary_of_a_remote_room_comes_over_federation() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let alice = a.register("alice");
    let bob = b.register("bob");
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "plaza", "name": "Plaza", "topic": "open air"}),
    );
    let secret = create_room(&alice, json!({"preset": "private_chat", "name": "Secret"}));
    let alias = format!("#plaza:{}", a.server_name);

    let answer = eventually(DELIVERY, || {
        let (status, answer) = bob.get(&summary_path(&alias));
        (status == 200).then_some(answer)
    });
    assert_eq!(answer["room_id"], room_id, "{answer}");
    assert_eq!(answer["name"], "Plaza", "{answer}");
    assert_eq!(answer["topic"], "open air", "{answer}");
    assert_eq!(answer["num_joined_members"], 1, "{answer}");
    assert_eq!(answer["join_rule"], "public", "{answer}");
    assert_eq!(answer["world_readable"], false, "{answer}");
    assert_eq!(answer["guest_can_join"], false, "{answer}");
    assert_eq!(answer["membership"], "leave", "{answer}");
    // By room ID with `via`, and on the unstable path.
    let path = format!("{}?via={}", summary_path(&room_id), enc(&a.server_name));
    let (status, answer) = bob.get(&path);
    assert_eq!((status, &answer["name"]), (200, &json!("Plaza")), "{answer}");
    let path = format!(
        "/_matrix/client/unstable/im.nheko.summary/summary/{}?via={}",
        enc(&room_id),
        enc(&a.server_name)
    );
    let (status, answer) = bob.get(&path);
    assert_eq!((status, &answer["name"]), (200, &json!("Plaza")), "{answer}");

    // An invite-only room bob is not invited to: 404, as if it did not exist.
    let path = format!("{}?via={}", summary_path(&secret), enc(&a.server_name));
    assert_error(&bob.get(&path), 404, "M_NOT_FOUND");
    // Once invited, bob may see it.
    invite(&alice, &secret, &bob.user_id);
    eventually(DELIVERY, || {
        let (status, answer) = bob.get(&path);
        (status == 200 && answer["name"] == "Secret").then_some(())
    });
}
