//! Accepting events that other servers created: the checks on receipt of a
//! PDU once its signatures are verified and its prev and auth events are here,
//! then storage with the right state and the room's new current state.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu>.
//! Signature and hash checks, and fetching missing events, happen before this
//! (they need the network); this module only reads and writes the database.

use serde_json::Value;

use super::{CurrentState, GroupState, LocalSignatures, StateLookup, load_pdu, state_pdu, wake_room};
use crate::error::{Error, Result};
use crate::protocol::auth;
use crate::protocol::pdu::Pdu;
use crate::protocol::room_version::RoomVersion;
use crate::protocol::state_res;
use crate::rooms::Engine;
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

/// The state before an event.
pub enum Before {
    /// The state after its single prev event, a stored state group, read key
    /// by key: the common case, cheap in a room of thousands of members.
    Group(i64),
    /// A whole state (several prev events resolved, or a state another
    /// server told us).
    Map(StateMap),
}

impl Before {
    /// As a key-by-key lookup.
    fn lookup(&self) -> Box<dyn StateLookup + '_> {
        match self {
            Before::Group(group) => Box::new(GroupState(*group)),
            Before::Map(map) => Box::new(map.clone()),
        }
    }

    /// The whole state.
    pub fn full(self, app: &Engine) -> Result<StateMap> {
        match self {
            Before::Group(group) => app.storage().state_of_group(group),
            Before::Map(map) => Ok(map),
        }
    }
}

/// The state before `pdu`: the state after its single prev event, or the
/// resolution of its prev events' states.
pub fn state_before(app: &Engine, version: &RoomVersion, pdu: &Pdu, known: &KnownStates) -> Result<Before> {
    if let [prev_id] = pdu.prev_events.as_slice() {
        if !known.contains_key(prev_id) {
            let prev = app.storage().event(prev_id)?;
            if let Some(group) = prev.filter(|prev| !prev.outlier).and_then(|prev| prev.state_group) {
                // A prev state event's group already holds it (state after it).
                return Ok(Before::Group(group));
            }
        }
    }
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
    Ok(Before::Map(resolve(app, version, states, None)?))
}

/// Resolves several states into one (state resolution v1, v2 or v2.1, as the
/// room version says). `pending`
/// is an event the states may name that is not stored yet.
pub fn resolve(
    app: &Engine,
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
pub fn accept(app: &Engine, version: &RoomVersion, pdu: &Pdu, known: &KnownStates) -> Result<Outcome> {
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
        auth_events.iter().find(|event| event.state_pair() == Some((kind, state_key)))
    };
    if let Err(error) = auth::auth_check(version, pdu, by_auth_events, &LocalSignatures) {
        return Ok(Outcome::Rejected(error.to_string()));
    }
    // Step 5: auth against the state before the event.
    let before = if pdu.kind == "m.room.create" {
        Before::Map(StateMap::new())
    } else {
        state_before(app, version, pdu, known)?
    };
    let before_lookup = before.lookup();
    let by_state_before =
        |kind: &str, state_key: &str| state_pdu(app, version, before_lookup.as_ref(), kind, state_key);
    if let Err(error) = auth::auth_check(version, pdu, by_state_before, &LocalSignatures) {
        return Ok(Outcome::Rejected(error.to_string()));
    }
    drop(before_lookup);
    // Step 6: soft fail against the current state.
    let room_has_state = app.storage().room_state_group(&pdu.room_id)?.is_some();
    let current = CurrentState(&pdu.room_id);
    let by_current = |kind: &str, state_key: &str| state_pdu(app, version, &current, kind, state_key);
    let soft_failure = if room_has_state {
        auth::auth_check(version, pdu, by_current, &LocalSignatures).err().map(|error| error.to_string())
    } else {
        None
    };
    store(app, version, pdu, before, room_has_state, soft_failure.is_some())?;
    Ok(match soft_failure {
        Some(reason) => Outcome::SoftFailed(reason),
        None => Outcome::Accepted,
    })
}

