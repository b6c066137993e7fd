//! `/account/whoami`, `/account/password`, `/account/deactivate`, `/account/3pid`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#account-registration-and-management>.

use serde_json::{Value, json};

use super::uia;
use crate::app::App;
use crate::credentials;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::{self, Draft};

/// `GET /account/whoami`.
pub fn whoami(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let mut answer = json!({ "user_id": owner.user_id, "is_guest": owner.is_guest });
    // An application service acting without `device_id=` is on no device.
    if !owner.device_id.is_empty() {
        answer["device_id"] = json!(owner.device_id);
    }
    Ok(Response::ok(answer))
}

/// `GET /account/3pid`: this server keeps no third-party identifiers (no
/// e-mail or phone binding; the endpoints that would add one answer
/// `M_UNRECOGNIZED`), so every account's list is empty.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3account3pid>.
pub fn threepids(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    Ok(Response::ok(json!({ "threepids": [] })))
}

/// `POST /account/password` (UIA with the current password).
pub async fn change_password(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let new_password = match body.get("new_password") {
        Some(Value::String(password)) => {
            credentials::validate_new_password(password)?;
            password.clone()
        }
        Some(_) => return Err(Error::BadJson("`new_password` must be a string".into())),
        None => return Err(Error::MissingParam("`new_password` is required".into())),
    };
    let logout_devices = match body.get("logout_devices") {
        None => true,
        Some(Value::Bool(logout)) => *logout,
        Some(_) => return Err(Error::BadJson("`logout_devices` must be a boolean".into())),
    };
    uia::authenticate(app, &body, "change password", &[&[uia::PASSWORD]], Some(&owner.user_id)).await?;
    let hash = app.passwords.hash(&new_password).await?;
    app.storage().set_password_hash(&owner.user_id, &hash)?;
    if logout_devices {
        let mut others: Vec<String> =
            app.storage().devices(&owner.user_id)?.into_iter().map(|device| device.device_id).collect();
        others.retain(|device_id| *device_id != owner.device_id);
        app.storage().delete_devices_except(&owner.user_id, Some(&owner.device_id))?;
        crate::rooms::e2ee::devices_deleted(app, &owner.user_id, &others)?;
    }
    Ok(Response::ok(json!({})))
}

/// A deactivated account leaves its rooms and declines its invites.
fn leave_every_room(app: &App, user_id: &str) {
    let rooms = app.storage().rooms_of_user(user_id).unwrap_or_default();
    for (room_id, membership) in rooms {
        if !matches!(membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        let draft = Draft::state("m.room.member", user_id, json!({ "membership": "leave" }));
        if let Err(error) = rooms::send(app, &room_id, user_id, draft, None) {
            log::info!("{user_id} could not leave {room_id} on deactivation: {error}");
        }
    }
}

/// `POST /account/deactivate` (UIA with the password).
pub async fn deactivate(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    uia::authenticate(app, &body, "deactivate", &[&[uia::PASSWORD]], Some(&owner.user_id)).await?;
    let devices: Vec<String> =
        app.storage().devices(&owner.user_id)?.into_iter().map(|device| device.device_id).collect();
    leave_every_room(app, &owner.user_id);
    app.storage().deactivate_user(&owner.user_id)?;
    crate::rooms::e2ee::devices_deleted(app, &owner.user_id, &devices)?;
    log::info!("deactivated {}", owner.user_id);
    Ok(Response::ok(json!({ "id_server_unbind_result": "no-support" })))
}
