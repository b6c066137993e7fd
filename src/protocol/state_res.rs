//! State resolution v2 (rooms v2-v11) and v2.1 (room v12): merging the room
//! states at the tips of a forked DAG into one. Room v1's algorithm is in
//! [`v1`].
//!
//! Pure: events come from a `fetch_event` closure, which must return accepted
//! events and events rejected against the state before them (they take part,
//! per the spec), never events rejected against their own auth chain.
//! Spec: <https://spec.matrix.org/latest/rooms/v2/#state-resolution> and
//! <https://spec.matrix.org/latest/rooms/v12/#state-resolution> (v2.1).

#[cfg(test)]
mod tests;
mod v1;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::Value;

use super::auth::{SignatureCheck, auth_check};
use super::pdu::Pdu;
use super::power_levels::{RoomPower, UserPower};
use super::room_version::{RoomVersion, StateResVersion};

/// A room state: `(type, state_key)` to event ID.
pub type StateMap = BTreeMap<(String, String), String>;

/// Why state could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateResError {
    /// An event in a state set or an auth chain could not be fetched.
    MissingEvent(String),
}

impl std::fmt::Display for StateResError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateResError::MissingEvent(id) => write!(f, "event {id} is missing"),
        }
    }
}

/// The events the algorithm works on, fetched once.
pub(crate) type Events = HashMap<String, Pdu>;

/// Resolves `state_sets` into one state, per the room version's algorithm.
pub fn resolve(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch_event: impl Fn(&str) -> Option<Pdu>,
    signatures: &dyn SignatureCheck,
) -> Result<StateMap, StateResError> {
    if version.state_res == StateResVersion::V1 {
        return v1::resolve(version, state_sets, fetch_event, signatures);
    }
    // Unconflicted state map and conflicted state set: a key is unconflicted
    // when every state set has it with the same event.
    let (unconflicted, conflicted) = split_conflicted(state_sets);
    if conflicted.is_empty() {
        return Ok(unconflicted);
    }
    let events = load_events(version, state_sets, &fetch_event)?;

    let full_conflicted = full_conflicted_set(version, &events, state_sets, &conflicted);

    // 1. Select the set X of all power events in the full conflicted set; for
    //    each, add the events of its auth chain that are also in the full
    //    conflicted set. Sort X by the reverse topological power ordering.
    let mut power_set = BTreeSet::new();
    for id in full_conflicted.iter().filter(|id| is_power_event(&events[*id])) {
        power_set.insert(id.clone());
        let chain = auth_chain(&events, [id]);
        power_set.extend(chain.into_iter().filter(|a| full_conflicted.contains(a)));
    }
    let power_sorted = reverse_topological_power_order(version, &events, &power_set);

    // 2. Apply the iterative auth checks, starting from the unconflicted state
    //    map (v2.1: from an empty map), to get a partially resolved state.
    let start = match version.state_res {
        StateResVersion::V2_1 => StateMap::new(),
        _ => unconflicted.clone(),
    };
    let partial = iterative_auth_checks(version, &events, start, &power_sorted, signatures);

    // 3. Order the remaining events by the mainline ordering based on the
    //    power levels event of the partially resolved state.
    let remaining: Vec<String> = full_conflicted.into_iter().filter(|id| !power_set.contains(id)).collect();
    let power_levels_key = ("m.room.power_levels".to_owned(), String::new());
    let sorted = mainline_order(&events, partial.get(&power_levels_key), remaining);

    // 4. Apply the iterative auth checks on the partially resolved state and
    //    the list from step 3.
    let mut resolved = iterative_auth_checks(version, &events, partial, &sorted, signatures);

    // 5. Replace any event with the one at the same key in the unconflicted
    //    state map, if there is one.
    resolved.extend(unconflicted);
    Ok(resolved)
}

/// Splits the state sets into the unconflicted state map and the conflicted
/// state set.
pub fn split_conflicted(state_sets: &[StateMap]) -> (StateMap, BTreeSet<String>) {
    let keys: BTreeSet<&(String, String)> = state_sets.iter().flat_map(BTreeMap::keys).collect();
    let mut unconflicted = StateMap::new();
    let mut conflicted = BTreeSet::new();
    for key in keys {
        let values: BTreeSet<Option<&String>> = state_sets.iter().map(|set| set.get(key)).collect();
        match values.iter().next() {
            Some(Some(id)) if values.len() == 1 => {
                unconflicted.insert(key.clone(), (*id).clone());
            }
            _ => conflicted.extend(values.into_iter().flatten().cloned()),
        }
    }
    (unconflicted, conflicted)
}

