//! "Will my rooms survive my server?": for each room this node is in, the
//! other servers with joined members, when each last accepted a transaction
//! from us, who on them could run the room, which of its aliases live on them,
//! and a plain verdict. Read by `hearth resilience` and
//! `GET /_hearth/admin/v1/resilience`.
//!
//! A room has no home server: every server with joined members holds all of
//! it and can carry on without the others (spec:
//! <https://spec.matrix.org/latest/#architecture>). What it needs on a
//! surviving server to stay manageable is someone with the power to change
//! its power levels, the level an `m.room.power_levels` event needs
//! (`events` entry, else `state_default`; 100 in rooms made by common
//! clients), or a v12 creator (spec:
//! <https://spec.matrix.org/latest/client-server-api/#mroompower_levels>).
//! Its aliases on other servers (`alias` and `alt_aliases` of
//! `m.room.canonical_alias`, spec:
//! <https://spec.matrix.org/latest/client-server-api/#mroomcanonical_alias>)
//! keep it findable by name.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::Result;
use crate::protocol::identifiers::RoomAliasId;
use crate::protocol::power_levels::{RoomPower, UserPower, domain_of};
use crate::protocol::room_version::RoomVersion;
use crate::storage::Storage;

/// The longest room name kept for the report, in characters.
const MAX_NAME_CHARS: usize = 80;

/// Someone on another server who can change the room's power levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub user_id: String,
    pub power: UserPower,
}

/// Another server with joined members in the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherServer {
    pub server_name: String,
    pub joined_members: usize,
    /// When it last accepted a transaction from us (ms), if ever.
    pub last_accepted_ts: Option<i64>,
    pub admins: Vec<Admin>,
}

/// What becomes of the room if this node disappears for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Another server holds it and someone there can run it.
    LivesOn,
    /// Another server holds it, but no one there can change its power levels.
    LivesOnUnmanaged,
    /// No other server has joined members.
    DiesWithThisNode,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::LivesOn => "lives_on",
            Verdict::LivesOnUnmanaged => "lives_on_without_admin",
            Verdict::DiesWithThisNode => "dies_with_this_node",
        }
    }
}

/// The report on one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomResilience {
    pub room_id: String,
    pub name: Option<String>,
    /// The power needed to change the room's power levels.
    pub admin_level: i64,
    pub local_members: usize,
    /// Sorted by server name.
    pub other_servers: Vec<OtherServer>,
    /// The canonical alias and alternative aliases on other servers.
    pub remote_aliases: Vec<String>,
    pub verdict: Verdict,
}

/// Judges one room from its facts; pure. `joined` are the joined members,
/// `canonical_alias` the content of `m.room.canonical_alias`, `last_accepted`
/// the last accepted transaction per destination.
pub fn assess(
    our_server: &str,
    room_id: &str,
    name: Option<&str>,
    joined: &[String],
    power: &RoomPower,
    canonical_alias: Option<&Value>,
    last_accepted: &BTreeMap<String, i64>,
) -> RoomResilience {
    let admin_level = power.levels.required_level("m.room.power_levels", true);
    let mut servers: BTreeMap<&str, OtherServer> = BTreeMap::new();
    let mut local_members = 0;
    for user_id in joined {
        let Some(server) = domain_of(user_id) else { continue };
        if server == our_server {
            local_members += 1;
            continue;
        }
        let entry = servers.entry(server).or_insert_with(|| OtherServer {
            server_name: server.to_string(),
            joined_members: 0,
            last_accepted_ts: last_accepted.get(server).copied(),
            admins: Vec::new(),
        });
        entry.joined_members += 1;
        let user_power = power.user_power(user_id);
        if user_power >= UserPower::Level(admin_level) {
            entry.admins.push(Admin { user_id: user_id.clone(), power: user_power });
        }
    }
    let other_servers: Vec<OtherServer> = servers.into_values().collect();
    let verdict = if other_servers.is_empty() {
        Verdict::DiesWithThisNode
    } else if other_servers.iter().any(|server| !server.admins.is_empty()) {
        Verdict::LivesOn
    } else {
        Verdict::LivesOnUnmanaged
    };
    RoomResilience {
        room_id: room_id.to_string(),
        name: name.map(|name| name.chars().filter(|c| !c.is_control()).take(MAX_NAME_CHARS).collect()),
        admin_level,
        local_members,
        other_servers,
        remote_aliases: remote_aliases(our_server, canonical_alias),
        verdict,
    }
}

