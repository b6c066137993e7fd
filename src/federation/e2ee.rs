//! End-to-end encryption over federation: the inbound key endpoints
//! (`/user/keys/query`, `/user/keys/claim`, `/user/devices/{userId}`), the
//! inbound EDUs (`m.direct_to_device`, `m.device_list_update`,
//! `m.signing_key_update`, applied to the cache of remote device lists in
//! `rooms::remote_devices`); the outbound fetches, key queries and claims
//! are `remote::e2ee`.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#end-to-end-encryption>,
//! <https://spec.matrix.org/latest/server-server-api/#device-management>,
//! <https://spec.matrix.org/latest/server-server-api/#send-to-device-messaging>.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::e2ee::{self, server_of};
use crate::rooms::remote_devices;

/// `POST /_matrix/federation/v1/user/keys/query`: keys of our users.
pub fn keys_query(app: &App, request: &Request) -> Result<Response> {
    let body = request.json_object()?;
    let wanted = match body.get("device_keys") {
        Some(Value::Object(wanted)) => wanted.clone(),
        _ => return Err(Error::MissingParam("`device_keys` is required".into())),
    };
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    for (user_id, devices) in &wanted {
        if !app.is_local_user(user_id) {
            continue;
        }
        let device_ids: Vec<String> = serde_json::from_value(devices.clone()).unwrap_or_default();
        let keys = e2ee::local_keys(app, None, user_id, &device_ids)?;
        device_keys.insert(user_id.clone(), Value::Object(keys.devices));
        if let Some(key) = keys.master {
            master_keys.insert(user_id.clone(), key);
        }
        if let Some(key) = keys.self_signing {
            self_signing_keys.insert(user_id.clone(), key);
        }
    }
    Ok(Response::ok(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
    })))
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one-time keys of our users.
pub fn keys_claim(app: &App, request: &Request) -> Result<Response> {
    let body = request.json_object()?;
    let wanted = match body.get("one_time_keys") {
        Some(Value::Object(wanted)) => wanted.clone(),
        _ => return Err(Error::MissingParam("`one_time_keys` is required".into())),
    };
    Ok(Response::ok(json!({ "one_time_keys": e2ee::claim_local(app, &wanted)? })))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`.
pub fn user_devices(app: &App, user_id: &str) -> Result<Response> {
    if !app.is_local_user(user_id) || app.storage().user(user_id)?.is_none() {
        return Err(Error::NotFound(format!("{user_id} is not a user of this server")));
    }
    let keys = e2ee::local_keys(app, None, user_id, &[])?;
    let mut devices = Vec::new();
    let stored = app.storage().devices_with_keys(user_id)?;
    for (device_id, name, _) in stored {
        let mut device = json!({ "device_id": device_id });
        if let Some(name) = name.filter(|_| app.config.privacy.device_names_over_federation) {
            device["device_display_name"] = json!(name);
        }
        if let Some(device_keys) = keys.devices.get(&device_id) {
            let mut device_keys = device_keys.clone();
            // The display name travels beside the keys here, not in `unsigned`.
            if let Some(object) = device_keys.as_object_mut() {
                object.remove("unsigned");
            }
            device["keys"] = device_keys;
        }
        devices.push(device);
    }
    let stream_id = app.storage().previous_device_update(user_id, i64::MAX)?.unwrap_or(0);
    let mut answer = json!({ "user_id": user_id, "stream_id": stream_id, "devices": devices });
    if let Some(key) = keys.master {
        answer["master_key"] = key;
    }
    if let Some(key) = keys.self_signing {
        answer["self_signing_key"] = key;
    }
    Ok(Response::ok(answer))
}

/// The user an EDU is about must belong to the server that sent it.
fn check_origin(origin: &str, user_id: &str) -> Result<()> {
    if server_of(user_id) == Some(origin) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("{origin} cannot speak for {user_id:?}")))
    }
}

/// `m.direct_to_device`: delivers to our devices once per `message_id`.
pub fn receive_direct_to_device(app: &App, origin: &str, content: &Value) -> Result<()> {
    let sender = content.get("sender").and_then(Value::as_str).unwrap_or_default();
    check_origin(origin, sender)?;
    let kind = content.get("type").and_then(Value::as_str).unwrap_or_default();
    let message_id = content.get("message_id").and_then(Value::as_str).unwrap_or_default();
    let Some(messages) = content.get("messages").and_then(Value::as_object) else {
        return Err(Error::BadJson("`messages` must be an object".into()));
    };
    if kind.is_empty() || message_id.is_empty() {
        return Err(Error::BadJson("`type` and `message_id` are required".into()));
    }
    if !app.storage().record_to_device_transaction(origin, message_id)? {
        return Ok(());
    }
    e2ee::deliver_locally(app, sender, kind, messages)
}

/// `m.device_list_update`: applied to our cached copy of the user's list
/// (or the copy marked stale), and shown to our users sharing a room with them.
pub fn receive_device_list_update(app: &App, origin: &str, content: &Value) -> Result<()> {
    let user_id = content.get("user_id").and_then(Value::as_str).unwrap_or_default();
    check_origin(origin, user_id)?;
    remote_devices::receive_update(app, user_id, content)
}

/// `m.signing_key_update`: the user's cross-signing keys changed.
pub fn receive_signing_key_update(app: &App, origin: &str, content: &Value) -> Result<()> {
    let user_id = content.get("user_id").and_then(Value::as_str).unwrap_or_default();
    check_origin(origin, user_id)?;
    remote_devices::receive_signing_key_update(app, user_id, content)
}
