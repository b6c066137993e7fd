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

/// What a completed UIA run proved.
pub struct Completed {
    /// The registration token the client presented, if that stage was done.
    pub registration_token: Option<String>,
}

/// Runs one round of UIA for `body["auth"]`. `password_user` is the account
/// whose password `m.login.password` must match. `Ok` when some flow is
/// complete; otherwise the 401 answer telling the client what is left.
pub async fn authenticate(
    app: &App,
    body: &Map<String, Value>,
    flows: &[&[&str]],
    password_user: Option<&str>,
) -> Result<Completed> {
    let auth = match body.get("auth") {
        None | Some(Value::Null) => None,
        Some(Value::Object(auth)) => Some(auth),
        Some(_) => return Err(Error::BadJson("`auth` must be an object".into())),
    };
    let session = match auth.and_then(|auth| auth.get("session")).and_then(Value::as_str) {
        Some(session) if app.storage().uia_session(session)?.is_some() => session.to_string(),
        Some(_) => return Err(Error::matrix(400, "M_UNKNOWN", "unknown UIA session")),
        None => {
            let session = credentials::random_string(24);
            app.storage().create_uia_session(&session)?;
            session
        }
    };
    let mut state = app.storage().uia_session(&session)?.unwrap_or_else(|| json!({}));
    let mut completed: Vec<String> = state
        .get("completed")
        .and_then(|stages| serde_json::from_value(stages.clone()).ok())
        .unwrap_or_default();
    let challenge = |completed: &[String], failure: Option<&Error>| {
        let mut answer = json!({ "flows": flows_json(flows), "params": {}, "session": session });
        if !completed.is_empty() {
            answer["completed"] = json!(completed);
        }
        if let Some(failure) = failure {
            let (_, errcode) = failure.status_and_errcode();
            answer["errcode"] = json!(errcode);
            answer["error"] = json!(failure.to_string());
        }
        Error::InteractiveAuth(answer)
    };
    if let Some(stage) = auth.and_then(|auth| auth.get("type")).and_then(Value::as_str) {
        let offered = flows.iter().any(|flow| flow.contains(&stage));
        let outcome = if !offered {
            Err(Error::Forbidden(format!("the stage {stage} is not offered here")))
        } else {
            run_stage(app, stage, auth.unwrap_or(&Map::new()), password_user, &mut state).await
        };
        match outcome {
            // Too many wrong passwords: 429 itself, not a challenge to try again.
            Err(error @ Error::LimitExceeded { .. }) => return Err(error),
            Ok(()) if !completed.iter().any(|done| done == stage) => completed.push(stage.to_string()),
            Ok(()) => {}
            Err(error) => return Err(challenge(&completed, Some(&error))),
        }
        state["completed"] = json!(completed);
        app.storage().set_uia_session(&session, &state)?;
    }
    let done = flows.iter().any(|flow| flow.iter().all(|stage| completed.iter().any(|done| done == stage)));
    if !done {
        return Err(challenge(&completed, None));
    }
    app.storage().delete_uia_session(&session)?;
    Ok(Completed {
        registration_token: state.get("registration_token").and_then(Value::as_str).map(str::to_owned),
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
) -> Result<()> {
    match stage {
        DUMMY => Ok(()),
        REGISTRATION_TOKEN => {
            let token = auth
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::MissingParam("`token` is required".into()))?;
            let valid = app.storage().registration_token(token)?.is_some_and(|t| t.is_valid(now_ms()));
            if !valid {
                return Err(Error::matrix(401, "M_UNAUTHORIZED", "the registration token is not valid"));
            }
            state["registration_token"] = json!(token);
            Ok(())
        }
        PASSWORD => {
            let expected = password_user.ok_or_else(|| Error::Forbidden("no account to check".into()))?;
            let given_user = auth
                .get("identifier")
                .and_then(|identifier| identifier.get("user"))
                .or_else(|| auth.get("user"))
                .and_then(Value::as_str);
            if let Some(given) = given_user {
                // The same folding as /login, so `ALICE` and `@ALICE:server` name @alice.
                let given_id = super::login::resolve_login_user(app, given);
                if given_id != expected {
                    return Err(Error::Forbidden("you can only authenticate as yourself".into()));
                }
            }
            let password = auth.get("password").and_then(Value::as_str).unwrap_or_default();
            // Guessing with a signed-in session is limited like logins, before any hashing.
            app.failed_uia.take(expected)?;
            let stored = app.storage().user(expected)?.and_then(|user| user.password_hash);
            let matches = match stored {
                Some(hash) if !credentials::password_too_long(password) => app
                    .passwords
                    .verify(password, Some(&hash))
                    .await
                    .inspect_err(|_| app.failed_uia.refund(expected))?,
                _ => false,
            };
            if !matches {
                return Err(Error::Forbidden("invalid password".into()));
            }
            app.failed_uia.refund(expected);
            Ok(())
        }
        other => Err(Error::Forbidden(format!("unknown stage {other}"))),
    }
}
