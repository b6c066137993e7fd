//! `/keys/*`: device key upload, query and one-time key claims (local users
//! from storage, remote users from the cache of their device lists or from
//! their servers over federation),
//! `/keys/changes`, and cross-signing key and signature uploads. The server
//! stores and relays public keys only.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#key-management-api>,
//! <https://spec.matrix.org/latest/client-server-api/#cross-signing>.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::sync::parse_token;
use super::uia;
use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::UserId;
use crate::protocol::signing::{public_key_from_base64, verify_json};
use crate::remote::e2ee as remote;
use crate::request::{Request, Response};
use crate::rooms::e2ee::{self, MASTER, SELF_SIGNING, USER_SIGNING, server_of};
use crate::rooms::remote_devices;

/// The algorithm clients count one-time keys in; always reported, even at
/// zero, as Synapse does (clients top up when it is missing or low).
const SIGNED_CURVE25519: &str = "signed_curve25519";
/// A bound on one upload: clients send 50 or so keys at a time.
const MAX_ONE_TIME_KEYS_PER_UPLOAD: usize = 1_000;

fn object<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Map<String, Value>>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(Error::BadJson(format!("`{field}` must be an object"))),
    }
}

/// Whether `value` is a map of strings.
fn is_string_map(value: &Value) -> bool {
    value.as_object().is_some_and(|map| map.values().all(Value::is_string))
}

/// Whether `value` is `{user: {key_id: signature}}`, all strings.
fn is_signature_map(value: &Value) -> bool {
    value.as_object().is_some_and(|map| map.values().all(is_string_map))
}

/// Checks the shape of uploaded device keys, as Synapse does: the fields the
/// spec requires, with their types (`M_BAD_JSON`). The key and signature
/// strings are stored as given, as Synapse stores them: clients verify the
/// signatures, the server need not, and rejecting keys it cannot parse would
/// refuse algorithms it does not know.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysupload>.
fn check_device_keys_shape(keys: &Map<String, Value>) -> Result<()> {
    type Check = fn(&Value) -> bool;
    let field_ok = |field: &str, check: Check| keys.get(field).is_some_and(check);
    let shapes: [(&str, Check); 5] = [
        ("user_id", Value::is_string),
        ("device_id", Value::is_string),
        ("algorithms", |value| value.as_array().is_some_and(|list| list.iter().all(Value::is_string))),
        ("keys", is_string_map),
        ("signatures", is_signature_map),
    ];
    for (field, check) in shapes {
        if !field_ok(field, check) {
            return Err(Error::BadJson(format!("device_keys.{field} is missing or has the wrong type")));
        }
    }
    Ok(())
}

/// Checks a map of one-time or fallback keys, as Synapse does: each ID is
/// `<algorithm>:<key id>` (one colon), each key a string or an object with a
/// string `key`, optionally `fallback: bool` and string `signatures`.
fn check_key_map_shape(field: &str, keys: &Map<String, Value>) -> Result<()> {
    for (key_id, key) in keys {
        if key_id.split(':').count() != 2 {
            return Err(Error::BadJson(format!("{field}: the key ID {key_id:?} is not <algorithm>:<id>")));
        }
        let valid = match key {
            Value::String(_) => true,
            Value::Object(object) => {
                object.get("key").is_some_and(Value::is_string)
                    && object
                        .get("fallback")
                        .is_none_or(|fallback| fallback.is_boolean() || fallback.is_null())
                    && object.get("signatures").is_none_or(is_signature_map)
            }
            _ => false,
        };
        if !valid {
            return Err(Error::BadJson(format!("{field}: the key {key_id:?} has the wrong shape")));
        }
    }
    Ok(())
}

