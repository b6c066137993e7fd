//! Sending notifications to push gateways: one sender task per pusher, fed
//! from the SQLite push queue (so a restart loses nothing), one request in
//! flight, exponential backoff on failure, a notification given up after
//! [`GIVE_UP_AFTER_MS`], and a pusher deleted when its gateway rejects its
//! pushkey.
//!
//! The request is the Push Gateway API's
//! <https://spec.matrix.org/latest/push-gateway-api/#post_matrixpushv1notify>,
//! built when it is sent: counts are those of that moment (as Synapse's
//! are). Outbound HTTP lives in this module (federation is the only one that
//! makes requests): `https://` gateways with verified TLS and the address
//! filter of every outbound request, plain `http://` only to addresses the
//! `allow_ips` list names.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use http_types::{Method, Url};
use serde_json::{Map, Value, json};

use super::discovery::url_target;
use super::transport::{self, RawResponse};
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::storage::{PushQueued, Pusher, PusherKey, now_ms};

/// The first retry waits this long; each failure doubles it.
const FIRST_BACKOFF_MS: u64 = 1_000;
/// Backoff never exceeds this, so a gateway that is back is used again
/// within it.
const MAX_BACKOFF_MS: u64 = 5 * 60_000;
/// A notification still undelivered this long after its event is dropped:
/// a phone told hours later of a message it can fetch itself helps no one
/// (Synapse gives up after about as long).
const GIVE_UP_AFTER_MS: i64 = 6 * 60 * 60_000;
/// A gateway's answer is a small JSON object (`rejected` pushkeys).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The pushers whose sender runs.
#[derive(Default)]
pub struct PushSenders {
    active: RefCell<HashSet<PusherKey>>,
}

/// Hooks the senders into the room engine's push queue and starts a sender
/// for every pusher with notifications queued from before a restart.
pub fn start(app: &Rc<Remote>) {
    let weak = Rc::downgrade(app);
    app.push_queue.register(Rc::new(move |key: &PusherKey| {
        if let Some(app) = weak.upgrade() {
            kick(&app, key);
        }
    }));
    match app.storage().pushers_with_queue() {
        Ok(keys) => {
            for key in keys {
                kick(app, &key);
            }
        }
        Err(error) => log::error!("cannot read the push queue: {error}"),
    }
}

/// Starts the pusher's sender unless it runs (a running one takes what is
/// queued in turn; a new notification does not cut its backoff short).
pub fn kick(app: &Rc<Remote>, key: &PusherKey) {
    if !app.federation.push_senders.active.borrow_mut().insert(key.clone()) {
        return;
    }
    let app_for_task = app.clone();
    let key = key.clone();
    app.executor.spawn(async move { run(app_for_task, key).await }).detach();
}

/// How long to wait after `failures` failures in a row: 1 s doubling to
/// [`MAX_BACKOFF_MS`] (application service senders wait alike).
pub(super) fn backoff(failures: u32) -> Duration {
    let exponent = failures.clamp(1, 20) - 1;
    Duration::from_millis(FIRST_BACKOFF_MS.saturating_mul(1 << exponent).min(MAX_BACKOFF_MS))
}

/// What became of one attempt.
enum Delivery {
    /// Delivered (or refused for good): the next one.
    Done,
    /// The gateway rejected the pushkey: the pusher is gone.
    Rejected,
    /// Try again later.
    Failed(String),
}

async fn run(app: Rc<Remote>, key: PusherKey) {
    let mut failures: u32 = 0;
    loop {
        let next = app.storage().next_push(&key);
        let pusher = app.storage().pusher_by_key(&key);
        let (item, (pusher, pushkey_ts)) = match (next, pusher) {
            (Ok(Some(item)), Ok(Some(pusher))) => (item, pusher),
            (Ok(Some(_)), Ok(None)) => {
                let _ = app.storage().delete_pushes_of(&key);
                break;
            }
            (Ok(None), _) => break,
            (Err(error), _) | (_, Err(error)) => {
                log::error!("push queue of {}: {error}", key.user_id);
                break;
            }
        };
        match deliver(&app, &pusher, pushkey_ts, &item).await {
            Delivery::Done => {
                failures = 0;
                // Never send the same one again and again.
                if let Err(error) = app.storage().delete_push(item.id) {
                    log::error!("push queue of {}: {error}", key.user_id);
                    break;
                }
            }
            Delivery::Rejected => {
                log::info!(
                    "push gateway rejected the pushkey of {} ({}): pusher removed",
                    key.user_id,
                    key.app_id
                );
                let _ = app.storage().delete_pusher(&key.user_id, &key.app_id, &key.pushkey);
                break;
            }
            Delivery::Failed(error) => {
                failures = failures.saturating_add(1);
                // Everything as old goes at once, not one attempt per row.
                let cutoff = now_ms() - GIVE_UP_AFTER_MS;
                if item.created_ts < cutoff {
                    match app.storage().delete_pushes_before(&key, cutoff) {
                        Ok(dropped) => {
                            log::warn!(
                                "gave up on {dropped} notifications to {} ({}): {error}",
                                key.user_id,
                                key.app_id
                            );
                            continue;
                        }
                        Err(error) => log::error!("push queue of {}: {error}", key.user_id),
                    }
                }
                let wait = backoff(failures);
                log::debug!("push to {} ({}) failed, retry in {wait:?}: {error}", key.user_id, key.app_id);
                smol::Timer::after(wait).await;
            }
        }
    }
    // Nothing left (checked just now, with no await since): the next kick
    // starts a new sender.
    app.federation.push_senders.active.borrow_mut().remove(&key);
}

