//! Server-side key backups over HTTP: backup versions (create, latest,
//! update, delete), keys at the three levels with the replacement rule, the
//! etag and count, the current-version check, per-user isolation, and a
//! restart keeping everything.

mod common;

use common::{Client, Node, assert_error};
use serde_json::{Value, json};

const VERSION: &str = "/_matrix/client/v3/room_keys/version";
const KEYS: &str = "/_matrix/client/v3/room_keys/keys";
const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
/// `!room:example.org` and `!other:example.org`, percent-encoded for a path.
const ROOM: &str = "%21room%3Aexample.org";
const ROOM_ID: &str = "!room:example.org";
const OTHER_ROOM: &str = "%21other%3Aexample.org";
const OTHER_ROOM_ID: &str = "!other:example.org";

fn create_version(client: &Client, public_key: &str) -> String {
    let (status, body) =
        client.post(VERSION, &json!({"algorithm": ALGORITHM, "auth_data": {"public_key": public_key}}));
    assert_eq!(status, 200, "{body}");
    body["version"].as_str().unwrap().to_owned()
}

fn key(first_message_index: u64, forwarded_count: u64, is_verified: bool, ciphertext: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": "eph", "ciphertext": ciphertext, "mac": "mac"},
    })
}

/// PUTs and returns `(etag, count)`.
fn put_keys(client: &Client, path: &str, body: &Value) -> (String, u64) {
    let (status, answer) = client.put(path, body);
    assert_eq!(status, 200, "{path}: {answer}");
    (answer["etag"].as_str().unwrap().to_owned(), answer["count"].as_u64().unwrap())
}

/// `auth_data` as a string: the spec describes an object, but Synapse stores any
/// JSON value as given and answers it back, and clients (and test suites
/// written against Synapse) send opaque strings.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3room_keysversion>.
#[test]
fn auth_data_is_stored_as_given_even_as_a_string() {
    let node = Node::start();
    let alice = node.register("alice");
    let (status, body) = alice.post(VERSION, &json!({"algorithm": ALGORITHM, "auth_data": "anopaquestring"}));
    assert_eq!(status, 200, "{body}");
    let version = body["version"].as_str().unwrap().to_owned();
    let (status, latest) = alice.get(VERSION);
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["auth_data"], "anopaquestring");
    assert_eq!(latest["version"], version.as_str());
    let update = json!({"algorithm": ALGORITHM, "auth_data": "another", "version": version});
    let (status, body) = alice.put(&format!("{VERSION}/{version}"), &update);
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.get(VERSION).1["auth_data"], "another");
}

#[test]
fn backup_versions_are_created_updated_deleted_and_survive_a_restart() {
    let mut node = Node::start();
    let alice = node.register("alice");

    assert_error(&alice.get(VERSION), 404, "M_NOT_FOUND");
    assert_error(&alice.post(VERSION, &json!({"auth_data": {}})), 400, "M_MISSING_PARAM");

    let first = create_version(&alice, "key1");
    let second = create_version(&alice, "key2");
    assert_eq!(first, "1");
    assert_eq!(second, "2");

    let (status, latest) = alice.get(VERSION);
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["version"], "2");
    assert_eq!(latest["algorithm"], ALGORITHM);
    assert_eq!(latest["auth_data"], json!({"public_key": "key2"}));
    assert_eq!(latest["count"], 0);
    assert!(latest["etag"].is_string(), "{latest}");

    let (status, old) = alice.get(&format!("{VERSION}/1"));
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["auth_data"], json!({"public_key": "key1"}));
    assert_error(&alice.get(&format!("{VERSION}/9")), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&format!("{VERSION}/nonsense")), 404, "M_NOT_FOUND");

    // PUT: only auth_data changes; the algorithm and a body version must match.
    let update = json!({"algorithm": ALGORITHM, "auth_data": {"public_key": "key2", "signatures": {}}, "version": "2"});
    let (status, body) = alice.put(&format!("{VERSION}/2"), &update);
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(alice.get(VERSION).1["auth_data"], json!({"public_key": "key2", "signatures": {}}));
    let wrong_algorithm = json!({"algorithm": "m.other", "auth_data": {}});
    assert_error(&alice.put(&format!("{VERSION}/2"), &wrong_algorithm), 400, "M_INVALID_PARAM");
    let wrong_version = json!({"algorithm": ALGORITHM, "auth_data": {}, "version": "1"});
    assert_error(&alice.put(&format!("{VERSION}/2"), &wrong_version), 400, "M_INVALID_PARAM");
    let no_version = json!({"algorithm": ALGORITHM, "auth_data": {}});
    assert_error(&alice.put(&format!("{VERSION}/7"), &no_version), 404, "M_NOT_FOUND");

    // Keys survive a restart with their version.
    put_keys(&alice, &format!("{KEYS}/{ROOM}/s1?version=2"), &key(0, 0, true, "c1"));
    node.restart();
    let (status, latest) = alice.get(VERSION);
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["version"], "2");
    assert_eq!(latest["count"], 1);
    let (status, stored) = alice.get(&format!("{KEYS}/{ROOM}/s1?version=2"));
    assert_eq!((status, stored), (200, key(0, 0, true, "c1")));

    // Deleting the latest version falls back to the one before (as Synapse
    // does); its keys are gone, a second delete succeeds, and version numbers
    // are not reused.
    assert_eq!(alice.delete(&format!("{VERSION}/2"), &json!({})), (200, json!({})));
    assert_eq!(alice.delete(&format!("{VERSION}/2"), &json!({})), (200, json!({})));
    assert_error(&alice.delete(&format!("{VERSION}/5"), &json!({})), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&format!("{VERSION}/2")), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&format!("{KEYS}?version=2")), 404, "M_NOT_FOUND");
    assert_eq!(alice.get(VERSION).1["version"], "1");
    assert_eq!(alice.delete(&format!("{VERSION}/1"), &json!({})), (200, json!({})));
    assert_error(&alice.get(VERSION), 404, "M_NOT_FOUND");
    assert_eq!(create_version(&alice, "key3"), "3");
}

