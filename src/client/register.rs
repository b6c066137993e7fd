//! `/register`, `/register/available` and registration token validity.
//!
//! Registration is closed, token-only or open per configuration.
//! Spec: <https://spec.matrix.org/latest/client-server-api/#account-registration-and-management>.

use serde::Deserialize;
use serde_json::json;

use super::{login, uia};
use crate::app::App;
use crate::config::Registration;
use crate::credentials;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::storage::now_ms;

#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

/// `POST /register`.
pub async fn register(app: &App, request: &Request) -> Result<Response> {
    if request.query("kind") == Some("guest") {
        return Err(Error::matrix(403, "M_GUEST_ACCESS_FORBIDDEN", "guest access is not enabled"));
    }
    let flows: &[&[&str]] = match app.config.registration {
        Registration::Closed => return Err(Error::RegistrationDisabled),
        Registration::Token => &[&[uia::REGISTRATION_TOKEN]],
        Registration::Open => &[&[uia::DUMMY], &[uia::REGISTRATION_TOKEN]],
    };
    let object = request.json_object()?;
    let body: RegisterBody = request.json()?;
    let localpart = match &body.username {
        Some(username) => username.to_lowercase(),
        None => credentials::random_string(12).to_lowercase(),
    };
    credentials::validate_localpart(&localpart)?;
    credentials::validate_user_id_length(&localpart, &app.config.server_name)?;
    let user_id = app.user_id(&localpart);
    if app.storage().user(&user_id)?.is_some() {
        return Err(Error::UserInUse);
    }
    if let Some(password) = &body.password {
        credentials::validate_new_password(password)?;
    }
    let completed = uia::authenticate(app, &object, flows, None).await?;
    let hash = match &body.password {
        Some(password) => Some(app.passwords.hash(password).await?),
        None => None,
    };
    // A name taken while the password was hashed is M_USER_IN_USE (`create_user`).
    app.storage().create_user(
        &user_id,
        &localpart,
        hash.as_deref(),
        false,
        completed.registration_token.as_deref(),
    )?;
    log::info!("registered {user_id}");
    if body.inhibit_login {
        return Ok(Response::ok(json!({ "user_id": user_id, "home_server": app.config.server_name })));
    }
    let device_id = body.device_id.unwrap_or_else(credentials::new_device_id);
    let answer =
        login::issue_token(app, request, &user_id, &device_id, body.initial_device_display_name.as_deref())?;
    Ok(Response::ok(answer))
}

/// `GET /register/available?username=`.
pub fn available(app: &App, request: &Request) -> Result<Response> {
    if app.config.registration == Registration::Closed {
        return Err(Error::RegistrationDisabled);
    }
    let username = request
        .query("username")
        .ok_or_else(|| Error::MissingParam("`username` is required".into()))?
        .to_lowercase();
    credentials::validate_localpart(&username)?;
    credentials::validate_user_id_length(&username, &app.config.server_name)?;
    if app.storage().user(&app.user_id(&username))?.is_some() {
        return Err(Error::UserInUse);
    }
    Ok(Response::ok(json!({ "available": true })))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity?token=`.
pub fn token_validity(app: &App, request: &Request) -> Result<Response> {
    if app.config.registration == Registration::Closed {
        return Err(Error::RegistrationDisabled);
    }
    let token = request.query("token").ok_or_else(|| Error::MissingParam("`token` is required".into()))?;
    let valid = app.storage().registration_token(token)?.is_some_and(|t| t.is_valid(now_ms()));
    Ok(Response::ok(json!({ "valid": valid })))
}
