//! Accepting events that other servers created: the checks on receipt of a
//! PDU once its signatures are verified and its prev and auth events are here,
//! then storage with the right state and the room's new current state.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu>.
//! Signature and hash checks, and fetching missing events, happen before this
//! (they need the network); this module only reads and writes the database.

use serde_json::Value;

use super::{LocalSignatures, load_pdu, state_pdu, wake_room};
use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::auth;
use crate::protocol::pdu::Pdu;
use crate::protocol::room_version::RoomVersion;
use crate::protocol::state_res;
use crate::storage::{CurrentUpdate, NewEvent, StateAfter, StateMap};

/// What happened to an incoming PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and part of the room.
    Accepted,
    /// Stored, but it fails against the current state: kept out of the
    /// timeline and not an extremity (spec: soft failure).
    SoftFailed(String),
    /// Not allowed by the auth rules; not stored.
    Rejected(String),
    /// We had it already.
    Duplicate,
}

/// States after prev events that are outliers here, as another server told
/// us (`/state_ids`), keyed by the prev event's ID.
pub type KnownStates = std::collections::HashMap<String, StateMap>;

/// The state before `pdu`: the state after its single prev event, or the
/// resolution of its prev events' states.
pub fn state_before(app: &App, version: &RoomVersion, pdu: &Pdu, known: &KnownStates) -> Result<StateMap> {
    let mut states = Vec::new();
    for prev_id in &pdu.prev_events {
        let prev = app
            .storage()
            .event(prev_id)?
            .ok_or_else(|| Error::Internal(format!("prev event {prev_id} is missing")))?;
        let mut state = match (known.get(prev_id), prev.state_group) {
            (Some(state), _) => state.clone(),
            (None, Some(group)) if !prev.outlier => app.storage().state_of_group(group)?,
            // Outliers carry no state group: their state is not known.
            _ => return Err(Error::Internal(format!("the state at prev event {prev_id} is not known"))),
        };
        if let Some(state_key) = &prev.state_key {
            state.insert((prev.kind.clone(), state_key.clone()), prev.event_id.clone());
        }
        states.push(state);
    }
    resolve(app, version, states, None)
}

/// Resolves several states into one (state resolution v2 / v2.1). `pending`
/// is an event the states may name that is not stored yet.
pub fn resolve(
    app: &App,
    version: &RoomVersion,
    mut states: Vec<StateMap>,
    pending: Option<&Pdu>,
) -> Result<StateMap> {
    states.dedup();
    match states.len() {
        0 => Ok(StateMap::new()),
        1 => Ok(states.pop().unwrap_or_default()),
        _ => {
            let fetch = |event_id: &str| match pending {
                Some(pdu) if pdu.event_id == event_id => Some(pdu.clone()),
                _ => load_pdu(app, version, event_id).ok().flatten(),
            };
            state_res::resolve(version, &states, fetch, &LocalSignatures)
                .map_err(|error| Error::Internal(format!("state resolution failed: {error}")))
        }
    }
}

/// Runs the auth checks on receipt and stores the event. The caller has
/// verified signatures and hashes and made sure the prev and auth events are
/// stored.
pub fn accept(app: &App, version: &RoomVersion, pdu: &Pdu, known: &KnownStates) -> Result<Outcome> {
    if app.storage().event(&pdu.event_id)?.is_some_and(|event| !event.outlier) {
        return Ok(Outcome::Duplicate);
    }
    // Step 4: auth against the event's own auth events.
    let fetch = |event_id: &str| load_pdu(app, version, event_id).ok().flatten();
    if let Err(error) = auth::check_auth_events(version, pdu, fetch) {
        return Ok(Outcome::Rejected(error.to_string()));
    }
    let mut auth_events: Vec<Pdu> = pdu.auth_events.iter().filter_map(|id| fetch(id)).collect();
    // From v12 the create event is named by the room ID, not listed.
    if version.room_id_from_create_event && pdu.kind != "m.room.create" {
        if let Some(create) = fetch(&format!("${}", pdu.room_id.trim_start_matches('!'))) {
            auth_events.push(create);
        }
    }
    let by_auth_events = |kind: &str, state_key: &str| {
        auth_events.iter().find(|event| event.state_pair() == Some((kind, state_key))).cloned()
    };
    if let Err(error) = auth::auth_check(version, pdu, by_auth_events, &LocalSignatures) {
        return Ok(Outcome::Rejected(error.to_string()));
    }
    // Step 5: auth against the state before the event.
    let before =
        if pdu.kind == "m.room.create" { StateMap::new() } else { state_before(app, version, pdu, known)? };
    let by_state_before = |kind: &str, state_key: &str| state_pdu(app, version, &before, kind, state_key);
    if let Err(error) = auth::auth_check(version, pdu, by_state_before, &LocalSignatures) {
        return Ok(Outcome::Rejected(error.to_string()));
    }
    // Step 6: soft fail against the current state.
    let current = app.storage().current_state(&pdu.room_id)?;
    let by_current = |kind: &str, state_key: &str| state_pdu(app, version, &current, kind, state_key);
    let soft_failure = if current.is_empty() {
        None
    } else {
        auth::auth_check(version, pdu, by_current, &LocalSignatures).err().map(|error| error.to_string())
    };
    store(app, version, pdu, &before, &current, soft_failure.is_some())?;
    Ok(match soft_failure {
        Some(reason) => Outcome::SoftFailed(reason),
        None => Outcome::Accepted,
    })
}

