//! Room aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`) and
//! the published room directory (`/directory/list/room/{roomId}`, `/publicRooms`).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#room-aliases> and
//! <https://spec.matrix.org/latest/client-server-api/#published-room-directory>.
//! Other servers' aliases are asked of them over federation.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::RoomAliasId;
use crate::request::{Request, Response};
use crate::rooms::directory::{self, PublicRoomsQuery};
use crate::rooms::visibility::Visibility;
use crate::rooms::{self, Draft};

fn parse_alias(alias: &str) -> Result<RoomAliasId> {
    RoomAliasId::parse(alias).map_err(|error| Error::InvalidParam(format!("room alias {alias}: {error}")))
}

fn is_local_alias(app: &App, alias: &RoomAliasId) -> bool {
    alias.server_name() == app.config.server_name
}

/// Whether the user may change the room's directory listing or delete its
/// aliases: a server admin, or a joined member with the power to send
/// `m.room.canonical_alias` (Synapse's `check_can_change_room_list`).
fn can_change_room_list(app: &App, user_id: &str, is_admin: bool, room_id: &str) -> Result<bool> {
    if is_admin {
        return Ok(true);
    }
    if app.storage().membership(room_id, user_id)?.as_deref() != Some("join") {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    rooms::can_send_state(app, room_id, user_id, "m.room.canonical_alias")
}

/// `PUT /directory/room/{roomAlias}`.
pub fn put_alias(app: &App, request: &Request, alias: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let parsed = parse_alias(alias)?;
    if !is_local_alias(app, &parsed) {
        return Err(Error::InvalidParam("aliases can only be created on this server".into()));
    }
    check_alias_namespaces(app, request, alias)?;
    let body = request.json_object()?;
    let room_id = match body.get("room_id") {
        Some(Value::String(room_id)) => room_id.clone(),
        Some(_) => return Err(Error::BadJson("`room_id` must be a string".into())),
        None => return Err(Error::MissingParam("`room_id` is required".into())),
    };
    if app.storage().room_version(&room_id)?.is_none() {
        return Err(Error::NotFound("unknown room".into()));
    }
    // Synapse's default (`require_membership_for_aliases`): only members alias a room.
    if !owner.is_admin && app.storage().membership(&room_id, &owner.user_id)?.as_deref() != Some("join") {
        return Err(Error::Forbidden("you must be in the room to create an alias for it".into()));
    }
    if !app.storage().create_alias(alias, &room_id, &owner.user_id)? {
        // The spec's answer for a taken alias: 409 with M_UNKNOWN.
        return Err(Error::matrix(409, "M_UNKNOWN", format!("room alias {alias} already exists")));
    }
    Ok(Response::ok(json!({})))
}

/// Aliases in an application service's exclusive namespace are the
/// service's: anyone else gets 400 `M_EXCLUSIVE`, and a service may create
/// only aliases its namespace matches (Synapse's rules).
/// Spec: <https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions>.
pub fn check_alias_namespaces(app: &App, request: &Request, alias: &str) -> Result<()> {
    match app.app_service(request) {
        Some(service) if !service.is_interested_in_alias(alias) => Err(Error::matrix(
            400,
            "M_EXCLUSIVE",
            "This application service has not reserved this kind of alias",
        )),
        Some(_) => Ok(()),
        None if app.app_services().iter().any(|registered| registered.service.claims_alias(alias)) => {
            Err(Error::matrix(400, "M_EXCLUSIVE", "This alias is reserved by an application service"))
        }
        None => Ok(()),
    }
}

/// `GET /directory/room/{roomAlias}`: another server's alias is asked of
/// that server (cached briefly), as a join by that alias does; an unknown
/// local one of an application service's namespace, of that service.
pub async fn get_alias(app: &App, alias: &str) -> Result<Response> {
    let parsed = parse_alias(alias)?;
    let not_found = || Error::NotFound(format!("room alias {alias} not found"));
    if !is_local_alias(app, &parsed) {
        let (room_id, servers) = crate::remote::queries::resolve_remote_alias(app, alias).await?;
        return Ok(Response::ok(json!({ "room_id": room_id, "servers": servers })));
    }
    crate::remote::appservice::query_alias(app, alias).await;
    let (room_id, _) = app.storage().alias(alias)?.ok_or_else(not_found)?;
    Ok(Response::ok(json!({ "room_id": room_id, "servers": servers_in_room(app, &room_id)? })))
}

/// The servers of the room's joined members, this server first.
fn servers_in_room(app: &App, room_id: &str) -> Result<Vec<String>> {
    let mut servers = vec![app.config.server_name.clone()];
    for member in app.storage().members_with(room_id, "join")? {
        if let Some((_, server)) = member.split_once(':') {
            if !servers.iter().any(|known| known == server) {
                servers.push(server.to_owned());
            }
        }
    }
    Ok(servers)
}

/// `DELETE /directory/room/{roomAlias}`: the alias's creator, a server admin,
/// or a member who may send `m.room.canonical_alias` may delete it. When the
/// alias is in the room's `m.room.canonical_alias`, that event is updated too
/// (as Synapse does; a refused update does not undo the deletion).
pub fn delete_alias(app: &App, request: &Request, alias: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let parsed = parse_alias(alias)?;
    let not_found = || Error::NotFound(format!("room alias {alias} not found"));
    if !is_local_alias(app, &parsed) {
        return Err(not_found());
    }
    let (room_id, creator) = app.storage().alias(alias)?.ok_or_else(not_found)?;
    if creator != owner.user_id && !can_change_room_list(app, &owner.user_id, owner.is_admin, &room_id)? {
        return Err(Error::Forbidden("you may not delete this alias".into()));
    }
    app.storage().delete_alias(alias)?;
    if let Err(error) = remove_from_canonical_alias(app, &room_id, &owner.user_id, alias) {
        log::info!("alias {alias} deleted, but {room_id}'s canonical alias was not updated: {error}");
    }
    Ok(Response::ok(json!({})))
}

/// Takes `alias` out of the room's `m.room.canonical_alias` (`alias` and
/// `alt_aliases`), sending a new event as `sender` if anything changed.
pub fn remove_from_canonical_alias(app: &App, room_id: &str, sender: &str, alias: &str) -> Result<()> {
    let Some(Value::Object(mut content)) =
        rooms::current_state_content(app, room_id, "m.room.canonical_alias", "")?
    else {
        return Ok(());
    };
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias) {
        content.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alt_aliases)) = content.get_mut("alt_aliases") {
        let before = alt_aliases.len();
        alt_aliases.retain(|alt| alt.as_str() != Some(alias));
        changed |= alt_aliases.len() != before;
    }
    if changed {
        rooms::send(
            app,
            room_id,
            sender,
            Draft::state("m.room.canonical_alias", "", Value::Object(content)),
            None,
        )?;
    }
    Ok(())
}

