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
use crate::request::{Request, Response};
use crate::storage::now_ms;

/// The parameters of a registration (the session's, when a request of a
/// UIA session sends none). `password` travels apart: never in a session.
#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    /// A guest upgrading to a full account sends its own access token here
    /// and its localpart as `username` (spec: guest access).
    guest_access_token: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

/// The UIA state keys registration keeps: the password's hash (hashed when
/// the first request carries it, as Synapse does, so later requests of the
/// session need not repeat it) and the account the session created.
const PASSWORD_HASH: &str = "password_hash";
const REGISTERED_USER_ID: &str = "registered_user_id";
/// Set when a request of the session carried a password that was not hashed
/// (see `register`): the session must not end in an account without one.
const PASSWORD_UNKEPT: &str = "password_unkept";

/// `POST /register`. Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3register>.
///
/// Follows Synapse where the spec is loose: a UIA session remembers the
/// parameters and the password (as a hash), and once it has registered an
/// account, re-sending the request with the session answers that account
/// again (with a new access token unless `inhibit_login`), rather than
/// registering another or answering `M_USER_IN_USE`.
pub async fn register(app: &App, request: &Request) -> Result<Response> {
    match request.query("kind") {
        None | Some("user") => {}
        Some("guest") => return register_guest(app, request),
        Some(other) => return Err(Error::InvalidParam(format!("unknown kind of account {other:?}"))),
    }
    let object = request.json_object()?;
    if object.get("type").and_then(serde_json::Value::as_str) == Some(APP_SERVICE_REGISTRATION) {
        return register_app_service_user(app, request);
    }
    let flows: &[&[&str]] = match app.config.registration {
        Registration::Closed => return Err(Error::RegistrationDisabled),
        Registration::Token => &[&[uia::REGISTRATION_TOKEN]],
        Registration::Open => &[&[uia::DUMMY], &[uia::REGISTRATION_TOKEN]],
    };
    let password = match object.get("password") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(password)) => {
            credentials::validate_new_password(password)?;
            Some(password.clone())
        }
        Some(_) => return Err(Error::BadJson("`password` must be a string".into())),
    };
    let session_state = match uia::session_of(&object) {
        Some(session) => app.storage().uia_session(session)?,
        None => None,
    };
    let registered = session_state
        .as_ref()
        .and_then(|state| state.get(REGISTERED_USER_ID))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    // The name is checked before UIA so a taken name fails at once; the
    // session's own account is not "taken" for a retry of it.
    let this_request: RegisterBody = request.json()?;
    if let Some(username) = &this_request.username {
        let localpart = username.to_lowercase();
        credentials::validate_localpart(&localpart)?;
        credentials::validate_user_id_length(&localpart, &app.config.server_name)?;
        let user_id = app.user_id(&localpart);
        if registered.as_deref() != Some(user_id.as_str()) {
            if let Some(token) = &this_request.guest_access_token {
                upgraded_guest(app, token, &user_id)?;
            } else {
                refuse_guest_like(&localpart)?;
                refuse_claimed(app, &user_id)?;
                if app.storage().user(&user_id)?.is_some() {
                    return Err(Error::UserInUse);
                }
            }
        }
    }
    let completed = match uia::authenticate(app, &object, "register", flows, None).await {
        Ok(completed) => completed,
        Err(Error::InteractiveAuth(answer)) => {
            let session = answer.get("session").and_then(serde_json::Value::as_str);
            let kept = session_state.as_ref().is_some_and(|state| state.get(PASSWORD_HASH).is_some());
            // Hashing costs the board 12 MiB and a core for a while: only for
            // a session that has proved something (a stage done), or where
            // anyone could get it hashed anyway (open registration, whose
            // dummy stage needs nothing). Otherwise the session notes that a
            // password came and was not kept, so its end asks for it again
            // rather than making an account without one.
            let progressed = answer
                .get("completed")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|done| !done.is_empty());
            let hash_now = progressed || app.config.registration == Registration::Open;
            if let (Some(session), Some(password), false) = (session, &password, kept) {
                if hash_now {
                    let hash = app.passwords.hash(password).await?;
                    uia::remember(app, session, PASSWORD_HASH, json!(hash))?;
                } else {
                    uia::remember(app, session, PASSWORD_UNKEPT, json!(true))?;
                }
            }
            return Err(Error::InteractiveAuth(answer));
        }
        Err(error) => return Err(error),
    };
    let body: RegisterBody = serde_json::from_value(serde_json::Value::Object(completed.params.clone()))
        .map_err(|error| Error::BadJson(error.to_string()))?;
    let user_id = match registered {
        Some(user_id) => {
            if app.storage().user(&user_id)?.is_none_or(|user| user.deactivated) {
                return Err(Error::matrix(403, "M_USER_DEACTIVATED", "this account has been deactivated"));
            }
            log::info!("registration retried with the session that registered {user_id}");
            user_id
        }
        None => {
            let localpart = match &body.username {
                Some(username) => username.to_lowercase(),
                None => credentials::random_string(12).to_lowercase(),
            };
            credentials::validate_localpart(&localpart)?;
            credentials::validate_user_id_length(&localpart, &app.config.server_name)?;
            let user_id = app.user_id(&localpart);
            let upgrade = match &body.guest_access_token {
                Some(token) if body.username.is_some() => Some(upgraded_guest(app, token, &user_id)?),
                _ => {
                    refuse_guest_like(&localpart)?;
                    refuse_claimed(app, &user_id)?;
                    None
                }
            };
            let hash = match &password {
                Some(password) => Some(app.passwords.hash(password).await?),
                None => {
                    completed.state.get(PASSWORD_HASH).and_then(serde_json::Value::as_str).map(str::to_owned)
                }
            };
            if hash.is_none() && completed.state.get(PASSWORD_UNKEPT).is_some() {
                return Err(Error::MissingParam("send the password again with this request".into()));
            }
            if upgrade.is_some() {
                app.storage().upgrade_guest(
                    &user_id,
                    hash.as_deref(),
                    completed.registration_token.as_deref(),
                )?;
            } else {
                // A name taken while the password was hashed is M_USER_IN_USE (`create_user`).
                app.storage().create_user(
                    &user_id,
                    &localpart,
                    hash.as_deref(),
                    false,
                    completed.registration_token.as_deref(),
                )?;
            }
            uia::remember(app, &completed.session, REGISTERED_USER_ID, json!(user_id))?;
            log::info!("registered {user_id}");
            user_id
        }
    };
    answer_registered(
        app,
        request,
        &user_id,
        body.inhibit_login,
        body.device_id,
        body.initial_device_display_name,
    )
}

