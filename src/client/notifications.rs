//! `GET /notifications`: the events the user was (or would have been)
//! notified about, newest first, paged with `from`/`next_token`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3notifications>.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::format::{Viewer, client_event};
use crate::rooms::notifications;

/// Synapse's default page size when the client gives no `limit`.
const DEFAULT_LIMIT: usize = 50;
/// At most this many per page: each entry is a formatted event.
const MAX_LIMIT: usize = 100;

/// `GET /notifications?from=&limit=&only=highlight`.
pub fn notifications(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let before = match request.query("from") {
        Some(from) => {
            from.parse::<i64>().map_err(|_| Error::InvalidParam(format!("invalid `from` {from:?}")))?
        }
        None => i64::MAX,
    };
    let limit = match request.query("limit") {
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| Error::InvalidParam("`limit` must be a non-negative integer".into()))?
            .min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    // Synapse reads `only` as "contains highlight"; so do we.
    let only_highlight = request.query("only").is_some_and(|only| only.contains("highlight"));
    let page = notifications::list(app, &owner.user_id, before, limit, only_highlight)?;
    let viewer = Viewer { user_id: &owner.user_id, device_id: Some(&owner.device_id) };
    let entries: Vec<Value> = page
        .notifications
        .iter()
        .map(|notification| {
            json!({
                "actions": notification.actions,
                "event": client_event(app, &notification.event, Some(viewer), false),
                "read": notification.read,
                "room_id": notification.event.room_id,
                "ts": notification.event.origin_server_ts,
            })
        })
        .collect();
    let mut answer = json!({ "notifications": entries });
    if let Some(next) = page.next {
        answer["next_token"] = json!(next.to_string());
    }
    Ok(Response::ok(answer))
}
