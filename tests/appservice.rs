//! Application services (bridges and bots), driven by mautrix-python, the
//! framework most bridges are built on (tests/clients/mautrix_appservice.py):
//! a registration file read at start, the service acting as its ghost users,
//! transactions pushed to it in order and kept across its downtime and a
//! restart of the node. python3 and mautrix must be installed
//! (`python3 -m pip install 'mautrix==0.21.1'`); without them this test fails,
//! it does not skip. A second framework, matrix-bot-sdk (JavaScript,
//! tests/clients/bot_sdk), does the same; node and its packages, installed by
//! .ci/run into `$HEARTH_TEST_CLIENTS_TARGET/bot_sdk`, must be there too.
//! Misbehaving services are tests/appservice_bad_input.rs.
//! Spec: <https://spec.matrix.org/latest/application-service-api/>.

mod common;

use std::process::Command;

use common::appservice::*;
use common::{Node, TempDir, assert_error, eventually, free_port, write_file};
use serde_json::json;

/// A bridge registers a ghost, the ghost joins when invited, speaks and sets
/// its name (masquerading with `user_id=`), and the service receives the
/// room's events as transactions.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>,
/// <https://spec.matrix.org/latest/application-service-api/#identity-assertion>,
/// <https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions>.
#[test]
fn a_mautrix_bridge_registers_a_ghost_that_joins_speaks_and_gets_transactions() {
    check_python();
    let as_port = free_port();
    let (mut node, _dir) = node_with_service(as_port);
    let service = Service::start(&node, as_port, "first");
    let ghost = node.user_id("ghost_one");
    assert!(
        service.lines().contains(&format!("bot {}", node.user_id("bridgebot"))),
        "{:#?}",
        service.lines()
    );

    let alice = node.register("alice");
    let (status, room) = alice.post("/_matrix/client/v3/createRoom", &json!({"invite": [ghost]}));
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    service.wait_for(|line| line.starts_with("ghost-sent $"));

    // The ghost's message and name, as a member of the room sees them.
    let messages = eventually(WAIT, || {
        let (_, page) = alice.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50"));
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        chunk
            .iter()
            .any(|event| {
                event["sender"] == ghost.as_str() && event["content"]["body"] == "hello from the ghost"
            })
            .then_some(chunk)
    });
    assert!(messages.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == ghost.as_str()
        && event["content"]["membership"] == "join"));
    let (status, profile) = alice.get(&format!("/_matrix/client/v3/profile/{ghost}"));
    assert_eq!((status, &profile["displayname"]), (200, &json!("Ghost One")), "{profile}");

    // A message of a user outside the namespace, in a room where a ghost
    // is, reaches the service.
    send_text(&alice, &room_id, "ping from alice");
    service.wait_for(|line| line == "message ping from alice");
    assert!(service.lines().contains(&format!("event m.room.member {}", alice.user_id)));

    // Ephemeral events of the room (receive_ephemeral): typing, read
    // receipts but not private ones, and the presence of its members.
    // Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-ephemeral-data>.
    let (status, typing) = alice.put(
        &format!("/_matrix/client/v3/rooms/{room_id}/typing/{}", alice.user_id),
        &json!({"typing": true, "timeout": 30000}),
    );
    assert_eq!(status, 200, "{typing}");
    service.wait_for(|line| line == format!("typing {}", alice.user_id));
    let ghost_message = messages
        .iter()
        .find(|event| event["sender"] == ghost.as_str() && event["type"] == "m.room.message")
        .and_then(|event| event["event_id"].as_str())
        .unwrap()
        .to_owned();
    for receipt_type in ["m.read.private", "m.read"] {
        let (status, answer) = alice.post(
            &format!("/_matrix/client/v3/rooms/{room_id}/receipt/{receipt_type}/{ghost_message}"),
            &json!({}),
        );
        assert_eq!(status, 200, "{answer}");
    }
    service.wait_for(|line| line == format!("receipt m.read {ghost_message} {}", alice.user_id));
    assert!(
        !service.lines().iter().any(|line| line.starts_with("receipt m.read.private")),
        "{:#?}",
        service.lines()
    );

    let (status, presence) = alice.put(
        &format!("/_matrix/client/v3/presence/{}/status", alice.user_id),
        &json!({"presence": "unavailable"}),
    );
    assert_eq!(status, 200, "{presence}");
    service.wait_for(|line| line == format!("presence {} unavailable", alice.user_id));

    // An unknown alias of the service's namespace is asked of the service,
    // which makes the room (a bridge's portal), and a user joins by it.
    // Spec: <https://spec.matrix.org/latest/application-service-api/#get_matrixappv1roomsroomalias>.
    let portal = format!("#bridged_portal:{}", node.server_name);
    let (status, found) =
        alice.get(&format!("/_matrix/client/v3/directory/room/%23bridged_portal:{}", node.server_name));
    assert_eq!(status, 200, "{found}");
    // The service's output is read on another thread: wait for the line.
    let made = format!("portal {portal} {}", found["room_id"].as_str().unwrap());
    service.wait_for(|line| line == made);
    let (status, joined) =
        alice.post(&format!("/_matrix/client/v3/join/%23bridged_other:{}", node.server_name), &json!({}));
    assert_eq!(status, 200, "{joined}");

    // An invite of a ghost the service has not registered yet: the service
    // is asked about the user first, and registers it.
    // Spec: <https://spec.matrix.org/latest/application-service-api/#get_matrixappv1usersuserid>.
    let newcomer = node.user_id("ghost_new");
    let (status, invited) =
        alice.post(&format!("/_matrix/client/v3/rooms/{room_id}/invite"), &json!({"user_id": newcomer}));
    assert_eq!(status, 200, "{invited}");
    service.wait_for(|line| line == format!("user-query {newcomer}"));
    let (status, profile) = alice.get(&format!("/_matrix/client/v3/profile/{newcomer}"));
    assert_eq!(status, 200, "{profile}");

    // Third-party networks: the service's protocol and its lookups.
    // Spec: <https://spec.matrix.org/latest/client-server-api/#third-party-networks>.
    let (status, protocols) = alice.get("/_matrix/client/v3/thirdparty/protocols");
    assert_eq!(status, 200, "{protocols}");
    assert_eq!(protocols["testnet"]["location_fields"], json!(["channel"]), "{protocols}");
    assert_eq!(protocols["testnet"]["instances"][0]["instance_id"], "mautrix-test|net1", "{protocols}");
    let (status, one) = alice.get("/_matrix/client/v3/thirdparty/protocol/testnet");
    assert_eq!((status, &one["user_fields"]), (200, &json!(["nick"])), "{one}");
    assert_error(&alice.get("/_matrix/client/v3/thirdparty/protocol/othernet"), 404, "M_NOT_FOUND");
    let (status, locations) = alice.get("/_matrix/client/v3/thirdparty/location/testnet?channel=lobby");
    assert_eq!(status, 200, "{locations}");
    assert_eq!(locations[0]["alias"], format!("#bridged_lobby:{}", node.server_name), "{locations}");
    service.wait_for(|line| line == "location-query lobby");

    // Masquerading: only as users of the namespace (and registered ones).
    let bridge = as_client(&node);
    let (status, whoami) = bridge.get(&format!("/_matrix/client/v3/account/whoami?user_id={ghost}"));
    assert_eq!((status, &whoami["user_id"]), (200, &json!(ghost)), "{whoami}");
    assert_error(
        &bridge.get(&format!("/_matrix/client/v3/account/whoami?user_id={}", alice.user_id)),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bridge.get(&format!("/_matrix/client/v3/account/whoami?user_id={}", node.user_id("ghost_never"))),
        403,
        "M_FORBIDDEN",
    );

    // The service is down for a while (and the node restarts meanwhile):
    // it gets what it missed, in order, when it is back: more than one
    // transaction holds (100 events at most each).
    service.stop();
    let mut missed: Vec<String> = (0..150).map(|n| format!("missed {n:03}")).collect();
    for body in &missed {
        send_text(&alice, &room_id, body);
    }
    eventually(WAIT, || node.log_text().contains("mautrix-test: transaction").then_some(()));
    node.restart();
    let alice = {
        let mut again = node.client();
        again.token = alice.token.clone();
        again.user_id = alice.user_id.clone();
        again
    };
    send_text(&alice, &room_id, "after the restart");
    let service = Service::start(&node, as_port, "again");
    service.wait_for(|line| line == "message after the restart");
    missed.push("after the restart".into());
    assert_eq!(service.messages(), missed);
}

