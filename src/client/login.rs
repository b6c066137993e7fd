//! `/login` (password logins) and `/logout`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#login>.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::credentials;
use crate::error::{Error, Result};
use crate::request::{Request, Response};

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// Deprecated top-level form of the user identifier.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// The login type of an application service logging in as one of its users.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#appservice-login>.
const APP_SERVICE_LOGIN: &str = "m.login.application_service";

/// `GET /login`: passwords, and application services' logins when there are any.
pub fn flows(app: &App) -> Response {
    let mut flows = vec![json!({ "type": "m.login.password" })];
    if !app.app_services().is_empty() {
        flows.push(json!({ "type": APP_SERVICE_LOGIN }));
    }
    Response::ok(json!({ "flows": flows }))
}

/// Turns what a user typed (`alice`, `@alice:server`, `Alice`) into a local user ID.
pub fn resolve_login_user(app: &App, typed: &str) -> String {
    if typed.starts_with('@') {
        match typed.split_once(':') {
            Some((localpart, server)) => format!("{}:{server}", localpart.to_lowercase()),
            None => typed.to_string(),
        }
    } else {
        app.user_id(&typed.to_lowercase())
    }
}

/// `POST /login`. The limits (per client address, per account) are checked
/// before the database is read or a password hashed, so a refused attempt
/// costs nothing; an unknown user's password is hashed instead of checked,
/// which takes as long as a known one's check (no user enumeration by timing).
pub async fn login(app: &App, request: &Request) -> Result<Response> {
    let body: LoginBody = request.json()?;
    if body.kind == APP_SERVICE_LOGIN {
        return login_app_service_user(app, request, body);
    }
    if body.kind != "m.login.password" {
        return Err(Error::matrix(400, "M_UNKNOWN", format!("unknown login type {}", body.kind)));
    }
    let typed = typed_user(&body)?;
    let password = body.password.ok_or_else(|| Error::MissingParam("`password` is missing".into()))?;
    let user_id = resolve_login_user(app, &typed);
    app.login_limits.begin(request.peer.address.ip(), &user_id)?;
    let invalid = || {
        app.login_limits.failed(&user_id);
        Error::Forbidden("invalid username or password".into())
    };
    // No account has a longer ID or password: refused unhashed (this says
    // nothing about which accounts exist), and counted all the same.
    if user_id.len() > credentials::MAX_USER_ID_BYTES || credentials::password_too_long(&password) {
        return Err(invalid());
    }
    let user = app.storage().user(&user_id)?;
    if user.as_ref().is_some_and(|user| user.deactivated) {
        app.login_limits.failed(&user_id);
        return Err(Error::UserDeactivated);
    }
    let stored = user.and_then(|user| user.password_hash);
    let matches = match app.passwords.verify(&password, stored.as_deref()).await {
        Ok(matches) => matches,
        Err(error) => {
            app.login_limits.abandoned(&user_id);
            return Err(error);
        }
    };
    if !matches {
        return Err(invalid());
    }
    app.login_limits.succeeded(&user_id);
    // The account may have been deactivated while the password was checked.
    if app.storage().user(&user_id)?.is_none_or(|user| user.deactivated) {
        return Err(Error::UserDeactivated);
    }
    let device_id = body.device_id.unwrap_or_else(credentials::new_device_id);
    let response =
        issue_token(app, request, &user_id, &device_id, body.initial_device_display_name.as_deref())?;
    Ok(Response::ok(response))
}

/// The user a login names, as typed.
fn typed_user(body: &LoginBody) -> Result<String> {
    let typed = match (&body.identifier, &body.user) {
        (Some(identifier), _) if identifier.kind == "m.id.user" => identifier.user.clone(),
        (Some(identifier), _) => {
            return Err(Error::matrix(
                400,
                "M_UNKNOWN",
                format!("identifier type {} is not supported", identifier.kind),
            ));
        }
        (None, user) => user.clone(),
    };
    typed.ok_or_else(|| Error::MissingParam("the user identifier is missing".into()))
}

/// `POST /login` with `type: m.login.application_service`: the service's
/// `as_token` logs in as a registered user of its namespace (a device for a
/// ghost, as bridges with encryption make). A service registered with
/// `rate_limited: false` is exempt from the login limits, as in Synapse.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#appservice-login>.
fn login_app_service_user(app: &App, request: &Request, body: LoginBody) -> Result<Response> {
    if request.access_token().is_none() {
        return Err(Error::MissingToken);
    }
    let service = app.app_service(request).ok_or(Error::UnknownToken { soft_logout: false })?;
    let user_id = resolve_login_user(app, &typed_user(&body)?);
    if service.rate_limited {
        app.login_limits.begin(request.peer.address.ip(), &user_id)?;
    }
    let registered = app.storage().user(&user_id)?.is_some_and(|user| !user.deactivated);
    if !service.is_interested_in_user(&user_id) || !registered {
        if service.rate_limited {
            app.login_limits.failed(&user_id);
        }
        return Err(Error::Forbidden("the application service cannot log in as this user".into()));
    }
    if service.rate_limited {
        app.login_limits.succeeded(&user_id);
    }
    let device_id = body.device_id.unwrap_or_else(credentials::new_device_id);
    let response =
        issue_token(app, request, &user_id, &device_id, body.initial_device_display_name.as_deref())?;
    Ok(Response::ok(response))
}

/// Creates or reuses a device and answers with a fresh access token for it.
pub fn issue_token(
    app: &App,
    request: &Request,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
) -> Result<Value> {
    let token = credentials::new_access_token();
    let ip = app.config.privacy.store_client_ips.then(|| request.peer.address.ip().to_string());
    let known = app.storage().devices(user_id)?.iter().any(|device| device.device_id == device_id);
    app.storage().login_device(
        user_id,
        device_id,
        display_name,
        &credentials::hash_token(&token),
        ip.as_deref(),
    )?;
    if !known {
        // A new device is a device-list change for everyone sharing a room with the user.
        crate::rooms::e2ee::local_devices_changed(app, user_id, &[device_id.to_string()], false)?;
    }
    Ok(json!({
        "user_id": user_id,
        "access_token": token,
        "device_id": device_id,
        "home_server": app.config.server_name,
    }))
}

/// `POST /logout`: ends this device's session.
pub fn logout(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if app.storage().delete_device(&owner.user_id, &owner.device_id)? {
        crate::rooms::e2ee::devices_deleted(app, &owner.user_id, std::slice::from_ref(&owner.device_id))?;
    }
    Ok(Response::ok(json!({})))
}

/// `POST /logout/all`: ends every session of the user.
pub fn logout_all(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let devices: Vec<String> =
        app.storage().devices(&owner.user_id)?.into_iter().map(|device| device.device_id).collect();
    app.storage().delete_devices_except(&owner.user_id, None)?;
    crate::rooms::e2ee::devices_deleted(app, &owner.user_id, &devices)?;
    Ok(Response::ok(json!({})))
}
