//! Queries we make of other servers: their room aliases, profiles and public
//! room directories.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#querying-for-information>.

use std::time::Duration;

use http_types::Method;
use serde_json::Value;

use super::client;
use super::pdus::{encode, server_of};
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::request::{Request, Response};

/// How long a remote alias's room stays cached: long enough that Element's
/// lookup before a join and the join itself ask the alias's server once,
/// short enough that a moved alias is seen soon.
const ALIAS_TTL: Duration = Duration::from_secs(60);

/// How long "no such alias" stays cached (a client retrying a typo must not
/// make us ask the other server each time; a new alias shows up soon).
const MISSING_ALIAS_TTL: Duration = Duration::from_secs(15);

/// The largest alias answer we read: a room ID and a list of server names.
const MAX_ALIAS_ANSWER_BYTES: usize = 64 << 10;

/// At most this many of the alias server's `servers` are kept: a join tries
/// them in turn, and a few resident servers are enough.
const MAX_ALIAS_SERVERS: usize = 32;

/// A remote alias's answer: `Some((room_id, servers))`, or `None` when the
/// alias's server said it does not know the alias.
pub type AliasAnswer = Option<(String, Vec<String>)>;

/// Resolves a remote room alias through its server: `(room_id, servers)`,
/// the alias's server first among the servers. Answers (and 404s) are
/// cached briefly in a bounded cache.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1querydirectory>.
pub async fn resolve_remote_alias(app: &Remote, alias: &str) -> Result<(String, Vec<String>)> {
    let not_found = || Error::NotFound(format!("room alias {alias} not found"));
    if let Some(cached) = app.federation.remote_aliases.get(alias) {
        return cached.ok_or_else(not_found);
    }
    let server = server_of(alias).ok_or_else(|| Error::InvalidParam(format!("{alias} is not an alias")))?;
    let path = format!("/_matrix/federation/v1/query/directory?room_alias={}", encode(alias));
    let (status, answer) =
        client::request_with_limit(app, server, Method::Get, &path, None, MAX_ALIAS_ANSWER_BYTES).await?;
    let parsed =
        match status {
            200 => Some(parse_alias_answer(server, &answer).ok_or_else(|| {
                Error::matrix(502, "M_UNKNOWN", format!("{server} sent a bad alias answer"))
            })?),
            404 => None,
            _ => {
                return Err(Error::matrix(
                    502,
                    "M_UNKNOWN",
                    format!("{server} answered the alias query with {status}"),
                ));
            }
        };
    let ttl = if parsed.is_some() { ALIAS_TTL } else { MISSING_ALIAS_TTL };
    app.federation.remote_aliases.insert(alias, parsed.clone(), ttl);
    parsed.ok_or_else(not_found)
}

/// The room ID and servers of a `query/directory` answer from `server`
/// (which comes first among the servers); `None` if there is no valid room ID.
fn parse_alias_answer(server: &str, answer: &Value) -> Option<(String, Vec<String>)> {
    let room_id = answer.get("room_id").and_then(Value::as_str)?;
    crate::protocol::identifiers::RoomId::parse(room_id).ok()?;
    let mut servers = vec![server.to_string()];
    let listed = answer.get("servers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for listed in listed.iter().filter_map(Value::as_str) {
        if servers.len() >= MAX_ALIAS_SERVERS {
            break;
        }
        if crate::protocol::identifiers::ServerName::parse(listed).is_ok()
            && !servers.iter().any(|known| known == listed)
        {
            servers.push(listed.to_string());
        }
    }
    Some((room_id.to_string(), servers))
}

/// `GET /_matrix/federation/v1/openid/userinfo?access_token=`.
/// `GET/POST /publicRooms?server=...` for another server: its directory,
/// fetched over federation and passed on.
pub async fn remote_public_rooms(app: &Remote, request: &Request) -> Result<Response> {
    let server = request.query("server").unwrap_or_default().to_string();
    crate::protocol::identifiers::ServerName::parse(&server)
        .map_err(|error| Error::InvalidParam(format!("server {server}: {error}")))?;
    let (method, path, body) = if request.method == Method::Post {
        app.authenticate(request)?;
        let body = Value::Object(request.json_object()?);
        (Method::Post, "/_matrix/federation/v1/publicRooms".to_string(), Some(body))
    } else {
        let mut query = Vec::new();
        for key in ["limit", "since"] {
            if let Some(value) = request.query(key) {
                query.push(format!("{key}={}", encode(value)));
            }
        }
        (Method::Get, format!("/_matrix/federation/v1/publicRooms?{}", query.join("&")), None)
    };
    let (status, answer) = client::request(app, &server, method, &path, body).await?;
    if status != 200 {
        return Err(Error::matrix(
            502,
            "M_UNKNOWN",
            format!("{server} answered its room directory with {status}"),
        ));
    }
    Ok(Response::ok(answer))
}

/// Fetches a remote user's profile (or one field of it).
pub async fn remote_profile(app: &Remote, user_id: &str, field: Option<&str>) -> Result<Value> {
    let server =
        server_of(user_id).ok_or_else(|| Error::InvalidParam(format!("{user_id} is not a user ID")))?;
    let mut path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode(user_id));
    if let Some(field) = field {
        path.push_str(&format!("&field={}", encode(field)));
    }
    let (status, answer) = client::request(app, server, Method::Get, &path, None).await?;
    match status {
        200 => Ok(answer),
        404 => Err(Error::NotFound("profile not found".into())),
        _ => {
            Err(Error::matrix(502, "M_UNKNOWN", format!("{server} answered the profile query with {status}")))
        }
    }
}
