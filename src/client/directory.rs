//! Room aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`) and
//! the published room directory (`/directory/list/room/{roomId}`, `/publicRooms`).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#room-aliases> and
//! <https://spec.matrix.org/latest/client-server-api/#published-room-directory>.
//! Other servers' aliases are asked of them over federation.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::protocol::identifiers::{RoomAliasId, ServerName};
use crate::rooms::summary::{self, RoomSummary};
use crate::rooms::visibility::Visibility;
use crate::rooms::{self, Draft};

/// At most this many rooms in one `/publicRooms` page (and the page size when
/// the client gives none): every listed room costs a few state reads.
const MAX_PUBLIC_ROOMS_PAGE: usize = 500;

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
        let (room_id, servers) = crate::federation::queries::resolve_remote_alias(app, alias).await?;
        return Ok(Response::ok(json!({ "room_id": room_id, "servers": servers })));
    }
    crate::federation::appservice::query_alias(app, alias).await;
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

/// What `/publicRooms` was asked for.
struct PublicRoomsQuery {
    limit: usize,
    since: Option<String>,
    search_term: Option<String>,
    /// `None`: every type; `Some`: these types, `None` inside standing for rooms without one.
    room_types: Option<Vec<Option<String>>>,
    third_party_instance_id: Option<String>,
}

/// `GET /publicRooms` (no access token needed, as the spec lists none).
pub fn get_public_rooms(app: &App, request: &Request) -> Result<Response> {
    check_directory_server(app, request.query("server"))?;
    let limit = match request.query("limit") {
        Some(limit) => {
            Some(limit.parse().map_err(|_| Error::InvalidParam("`limit` must be an integer".into()))?)
        }
        None => None,
    };
    let query = PublicRoomsQuery {
        limit: page_size(limit),
        since: request.query("since").map(str::to_owned),
        search_term: None,
        room_types: None,
        third_party_instance_id: None,
    };
    public_rooms(app, &query)
}

/// `POST /publicRooms` with a filter.
pub fn post_public_rooms(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    check_directory_server(app, request.query("server"))?;
    filtered_public_rooms(app, request)
}

/// The directory page a `POST /publicRooms` body asks for (clients, and other
/// servers through federation).
pub fn filtered_public_rooms(app: &App, request: &Request) -> Result<Response> {
    let body = request.json_object()?;
    let limit = match body.get("limit") {
        None | Some(Value::Null) => None,
        Some(limit) => {
            Some(limit.as_i64().ok_or_else(|| Error::BadJson("`limit` must be an integer".into()))?)
        }
    };
    let since = match body.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(since)) => Some(since.clone()),
        Some(_) => return Err(Error::BadJson("`since` must be a string".into())),
    };
    let filter = body.get("filter").cloned().unwrap_or(Value::Null);
    let search_term = filter
        .get("generic_search_term")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(str::to_owned);
    let room_types = match filter.get("room_types") {
        None | Some(Value::Null) => None,
        Some(Value::Array(types)) => Some(
            types
                .iter()
                .map(|kind| match kind {
                    Value::Null => Ok(None),
                    Value::String(kind) => Ok(Some(kind.clone())),
                    _ => Err(Error::BadJson("`room_types` holds strings or null".into())),
                })
                .collect::<Result<_>>()?,
        ),
        Some(_) => return Err(Error::BadJson("`room_types` must be an array".into())),
    };
    let third_party_instance_id =
        body.get("third_party_instance_id").and_then(Value::as_str).map(str::to_owned);
    let query =
        PublicRoomsQuery { limit: page_size(limit), since, search_term, room_types, third_party_instance_id };
    public_rooms(app, &query)
}

fn page_size(limit: Option<i64>) -> usize {
    match limit {
        Some(limit) if limit > 0 => (limit as usize).min(MAX_PUBLIC_ROOMS_PAGE),
        _ => MAX_PUBLIC_ROOMS_PAGE,
    }
}

/// Only our own directory can be listed until federation exists.
fn check_directory_server(app: &App, server: Option<&str>) -> Result<()> {
    let Some(server) = server else { return Ok(()) };
    ServerName::parse(server).map_err(|error| Error::InvalidParam(format!("server {server}: {error}")))?;
    if server == app.config.server_name {
        return Ok(());
    }
    // FIXME: ask the other server over federation (`GET /_matrix/federation/v1/publicRooms`).
    Err(Error::matrix(
        502,
        "M_UNKNOWN",
        format!("cannot fetch the room directory of {server}: federation is not available yet"),
    ))
}

