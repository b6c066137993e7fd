//! The server-server API: the inbound routes and their handlers. What we ask
//! of other servers (and the checks of what they send) is `remote/`.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/>.

pub mod acl;
pub mod e2ee;
pub mod events;
pub mod keys;
pub mod media;
pub mod membership;
pub mod queries;
pub mod transactions;

use std::rc::Rc;

use http_types::Method;
use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};

/// Answers `/_matrix/key/...` and `/_matrix/federation/...` on federation listeners.
pub async fn route(app: &Rc<App>, request: &Request) -> Result<Response> {
    let path = request.path();
    let method = &request.method;
    match (path.get(1).copied(), &path[2.min(path.len())..]) {
        (Some("key"), ["v2", "server"]) | (Some("key"), ["v2", "server", _]) => {
            require_method(method, Method::Get)?;
            Ok(Response::ok(crate::remote::keys::own_keys(app)?))
        }
        // The `/{keyId}` form is deprecated; the answer holds all the server's keys either way.
        (Some("key"), ["v2", "query", server_name] | ["v2", "query", server_name, _]) => {
            require_method(method, Method::Get)?;
            keys::query_one(app, request, server_name).await
        }
        (Some("key"), ["v2", "query"]) => {
            require_method(method, Method::Post)?;
            keys::query_many(app, request).await
        }
        (Some("key"), _) => Err(Error::Unrecognized { method_not_allowed: false }),
        (Some("federation"), ["v1", "version"]) => {
            require_method(method, Method::Get)?;
            Ok(Response::ok(json!({
                "server": {"name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION")}
            })))
        }
        // Asked by third parties holding a token, not by servers: no X-Matrix.
        (Some("federation"), ["v1", "openid", "userinfo"]) => {
            require_method(method, Method::Get)?;
            queries::openid_userinfo(app, request)
        }
        (Some("federation"), rest) => {
            // Every other federation endpoint needs a signed request.
            let origin =
                crate::remote::auth::authenticate_server(app, request).await.inspect_err(|error| {
                    log::debug!("refused {} {}: {error}", request.method, request.target);
                })?;
            // Hearing from a server means it is up: send it what waits for it.
            crate::rooms::outbox::nudge(app, &origin);
            authenticated_route(app, request, &origin, rest).await
        }
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// The federation endpoints that need an authenticated origin.
async fn authenticated_route(
    app: &Rc<App>,
    request: &Request,
    origin: &str,
    path: &[&str],
) -> Result<Response> {
    use Method::{Get, Post, Put};
    let method = request.method;
    match (method, path) {
        (Put, ["v1", "send", txn_id]) => transactions::receive(app, request, origin, txn_id).await,
        (Get, ["v1", "make_join", room_id, user_id]) => {
            membership::make_membership(app, request, origin, room_id, user_id, "join")
        }
        (Get, ["v1", "make_leave", room_id, user_id]) => {
            membership::make_membership(app, request, origin, room_id, user_id, "leave")
        }
        (Get, ["v1", "make_knock", room_id, user_id]) => {
            membership::make_membership(app, request, origin, room_id, user_id, "knock")
        }
        (Put, [api @ ("v1" | "v2"), "send_join", room_id, event_id]) => {
            membership::send_join(app, request, origin, room_id, event_id, *api == "v1").await
        }
        (Put, [api @ ("v1" | "v2"), "send_leave", room_id, event_id]) => {
            let answer =
                membership::send_membership(app, request, origin, room_id, event_id, "leave").await?;
            Ok(Response::ok(deprecated_v1_shape(api, answer)))
        }
        (Put, ["v1", "send_knock", room_id, event_id]) => Ok(Response::ok(
            membership::send_membership(app, request, origin, room_id, event_id, "knock").await?,
        )),
        (Put, ["v2", "invite", room_id, event_id]) => {
            membership::invite(app, request, origin, room_id, event_id).await
        }
        (Put, ["v1", "invite", room_id, event_id]) => {
            membership::invite_v1(app, request, origin, room_id, event_id).await
        }
        (Get, ["v1", "event", event_id]) => events::get_event(app, origin, event_id),
        (Get, ["v1", "state", room_id]) => events::get_state(app, request, origin, room_id, false),
        (Get, ["v1", "state_ids", room_id]) => events::get_state(app, request, origin, room_id, true),
        (Get, ["v1", "event_auth", room_id, event_id]) => {
            events::get_event_auth(app, origin, room_id, event_id)
        }
        (Get, ["v1", "backfill", room_id]) => events::backfill(app, request, origin, room_id),
        (Post, ["v1", "get_missing_events", room_id]) => {
            events::get_missing_events(app, request, origin, room_id)
        }
        (Post, ["v1", "user", "keys", "query"]) => e2ee::keys_query(app, request),
        (Post, ["v1", "user", "keys", "claim"]) => e2ee::keys_claim(app, request),
        (Get, ["v1", "user", "devices", user_id]) => e2ee::user_devices(app, user_id),
        (Get, ["v1", "media", "download", media_id]) => media::download(app, request, media_id).await,
        (Get, ["v1", "media", "thumbnail", media_id]) => media::thumbnail(app, request, media_id).await,
        (Get, ["v1", "hierarchy", room_id]) => queries::hierarchy(app, request, origin, room_id),
        (Get, ["v1", "query", "directory"]) => queries::directory(app, request).await,
        (Get, ["v1", "query", "profile"]) => queries::profile(app, request),
        (Get, ["v1", "publicRooms"]) => queries::public_rooms(app, request),
        (Post, ["v1", "publicRooms"]) => queries::filtered_public_rooms(app, request),
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// The deprecated v1 `send_leave` answers `[200, answer]` (the status
/// repeated in the body; v1 `send_join` too, in `rooms::join_answer`); v2
/// answers the object alone.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_leaveroomideventid>.
fn deprecated_v1_shape(api: &str, answer: serde_json::Value) -> serde_json::Value {
    if api == "v1" { json!([200, answer]) } else { answer }
}

fn require_method(method: &Method, expected: Method) -> Result<()> {
    if *method == expected { Ok(()) } else { Err(Error::Unrecognized { method_not_allowed: true }) }
}