/// `POST /keys/upload`.
pub fn upload(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let (user_id, device_id) = (owner.user_id.as_str(), owner.device_id.as_str());
    if body.get("device_keys").is_some_and(Value::is_null) {
        return Err(Error::BadJson("`device_keys` must be an object when present".into()));
    }
    let fallback_field = match body.get("fallback_keys") {
        None | Some(Value::Null) => "org.matrix.msc2732.fallback_keys",
        Some(_) => "fallback_keys",
    };
    for field in ["one_time_keys", fallback_field] {
        if let Some(keys) = object(&body, field)? {
            check_key_map_shape(field, keys)?;
        }
    }
    if let Some(keys) = object(&body, "device_keys")? {
        check_device_keys_shape(keys)?;
        // Synapse answers M_BAD_JSON here too.
        if keys.get("user_id").and_then(Value::as_str) != Some(user_id)
            || keys.get("device_id").and_then(Value::as_str) != Some(device_id)
        {
            return Err(Error::BadJson("the device keys must name your user and this device".into()));
        }
        let keys = Value::Object(keys.clone());
        let text = keys.to_string();
        if app.storage().device_keys(user_id, device_id)?.as_deref() != Some(text.as_str()) {
            app.storage().set_device_keys(user_id, device_id, &text)?;
            e2ee::local_devices_changed(app, user_id, &[device_id.to_string()], false)?;
        }
    }
    if let Some(keys) = object(&body, "one_time_keys")? {
        if keys.len() > MAX_ONE_TIME_KEYS_PER_UPLOAD {
            return Err(Error::TooLarge(format!(
                "at most {MAX_ONE_TIME_KEYS_PER_UPLOAD} one-time keys at once"
            )));
        }
        let keys: Vec<(String, String)> =
            keys.iter().map(|(id, key)| (id.clone(), key.to_string())).collect();
        app.storage().add_one_time_keys(user_id, device_id, &keys)?;
    }
    // Before Matrix 1.2 fallback keys were uploaded under the MSC2732 name.
    let fallback = match object(&body, "fallback_keys")? {
        Some(keys) => Some(keys),
        None => object(&body, "org.matrix.msc2732.fallback_keys")?,
    };
    for (key_id, key) in fallback.into_iter().flatten() {
        app.storage().set_fallback_key(user_id, device_id, key_id, &key.to_string())?;
    }
    Ok(Response::ok(json!({ "one_time_key_counts": one_time_key_counts(app, user_id, device_id)? })))
}

/// `{algorithm: count}` for a device, with `signed_curve25519` always present.
pub fn one_time_key_counts(app: &App, user_id: &str, device_id: &str) -> Result<Value> {
    let mut counts = Map::new();
    counts.insert(SIGNED_CURVE25519.into(), json!(0));
    let stored = app.storage().one_time_key_counts(user_id, device_id)?;
    for (algorithm, count) in stored {
        counts.insert(algorithm, json!(count));
    }
    Ok(Value::Object(counts))
}

/// At most this many remote users' device lists are fetched into the cache
/// for one `/keys/query` (one request each, one after the other); the
/// others are asked of their servers in one batched query each, uncached.
const MAX_LIST_FETCHES_PER_QUERY: usize = 20;

/// A remote user's keys from the cache, after fetching their device list
/// into it if it is not there or stale; `None` when the list is not
/// cacheable (no shared room: no updates would reach us), when this query
/// has used its fetches, or when the fetch failed (then `failures` says so).
async fn cached_remote_keys(
    app: &App,
    requester: &str,
    user_id: &str,
    device_ids: &[String],
    fetches_left: &mut usize,
    failures: &mut Map<String, Value>,
) -> Result<Option<e2ee::UserKeys>> {
    let Some(server) = server_of(user_id) else { return Ok(None) };
    if !remote_devices::cacheable(app, user_id)? {
        return Ok(None);
    }
    if let Some(keys) = remote_devices::cached_keys(app, requester, user_id, device_ids)? {
        return Ok(Some(keys));
    }
    if *fetches_left == 0 || failures.contains_key(server) {
        return Ok(None);
    }
    *fetches_left -= 1;
    match remote::fetch_device_list(app, user_id).await {
        Ok(()) => remote_devices::cached_keys(app, requester, user_id, device_ids),
        Err(error) => {
            log::info!("device list request to {server} failed: {error}");
            failures.insert(
                server.to_string(),
                json!({ "errcode": "M_UNAVAILABLE", "error": error.to_string() }),
            );
            Ok(None)
        }
    }
}