/// How to store the state after an event: as a delta on its single prev
/// event's state group where possible, whole otherwise.
fn state_after_of(
    app: &App,
    pdu: &Pdu,
    key: Option<(String, String)>,
    before: &StateMap,
    after: StateMap,
) -> Result<StateAfter> {
    let [prev_id] = pdu.prev_events.as_slice() else { return Ok(StateAfter::Full(after)) };
    let Some(prev) = app.storage().event(prev_id)? else { return Ok(StateAfter::Full(after)) };
    let Some(parent) = prev.state_group else { return Ok(StateAfter::Full(after)) };
    // The prev event's group is the state after it; `before` adds the prev
    // event itself when it is a state event, and that group already has it.
    let mut changes = StateMap::new();
    if let Some(state_key) = &prev.state_key {
        let prev_key = (prev.kind.clone(), state_key.clone());
        if before.get(&prev_key) != Some(&prev.event_id) {
            return Ok(StateAfter::Full(after));
        }
    }
    match key {
        Some(key) => {
            changes.insert(key, pdu.event_id.clone());
            Ok(StateAfter::Delta { parent: Some(parent), changes })
        }
        None => Ok(StateAfter::Same(Some(parent))),
    }
}

/// Stores an accepted (or soft-failed) event: its state after, and unless
/// soft-failed, the room's new extremities and current state.
fn store(
    app: &App,
    version: &RoomVersion,
    pdu: &Pdu,
    before: &StateMap,
    current: &StateMap,
    soft_failed: bool,
) -> Result<()> {
    let key = pdu.state_key.as_ref().map(|state_key| (pdu.kind.clone(), state_key.clone()));
    let mut after = before.clone();
    if let Some(key) = &key {
        after.insert(key.clone(), pdu.event_id.clone());
    }
    let replaces_state = key.as_ref().and_then(|key| before.get(key).cloned());
    let old_extremities: Vec<String> =
        app.storage().forward_extremities(&pdu.room_id)?.into_iter().map(|(id, _)| id).collect();
    let mut extremities: Vec<String> =
        old_extremities.iter().filter(|id| !pdu.prev_events.contains(id)).cloned().collect();
    extremities.push(pdu.event_id.clone());
    // The current state: when the event extends the only extremity it changes
    // at most its own key; otherwise resolve the current state with ours.
    let linear = old_extremities.len() == 1 && pdu.prev_events == old_extremities;
    let (changed, replace_all) = if soft_failed {
        (StateMap::new(), false)
    } else if current.is_empty() {
        (after.clone(), true)
    } else if linear {
        let mut changed = StateMap::new();
        if let Some(key) = &key {
            changed.insert(key.clone(), pdu.event_id.clone());
        }
        (changed, false)
    } else {
        (resolve(app, version, vec![current.clone(), after.clone()], Some(pdu))?, true)
    };
    let mut entries = Vec::with_capacity(changed.len());
    for ((kind, state_key), event_id) in &changed {
        let membership = if kind != "m.room.member" {
            None
        } else if event_id == &pdu.event_id {
            pdu.content.get("membership").and_then(Value::as_str).map(str::to_owned)
        } else {
            app.storage()
                .event(event_id)?
                .and_then(|event| event.json.get("content")?.get("membership")?.as_str().map(str::to_owned))
        };
        entries.push(((kind.clone(), state_key.clone()), event_id.clone(), membership));
    }
    let state_after = state_after_of(app, pdu, key, before, after)?;
    let relation = pdu.content.get("m.relates_to");
    let stream_ordering = app.next_stream_id();
    let new_event = NewEvent {
        stream_ordering,
        event_id: &pdu.event_id,
        room_id: &pdu.room_id,
        kind: &pdu.kind,
        state_key: pdu.state_key.as_deref(),
        sender: &pdu.sender,
        depth: pdu.depth,
        origin_server_ts: pdu.origin_server_ts,
        json: &pdu.json,
        replaces_state: replaces_state.as_deref(),
        device_id: None,
        txn_id: None,
        rel_type: relation.and_then(|relation| relation.get("rel_type")).and_then(Value::as_str),
        relates_to: relation.and_then(|relation| relation.get("event_id")).and_then(Value::as_str),
        outlier: false,
        soft_failed,
    };
    let update = CurrentUpdate { state: entries, replace_all, extremities };
    app.storage().persist_event(&new_event, state_after, &update)?;
    if !soft_failed {
        if pdu.kind == "m.room.redaction" {
            super::apply_redaction(app, version, pdu)?;
        }
        wake_room(app, &pdu.room_id, pdu.state_key.as_deref().filter(|_| pdu.kind == "m.room.member"));
    }
    Ok(())
}
