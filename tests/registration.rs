//! Registration: open (`m.login.dummy`), token-gated
//! (`m.login.registration_token`, tokens made with `hearth token create` while
//! the node runs) and closed; `/register/available` and the username errors.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#account-registration-and-management>.

mod common;

use std::time::Duration;

use common::{Client, Node, PASSWORD, assert_error, eventually};
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";

/// Asks the node whether a registration token is valid.
fn token_valid(client: &Client, token: &str) -> bool {
    let (status, body) =
        client.get(&format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"));
    assert_eq!(status, 200, "{body}");
    body["valid"].as_bool().unwrap()
}

/// Creates a registration token with the operator CLI and returns it.
fn create_token(node: &Node, options: &[&str]) -> String {
    let mut args = vec!["token", "create"];
    args.extend_from_slice(options);
    let (ok, output) = node.cli(&args, None);
    assert!(ok, "{output}");
    output.trim().to_string()
}

/// Registers in two UIA rounds: the first without `auth` must answer 401
/// with the offered flows and a session; the second completes the token stage.
fn register_with_token(client: &Client, username: &str, token: &str) -> (u16, Value) {
    let (status, challenge) = client.post(REGISTER, &json!({"username": username, "password": PASSWORD}));
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = challenge["session"].as_str().unwrap();
    client.post(
        REGISTER,
        &json!({
            "username": username,
            "password": PASSWORD,
            "auth": {"type": "m.login.registration_token", "token": token, "session": session},
        }),
    )
}

#[test]
fn open_registration_with_dummy_auth() {
    let node = Node::start();
    let client = node.client();

    // Without auth the server offers its flows.
    let (status, challenge) = client.post(REGISTER, &json!({"username": "alice", "password": PASSWORD}));
    assert_eq!(status, 401, "{challenge}");
    let flows = challenge["flows"].as_array().unwrap();
    assert!(flows.contains(&json!({"stages": ["m.login.dummy"]})), "{challenge}");
    assert!(challenge["session"].is_string(), "{challenge}");

    let (status, body) = client.post(
        REGISTER,
        &json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"},
                "initial_device_display_name": "laptop"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], node.user_id("alice"));
    assert!(body["device_id"].is_string());

    // The token works at once.
    let mut alice = node.client();
    alice.token = Some(body["access_token"].as_str().unwrap().to_string());
    let (status, whoami) = alice.get("/_matrix/client/v3/account/whoami");
    assert_eq!(status, 200, "{whoami}");
    assert_eq!(whoami["user_id"], node.user_id("alice"));
    assert_eq!(whoami["device_id"], body["device_id"]);

    // inhibit_login creates the account without a device.
    let (status, body) = client.post(
        REGISTER,
        &json!({"username": "bob", "password": PASSWORD, "auth": {"type": "m.login.dummy"},
                "inhibit_login": true}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], node.user_id("bob"));
    assert!(body.get("access_token").is_none(), "{body}");
    let mut bob = node.client();
    assert_eq!(bob.login("bob", PASSWORD).0, 200);
}