/// The full conflicted set: the conflicted state set, the auth difference
/// and (since v2.1) the conflicted state subgraph.
pub(crate) fn full_conflicted_set(
    version: &RoomVersion,
    events: &Events,
    state_sets: &[StateMap],
    conflicted: &BTreeSet<String>,
) -> BTreeSet<String> {
    // Auth difference: the union of the sets' full auth chains minus their
    // intersection.
    let chains: Vec<BTreeSet<String>> =
        state_sets.iter().map(|set| auth_chain(events, set.values())).collect();
    let union: BTreeSet<&String> = chains.iter().flatten().collect();
    let mut full_conflicted: BTreeSet<String> =
        union.into_iter().filter(|id| !chains.iter().all(|chain| chain.contains(*id))).cloned().collect();
    full_conflicted.extend(conflicted.iter().cloned());
    if version.state_res == StateResVersion::V2_1 {
        full_conflicted.extend(conflicted_subgraph(events, conflicted));
    }
    full_conflicted
}

/// Fetches every event of the state sets and of their auth chains, plus (v12)
/// the create event the room ID names.
fn load_events(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch_event: &impl Fn(&str) -> Option<Pdu>,
) -> Result<Events, StateResError> {
    let mut events = Events::new();
    let mut queue: VecDeque<String> = state_sets.iter().flat_map(|s| s.values().cloned()).collect();
    while let Some(id) = queue.pop_front() {
        if events.contains_key(&id) {
            continue;
        }
        let event = fetch_event(&id).ok_or_else(|| StateResError::MissingEvent(id.clone()))?;
        queue.extend(event.auth_events.iter().cloned());
        if version.room_id_from_create_event {
            queue.push_back(create_id_of(&event));
        }
        events.insert(id, event);
    }
    Ok(events)
}

/// v12: the create event's ID is the room ID with `$` for `!`.
fn create_id_of(event: &Pdu) -> String {
    format!("${}", event.room_id.trim_start_matches('!'))
}

/// The auth chain of the `start` events: everything reachable through
/// `auth_events`, excluding the start events unless reached from another.
fn auth_chain<'a>(events: &Events, start: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    let mut chain = BTreeSet::new();
    let mut stack: Vec<&String> =
        start.into_iter().filter_map(|id| events.get(id)).flat_map(|event| &event.auth_events).collect();
    while let Some(id) = stack.pop() {
        if chain.insert(id.clone()) {
            if let Some(event) = events.get(id) {
                stack.extend(&event.auth_events);
            }
        }
    }
    chain
}

/// v2.1, the conflicted state subgraph: every event on an auth-events path
/// between two events of the conflicted state set, endpoints included. These
/// are the events reachable from the conflicted set that can themselves reach
/// it.
fn conflicted_subgraph(events: &Events, conflicted: &BTreeSet<String>) -> BTreeSet<String> {
    let mut reachable = auth_chain(events, conflicted);
    reachable.extend(conflicted.iter().cloned());
    // Reverse edges within the reachable part, then walk back from the
    // conflicted events: whoever we meet has a path to one of them.
    let mut cited_by: HashMap<&str, Vec<&str>> = HashMap::new();
    for id in &reachable {
        for auth_id in events.get(id).map(|e| &e.auth_events[..]).unwrap_or(&[]) {
            cited_by.entry(auth_id.as_str()).or_default().push(id.as_str());
        }
    }
    let mut subgraph: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<&str> = conflicted.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        if subgraph.insert(id.to_owned()) {
            stack.extend(cited_by.get(id).into_iter().flatten());
        }
    }
    subgraph
}

/// A power event: `m.room.power_levels`, `m.room.join_rules`, or a member
/// event with membership leave or ban whose sender is not its target.
/// (The create event is one too in practice: Synapse and ruma count it, and
/// it can only be conflicted in a broken room.)
fn is_power_event(event: &Pdu) -> bool {
    match (event.kind.as_str(), event.state_key.as_deref()) {
        ("m.room.power_levels" | "m.room.join_rules" | "m.room.create", Some("")) => true,
        ("m.room.member", Some(target)) => {
            let membership = event.content.get("membership").and_then(Value::as_str);
            matches!(membership, Some("leave" | "ban")) && target != event.sender
        }
        _ => false,
    }
}

/// The power of an event's sender according to the power levels and create
/// events among its own auth events (v12: the create event the room ID names).
fn sender_power(version: &RoomVersion, events: &Events, event: &Pdu) -> UserPower {
    let auth_event = |kind: &str| {
        event
            .auth_events
            .iter()
            .filter_map(|id| events.get(id))
            .find(|auth| auth.kind == kind && auth.state_key.as_deref() == Some(""))
    };
    let create = match version.room_id_from_create_event {
        true => events.get(&create_id_of(event)),
        false => auth_event("m.room.create"),
    };
    RoomPower::new(version, auth_event("m.room.power_levels"), create).user_power(&event.sender)
}

