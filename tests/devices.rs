//! Device management: list, get, rename, delete one (UIA) and delete many (UIA).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#device-management>.

mod common;

use std::time::Duration;

use common::{Client, Node, PASSWORD, RawConnection, assert_error, eventually};
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
    // No client address is kept by default (`privacy.store_client_ips`).
    assert!(device.get("last_seen_ip").is_none(), "{device}");
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

/// `last_seen_ip` is optional in the spec, so a node that keeps no client
/// addresses (the default) leaves it out of `GET /devices` and whois.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3devices>,
/// <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid>.
#[test]
fn client_addresses_are_kept_only_when_configured_and_erased_when_turned_off() {
    let mut node = Node::start_with_config("[privacy]\nstore_client_ips = true");
    let (ok, output) = node.cli(&["user", "add", "root", "--admin", "--password-stdin"], Some(PASSWORD));
    assert!(ok, "{output}");
    let mut root = node.client();
    assert_eq!(root.login("root", PASSWORD).0, 200);
    let alice = node.register("alice");
    let device_path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let whois_path = format!("/_matrix/client/v3/admin/whois/{}", common::rooms::enc(&alice.user_id));
    let whois_ip = |root: &Client| {
        let (status, whois) = root.get(&whois_path);
        assert_eq!(status, 200, "{whois}");
        whois["devices"][alice.device_id.as_str()]["sessions"][0]["connections"][0].clone()
    };
    assert_eq!(alice.get(&device_path).1["last_seen_ip"], "127.0.0.1");
    assert_eq!(whois_ip(&root)["ip"], "127.0.0.1");

    // Turned off: the kept addresses are erased at start, and none is written.
    let config = node.data_dir.0.join("hearth.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("store_client_ips = true", "");
    std::fs::write(&config, text).unwrap();
    node.restart();
    assert!(node.log_text().contains("erased the client addresses of 2 devices"), "{}", node.log_text());
    let (status, device) = alice.get(&device_path);
    assert_eq!(status, 200, "{device}");
    assert!(device.get("last_seen_ip").is_none(), "{device}");
    assert!(device["last_seen_ts"].is_i64(), "{device}");
    let connection = whois_ip(&root);
    assert!(connection.get("ip").is_none() && connection["last_seen"].is_i64(), "{connection}");
    let phone = another_device(&node, "alice");
    let (_, devices) = alice.get("/_matrix/client/v3/devices");
    for device in devices["devices"].as_array().unwrap() {
        assert!(device.get("last_seen_ip").is_none(), "{devices}");
    }
    assert!(devices.to_string().contains(&phone.device_id));
    // Nothing of the erased addresses stays in the files either.
    let database = node.data_dir.0.join("hearth.db");
    let mut bytes = std::fs::read(&database).unwrap();
    bytes.extend(std::fs::read(database.with_extension("db-wal")).unwrap_or_default());
    assert!(!bytes.windows(9).any(|window| window == b"127.0.0.1"), "an address is left in the files");
}

/// At the default log level the log names no client address, even for the
/// requests and logins that fail.
#[test]
fn the_default_log_names_no_client_address() {
    let node = Node::start_at_default_log_level();
    let alice = node.register("alice");
    let mut stranger = node.client();
    assert_eq!(stranger.login("alice", "wrong password").0, 403);
    let mut raw = RawConnection::connect(&node.http);
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    assert_eq!(raw.read_response().status, 400);
    assert_eq!(alice.get("/_matrix/client/v3/devices").0, 200);
    // A request the node logs at info level, to know the log has caught up.
    eventually(Duration::from_secs(5), || node.log_text().contains("registered @alice").then_some(()));
    let log = node.log_text();
    let leaks: Vec<&str> =
        log.lines().filter(|line| line.contains("127.0.0.1") && !line.contains("listening on")).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}
