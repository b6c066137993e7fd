//! Administration: `GET /admin/whois/{userId}`, the sessions of a user, for
//! server admins and for the user themself (spec:
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid>);
//! and hearth's own admin API under `/_hearth/admin/v1/`, for server admins
//! only: `GET /_hearth/admin/v1/resilience` (see [`crate::rooms::resilience`]).

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::UserId;
use crate::request::{Request, Response};
use crate::rooms::resilience;

/// Rooms judged between two yields of the event loop.
const ROOMS_PER_TURN: usize = 16;

/// `/_hearth/admin/v1/...`: hearth's own admin API.
pub async fn route(app: &App, request: &Request) -> Result<Response> {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["_hearth", "admin", "v1", "resilience"] => {
            if request.method != http_types::Method::Get {
                return Err(Error::Unrecognized { method_not_allowed: true });
            }
            resilience_report(app, request).await
        }
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// `GET /_hearth/admin/v1/resilience`: for each room a local user is joined
/// to, whether it would outlive this node (server admins only).
async fn resilience_report(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if !owner.is_admin {
        return Err(Error::Forbidden("only server admins may see the resilience report".into()));
    }
    let our_server = app.config.server_name.as_str();
    let room_ids = resilience::rooms(&app.storage(), our_server)?;
    let mut rooms = Vec::with_capacity(room_ids.len());
    for (index, room_id) in room_ids.iter().enumerate() {
        if let Some(report) = resilience::room(&app.storage(), our_server, room_id)? {
            rooms.push(report.to_json());
        }
        if index % ROOMS_PER_TURN == ROOMS_PER_TURN - 1 {
            smol::future::yield_now().await;
        }
    }
    Ok(Response::ok(json!({ "server_name": our_server, "rooms": rooms })))
}

/// `GET /admin/whois/{userId}`: each device is one session; its connection
/// is when it was last seen, and where only if the node keeps client
/// addresses (`privacy.store_client_ips`); no user agent is ever kept.
pub fn whois(app: &App, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    UserId::parse(user_id).map_err(|error| Error::InvalidParam(format!("{user_id:?}: {error}")))?;
    if !owner.is_admin && owner.user_id != user_id {
        return Err(Error::Forbidden("only server admins may look at other users' sessions".into()));
    }
    if !app.is_local_user(user_id) {
        return Err(Error::InvalidParam("only local users can be looked up".into()));
    }
    let mut devices = Map::new();
    for device in app.storage().devices(user_id)? {
        let connections: Vec<Value> = match device.last_seen_ts {
            Some(last_seen) => {
                let mut connection = json!({ "last_seen": last_seen });
                if let Some(ip) = &device.last_seen_ip {
                    connection["ip"] = json!(ip);
                }
                vec![connection]
            }
            None => Vec::new(),
        };
        devices.insert(device.device_id, json!({ "sessions": [{ "connections": connections }] }));
    }
    Ok(Response::ok(json!({ "user_id": user_id, "devices": devices })))
}