/// Names in a service's exclusive namespace are the service's: a user may
/// not register one (nor ask whether it is free), the service may, and only
/// inside its namespace.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions>
/// ("M_EXCLUSIVE").
#[test]
fn exclusive_namespaces_are_the_services_alone() {
    let (node, _dir) = node_with_service(free_port());
    let client = node.client();
    let by_user = client.post(
        "/_matrix/client/v3/register",
        &json!({"username": "ghost_two", "password": "a long password here", "auth": {"type": "m.login.dummy"}}),
    );
    assert_error(&by_user, 400, "M_EXCLUSIVE");
    assert_error(&client.get("/_matrix/client/v3/register/available?username=ghost_two"), 400, "M_EXCLUSIVE");

    let bridge = as_client(&node);
    let outside = bridge.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "bob"}),
    );
    assert_error(&outside, 400, "M_EXCLUSIVE");
    let colon = bridge.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "ghost_a:b"}),
    );
    assert_error(&colon, 400, "M_INVALID_USERNAME");
    let (status, inside) = bridge.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "ghost_two", "inhibit_login": true}),
    );
    assert_eq!(status, 200, "{inside}");
    assert_eq!(inside["user_id"], node.user_id("ghost_two"));
    assert!(inside.get("access_token").is_none(), "{inside}");
    let again = bridge.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "ghost_two"}),
    );
    assert_error(&again, 400, "M_USER_IN_USE");

    // The service logs in as its user (a device of its own for the ghost);
    // not as a user outside its namespace.
    // Spec: <https://spec.matrix.org/latest/client-server-api/#appservice-login>.
    let (status, login) = bridge.post(
        "/_matrix/client/v3/login",
        &json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "ghost_two"}}),
    );
    assert_eq!(status, 200, "{login}");
    let mut ghost = node.client();
    ghost.token = login["access_token"].as_str().map(str::to_owned);
    let (status, whoami) = ghost.get("/_matrix/client/v3/account/whoami");
    assert_eq!(
        (status, &whoami["user_id"], &whoami["device_id"]),
        (200, &inside["user_id"], &login["device_id"])
    );
    // Masquerading on a device of the user: it must exist.
    let device = login["device_id"].as_str().unwrap();
    let on_device = bridge.get(&format!(
        "/_matrix/client/v3/account/whoami?user_id={}&device_id={device}",
        inside["user_id"].as_str().unwrap()
    ));
    assert_eq!((on_device.0, &on_device.1["device_id"]), (200, &json!(device)), "{}", on_device.1);
    let no_device = bridge.get(&format!(
        "/_matrix/client/v3/account/whoami?user_id={}&device_id=NOPE",
        inside["user_id"].as_str().unwrap()
    ));
    assert_error(&no_device, 403, "M_FORBIDDEN");
    node.register("carol");
    let carol = bridge.post(
        "/_matrix/client/v3/login",
        &json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "carol"}}),
    );
    assert_error(&carol, 403, "M_FORBIDDEN");
    let (_, flows) = client.get("/_matrix/client/v3/login");
    assert!(
        flows["flows"].as_array().unwrap().iter().any(|flow| flow["type"] == "m.login.application_service")
    );

    // Aliases: the exclusive namespace is the service's, and the service
    // makes aliases only there.
    let alice = node.register("alice");
    let (_, room) = alice.post("/_matrix/client/v3/createRoom", &json!({}));
    let room_id = room["room_id"].as_str().unwrap();
    let taken = alice.put(
        &format!("/_matrix/client/v3/directory/room/%23bridged_mine:{}", node.server_name),
        &json!({"room_id": room_id}),
    );
    assert_error(&taken, 400, "M_EXCLUSIVE");
    let by_create = alice.post("/_matrix/client/v3/createRoom", &json!({"room_alias_name": "bridged_new"}));
    assert_error(&by_create, 400, "M_EXCLUSIVE");
    let (status, free) = alice.put(
        &format!("/_matrix/client/v3/directory/room/%23plain:{}", node.server_name),
        &json!({"room_id": room_id}),
    );
    assert_eq!(status, 200, "{free}");
    let outside = bridge.put(
        &format!("/_matrix/client/v3/directory/room/%23elsewhere:{}", node.server_name),
        &json!({"room_id": room_id}),
    );
    assert_error(&outside, 400, "M_EXCLUSIVE");

    // Without the service's token, the type is refused.
    let stranger = client.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "ghost_three"}),
    );
    assert_error(&stranger, 401, "M_MISSING_TOKEN");
    let (status, whoami) = bridge.get("/_matrix/client/v3/account/whoami");
    assert_eq!((status, &whoami["user_id"]), (200, &json!(node.user_id("bridgebot"))), "{whoami}");
    assert!(whoami.get("device_id").is_none(), "a service acts on no device of its own: {whoami}");
}

