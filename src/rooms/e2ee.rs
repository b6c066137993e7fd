//! End-to-end encryption bookkeeping shared by the client and federation
//! handlers: device-list change notices (local wake-ups and outbound
//! `m.device_list_update` / `m.signing_key_update` EDUs), local to-device
//! delivery, the key answers for local users, and the `device_lists` delta
//! of `/sync` and `/keys/changes`. It relays keys; it never decrypts.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption>,
//! <https://spec.matrix.org/latest/server-server-api/#device-management>.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::outbox;
use crate::error::{Error, Result};
use crate::rooms::Engine;
use crate::storage::InboxSize;

/// Cross-signing key usages, as stored and as named in `/keys/query` answers.
pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

/// The server part of a user ID.
pub fn server_of(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, server)| server)
}

/// The other servers with members in the rooms `user_id` is joined to.
fn servers_sharing_rooms(app: &Engine, user_id: &str) -> Result<Vec<String>> {
    let rooms = app.storage().rooms_with_membership(user_id, "join")?;
    let mut servers: BTreeSet<String> = BTreeSet::new();
    for room_id in rooms {
        servers.extend(outbox::destinations(app, &room_id, None)?);
    }
    Ok(servers.into_iter().collect())
}

/// Wakes the syncs of everyone sharing a room with `user_id`, and `user_id`'s own.
fn wake_watchers(app: &Engine, user_id: &str) -> Result<()> {
    let mut watchers = app.storage().users_sharing_rooms_with(user_id)?;
    watchers.push(user_id.to_string());
    app.notifier.wake(watchers.iter().map(String::as_str));
    Ok(())
}

/// A local user's devices changed (added, renamed, keys uploaded or signed,
/// deleted): records one update per device, each at a stream position of
/// its own whose `prev_id` is the update before it (so a server that missed
/// one sees the gap and refetches the list), wakes the syncs that care, and
/// sends an `m.device_list_update` per device to the servers sharing a room
/// with the user.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#mdevice_list_update>.
pub fn local_devices_changed(
    app: &Engine,
    user_id: &str,
    device_ids: &[String],
    deleted: bool,
) -> Result<()> {
    let servers = servers_sharing_rooms(app, user_id)?;
    for device_id in device_ids {
        let stream_id = app.next_stream_id();
        let previous = app.storage().previous_device_update(user_id, stream_id)?;
        app.storage().record_device_list_change(user_id, stream_id, true)?;
        if servers.is_empty() {
            continue;
        }
        let mut content = json!({
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": previous.map(|id| vec![id]).unwrap_or_default(),
            "deleted": deleted,
        });
        if !deleted {
            let devices = app.storage().devices_with_keys(user_id)?;
            if let Some((_, name, keys)) = devices.into_iter().find(|(id, _, _)| id == device_id) {
                if let Some(name) = name.filter(|_| app.config.privacy.device_names_over_federation) {
                    content["device_display_name"] = json!(name);
                }
                if let Some(mut keys) = keys.and_then(|keys| serde_json::from_str::<Value>(&keys).ok()) {
                    // With the signatures other servers' users may see, as `/user/devices` gives them.
                    merge_signatures(app, None, user_id, device_id, &mut keys)?;
                    content["keys"] = keys;
                }
            }
        }
        outbox::queue_edu(app, &servers, &json!({ "edu_type": "m.device_list_update", "content": content }))?;
    }
    wake_watchers(app, user_id)
}

/// A local user's cross-signing keys changed: recorded (outside the
/// `prev_id` chain of device updates, as this EDU carries no stream ID) and
/// sent as `m.signing_key_update`.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#msigning_key_update>.
pub fn local_signing_keys_changed(app: &Engine, user_id: &str) -> Result<()> {
    let stream_id = app.next_stream_id();
    app.storage().record_device_list_change(user_id, stream_id, false)?;
    wake_watchers(app, user_id)?;
    let servers = servers_sharing_rooms(app, user_id)?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut content = json!({ "user_id": user_id });
    for (usage, field) in [(MASTER, "master_key"), (SELF_SIGNING, "self_signing_key")] {
        // Each storage call is its own statement: the storage is borrowed once at a time.
        let stored = app.storage().cross_signing_key(user_id, usage)?;
        if let Some(key) = stored {
            let mut key: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
            if let Some(public) = cross_signing_public_key(&key) {
                merge_signatures(app, None, user_id, &public, &mut key)?;
            }
            content[field] = key;
        }
    }
    outbox::queue_edu(app, &servers, &json!({ "edu_type": "m.signing_key_update", "content": content }))
}

