//! Account management: changing the password and deactivating, both behind
//! user-interactive auth with `m.login.password`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#account-registration-and-management>.

mod common;

use common::{Client, Node, PASSWORD, assert_error};
use serde_json::{Value, json};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// The first UIA round: 401 offering `m.login.password`; returns the session.
fn password_challenge(client: &Client, path: &str, body: Value) -> String {
    let (status, challenge) = client.post(path, &body);
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.password"]}]));
    challenge["session"].as_str().unwrap().to_string()
}

fn password_auth(client: &Client, password: &str, session: &str) -> Value {
    json!({"type": "m.login.password", "session": session, "password": password,
           "identifier": {"type": "m.id.user", "user": client.user_id}})
}

#[test]
fn password_change_needs_the_old_password_and_logs_out_other_devices() {
    let node = Node::start();
    let alice = node.register("alice");
    let mut other_device = node.client();
    assert_eq!(other_device.login("alice", PASSWORD).0, 200);
    let path = "/_matrix/client/v3/account/password";

    let session = password_challenge(&alice, path, json!({"new_password": "new-password"}));
    // A wrong password keeps the session open and says why.
    let (status, body) = alice.post(
        path,
        &json!({"new_password": "new-password", "auth": password_auth(&alice, "wrong", &session)}),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(body["session"], session.as_str());

    let (status, body) = alice.post(
        path,
        &json!({"new_password": "new-password", "auth": password_auth(&alice, PASSWORD, &session)}),
    );
    assert_eq!(status, 200, "{body}");

    // This device stays, the other is logged out.
    assert_eq!(alice.get(WHOAMI).0, 200);
    assert_error(&other_device.get(WHOAMI), 401, "M_UNKNOWN_TOKEN");
    // Only the new password works now.
    let mut login = node.client();
    assert_error(&login.login("alice", PASSWORD), 403, "M_FORBIDDEN");
    assert_eq!(login.login("alice", "new-password").0, 200);
}

#[test]
fn password_change_can_keep_other_devices() {
    let node = Node::start();
    let bob = node.register("bob");
    let mut other_device = node.client();
    assert_eq!(other_device.login("bob", PASSWORD).0, 200);
    let path = "/_matrix/client/v3/account/password";
    let session = password_challenge(&bob, path, json!({"new_password": "x"}));
    let (status, body) = bob.post(
        path,
        &json!({"new_password": "another-password", "logout_devices": false,
                "auth": password_auth(&bob, PASSWORD, &session)}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(other_device.get(WHOAMI).0, 200);
}

#[test]
fn password_change_without_a_token_is_refused() {
    let node = Node::start();
    node.register("carl");
    assert_error(
        &node.client().post("/_matrix/client/v3/account/password", &json!({"new_password": "x"})),
        401,
        "M_MISSING_TOKEN",
    );
}

#[test]
fn one_user_cannot_authenticate_as_another() {
    let node = Node::start();
    let mallory = node.register("mallory");
    let victim = node.register("victim");
    let path = "/_matrix/client/v3/account/deactivate";
    let session = password_challenge(&mallory, path, json!({}));
    // Mallory's token with the victim's name: 403 outright, whatever the
    // password (Synapse answers 403 when the other account's password is
    // right; we never check another account's password, so no oracle).
    let (status, body) = mallory.post(
        path,
        &json!({"auth": {"type": "m.login.password", "session": session, "password": PASSWORD,
                         "identifier": {"type": "m.id.user", "user": victim.user_id}}}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(victim.get(WHOAMI).0, 200);
    assert_eq!(mallory.get(WHOAMI).0, 200);
}

#[test]
fn deactivation_ends_every_session_and_blocks_login() {
    let node = Node::start();
    let dora = node.register("dora");
    let mut other_device = node.client();
    assert_eq!(other_device.login("dora", PASSWORD).0, 200);
    let set_name = dora.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", dora.user_id),
        &json!({"displayname": "Dora"}),
    );
    assert_eq!(set_name.0, 200, "{}", set_name.1);
    let path = "/_matrix/client/v3/account/deactivate";

    let session = password_challenge(&dora, path, json!({}));
    let (status, body) = dora.post(path, &json!({"auth": password_auth(&dora, PASSWORD, &session)}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    assert_error(&dora.get(WHOAMI), 401, "M_UNKNOWN_TOKEN");
    assert_error(&other_device.get(WHOAMI), 401, "M_UNKNOWN_TOKEN");
    // The spec's answer for a deactivated account is 403 M_USER_DEACTIVATED
    // (Synapse answers M_FORBIDDEN, as it erases the hash first).
    let mut login = node.client();
    assert_error(&login.login("dora", PASSWORD), 403, "M_USER_DEACTIVATED");
    // The name is not free again, and the profile is erased.
    assert_error(
        &node.client().get("/_matrix/client/v3/register/available?username=dora"),
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &node.client().get(&format!("/_matrix/client/v3/profile/{}", node.user_id("dora"))),
        404,
        "M_NOT_FOUND",
    );
}

#[test]
fn uia_takes_the_user_as_login_does() {
    // Login accepts `ALICE` and `@ALICE:server` for @alice; so must UIA.
    let node = Node::start();
    let alice = node.register("alice");
    let mut phone = node.client();
    assert_eq!(phone.login("ALICE", PASSWORD).0, 200);
    for typed in ["ALICE".to_string(), format!("@ALICE:{}", node.server_name)] {
        let path = "/_matrix/client/v3/account/password";
        let session = password_challenge(&alice, path, json!({"new_password": PASSWORD}));
        let (status, body) = alice.post(
            path,
            &json!({"new_password": PASSWORD, "logout_devices": false,
                    "auth": {"type": "m.login.password", "session": session, "password": PASSWORD,
                             "identifier": {"type": "m.id.user", "user": typed}}}),
        );
        assert_eq!(status, 200, "{typed}: {body}");
    }
}

#[test]
fn third_party_identifiers_and_protocols_are_honestly_empty() {
    let node = Node::start();
    let alice = node.register("alice");
    let (status, threepids) = alice.get("/_matrix/client/v3/account/3pid");
    assert_eq!(status, 200, "{threepids}");
    assert_eq!(threepids, json!({"threepids": []}));
    let (status, protocols) = alice.get("/_matrix/client/v3/thirdparty/protocols");
    assert_eq!(status, 200, "{protocols}");
    assert_eq!(protocols, json!({}));
    // Adding one is not supported, and both need a login.
    assert_error(&alice.post("/_matrix/client/v3/account/3pid/add", &json!({})), 404, "M_UNRECOGNIZED");
    assert_error(&node.client().get("/_matrix/client/v3/account/3pid"), 401, "M_MISSING_TOKEN");
    assert_error(&node.client().get("/_matrix/client/v3/thirdparty/protocols"), 401, "M_MISSING_TOKEN");
}

/// Password guessing with a signed-in session (a stolen access token) is
/// limited like logins: 5 wrong passwords, then 429 before any hashing.
#[test]
fn password_guessing_through_uia_is_rate_limited() {
    let node = Node::start();
    let alice = node.register("alice");
    let path = "/_matrix/client/v3/account/deactivate";
    let session = password_challenge(&alice, path, json!({}));
    for _ in 0..5 {
        let (status, body) = alice.post(path, &json!({"auth": password_auth(&alice, "wrong", &session)}));
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    }
    let limited = alice.post(path, &json!({"auth": password_auth(&alice, "wrong", &session)}));
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{}", limited.1);
    // The right password waits too; the account is still there.
    let refused = alice.post(path, &json!({"auth": password_auth(&alice, PASSWORD, &session)}));
    assert_error(&refused, 429, "M_LIMIT_EXCEEDED");
    assert_eq!(alice.get(WHOAMI).0, 200);
}

/// New passwords longer than 512 characters are refused (each would sit in
/// the hashing queue); the empty one as before.
#[test]
fn overlong_passwords_are_refused() {
    let node = Node::start();
    let long = "x".repeat(513);
    let (status, body) = node.client().post(
        "/_matrix/client/v3/register",
        &json!({"username": "bob", "password": long, "auth": {"type": "m.login.dummy"}}),
    );
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let alice = node.register("alice");
    let (status, body) = alice.post("/_matrix/client/v3/account/password", &json!({"new_password": long}));
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
}

/// Spec (user-interactive auth): a failed stage answers 401 with the flows,
/// the session, `completed` and the error, so the client can try again.
/// <https://spec.matrix.org/latest/client-server-api/#user-interactive-authentication-api>.
#[test]
fn a_deactivation_with_a_wrong_password_answers_the_flows_and_completed() {
    let node = Node::start();
    let alice = node.register("alice");
    let path = "/_matrix/client/v3/account/deactivate";
    let session = password_challenge(&alice, path, json!({}));
    let (status, body) = alice.post(path, &json!({"auth": password_auth(&alice, "wrong", &session)}));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]), "{body}");
    assert_eq!(body["completed"], json!([]), "{body}");
    assert_eq!(body["session"], session.as_str());
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(alice.get(WHOAMI).0, 200);
}
