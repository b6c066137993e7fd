//! Password login by localpart and by full user ID, `whoami`, `/logout` and
//! `/logout/all`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#login>.

mod common;

use common::{Node, PASSWORD, assert_error};
use serde_json::json;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[test]
fn login_offers_password_flow() {
    let node = Node::start();
    let (status, body) = node.client().get("/_matrix/client/v3/login");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flows"], json!([{"type": "m.login.password"}]));
}

#[test]
fn login_by_localpart_and_by_user_id() {
    let node = Node::start();
    node.register("alice");

    let mut by_localpart = node.client();
    let (status, body) = by_localpart.login("alice", PASSWORD);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], node.user_id("alice"));
    assert_eq!(body["home_server"], node.server_name);

    let mut by_user_id = node.client();
    let (status, body) = by_user_id.login(&node.user_id("alice"), PASSWORD);
    assert_eq!(status, 200, "{body}");
    assert_ne!(by_user_id.device_id, by_localpart.device_id);
    assert_ne!(by_user_id.token, by_localpart.token);

    // The deprecated top-level `user` still works, and so does upper case.
    let (status, body) = node.client().post(
        "/_matrix/client/v3/login",
        &json!({"type": "m.login.password", "user": "ALICE", "password": PASSWORD,
                "device_id": "MYDEVICE"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "MYDEVICE");

    for client in [&by_localpart, &by_user_id] {
        let (status, whoami) = client.get(WHOAMI);
        assert_eq!(status, 200, "{whoami}");
        assert_eq!(whoami["user_id"], node.user_id("alice"));
        assert_eq!(whoami["device_id"], client.device_id);
    }
}

#[test]
fn wrong_credentials_are_forbidden() {
    let node = Node::start();
    node.register("bob");
    let mut client = node.client();
    assert_error(&client.login("bob", "wrong-password"), 403, "M_FORBIDDEN");
    // An unknown user looks the same as a wrong password.
    assert_error(&client.login("nobody", PASSWORD), 403, "M_FORBIDDEN");
    assert_error(
        &client.post("/_matrix/client/v3/login", &json!({"type": "m.login.token", "token": "x"})),
        400,
        "M_UNKNOWN",
    );
    assert_error(
        &client.post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}}),
        ),
        400,
        "M_MISSING_PARAM",
    );
    assert!(client.token.is_none());
}

#[test]
fn logout_ends_only_this_session() {
    let node = Node::start();
    let first = node.register("carol");
    let mut second = node.client();
    assert_eq!(second.login("carol", PASSWORD).0, 200);

    let (status, body) = first.post("/_matrix/client/v3/logout", &json!({}));
    assert_eq!(status, 200, "{body}");
    let refused = first.get(WHOAMI);
    assert_error(&refused, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(refused.1["soft_logout"], false);
    // Logging out twice is refused the same way.
    assert_error(&first.post("/_matrix/client/v3/logout", &json!({})), 401, "M_UNKNOWN_TOKEN");
    // The other session lives on, and the logged-out device is gone.
    let (status, devices) = second.get("/_matrix/client/v3/devices");
    assert_eq!(status, 200, "{devices}");
    let ids: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|device| device["device_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![second.device_id.clone()]);
}

#[test]
fn logout_all_ends_every_session() {
    let node = Node::start();
    let first = node.register("dave");
    let mut second = node.client();
    assert_eq!(second.login("dave", PASSWORD).0, 200);
    let other_user = node.register("erin");

    let (status, body) = second.post("/_matrix/client/v3/logout/all", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_error(&first.get(WHOAMI), 401, "M_UNKNOWN_TOKEN");
    assert_error(&second.get(WHOAMI), 401, "M_UNKNOWN_TOKEN");
    // Other users are not affected, and dave can log in again.
    assert_eq!(other_user.get(WHOAMI).0, 200);
    let mut again = node.client();
    assert_eq!(again.login("dave", PASSWORD).0, 200);
    assert_eq!(again.get(WHOAMI).0, 200);
}

#[test]
fn password_guessing_is_rate_limited() {
    let node = Node::start();
    node.register("victim");
    let mut guesser = node.client();
    for _ in 0..10 {
        assert_error(&guesser.login("victim", "wrong guess"), 403, "M_FORBIDDEN");
    }
    let limited = guesser.login("victim", "wrong guess");
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 60_000), "{}", limited.1);
    // Even the right password waits until the window passes; other accounts are unaffected.
    assert_error(&guesser.login("victim", PASSWORD), 429, "M_LIMIT_EXCEEDED");
    node.register("bystander");
    assert_eq!(node.client().login("bystander", PASSWORD).0, 200);
}
