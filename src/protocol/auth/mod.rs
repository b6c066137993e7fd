//! The authorization rules for rooms v1 to v12: may this event enter the room,
//! given some room state?
//!
//! Pure: the state to check against comes from a lookup closure, signatures
//! from a [`SignatureCheck`] the caller supplies (signing lives elsewhere).
//! The rules follow the spec's numbered lists; comments give the v12 number
//! and say where older versions differ. Spec:
//! <https://spec.matrix.org/latest/rooms/v12/#authorization-rules> (and the
//! same section of each room version), auth events selection:
//! <https://spec.matrix.org/latest/server-server-api/#auth-events-selection>.

mod membership;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::ops::Deref;

use serde_json::Value;

use super::pdu::Pdu;

use super::power_levels::{PowerLevels, RoomPower, UserPower, creators, domain_of, is_valid_user_id};
use super::room_version::{EventIdFormat, RoomVersion};

/// Why an event fails the authorization rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Rejects with a formatted reason.
macro_rules! reject {
    ($($arg:tt)*) => {
        return Err(AuthError(format!($($arg)*)))
    };
}
pub(crate) use reject;

/// The signature checks the auth rules ask for. Implemented by the signing
/// module over real keys, and by tests with fixed answers.
pub trait SignatureCheck {
    /// Whether `event` carries a valid signature from `server_name`
    /// (restricted joins: the authorising user's server, rule 5.2).
    fn event_signed_by(&self, event: &Pdu, server_name: &str) -> bool;
    /// Whether the third-party invite `signed` object carries a valid ed25519
    /// signature by `public_key` (unpadded base64), from any server (rule 5.4.1.7).
    fn signed_by_public_key(&self, signed: &Value, public_key: &str) -> bool;
}

