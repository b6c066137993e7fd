//! The HTTP layer: JSON errors, body size limits, access tokens,
//! `Expect: 100-continue` answered on the node's own thread, and keep-alive.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#standard-error-response>.

mod common;

use common::{Node, PASSWORD, RawConnection, assert_error};
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";

/// The node runs on its main thread (the event loop), async-io's idle
/// reactor thread, and the password hashing thread (`hasher.rs`), started
/// with the node so the count does not change when the first login comes.
const MAX_NODE_THREADS: usize = 3;

#[test]
fn malformed_json_is_not_json() {
    let node = Node::start();
    let client = node.client();
    for body in [&b"{"[..], b"not json", b"{\"type\": }", b"\xff\xfe"] {
        assert_error(&client.request("POST", LOGIN, Some(body)), 400, "M_NOT_JSON");
    }
}

#[test]
fn json_of_the_wrong_shape_is_bad_json() {
    let node = Node::start();
    let client = node.client();
    assert_error(&client.post(LOGIN, &json!({"type": 5})), 400, "M_BAD_JSON");
    assert_error(&client.post(LOGIN, &json!(["a list"])), 400, "M_BAD_JSON");
    assert_error(
        &client.post(
            "/_matrix/client/v3/register",
            &json!({"username": ["alice"], "auth": {"type": "m.login.dummy"}}),
        ),
        400,
        "M_BAD_JSON",
    );
    let alice = node.register("alice");
    assert_error(
        &alice.post("/_matrix/client/v3/account/password", &json!({"new_password": true})),
        400,
        "M_BAD_JSON",
    );
}

#[test]
fn oversized_bodies_are_too_large() {
    let node = Node::start();
    // Announced by Content-Length: refused before the body is read.
    let response = RawConnection::exchange(
        &node.http,
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.json()["errcode"], "M_TOO_LARGE");

    // Chunked, so the size shows only while reading: cut off after the limit.
    let mut connection = RawConnection::connect(&node.http);
    connection.send(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = vec![b' '; 64 * 1024];
    let mut head = format!("{:x}\r\n", chunk.len()).into_bytes();
    head.extend_from_slice(&chunk);
    head.extend_from_slice(b"\r\n");
    for _ in 0..17 {
        connection.send(&head);
    }
    let response = connection.read_response();
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.json()["errcode"], "M_TOO_LARGE");

    // Just under the limit is parsed (and here refused for what it says).
    let mut padded =
        json!({"type": "m.login.password", "user": "nobody", "password": "x"}).to_string().into_bytes();
    padded.resize((1 << 20) - 10, b' ');
    assert_error(&node.client().request("POST", LOGIN, Some(&padded)), 403, "M_FORBIDDEN");
}

#[test]
fn access_tokens_are_required_and_checked() {
    let node = Node::start();
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_error(&node.client().get(whoami), 401, "M_MISSING_TOKEN");
    let mut stranger = node.client();
    stranger.token = Some("hth_not_a_real_token".into());
    let refused = stranger.get(whoami);
    assert_error(&refused, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(refused.1["soft_logout"], false);

    // The query parameter works as well as the header.
    let alice = node.register("alice");
    let token = alice.token.clone().unwrap();
    let (status, body) = node.client().get(&format!("{whoami}?access_token={token}"));
    assert_eq!(status, 200, "{body}");
    assert_error(&node.client().get(&format!("{whoami}?access_token=nope")), 401, "M_UNKNOWN_TOKEN");
}

#[test]
fn expect_continue_is_answered_without_a_thread_pool() {
    let node = Node::start();
    node.register("alice");
    let threads_before = node.thread_count();
    assert!(threads_before <= MAX_NODE_THREADS, "{threads_before} threads");

    let body = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}).to_string();
    let mut connection = RawConnection::connect(&node.http);
    connection.send(
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = connection.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    connection.send(body.as_bytes());
    let response = connection.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["user_id"], node.user_id("alice"));

    // The same connection carries the next request.
    connection.send(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(connection.read_response().status, 200);

    let threads_after = node.thread_count();
    assert_eq!(threads_after, threads_before);
}

#[test]
fn keep_alive_connections_serve_many_requests() {
    let node = Node::start();
    let mut connection = RawConnection::connect(&node.http);
    for _ in 0..3 {
        connection.send(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = connection.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert!(response.json()["versions"].is_array());
        assert_ne!(response.header("connection"), Some("close"));
    }
    // A POST with a body, then another request on the same connection.
    let body = b"{\"type\": 5}";
    connection.send(
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    connection.send(body);
    assert_eq!(connection.read_response().json()["errcode"], "M_BAD_JSON");

    // `Connection: close` is honoured.
    connection.send(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let response = connection.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(connection.is_closed());
}

#[test]
fn garbage_heads_get_bad_request() {
    let node = Node::start();
    let mut connection = RawConnection::connect(&node.http);
    connection.send(b"NONSENSE\r\n\r\n");
    let response = connection.read_response();
    assert_eq!(response.status, 400, "{response:?}");
    assert!(connection.is_closed());
    // The node is still fine.
    assert_eq!(node.client().get("/_matrix/client/versions").0, 200);
}

#[test]
fn plain_and_tls_traffic_start_no_threads() {
    let node = Node::start();
    let threads_before = node.thread_count();
    assert!(threads_before <= MAX_NODE_THREADS, "{threads_before} threads");
    let alice = node.register("alice");
    let mut over_tls = common::Client::new(&node.https);
    assert_eq!(over_tls.login("alice", PASSWORD).0, 200);
    for _ in 0..5 {
        assert_eq!(alice.get("/_matrix/client/v3/account/whoami").0, 200);
        assert_eq!(over_tls.get("/_matrix/client/v3/devices").0, 200);
    }
    assert_eq!(node.thread_count(), threads_before);
}

#[test]
fn only_signed_in_users_may_send_media_sized_bodies() {
    let node = Node::start();
    // A media upload past the JSON limit needs a token before anything is read.
    let response = RawConnection::exchange(
        &node.http,
        b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
          Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.json()["errcode"], "M_MISSING_TOKEN");
    // Paths that merely contain "upload" are JSON endpoints with the JSON limit.
    let response = RawConnection::exchange(
        &node.http,
        b"POST /_matrix/client/v3/keys/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.json()["errcode"], "M_TOO_LARGE");
}
