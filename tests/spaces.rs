//! The space hierarchy: depth-first over `m.space.child`, only rooms the user
//! may see, with suggested_only, max_depth and paging.

mod common;

use common::rooms::create_room;
use common::{Client, Node, assert_error};
use serde_json::{Value, json};

fn add_child(client: &Client, space: &str, child: &str, content: Value) {
    let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}");
    let (status, body) = client.put(&path, &content);
    assert_eq!(status, 200, "{body}");
}

fn hierarchy(client: &Client, space: &str, query: &str) -> (u16, Value) {
    client.get(&format!("/_matrix/client/v1/rooms/{space}/hierarchy{query}"))
}

fn room_ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_hierarchy_walks_depth_first_over_visible_rooms() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let space = |name: &str| {
        create_room(
            &alice,
            json!({ "preset": "public_chat", "name": name, "creation_content": { "type": "m.space" } }),
        )
    };
    let root = space("Root");
    let sub = space("Sub");
    let first = create_room(&alice, json!({ "preset": "public_chat", "name": "First" }));
    let deep = create_room(&alice, json!({ "preset": "public_chat", "name": "Deep" }));
    let hidden = create_room(&alice, json!({ "preset": "private_chat", "name": "Hidden" }));
    let via = json!([node.server_name]);
    // `order` puts Sub before First although First was added first.
    add_child(&alice, &root, &first, json!({ "via": via, "order": "b", "suggested": true }));
    add_child(&alice, &root, &sub, json!({ "via": via, "order": "a" }));
    add_child(&alice, &root, &hidden, json!({ "via": via }));
    add_child(&alice, &sub, &deep, json!({ "via": via }));
    // A child without `via` is not a child; a loop back to the root is walked once.
    add_child(&alice, &sub, &hidden, json!({}));
    add_child(&alice, &sub, &root, json!({ "via": via }));

    // Bob is in none of them: he sees the public rooms, not the private one.
    let (status, body) = hierarchy(&bob, &root, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(room_ids(&body), [root.clone(), sub.clone(), deep.clone(), first.clone()]);
    assert!(body.get("next_batch").is_none());
    let root_entry = &body["rooms"][0];
    assert_eq!(root_entry["room_type"], "m.space");
    assert_eq!(root_entry["name"], "Root");
    assert_eq!(root_entry["num_joined_members"], 1);
    assert_eq!(root_entry["children_state"].as_array().unwrap().len(), 3);
    let child_state = &root_entry["children_state"][0];
    assert_eq!(child_state["type"], "m.space.child");
    assert!(child_state["origin_server_ts"].is_i64());
    assert_eq!(body["rooms"][3]["children_state"], json!([]));
    // Alice, a member of the private room, sees it too.
    let (_, body) = hierarchy(&alice, &root, "");
    assert!(room_ids(&body).contains(&hidden));

    let (_, body) = hierarchy(&bob, &root, "?max_depth=1");
    assert_eq!(room_ids(&body), [root.clone(), sub.clone(), first.clone()]);
    let (_, body) = hierarchy(&bob, &root, "?suggested_only=true");
    assert_eq!(room_ids(&body), [root.clone(), first.clone()]);

    // Pages of one visit the same rooms in the same order.
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_string();
    loop {
        let (status, body) = hierarchy(&bob, &root, &query);
        assert_eq!(status, 200, "{body}");
        paged.extend(room_ids(&body));
        match body["next_batch"].as_str() {
            Some(next) => query = format!("?limit=1&from={next}"),
            None => break,
        }
    }
    assert_eq!(paged, [root.clone(), sub.clone(), deep.clone(), first.clone()]);
    let (_, body) = hierarchy(&bob, &root, "?limit=1");
    let next = body["next_batch"].as_str().unwrap();
    assert_error(
        &hierarchy(&bob, &root, &format!("?limit=1&max_depth=1&from={next}")),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&hierarchy(&bob, &root, "?limit=0"), 400, "M_INVALID_PARAM");
}

#[test]
fn a_space_the_user_cannot_see_is_forbidden() {
    let node = Node::start();
    let alice = node.register("alice");
    let bob = node.register("bob");
    let private =
        create_room(&alice, json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }));
    assert_error(&hierarchy(&bob, &private, ""), 403, "M_FORBIDDEN");
    let unknown = format!("!nowhere:{}", node.server_name);
    assert_error(&hierarchy(&bob, &unknown, ""), 403, "M_FORBIDDEN");
    let (status, _) = hierarchy(&alice, &private, "");
    assert_eq!(status, 200);
}