/// Checks `event` against the authorization rules of `version`, with
/// `auth_state(type, state_key)` answering for the room state to check
/// against (the event's auth events, the state before it, or the current
/// state: the caller picks, per the checks on receipt of a PDU). Only
/// accepted (not rejected) events may be returned by `auth_state`.
///
/// The checks on the event's own `auth_events` list (v12 rule 3) need the
/// events themselves; they are in [`check_auth_events`].
pub fn auth_check<P: Deref<Target = Pdu>>(
    version: &RoomVersion,
    event: &Pdu,
    auth_state: impl Fn(&str, &str) -> Option<P>,
    signatures: &dyn SignatureCheck,
) -> Result<(), AuthError> {
    // Rule 1: if type is m.room.create:
    if event.kind == "m.room.create" {
        return check_create(version, event);
    }

    let Some(create) = auth_state("m.room.create", "") else {
        reject!("no m.room.create event in the room state");
    };
    // Rule 2 (since v12): if the event's room_id is not an event ID for an
    // accepted m.room.create event, with the sigil ! instead of $, reject.
    // (The caller only hands us accepted events.)
    if version.room_id_from_create_event
        && event.room_id.strip_prefix('!') != create.event_id.strip_prefix('$')
    {
        reject!("room ID does not match the create event");
    }
    // Rule 3 (rule 2 before v12), the event's own auth_events: see check_auth_events.

    // Rule 4 (3 before v12): if the create event's content has m.federate set
    // to false and the sender's domain differs from the create sender's, reject.
    if create.content.get("m.federate") == Some(&Value::Bool(false))
        && domain_of(&event.sender) != domain_of(&create.sender)
    {
        reject!("room is not federated");
    }

    // v1-v5 rule 4: if type is m.room.aliases:
    if version.special_case_aliases && event.kind == "m.room.aliases" {
        // 1. If event has no state_key, reject.
        let Some(state_key) = &event.state_key else {
            reject!("m.room.aliases without state_key");
        };
        // 2. If sender's domain doesn't match state_key, reject.
        if domain_of(&event.sender) != Some(state_key.as_str()) {
            reject!("m.room.aliases state_key is not the sender's domain");
        }
        // 3. Otherwise, allow.
        return Ok(());
    }

    let power_levels = auth_state("m.room.power_levels", "");
    let power = RoomPower::new(version, power_levels.as_deref(), Some(&create));

    // Rule 5 (4 in v6-v11): if type is m.room.member: its own list.
    if event.kind == "m.room.member" {
        return membership::check_member(version, event, &create, &power, &auth_state, signatures);
    }

    // Rule 6 (5 in v6-v11): if the sender's current membership state is not
    // join, reject.
    if membership::membership_of(&auth_state, &event.sender) != "join" {
        reject!("sender is not joined to the room");
    }

    let sender_power = power.user_power(&event.sender);
    // Rule 7 (6 in v6-v11): if type is m.room.third_party_invite, allow if and
    // only if sender's current power level is greater than or equal to the
    // invite level.
    if event.kind == "m.room.third_party_invite" {
        if power.has_named_level(&event.sender, "invite") {
            return Ok(());
        }
        reject!("sender may not invite");
    }

    // Rule 8 (7 in v6-v11): if the event type's required power level is
    // greater than the sender's power level, reject.
    let required = power.levels.required_level(&event.kind, event.is_state());
    if UserPower::Level(required) > sender_power {
        reject!("sender's power is below {required}, needed for {}", event.kind);
    }

    // Rule 9 (8 in v6-v11): if the event has a state_key that starts with an @
    // and does not match the sender, reject.
    if let Some(state_key) = &event.state_key {
        if state_key.starts_with('@') && state_key != &event.sender {
            reject!("state_key names another user");
        }
    }

    // Rule 10 (9 in v6-v11): if type is m.room.power_levels:
    if event.kind == "m.room.power_levels" {
        return check_power_levels(version, event, &create, power_levels.as_deref(), &power);
    }

    // v1-v2 rule 11: if type is m.room.redaction. The rule exists exactly in
    // the versions whose event IDs carry a domain; from v3 the redact level is
    // enforced when the redaction is applied, not here.
    if version.event_id_format == EventIdFormat::V1 && event.kind == "m.room.redaction" {
        // 1. If the sender's power level is >= the redact level, allow.
        if power.has_named_level(&event.sender, "redact") {
            return Ok(());
        }
        // 2. If the domain of the event_id of the event being redacted is the
        //    same as the domain of the event_id of the redaction, allow.
        let redacted_domain = event.redacts.as_deref().and_then(domain_of);
        if redacted_domain.is_some() && redacted_domain == domain_of(&event.event_id) {
            return Ok(());
        }
        // 3. Otherwise, reject.
        reject!("sender may not redact that event");
    }

    // Rule 11: otherwise, allow.
    Ok(())
}

/// Rule 1, for `m.room.create`.
fn check_create(version: &RoomVersion, event: &Pdu) -> Result<(), AuthError> {
    // 1. If it has any prev_events, reject.
    if !event.prev_events.is_empty() {
        reject!("m.room.create has prev_events");
    }
    if version.room_id_from_create_event {
        // 2 (since v12). If the event has a room_id, reject.
        if event.json.contains_key("room_id") {
            reject!("m.room.create has a room_id");
        }
    } else if domain_of(&event.room_id) != domain_of(&event.sender) {
        // 2 (v1-v11). If the domain of the room_id does not match the domain
        // of the sender, reject.
        reject!("room ID domain differs from the sender's");
    }
    // 3. If content.room_version is present and is not a recognised version, reject.
    if let Some(room_version) = event.content.get("room_version") {
        if room_version.as_str().and_then(RoomVersion::from_id).is_none() {
            reject!("unknown room version {room_version}");
        }
    }
    // 4 (since v12). If additional_creators is present in content and is not
    // an array of strings where each string is a valid user ID, reject.
    if version.privileged_creators {
        if let Some(extra) = event.content.get("additional_creators") {
            let valid = extra
                .as_array()
                .is_some_and(|users| users.iter().all(|user| user.as_str().is_some_and(is_valid_user_id)));
            if !valid {
                reject!("additional_creators is not a list of user IDs");
            }
        }
    }
    // 4 (v1-v10). If content has no creator property, reject.
    if !version.implicit_room_creator && event.content.get("creator").is_none() {
        reject!("m.room.create has no creator");
    }
    // 5. Otherwise, allow.
    Ok(())
}

