//! User-interactive authentication: flows of stages, sessions kept in the
//! database, and the stages this server offers (`m.login.password`,
//! `m.login.registration_token`, `m.login.dummy`).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#user-interactive-authentication-api>.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::credentials;
use crate::error::{Error, Result};
use crate::storage::now_ms;

pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
pub const DUMMY: &str = "m.login.dummy";

/// What a completed UIA run proved, and the session it ran in.
pub struct Completed {
    /// The session's ID: it stays valid (for a day), so a client that
    /// re-sends a completed request gets the same answer.
    pub session: String,
    /// The registration token the client presented, if that stage was done.
    pub registration_token: Option<String>,
    /// The request's parameters (the body without `auth` and passwords):
    /// this request's, or when it sent none, the ones an earlier request of
    /// the session sent, as Synapse remembers them.
    pub params: Map<String, Value>,
    /// The session's state, where an operation keeps what it must remember
    /// across requests (see [`remember`]).
    pub state: Value,
}

/// How a stage failed.
enum Failure {
    /// The client may try again: a 401 challenge with the error.
    Retry(Error),
    /// Refused outright (another account's credentials; too many tries).
    Refuse(Error),
}

/// The session ID a request's `auth` names, if any.
pub fn session_of(body: &Map<String, Value>) -> Option<&str> {
    body.get("auth").and_then(|auth| auth.get("session")).and_then(Value::as_str)
}

/// Stores `value` under `key` in a session's state, for a later request of
/// the same session (registration keeps the password hash and the user it
/// created).
pub fn remember(app: &App, session: &str, key: &str, value: Value) -> Result<()> {
    let Some(mut state) = app.storage().uia_session(session)? else { return Ok(()) };
    state[key] = value;
    app.storage().set_uia_session(session, &state)
}

/// Runs one round of UIA for `body["auth"]`. `operation` names what the
/// session authorises (a session is bound to one operation and one
/// account, as Synapse binds it to the URI and method). `password_user` is
/// the account whose password `m.login.password` must match. `Ok` when some
/// flow is complete; otherwise the 401 answer telling the client what is
/// left. A completed session stays complete: re-sending the request with
/// it succeeds again (the spec's idempotent retry).
pub async fn authenticate(
    app: &App,
    body: &Map<String, Value>,
    operation: &str,
    flows: &[&[&str]],
    password_user: Option<&str>,
) -> Result<Completed> {
    let auth = match body.get("auth") {
        None | Some(Value::Null) => None,
        Some(Value::Object(auth)) => Some(auth),
        Some(_) => return Err(Error::BadJson("`auth` must be an object".into())),
    };
    let mut params = body.clone();
    // Passwords are never stored in a session (registration keeps a hash).
    for secret in ["auth", "password", "new_password"] {
        params.remove(secret);
    }
    let (session, mut state) = match auth.and_then(|auth| auth.get("session")).and_then(Value::as_str) {
        Some(session) => {
            let state = app
                .storage()
                .uia_session(session)?
                .ok_or_else(|| Error::matrix(400, "M_UNKNOWN", "unknown UIA session"))?;
            if state.get("operation").and_then(Value::as_str) != Some(operation)
                || state.get("user").and_then(Value::as_str) != password_user
            {
                return Err(Error::Forbidden(
                    "the requested operation has changed during the UIA session".into(),
                ));
            }
            (session.to_string(), state)
        }
        None => {
            let session = credentials::random_string(24);
            let state = json!({ "operation": operation, "user": password_user });
            app.storage().create_uia_session(&session, &state)?;
            (session, state)
        }
    };
    // A request without parameters continues with the session's.
    match state.get("params").and_then(Value::as_object) {
        Some(stored) if params.is_empty() => params = stored.clone(),
        _ => state["params"] = Value::Object(params.clone()),
    }
    let mut completed: Vec<String> = state
        .get("completed")
        .and_then(|stages| serde_json::from_value(stages.clone()).ok())
        .unwrap_or_default();
    let challenge = |completed: &[String], failure: Option<&Error>| {
        let mut answer = json!({ "flows": flows_json(flows), "params": {}, "session": session });
        // Once the client has sent an `auth` dict, the answer lists what is
        // done, even when nothing is (Synapse does; clients read it).
        if auth.is_some() {
            answer["completed"] = json!(completed);
        }
        if let Some(failure) = failure {
            let (_, errcode) = failure.status_and_errcode();
            answer["errcode"] = json!(errcode);
            answer["error"] = json!(failure.to_string());
        }
        Error::InteractiveAuth(answer)
    };
    let mut failure = None;
    if let Some(stage) = auth.and_then(|auth| auth.get("type")).and_then(Value::as_str) {
        let offered = flows.iter().any(|flow| flow.contains(&stage));
        let outcome = if !offered {
            Err(Failure::Retry(Error::Forbidden(format!("the stage {stage} is not offered here"))))
        } else {
            run_stage(app, stage, auth.unwrap_or(&Map::new()), password_user, &mut state).await
        };
        match outcome {
            Err(Failure::Refuse(error)) => return Err(error),
            Ok(()) if !completed.iter().any(|done| done == stage) => completed.push(stage.to_string()),
            Ok(()) => {}
            Err(Failure::Retry(error)) => failure = Some(error),
        }
        state["completed"] = json!(completed);
    }
    app.storage().set_uia_session(&session, &state)?;
    if let Some(error) = failure {
        return Err(challenge(&completed, Some(&error)));
    }
    let done = flows.iter().any(|flow| flow.iter().all(|stage| completed.iter().any(|done| done == stage)));
    if !done {
        return Err(challenge(&completed, None));
    }
    Ok(Completed {
        registration_token: state.get("registration_token").and_then(Value::as_str).map(str::to_owned),
        session,
        params,
        state,
    })
}

