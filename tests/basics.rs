//! The node starts on free ports, answers /versions on HTTP and HTTPS, and
//! refuses what it does not know.

mod common;

use common::{Node, assert_error};

#[test]
fn versions_answer_on_plain_http_and_tls() {
    let node = Node::start();
    let (status, body) = node.client().get("/_matrix/client/versions");
    assert_eq!(status, 200);
    assert!(
        body["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "v1.12")
    );
    let (status, body) = common::Client::new(&node.https).get("/_matrix/client/versions");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn unknown_endpoints_are_unrecognized() {
    let node = Node::start();
    assert_error(
        &node.client().get("/_matrix/client/v3/nonsense"),
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(&node.client().get("/elsewhere"), 404, "M_UNRECOGNIZED");
    assert_error(
        &node
            .client()
            .post("/_matrix/client/versions", &serde_json::json!({})),
        405,
        "M_UNRECOGNIZED",
    );
}