/// Rule 10 (9 in v6-v11), for `m.room.power_levels`.
fn check_power_levels(
    version: &RoomVersion,
    event: &Pdu,
    create: &Pdu,
    current: Option<&Pdu>,
    power: &RoomPower,
) -> Result<(), AuthError> {
    // 1 (since v10). If any of users_default, events_default, state_default,
    //   ban, redact, kick or invite are present and not an integer, reject.
    // 2 (since v10). If events or notifications are present and not an object
    //   with values that are integers, reject.
    // 3. If users is not an object with keys that are valid user IDs with
    //   values that are integers (before v10: or strings holding integers), reject.
    // `from_content` applies all three, per version. Before v10 it also
    // rejects malformed named levels, which the spec leaves unchecked but no
    // server can interpret.
    let new = PowerLevels::from_content(version, &event.content)
        .map_err(|error| AuthError(format!("invalid power levels: {error}")))?;
    // 4 (since v12). If users contains the create event's sender or any of
    //   its additional_creators, reject.
    if version.privileged_creators {
        if let Some(creator) =
            creators(version, create).iter().find(|creator| new.users.contains_key(*creator))
        {
            reject!("power levels list the room creator {creator}");
        }
    }
    // 5. If there is no previous m.room.power_levels event in the room, allow.
    let Some(current) = current else {
        return Ok(());
    };
    let old = PowerLevels::from_content(version, &current.content).unwrap_or_default();
    let sender_power = power.user_power(&event.sender);
    let above_sender = |level: Option<i64>| level.is_some_and(|l| UserPower::Level(l) > sender_power);

    // 6. For the named levels, for each one added, changed or removed:
    //   1. if the current value is higher than the sender's power, reject;
    //   2. if the new value is higher than the sender's power, reject.
    for (name, old_level, new_level) in changes(&old.named, &new.named) {
        if above_sender(old_level) || above_sender(new_level) {
            reject!("sender may not change `{name}` from {old_level:?} to {new_level:?}");
        }
    }
    // 7. For each entry changed in or removed from events or (since v6)
    //   notifications: if the current value is greater than the sender's
    //   power, reject.
    // 8. For each entry added to or changed in events or (since v6)
    //   notifications: if the new value is greater than the sender's power,
    //   reject.
    let mut maps = vec![("events", &old.events, &new.events)];
    if version.limit_notifications_power_levels {
        maps.push(("notifications", &old.notifications, &new.notifications));
    }
    for (map, old_map, new_map) in maps {
        for (key, old_level, new_level) in changes(old_map, new_map) {
            if above_sender(old_level) || above_sender(new_level) {
                reject!("sender may not change `{map}.{key}`");
            }
        }
    }
    // 9. For each entry changed in or removed from users, other than the
    //   sender's own: if the current value is greater than or equal to the
    //   sender's power, reject.
    // 10. For each entry added to or changed in users: if the new value is
    //   greater than the sender's power, reject.
    for (user, old_level, new_level) in changes(&old.users, &new.users) {
        let old_at_least_sender = old_level.is_some_and(|l| UserPower::Level(l) >= sender_power);
        if user != event.sender && old_at_least_sender {
            reject!("sender may not change the level of {user}");
        }
        if above_sender(new_level) {
            reject!("sender may not raise {user} above themselves");
        }
    }
    // 11. Otherwise, allow.
    Ok(())
}

/// The keys whose values differ between `old` and `new` (added, changed or
/// removed), with both values.
fn changes<'a>(
    old: &'a std::collections::BTreeMap<String, i64>,
    new: &'a std::collections::BTreeMap<String, i64>,
) -> impl Iterator<Item = (&'a str, Option<i64>, Option<i64>)> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter().filter_map(|key| {
        let (old_level, new_level) = (old.get(key).copied(), new.get(key).copied());
        (old_level != new_level).then_some((key.as_str(), old_level, new_level))
    })
}

