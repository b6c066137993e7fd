//! Typing notifications, receipts, read markers, account data and tags.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#typing-notifications>,
//! <https://spec.matrix.org/latest/client-server-api/#receipts>,
//! <https://spec.matrix.org/latest/client-server-api/#fully-read-markers>,
//! <https://spec.matrix.org/latest/client-server-api/#client-config>,
//! <https://spec.matrix.org/latest/client-server-api/#room-tagging>.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::push;
use crate::rooms::{self, outbox};
use crate::storage::{Receipt, now_ms};

/// Spec: account data content is at most 64 KiB like events; we cap it there.
const MAX_ACCOUNT_DATA_BYTES: usize = 65_536;

fn require_joined(app: &App, room_id: &str, user_id: &str) -> Result<()> {
    if app.storage().membership(room_id, user_id)?.as_deref() != Some("join") {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    Ok(())
}

/// `PUT /rooms/{roomId}/typing/{userId}`.
pub fn typing(app: &Rc<App>, request: &Request, room_id: &str, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only set your own typing state".into()));
    }
    let body = request.json_object()?;
    let typing = body
        .get("typing")
        .and_then(Value::as_bool)
        .ok_or_else(|| Error::BadJson("`typing` must be a boolean".into()))?;
    let timeout = match body.get("timeout") {
        None | Some(Value::Null) => 30_000,
        Some(value) => value.as_i64().ok_or_else(|| Error::BadJson("`timeout` must be an integer".into()))?,
    };
    require_joined(app, room_id, user_id)?;
    if app.typing.set(room_id, user_id, typing, timeout) {
        rooms::wake_room(app, room_id, None);
        let edu = json!({
            "edu_type": "m.typing",
            "content": { "room_id": room_id, "user_id": user_id, "typing": typing },
        });
        outbox::queue_edu(app, &outbox::destinations(app, room_id, None)?, &edu)?;
        if typing {
            schedule_typing_expiry(app);
        }
    }
    Ok(Response::ok(json!({})))
}

/// Wakes syncs when a typing notification runs out.
fn schedule_typing_expiry(app: &Rc<App>) {
    let Some(expiry) = app.typing.next_expiry() else { return };
    let wait = Duration::from_millis((expiry - now_ms()).max(0) as u64 + 1);
    let app_for_timer = app.clone();
    app.executor
        .spawn(async move {
            smol::Timer::after(wait).await;
            for room_id in app_for_timer.typing.expire() {
                rooms::wake_room(&app_for_timer, &room_id, None);
            }
        })
        .detach();
}

/// Stores a receipt and wakes the room.
fn put_receipt(
    app: &App,
    room_id: &str,
    user_id: &str,
    receipt_type: &str,
    event_id: &str,
    thread_id: &str,
) -> Result<()> {
    let Some(event) = app.storage().event(event_id)?.filter(|event| event.room_id == room_id) else {
        return Err(Error::NotFound("the event is not in this room".into()));
    };
    let receipt = Receipt {
        user_id: user_id.to_string(),
        receipt_type: receipt_type.to_string(),
        thread_id: thread_id.to_string(),
        event_id: event_id.to_string(),
        ts: now_ms(),
    };
    let stream_id = app.next_stream_id();
    app.storage().set_receipt(room_id, &receipt, stream_id)?;
    // A read receipt that lowers the unread count updates the phone's badge.
    if rooms::unread::read_up_to(app, user_id, &event, thread_id)? {
        rooms::push_queue::queue_badge(app, user_id)?;
    }
    if receipt_type == "m.read.private" {
        app.notifier.wake([user_id]);
    } else {
        rooms::wake_room(app, room_id, None);
        let mut data = json!({ "ts": receipt.ts });
        if !thread_id.is_empty() {
            data["thread_id"] = json!(thread_id);
        }
        let edu = json!({
            "edu_type": "m.receipt",
            "content": { room_id: { receipt_type: { user_id: { "event_ids": [event_id], "data": data } } } },
        });
        outbox::queue_edu(app, &outbox::destinations(app, room_id, None)?, &edu)?;
    }
    Ok(())
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub fn receipt(
    app: &App,
    request: &Request,
    room_id: &str,
    receipt_type: &str,
    event_id: &str,
) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    require_joined(app, room_id, &owner.user_id)?;
    let thread_id = match body.get("thread_id") {
        None | Some(Value::Null) => "",
        Some(Value::String(thread)) if thread == "main" || thread.starts_with('$') => thread.as_str(),
        Some(_) => return Err(Error::InvalidParam("`thread_id` must be \"main\" or an event ID".into())),
    };
    match receipt_type {
        "m.read" | "m.read.private" => {
            put_receipt(app, room_id, &owner.user_id, receipt_type, event_id, thread_id)?
        }
        "m.fully_read" => set_fully_read(app, &owner.user_id, room_id, event_id)?,
        other => return Err(Error::InvalidParam(format!("unknown receipt type {other}"))),
    }
    Ok(Response::ok(json!({})))
}

