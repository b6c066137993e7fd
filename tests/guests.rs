//! Guest access: off by default; with `guest_access = true`, guests register
//! without a password, join rooms whose `m.room.guest_access` is `can_join`,
//! read world-readable rooms, and are refused every endpoint the spec does
//! not list for them with 403 `M_GUEST_ACCESS_FORBIDDEN`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#guest-access>.

mod common;

use common::rooms::{create_room, enc, send_text};
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

const GUEST_REGISTER: &str = "/_matrix/client/v3/register?kind=guest";

fn register_guest(node: &Node) -> Client {
    let mut guest = node.client();
    // Everything but initial_device_display_name is ignored (spec).
    let (status, body) = guest.post(
        GUEST_REGISTER,
        &json!({"username": "chosen", "password": "ignored password", "device_id": "CHOSEN",
                "initial_device_display_name": "Guest tablet"}),
    );
    assert_eq!(status, 200, "{body}");
    let user_id = body["user_id"].as_str().unwrap();
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap();
    assert!(localpart.bytes().all(|byte| byte.is_ascii_digit()), "{body}");
    assert_ne!(body["device_id"], "CHOSEN");
    guest.token = Some(body["access_token"].as_str().unwrap().to_string());
    guest.user_id = user_id.to_string();
    guest.device_id = body["device_id"].as_str().unwrap().to_string();
    guest
}

#[test]
fn guest_registration_is_refused_unless_configured() {
    let node = Node::start();
    assert_error(&node.client().post(GUEST_REGISTER, &json!({})), 403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[test]
fn guests_join_can_join_rooms_read_world_readable_ones_and_nothing_else() {
    let node = Node::start_with_config("guest_access = true");
    let alice = node.register("alice");
    let guest = register_guest(&node);

    let (status, whoami) = guest.get("/_matrix/client/v3/account/whoami");
    assert_eq!(status, 200, "{whoami}");
    assert_eq!(whoami["is_guest"], true);
    assert_eq!(alice.get("/_matrix/client/v3/account/whoami").1["is_guest"], false);
    let (status, devices) = guest.get("/_matrix/client/v3/devices");
    assert_eq!(status, 200, "{devices}");
    assert_eq!(devices["devices"][0]["display_name"], "Guest tablet");

    let guest_state =
        json!({"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}});
    let open = create_room(&alice, json!({"preset": "public_chat", "initial_state": [guest_state]}));
    let closed = create_room(&alice, json!({"preset": "public_chat"}));
    let readable_state = json!({"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}});
    let readable = create_room(&alice, json!({"preset": "public_chat", "initial_state": [readable_state]}));
    send_text(&alice, &readable, "anyone may read this");

    // Joins: only where m.room.guest_access is can_join.
    let (status, body) = guest.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&open)), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_error(
        &guest.post(&format!("/_matrix/client/v3/join/{}", enc(&closed)), &json!({})),
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    let (status, body) = guest.put(
        &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&open)),
        &json!({"msgtype": "m.text", "body": "hi"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = guest.get("/_matrix/client/v3/sync?timeout=0");
    assert_eq!(status, 200, "{body}");
    assert!(body["rooms"]["join"].get(&open).is_some(), "{body}");

    // When the room stops admitting guests, its guests leave (spec: MUST).
    let (status, body) = alice.put(
        &format!("/_matrix/client/v3/rooms/{}/state/m.room.guest_access/", enc(&open)),
        &json!({"guest_access": "forbidden"}),
    );
    assert_eq!(status, 200, "{body}");
    let member = alice.get(&format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(&open),
        enc(&guest.user_id)
    ));
    assert_eq!(member.1["membership"], "leave", "{}", member.1);

    // A world-readable room reads without joining.
    let (status, page) =
        guest.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&readable)));
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&Value> =
        page["chunk"].as_array().unwrap().iter().map(|event| &event["content"]["body"]).collect();
    assert!(bodies.contains(&&json!("anyone may read this")), "{page}");

    // What the spec does not list is forbidden to guests.
    let filter = format!("/_matrix/client/v3/user/{}/filter", enc(&guest.user_id));
    for (method, path, body) in [
        ("POST", "/_matrix/client/v3/createRoom".to_string(), json!({})),
        ("POST", "/_matrix/client/v3/account/password".to_string(), json!({"new_password": "x"})),
        ("POST", "/_matrix/client/v3/account/deactivate".to_string(), json!({})),
        ("POST", filter, json!({})),
        (
            "POST",
            format!("/_matrix/client/v3/rooms/{}/invite", enc(&open)),
            json!({"user_id": alice.user_id}),
        ),
        ("GET", "/_matrix/client/v3/pushrules/".to_string(), json!({})),
        (
            "POST",
            "/_matrix/client/v3/room_keys/version".to_string(),
            json!({"algorithm": "a", "auth_data": {}}),
        ),
        ("POST", "/_matrix/client/v3/user_directory/search".to_string(), json!({"search_term": "a"})),
    ] {
        let text = body.to_string();
        let answer = guest.request(method, &path, (method != "GET").then_some(text.as_bytes()));
        assert_error(&answer, 403, "M_GUEST_ACCESS_FORBIDDEN");
    }

    // Numeric names are kept for guests.
    assert_error(
        &node.client().post(
            "/_matrix/client/v3/register",
            &json!({"username": "12345", "password": "a long password", "auth": {"type": "m.login.dummy"}}),
        ),
        400,
        "M_INVALID_USERNAME",
    );
}

/// Spec: "Guest users can also upgrade their account by going through the
/// ordinary register flow, but specifying the additional POST parameter
/// `guest_access_token` ... [and] the `username` parameter to the value of
/// the local part of their username". Without the guest's token the name is
/// refused (403, as Synapse answers; numeric names are the guests').
/// <https://spec.matrix.org/latest/client-server-api/#guest-access>.
#[test]
fn a_guest_upgrades_to_a_full_account() {
    let node = Node::start_with_config("guest_access = true");
    let guest = register_guest(&node);
    let alice = node.register("alice");
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().unwrap().to_string();
    let register = "/_matrix/client/v3/register";
    let body = |token: &str| {
        json!({"username": localpart, "password": "a long password", "guest_access_token": token,
               "auth": {"type": "m.login.dummy"}})
    };
    let someone_elses = alice.token.clone().unwrap();
    assert_error(&node.client().post(register, &body(&someone_elses)), 403, "M_FORBIDDEN");
    assert_error(&node.client().post(register, &body("not a token")), 403, "M_FORBIDDEN");

    let (status, upgraded) = node.client().post(register, &body(guest.token.as_deref().unwrap()));
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(upgraded["user_id"], guest.user_id.as_str());
    let mut full = node.client();
    full.token = upgraded["access_token"].as_str().map(str::to_owned);
    assert_eq!(full.get("/_matrix/client/v3/account/whoami").1["is_guest"], false);
    // A full account now: no longer limited to the guests' endpoints.
    assert_eq!(full.post("/_matrix/client/v3/createRoom", &json!({})).0, 200);
    assert_eq!(guest.post("/_matrix/client/v3/createRoom", &json!({})).0, 200);
    let mut login = node.client();
    assert_eq!(login.login(&localpart, "a long password").0, 200);
}