/// Stores an accepted (or soft-failed) event: its state after, and unless
/// soft-failed, the room's new extremities and current state.
fn store(
    app: &Engine,
    version: &RoomVersion,
    pdu: &Pdu,
    before: Before,
    room_has_state: bool,
    soft_failed: bool,
) -> Result<()> {
    let key = pdu.state_key.as_ref().map(|state_key| (pdu.kind.clone(), state_key.clone()));
    let replaces_state =
        key.as_ref().and_then(|(kind, state_key)| before.lookup().event_id(app, kind, state_key));
    // The whole state after the event, built only where it is needed.
    let after = |before: Before| -> Result<StateMap> {
        let mut after = before.full(app)?;
        if let Some(key) = &key {
            after.insert(key.clone(), pdu.event_id.clone());
        }
        Ok(after)
    };
    let old_extremities: Vec<String> =
        app.storage().forward_extremities(&pdu.room_id)?.into_iter().map(|(id, _)| id).collect();
    let mut extremities: Vec<String> =
        old_extremities.iter().filter(|id| !pdu.prev_events.contains(id)).cloned().collect();
    extremities.push(pdu.event_id.clone());
    // The current state: when the event extends the only extremity it changes
    // at most its own key; otherwise resolve the current state with ours.
    let linear = old_extremities.len() == 1 && pdu.prev_events == old_extremities;
    let state_after = match &before {
        Before::Group(group) => match &key {
            Some(key) => StateAfter::Delta {
                parent: Some(*group),
                changes: StateMap::from([(key.clone(), pdu.event_id.clone())]),
            },
            None => StateAfter::Same(Some(*group)),
        },
        Before::Map(_) => StateAfter::Full(StateMap::new()),
    };
    let (changed, replace_all, state_after) = if soft_failed {
        let state_after = match state_after {
            StateAfter::Full(_) => StateAfter::Full(after(before)?),
            other => other,
        };
        (StateMap::new(), false, state_after)
    } else if !room_has_state {
        let whole = after(before)?;
        (whole.clone(), true, StateAfter::Full(whole))
    } else if linear {
        let mut changed = StateMap::new();
        if let Some(key) = &key {
            changed.insert(key.clone(), pdu.event_id.clone());
        }
        let state_after = match state_after {
            StateAfter::Full(_) => StateAfter::Full(after(before)?),
            other => other,
        };
        (changed, false, state_after)
    } else {
        let whole = after(before)?;
        let current = app.storage().current_state(&pdu.room_id)?;
        let resolved = resolve(app, version, vec![current, whole.clone()], Some(pdu))?;
        let state_after = match state_after {
            StateAfter::Full(_) => StateAfter::Full(whole),
            other => other,
        };
        (resolved, true, state_after)
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
    // A join by someone not joined before may start sharing a room with users
    // whose device lists we cached earlier (see `remote_devices::note_join`).
    let new_join = match (pdu.kind.as_str(), pdu.content.get("membership").and_then(Value::as_str)) {
        ("m.room.member", Some("join")) if !soft_failed => {
            !super::was_joined(app, replaces_state.as_deref())?
        }
        _ => false,
    };
    // A member event that changes the current state by itself moves the
    // push audience on with it: whether its target was joined in the current
    // state before it (see `push_actions::Audiences::state_stored`).
    let lone_member_change = !replace_all
        && pdu.kind == "m.room.member"
        && entries.len() == 1
        && entries.iter().all(|((kind, state_key), event_id, _)| {
            *kind == pdu.kind && Some(state_key) == pdu.state_key.as_ref() && *event_id == pdu.event_id
        });
    let target_was_joined = match pdu.state_key.as_deref().filter(|_| lone_member_change) {
        Some(target) => Some(app.storage().membership(&pdu.room_id, target)?.as_deref() == Some("join")),
        None => None,
    };
    let parent_group = app.storage().room_state_group(&pdu.room_id)?;
    let stream_ordering = app.next_stream_id();
    let new_event = NewEvent {
        replaces_state: replaces_state.as_deref(),
        soft_failed,
        ..NewEvent::of(pdu, stream_ordering)
    };
    // Soft-failed events are not shown, so they notify no one.
    let actions = if soft_failed {
        Default::default()
    } else {
        super::push_actions::actions_at(app, pdu, parent_group)?
    };
    let update = CurrentUpdate {
        state: entries,
        replace_all,
        extremities,
        outbox: Vec::new(),
        pushes: actions.pushes,
        unread: actions.unread,
    };
    let group = app.storage().persist_event(&new_event, state_after, &update)?;
    if let Some(target) = pdu.state_key.as_deref().filter(|_| new_join) {
        super::remote_devices::note_join(app, &pdu.room_id, target)?;
    }
    if pdu.state_key.is_some() || update.replace_all {
        app.push_audiences.state_stored(app, pdu, parent_group, group, target_was_joined);
    }
    app.push_queue.kick(&update.pushes);
    app.search_index.note_new_events();
    if !soft_failed {
        if pdu.kind == "m.room.redaction" {
            super::apply_redaction(app, version, pdu)?;
        }
        super::unread::forget_departed(app, pdu)?;
        wake_room(app, &pdu.room_id, pdu.state_key.as_deref().filter(|_| pdu.kind == "m.room.member"));
    }
    Ok(())
}
