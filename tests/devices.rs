//! Device management: list, get, rename, delete one (UIA) and delete many (UIA).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#device-management>.

mod common;

use common::{Client, Node, PASSWORD, assert_error};
use serde_json::json;

fn device_ids(client: &Client) -> Vec<String> {
    let (status, body) = client.get("/_matrix/client/v3/devices");
    assert_eq!(status, 200, "{body}");
    body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|device| device["device_id"].as_str().unwrap().to_string())
        .collect()
}

/// Logs `user` in on a new device and returns the client.
fn another_device(node: &Node, user: &str) -> Client {
    let mut client = node.client();
    assert_eq!(client.login(user, PASSWORD).0, 200);
    client
}

#[test]
fn devices_are_listed_read_and_renamed() {
    let node = Node::start();
    let alice = node.register("alice");
    let phone = another_device(&node, "alice");
    let mut ids = device_ids(&alice);
    ids.sort();
    let mut expected = vec![alice.device_id.clone(), phone.device_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let (status, device) = alice.get(&path);
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["device_id"], phone.device_id.as_str());
    assert_eq!(device["last_seen_ip"], "127.0.0.1");
    assert!(device["last_seen_ts"].is_i64(), "{device}");

    let (status, body) = alice.put(&path, &json!({"display_name": "Phone"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.get(&path).1["display_name"], "Phone");
    assert_error(&alice.put(&path, &json!({"display_name": 7})), 400, "M_BAD_JSON");

    // Unknown devices and other users' devices are not found.
    assert_error(&alice.get("/_matrix/client/v3/devices/NOPE"), 404, "M_NOT_FOUND");
    assert_error(
        &alice.put("/_matrix/client/v3/devices/NOPE", &json!({"display_name": "x"})),
        404,
        "M_NOT_FOUND",
    );
    let bob = node.register("bob");
    assert_error(&bob.get(&path), 404, "M_NOT_FOUND");
    assert_error(&bob.put(&path, &json!({"display_name": "stolen"})), 404, "M_NOT_FOUND");
    assert_eq!(alice.get(&path).1["display_name"], "Phone");
    assert_error(&node.client().get("/_matrix/client/v3/devices"), 401, "M_MISSING_TOKEN");
}

#[test]
fn deleting_a_device_needs_the_password() {
    let node = Node::start();
    let alice = node.register("alice");
    let phone = another_device(&node, "alice");
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);

    let (status, challenge) = alice.delete(&path, &json!({}));
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = challenge["session"].as_str().unwrap();
    // Still there after the challenge.
    assert_eq!(phone.get("/_matrix/client/v3/account/whoami").0, 200);

    let (status, body) = alice.delete(
        &path,
        &json!({"auth": {"type": "m.login.password", "session": session, "password": PASSWORD,
                         "identifier": {"type": "m.id.user", "user": "alice"}}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_error(&phone.get("/_matrix/client/v3/account/whoami"), 401, "M_UNKNOWN_TOKEN");
    assert_eq!(device_ids(&alice), vec![alice.device_id.clone()]);
    assert_error(&alice.delete(&path, &json!({})), 404, "M_NOT_FOUND");
}

#[test]
fn delete_devices_removes_several_at_once() {
    let node = Node::start();
    let alice = node.register("alice");
    let phone = another_device(&node, "alice");
    let tablet = another_device(&node, "alice");
    let keep = another_device(&node, "alice");
    let body = json!({"devices": [phone.device_id, tablet.device_id]});

    let (status, challenge) = alice.post("/_matrix/client/v3/delete_devices", &body);
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    let (status, answer) = alice.post(
        "/_matrix/client/v3/delete_devices",
        &json!({"devices": [phone.device_id, tablet.device_id, "UNKNOWN"],
                "auth": {"type": "m.login.password", "session": session, "password": PASSWORD}}),
    );
    assert_eq!(status, 200, "{answer}");
    let mut left = device_ids(&alice);
    left.sort();
    let mut expected = vec![alice.device_id.clone(), keep.device_id.clone()];
    expected.sort();
    assert_eq!(left, expected);
    for gone in [&phone, &tablet] {
        assert_error(&gone.get("/_matrix/client/v3/account/whoami"), 401, "M_UNKNOWN_TOKEN");
    }
    assert_error(
        &alice.post("/_matrix/client/v3/delete_devices", &json!({"devices": "all"})),
        400,
        "M_BAD_JSON",
    );
}

/// Authenticating as another user (with that user's real password) does not
/// authorise deleting one's own device: 403, as Synapse answers, not a new
/// 401 challenge. Spec: <https://spec.matrix.org/latest/client-server-api/#delete_matrixclientv3devicesdeviceid>.
#[test]
fn deleting_a_device_with_another_users_credentials_is_forbidden() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let phone = another_device(&node, "alice");
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let (status, body) = alice.delete(
        &path,
        &json!({"auth": {"type": "m.login.password", "password": PASSWORD,
                         "identifier": {"type": "m.id.user", "user": bob.user_id}}}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(phone.get("/_matrix/client/v3/account/whoami").0, 200);
}
