//! Room upgrades: replacing a room with a new one of another room version,
//! carrying its state, aliases and directory listing over and tombstoning the
//! old one.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-behaviour-16>
//! (the "Server behaviour" of room upgrades). Where it leaves details open we
//! do what Synapse does (temporary power for the upgrader, bans copied,
//! canonical alias moved).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::protocol::identifiers::UserId;
use crate::protocol::power_levels::PowerLevels;
use crate::protocol::room_version::RoomVersion;
use crate::rooms::Engine;
use crate::rooms::{self, Draft};

/// State carried to the new room as it is, at the empty state key: the spec's
/// recommended list (power levels are handled on their own).
const TRANSFERABLE: [&str; 8] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

/// Space relations are carried at every state key (Synapse copies them too:
/// a space keeps its children and a room its parents).
const TRANSFERABLE_AT_ANY_KEY: [&str; 2] = ["m.space.child", "m.space.parent"];

/// Spec: the old room's `events_default` and `invite` are raised to "the
/// greater of 50 and `users_default + 1`".
const RESTRICTED_LEVEL: i64 = 50;

/// What the upgrader asked for.
pub struct Upgrade<'a> {
    pub new_version: RoomVersion,
    /// v12+: creators besides the upgrader (ignored by older versions).
    pub additional_creators: &'a [String],
}