/// Records a device-list change without telling other servers: for a remote
/// user (their server told us), or signatures only the signer sees. Our users
/// sharing a room with them see them in `device_lists.changed`.
pub fn note_device_list_change(app: &Engine, user_id: &str) -> Result<()> {
    let stream_id = app.next_stream_id();
    app.storage().record_device_list_change(user_id, stream_id, false)?;
    wake_watchers(app, user_id)
}

/// The largest to-device message content, in bytes of its JSON text: a
/// message must fit in one `m.direct_to_device` EDU of a federation
/// transaction, which peers keep under 64 KiB so that transactions stay
/// under their request body limits. This is Synapse's
/// `MAX_TO_DEVICE_CONTENT_SIZE` (not in the spec yet:
/// <https://github.com/matrix-org/matrix-spec/pull/2340>).
pub const MAX_TO_DEVICE_CONTENT_BYTES: usize = 65_536;

/// A device's inbox holds at most this many messages. An olm-encrypted room
/// key is about 2 KB and a device receives one per session shared with it,
/// so this is months of a busy household for a device left offline; past
/// it, new messages for the device are dropped until it syncs.
pub const MAX_INBOX_MESSAGES: i64 = 10_000;

/// A device's inbox holds at most this many bytes of contents: 256
/// messages of the largest size, or the [`MAX_INBOX_MESSAGES`] of the usual
/// size. It bounds what one sender (or many) can make a device's owner
/// store on a small board's disk.
pub const MAX_INBOX_BYTES: i64 = 16 << 20;

/// Why messages were not put into an inbox, counted for one log line.
#[derive(Default)]
struct Dropped {
    unknown_device: usize,
    too_large: usize,
    inbox_full: usize,
}

/// Delivers to-device messages to local devices (`*` means every device the
/// user has now). `messages` maps user ID to device ID to content; users of
/// other servers are skipped (the caller relays those).
///
/// Messages are dropped, with a log line, when they name a device that does
/// not exist (nothing is kept for a device that might appear later), when
/// their content is over [`MAX_TO_DEVICE_CONTENT_BYTES`] (a local send is
/// refused before: see [`check_content_sizes`]), and when they would take
/// the device's inbox past [`MAX_INBOX_MESSAGES`] or [`MAX_INBOX_BYTES`]. A
/// full inbox drops rather than refuses: one send names many devices, and
/// refusing all of it for one full inbox (a device left offline, or one an
/// attacker filled) would stop the sender sharing keys with everyone else;
/// and an EDU from a peer has no answer to carry a refusal in.
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#send-to-device-messaging>.
pub fn deliver_locally(app: &Engine, sender: &str, kind: &str, messages: &Map<String, Value>) -> Result<()> {
    let mut woken = Vec::new();
    let mut dropped = Dropped::default();
    for (user_id, by_device) in messages {
        if !app.is_local_user(user_id) {
            continue;
        }
        let Some(by_device) = by_device.as_object() else { continue };
        let devices: BTreeSet<String> =
            app.storage().devices(user_id)?.into_iter().map(|device| device.device_id).collect();
        let mut delivered = false;
        for (device_id, content) in by_device {
            let targets: Vec<&String> = if device_id == "*" {
                devices.iter().collect()
            } else {
                devices.get(device_id).into_iter().collect()
            };
            if targets.is_empty() {
                dropped.unknown_device += 1;
                continue;
            }
            let content = content.to_string();
            if content.len() > MAX_TO_DEVICE_CONTENT_BYTES {
                dropped.too_large += targets.len();
                continue;
            }
            for target in targets {
                if !inbox_takes(app.storage().to_device_inbox_size(user_id, target)?, content.len()) {
                    dropped.inbox_full += 1;
                    continue;
                }
                let stream_id = app.next_stream_id();
                delivered |=
                    app.storage().push_to_device(user_id, target, stream_id, sender, kind, &content)?;
            }
        }
        if delivered {
            woken.push(user_id.as_str());
        }
    }
    if dropped.too_large > 0 || dropped.inbox_full > 0 {
        log::warn!(
            "to-device {kind} from {sender}: dropped {} too large and {} for full inboxes",
            dropped.too_large,
            dropped.inbox_full
        );
    }
    if dropped.unknown_device > 0 {
        log::debug!("to-device {kind} from {sender}: dropped {} for unknown devices", dropped.unknown_device);
    }
    app.notifier.wake(woken);
    Ok(())
}