/// `/appservice/{id}/ping` is the service's own: another ID is 403, and a
/// service that does not answer is 502 `M_CONNECTION_FAILED`.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv1appserviceappserviceidping>.
#[test]
fn a_ping_reports_a_service_that_is_down() {
    let (node, _dir) = node_with_service(free_port());
    let bridge = as_client(&node);
    let path = "/_matrix/client/v1/appservice/mautrix-test/ping";
    assert_error(&bridge.post(path, &json!({"transaction_id": "t1"})), 502, "M_CONNECTION_FAILED");
    let other = bridge.post("/_matrix/client/v1/appservice/other/ping", &json!({}));
    assert_error(&other, 403, "M_FORBIDDEN");
    let alice = node.register("alice");
    assert_error(&alice.post(path, &json!({})), 403, "M_FORBIDDEN");

    // A service without a URL (it only uses the client API).
    let dir = TempDir::new("appservice-no-url");
    let no_url = registration(1)
        .replace("url: http://127.0.0.1:1", "url: null")
        .replace(AS_TOKEN, "another_as_token")
        .replace(HS_TOKEN, "another_hs_token");
    let file = write_file(&dir.0, "no-url.yaml", no_url.as_bytes());
    let node = Node::start_with_config(&format!("app_service_config_files = [{:?}]", file.to_str().unwrap()));
    let mut bridge = node.client();
    bridge.token = Some("another_as_token".into());
    assert_error(&bridge.post(path, &json!({})), 400, "M_URL_NOT_SET");
}