#[test]
fn keys_at_three_levels_with_the_replacement_rule_and_the_etag() {
    let node = Node::start();
    let alice = node.register("alice");
    let version = create_version(&alice, "key1");
    let etag0 = alice.get(VERSION).1["etag"].as_str().unwrap().to_owned();

    assert_error(&alice.get(KEYS), 400, "M_MISSING_PARAM");
    assert_error(&alice.put(&format!("{KEYS}/{ROOM}/s1"), &key(0, 0, false, "x")), 400, "M_MISSING_PARAM");
    let bad = json!({"first_message_index": 0, "session_data": {}});
    assert_error(&alice.put(&format!("{KEYS}/{ROOM}/s1?version={version}"), &bad), 400, "M_BAD_JSON");

    // One session, then a room, then everything.
    let (etag1, count) =
        put_keys(&alice, &format!("{KEYS}/{ROOM}/s1?version={version}"), &key(5, 1, false, "s1-a"));
    assert_eq!(count, 1);
    assert_ne!(etag1, etag0);
    let room_body = json!({"sessions": {"s2": key(0, 0, false, "s2-a"), "s3": key(0, 0, false, "s3-a")}});
    let (etag2, count) = put_keys(&alice, &format!("{KEYS}/{ROOM}?version={version}"), &room_body);
    assert_eq!(count, 3);
    assert_ne!(etag2, etag1);
    let all_body = json!({"rooms": {OTHER_ROOM_ID: {"sessions": {"o1": key(0, 0, true, "o1-a")}}}});
    let (etag3, count) = put_keys(&alice, &format!("{KEYS}?version={version}"), &all_body);
    assert_eq!(count, 4);
    assert_ne!(etag3, etag2);
    assert_eq!(alice.get(VERSION).1["etag"], etag3.as_str());

    // Worse uploads do not replace: unverified over verified, a higher
    // first_message_index, a higher forwarded_count; nor does an equal one.
    // The etag stays.
    let worse = json!({"rooms": {
        OTHER_ROOM_ID: {"sessions": {"o1": key(0, 0, false, "o1-worse")}},
        ROOM_ID: {"sessions": {
            "s1": key(6, 0, false, "s1-worse"), "s2": key(0, 3, false, "s2-worse"), "s3": key(0, 0, false, "s3-tie"),
        }},
    }});
    let (etag, count) = put_keys(&alice, &format!("{KEYS}?version={version}"), &worse);
    assert_eq!((etag.as_str(), count), (etag3.as_str(), 4));
    let (status, stored) = alice.get(&format!("{KEYS}/{ROOM}/s1?version={version}"));
    assert_eq!((status, stored), (200, key(5, 1, false, "s1-a")));

    // Better uploads replace: verified, a lower index, a lower forwarded count.
    let better = json!({"sessions": {"s1": key(2, 9, false, "s1-b"), "s2": key(9, 9, true, "s2-b")}});
    let (etag4, count) = put_keys(&alice, &format!("{KEYS}/{ROOM}?version={version}"), &better);
    assert_eq!(count, 4);
    assert_ne!(etag4, etag3);
    let (etag5, _) =
        put_keys(&alice, &format!("{KEYS}/{ROOM}/s1?version={version}"), &key(2, 3, false, "s1-c"));
    assert_ne!(etag5, etag4);

    let (status, room) = alice.get(&format!("{KEYS}/{ROOM}?version={version}"));
    assert_eq!(status, 200, "{room}");
    assert_eq!(
        room,
        json!({"sessions": {
            "s1": key(2, 3, false, "s1-c"), "s2": key(9, 9, true, "s2-b"), "s3": key(0, 0, false, "s3-a"),
        }})
    );
    let (status, all) = alice.get(&format!("{KEYS}?version={version}"));
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["rooms"][OTHER_ROOM_ID], json!({"sessions": {"o1": key(0, 0, true, "o1-a")}}));
    assert_eq!(all["rooms"][ROOM_ID]["sessions"].as_object().unwrap().len(), 3);
    let (status, stored) = alice.get(&format!("{KEYS}/{OTHER_ROOM}/o1?version={version}"));
    assert_eq!((status, stored), (200, key(0, 0, true, "o1-a")));

    // Missing things: a session is 404, a room is an empty sessions map.
    assert_error(&alice.get(&format!("{KEYS}/{ROOM}/nope?version={version}")), 404, "M_NOT_FOUND");
    let empty_room = alice.get(&format!("{KEYS}/%21empty%3Aexample.org?version={version}"));
    assert_eq!(empty_room, (200, json!({"sessions": {}})));
    assert_error(&alice.get(&format!("{KEYS}?version=42")), 404, "M_NOT_FOUND");

    // Deleting at each level changes the etag and count.
    let (status, answer) = alice.delete(&format!("{KEYS}/{ROOM}/s3?version={version}"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["count"], 3);
    assert_ne!(answer["etag"], etag5.as_str());
    let (status, answer) = alice.delete(&format!("{KEYS}/{ROOM}?version={version}"), &json!({}));
    assert_eq!((status, answer["count"].clone()), (200, json!(1)));
    assert_eq!(alice.get(&format!("{KEYS}/{ROOM}?version={version}")), (200, json!({"sessions": {}})));
    let (status, answer) = alice.delete(&format!("{KEYS}?version={version}"), &json!({}));
    assert_eq!((status, answer["count"].clone()), (200, json!(0)));
    assert_eq!(alice.get(&format!("{KEYS}?version={version}")), (200, json!({"rooms": {}})));
}

