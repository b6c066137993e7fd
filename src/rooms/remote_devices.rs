//! Remote users' device lists, cached: filled from their server's
//! `/user/devices` answer, kept current by their `m.device_list_update` and
//! `m.signing_key_update` EDUs, and read by `/keys/query`. A list is cached
//! only for users who share a room with one of our users (only then does
//! their server send us updates), and it goes stale when an update shows a
//! gap in the `prev_id` chain (an update we missed); a stale list is
//! fetched again at the next query. Fetching is the federation layer's;
//! this module decides and stores.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>.

use serde_json::{Map, Value, json};

use super::e2ee::{self, UserKeys};
use crate::error::{Error, Result};
use crate::rooms::Engine;
use crate::storage::RemoteDeviceList;

/// At most this many devices of one user are cached: far more than anyone
/// uses, and it bounds what one peer can make us store per user.
pub const MAX_DEVICES_PER_USER: usize = 1_000;

/// At most this many `prev_id` entries are looked at in one update (peers
/// send one).
const MAX_PREV_IDS: usize = 16;

/// What an `m.device_list_update` does to the cached list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateStep {
    /// Nothing is cached (or it is stale, or the update is one we applied):
    /// the next query fetches the whole list anyway.
    Ignore,
    /// The update follows the cached list: apply it.
    Apply,
    /// The update depends on one we never saw: fetch the whole list again.
    Resync,
}

/// Decides an update at `stream_id` with `prev_ids`, given the stream ID of
/// the fresh cached list (`None`: not cached, or stale). An update follows
/// the list when every `prev_id` is the list's stream ID; no `prev_id` at
/// all means the origin restarted its chain, so the list is fetched again,
/// as Synapse does.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#mdevice_list_update>.
pub fn update_step(cached: Option<i64>, stream_id: i64, prev_ids: &[i64]) -> UpdateStep {
    let Some(cached) = cached else { return UpdateStep::Ignore };
    if stream_id <= cached {
        UpdateStep::Ignore
    } else if !prev_ids.is_empty() && prev_ids.iter().all(|prev| *prev == cached) {
        UpdateStep::Apply
    } else {
        UpdateStep::Resync
    }
}

/// A stream ID as peers send it: an integer (Synapse also accepts its
/// decimal text).
fn stream_id(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// A device's keys, if they are an object naming this user and device
/// (anything else is dropped, not stored).
fn device_keys_of(user_id: &str, device_id: &str, keys: Option<&Value>) -> Option<String> {
    let keys = keys?.as_object()?;
    let names_device = keys.get("user_id").and_then(Value::as_str) == Some(user_id)
        && keys.get("device_id").and_then(Value::as_str) == Some(device_id);
    names_device.then(|| Value::Object(keys.clone()).to_string())
}

/// A cross-signing key of `usage`, if it is an object naming this user and usage.
fn cross_signing_key_of(user_id: &str, usage: &str, key: Option<&Value>) -> Option<String> {
    let key = key?.as_object()?;
    let owned = key.get("user_id").and_then(Value::as_str) == Some(user_id);
    let usages = key.get("usage").and_then(Value::as_array);
    let used = usages.is_some_and(|usages| usages.iter().any(|u| u.as_str() == Some(usage)));
    (owned && used).then(|| Value::Object(key.clone()).to_string())
}

/// A device ID as we store it: a non-empty string of at most 255 bytes.
fn device_id_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|id| !id.is_empty() && id.len() <= 255)
}

/// Reads a `GET /user/devices/{userId}` answer into a list to cache.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1userdevicesuserid>.
pub fn parse_user_devices(user_id: &str, answer: &Value) -> Result<RemoteDeviceList> {
    let bad =
        |why: &str| Error::matrix(502, "M_UNKNOWN", format!("bad /user/devices answer for {user_id}: {why}"));
    if answer.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(bad("it names another user"));
    }
    let stream_id = answer.get("stream_id").and_then(stream_id).ok_or_else(|| bad("no stream_id"))?;
    let devices = answer.get("devices").and_then(Value::as_array).ok_or_else(|| bad("no devices"))?;
    if devices.len() > MAX_DEVICES_PER_USER {
        return Err(bad("too many devices"));
    }
    let mut list = RemoteDeviceList {
        stream_id,
        devices: Vec::new(),
        master_key: cross_signing_key_of(user_id, e2ee::MASTER, answer.get("master_key")),
        self_signing_key: cross_signing_key_of(user_id, e2ee::SELF_SIGNING, answer.get("self_signing_key")),
    };
    for device in devices {
        let Some(device_id) = device_id_of(device.get("device_id")) else { continue };
        let name = device.get("device_display_name").and_then(Value::as_str).map(str::to_owned);
        let keys = device_keys_of(user_id, device_id, device.get("keys"));
        list.devices.push((device_id.to_owned(), name, keys));
    }
    Ok(list)
}