/// `POST /register?kind=guest`: with `guest_access` on, a guest account
/// with a numeric localpart (as Synapse makes them), no password, and a
/// device the server picks. The spec: every body parameter but
/// `initial_device_display_name` is ignored.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#guest-access>.
fn register_guest(app: &App, request: &Request) -> Result<Response> {
    if !app.config.guest_access {
        return Err(Error::matrix(403, "M_GUEST_ACCESS_FORBIDDEN", "guest access is not enabled"));
    }
    if app.config.registration == Registration::Closed {
        return Err(Error::RegistrationDisabled);
    }
    let object = request.json_object()?;
    let display_name = match object.get("initial_device_display_name") {
        Some(serde_json::Value::String(name)) => Some(name.as_str()),
        _ => None,
    };
    // Random digits: numeric localparts are the guests' (Synapse's habit,
    // and no registered name can take one, see `validate_localpart`).
    let mut attempt = 0;
    let user_id = loop {
        let localpart = guest_localpart();
        let user_id = app.user_id(&localpart);
        match app.storage().create_guest(&user_id, &localpart) {
            Ok(()) => break user_id,
            Err(Error::UserInUse) if attempt < GUEST_ID_ATTEMPTS => attempt += 1,
            Err(error) => return Err(error),
        }
    };
    log::info!("registered guest {user_id}");
    let device_id = credentials::new_device_id();
    let answer = login::issue_token(app, request, &user_id, &device_id, display_name)?;
    Ok(Response::ok(answer))
}

/// Tries at a free guest ID before giving up (a clash of 16 random digits
/// is already a one-in-10^16 event).
const GUEST_ID_ATTEMPTS: u32 = 3;