/// `POST /keys/query`: local users' keys from storage; remote users' from
/// the cache of their device lists (fetched when missing or stale), or from
/// their servers when they share no room with one of ours.
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3keysquery>.
pub async fn query(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let wanted = object(&body, "device_keys")?.cloned().unwrap_or_default();
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    let mut failures = Map::new();
    let mut by_server: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut fetches_left = MAX_LIST_FETCHES_PER_QUERY;
    for (user_id, devices) in &wanted {
        let device_ids: Vec<String> = serde_json::from_value(devices.clone()).unwrap_or_default();
        // A malformed user ID has no keys, and the server it names is never asked.
        if UserId::parse(user_id).is_err() {
            continue;
        }
        let keys = if app.is_local_user(user_id) {
            e2ee::local_keys(app, Some(&owner.user_id), user_id, &device_ids)?
        } else {
            let cached = cached_remote_keys(
                app,
                &owner.user_id,
                user_id,
                &device_ids,
                &mut fetches_left,
                &mut failures,
            )
            .await?;
            match cached {
                Some(keys) => keys,
                None => {
                    if let Some(server) = server_of(user_id) {
                        by_server
                            .entry(server.to_string())
                            .or_default()
                            .insert(user_id.clone(), json!(device_ids));
                    }
                    continue;
                }
            }
        };
        device_keys.insert(user_id.clone(), Value::Object(keys.devices));
        if let Some(key) = keys.master {
            master_keys.insert(user_id.clone(), key);
        }
        if let Some(key) = keys.self_signing {
            self_signing_keys.insert(user_id.clone(), key);
        }
        if let Some(key) = keys.user_signing {
            user_signing_keys.insert(user_id.clone(), key);
        }
    }
    // A server that just failed a device list request is not asked again.
    by_server.retain(|server, _| !failures.contains_key(server));
    for (server, users) in by_server {
        match remote::query_keys(app, &server, users.clone()).await {
            Ok(answer) => {
                for (field, into) in [
                    ("device_keys", &mut device_keys),
                    ("master_keys", &mut master_keys),
                    ("self_signing_keys", &mut self_signing_keys),
                ] {
                    let Some(found) = answer.get(field).and_then(Value::as_object) else { continue };
                    // A server answers for its own users only.
                    for (user_id, keys) in found {
                        if users.contains_key(user_id) {
                            let mut keys = keys.clone();
                            if field == "master_keys" {
                                if let Some(public) = e2ee::cross_signing_public_key(&keys) {
                                    e2ee::merge_signatures(
                                        app,
                                        Some(&owner.user_id),
                                        user_id,
                                        &public,
                                        &mut keys,
                                    )?;
                                }
                            }
                            into.insert(user_id.clone(), keys);
                        }
                    }
                }
            }
            Err(error) => {
                log::info!("keys query to {server} failed: {error}");
                failures.insert(server, json!({ "errcode": "M_UNAVAILABLE", "error": error.to_string() }));
            }
        }
    }
    Ok(Response::ok(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
        "failures": failures,
    })))
}

/// `POST /keys/claim`.
pub async fn claim(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    let body = request.json_object()?;
    let wanted = object(&body, "one_time_keys")?.cloned().unwrap_or_default();
    let mut one_time_keys = e2ee::claim_local(app, &wanted)?;
    let mut failures = Map::new();
    let mut by_server: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user_id, devices) in &wanted {
        let remote = !app.is_local_user(user_id) && UserId::parse(user_id).is_ok();
        if let Some(server) = server_of(user_id).filter(|_| remote) {
            by_server.entry(server.to_string()).or_default().insert(user_id.clone(), devices.clone());
        }
    }
    for (server, users) in by_server {
        match remote::claim_keys(app, &server, users.clone()).await {
            Ok(answer) => {
                let found =
                    answer.get("one_time_keys").and_then(Value::as_object).cloned().unwrap_or_default();
                for (user_id, keys) in found {
                    if users.contains_key(&user_id) {
                        one_time_keys.insert(user_id, keys);
                    }
                }
            }
            Err(error) => {
                log::info!("key claim to {server} failed: {error}");
                failures.insert(server, json!({ "errcode": "M_UNAVAILABLE", "error": error.to_string() }));
            }
        }
    }
    Ok(Response::ok(json!({ "one_time_keys": one_time_keys, "failures": failures })))
}

/// `GET /keys/changes?from=&to=`.
pub fn changes(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let from = request.query("from").ok_or_else(|| Error::MissingParam("`from` is required".into()))?;
    let from = parse_token(from)?.stream;
    let to = match request.query("to") {
        Some(to) => parse_token(to)?.stream,
        None => app.current_stream_id(),
    };
    let (changed, left) = e2ee::device_list_delta(app, &owner.user_id, from, to)?;
    Ok(Response::ok(json!({ "changed": changed, "left": left })))
}

