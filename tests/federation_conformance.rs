//! Server-server API details other servers rely on: refusals that carry the
//! fields the spec gives them. Node A asks node B with signed requests
//! (`hearth federation request`).

mod common;

use common::federation::{TestCa, signed_request, start_federating};
use common::rooms::{create_room, enc};
use serde_json::json;

#[test]
fn refusals_for_an_unsupported_room_version_name_the_version() {
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    let b = start_federating(&ca, &[]);
    let bob = b.register("bob");
    let room_id = create_room(&bob, json!({"preset": "public_chat", "room_version": "12"}));
    let carol = a.user_id("carol");

    // Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1make_joinroomiduserid
    // "400 M_INCOMPATIBLE_ROOM_VERSION ... room_version: the version of the room"
    for query in ["", "?ver=1", "?ver=10&ver=11"] {
        let path = format!("/_matrix/federation/v1/make_join/{}/{}{query}", enc(&room_id), enc(&carol));
        let (status, answer) = signed_request(&ca, &a, &b, "GET", &path, None);
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["errcode"], "M_INCOMPATIBLE_ROOM_VERSION", "{answer}");
        assert_eq!(answer["room_version"], "12", "{answer}");
    }
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", enc(&room_id), enc(&carol));
    assert_eq!(signed_request(&ca, &a, &b, "GET", &path, None).0, 200);

    // Spec: https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1make_knockroomiduserid
    let path = format!("/_matrix/federation/v1/make_knock/{}/{}?ver=6", enc(&room_id), enc(&carol));
    let (status, answer) = signed_request(&ca, &a, &b, "GET", &path, None);
    assert_eq!((status, &answer["errcode"]), (400, &json!("M_INCOMPATIBLE_ROOM_VERSION")), "{answer}");
    assert_eq!(answer["room_version"], "12", "{answer}");

    // Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2inviteroomideventid
    let path = format!("/_matrix/federation/v2/invite/{}/{}", enc("!r:x"), enc("$e"));
    let body = json!({"room_version": "999", "event": {}, "invite_room_state": []});
    let (status, answer) = signed_request(&ca, &a, &b, "PUT", &path, Some(&body));
    assert_eq!((status, &answer["errcode"]), (400, &json!("M_INCOMPATIBLE_ROOM_VERSION")), "{answer}");
    assert_eq!(answer["room_version"], "999", "{answer}");
}
