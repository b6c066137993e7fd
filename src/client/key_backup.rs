//! Server-side key backups: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`. Each user sees only their own
//! backups. The keys are encrypted by the client; the server stores them and
//! keeps the better of two uploads of one session.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-side-key-backups>.

use std::collections::BTreeMap;

use http_types::Method;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::key_backup::{KeyBackupData, KeysBackup, RoomKeyBackup};
use crate::request::{Request, Response};
use crate::storage::{BackedUpSession, BackupVersion, KeyScope};

fn unknown_version() -> Error {
    Error::NotFound("Unknown backup version".into())
}

/// Versions are the integers we hand out; any other text names no version.
fn parse_version(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|version| 0 < *version)
}

fn version_json(backup: &BackupVersion) -> Result<Value> {
    let auth_data: Value = serde_json::from_str(&backup.auth_data)
        .map_err(|error| Error::Internal(format!("stored auth_data: {error}")))?;
    Ok(json!({
        "algorithm": backup.algorithm,
        "auth_data": auth_data,
        "count": backup.count,
        "etag": backup.etag.to_string(),
        "version": backup.version.to_string(),
    }))
}

/// The `algorithm` and `auth_data` of a version body.
fn algorithm_and_auth_data(body: &Map<String, Value>) -> Result<(&str, String)> {
    let algorithm = match body.get("algorithm") {
        Some(Value::String(algorithm)) if !algorithm.is_empty() => algorithm.as_str(),
        Some(_) => return Err(Error::BadJson("algorithm must be a string".into())),
        None => return Err(Error::MissingParam("algorithm is required".into())),
    };
    // The spec describes `auth_data` as an object, but Synapse stores any JSON
    // value as given (older clients and tests send an opaque string) and the
    // server never reads it, so any value is kept and answered back as it came.
    // Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3room_keysversion>.
    let auth_data = match body.get("auth_data") {
        Some(auth_data) => auth_data.to_string(),
        None => return Err(Error::MissingParam("auth_data is required".into())),
    };
    Ok((algorithm, auth_data))
}

/// `POST /room_keys/version` and `GET /room_keys/version` (the latest).
pub fn versions(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    match request.method {
        Method::Post => {
            let body = request.json_object()?;
            let (algorithm, auth_data) = algorithm_and_auth_data(&body)?;
            let version = app.storage().create_key_backup_version(&owner.user_id, algorithm, &auth_data)?;
            Ok(Response::ok(json!({"version": version.to_string()})))
        }
        Method::Get => {
            let latest = app.storage().key_backup_version(&owner.user_id, None)?;
            let latest = latest.ok_or_else(|| Error::NotFound("No current backup version".into()))?;
            Ok(Response::ok(version_json(&latest)?))
        }
        _ => Err(Error::Unrecognized { method_not_allowed: true }),
    }
}

/// `GET/PUT/DELETE /room_keys/version/{version}`.
pub fn version(app: &App, request: &Request, version: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let number = parse_version(version);
    match request.method {
        Method::Get => {
            let backup = match number {
                Some(number) => app.storage().key_backup_version(&owner.user_id, Some(number))?,
                None => None,
            };
            Ok(Response::ok(version_json(&backup.ok_or_else(unknown_version)?)?))
        }
        Method::Put => {
            let body = request.json_object()?;
            let (algorithm, auth_data) = algorithm_and_auth_data(&body)?;
            if let Some(body_version) = body.get("version") {
                if body_version.as_str() != Some(version) {
                    return Err(Error::InvalidParam("version in body does not match".into()));
                }
            }
            let number = number.ok_or_else(unknown_version)?;
            let backup = app.storage().key_backup_version(&owner.user_id, Some(number))?;
            let backup = backup.ok_or_else(unknown_version)?;
            if backup.algorithm != algorithm {
                return Err(Error::InvalidParam("Algorithm does not match".into()));
            }
            app.storage().set_key_backup_auth_data(&owner.user_id, number, &auth_data)?;
            Ok(Response::ok(json!({})))
        }
        Method::Delete => {
            let number = number.ok_or_else(unknown_version)?;
            // Spec: deleting a version deleted before succeeds.
            if !app.storage().delete_key_backup_version(&owner.user_id, number)? {
                return Err(unknown_version());
            }
            Ok(Response::ok(json!({})))
        }
        _ => Err(Error::Unrecognized { method_not_allowed: true }),
    }
}