/// The valid aliases of a canonical alias content whose server is not ours.
fn remote_aliases(our_server: &str, content: Option<&Value>) -> Vec<String> {
    let Some(content) = content else { return Vec::new() };
    let alternatives = content.get("alt_aliases").and_then(Value::as_array).into_iter().flatten();
    let mut aliases: Vec<String> = content
        .get("alias")
        .into_iter()
        .chain(alternatives)
        .filter_map(Value::as_str)
        .filter_map(|alias| RoomAliasId::parse(alias).ok())
        .filter(|alias| alias.server_name() != our_server)
        .map(|alias| alias.as_str().to_string())
        .collect();
    aliases.sort();
    aliases.dedup();
    aliases
}

impl RoomResilience {
    /// The verdict in a sentence, for the operator.
    pub fn summary(&self) -> String {
        let servers: Vec<&str> =
            self.other_servers.iter().map(|server| server.server_name.as_str()).collect();
        match self.verdict {
            Verdict::DiesWithThisNode => format!(
                "this room dies with this node: invite someone from another server and give them power {}",
                self.admin_level
            ),
            Verdict::LivesOnUnmanaged => format!(
                "if this node dies for good, this room lives on at {}, but no one there can change its \
                 settings: give someone there power {}",
                servers.join(", "),
                self.admin_level
            ),
            Verdict::LivesOn => {
                let admins: Vec<String> = self
                    .other_servers
                    .iter()
                    .flat_map(|server| &server.admins)
                    .map(|admin| format!("{} ({})", admin.user_id, power_text(admin.power)))
                    .collect();
                format!(
                    "if this node dies for good, this room lives on at {}; its admins there: {}",
                    servers.join(", "),
                    admins.join(", ")
                )
            }
        }
    }

    /// The report as JSON, for the admin API.
    pub fn to_json(&self) -> Value {
        let servers: Vec<Value> = self
            .other_servers
            .iter()
            .map(|server| {
                let admins: Vec<Value> = server
                    .admins
                    .iter()
                    .map(|admin| json!({ "user_id": admin.user_id, "power_level": power_json(admin.power) }))
                    .collect();
                json!({
                    "server_name": server.server_name,
                    "joined_members": server.joined_members,
                    "last_accepted_ts": server.last_accepted_ts,
                    "admins": admins,
                })
            })
            .collect();
        json!({
            "room_id": self.room_id,
            "name": self.name,
            "admin_level": self.admin_level,
            "local_members": self.local_members,
            "other_servers": servers,
            "remote_aliases": self.remote_aliases,
            "verdict": self.verdict.as_str(),
            "summary": self.summary(),
        })
    }
}

/// A power for people: its level, or "creator" for a v12 creator.
pub fn power_text(power: UserPower) -> String {
    match power {
        UserPower::Level(level) => level.to_string(),
        UserPower::Infinite => "creator".into(),
    }
}

fn power_json(power: UserPower) -> Value {
    match power {
        UserPower::Level(level) => json!(level),
        UserPower::Infinite => json!("creator"),
    }
}

/// The rooms where a user of this node is joined.
pub fn rooms(storage: &Storage, our_server: &str) -> Result<Vec<String>> {
    storage.rooms_with_members_of(our_server)
}