#[test]
fn usernames_are_checked_and_unique() {
    let node = Node::start();
    let client = node.client();
    let available = |name: &str| client.get(&format!("{REGISTER}/available?username={name}"));

    let (status, body) = available("carol");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available"], true);

    node.register("carol");
    assert_error(&available("carol"), 400, "M_USER_IN_USE");
    // Usernames are case-folded, so CAROL is carol.
    assert_error(&available("CAROL"), 400, "M_USER_IN_USE");
    assert_error(
        &client.post(
            REGISTER,
            &json!({"username": "carol", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        ),
        400,
        "M_USER_IN_USE",
    );

    for bad in ["a%20b", "bad:name", "%C3%A9mile", ""] {
        assert_error(&available(bad), 400, "M_INVALID_USERNAME");
    }
    for bad in ["a b", "bad:name", "émile", "@carol"] {
        assert_error(
            &client.post(
                REGISTER,
                &json!({"username": bad, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
            ),
            400,
            "M_INVALID_USERNAME",
        );
    }
    let long = "x".repeat(250);
    assert_error(&available(&long), 400, "M_INVALID_USERNAME");
}

#[test]
fn a_single_use_token_registers_once() {
    let node = Node::start_with(&["--registration", "token"]);
    let client = node.client();

    // Token mode does not offer m.login.dummy.
    let (status, body) = client
        .post(REGISTER, &json!({"username": "dan", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");

    let token = create_token(&node, &["--uses", "1"]);
    assert!(token_valid(&client, &token));
    assert!(!token_valid(&client, "no-such-token"));

    let (status, body) = register_with_token(&client, "dan", &token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], node.user_id("dan"));
    assert!(!token_valid(&client, &token));

    let (status, body) = register_with_token(&client, "erin", &token);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    // The refused registration created nothing.
    let (status, body) = client.get(&format!("{REGISTER}/available?username=erin"));
    assert_eq!((status, &body["available"]), (200, &json!(true)), "{body}");

    // An unlimited token keeps working.
    let token = create_token(&node, &[]);
    for name in ["fay", "gus"] {
        let (status, body) = register_with_token(&client, name, &token);
        assert_eq!(status, 200, "{body}");
    }
    assert!(token_valid(&client, &token));
}

#[test]
fn an_expired_token_is_refused() {
    let node = Node::start_with(&["--registration", "token"]);
    let client = node.client();
    let token = create_token(&node, &["--expires", "1s"]);
    eventually(Duration::from_secs(10), || (!token_valid(&client, &token)).then_some(()));
    let (status, body) = register_with_token(&client, "hal", &token);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    let mut hal = node.client();
    assert_error(&hal.login("hal", PASSWORD), 403, "M_FORBIDDEN");
}

#[test]
fn closed_registration_refuses_everyone() {
    let node = Node::start_with(&["--registration", "closed"]);
    let client = node.client();
    assert_error(
        &client.post(
            REGISTER,
            &json!({"username": "ivy", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        ),
        403,
        "M_FORBIDDEN",
    );
    // Even with a token made by the operator.
    let token = create_token(&node, &[]);
    assert_error(
        &client.post(
            REGISTER,
            &json!({"username": "ivy", "password": PASSWORD,
                    "auth": {"type": "m.login.registration_token", "token": token}}),
        ),
        403,
        "M_FORBIDDEN",
    );
    assert_error(&client.get(&format!("{REGISTER}/available?username=ivy")), 403, "M_FORBIDDEN");
    // The operator can still create accounts.
    let (ok, output) = node.cli(&["user", "add", "ivy", "--password-stdin"], Some(PASSWORD));
    assert!(ok, "{output}");
}

#[test]
fn guests_are_refused() {
    let node = Node::start();
    assert_error(
        &node.client().post(&format!("{REGISTER}?kind=guest"), &json!({})),
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
}

/// Spec (user-interactive auth): a client may retry a request with a
/// completed session; the parameters of a session's first request hold for
/// the rest of it; `inhibit_login` answers no device or token. Synapse
/// answers a retried registration with the account the session created.
/// <https://spec.matrix.org/latest/client-server-api/#user-interactive-authentication-api>,
/// <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3register>.
#[test]
fn registration_sessions_are_idempotent_and_remember_parameters() {
    let node = Node::start();
    let client = node.client();
    // Parameters in the first request, only `auth` in the second.
    let (status, challenge) = client
        .post(REGISTER, &json!({"username": "remembered", "password": PASSWORD, "device_id": "REMEMBERED"}));
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap().to_string();
    let auth = json!({"auth": {"type": "m.login.dummy", "session": session}});
    let (status, first) = client.post(REGISTER, &auth);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user_id"], node.user_id("remembered"));
    assert_eq!(first["device_id"], "REMEMBERED");
    // The remembered password logs in.
    let mut login = node.client();
    assert_eq!(login.login("remembered", PASSWORD).0, 200);

    // The same completed session again: the same account, not M_USER_IN_USE.
    let again = json!({"username": "remembered", "auth": {"session": session}});
    let (status, second) = client.post(REGISTER, &again);
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["user_id"], first["user_id"]);
    let (status, third) = client.post(REGISTER, &auth);
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["user_id"], first["user_id"]);

    // Without a username, the retry still names the account first made.
    let (status, challenge) = client.post(REGISTER, &json!({"password": PASSWORD}));
    assert_eq!(status, 401, "{challenge}");
    let auth = json!({"auth": {"type": "m.login.dummy", "session": challenge["session"]}});
    let (status, made) = client.post(REGISTER, &auth);
    assert_eq!(status, 200, "{made}");
    let (status, retried) = client.post(REGISTER, &auth);
    assert_eq!(status, 200, "{retried}");
    assert_eq!(made["user_id"], retried["user_id"]);

    // inhibit_login, remembered from the first request of the session.
    let (status, challenge) =
        client.post(REGISTER, &json!({"username": "quiet", "password": PASSWORD, "inhibit_login": true}));
    assert_eq!(status, 401, "{challenge}");
    let (status, quiet) =
        client.post(REGISTER, &json!({"auth": {"type": "m.login.dummy", "session": challenge["session"]}}));
    assert_eq!(status, 200, "{quiet}");
    assert_eq!(quiet["user_id"], node.user_id("quiet"));
    assert!(quiet.get("access_token").is_none() && quiet.get("device_id").is_none(), "{quiet}");

    // A session is bound to its operation: not usable to change a password.
    let alice = node.register("alice");
    let (status, body) = alice.post(
        "/_matrix/client/v3/account/password",
        &json!({"new_password": "another password", "auth": {"session": session}}),
    );
    assert_eq!(status, 403, "{body}");
}

/// With token registration, a password sent before any stage is done is not
/// hashed (that would let anyone without a token spend the board's CPU and
/// memory); the session then asks for it again instead of making an account
/// without one. Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3register>.
#[test]
fn a_token_session_asks_again_for_a_password_it_did_not_keep() {
    let node = Node::start_with(&["--registration", "token"]);
    let token = create_token(&node, &[]);
    let client = node.client();
    let (status, challenge) = client.post(REGISTER, &json!({"username": "carol", "password": PASSWORD}));
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    let auth = json!({"type": "m.login.registration_token", "token": token, "session": session});
    assert_error(&client.post(REGISTER, &json!({"auth": auth})), 400, "M_MISSING_PARAM");
    let (status, body) = client.post(REGISTER, &json!({"password": PASSWORD, "auth": {"session": session}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], node.user_id("carol"));
    let mut login = node.client();
    assert_eq!(login.login("carol", PASSWORD).0, 200);
}