/// Whether an inbox holding `inbox` has room for one more message of
/// `bytes` bytes.
fn inbox_takes(inbox: InboxSize, bytes: usize) -> bool {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    inbox.messages < MAX_INBOX_MESSAGES && inbox.bytes.saturating_add(bytes) <= MAX_INBOX_BYTES
}

/// Refuses a send whose messages include one over
/// [`MAX_TO_DEVICE_CONTENT_BYTES`] (`413 M_TOO_LARGE`, as Synapse answers),
/// before anything of it is delivered or relayed.
pub fn check_content_sizes(messages: &Map<String, Value>) -> Result<()> {
    for (user_id, by_device) in messages {
        let Some(by_device) = by_device.as_object() else { continue };
        for (device_id, content) in by_device {
            let bytes = content.to_string().len();
            if bytes > MAX_TO_DEVICE_CONTENT_BYTES {
                return Err(Error::TooLarge(format!(
                    "the message for {user_id} {device_id} has {bytes} bytes, over {MAX_TO_DEVICE_CONTENT_BYTES}"
                )));
            }
        }
    }
    Ok(())
}

/// Adds the stored signatures over one key that `requester` may see: the
/// owner's own and the requester's.
pub fn merge_signatures(
    app: &Engine,
    requester: Option<&str>,
    user_id: &str,
    key_id: &str,
    key: &mut Value,
) -> Result<()> {
    let signatures = app.storage().key_signatures(user_id, key_id)?;
    for (signer, signing_key_id, signature) in signatures {
        if signer != user_id && Some(signer.as_str()) != requester {
            continue;
        }
        let Some(object) = key.as_object_mut() else { return Ok(()) };
        let all = object.entry("signatures").or_insert_with(|| json!({}));
        if !all.is_object() {
            *all = json!({});
        }
        let by_signer = all.as_object_mut().map(|all| all.entry(signer).or_insert_with(|| json!({})));
        if let Some(Value::Object(by_signer)) = by_signer {
            by_signer.insert(signing_key_id, json!(signature));
        }
    }
    Ok(())
}

/// The public key ID of a cross-signing key (`ed25519:<base64>` -> `<base64>`).
pub fn cross_signing_public_key(key: &Value) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    let (key_id, _) = keys.iter().next()?;
    Some(key_id.strip_prefix("ed25519:").unwrap_or(key_id).to_string())
}

/// The keys of a local user for a `/keys/query` answer: device keys of the
/// named devices (all if empty), with the device's display name in
/// `unsigned`, and the cross-signing keys `requester` may see.
pub fn local_keys(
    app: &Engine,
    requester: Option<&str>,
    user_id: &str,
    device_ids: &[String],
) -> Result<UserKeys> {
    let mut devices = Map::new();
    // Each storage call is its own statement: the storage is borrowed once at a time.
    let stored = app.storage().devices_with_keys(user_id)?;
    for (device_id, name, keys) in stored {
        if !device_ids.is_empty() && !device_ids.contains(&device_id) {
            continue;
        }
        let Some(mut keys) = keys.and_then(|keys| serde_json::from_str::<Value>(&keys).ok()) else {
            continue;
        };
        merge_signatures(app, requester, user_id, &device_id, &mut keys)?;
        if let Some(object) = keys.as_object_mut() {
            let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
            // Other servers see device names only when the privacy setting lets them.
            let name =
                name.filter(|_| requester.is_some() || app.config.privacy.device_names_over_federation);
            if let (Some(unsigned), Some(name)) = (unsigned.as_object_mut(), name) {
                unsigned.insert("device_display_name".into(), json!(name));
            }
        }
        devices.insert(device_id, keys);
    }
    let cross_signing = |usage: &str| -> Result<Option<Value>> {
        let Some(key) = app.storage().cross_signing_key(user_id, usage)? else { return Ok(None) };
        let mut key: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
        if let Some(public) = cross_signing_public_key(&key) {
            merge_signatures(app, requester, user_id, &public, &mut key)?;
        }
        Ok(Some(key))
    };
    let master = cross_signing(MASTER)?;
    let self_signing = cross_signing(SELF_SIGNING)?;
    // Spec: a user-signing key is only shown to its owner.
    let user_signing = if requester == Some(user_id) { cross_signing(USER_SIGNING)? } else { None };
    Ok(UserKeys { devices, master, self_signing, user_signing })
}