/// The reverse topological power ordering of `ids`: Kahn's algorithm over the
/// auth events between them, taking at each step the candidate whose sender
/// has the greatest power, then the smallest origin_server_ts, then the
/// smallest event ID.
///
/// Edges are the direct `auth_events` links within `ids`, as Synapse and ruma
/// build them.
pub(crate) fn reverse_topological_power_order(
    version: &RoomVersion,
    events: &Events,
    ids: &BTreeSet<String>,
) -> Vec<String> {
    // For each event: how many of its auth events are still unsorted, and
    // which events cite it.
    let mut waiting_on: HashMap<&str, usize> = HashMap::new();
    let mut cited_by: HashMap<&str, Vec<&str>> = HashMap::new();
    for id in ids {
        let auth_in_set: BTreeSet<&String> =
            events[id].auth_events.iter().filter(|auth| ids.contains(*auth)).collect();
        waiting_on.insert(id, auth_in_set.len());
        for auth_id in auth_in_set {
            cited_by.entry(auth_id).or_default().push(id);
        }
    }
    let key = |id: &str| {
        let event = &events[id];
        let power = sender_power(version, events, event);
        (Reverse(power), event.origin_server_ts, id.to_owned())
    };
    let mut ready: BTreeSet<_> =
        waiting_on.iter().filter(|(_, count)| **count == 0).map(|(id, _)| key(id)).collect();
    let mut sorted = Vec::with_capacity(ids.len());
    while let Some(next) = ready.pop_first() {
        let id = next.2;
        for citer in cited_by.get(id.as_str()).into_iter().flatten() {
            let count = waiting_on.get_mut(citer).expect("every citer is counted");
            *count -= 1;
            if *count == 0 {
                ready.insert(key(citer));
            }
        }
        sorted.push(id);
    }
    sorted
}

/// The power levels event among `event`'s auth events.
fn power_levels_auth_event<'a>(events: &'a Events, event: &Pdu) -> Option<&'a Pdu> {
    event
        .auth_events
        .iter()
        .filter_map(|id| events.get(id))
        .find(|auth| auth.kind == "m.room.power_levels" && auth.state_key.as_deref() == Some(""))
}

/// Sorts `ids` by the mainline ordering based on `power_levels` (the power
/// levels event of the partially resolved state): events whose power levels
/// chain meets the mainline earlier come first (no meeting at all: first of
/// all), then by origin_server_ts, then by event ID.
pub(crate) fn mainline_order(
    events: &Events,
    power_levels: Option<&String>,
    ids: Vec<String>,
) -> Vec<String> {
    // The mainline [P0, P1, ..., Pn], as a map to positions.
    let mut mainline: HashMap<&str, usize> = HashMap::new();
    let mut next = power_levels.and_then(|id| events.get(id));
    while let Some(event) = next {
        if mainline.insert(&event.event_id, mainline.len()).is_some() {
            break; // A cycle; the DAG is broken, stop rather than loop.
        }
        next = power_levels_auth_event(events, event);
    }
    // The mainline position of e: the position of the first of e1, e2, ...
    // (not e itself) in the mainline, or "infinity" (None sorts as that).
    let position = |event: &Pdu| {
        let mut seen = 0;
        let mut next = power_levels_auth_event(events, event);
        while let Some(step) = next {
            if let Some(position) = mainline.get(step.event_id.as_str()) {
                return Some(*position);
            }
            seen += 1;
            if seen > events.len() {
                break;
            }
            next = power_levels_auth_event(events, step);
        }
        None
    };
    let mut keyed: Vec<_> = ids
        .into_iter()
        .filter_map(|id| events.get(&id).map(|event| (event, id)))
        .map(|(event, id)| {
            // Greater position first; None is infinity, so it goes first of all.
            let position_key = Reverse(position(event).map_or(usize::MAX, |p| p));
            ((position_key, event.origin_server_ts), id)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// The iterative auth checks: applies each state event of `sorted` to `state`
/// if it passes the auth rules against that state, where a key the rules need
/// and the state lacks is filled from the event's own auth events.
fn iterative_auth_checks(
    version: &RoomVersion,
    events: &Events,
    mut state: StateMap,
    sorted: &[String],
    signatures: &dyn SignatureCheck,
) -> StateMap {
    for id in sorted {
        let Some(event) = events.get(id) else {
            continue;
        };
        let Some((kind, state_key)) = event.state_pair() else {
            continue;
        };
        let lookup = |kind: &str, state_key: &str| -> Option<&Pdu> {
            let key = (kind.to_owned(), state_key.to_owned());
            if let Some(found) = state.get(&key).and_then(|id| events.get(id)) {
                return Some(found);
            }
            let from_auth_events = event
                .auth_events
                .iter()
                .filter_map(|id| events.get(id))
                .find(|auth| auth.state_pair() == Some((kind, state_key)));
            if let Some(found) = from_auth_events {
                return Some(found);
            }
            // v12: the create event is named by the room ID, not listed.
            let is_create = kind == "m.room.create" && state_key.is_empty();
            if version.room_id_from_create_event && is_create {
                return events.get(&create_id_of(event));
            }
            None
        };
        if auth_check(version, event, lookup, signatures).is_ok() {
            state.insert((kind.to_owned(), state_key.to_owned()), id.clone());
        }
    }
    state
}