async fn deliver(app: &Remote, pusher: &Pusher, pushkey_ts: i64, item: &PushQueued) -> Delivery {
    let data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
    let Some(url) = data.get("url").and_then(Value::as_str).map(str::to_owned) else {
        return Delivery::Done;
    };
    let body = match notification(app, pusher, pushkey_ts, &data, item) {
        Ok(Some(body)) => body,
        Ok(None) => return Delivery::Done,
        Err(error) => return Delivery::Failed(error.to_string()),
    };
    let response = match post(app, &url, body.to_string().into_bytes()).await {
        Ok(response) => response,
        Err(error) => return Delivery::Failed(error.to_string()),
    };
    match response.status {
        200..=299 => {
            let rejected = serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|answer| answer.get("rejected").and_then(Value::as_array).cloned())
                .unwrap_or_default();
            if rejected.iter().any(|pushkey| pushkey.as_str() == Some(pusher.pushkey.as_str())) {
                Delivery::Rejected
            } else {
                Delivery::Done
            }
        }
        // The gateway will not take this one, ever: the next.
        400..=499 if !matches!(response.status, 408 | 429) => {
            log::warn!("push gateway {url} refused a notification: status {}", response.status);
            Delivery::Done
        }
        status => Delivery::Failed(format!("status {status}")),
    }
}

/// The request body for one queued notification (count-only if it names no
/// event); `None` if its event is gone.
fn notification(
    app: &Remote,
    pusher: &Pusher,
    pushkey_ts: i64,
    data: &Map<String, Value>,
    item: &PushQueued,
) -> Result<Option<Value>> {
    let event = if item.event_id.is_empty() {
        None
    } else {
        match app.storage().event(&item.event_id)? {
            Some(event) => Some(event),
            None => return Ok(None),
        }
    };
    // Spec: `unread` is the number of unread messages across all rooms.
    let unread = crate::rooms::unread::total_notifications(app, &pusher.user_id)?;
    let mut device_data = data.clone();
    device_data.remove("url");
    let tweaks: Value = serde_json::from_str(&item.tweaks).unwrap_or_else(|_| json!({}));
    let device = json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pushkey_ts / 1000,
        "data": device_data,
        "tweaks": tweaks,
    });
    let Some(event) = event else {
        // A count-only notification (a read receipt lowered the count).
        return Ok(Some(json!({ "notification": { "counts": { "unread": unread }, "devices": [device] } })));
    };
    let mut notification = json!({
        "event_id": item.event_id,
        "room_id": item.room_id,
        "counts": { "unread": unread },
        "prio": if item.high { "high" } else { "low" },
        "devices": [device],
    });
    // `event_id_only`: the gateway gets the IDs and counts, the app fetches
    // the event itself (as Synapse sends it).
    let full = data.get("format").and_then(Value::as_str) != Some("event_id_only");
    if let Some(fields) = notification.as_object_mut().filter(|_| full) {
        fields.insert("type".into(), json!(event.kind));
        fields.insert("sender".into(), json!(event.sender));
        if let Some(content) = event.json.get("content") {
            fields.insert("content".into(), content.clone());
        }
        // Spec: `user_is_target` says whether the member event is about the
        // user notified (their invite); Synapse adds the membership beside.
        if event.kind == "m.room.member" {
            let state_key = event.json.get("state_key").and_then(Value::as_str);
            fields.insert("user_is_target".into(), json!(state_key == Some(pusher.user_id.as_str())));
            if let Some(membership) = event.json.get("content").and_then(|content| content.get("membership"))
            {
                fields.insert("membership".into(), membership.clone());
            }
        }
        let member = crate::rooms::current_state_content(app, &item.room_id, "m.room.member", &event.sender)?;
        if let Some(name) =
            member.as_ref().and_then(|member| member.get("displayname")).and_then(Value::as_str)
        {
            fields.insert("sender_display_name".into(), json!(name));
        }
        let room_name = crate::rooms::current_state_content(app, &item.room_id, "m.room.name", "")?;
        if let Some(name) = room_name.as_ref().and_then(|name| name.get("name")).and_then(Value::as_str) {
            fields.insert("room_name".into(), json!(name));
        }
    }
    Ok(Some(json!({ "notification": notification })))
}

/// POSTs `body` to a gateway URL (checked by `/pushers/set`).
async fn post(app: &Remote, url: &str, body: Vec<u8>) -> Result<RawResponse> {
    send_to_url(app, Method::Post, url, &[], body, MAX_RESPONSE_BYTES, false).await
}

/// Sends `body` to an `http://` or `https://` URL and reads an answer of at
/// most `max_body` bytes. `configured`: the operator wrote the URL (an
/// application service's), so any address may be reached; otherwise a user
/// named it and the address filter of outbound federation applies.
pub(super) async fn send_to_url(
    app: &Remote,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    max_body: usize,
    configured: bool,
) -> Result<RawResponse> {
    let refused = |why: String| Error::matrix(502, "M_UNKNOWN", format!("cannot reach {url}: {why}"));
    let parsed = Url::parse(url).map_err(|error| refused(error.to_string()))?;
    let tls = match parsed.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(refused(format!("scheme {other}"))),
    };
    let (target, path) = url_target(&app.federation, &parsed, tls, &refused).await?;
    let reach = match configured {
        true => transport::Reach::Configured,
        false => transport::Reach::Filtered(&app.federation.allow_ips),
    };
    transport::exchange_via(
        &app.federation,
        &target,
        tls,
        reach,
        method,
        &path,
        headers,
        Some(body),
        max_body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_millis(MAX_BACKOFF_MS));
        assert_eq!(backoff(u32::MAX), Duration::from_millis(MAX_BACKOFF_MS));
    }
}