/// A registration file with a bad regex, or two services sharing a token,
/// stop the node at start with the reason.
#[test]
fn bad_registration_files_stop_the_node_with_the_reason() {
    let dir = TempDir::new("appservice-bad");
    let bad_regex = registration(1).replace("'@ghost_.*'", "'@ghost_(.*'");
    let path = write_file(&dir.0, "bad.yaml", bad_regex.as_bytes());
    let config = write_file(
        &dir.0,
        "hearth.toml",
        format!("server_name = \"localhost\"\napp_service_config_files = [{:?}]\n", path.to_str().unwrap())
            .as_bytes(),
    );
    let (code, output) = common::run(
        &["serve", "--config", config.to_str().unwrap(), "--data-dir", dir.0.to_str().unwrap()],
        None,
    );
    assert_ne!(code, Some(0));
    assert!(output.contains("bad.yaml") && output.contains("bad regex"), "{output}");

    let first = write_file(&dir.0, "first.yaml", registration(1).as_bytes());
    let second = write_file(
        &dir.0,
        "second.yaml",
        registration(2).replace("id: mautrix-test", "id: other").as_bytes(),
    );
    let config = write_file(
        &dir.0,
        "hearth.toml",
        format!(
            "server_name = \"localhost\"\napp_service_config_files = [{:?}, {:?}]\n",
            first.to_str().unwrap(),
            second.to_str().unwrap()
        )
        .as_bytes(),
    );
    let (code, output) = common::run(
        &["serve", "--config", config.to_str().unwrap(), "--data-dir", dir.0.to_str().unwrap()],
        None,
    );
    assert_ne!(code, Some(0));
    assert!(output.contains("share a token"), "{output}");
}