/// The `(type, state_key)` pairs of the state events that authorise a new
/// event: its `auth_events` are the current events at these keys, where
/// present. Spec: <https://spec.matrix.org/latest/server-server-api/#auth-events-selection>.
pub fn auth_types_for_event(
    kind: &str,
    state_key: Option<&str>,
    sender: &str,
    content: &Value,
    version: &RoomVersion,
) -> Vec<(String, String)> {
    // The m.room.create event has no auth events.
    if kind == "m.room.create" {
        return Vec::new();
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut add = |kind: &str, state_key: &str| {
        let pair = (kind.to_owned(), state_key.to_owned());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    };
    // The m.room.create event, depending on the room version (not from v12,
    // where the room ID names it).
    if !version.room_id_from_create_event {
        add("m.room.create", "");
    }
    // The current m.room.power_levels event, if any.
    add("m.room.power_levels", "");
    // The sender's current m.room.member event, if any.
    add("m.room.member", sender);
    // If type is m.room.member:
    if let (Some(target), "m.room.member") = (state_key, kind) {
        let membership = content.get("membership").and_then(Value::as_str);
        // The target's current m.room.member event, if any.
        add("m.room.member", target);
        // If membership is join, invite or knock, the current m.room.join_rules event.
        if matches!(membership, Some("join" | "invite" | "knock")) {
            add("m.room.join_rules", "");
        }
        // If membership is invite and content has third_party_invite, the
        // m.room.third_party_invite event whose state_key is its signed.token.
        if membership == Some("invite") {
            let token = content.pointer("/third_party_invite/signed/token").and_then(Value::as_str);
            if let Some(token) = token {
                add("m.room.third_party_invite", token);
            }
        }
        // If membership is join, join_authorised_via_users_server is present
        // and the room version supports restricted rooms, that user's member event.
        if membership == Some("join") && version.restricted_join_rule {
            let authoriser = content.get("join_authorised_via_users_server").and_then(Value::as_str);
            if let Some(authoriser) = authoriser {
                add("m.room.member", authoriser);
            }
        }
    }
    pairs
}

/// Rule 3 (2 before v12): checks `event`'s own `auth_events` list, with
/// `fetch_event` returning accepted events only (an auth event that is missing
/// or rejected fails the check).
pub fn check_auth_events(
    version: &RoomVersion,
    event: &Pdu,
    fetch_event: impl Fn(&str) -> Option<Pdu>,
) -> Result<(), AuthError> {
    if event.kind == "m.room.create" {
        if event.auth_events.is_empty() {
            return Ok(());
        }
        reject!("m.room.create has auth_events");
    }
    let allowed =
        auth_types_for_event(&event.kind, event.state_key.as_deref(), &event.sender, &event.content, version);
    let mut seen = BTreeSet::new();
    for auth_id in &event.auth_events {
        // 3. If there are entries which were themselves rejected, reject.
        let Some(auth_event) = fetch_event(auth_id) else {
            reject!("auth event {auth_id} is missing or rejected");
        };
        let Some((kind, state_key)) = auth_event.state_pair() else {
            reject!("auth event {auth_id} is not a state event");
        };
        let pair = (kind.to_owned(), state_key.to_owned());
        // 1. If there are duplicate entries for a type and state_key pair, reject.
        if !seen.insert(pair.clone()) {
            reject!("duplicate auth events for ({kind}, {state_key})");
        }
        // 2. If there are entries whose type and state_key don't match those
        //    of the auth events selection, reject (v12: m.room.create must
        //    not be selected).
        if !allowed.contains(&pair) {
            reject!("auth event ({kind}, {state_key}) is not needed by this event");
        }
        // 5. If any event in auth_events has a room_id which does not match
        //    that of the event being authorised, reject.
        if auth_event.room_id != event.room_id {
            reject!("auth event {auth_id} is from another room");
        }
    }
    // 4 (v1-v11). If there is no m.room.create event among the entries, reject.
    let create_pair = ("m.room.create".to_owned(), String::new());
    if !version.room_id_from_create_event && !seen.contains(&create_pair) {
        reject!("no m.room.create among the auth events");
    }
    Ok(())
}