/// Upgrades `old_room` on behalf of `user_id`; returns the new room's ID.
pub fn upgrade(app: &Engine, old_room: &str, user_id: &str, upgrade: &Upgrade<'_>) -> Result<String> {
    let old_version = rooms::room_version(app, old_room)?;
    let new_version = &upgrade.new_version;
    if app.storage().membership(old_room, user_id)?.as_deref() != Some("join") {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    // Spec step 1: the upgrader must be able to send the tombstone.
    if !rooms::can_send_state(app, old_room, user_id, "m.room.tombstone")? {
        return Err(Error::Forbidden("you cannot upgrade this room".into()));
    }
    let mut additional_creators = BTreeSet::new();
    if new_version.privileged_creators {
        for creator in upgrade.additional_creators {
            UserId::parse(creator)
                .map_err(|error| Error::InvalidParam(format!("additional_creators {creator}: {error}")))?;
            if creator != user_id {
                additional_creators.insert(creator.clone());
            }
        }
    }
    let old_state = app.storage().current_state(old_room)?;
    let content_at =
        |kind: &str, state_key: &str| rooms::current_state_content(app, old_room, kind, state_key);

    // Spec step 2: the new room, with `predecessor` and the old room's `type`.
    let old_create = content_at("m.room.create", "")?.unwrap_or_default();
    let mut create = Map::new();
    for key in ["type", "m.federate"] {
        if let Some(value) = old_create.get(key) {
            create.insert(key.into(), value.clone());
        }
    }
    create.insert("room_version".into(), json!(new_version.id));
    let send = |room: &str, draft: Draft| rooms::send(app, room, user_id, draft, None);
    // `predecessor.event_id` is the tombstone's ID (as the reference server
    // sets it), so where the new room's ID can be chosen first the tombstone
    // (step 5) is sent first; all of it is one transaction, so nobody sees
    // the tombstone before the room it points at. A room ID that is the
    // create event's hash cannot be named by the tombstone beforehand: there
    // the predecessor names the old room only, and the tombstone comes last.
    let chosen_room_id = (!new_version.room_id_from_create_event).then(|| rooms::new_room_id(app));
    let mut predecessor = json!({ "room_id": old_room });
    if let Some(new_room) = &chosen_room_id {
        predecessor["event_id"] = json!(send(old_room, tombstone(new_room))?);
    }
    create.insert("predecessor".into(), predecessor);
    if !new_version.implicit_room_creator {
        create.insert("creator".into(), json!(user_id));
    }
    if !additional_creators.is_empty() {
        create.insert("additional_creators".into(), json!(additional_creators));
    }
    let new_room =
        rooms::create_room_as(app, new_version, chosen_room_id.as_deref(), user_id, Value::Object(create))?;
    send(
        &new_room,
        Draft::state("m.room.member", user_id, rooms::member_content(app, user_id, "join", None)?),
    )?;

    // Spec step 3: transferable state, power levels first (with enough power
    // for the upgrader to copy the rest, taken back afterwards).
    let old_levels = content_at("m.room.power_levels", "")?;
    let was_privileged_creator =
        old_version.privileged_creators && is_creator(app, &old_version, old_room, user_id)?;
    let (initial_levels, final_levels) = new_power_levels(
        &old_version,
        new_version,
        old_levels.as_ref(),
        user_id,
        &additional_creators,
        was_privileged_creator,
    );
    send(&new_room, Draft::state("m.room.power_levels", "", initial_levels.clone()))?;
    for (kind, state_key) in old_state.keys() {
        let transferable = (TRANSFERABLE.contains(&kind.as_str()) && state_key.is_empty())
            || TRANSFERABLE_AT_ANY_KEY.contains(&kind.as_str());
        let banned = kind == "m.room.member"
            && app.storage().membership(old_room, state_key)?.as_deref() == Some("ban");
        if !transferable && !banned {
            continue;
        }
        let Some(mut content) = content_at(kind, state_key)? else { continue };
        if banned {
            content = json!({ "membership": "ban" });
        }
        if kind == "m.room.join_rules" && !join_rule_supported(new_version, &content) {
            continue;
        }
        // One refused copy (say, an event the new version's rules reject)
        // should not leave the upgrade half done.
        if let Err(error) = send(&new_room, Draft::state(kind, state_key, content)) {
            log::warn!("upgrading {old_room}: {kind}/{state_key} was not copied: {error}");
        }
    }
    if final_levels != initial_levels {
        send(&new_room, Draft::state("m.room.power_levels", "", final_levels))?;
    }

    // Spec step 4: local aliases, the canonical alias and the directory listing.
    app.storage().move_aliases(old_room, &new_room)?;
    if let Some(canonical) = content_at("m.room.canonical_alias", "")?.filter(has_aliases) {
        send(&new_room, Draft::state("m.room.canonical_alias", "", canonical))?;
        if let Err(error) = send(old_room, Draft::state("m.room.canonical_alias", "", json!({}))) {
            log::warn!("upgrading {old_room}: its canonical alias was not cleared: {error}");
        }
    }
    if app.storage().room_is_public(old_room)? {
        app.storage().set_room_visibility(&new_room, true)?;
        app.storage().set_room_visibility(old_room, false)?;
    }

    // Spec step 5: the tombstone (sent first above where the room ID was chosen first).
    if chosen_room_id.is_none() {
        send(old_room, tombstone(&new_room))?;
    }

    // Spec step 6: keep the old room quiet, if the upgrader may.
    if let Some(restricted) = restricted_power_levels(&old_version, old_levels.as_ref()) {
        if let Err(error) = send(old_room, Draft::state("m.room.power_levels", "", restricted)) {
            log::info!("upgrading {old_room}: its power levels were not restricted: {error}");
        }
    }
    log::info!("{user_id} upgraded {old_room} to {new_room} (v{})", new_version.id);
    Ok(new_room)
}

/// The `m.room.tombstone` pointing at `new_room`.
fn tombstone(new_room: &str) -> Draft {
    Draft::state(
        "m.room.tombstone",
        "",
        json!({ "body": "This room has been replaced", "replacement_room": new_room }),
    )
}

fn is_creator(app: &Engine, version: &RoomVersion, room_id: &str, user_id: &str) -> Result<bool> {
    let state = app.storage().current_state(room_id)?;
    Ok(rooms::current_power(app, version, &state).creators.contains(user_id))
}

fn has_aliases(content: &Value) -> bool {
    content.get("alias").is_some_and(Value::is_string)
        || content.get("alt_aliases").and_then(Value::as_array).is_some_and(|alt| !alt.is_empty())
}

fn join_rule_supported(version: &RoomVersion, content: &Value) -> bool {
    match content.get("join_rule").and_then(Value::as_str) {
        Some("knock") => version.knock_join_rule,
        Some("restricted") => version.restricted_join_rule,
        Some("knock_restricted") => version.knock_restricted_join_rule,
        _ => true,
    }
}

/// The old room's power levels as integers (old rooms may hold strings, which
/// newer versions refuse), keeping the keys we do not know.
fn normalized_levels(version: &RoomVersion, content: Option<&Value>) -> (Map<String, Value>, PowerLevels) {
    let mut object = content.and_then(Value::as_object).cloned().unwrap_or_default();
    let levels =
        content.and_then(|content| PowerLevels::from_content(version, content).ok()).unwrap_or_default();
    for (name, level) in &levels.named {
        object.insert(name.clone(), json!(level));
    }
    object.insert("users".into(), json!(levels.users));
    object.insert("events".into(), json!(levels.events));
    if !levels.notifications.is_empty() {
        object.insert("notifications".into(), json!(levels.notifications));
    }
    (object, levels)
}

/// The new room's power levels: `(to start with, to end with)`. They differ
/// when the upgrader needs more power to copy the state than they hold.
fn new_power_levels(
    old_version: &RoomVersion,
    new_version: &RoomVersion,
    old: Option<&Value>,
    upgrader: &str,
    additional_creators: &BTreeSet<String>,
    was_privileged_creator: bool,
) -> (Value, Value) {
    let (mut content, levels) = normalized_levels(old_version, old);
    let mut users = levels.users.clone();
    if new_version.privileged_creators {
        // v12: creators hold unlimited power and may not appear in `users`.
        users.remove(upgrader);
        for creator in additional_creators {
            users.remove(creator);
        }
        content.insert("users".into(), json!(users));
        let content = Value::Object(content);
        return (content.clone(), content);
    }
    // Synapse's rule: enough to send any state event and to ban.
    let needed = [
        levels.named_level("state_default"),
        levels.named_level("ban"),
        levels.named_level("events_default"),
    ]
    .into_iter()
    .chain(levels.events.values().copied())
    .max()
    .unwrap_or(0)
    .max(levels.required_level("m.room.power_levels", true));
    if was_privileged_creator {
        // A v12 creator held unlimited power: keep them in charge of the new room.
        let level = users.get(upgrader).copied().unwrap_or(0).max(needed).max(100);
        users.insert(upgrader.to_owned(), level);
    }
    content.insert("users".into(), json!(users));
    let final_levels = Value::Object(content.clone());
    let current = users.get(upgrader).copied().unwrap_or_else(|| levels.named_level("users_default"));
    if current < needed {
        users.insert(upgrader.to_owned(), needed);
        content.insert("users".into(), json!(users));
    }
    (Value::Object(content), final_levels)
}

/// The old room's power levels with `events_default` and `invite` raised to
/// the restricted level, or `None` when they already are.
fn restricted_power_levels(version: &RoomVersion, old: Option<&Value>) -> Option<Value> {
    let (mut content, levels) = normalized_levels(version, old);
    let restricted = RESTRICTED_LEVEL.max(levels.named_level("users_default") + 1);
    let mut changed = false;
    for name in ["events_default", "invite"] {
        if levels.named_level(name) < restricted {
            content.insert(name.into(), json!(restricted));
            changed = true;
        }
    }
    changed.then_some(Value::Object(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str) -> RoomVersion {
        RoomVersion::from_id(id).unwrap()
    }

    #[test]
    fn the_old_room_is_restricted_above_users_default() {
        let old = json!({ "users_default": 60, "events_default": 0, "invite": 0, "users": {"@a:x": 100} });
        let restricted = restricted_power_levels(&version("10"), Some(&old)).unwrap();
        assert_eq!(restricted["events_default"], 61);
        assert_eq!(restricted["invite"], 61);
        assert_eq!(restricted["users"]["@a:x"], 100);
        let quiet = json!({ "events_default": 50, "invite": 50 });
        assert_eq!(restricted_power_levels(&version("10"), Some(&quiet)), None);
    }

    #[test]
    fn string_levels_of_old_rooms_become_integers() {
        let old = json!({ "ban": "50", "users": {"@a:x": "100"}, "events": {"m.room.name": "50"} });
        let (initial, _) =
            new_power_levels(&version("1"), &version("10"), Some(&old), "@a:x", &BTreeSet::new(), false);
        assert_eq!(initial["ban"], 50);
        assert_eq!(initial["users"]["@a:x"], 100);
        assert_eq!(initial["events"]["m.room.name"], 50);
    }

    #[test]
    fn a_moderator_gets_power_to_copy_state_and_gives_it_back() {
        let old = json!({ "users": {"@mod:x": 50, "@admin:x": 100}, "state_default": 50,
                          "events": {"m.room.power_levels": 100} });
        let (initial, last) =
            new_power_levels(&version("10"), &version("11"), Some(&old), "@mod:x", &BTreeSet::new(), false);
        assert_eq!(initial["users"]["@mod:x"], 100);
        assert_eq!(last["users"]["@mod:x"], 50);
    }

    #[test]
    fn v12_creators_leave_the_users_map() {
        let old = json!({ "users": {"@a:x": 100, "@b:x": 100, "@c:x": 50} });
        let extra = BTreeSet::from(["@b:x".to_string()]);
        let (initial, last) =
            new_power_levels(&version("11"), &version("12"), Some(&old), "@a:x", &extra, false);
        assert_eq!(initial, last);
        assert_eq!(initial["users"], json!({"@c:x": 50}));
    }

    #[test]
    fn a_v12_creator_keeps_power_when_upgrading_to_an_older_version() {
        let old = json!({ "users": {"@c:x": 50} });
        let (_, last) =
            new_power_levels(&version("12"), &version("11"), Some(&old), "@a:x", &BTreeSet::new(), true);
        assert_eq!(last["users"]["@a:x"], 100);
    }
}