/// Reads one room's facts from the database and judges it; `None` for a room
/// of a version we do not know.
pub fn room(storage: &Storage, our_server: &str, room_id: &str) -> Result<Option<RoomResilience>> {
    let Some(version) = storage.room_version(room_id)?.as_deref().and_then(RoomVersion::from_id) else {
        return Ok(None);
    };
    let state_pdu = |kind: &str| -> Result<Option<crate::protocol::pdu::Pdu>> {
        let Some(event_id) = storage.current_state_event(room_id, kind, "")? else { return Ok(None) };
        Ok(storage.event(&event_id)?.and_then(|event| super::to_pdu(&version, &event)))
    };
    let power = RoomPower::new(
        &version,
        state_pdu("m.room.power_levels")?.as_ref(),
        state_pdu("m.room.create")?.as_ref(),
    );
    let name = state_pdu("m.room.name")?.and_then(|pdu| pdu.content.get("name")?.as_str().map(str::to_owned));
    let canonical_alias = state_pdu("m.room.canonical_alias")?.map(|pdu| pdu.content);
    let joined = storage.members_with(room_id, "join")?;
    let mut last_accepted = BTreeMap::new();
    for server in crate::protocol::power_levels::servers_of(joined.iter().map(String::as_str)) {
        if server != our_server {
            if let Some(ts) = storage.destination_last_accepted(&server)? {
                last_accepted.insert(server, ts);
            }
        }
    }
    Ok(Some(assess(
        our_server,
        room_id,
        name.as_deref(),
        &joined,
        &power,
        canonical_alias.as_ref(),
        &last_accepted,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::power_levels::PowerLevels;

    fn power(users: &[(&str, i64)], creator: &str) -> RoomPower {
        let content = json!({ "users": users.iter().copied().collect::<BTreeMap<_, _>>(),
                              "events": { "m.room.power_levels": 100 } });
        let version = RoomVersion::from_id("10").unwrap();
        RoomPower {
            levels: PowerLevels::from_content(&version, &content).unwrap(),
            has_power_levels_event: true,
            creators: [creator.to_string()].into(),
            privileged_creators: false,
        }
    }

    fn joined(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn a_room_of_ours_alone_dies_with_us() {
        let power = power(&[("@a:here", 100)], "@a:here");
        let report = assess("here", "!r:here", None, &joined(&["@a:here"]), &power, None, &BTreeMap::new());
        assert_eq!(report.verdict, Verdict::DiesWithThisNode);
        assert_eq!(report.local_members, 1);
        assert!(report.summary().starts_with("this room dies with this node"), "{}", report.summary());
        assert!(report.summary().contains("power 100"));
    }

    #[test]
    fn remote_members_without_power_keep_the_room_but_cannot_run_it() {
        let power = power(&[("@a:here", 100), ("@b:there", 50)], "@a:here");
        let last = BTreeMap::from([("there".to_string(), 7)]);
        let members = joined(&["@a:here", "@b:there", "@c:there"]);
        let report = assess("here", "!r:here", Some("Room"), &members, &power, None, &last);
        assert_eq!(report.verdict, Verdict::LivesOnUnmanaged);
        assert_eq!(report.other_servers.len(), 1);
        assert_eq!(report.other_servers[0].joined_members, 2);
        assert_eq!(report.other_servers[0].last_accepted_ts, Some(7));
        assert!(report.summary().contains("lives on at there, but no one there"), "{}", report.summary());
    }

    #[test]
    fn a_remote_admin_and_alias_make_the_room_live_on() {
        let power = power(&[("@a:here", 100), ("@b:there", 100)], "@a:here");
        let alias = json!({ "alias": "#r:here", "alt_aliases": ["#r:there", "not an alias", 5, "#r:there"] });
        let members = joined(&["@a:here", "@b:there", "@d:elsewhere"]);
        let report = assess("here", "!r:here", None, &members, &power, Some(&alias), &BTreeMap::new());
        assert_eq!(report.verdict, Verdict::LivesOn);
        assert_eq!(report.remote_aliases, vec!["#r:there".to_string()]);
        assert_eq!(report.other_servers[1].admins[0].user_id, "@b:there");
        assert!(report.other_servers[0].admins.is_empty());
        assert_eq!(
            report.summary(),
            "if this node dies for good, this room lives on at elsewhere, there; its admins there: @b:there (100)"
        );
        let json = report.to_json();
        assert_eq!(json["verdict"], "lives_on");
        assert_eq!(json["other_servers"][0]["last_accepted_ts"], Value::Null);
    }

    #[test]
    fn names_lose_control_characters_and_length() {
        let power = power(&[], "@a:here");
        let name = format!("\u{1b}[31mred{}", "x".repeat(500));
        let report = assess("here", "!r:here", Some(&name), &[], &power, None, &BTreeMap::new());
        let kept = report.name.unwrap();
        assert!(!kept.contains('\u{1b}') && kept.chars().count() == MAX_NAME_CHARS, "{kept}");
    }
}
