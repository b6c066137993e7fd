//! `PUT /sendToDevice/{eventType}/{txnId}` and the end-to-end encryption
//! parts of `/sync`: the device's to-device inbox (a bounded page of it per
//! answer), `device_lists`, one-time key counts and unused fallback key
//! types.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#send-to-device-messaging>,
//! <https://spec.matrix.org/latest/client-server-api/#extensions-to-sync>.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::credentials;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::protocol::identifiers::UserId;
use crate::rooms::e2ee::{self, server_of};
use crate::rooms::outbox;
use crate::storage::{InboxPage, ToDeviceMessage, TokenOwner};

/// `PUT /sendToDevice/{eventType}/{txnId}`: idempotent per sending device
/// and transaction ID.
pub fn send(app: &App, request: &Request, kind: &str, txn_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let messages = match body.get("messages") {
        Some(Value::Object(messages)) => messages.clone(),
        None => Map::new(),
        Some(_) => return Err(Error::BadJson("`messages` must be an object".into())),
    };
    e2ee::check_content_sizes(&messages)?;
    let scope = format!("{}|{}", owner.user_id, owner.device_id);
    if !app.storage().record_to_device_transaction(&scope, txn_id)? {
        return Ok(Response::ok(json!({})));
    }
    e2ee::deliver_locally(app, &owner.user_id, kind, &messages)?;
    // Spec: remote recipients get one `m.direct_to_device` EDU per server.
    let mut by_server: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user_id, by_device) in messages {
        // A malformed user ID names no server to send to.
        if app.is_local_user(&user_id) || UserId::parse(&user_id).is_err() {
            continue;
        }
        if let Some(server) = server_of(&user_id) {
            by_server.entry(server.to_string()).or_default().insert(user_id, by_device);
        }
    }
    for (server, messages) in by_server {
        let edu = json!({
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": owner.user_id,
                "type": kind,
                "message_id": credentials::random_string(16),
                "messages": messages,
            },
        });
        outbox::queue_edu(app, &[server], &edu)?;
    }
    Ok(Response::ok(json!({})))
}

/// At most this many to-device messages go in one sync answer, as Synapse
/// does; the rest come in the next ones.
pub(crate) const MAX_TO_DEVICE_PER_SYNC: usize = 100;

/// And at most this many bytes of their text (see [`InboxPage`]), though
/// always one: building an answer holds its messages about three times (the
/// rows, the JSON text, the response body), so 1 MiB keeps a sync to a few
/// MiB against the unit's 64 MiB memory cap, while still carrying a hundred
/// usual olm messages (~2 KB each) at once.
pub(crate) const MAX_TO_DEVICE_SYNC_BYTES: usize = 1 << 20;

/// One to-device message as a sync answer carries it; the content goes out
/// as it was stored, never parsed into a tree.
#[derive(Serialize)]
pub struct ToDeviceEvent {
    sender: String,
    #[serde(rename = "type")]
    kind: String,
    content: Box<RawValue>,
}

impl From<ToDeviceMessage> for ToDeviceEvent {
    fn from(message: ToDeviceMessage) -> ToDeviceEvent {
        let content = RawValue::from_string(message.content).unwrap_or_else(|_| empty_object());
        ToDeviceEvent { sender: message.sender, kind: message.kind, content }
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// The end-to-end encryption fields of a sync answer.
pub struct SyncExtensions {
    /// A page of the device's inbox, oldest first.
    pub to_device: Vec<ToDeviceEvent>,
    /// The to-device position the answer's token must carry: the last
    /// message delivered if the page stopped short of the window's end, the
    /// window's end otherwise.
    pub to_device_through: i64,
    pub changed: Vec<String>,
    pub left: Vec<String>,
    pub one_time_keys_count: Value,
    pub unused_fallback_key_types: Vec<String>,
}

impl SyncExtensions {
    /// Whether a waiting sync should answer for these.
    pub fn has_news(&self) -> bool {
        !self.to_device.is_empty() || !self.changed.is_empty() || !self.left.is_empty()
    }

    /// Writes the fields into a sync answer but the to-device messages,
    /// which are returned to go in as they are (`device_lists` stays empty
    /// in an initial sync).
    pub fn write_into(self, response: &mut Value) -> Vec<ToDeviceEvent> {
        response["device_lists"] = json!({ "changed": self.changed, "left": self.left });
        response["device_one_time_keys_count"] = self.one_time_keys_count;
        response["device_unused_fallback_key_types"] = json!(self.unused_fallback_key_types);
        self.to_device
    }
}

/// Gathers the end-to-end encryption fields: the device's to-device inbox
/// in `(to_device_since, now]`, one page of it, and the device-list changes
/// in `(since, now]`. Syncing with a to-device position acknowledges the
/// messages up to it, which are deleted (spec: they are removed once the
/// client syncs past them).
pub fn sync_extensions(
    app: &App,
    owner: &TokenOwner,
    since: Option<i64>,
    to_device_since: Option<i64>,
    now: i64,
) -> Result<SyncExtensions> {
    let (user_id, device_id) = (owner.user_id.as_str(), owner.device_id.as_str());
    if let Some(since) = to_device_since {
        app.storage().acknowledge_to_device(user_id, device_id, since)?;
    }
    let page = InboxPage { max_messages: MAX_TO_DEVICE_PER_SYNC, max_bytes: MAX_TO_DEVICE_SYNC_BYTES };
    let (inbox, more) =
        app.storage().to_device_messages(user_id, device_id, to_device_since.unwrap_or(0), now, page)?;
    // When the page left messages behind, the token stops at the last one
    // delivered, so the next sync starts right after it.
    let to_device_through = match inbox.last() {
        Some(last) if more => last.stream_id,
        _ => now,
    };
    let to_device = inbox.into_iter().map(ToDeviceEvent::from).collect();
    let (changed, left) = match since {
        Some(since) => e2ee::device_list_delta(app, user_id, since, now)?,
        None => (Vec::new(), Vec::new()),
    };
    Ok(SyncExtensions {
        to_device,
        to_device_through,
        changed,
        left,
        one_time_keys_count: super::keys::one_time_key_counts(app, user_id, device_id)?,
        unused_fallback_key_types: app.storage().unused_fallback_key_types(user_id, device_id)?,
    })
}
