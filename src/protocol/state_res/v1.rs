//! State resolution v1 (room v1 only): the original algorithm, which resolves
//! conflicted power levels, then join rules, then memberships by depth and
//! `sha1(event_id)`, each checked against the partially resolved state.
//!
//! Pure, like v2: events come from a `fetch_event` closure. The work is
//! bounded by the state sets the caller passes: every conflicted event is
//! fetched and auth-checked at most once per key, and no auth chain is walked.
//! Spec: <https://spec.matrix.org/latest/rooms/v1/#state-resolution>.
//!
//! Where the spec is silent, this follows Synapse (`synapse/state/v1.py`):
//! events that cannot be fetched take no part; memberships are each resolved
//! against the state after the join rules (not after one another); and when
//! no candidate of an ordinary key passes auth, the one of least depth wins.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{StateMap, StateResError};
use crate::protocol::auth::{SignatureCheck, auth_check, auth_types_for_event};
use crate::protocol::pdu::Pdu;
use crate::protocol::room_version::RoomVersion;

/// A `(type, state_key)` pair.
type Key = (String, String);

/// Resolves `state_sets` with the v1 algorithm.
pub(super) fn resolve(
    version: &RoomVersion,
    state_sets: &[StateMap],
    fetch_event: impl Fn(&str) -> Option<Pdu>,
    signatures: &dyn SignatureCheck,
) -> Result<StateMap, StateResError> {
    // "Start by setting R to the union of the states to be resolved,
    // excluding any conflicting events." A conflict is two states with
    // different event IDs for the same key; a key only some states have is
    // not one.
    let mut candidates: BTreeMap<&Key, BTreeSet<&String>> = BTreeMap::new();
    for set in state_sets {
        for (key, id) in set {
            candidates.entry(key).or_default().insert(id);
        }
    }
    let mut resolved = StateMap::new();
    let mut conflicts: BTreeMap<Key, Vec<Pdu>> = BTreeMap::new();
    for (key, ids) in candidates {
        match ids.len() {
            1 => {
                resolved.extend(ids.into_iter().map(|id| (key.clone(), id.clone())));
            }
            _ => {
                let mut events: Vec<Pdu> = ids.into_iter().filter_map(|id| fetch_event(id)).collect();
                if events.len() == 1 {
                    resolved.insert(key.clone(), events.remove(0).event_id);
                } else if !events.is_empty() {
                    events.sort_by_cached_key(|event| (event.depth, Reverse(sha1(&event.event_id))));
                    conflicts.insert(key.clone(), events);
                }
            }
        }
    }
    if conflicts.is_empty() {
        return Ok(resolved);
    }

    // The events the auth checks can ask for: the conflicted events and what
    // R holds at the keys their auth rules read.
    let mut events: HashMap<String, Pdu> = HashMap::new();
    for event in conflicts.values().flatten() {
        let keys = auth_types_for_event(
            &event.kind,
            event.state_key.as_deref(),
            &event.sender,
            &event.content,
            version,
        );
        for key in keys {
            if let Some(id) = resolved.get(&key) {
                if !events.contains_key(id) {
                    if let Some(auth_event) = fetch_event(id) {
                        events.insert(id.clone(), auth_event);
                    }
                }
            }
        }
    }
    for event in conflicts.values().flatten() {
        events.insert(event.event_id.clone(), event.clone());
    }
    let checker = Checker { version, events: &events, signatures };

    // "First we resolve conflicts between m.room.power_levels events", then
    // "repeat the above process for conflicts between m.room.join_rules
    // events" and "for conflicts between m.room.member events".
    for pass in [Pass::PowerLevels, Pass::JoinRules, Pass::Members] {
        let winners: Vec<(Key, String)> = conflicts
            .iter()
            .filter(|(key, _)| Pass::of(key) == pass)
            .filter_map(|(key, list)| Some((key.clone(), checker.resolve_auth_events(&resolved, list)?)))
            .collect();
        resolved.extend(winners);
    }

    // "For all other conflicts, just pick the event with the highest depth and
    // lowest sha1(event_id) that passes authentication in R."
    let winners: Vec<(Key, String)> = conflicts
        .iter()
        .filter(|(key, _)| Pass::of(key) == Pass::Others)
        .filter_map(|(key, list)| Some((key.clone(), checker.resolve_normal_events(&resolved, list)?)))
        .collect();
    resolved.extend(winners);
    Ok(resolved)
}

/// The passes over the conflicted keys, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// `m.room.power_levels` (the one with the empty state key).
    PowerLevels,
    /// `m.room.join_rules`.
    JoinRules,
    /// `m.room.member`, every state key.
    Members,
    /// Everything else.
    Others,
}

impl Pass {
    fn of(key: &Key) -> Pass {
        match (key.0.as_str(), key.1.as_str()) {
            ("m.room.power_levels", "") => Pass::PowerLevels,
            ("m.room.join_rules", _) => Pass::JoinRules,
            ("m.room.member", _) => Pass::Members,
            _ => Pass::Others,
        }
    }
}

/// The hex-comparable SHA-1 of an event ID, the spec's tie-breaker.
fn sha1(event_id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, event_id.as_bytes()).as_ref().to_vec()
}

/// Auth checks against a partially resolved state.
struct Checker<'a> {
    version: &'a RoomVersion,
    events: &'a HashMap<String, Pdu>,
    signatures: &'a dyn SignatureCheck,
}

impl Checker<'_> {
    /// Whether `event` is allowed in the state `resolved`, with `overlay` (an
    /// event of the key under resolution) in place of what `resolved` holds
    /// at its key.
    fn allowed(&self, resolved: &StateMap, overlay: Option<&Pdu>, event: &Pdu) -> bool {
        let lookup = |kind: &str, state_key: &str| -> Option<&Pdu> {
            if let Some(overlay) = overlay.filter(|o| o.state_pair() == Some((kind, state_key))) {
                return Some(overlay);
            }
            let key = (kind.to_owned(), state_key.to_owned());
            resolved.get(&key).and_then(|id| self.events.get(id))
        };
        auth_check(self.version, event, lookup, self.signatures).is_ok()
    }

    /// One key of power levels, join rules or membership: `sorted` is in
    /// ascending depth, then descending `sha1(event_id)`. "Add the first event
    /// in the list to R. For each subsequent event in the list, check that the
    /// event would be allowed by the authorisation rules for a room in state
    /// R. If the event would be allowed, then update R with the event and
    /// continue with the next event in the list. If it would not be allowed,
    /// stop."
    fn resolve_auth_events(&self, resolved: &StateMap, sorted: &[Pdu]) -> Option<String> {
        let mut chosen = sorted.first()?;
        for event in &sorted[1..] {
            if !self.allowed(resolved, Some(chosen), event) {
                break;
            }
            chosen = event;
        }
        Some(chosen.event_id.clone())
    }

    /// Any other key: the event of highest depth and lowest `sha1(event_id)`
    /// allowed in R (the last of `sorted` that passes); if none is, the one
    /// of least depth, as Synapse picks.
    fn resolve_normal_events(&self, resolved: &StateMap, sorted: &[Pdu]) -> Option<String> {
        sorted
            .iter()
            .rev()
            .find(|event| self.allowed(resolved, None, event))
            .or(sorted.first())
            .map(|event| event.event_id.clone())
    }
}