#[test]
fn keys_go_only_to_the_current_version_of_their_owner() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");

    // No backup at all: nowhere to write.
    assert_error(
        &alice.put(&format!("{KEYS}/{ROOM}/s1?version=1"), &key(0, 0, false, "x")),
        404,
        "M_NOT_FOUND",
    );

    let old = create_version(&alice, "key1");
    put_keys(&alice, &format!("{KEYS}/{ROOM}/s1?version={old}"), &key(0, 0, false, "old"));
    let current = create_version(&alice, "key2");

    // An older version can be read but not written.
    let answer = alice.put(&format!("{KEYS}/{ROOM}/s2?version={old}"), &key(0, 0, false, "x"));
    assert_error(&answer, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(answer.1["current_version"], current.as_str(), "{}", answer.1);
    let (status, stored) = alice.get(&format!("{KEYS}/{ROOM}/s1?version={old}"));
    assert_eq!((status, stored), (200, key(0, 0, false, "old")));
    let answer = alice.put(&format!("{KEYS}/{ROOM}/s2?version=99"), &key(0, 0, false, "x"));
    assert_error(&answer, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(answer.1["current_version"], current.as_str(), "{}", answer.1);
    put_keys(&alice, &format!("{KEYS}/{ROOM}/s2?version={current}"), &key(0, 0, false, "new"));

    // Bob sees none of it: no latest version, no keys, no update, no delete.
    assert_error(&bob.get(VERSION), 404, "M_NOT_FOUND");
    assert_error(&bob.get(&format!("{VERSION}/{current}")), 404, "M_NOT_FOUND");
    assert_error(&bob.get(&format!("{KEYS}?version={current}")), 404, "M_NOT_FOUND");
    assert_error(
        &bob.put(&format!("{KEYS}/{ROOM}/s2?version={current}"), &key(0, 0, true, "bob")),
        404,
        "M_NOT_FOUND",
    );
    let update = json!({"algorithm": ALGORITHM, "auth_data": {"public_key": "bob"}});
    assert_error(&bob.put(&format!("{VERSION}/{current}"), &update), 404, "M_NOT_FOUND");
    assert_error(&bob.delete(&format!("{VERSION}/{current}"), &json!({})), 404, "M_NOT_FOUND");

    // Bob's own backup starts at version 1 and does not touch alice's.
    assert_eq!(create_version(&bob, "bobkey"), "1");
    assert_eq!(alice.get(VERSION).1["auth_data"], json!({"public_key": "key2"}));
    assert_eq!(alice.get(VERSION).1["count"], 1);
}
