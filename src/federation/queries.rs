//! Queries other servers make of us (room aliases, profiles, the public room
//! directory, space hierarchies, OpenID userinfo); the ones we make of them
//! are `remote::queries`.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#querying-for-information>.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::directory::{self, PublicRoomsQuery};

/// `GET /_matrix/federation/v1/query/directory?room_alias=`: an unknown
/// alias of an application service's namespace is asked of that service
/// first, as for our own users.
pub async fn directory(app: &App, request: &Request) -> Result<Response> {
    let alias =
        request.query("room_alias").ok_or_else(|| Error::MissingParam("`room_alias` is required".into()))?;
    crate::remote::appservice::query_alias(app, alias).await;
    let (room_id, _) =
        app.storage().alias(alias)?.ok_or_else(|| Error::NotFound("room alias not found".into()))?;
    let mut servers = app.storage().servers_in_room(&room_id)?;
    // Ourselves first: we surely know the room.
    servers.retain(|server| *server != app.config.server_name);
    servers.insert(0, app.config.server_name.clone());
    Ok(Response::ok(json!({ "room_id": room_id, "servers": servers })))
}

/// `GET /_matrix/federation/v1/publicRooms`: our published room directory.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1publicrooms>.
pub fn public_rooms(app: &App, request: &Request) -> Result<Response> {
    directory::check_directory_server(app, request.query("server"))?;
    let query = PublicRoomsQuery::from_params(request.query("limit"), request.query("since"))?;
    Ok(Response::ok(directory::public_rooms(app, &query)?))
}

/// `POST /_matrix/federation/v1/publicRooms`: our published room directory, filtered.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#post_matrixfederationv1publicrooms>.
pub fn filtered_public_rooms(app: &App, request: &Request) -> Result<Response> {
    let query = PublicRoomsQuery::from_body(&request.json_object()?)?;
    Ok(Response::ok(directory::public_rooms(app, &query)?))
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}`: the room and its direct
/// children, as the asking server's users may see them (`rooms::hierarchy`).
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid>.
pub fn hierarchy(app: &App, request: &Request, origin: &str, room_id: &str) -> Result<Response> {
    let suggested_only = request.query("suggested_only") == Some("true");
    Ok(Response::ok(crate::rooms::hierarchy::server_view(app, origin, room_id, suggested_only)?))
}

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`.
pub fn profile(app: &App, request: &Request) -> Result<Response> {
    let user_id =
        request.query("user_id").ok_or_else(|| Error::MissingParam("`user_id` is required".into()))?;
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
pub fn openid_userinfo(app: &App, request: &Request) -> Result<Response> {
    let token = request.query("access_token").ok_or(Error::MissingToken)?;
    match app.openid_tokens.user_of(token, crate::storage::now_ms()) {
        Some(user_id) => Ok(Response::ok(json!({ "sub": user_id }))),
        None => Err(Error::UnknownToken { soft_logout: false }),
    }
}
