//! `PUT` and `GET /presence/{userId}/status`: thin handlers over
//! [`crate::rooms::presence`].
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#presence>.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::presence::{self, State};
use crate::storage::now_ms;

/// `PUT /presence/{userId}/status`: the user's own presence only.
pub fn set(app: &Rc<App>, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only set your own presence".into()));
    }
    let body = request.json_object()?;
    let state = match body.get("presence") {
        None | Some(Value::Null) => return Err(Error::MissingParam("`presence` is required".into())),
        Some(value) => value.as_str().and_then(State::parse).ok_or_else(|| {
            Error::InvalidParam("`presence` must be one of online, unavailable, offline".into())
        })?,
    };
    let status_msg = match body.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(Error::InvalidParam("`status_msg` must be a string".into())),
    };
    presence::put(&app.engine, user_id, state, status_msg)?;
    Ok(Response::ok(json!({})))
}

/// `GET /presence/{userId}/status`: yourself, or someone you share a room with.
pub fn get(app: &App, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if !user_id.starts_with('@') || !user_id.contains(':') {
        return Err(Error::InvalidParam(format!("{user_id:?} is not a user ID")));
    }
    if app.is_local_user(user_id) && app.storage().user(user_id)?.is_none() {
        return Err(Error::NotFound("no such user".into()));
    }
    if !presence::can_see(app, &owner.user_id, user_id)? {
        return Err(Error::Forbidden("you do not share a room with this user".into()));
    }
    // Someone we know nothing of yet is offline, as Synapse answers.
    let content = match app.presence.get(user_id) {
        Some(record) => record.content(now_ms()),
        None => json!({ "presence": "offline" }),
    };
    Ok(Response::ok(content))
}