/// `GET /rooms/{roomId}/aliases`: for members, or anyone if world readable.
pub fn room_aliases(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if !Visibility::new(app, &owner.user_id).can_read_room(room_id) {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    Ok(Response::ok(json!({ "aliases": app.storage().aliases_of_room(room_id)? })))
}

/// `GET /directory/list/room/{roomId}`.
pub fn get_visibility(app: &App, room_id: &str) -> Result<Response> {
    if app.storage().room_version(room_id)?.is_none() {
        return Err(Error::NotFound("room not found".into()));
    }
    let visibility = if app.storage().room_is_public(room_id)? { "public" } else { "private" };
    Ok(Response::ok(json!({ "visibility": visibility })))
}

/// `PUT /directory/list/room/{roomId}`: needs the power to send
/// `m.room.canonical_alias` (Synapse's rule), or a server admin.
pub fn set_visibility(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let public = match body.get("visibility") {
        None => true,
        Some(Value::String(visibility)) if visibility == "public" => true,
        Some(Value::String(visibility)) if visibility == "private" => false,
        Some(other) => return Err(Error::InvalidParam(format!("unknown visibility {other}"))),
    };
    if app.storage().room_version(room_id)?.is_none() {
        return Err(Error::NotFound("room not found".into()));
    }
    if !can_change_room_list(app, &owner.user_id, owner.is_admin, room_id)? {
        return Err(Error::Forbidden(
            "you need the power to change the canonical alias to edit the room's directory entry".into(),
        ));
    }
    app.storage().set_room_visibility(room_id, public)?;
    Ok(Response::ok(json!({})))
}

/// `GET /publicRooms` (no access token needed, as the spec lists none).
pub fn get_public_rooms(app: &App, request: &Request) -> Result<Response> {
    directory::check_directory_server(app, request.query("server"))?;
    let query = PublicRoomsQuery::from_params(request.query("limit"), request.query("since"))?;
    Ok(Response::ok(directory::public_rooms(app, &query)?))
}

/// `POST /publicRooms` with a filter.
pub fn post_public_rooms(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    directory::check_directory_server(app, request.query("server"))?;
    let query = PublicRoomsQuery::from_body(&request.json_object()?)?;
    Ok(Response::ok(directory::public_rooms(app, &query)?))
}