/// SIGHUP reads the registration files again: a new `as_token` works and
/// the old one no longer does; a broken file leaves the services as they
/// were.
#[test]
fn sighup_reloads_the_registration_files() {
    let (node, dir) = node_with_service(free_port());
    let path = dir.0.join("registration.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(AS_TOKEN, "a_new_as_token")).unwrap();
    node.signal("HUP");
    let mut renewed = node.client();
    renewed.token = Some("a_new_as_token".into());
    let whoami = eventually(WAIT, || {
        let answer = renewed.get("/_matrix/client/v3/account/whoami");
        (answer.0 == 200).then_some(answer.1)
    });
    assert_eq!(whoami["user_id"], node.user_id("bridgebot"));
    assert_error(&as_client(&node).get("/_matrix/client/v3/account/whoami"), 401, "M_UNKNOWN_TOKEN");

    std::fs::write(&path, "id: [broken").unwrap();
    node.signal("HUP");
    eventually(WAIT, || node.log_text().contains("registrations not reloaded").then_some(()));
    let (status, _) = renewed.get("/_matrix/client/v3/account/whoami");
    assert_eq!(status, 200);
}

/// `hearth appservice add FILE` validates a registration as start-up does
/// and records it in the database, where the node loads it on SIGHUP and at
/// start; `list` shows every service and its stream; `remove` forgets an
/// added one. The operator commands never create a database.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#registration>.
#[test]
fn the_cli_adds_lists_and_removes_services() {
    let as_port = free_port();
    let (mut node, dir) = node_with_service(as_port);
    let cli = |node: &Node, args: &[&str]| {
        let (ok, output) = node.cli(args, None);
        assert!(ok, "hearth {args:?}: {output}");
        output
    };
    let list = cli(&node, &["appservice", "list"]);
    assert!(list.contains("mautrix-test  from ") && list.contains("registration.yaml"), "{list}");
    assert!(list.contains(&format!("url         http://127.0.0.1:{as_port}")), "{list}");
    assert!(
        list.contains("users       @ghost_.* (exclusive)") && list.contains("rooms       none"),
        "{list}"
    );

    // Refused as start-up refuses them: a bad regex, an ID or a token
    // already known (from the config's file), each with a non-zero exit.
    let down = format!("http://127.0.0.1:{}", free_port());
    let good = write_file(&dir.0, "second.yaml", second_registration(&down).as_bytes());
    for (name, text, reason) in [
        ("regex.yaml", second_registration(&down).replace("'@second_.*'", "'@second_(.*'"), "bad regex"),
        ("same-id.yaml", second_registration(&down).replace("second-bot", "mautrix-test"), "the id"),
        ("token.yaml", second_registration(&down).replace("second_hs_token", HS_TOKEN), "share a token"),
    ] {
        let path = write_file(&dir.0, name, text.as_bytes());
        let (ok, output) = node.cli(&["appservice", "add", path.to_str().unwrap()], None);
        assert!(!ok && output.contains(reason), "{name}: {output}");
    }
    let added = cli(&node, &["appservice", "add", good.to_str().unwrap()]);
    assert!(
        added.contains("added application service \"second-bot\"") && added.contains("SIGHUP"),
        "{added}"
    );
    let (ok, output) = node.cli(&["appservice", "add", good.to_str().unwrap()], None);
    assert!(!ok && output.contains("the id"), "{output}");

    // A running node picks it up on SIGHUP: its as_token acts as its user.
    let mut second = node.client();
    second.token = Some("second_as_token".into());
    assert_error(&second.get("/_matrix/client/v3/account/whoami"), 401, "M_UNKNOWN_TOKEN");
    node.signal("HUP");
    let whoami = eventually(WAIT, || {
        let (status, whoami) = second.get("/_matrix/client/v3/account/whoami");
        (status == 200).then_some(whoami)
    });
    assert_eq!(whoami["user_id"], node.user_id(SECOND_SENDER));

    // Its service is down: the transaction of its ghost's room waits, and
    // list says where the stream stands and why it is stuck.
    let (status, registered) = second.post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": "second_ghost"}),
    );
    assert_eq!(status, 200, "{registered}");
    let (status, room) = second
        .post(&format!("/_matrix/client/v3/createRoom?user_id={}", node.user_id("second_ghost")), &json!({}));
    assert_eq!(status, 200, "{room}");
    let list = eventually(WAIT, || {
        let list = cli(&node, &["appservice", "list"]);
        list.contains("last error").then_some(list)
    });
    let second_part = &list[list.find("second-bot  from").expect(&list)..];
    assert!(second_part.contains("(added with `hearth appservice add`)"), "{list}");
    assert!(second_part.contains("transaction 1 in flight") && second_part.contains(&down), "{list}");
    assert!(second_part.contains("delivered   never"), "{list}");
    let pending = second_part.lines().find_map(|line| line.trim().strip_prefix("pending")).expect(&list);
    let pending: u64 = pending.split_whitespace().next().and_then(|count| count.parse().ok()).expect(&list);
    assert!(0 < pending, "{list}");

    // Kept in the database: loaded at start.
    node.restart();
    assert_eq!(second.get("/_matrix/client/v3/account/whoami").0, 200);

    // Only added services are removed here; a configured one is the config's.
    let (ok, output) = node.cli(&["appservice", "remove", "mautrix-test"], None);
    assert!(!ok && output.contains("remove it there"), "{output}");
    let removed = cli(&node, &["appservice", "remove", "second-bot"]);
    assert!(removed.contains("removed application service \"second-bot\""), "{removed}");
    let (ok, output) = node.cli(&["appservice", "remove", "second-bot"], None);
    assert!(!ok && output.contains("no application service"), "{output}");
    node.signal("HUP");
    eventually(WAIT, || (second.get("/_matrix/client/v3/account/whoami").0 == 401).then_some(()));
    assert!(!cli(&node, &["appservice", "list"]).contains("second-bot"));

    // No database where one is named: an error, and none is made.
    let empty = TempDir::new("appservice-no-db");
    let (code, output) = common::run(&["appservice", "list", "--data-dir", empty.0.to_str().unwrap()], None);
    assert!(code != Some(0) && output.contains("no database"), "{output}");
    assert!(!empty.0.join("hearth.db").exists());
}

