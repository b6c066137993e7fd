//! Queries other servers make of us (room aliases, profiles) and the ones we
//! make of them.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#querying-for-information>.

use http_types::Method;
use serde_json::{Value, json};

use super::client;
use super::pdus::{encode, server_of};
use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};

/// `GET /_matrix/federation/v1/query/directory?room_alias=`.
pub fn directory(app: &App, request: &Request) -> Result<Response> {
    let alias = request.query("room_alias").ok_or_else(|| Error::MissingParam("`room_alias` is required".into()))?;
    let (room_id, _) = app.storage().alias(alias)?.ok_or_else(|| Error::NotFound("room alias not found".into()))?;
    let mut servers = app.storage().servers_in_room(&room_id)?;
    // Ourselves first: we surely know the room.
    servers.retain(|server| *server != app.config.server_name);
    servers.insert(0, app.config.server_name.clone());
    Ok(Response::ok(json!({ "room_id": room_id, "servers": servers })))
}

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`.
pub fn profile(app: &App, request: &Request) -> Result<Response> {
    let user_id = request.query("user_id").ok_or_else(|| Error::MissingParam("`user_id` is required".into()))?;
    if !app.is_local_user(user_id) {
        return Err(Error::InvalidParam("that user is not on this server".into()));
    }
    let user = app
        .storage()
        .user(user_id)?
        .filter(|user| !user.deactivated)
        .ok_or_else(|| Error::NotFound("profile not found".into()))?;
    let mut profile = serde_json::Map::new();
    let field = request.query("field");
    if field.is_none_or(|field| field == "displayname") {
        if let Some(name) = user.displayname {
            profile.insert("displayname".into(), json!(name));
        }
    }
    if field.is_none_or(|field| field == "avatar_url") {
        if let Some(url) = user.avatar_url {
            profile.insert("avatar_url".into(), json!(url));
        }
    }
    Ok(Response::ok(Value::Object(profile)))
}

/// Resolves a remote room alias through its server: `(room_id, servers)`.
pub async fn resolve_remote_alias(app: &App, alias: &str) -> Result<(String, Vec<String>)> {
    let server = server_of(alias).ok_or_else(|| Error::InvalidParam(format!("{alias} is not an alias")))?;
    let path = format!("/_matrix/federation/v1/query/directory?room_alias={}", encode(alias));
    let (status, answer) = client::request(app, server, Method::Get, &path, None).await?;
    if status != 200 {
        return Err(Error::NotFound(format!("{server} does not know {alias}")));
    }
    let room_id = answer
        .get("room_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::matrix(502, "M_UNKNOWN", format!("{server} sent no room_id")))?
        .to_string();
    let servers = answer
        .get("servers")
        .and_then(Value::as_array)
        .map(|servers| servers.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_else(|| vec![server.to_string()]);
    Ok((room_id, servers))
}

/// Fetches a remote user's profile (or one field of it).
pub async fn remote_profile(app: &App, user_id: &str, field: Option<&str>) -> Result<Value> {
    let server = server_of(user_id).ok_or_else(|| Error::InvalidParam(format!("{user_id} is not a user ID")))?;
    let mut path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode(user_id));
    if let Some(field) = field {
        path.push_str(&format!("&field={}", encode(field)));
    }
    let (status, answer) = client::request(app, server, Method::Get, &path, None).await?;
    match status {
        200 => Ok(answer),
        404 => Err(Error::NotFound("profile not found".into())),
        _ => Err(Error::matrix(502, "M_UNKNOWN", format!("{server} answered the profile query with {status}"))),
    }
}