fn public_rooms(app: &App, query: &PublicRoomsQuery) -> Result<Response> {
    let mut listed = Vec::new();
    // Application-service networks: we host none, so a named one lists nothing.
    if query.third_party_instance_id.is_none() {
        let published = app.storage().public_rooms()?;
        for room_id in published {
            let Some(summary) = summary::summary(app, &room_id)? else { continue };
            if is_listable(&summary) && matches_query(&summary, query) {
                listed.push(summary);
            }
        }
    }
    // Largest rooms first, then by room ID: a stable order for paging.
    let mut keys: Vec<PageKey> = listed.iter().map(PageKey::of).collect();
    keys.sort();
    listed.sort_by_key(PageKey::of);
    let page = Page::select(&keys, query.since.as_deref(), query.limit)?;
    let chunk: Vec<Value> =
        listed[page.start..page.end].iter().map(|room| Value::Object(room.directory_json())).collect();
    let mut answer = json!({ "chunk": chunk, "total_room_count_estimate": listed.len() });
    if let Some(next) = page.next_batch {
        answer["next_batch"] = json!(next);
    }
    if let Some(prev) = page.prev_batch {
        answer["prev_batch"] = json!(prev);
    }
    Ok(Response::ok(answer))
}

/// Synapse lists a published room only while someone is joined and it can be
/// joined, knocked on, or read by anyone.
fn is_listable(summary: &RoomSummary) -> bool {
    summary.num_joined_members > 0
        && (matches!(summary.join_rule.as_str(), "public" | "knock" | "knock_restricted")
            || summary.world_readable)
}

fn matches_query(summary: &RoomSummary, query: &PublicRoomsQuery) -> bool {
    if let Some(types) = &query.room_types {
        if !types.contains(&summary.room_type) {
            return false;
        }
    }
    query.search_term.as_deref().is_none_or(|term| summary.matches(term))
}

/// A room's place in the directory order: most joined members first, then room ID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PageKey {
    members: std::cmp::Reverse<usize>,
    room_id: String,
}

impl PageKey {
    fn of(summary: &RoomSummary) -> PageKey {
        PageKey { members: std::cmp::Reverse(summary.num_joined_members), room_id: summary.room_id.clone() }
    }

    /// `n<members>_<room>` pages forward from after this key, `p<members>_<room>`
    /// backward from before it. Keys, not offsets, so that a room joining or
    /// leaving the directory between two requests shifts no other room.
    fn token(&self, forward: bool) -> String {
        format!("{}{}_{}", if forward { 'n' } else { 'p' }, self.members.0, self.room_id)
    }

    fn parse_token(token: &str) -> Option<(bool, PageKey)> {
        let forward = match token.chars().next()? {
            'n' => true,
            'p' => false,
            _ => return None,
        };
        let (members, room_id) = token[1..].split_once('_')?;
        Some((
            forward,
            PageKey { members: std::cmp::Reverse(members.parse().ok()?), room_id: room_id.to_owned() },
        ))
    }
}

/// One page of a sorted list: `start..end` and the tokens around it.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    start: usize,
    end: usize,
    next_batch: Option<String>,
    prev_batch: Option<String>,
}

impl Page {
    fn select(keys: &[PageKey], since: Option<&str>, limit: usize) -> Result<Page> {
        let (start, end) = match since {
            None => (0, limit.min(keys.len())),
            Some(token) => {
                let (forward, key) = PageKey::parse_token(token)
                    .ok_or_else(|| Error::InvalidParam("unknown pagination token".into()))?;
                if forward {
                    let start = keys.partition_point(|other| *other <= key);
                    (start, (start + limit).min(keys.len()))
                } else {
                    let end = keys.partition_point(|other| *other < key);
                    (end.saturating_sub(limit), end)
                }
            }
        };
        Ok(Page {
            start,
            end,
            next_batch: (end < keys.len() && start < end).then(|| keys[end - 1].token(true)),
            prev_batch: (start > 0 && start < keys.len()).then(|| keys[start].token(false)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rooms: &[(usize, &str)]) -> Vec<PageKey> {
        let mut keys: Vec<PageKey> = rooms
            .iter()
            .map(|(members, room)| PageKey {
                members: std::cmp::Reverse(*members),
                room_id: room.to_string(),
            })
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn forward_paging_visits_each_room_once_and_back_again() {
        let keys = keys(&[(1, "!a"), (5, "!b"), (5, "!c"), (2, "!d"), (1, "!e")]);
        let mut seen = Vec::new();
        let mut since = None;
        let mut pages = Vec::new();
        loop {
            let page = Page::select(&keys, since.as_deref(), 2).unwrap();
            seen.extend(keys[page.start..page.end].iter().map(|key| key.room_id.clone()));
            pages.push((page.start, page.end, page.prev_batch.clone()));
            match page.next_batch {
                Some(next) => since = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["!b", "!c", "!d", "!a", "!e"]);
        // The last page's prev_batch leads back to the page before it.
        let (_, _, prev) = pages.last().unwrap().clone();
        let back = Page::select(&keys, prev.as_deref(), 2).unwrap();
        assert_eq!((back.start, back.end), (2, 4));
        assert_eq!(Page::select(&keys, None, 2).unwrap().prev_batch, None);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let keys = keys(&[(1, "!a")]);
        for token in ["", "x1_!a", "nfoo_!a", "n1"] {
            assert!(Page::select(&keys, Some(token), 2).is_err(), "{token}");
        }
    }

    #[test]
    fn room_ids_with_underscores_survive_the_token() {
        let key = PageKey { members: std::cmp::Reverse(3), room_id: "!a_b:x_y".into() };
        assert_eq!(PageKey::parse_token(&key.token(true)), Some((true, key)));
    }
}
