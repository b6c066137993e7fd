//! `/devices` and `/delete_devices`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#device-management>.

use serde_json::{Value, json};

use super::uia;
use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::e2ee;
use crate::storage::Device;

/// A device as the spec shapes it; `last_seen_ip` (optional there) only when
/// the node keeps client addresses (`privacy.store_client_ips`).
fn device_json(device: &Device) -> Value {
    let mut json = json!({
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ts": device.last_seen_ts,
    });
    if let Some(ip) = &device.last_seen_ip {
        json["last_seen_ip"] = json!(ip);
    }
    json
}

/// `GET /devices`.
pub fn list(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let devices = app.storage().devices(&owner.user_id)?;
    Ok(Response::ok(json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() })))
}

/// `GET /devices/{deviceId}`.
pub fn get(app: &App, request: &Request, device_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let devices = app.storage().devices(&owner.user_id)?;
    let device = devices
        .iter()
        .find(|device| device.device_id == device_id)
        .ok_or_else(|| Error::NotFound("no such device".into()))?;
    Ok(Response::ok(device_json(device)))
}

/// `PUT /devices/{deviceId}`: renames a device.
pub fn update(app: &App, request: &Request, device_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let name = match body.get("display_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.as_str()),
        Some(_) => return Err(Error::BadJson("`display_name` must be a string".into())),
    };
    if !app.storage().rename_device(&owner.user_id, device_id, name)? {
        return Err(Error::NotFound("no such device".into()));
    }
    // The name travels with the device list (spec: `device_display_name` of
    // `m.device_list_update`).
    e2ee::local_devices_changed(app, &owner.user_id, &[device_id.to_string()], false)?;
    Ok(Response::ok(json!({})))
}

/// `DELETE /devices/{deviceId}` (UIA with the password).
pub async fn delete(app: &App, request: &Request, device_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let exists = app.storage().devices(&owner.user_id)?.iter().any(|device| device.device_id == device_id);
    if !exists {
        return Err(Error::NotFound("no such device".into()));
    }
    let operation = format!("delete device {device_id}");
    uia::authenticate(app, &body, &operation, &[&[uia::PASSWORD]], Some(&owner.user_id)).await?;
    if app.storage().delete_device(&owner.user_id, device_id)? {
        e2ee::devices_deleted(app, &owner.user_id, &[device_id.to_string()])?;
    }
    Ok(Response::ok(json!({})))
}

/// `POST /delete_devices` (UIA with the password).
pub async fn delete_many(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let device_ids: Vec<String> = match body.get("devices") {
        Some(devices) => serde_json::from_value(devices.clone())
            .map_err(|_| Error::BadJson("`devices` must be a list of strings".into()))?,
        None => return Err(Error::MissingParam("`devices` is required".into())),
    };
    uia::authenticate(app, &body, "delete devices", &[&[uia::PASSWORD]], Some(&owner.user_id)).await?;
    let mut deleted = Vec::new();
    for device_id in &device_ids {
        if app.storage().delete_device(&owner.user_id, device_id)? {
            deleted.push(device_id.clone());
        }
    }
    e2ee::devices_deleted(app, &owner.user_id, &deleted)?;
    Ok(Response::ok(json!({})))
}