/// Checks an uploaded cross-signing key: its owner, its usage, one ed25519 key.
fn check_cross_signing_key(key: &Value, user_id: &str, usage: &str) -> Result<String> {
    if key.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(Error::InvalidParam(format!("the {usage} key must belong to {user_id}")));
    }
    let usages = key.get("usage").and_then(Value::as_array);
    if !usages.is_some_and(|usages| usages.iter().any(|u| u.as_str() == Some(usage))) {
        return Err(Error::InvalidParam(format!("the {usage} key must have usage {usage}")));
    }
    let keys = key.get("keys").and_then(Value::as_object).filter(|keys| keys.len() == 1);
    let public = keys
        .and_then(|keys| keys.iter().next())
        .filter(|(key_id, _)| key_id.starts_with("ed25519:"))
        .and_then(|(_, public)| public.as_str())
        .ok_or_else(|| Error::InvalidParam(format!("the {usage} key must hold one ed25519 key")))?;
    public_key_from_base64(public)
        .map_err(|_| Error::InvalidParam(format!("the {usage} key is malformed")))?;
    Ok(public.to_string())
}

/// `POST /keys/device_signing/upload` (UIA with the password, unless this
/// is the first upload or repeats the stored keys, as the spec allows).
pub async fn upload_signing_keys(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let user_id = owner.user_id.as_str();
    let fields =
        [(MASTER, "master_key"), (SELF_SIGNING, "self_signing_key"), (USER_SIGNING, "user_signing_key")];
    let stored_master = app.storage().cross_signing_key(user_id, MASTER)?;
    let mut uploads = Vec::new();
    let mut repeats = true;
    for (usage, field) in fields {
        let Some(key) = object(&body, field)? else { continue };
        let key = Value::Object(key.clone());
        check_cross_signing_key(&key, user_id, usage)?;
        let stored = app.storage().cross_signing_key(user_id, usage)?;
        repeats &=
            stored.and_then(|stored| serde_json::from_str::<Value>(&stored).ok()).as_ref() == Some(&key);
        uploads.push((usage, key));
    }
    let master = match uploads.iter().find(|(usage, _)| *usage == MASTER) {
        Some((_, key)) => Some(key.clone()),
        None => stored_master.as_ref().and_then(|stored| serde_json::from_str(stored).ok()),
    };
    // The subkeys must be signed by the master key.
    for (usage, key) in &uploads {
        if *usage == MASTER {
            continue;
        }
        let master =
            master.as_ref().ok_or_else(|| Error::InvalidParam("upload a master key first".into()))?;
        let public = check_cross_signing_key(master, user_id, MASTER)?;
        let verifying =
            public_key_from_base64(&public).map_err(|_| Error::InvalidParam("bad master key".into()))?;
        verify_json(key, user_id, &format!("ed25519:{public}"), &verifying).map_err(|error| {
            Error::matrix(
                400,
                "M_INVALID_SIGNATURE",
                format!("the {usage} key is not signed by the master key: {error}"),
            )
        })?;
    }
    if uploads.is_empty() || repeats {
        return Ok(Response::ok(json!({})));
    }
    // Replacing keys needs the password (spec: the first upload does not).
    if stored_master.is_some() {
        uia::authenticate(app, &body, "replace cross-signing keys", &[&[uia::PASSWORD]], Some(user_id))
            .await?;
    }
    for (usage, key) in &uploads {
        app.storage().set_cross_signing_key(user_id, usage, &key.to_string())?;
    }
    e2ee::local_signing_keys_changed(app, user_id)?;
    Ok(Response::ok(json!({})))
}

/// The ed25519 public key behind `ed25519:{id}` for a signer: one of their
/// cross-signing keys (the ID is the public key) or one of their devices.
fn signer_key(app: &App, signer: &str, signing_key_id: &str) -> Result<Option<String>> {
    let Some(id) = signing_key_id.strip_prefix("ed25519:") else { return Ok(None) };
    for usage in [MASTER, SELF_SIGNING, USER_SIGNING] {
        let key = app.storage().cross_signing_key(signer, usage)?;
        let key: Option<Value> = key.and_then(|key| serde_json::from_str(&key).ok());
        if key.as_ref().and_then(e2ee::cross_signing_public_key).as_deref() == Some(id) {
            return Ok(Some(id.to_string()));
        }
    }
    let keys = app.storage().device_keys(signer, id)?;
    let keys: Option<Value> = keys.and_then(|keys| serde_json::from_str(&keys).ok());
    Ok(keys.and_then(|keys| {
        keys.pointer(&format!("/keys/ed25519:{id}")).and_then(Value::as_str).map(str::to_owned)
    }))
}