fn set_fully_read(app: &App, user_id: &str, room_id: &str, event_id: &str) -> Result<()> {
    if app.storage().event(event_id)?.is_none_or(|event| event.room_id != room_id) {
        return Err(Error::NotFound("the event is not in this room".into()));
    }
    set_account_data(app, user_id, room_id, "m.fully_read", &json!({ "event_id": event_id }))
}

/// `POST /rooms/{roomId}/read_markers`.
pub fn read_markers(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    require_joined(app, room_id, &owner.user_id)?;
    let field = |name: &str| -> Result<Option<String>> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(id)) => Ok(Some(id.clone())),
            Some(_) => Err(Error::BadJson(format!("`{name}` must be an event ID"))),
        }
    };
    if let Some(event_id) = field("m.fully_read")? {
        set_fully_read(app, &owner.user_id, room_id, &event_id)?;
    }
    if let Some(event_id) = field("m.read")? {
        put_receipt(app, room_id, &owner.user_id, "m.read", &event_id, "")?;
    }
    if let Some(event_id) = field("m.read.private")? {
        put_receipt(app, room_id, &owner.user_id, "m.read.private", &event_id, "")?;
    }
    Ok(Response::ok(json!({})))
}

fn set_account_data(app: &App, user_id: &str, room_id: &str, kind: &str, content: &Value) -> Result<()> {
    let text = content.to_string();
    if text.len() > MAX_ACCOUNT_DATA_BYTES {
        return Err(Error::TooLarge("account data is limited to 64 KiB".into()));
    }
    let stream_id = app.next_stream_id();
    app.storage().set_account_data(user_id, room_id, kind, &text, stream_id)?;
    if room_id.is_empty() && kind == crate::rooms::visibility::IGNORED_USER_LIST {
        // Events from ignored users notify no one: new events follow the new list.
        app.push_rules.forget_user(user_id);
    }
    app.notifier.wake([user_id]);
    Ok(())
}

fn own_user(app: &App, request: &Request, user_id: &str) -> Result<String> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only access your own account data".into()));
    }
    Ok(owner.user_id)
}

/// `GET/PUT /user/{userId}/account_data/{type}` and the per-room form.
pub fn account_data(
    app: &App,
    request: &Request,
    user_id: &str,
    room_id: Option<&str>,
    kind: &str,
) -> Result<Response> {
    let user_id = own_user(app, request, user_id)?;
    let room_id = room_id.unwrap_or("");
    if request.method == http_types::Method::Put {
        if kind == "m.fully_read" || kind == "m.push_rules" {
            return Err(Error::matrix(400, "M_BAD_JSON", format!("{kind} cannot be set here")));
        }
        let content = request.json_object()?;
        set_account_data(app, &user_id, room_id, kind, &Value::Object(content))?;
        return Ok(Response::ok(json!({})));
    }
    if room_id.is_empty() && kind == push::ACCOUNT_DATA_TYPE {
        // The push rules are always there, as the current merged ruleset.
        return Ok(Response::ok(push::account_data_content(&push::ruleset(app, &user_id)?)));
    }
    let content = app.storage().account_data(&user_id, room_id, kind)?;
    let content = content.ok_or_else(|| Error::NotFound("no account data of that type".into()))?;
    Ok(Response::ok(serde_json::from_str(&content).unwrap_or_else(|_| json!({}))))
}

fn tags_of(app: &App, user_id: &str, room_id: &str) -> Result<Map<String, Value>> {
    let content = app.storage().account_data(user_id, room_id, "m.tag")?;
    let content: Value =
        content.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_else(|| json!({}));
    Ok(content.get("tags").and_then(Value::as_object).cloned().unwrap_or_default())
}

/// `GET /user/{userId}/rooms/{roomId}/tags`.
pub fn get_tags(app: &App, request: &Request, user_id: &str, room_id: &str) -> Result<Response> {
    let user_id = own_user(app, request, user_id)?;
    Ok(Response::ok(json!({ "tags": tags_of(app, &user_id, room_id)? })))
}

/// `PUT/DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub fn change_tag(app: &App, request: &Request, user_id: &str, room_id: &str, tag: &str) -> Result<Response> {
    let user_id = own_user(app, request, user_id)?;
    let mut tags = tags_of(app, &user_id, room_id)?;
    if request.method == http_types::Method::Put {
        let body = request.json_object()?;
        if let Some(order) = body.get("order") {
            if !order.is_number() {
                return Err(Error::BadJson("`order` must be a number".into()));
            }
        }
        if tag.len() > 255 {
            return Err(Error::InvalidParam("tags are at most 255 bytes".into()));
        }
        tags.insert(tag.to_string(), Value::Object(body));
    } else {
        tags.remove(tag);
    }
    set_account_data(app, &user_id, room_id, "m.tag", &json!({ "tags": tags }))?;
    Ok(Response::ok(json!({})))
}