/// Stores a list fetched from the user's server.
pub fn store_fetched(app: &Engine, user_id: &str, list: &RemoteDeviceList) -> Result<()> {
    app.storage().replace_remote_device_list(user_id, list)
}

/// Whether a remote user's list may be cached: only while they share a room
/// with one of our users do their updates reach us. A list cached before is
/// marked stale when they no longer do, so it is fetched again should they
/// share one later.
pub fn cacheable(app: &Engine, user_id: &str) -> Result<bool> {
    let shares = app.storage().shares_a_room_with_a_local_user(user_id, &app.config.server_name)?;
    if !shares {
        app.storage().mark_remote_device_list_stale(user_id)?;
    }
    Ok(shares)
}

/// A remote user's keys from a fresh cached list, shaped as for a local user
/// (the display name in each device's `unsigned`, and the signatures
/// `requester` made over their master key), or `None` when nothing fresh is
/// cached.
pub fn cached_keys(
    app: &Engine,
    requester: &str,
    user_id: &str,
    device_ids: &[String],
) -> Result<Option<UserKeys>> {
    let Some(list) = app.storage().remote_device_list(user_id)? else { return Ok(None) };
    let mut devices = Map::new();
    for (device_id, name, keys) in list.devices {
        if !device_ids.is_empty() && !device_ids.contains(&device_id) {
            continue;
        }
        let Some(mut keys) = keys.and_then(|keys| serde_json::from_str::<Value>(&keys).ok()) else {
            continue;
        };
        if let (Some(object), Some(name)) = (keys.as_object_mut(), name) {
            let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
            if let Some(unsigned) = unsigned.as_object_mut() {
                unsigned.insert("device_display_name".into(), json!(name));
            }
        }
        devices.insert(device_id, keys);
    }
    let parse = |key: Option<String>| key.and_then(|key| serde_json::from_str::<Value>(&key).ok());
    let mut master = parse(list.master_key);
    if let Some(key) = master.as_mut() {
        if let Some(public) = e2ee::cross_signing_public_key(key) {
            e2ee::merge_signatures(app, Some(requester), user_id, &public, key)?;
        }
    }
    let self_signing = parse(list.self_signing_key);
    Ok(Some(UserKeys { devices, master, self_signing, user_signing: None }))
}

/// `user_id` newly joined `room_id` (they were not joined before): our
/// server may share a room with users it did not share one with a moment
/// ago, whose servers sent us none of their updates meanwhile, so their
/// cached lists (if any, from an earlier shared room) are refetched at the
/// next query. A remote user joining makes their own list stale; the first
/// local user joining, the lists of everyone in the room. A local user
/// joining where another local user is joined already changes nothing: our
/// server shared the room before, so its members' servers kept sending us
/// their updates (and a join to a big room costs no pass over its members).
/// This is Synapse's resync of users it starts sharing a room with.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>
/// ("servers must ... keep a copy of the device list of remote users they
/// share a room with").
pub fn note_join(app: &Engine, room_id: &str, user_id: &str) -> Result<()> {
    if !app.is_local_user(user_id) {
        return app.storage().mark_remote_device_list_stale(user_id);
    }
    if app.storage().server_has_other_member(room_id, &app.config.server_name, user_id)? {
        return Ok(());
    }
    app.storage().mark_room_members_device_lists_stale(room_id)
}

/// Acts on an `m.device_list_update` from the user's own server (the caller
/// checked the origin): applies it to the cached list, or marks the list
/// stale when it shows a gap, and shows the change to our users who share a
/// room with the user. Updates about users who share no room with ours are
/// dropped, as Synapse drops them: no one here needs them, and storing them
/// would let a peer fill our disk with made-up users.
pub fn receive_update(app: &Engine, user_id: &str, content: &Value) -> Result<()> {
    let Some(device_id) = device_id_of(content.get("device_id")) else {
        return Err(Error::BadJson("`device_id` must be a device ID".into()));
    };
    let Some(update_stream) = content.get("stream_id").and_then(stream_id) else {
        return Err(Error::BadJson("`stream_id` must be an integer".into()));
    };
    let prev_ids: Vec<i64> = match content.get("prev_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids.iter().take(MAX_PREV_IDS).filter_map(stream_id).collect(),
        Some(_) => return Err(Error::BadJson("`prev_id` must be a list".into())),
    };
    if !cacheable(app, user_id)? {
        log::debug!("dropped a device-list update for {user_id}: no shared room");
        return Ok(());
    }
    let cached = app.storage().remote_device_list_stream(user_id)?;
    match update_step(cached, update_stream, &prev_ids) {
        UpdateStep::Ignore => {}
        UpdateStep::Resync => app.storage().mark_remote_device_list_stale(user_id)?,
        UpdateStep::Apply => {
            let deleted = content.get("deleted").and_then(Value::as_bool).unwrap_or(false);
            let name = content.get("device_display_name").and_then(Value::as_str);
            let keys = device_keys_of(user_id, device_id, content.get("keys"));
            let device = (!deleted).then_some((name, keys.as_deref()));
            let known = app.storage().remote_device_count(user_id)?;
            if device.is_some() && known >= MAX_DEVICES_PER_USER {
                app.storage().mark_remote_device_list_stale(user_id)?;
            } else {
                app.storage().apply_remote_device_update(user_id, update_stream, device_id, device)?;
            }
        }
    }
    e2ee::note_device_list_change(app, user_id)
}