/// `PUT/GET/DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`; `scope` is
/// the path after `keys`.
pub fn keys(app: &App, request: &Request, scope: &[&str]) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let scope = match *scope {
        [] => KeyScope::All,
        [room_id] => KeyScope::Room(room_id),
        [room_id, session_id] => KeyScope::Session(room_id, session_id),
        _ => return Err(Error::Unrecognized { method_not_allowed: false }),
    };
    let version =
        request.query("version").ok_or_else(|| Error::MissingParam("version is required".into()))?;
    let user_id = owner.user_id.as_str();
    match request.method {
        Method::Put => {
            let current = writable_version(app, user_id, version)?;
            let body: Value = request.json()?;
            let uploaded = uploaded_keys(body, scope)?;
            let keys = uploaded
                .iter()
                .map(|(room_id, session_id, data)| (room_id.as_str(), session_id.as_str(), data));
            app.storage().put_backup_keys(user_id, current, keys)?;
            update_answer(app, user_id, current)
        }
        Method::Get => {
            let number = readable_version(app, user_id, version)?;
            let stored = app.storage().backup_keys(user_id, number, scope)?;
            Ok(Response::ok(keys_json(stored, scope)?))
        }
        Method::Delete => {
            let number = readable_version(app, user_id, version)?;
            app.storage().delete_backup_keys(user_id, number, scope)?;
            update_answer(app, user_id, number)
        }
        _ => Err(Error::Unrecognized { method_not_allowed: true }),
    }
}

/// The version keys may be written to: it must be the current one. Spec:
/// any other version is 403 `M_WRONG_ROOM_KEYS_VERSION` naming the current
/// one (Synapse answers 404 for a version that does not exist). With no
/// backup at all there is no current version to name: 404, as in Synapse.
fn writable_version(app: &App, user_id: &str, version: &str) -> Result<i64> {
    let current = app.storage().key_backup_version(user_id, None)?;
    let current = current.ok_or_else(|| Error::NotFound("No current backup version".into()))?;
    if parse_version(version) != Some(current.version) {
        return Err(Error::WrongRoomKeysVersion { current_version: current.version.to_string() });
    }
    Ok(current.version)
}

/// A live version keys may be read from or deleted in.
fn readable_version(app: &App, user_id: &str, version: &str) -> Result<i64> {
    let number = parse_version(version).ok_or_else(unknown_version)?;
    let backup = app.storage().key_backup_version(user_id, Some(number))?;
    Ok(backup.ok_or_else(unknown_version)?.version)
}

/// The `{"etag", "count"}` answer of a change to a version's keys.
fn update_answer(app: &App, user_id: &str, version: i64) -> Result<Response> {
    let backup = app.storage().key_backup_version(user_id, Some(version))?;
    let backup = backup.ok_or_else(unknown_version)?;
    Ok(Response::ok(json!({"etag": backup.etag.to_string(), "count": backup.count})))
}

/// The body of a PUT at each of the three levels as `(room, session, key)`s.
fn uploaded_keys(body: Value, scope: KeyScope<'_>) -> Result<Vec<(String, String, KeyBackupData)>> {
    let bad_json = |error: serde_json::Error| Error::BadJson(error.to_string());
    let mut keys = Vec::new();
    let mut add_room = |room_id: &str, room: RoomKeyBackup| {
        keys.extend(
            room.sessions.into_iter().map(|(session_id, data)| (room_id.to_owned(), session_id, data)),
        );
    };
    match scope {
        KeyScope::All => {
            let all: KeysBackup = serde_json::from_value(body).map_err(bad_json)?;
            all.rooms.into_iter().for_each(|(room_id, room)| add_room(&room_id, room));
        }
        KeyScope::Room(room_id) => {
            let room: RoomKeyBackup = serde_json::from_value(body).map_err(bad_json)?;
            add_room(room_id, room);
        }
        KeyScope::Session(room_id, session_id) => {
            let data: KeyBackupData = serde_json::from_value(body).map_err(bad_json)?;
            keys.push((room_id.to_owned(), session_id.to_owned(), data));
        }
    }
    Ok(keys)
}

/// The GET answer at each level: `{"rooms": {..}}`, `{"sessions": {..}}`
/// (empty for a room without keys), or one key (404 when missing).
fn keys_json(stored: Vec<BackedUpSession>, scope: KeyScope<'_>) -> Result<Value> {
    let mut rooms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for session in stored {
        let session_data: Value = serde_json::from_str(&session.session_data)
            .map_err(|error| Error::Internal(format!("stored session_data: {error}")))?;
        let key = json!({
            "first_message_index": session.first_message_index,
            "forwarded_count": session.forwarded_count,
            "is_verified": session.is_verified,
            "session_data": session_data,
        });
        rooms.entry(session.room_id).or_default().insert(session.session_id, key);
    }
    Ok(match scope {
        KeyScope::All => {
            let rooms: Map<String, Value> = rooms
                .into_iter()
                .map(|(room_id, sessions)| (room_id, json!({"sessions": sessions})))
                .collect();
            json!({"rooms": rooms})
        }
        KeyScope::Room(_) => json!({"sessions": rooms.into_values().next().unwrap_or_default()}),
        KeyScope::Session(..) => {
            let key = rooms.into_values().next().and_then(|sessions| sessions.into_iter().next());
            key.map(|(_, key)| key).ok_or_else(|| Error::NotFound("No room_keys found".into()))?
        }
    })
}