/// The object without `signatures` and `unsigned`: what a signature covers.
fn signed_part(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("signatures");
        object.remove("unsigned");
    }
    value
}

/// `POST /keys/signatures/upload`: signatures by the caller's keys over
/// their own devices and master key, or over other users' master keys.
pub fn upload_signatures(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let signer = owner.user_id.as_str();
    let body = request.json_object()?;
    let mut failures: Map<String, Value> = Map::new();
    let mut changed_local: Vec<(String, Option<String>)> = Vec::new();
    for (target_user, by_key) in &body {
        let Some(by_key) = by_key.as_object() else { continue };
        for (target_key_id, signed) in by_key {
            match store_signatures(app, signer, target_user, target_key_id, signed) {
                Ok(device) => changed_local.push((target_user.clone(), device)),
                Err(error) => {
                    let (_, errcode) = error.status_and_errcode();
                    let entry = failures.entry(target_user.clone()).or_insert_with(|| json!({}));
                    entry[target_key_id.as_str()] = json!({ "errcode": errcode, "error": error.to_string() });
                }
            }
        }
    }
    for (target_user, device) in changed_local {
        if !app.is_local_user(&target_user) || target_user != signer {
            // Signatures over others' keys are the signer's own business.
            e2ee::note_device_list_change(app, signer)?;
        } else if let Some(device) = device {
            e2ee::local_devices_changed(app, &target_user, &[device], false)?;
        } else {
            e2ee::local_signing_keys_changed(app, &target_user)?;
        }
    }
    Ok(Response::ok(json!({ "failures": failures })))
}

/// Checks and stores the caller's signatures on one key; returns the device
/// ID when the key is a device's.
fn store_signatures(
    app: &App,
    signer: &str,
    target_user: &str,
    target_key_id: &str,
    signed: &Value,
) -> Result<Option<String>> {
    // What is being signed: a local device, a local cross-signing key, or a
    // remote key the client presents (only its signature can be checked).
    let mut device = None;
    if app.is_local_user(target_user) {
        let device_keys = app.storage().device_keys(target_user, target_key_id)?;
        let stored = match device_keys {
            Some(keys) => {
                device = Some(target_key_id.to_string());
                Some(keys)
            }
            None => {
                let mut found = None;
                for usage in [MASTER, SELF_SIGNING, USER_SIGNING] {
                    let key = app.storage().cross_signing_key(target_user, usage)?;
                    let key_value: Option<Value> =
                        key.as_ref().and_then(|key| serde_json::from_str(key).ok());
                    if key_value.as_ref().and_then(e2ee::cross_signing_public_key).as_deref()
                        == Some(target_key_id)
                    {
                        found = key;
                    }
                }
                found
            }
        };
        let stored: Value = stored
            .and_then(|stored| serde_json::from_str(&stored).ok())
            .ok_or_else(|| Error::NotFound(format!("{target_user} has no key {target_key_id}")))?;
        if signed_part(&stored) != signed_part(signed) {
            return Err(Error::InvalidParam("the signed key differs from the stored one".into()));
        }
    }
    let signatures = signed
        .pointer(&format!("/signatures/{}", signer.replace('~', "~0").replace('/', "~1")))
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidParam("no signatures by you".into()))?;
    let mut stored_any = false;
    for (signing_key_id, signature) in signatures {
        let Some(signature) = signature.as_str() else { continue };
        // A device's own self-signature is part of its keys already.
        if target_user == signer && device.is_some() && signing_key_id == &format!("ed25519:{target_key_id}")
        {
            continue;
        }
        let public = signer_key(app, signer, signing_key_id)?
            .ok_or_else(|| Error::InvalidParam(format!("unknown signing key {signing_key_id}")))?;
        let verifying =
            public_key_from_base64(&public).map_err(|_| Error::InvalidParam("bad signing key".into()))?;
        verify_json(signed, signer, signing_key_id, &verifying).map_err(|error| {
            Error::matrix(400, "M_INVALID_SIGNATURE", format!("{signing_key_id}: {error}"))
        })?;
        app.storage().add_key_signature(target_user, target_key_id, signer, signing_key_id, signature)?;
        stored_any = true;
    }
    if !stored_any {
        return Err(Error::InvalidParam("no new signatures".into()));
    }
    Ok(device)
}