/// Acts on an `m.signing_key_update` from the user's own server: replaces
/// the cached cross-signing keys it carries, and shows the change as
/// [`receive_update`] does.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#msigning_key_update>.
pub fn receive_signing_key_update(app: &Engine, user_id: &str, content: &Value) -> Result<()> {
    if !cacheable(app, user_id)? {
        log::debug!("dropped a signing-key update for {user_id}: no shared room");
        return Ok(());
    }
    let master = cross_signing_key_of(user_id, e2ee::MASTER, content.get("master_key"));
    let self_signing = cross_signing_key_of(user_id, e2ee::SELF_SIGNING, content.get("self_signing_key"));
    app.storage().set_remote_signing_keys(user_id, master.as_deref(), self_signing.as_deref())?;
    e2ee::note_device_list_change(app, user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device_ids(devices: &[(String, Option<String>, Option<String>)]) -> Vec<&str> {
        devices.iter().map(|(id, _, _)| id.as_str()).collect()
    }

    #[test]
    fn updates_apply_only_on_top_of_the_cached_list() {
        use UpdateStep::*;
        // Nothing fresh cached: the next query fetches anyway.
        assert_eq!(update_step(None, 5, &[4]), Ignore);
        // Already applied, or older.
        assert_eq!(update_step(Some(5), 5, &[4]), Ignore);
        assert_eq!(update_step(Some(5), 3, &[]), Ignore);
        // The next in the chain.
        assert_eq!(update_step(Some(5), 9, &[5]), Apply);
        assert_eq!(update_step(Some(5), 9, &[5, 5]), Apply);
        // A gap (an update we missed), or a chain that starts over.
        assert_eq!(update_step(Some(5), 9, &[7]), Resync);
        assert_eq!(update_step(Some(5), 9, &[5, 7]), Resync);
        assert_eq!(update_step(Some(5), 9, &[]), Resync);
    }

    #[test]
    fn a_user_devices_answer_keeps_only_what_belongs_to_the_user() {
        let user = "@r:y";
        let answer = json!({
            "user_id": user,
            "stream_id": 12,
            "devices": [
                { "device_id": "D1", "device_display_name": "phone",
                  "keys": { "user_id": user, "device_id": "D1", "keys": {} } },
                { "device_id": "D2", "keys": { "user_id": "@other:y", "device_id": "D2" } },
                { "device_id": "" },
                { "device_id": 7 },
            ],
            "master_key": { "user_id": user, "usage": ["master"], "keys": {} },
            "self_signing_key": { "user_id": user, "usage": ["master"], "keys": {} },
        });
        let list = parse_user_devices(user, &answer).unwrap();
        assert_eq!(list.stream_id, 12);
        assert_eq!(device_ids(&list.devices), ["D1", "D2"]);
        assert_eq!(list.devices[0].1.as_deref(), Some("phone"));
        assert!(list.devices[0].2.is_some());
        // Keys naming someone else are not stored.
        assert_eq!(list.devices[1].2, None);
        assert!(list.master_key.is_some());
        // A key of the wrong usage is not stored.
        assert_eq!(list.self_signing_key, None);

        let mut other = answer.clone();
        other["user_id"] = json!("@other:y");
        assert!(parse_user_devices(user, &other).is_err());
        let mut text_stream = answer.clone();
        text_stream["stream_id"] = json!("13");
        assert_eq!(parse_user_devices(user, &text_stream).unwrap().stream_id, 13);
        let mut no_stream = answer;
        no_stream["stream_id"] = json!(null);
        assert!(parse_user_devices(user, &no_stream).is_err());
    }
}