fn flows_json(flows: &[&[&str]]) -> Value {
    Value::Array(flows.iter().map(|stages| json!({ "stages": stages })).collect())
}

async fn run_stage(
    app: &App,
    stage: &str,
    auth: &Map<String, Value>,
    password_user: Option<&str>,
    state: &mut Value,
) -> std::result::Result<(), Failure> {
    match stage {
        DUMMY => Ok(()),
        REGISTRATION_TOKEN => {
            let token = auth
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::Retry(Error::MissingParam("`token` is required".into())))?;
            let valid = app
                .storage()
                .registration_token(token)
                .map_err(Failure::Refuse)?
                .is_some_and(|t| t.is_valid(now_ms()));
            if !valid {
                return Err(Failure::Retry(Error::matrix(
                    401,
                    "M_UNAUTHORIZED",
                    "the registration token is not valid",
                )));
            }
            state["registration_token"] = json!(token);
            Ok(())
        }
        PASSWORD => {
            let expected = password_user
                .ok_or_else(|| Failure::Retry(Error::Forbidden("no account to check".into())))?;
            let given_user = auth
                .get("identifier")
                .and_then(|identifier| identifier.get("user"))
                .or_else(|| auth.get("user"))
                .and_then(Value::as_str);
            if let Some(given) = given_user {
                // The same folding as /login, so `ALICE` and `@ALICE:server` name @alice.
                let given_id = super::login::resolve_login_user(app, given);
                // 403, not a challenge: another account's credentials never
                // authorise this one's operation (Synapse answers the same).
                if given_id != expected {
                    return Err(Failure::Refuse(Error::Forbidden(
                        "you can only authenticate as yourself".into(),
                    )));
                }
            }
            let password = auth.get("password").and_then(Value::as_str).unwrap_or_default();
            // Guessing with a signed-in session is limited like logins, before any hashing.
            // Too many wrong passwords: 429 itself, not a challenge to try again.
            app.failed_uia.take(expected).map_err(Failure::Refuse)?;
            let stored =
                app.storage().user(expected).map_err(Failure::Refuse)?.and_then(|user| user.password_hash);
            let matches = match stored {
                Some(hash) if !credentials::password_too_long(password) => app
                    .passwords
                    .verify(password, Some(&hash))
                    .await
                    .inspect_err(|_| app.failed_uia.refund(expected))
                    .map_err(Failure::Refuse)?,
                _ => false,
            };
            if !matches {
                return Err(Failure::Retry(Error::Forbidden("invalid password".into())));
            }
            app.failed_uia.refund(expected);
            Ok(())
        }
        other => Err(Failure::Retry(Error::Forbidden(format!("unknown stage {other}")))),
    }
}
