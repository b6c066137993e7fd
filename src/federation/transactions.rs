//! Inbound transactions: `PUT /_matrix/federation/v1/send/{txnId}` with its
//! PDUs and EDUs (typing, receipts, presence, device lists, to-device).
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#transactions>.

use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::acl;
use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::room_version::RoomVersion;
use crate::remote::pdus::{self, server_of};
use crate::request::{Request, Response};
use crate::rooms::incoming::Outcome;
use crate::rooms::{self, outbox};
use crate::storage::{Receipt, now_ms};

/// Spec: a transaction carries at most 50 PDUs and 100 EDUs.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// `PUT /_matrix/federation/v1/send/{txnId}`.
pub async fn receive(app: &Rc<App>, request: &Request, origin: &str, txn_id: &str) -> Result<Response> {
    if let Some(answer) = app.storage().inbound_transaction(origin, txn_id)? {
        return Ok(Response::ok(serde_json::from_str(&answer).unwrap_or_else(|_| json!({"pdus": {}}))));
    }
    let body = request.json_object()?;
    let pdus = match body.get("pdus") {
        Some(Value::Array(pdus)) => pdus.clone(),
        None => Vec::new(),
        Some(_) => return Err(Error::BadJson("`pdus` must be a list".into())),
    };
    let edus = match body.get("edus") {
        Some(Value::Array(edus)) => edus.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(Error::BadJson("`edus` must be a list".into())),
    };
    if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
        return Err(Error::BadJson(format!(
            "a transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    // The sender is reachable again: send it what we have queued.
    app.storage().destination_up(origin)?;
    outbox::nudge(app, origin);

    let mut results = Map::new();
    for pdu in pdus {
        let Value::Object(pdu) = pdu else { continue };
        let (event_id, result) = receive_pdu(app, origin, pdu).await;
        if let Some(event_id) = event_id {
            results.insert(event_id, result);
        }
    }
    for edu in edus {
        if let Err(error) = receive_edu(app, origin, &edu) {
            log::debug!("EDU from {origin} dropped: {error}");
        }
    }
    let answer = json!({ "pdus": results });
    app.storage().record_inbound_transaction(origin, txn_id, &answer.to_string())?;
    Ok(Response::ok(answer))
}

/// Handles one PDU; returns its event ID (if it has one) and the per-PDU result.
async fn receive_pdu(app: &App, origin: &str, json: Map<String, Value>) -> (Option<String>, Value) {
    let failure = |event_id: Option<String>, message: String| (event_id, json!({ "error": message }));
    let Some(room_id) = json.get("room_id").and_then(Value::as_str).map(str::to_owned) else {
        return failure(None, "the PDU has no room_id".into());
    };
    let version = match app.storage().room_version(&room_id) {
        Ok(Some(version)) => version,
        _ => return failure(None, format!("this server is not in {room_id}")),
    };
    let Some(version) = RoomVersion::from_id(&version) else {
        return failure(None, format!("room version {version} is not supported"));
    };
    // The ID the event would have, so a failure can be reported against it.
    let claimed_id = {
        let mut unsigned = json.clone();
        if version.event_id_format != crate::protocol::room_version::EventIdFormat::V1 {
            unsigned.remove("event_id");
        }
        crate::protocol::hashes::event_id(&unsigned, &version).ok()
    };
    if !acl::server_allowed(app, &room_id, origin) {
        return failure(claimed_id, format!("{origin} is denied by the room's server ACL"));
    }
    let pdu = match pdus::verify(app, &version, json).await {
        Ok(pdu) => pdu,
        Err(error) => return failure(claimed_id, error.to_string()),
    };
    let event_id = Some(pdu.event_id.clone());
    let outcome = pdus::receive(app, origin, &version, pdu).await;
    log::debug!("PDU {} from {origin}: {outcome:?}", event_id.as_deref().unwrap_or_default());
    match outcome {
        Ok(Outcome::Accepted | Outcome::Duplicate | Outcome::SoftFailed(_)) => (event_id, json!({})),
        Ok(Outcome::Rejected(reason)) => failure(event_id, reason),
        Err(error) => failure(event_id, error.to_string()),
    }
}

/// Handles one EDU. Unknown EDU types are ignored, as the spec says.
fn receive_edu(app: &App, origin: &str, edu: &Value) -> Result<()> {
    let kind = edu.get("edu_type").and_then(Value::as_str).unwrap_or_default();
    let content = edu.get("content").cloned().unwrap_or(Value::Null);
    match kind {
        "m.typing" => {
            let room_id = content.get("room_id").and_then(Value::as_str).unwrap_or_default();
            let user_id = content.get("user_id").and_then(Value::as_str).unwrap_or_default();
            let typing = content.get("typing").and_then(Value::as_bool).unwrap_or(false);
            check_remote_member(app, origin, room_id, user_id)?;
            if app.typing.set(room_id, user_id, typing, 30_000) {
                rooms::wake_room(app, room_id, None);
            }
        }
        "m.receipt" => {
            let Some(rooms) = content.as_object() else { return Ok(()) };
            for (room_id, by_type) in rooms {
                let Some(by_type) = by_type.as_object() else { continue };
                for (receipt_type, by_user) in by_type {
                    if receipt_type != "m.read" {
                        continue;
                    }
                    let Some(by_user) = by_user.as_object() else { continue };
                    for (user_id, receipt) in by_user {
                        if check_remote_member(app, origin, room_id, user_id).is_err() {
                            continue;
                        }
                        let event_ids =
                            receipt.get("event_ids").and_then(Value::as_array).cloned().unwrap_or_default();
                        let thread_id =
                            receipt.pointer("/data/thread_id").and_then(Value::as_str).unwrap_or("");
                        let ts = receipt.pointer("/data/ts").and_then(Value::as_i64).unwrap_or_else(now_ms);
                        for event_id in event_ids.iter().filter_map(Value::as_str) {
                            if app.storage().event(event_id)?.is_none_or(|event| event.room_id != *room_id) {
                                continue;
                            }
                            let receipt = Receipt {
                                user_id: user_id.clone(),
                                receipt_type: receipt_type.clone(),
                                thread_id: thread_id.to_string(),
                                event_id: event_id.to_string(),
                                ts,
                            };
                            let stream_id = app.next_stream_id();
                            app.storage().set_receipt(room_id, &receipt, stream_id)?;
                        }
                        rooms::wake_room(app, room_id, None);
                    }
                }
            }
        }
        "m.presence" => rooms::presence::receive_edu(app, origin, &content)?,
        "m.direct_to_device" => super::e2ee::receive_direct_to_device(app, origin, &content)?,
        "m.device_list_update" => super::e2ee::receive_device_list_update(app, origin, &content)?,
        "m.signing_key_update" => super::e2ee::receive_signing_key_update(app, origin, &content)?,
        // Other EDU types are accepted and dropped, as the spec says.
        _ => {}
    }
    Ok(())
}

/// An EDU about `user_id` in `room_id` must come from the user's server, for a
/// room member, and pass the room's ACL.
fn check_remote_member(app: &App, origin: &str, room_id: &str, user_id: &str) -> Result<()> {
    if server_of(user_id) != Some(origin) {
        return Err(Error::Forbidden(format!("{origin} cannot speak for {user_id}")));
    }
    if app.storage().membership(room_id, user_id)?.as_deref() != Some("join") {
        return Err(Error::Forbidden(format!("{user_id} is not in {room_id}")));
    }
    if !acl::server_allowed(app, room_id, origin) {
        return Err(Error::Forbidden(format!("{origin} is denied by the server ACL")));
    }
    Ok(())
}