/// Checks that `token` is the access token of the guest `user_id`, who
/// may then register that name as a full account (spec: "Guest users can
/// also upgrade their account"); otherwise 403, as Synapse answers.
fn upgraded_guest(app: &App, token: &str, user_id: &str) -> Result<()> {
    let owner = app.storage().token_owner(&credentials::hash_token(token))?;
    match owner {
        Some(owner) if owner.is_guest && owner.user_id == user_id => Ok(()),
        _ => Err(Error::Forbidden("only that guest's own access token may register this name".into())),
    }
}

/// The registration type of an application service registering a user in
/// its namespace. Spec: <https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions>.
const APP_SERVICE_REGISTRATION: &str = "m.login.application_service";

/// `POST /register` with `type: m.login.application_service`: the service's
/// `as_token` authenticates it (no user-interactive auth, whatever the
/// `registration` setting), and the user must be in its user namespace and
/// in no other service's exclusive one (400 `M_EXCLUSIVE`, as Synapse
/// answers). As Synapse does, the name is taken as given (bridges rely on
/// names a user could not pick, within the spec's historical grammar).
fn register_app_service_user(app: &App, request: &Request) -> Result<Response> {
    if request.access_token().is_none() {
        return Err(Error::MissingToken);
    }
    let service = app.app_service(request).ok_or(Error::UnknownToken { soft_logout: false })?;
    let body: RegisterBody = request.json()?;
    let localpart = body.username.ok_or_else(|| Error::MissingParam("`username` is required".into()))?;
    if localpart.contains(':') {
        return Err(Error::InvalidUsername("a user name may not contain ':'".into()));
    }
    crate::protocol::identifiers::UserId::parse(&format!("@{localpart}:{}", app.config.server_name))
        .map_err(|error| Error::InvalidUsername(error.to_string()))?;
    let user_id = app.user_id(&localpart);
    if !service.is_interested_in_user(&user_id) {
        return Err(Error::matrix(400, "M_EXCLUSIVE", "Invalid user localpart for this application service"));
    }
    if app.user_claimed_by_app_service(&user_id, Some(&service)) {
        return Err(Error::matrix(400, "M_EXCLUSIVE", "This user ID is reserved by an application service"));
    }
    app.storage().create_user(&user_id, &localpart, None, false, None)?;
    log::info!("application service {} registered {user_id}", service.id);
    answer_registered(
        app,
        request,
        &user_id,
        body.inhibit_login,
        body.device_id,
        body.initial_device_display_name,
    )
}

/// A name in an application service's exclusive namespace is the service's
/// alone: 400 `M_EXCLUSIVE`, as Synapse answers.
fn refuse_claimed(app: &App, user_id: &str) -> Result<()> {
    if app.user_claimed_by_app_service(user_id, None) {
        return Err(Error::matrix(400, "M_EXCLUSIVE", "This user ID is reserved by an application service"));
    }
    Ok(())
}

/// Numeric localparts are kept for guests, as Synapse keeps them.
fn refuse_guest_like(localpart: &str) -> Result<()> {
    if localpart.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Error::InvalidUsername("numeric user IDs are reserved for guest users".into()));
    }
    Ok(())
}

/// 16 random decimal digits.
fn guest_localpart() -> String {
    credentials::random_string(16).bytes().map(|byte| char::from(b'0' + byte % 10)).collect()
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
    refuse_guest_like(&username)?;
    credentials::validate_user_id_length(&username, &app.config.server_name)?;
    refuse_claimed(app, &app.user_id(&username))?;
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

/// The answer to a registration: the new user's ID alone with
/// `inhibit_login`, else a device and an access token as a login gives.
fn answer_registered(
    app: &App,
    request: &Request,
    user_id: &str,
    inhibit_login: bool,
    device_id: Option<String>,
    device_display_name: Option<String>,
) -> Result<Response> {
    if inhibit_login {
        return Ok(Response::ok(json!({ "user_id": user_id, "home_server": app.config.server_name })));
    }
    let device_id = device_id.unwrap_or_else(credentials::new_device_id);
    let answer = login::issue_token(app, request, user_id, &device_id, device_display_name.as_deref())?;
    Ok(Response::ok(answer))
}
