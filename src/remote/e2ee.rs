//! End-to-end encryption across servers: the device-list fetches, key
//! queries and claims the client API makes for remote users.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#end-to-end-encryption>,
//! <https://spec.matrix.org/latest/server-server-api/#device-management>.

use http_types::Method;
use serde_json::{Map, Value, json};

use super::client;
use super::pdus::encode;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::rooms::e2ee::server_of;
use crate::rooms::remote_devices;

/// Remote key answers are small: a user's devices and cross-signing keys.
const MAX_KEYS_RESPONSE_BYTES: usize = 1 << 20;

/// Asks `server` for its users' keys (`users`: user ID -> device IDs).
pub async fn query_keys(app: &Remote, server: &str, users: Map<String, Value>) -> Result<Value> {
    let body = json!({ "device_keys": users });
    let path = "/_matrix/federation/v1/user/keys/query";
    let (status, answer) =
        client::request_with_limit(app, server, Method::Post, path, Some(body), MAX_KEYS_RESPONSE_BYTES)
            .await?;
    if !(200..300).contains(&status) {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} answered {status} to a key query")));
    }
    Ok(answer)
}

/// Claims one-time keys of `server`'s users (`users`: user -> device -> algorithm).
pub async fn claim_keys(app: &Remote, server: &str, users: Map<String, Value>) -> Result<Value> {
    let body = json!({ "one_time_keys": users });
    let path = "/_matrix/federation/v1/user/keys/claim";
    let (status, answer) =
        client::request_with_limit(app, server, Method::Post, path, Some(body), MAX_KEYS_RESPONSE_BYTES)
            .await?;
    if !(200..300).contains(&status) {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} answered {status} to a key claim")));
    }
    Ok(answer)
}

/// Fetches a remote user's whole device list from their server
/// (`GET /user/devices/{userId}`) into the cache.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1userdevicesuserid>.
pub async fn fetch_device_list(app: &Remote, user_id: &str) -> Result<()> {
    let Some(server) = server_of(user_id) else {
        return Err(Error::InvalidParam(format!("{user_id:?} is not a user ID")));
    };
    let path = format!("/_matrix/federation/v1/user/devices/{}", encode(user_id));
    let (status, answer) =
        client::request_with_limit(app, server, Method::Get, &path, None, MAX_KEYS_RESPONSE_BYTES).await?;
    if !(200..300).contains(&status) {
        return Err(Error::matrix(
            502,
            "M_UNKNOWN",
            format!("{server} answered {status} to a device list request"),
        ));
    }
    let list = remote_devices::parse_user_devices(user_id, &answer)?;
    remote_devices::store_fetched(app, user_id, &list)
}