/// Where .ci/run installs the bot's packages (`npm ci --prefix`).
fn bot_sdk_prefix() -> std::path::PathBuf {
    common::test_clients_dir().join("bot_sdk")
}

/// node and matrix-bot-sdk must be there: the test fails, it does not skip.
fn check_node() {
    let modules = bot_sdk_prefix().join("node_modules");
    let node =
        Command::new("node").args(["-e", "require('matrix-bot-sdk')"]).env("NODE_PATH", &modules).output();
    let install = format!(
        "mkdir -p {prefix} && cp -r tests/clients/bot_sdk/package.json tests/clients/bot_sdk/package-lock.json \
         tests/clients/bot_sdk/no-crypto {prefix}/ && npm ci --prefix {prefix} --ignore-scripts",
        prefix = bot_sdk_prefix().display()
    );
    match node {
        Err(error) => panic!("node is needed for this test and cannot be run: {error}"),
        Ok(output) if !output.status.success() => panic!(
            "matrix-bot-sdk is needed for this test (.ci/run installs it): {install}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => {}
    }
}

/// A service built on matrix-bot-sdk (a second framework, JavaScript) does
/// what the mautrix one does: it receives transactions, and its intent
/// registers a ghost that joins when invited, sets its name and speaks,
/// which a user of the room sees.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>,
/// <https://spec.matrix.org/latest/application-service-api/#identity-assertion>.
#[test]
fn a_matrix_bot_sdk_service_registers_a_ghost_that_joins_speaks_and_sets_its_name() {
    check_node();
    let as_port = free_port();
    let text = format!(
        r#"id: bot-sdk-test
url: http://127.0.0.1:{as_port}
as_token: bot_sdk_as_token
hs_token: bot_sdk_hs_token
sender_localpart: sdkbot
namespaces:
  users:
    - exclusive: true
      regex: '@sdk_.*'
rate_limited: false
"#
    );
    let (node, _dir) = node_with_registrations(&[("bot-sdk.yaml", text)]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/bot_sdk/bot.js");
    let mut command = Command::new("node");
    command.arg(script).env("NODE_PATH", bot_sdk_prefix().join("node_modules")).args([
        node.http.as_str(),
        &as_port.to_string(),
        "bot_sdk_as_token",
        "bot_sdk_hs_token",
        &node.server_name,
    ]);
    let service = Service::spawn(command);

    let ghost = node.user_id("sdk_one");
    let alice = node.register("alice");
    let (status, room) = alice.post("/_matrix/client/v3/createRoom", &json!({"invite": [ghost]}));
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    service.wait_for(|line| line == format!("user-query {ghost}"));
    service.wait_for(|line| line == format!("registered {ghost}"));
    let sent = service.wait_for(|line| line.starts_with("ghost-sent $"));
    let event_id = sent.trim_start_matches("ghost-sent ");

    let (status, event) = alice.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}"));
    assert_eq!(status, 200, "{event}");
    assert_eq!(
        (&event["sender"], &event["content"]["body"]),
        (&json!(ghost), &json!("hello from the bot-sdk ghost"))
    );
    let (status, member) =
        alice.get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{ghost}"));
    assert_eq!((status, &member["membership"]), (200, &json!("join")), "{member}");
    let (status, profile) = alice.get(&format!("/_matrix/client/v3/profile/{ghost}"));
    assert_eq!((status, &profile["displayname"]), (200, &json!("Ghost of the SDK")), "{profile}");

    // What the room's users say reaches the service.
    send_text(&alice, &room_id, "hello ghost");
    service.wait_for(|line| line == "message hello ghost");
    service.assert_no_error();
}
