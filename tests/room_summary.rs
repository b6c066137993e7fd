//! The room summary (MSC3266): a preview of a room by ID or alias, shown
//! only to whoever may see the room, on the stable and the unstable paths.
//! Rooms of another server: tests/federation_lookups.rs.

mod common;

use common::rooms::{create_room, enc, invite, put_state};
use common::{Client, Node, assert_error};
use serde_json::json;

fn summary_path(room: &str) -> String {
    format!("/_matrix/client/v1/room_summary/{}", enc(room))
}

/// Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias
/// "Servers MAY allow unauthenticated access to this API if ... the room has
/// a join rule of public, knock or knock_restricted [or] a world_readable
/// history visibility"; otherwise the user must be a member or allowed to join.
#[test]
fn summaries_follow_the_spec_visibility_rules() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let anonymous = Client::new(&node.http);
    let public = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "square", "name": "Square", "topic": "t"}),
    );
    let private = create_room(&alice, json!({"preset": "private_chat", "name": "Private"}));

    // A public room: anyone, by ID or alias, with the spec's required fields.
    for client in [&alice, &bob, &anonymous] {
        for room in [public.clone(), format!("#square:{}", node.server_name)] {
            let (status, answer) = client.get(&summary_path(&room));
            assert_eq!(status, 200, "{room}: {answer}");
            assert_eq!(answer["room_id"], public, "{answer}");
            assert_eq!(answer["name"], "Square", "{answer}");
            assert_eq!(answer["topic"], "t", "{answer}");
            assert_eq!(answer["num_joined_members"], 1, "{answer}");
            assert_eq!(answer["world_readable"], false, "{answer}");
            assert_eq!(answer["guest_can_join"], false, "{answer}");
            assert_eq!(answer["join_rule"], "public", "{answer}");
            assert_eq!(answer["canonical_alias"], format!("#square:{}", node.server_name), "{answer}");
            assert!(answer["room_version"].is_string(), "{answer}");
        }
    }
    // `membership`: the caller's, absent without an access token.
    assert_eq!(alice.get(&summary_path(&public)).1["membership"], "join");
    assert_eq!(bob.get(&summary_path(&public)).1["membership"], "leave");
    assert!(anonymous.get(&summary_path(&public)).1.get("membership").is_none());

    // An invite-only room: 404 for outsiders (as if it did not exist).
    assert_error(&bob.get(&summary_path(&private)), 404, "M_NOT_FOUND");
    assert_error(&anonymous.get(&summary_path(&private)), 404, "M_NOT_FOUND");
    let (status, answer) = alice.get(&summary_path(&private));
    assert_eq!((status, &answer["name"]), (200, &json!("Private")), "{answer}");
    // Invited: visible, with the membership.
    invite(&alice, &private, &bob.user_id);
    let (status, answer) = bob.get(&summary_path(&private));
    assert_eq!((status, &answer["membership"]), (200, &json!("invite")), "{answer}");
    assert_error(&anonymous.get(&summary_path(&private)), 404, "M_NOT_FOUND");
    // World readable: visible to anyone.
    put_state(
        &alice,
        &private,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "world_readable"}),
    );
    let (status, answer) = anonymous.get(&summary_path(&private));
    assert_eq!((status, &answer["world_readable"]), (200, &json!(true)), "{answer}");

    // The unstable paths clients used before v1.15.
    for path in [
        format!("/_matrix/client/unstable/im.nheko.summary/summary/{}", enc(&public)),
        format!("/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary", enc(&public)),
    ] {
        let (status, answer) = bob.get(&path);
        assert_eq!((status, &answer["name"]), (200, &json!("Square")), "{path}: {answer}");
    }

    // Unknown rooms and aliases: 404; what is neither: 400.
    assert_error(&bob.get(&summary_path(&format!("!nope:{}", node.server_name))), 404, "M_NOT_FOUND");
    assert_error(&bob.get(&summary_path(&format!("#nope:{}", node.server_name))), 404, "M_NOT_FOUND");
    assert_error(&bob.get(&summary_path("nonsense")), 400, "M_INVALID_PARAM");
}
