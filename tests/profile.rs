//! Profiles: display name and avatar URL of local users.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#profiles>.

mod common;

use common::{Node, assert_error};
use serde_json::json;

#[test]
fn own_profile_is_set_and_read_by_anyone() {
    let node = Node::start();
    let alice = node.register("alice");
    let profile = format!("/_matrix/client/v3/profile/{}", alice.user_id);

    // A new account's display name is its localpart (as the reference server
    // sets it at registration); it has no avatar.
    let (status, body) = node.client().get(&profile);
    assert_eq!((status, &body), (200, &json!({"displayname": "alice"})));
    assert_eq!(node.client().get(&format!("{profile}/displayname")), (200, json!({"displayname": "alice"})));
    assert_error(&node.client().get(&format!("{profile}/avatar_url")), 404, "M_NOT_FOUND");

    let (status, body) = alice.put(&format!("{profile}/displayname"), &json!({"displayname": "Alice A."}));
    assert_eq!(status, 200, "{body}");
    let avatar = "mxc://localhost/abcdef";
    let (status, body) = alice.put(&format!("{profile}/avatar_url"), &json!({"avatar_url": avatar}));
    assert_eq!(status, 200, "{body}");

    // Read without a token.
    let anonymous = node.client();
    assert_eq!(anonymous.get(&format!("{profile}/displayname")), (200, json!({"displayname": "Alice A."})));
    assert_eq!(anonymous.get(&format!("{profile}/avatar_url")), (200, json!({"avatar_url": avatar})));
    assert_eq!(anonymous.get(&profile), (200, json!({"displayname": "Alice A.", "avatar_url": avatar})));

    // Clients percent-encode the user ID in the path.
    let encoded =
        format!("/_matrix/client/v3/profile/{}", alice.user_id.replace('@', "%40").replace(':', "%3A"));
    assert_eq!(anonymous.get(&encoded), anonymous.get(&profile));

    // null removes a field.
    let (status, _) = alice.put(&format!("{profile}/displayname"), &json!({"displayname": null}));
    assert_eq!(status, 200);
    assert_eq!(anonymous.get(&profile), (200, json!({"avatar_url": avatar})));

    assert_error(
        &alice.put(&format!("{profile}/displayname"), &json!({"displayname": 12})),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put(&format!("{profile}/displayname"), &json!({"displayname": "x".repeat(300)})),
        400,
        "M_BAD_JSON",
    );
}

/// Unset fields: a field that is not set is 404 `M_NOT_FOUND` (the spec:
/// "There is no profile field with this key for this user"); a profile with
/// no field set is 404 `M_NOT_FOUND` too (the spec allows that or `{}`;
/// Synapse answers 404); setting a field to "" unsets it (Synapse).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3profileuseridkeyname>,
/// <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3profileuserid>.
#[test]
fn unset_profile_fields_are_not_found() {
    let node = Node::start();
    let alice = node.register("alice");
    let anyone = node.client();
    let profile = format!("/_matrix/client/v3/profile/{}", alice.user_id);
    // Registration sets the display name to the localpart; there is no avatar.
    assert_eq!(anyone.get(&profile), (200, json!({"displayname": "alice"})));
    assert_error(&anyone.get(&format!("{profile}/avatar_url")), 404, "M_NOT_FOUND");

    let (status, _) = alice.put(&format!("{profile}/displayname"), &json!({"displayname": ""}));
    assert_eq!(status, 200);
    assert_error(&anyone.get(&format!("{profile}/displayname")), 404, "M_NOT_FOUND");
    assert_error(&anyone.get(&profile), 404, "M_NOT_FOUND");

    let avatar = "mxc://example.org/abc";
    assert_eq!(alice.put(&format!("{profile}/avatar_url"), &json!({"avatar_url": avatar})).0, 200);
    assert_eq!(anyone.get(&profile), (200, json!({"avatar_url": avatar})));
    assert_error(&anyone.get(&format!("{profile}/displayname")), 404, "M_NOT_FOUND");
    assert_eq!(alice.put(&format!("{profile}/avatar_url"), &json!({"avatar_url": ""})).0, 200);
    assert_error(&anyone.get(&profile), 404, "M_NOT_FOUND");
}

#[test]
fn nobody_sets_another_users_profile() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let path = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    assert_error(&bob.put(&path, &json!({"displayname": "Evil"})), 403, "M_FORBIDDEN");
    assert_error(&node.client().put(&path, &json!({"displayname": "Evil"})), 401, "M_MISSING_TOKEN");
    assert_eq!(alice.get(&path), (200, json!({"displayname": "alice"})));
}

#[test]
fn unknown_users_have_no_profile() {
    let node = Node::start();
    let client = node.client();
    let ghost = node.user_id("ghost");
    for path in [
        format!("/_matrix/client/v3/profile/{ghost}"),
        format!("/_matrix/client/v3/profile/{ghost}/displayname"),
        format!("/_matrix/client/v3/profile/{ghost}/avatar_url"),
    ] {
        assert_error(&client.get(&path), 404, "M_NOT_FOUND");
    }
}

/// A malformed user ID is refused with 400 `M_INVALID_PARAM` without asking
/// the "server" it names (here a listener that counts connections); a
/// well-formed one on the same server is asked, so the count can tell.
#[test]
fn malformed_user_ids_are_refused_without_contacting_their_server() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let node = Node::start_with(&["--registration", "open", "--federation-allow-ip", "127.0.0.0/8"]);
    let client = node.client();
    let malformed =
        [format!("@A B:{server}"), format!("@é:{server}"), format!("@a\u{7f}:{server}"), "@nocolon".into()];
    for user_id in &malformed {
        let user = common::rooms::enc(user_id);
        for path in [
            format!("/_matrix/client/v3/profile/{user}"),
            format!("/_matrix/client/v3/profile/{user}/displayname"),
            format!("/_matrix/client/v3/profile/{user}/avatar_url"),
        ] {
            assert_error(&client.get(&path), 400, "M_INVALID_PARAM");
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "a malformed user ID's server was contacted");

    let (status, body) =
        client.get(&format!("/_matrix/client/v3/profile/{}", common::rooms::enc(&format!("@bob:{server}"))));
    assert!(status >= 400, "{status} {body}");
    assert!(connections.load(Ordering::SeqCst) > 0, "the control request did not reach the listener");
}