/// A user's keys: a local user's as [`local_keys`] gathers them, or a
/// remote user's from the cache.
pub struct UserKeys {
    pub devices: Map<String, Value>,
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// Claims one key per `(user, device, algorithm)` of local users:
/// `{user: {device: {key_id: key}}}`.
pub fn claim_local(app: &Engine, wanted: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut claimed = Map::new();
    for (user_id, by_device) in wanted {
        if !app.is_local_user(user_id) {
            continue;
        }
        let Some(by_device) = by_device.as_object() else { continue };
        let mut for_user = Map::new();
        for (device_id, algorithm) in by_device {
            let Some(algorithm) = algorithm.as_str() else { continue };
            let key = app.storage().claim_key(user_id, device_id, algorithm)?;
            if let Some((key_id, json)) = key {
                let key: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
                for_user.insert(device_id.clone(), json!({ key_id: key }));
            }
        }
        if !for_user.is_empty() {
            claimed.insert(user_id.clone(), Value::Object(for_user));
        }
    }
    Ok(claimed)
}

/// `device_lists` between two stream positions: users whose devices changed
/// and who share a room with `user_id` (or who newly do), and users who no
/// longer share any room with them.
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#extensions-to-sync>.
pub fn device_list_delta(
    app: &Engine,
    user_id: &str,
    after: i64,
    up_to: i64,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut changed: BTreeSet<String> =
        app.storage().device_list_changes_visible_to(user_id, after, up_to)?.into_iter().collect();
    let mut left: BTreeSet<String> = BTreeSet::new();
    let member_events = app.storage().member_events_in_rooms_of(user_id, after, up_to)?;
    for (room_id, target, membership) in member_events {
        let affected: Vec<String> = if target == user_id {
            // Our own join or leave affects everyone in the room.
            app.storage().members_with(&room_id, "join")?
        } else {
            vec![target]
        };
        for other in affected {
            if other == user_id {
                continue;
            }
            if app.storage().share_a_room(user_id, &other)? {
                if membership == "join" {
                    changed.insert(other);
                }
            } else if matches!(membership.as_str(), "leave" | "ban") {
                left.insert(other);
            }
        }
    }
    changed.retain(|user| !left.contains(user));
    Ok((changed.into_iter().collect(), left.into_iter().collect()))
}

/// After devices were deleted (logout, device deletion, password change,
/// deactivation): their keys went with them; forget signatures over them and
/// tell everyone who shares a room with the user.
pub fn devices_deleted(app: &Engine, user_id: &str, device_ids: &[String]) -> Result<()> {
    if device_ids.is_empty() {
        return Ok(());
    }
    for device_id in device_ids {
        app.storage().delete_key_signatures(user_id, device_id)?;
    }
    local_devices_changed(app, user_id, device_ids, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_inbox_takes_messages_up_to_its_bounds() {
        let empty = InboxSize::default();
        assert!(inbox_takes(empty, MAX_TO_DEVICE_CONTENT_BYTES));
        let almost = InboxSize { messages: MAX_INBOX_MESSAGES - 1, bytes: MAX_INBOX_BYTES - 10 };
        assert!(inbox_takes(almost, 10));
        assert!(!inbox_takes(almost, 11));
        assert!(!inbox_takes(InboxSize { messages: MAX_INBOX_MESSAGES, bytes: 0 }, 1));
        assert!(!inbox_takes(InboxSize { messages: 0, bytes: i64::MAX }, usize::MAX));
    }

    #[test]
    fn sends_with_a_message_over_the_content_limit_are_refused() {
        let fits = "x".repeat(MAX_TO_DEVICE_CONTENT_BYTES - 10);
        let over = "x".repeat(MAX_TO_DEVICE_CONTENT_BYTES);
        let messages = |text: &str| match json!({ "@a:x": { "D1": {}, "D2": { "t": text } }, "@b:x": "junk" })
        {
            Value::Object(messages) => messages,
            _ => unreachable!(),
        };
        assert!(check_content_sizes(&messages(&fits)).is_ok());
        let refused = check_content_sizes(&messages(&over)).unwrap_err();
        assert_eq!(refused.status_and_errcode(), (413, "M_TOO_LARGE"));
    }
}
