//! `GET /admin/whois/{userId}`: the sessions of a user, for server admins and
//! for the user themself.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid>.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::protocol::identifiers::UserId;

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
