//! Reads for a whole page of events at once: events by ID, the content of
//! the state they replaced, and what history visibility needs of their state
//! groups, each in one query for the page (a `json_each` list parameter)
//! instead of one per event.

use std::collections::{HashMap, HashSet};

use rusqlite::params;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::Storage;
use super::rooms::{EVENT_COLUMNS, MAX_STATE_CHAIN, StoredEvent, event_from_row};
use crate::error::Result;

/// A stored event's sender and content (`None` when it has none).
#[derive(Clone, Debug)]
pub struct SenderAndContent {
    pub sender: String,
    pub content: Option<Value>,
}

/// Where a stored event sits: its room, type and state key (`None` for a
/// message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventKey {
    pub event_id: String,
    pub room_id: String,
    pub kind: String,
    pub state_key: Option<String>,
}

/// What history visibility reads from a state: the `history_visibility` of
/// `m.room.history_visibility` and one user's `membership`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupVisibility {
    pub history_visibility: Option<String>,
    pub membership: Option<String>,
    /// The state names an event for one of the two that this server does not
    /// hold (yet), so the answer may change when it arrives.
    pub missing_event: bool,
}

/// Migration 24: each room's `m.room.history_visibility` events, found
/// without reading the room's other events ([`Storage::rooms_with_closed_history`]).
pub(super) const HISTORY_VISIBILITY_EVENTS: &str = r#"
    CREATE INDEX events_history_visibility ON events(room_id) WHERE kind = 'm.room.history_visibility';
"#;

/// Strings (IDs, memberships) as the JSON array a `json_each(?)` parameter reads.
pub(super) fn string_list(strings: &[&str]) -> String {
    serde_json::to_string(strings).unwrap_or_default()
}

impl Storage {
    /// Events by ID in one query, in no particular order; unknown IDs are left out.
    pub fn events_by_id(&self, event_ids: &[&str]) -> Result<Vec<StoredEvent>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN (SELECT value FROM json_each(?1))");
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map([string_list(event_ids)], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The room, type and state key of events by ID in one query, without
    /// reading their JSON: what naming a state by event IDs needs (a big
    /// room's state is tens of thousands of them). Unknown IDs are left out.
    pub fn state_keys_of(&self, event_ids: &[&str]) -> Result<Vec<EventKey>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT event_id, room_id, kind, state_key FROM events
             WHERE event_id IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = statement.query_map([string_list(event_ids)], |row| {
            Ok(EventKey {
                event_id: row.get(0)?,
                room_id: row.get(1)?,
                kind: row.get(2)?,
                state_key: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sender and content of events by ID in one query, without parsing
    /// their whole PDUs: what `unsigned.prev_content` shows of replaced state.
    pub fn senders_and_contents(&self, event_ids: &[&str]) -> Result<HashMap<String, SenderAndContent>> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT event_id, sender, json -> '$.content' FROM events
             WHERE event_id IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = statement.query_map([string_list(event_ids)], |row| {
            let content: Option<String> = match row.get::<_, SqlValue>(2)? {
                SqlValue::Text(text) => Some(text),
                _ => None,
            };
            let content = content.and_then(|text| serde_json::from_str(&text).ok());
            Ok((row.get(0)?, SenderAndContent { sender: row.get(1)?, content }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The rooms among `room_ids` that have (or had) history visibility
    /// other than `shared` or `world_readable`: any event of the type, in the
    /// room's state or not, whose `history_visibility` is anything but those
    /// two strings. In the other rooms every event is visible to a member
    /// joined now (spec: `shared` shows the member all history), whatever
    /// the state at each event.
    pub fn rooms_with_closed_history(&self, room_ids: &[&str]) -> Result<HashSet<String>> {
        if room_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT room_id FROM events
             WHERE kind = 'm.room.history_visibility' AND room_id IN (SELECT value FROM json_each(?1))
               AND COALESCE(json_extract(json, '$.content.history_visibility'), '')
                   NOT IN ('shared', 'world_readable')",
        )?;
        let rows = statement.query_map([string_list(room_ids)], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What history visibility needs of each state group's state, in one
    /// query: `m.room.history_visibility` and `user_id`'s membership there, as
    /// the strings their events' content holds (absent keys and non-string
    /// values are `None`). Groups that set neither are left out.
    pub fn visibility_at_groups(
        &self,
        groups: &[i64],
        user_id: &str,
    ) -> Result<HashMap<i64, GroupVisibility>> {
        if groups.is_empty() {
            return Ok(HashMap::new());
        }
        // Walk each group's delta chain upwards (bounded by MAX_STATE_CHAIN),
        // take the nearest group that sets each of the two keys (SQLite takes
        // the bare columns from the row of the MIN), and read the one content
        // field from the event.
        let mut statement = self.conn.prepare_cached(
            "WITH RECURSIVE chain(origin, group_id, steps) AS (
                 SELECT value, value, 0 FROM json_each(?1)
                 UNION ALL
                 SELECT c.origin, g.parent, c.steps + 1 FROM state_groups g JOIN chain c ON g.group_id = c.group_id
                 WHERE g.parent IS NOT NULL AND c.steps <= ?3
             ),
             nearest(origin, kind, event_id, steps) AS (
                 SELECT c.origin, s.kind, s.event_id, MIN(c.steps) FROM chain c
                 JOIN state_group_entries s ON s.group_id = c.group_id
                   AND ((s.kind = 'm.room.history_visibility' AND s.state_key = '')
                     OR (s.kind = 'm.room.member' AND s.state_key = ?2))
                 GROUP BY c.origin, s.kind
             )
             SELECT n.origin, n.kind,
                 CASE n.kind WHEN 'm.room.member' THEN json_extract(e.json, '$.content.membership')
                     ELSE json_extract(e.json, '$.content.history_visibility') END,
                 e.event_id IS NULL
             FROM nearest n LEFT JOIN events e ON e.event_id = n.event_id",
        )?;
        let groups = serde_json::to_string(groups).unwrap_or_default();
        let rows = statement.query_map(params![groups, user_id, MAX_STATE_CHAIN + 1], |row| {
            let value = match row.get::<_, SqlValue>(2)? {
                SqlValue::Text(text) => Some(text),
                _ => None,
            };
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, value, row.get::<_, bool>(3)?))
        })?;
        let mut found: HashMap<i64, GroupVisibility> = HashMap::new();
        for row in rows {
            let (group, kind, value, missing_event) = row?;
            let entry = found.entry(group).or_default();
            entry.missing_event |= missing_event;
            if kind == "m.room.member" {
                entry.membership = value;
            } else {
                entry.history_visibility = value;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;
    use serde_json::json;

    use super::*;

    /// Stores an event row as the DAG code would (no state group of its own).
    fn insert(storage: &Storage, stream: i64, kind: &str, state_key: Option<&str>, content: Value) {
        insert_related(storage, stream, kind, state_key, content, None);
    }

    fn insert_related(
        storage: &Storage,
        stream: i64,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        relation: Option<(&str, &str)>,
    ) {
        let json = json!({ "type": kind, "content": content, "sender": "@s:x", "hashes": {"sha256": "h"} });
        storage
            .conn
            .execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, kind, state_key, sender, depth,
                    origin_server_ts, json, rel_type, relates_to)
                 VALUES (?1, ?2, '!r:x', ?3, ?4, '@s:x', ?1, 0, ?5, ?6, ?7)",
                params![
                    stream,
                    format!("${stream}"),
                    kind,
                    state_key,
                    json.to_string(),
                    relation.map(|r| r.0),
                    relation.map(|r| r.1)
                ],
            )
            .unwrap();
    }

    fn group(storage: &Storage, group: i64, parent: Option<i64>, entries: &[(&str, &str, i64)]) {
        storage
            .conn
            .execute(
                "INSERT INTO state_groups (group_id, room_id, parent, chain_length) VALUES (?1, '!r:x', ?2, 0)",
                params![group, parent],
            )
            .unwrap();
        for (kind, state_key, stream) in entries {
            storage
                .conn
                .execute(
                    "INSERT INTO state_group_entries (group_id, kind, state_key, event_id) VALUES (?1, ?2, ?3, ?4)",
                    params![group, kind, state_key, format!("${stream}")],
                )
                .unwrap();
        }
    }

    fn facts(history_visibility: Option<&str>, membership: Option<&str>) -> GroupVisibility {
        GroupVisibility {
            history_visibility: history_visibility.map(str::to_owned),
            membership: membership.map(str::to_owned),
            missing_event: false,
        }
    }

    #[test]
    fn visibility_at_groups_takes_the_nearest_entry_up_each_delta_chain() {
        let storage = crate::storage::in_memory();
        let visibility = "m.room.history_visibility";
        insert(&storage, 1, visibility, Some(""), json!({"history_visibility": "shared"}));
        insert(&storage, 2, "m.room.member", Some("@a:x"), json!({"membership": "invite"}));
        insert(&storage, 3, "m.room.member", Some("@a:x"), json!({"membership": "join"}));
        insert(&storage, 4, visibility, Some(""), json!({"history_visibility": "joined"}));
        insert(&storage, 5, "m.room.member", Some("@c:x"), json!({"membership": 7}));
        insert(&storage, 6, "m.room.create", Some(""), json!({}));
        group(
            &storage,
            1,
            None,
            &[(visibility, "", 1), ("m.room.member", "@a:x", 2), ("m.room.member", "@c:x", 5)],
        );
        group(&storage, 2, Some(1), &[("m.room.member", "@a:x", 3)]);
        group(&storage, 3, Some(2), &[(visibility, "", 4)]);
        group(&storage, 4, None, &[("m.room.create", "", 6)]);

        let found = storage.visibility_at_groups(&[3, 2, 1, 4, 99], "@a:x").unwrap();
        assert_eq!(found.get(&3), Some(&facts(Some("joined"), Some("join"))));
        assert_eq!(found.get(&2), Some(&facts(Some("shared"), Some("join"))));
        assert_eq!(found.get(&1), Some(&facts(Some("shared"), Some("invite"))));
        assert_eq!((found.get(&4), found.get(&99), found.len()), (None, None, 3));
        let other = storage.visibility_at_groups(&[3], "@b:x").unwrap();
        assert_eq!(other.get(&3), Some(&facts(Some("joined"), None)));
        // A membership that is not a string reads as none.
        let odd = storage.visibility_at_groups(&[1], "@c:x").unwrap();
        assert_eq!(odd.get(&1), Some(&facts(Some("shared"), None)));
        assert!(storage.visibility_at_groups(&[], "@a:x").unwrap().is_empty());
        // A state naming an event not held says so.
        group(&storage, 5, Some(3), &[("m.room.member", "@a:x", 40)]);
        let missing = storage.visibility_at_groups(&[5], "@a:x").unwrap();
        assert_eq!(
            missing.get(&5),
            Some(&GroupVisibility { missing_event: true, ..facts(Some("joined"), None) })
        );
    }

    #[test]
    fn page_reads_find_events_contents_and_children_by_id() {
        let storage = crate::storage::in_memory();
        insert(&storage, 1, "m.room.topic", Some(""), json!({"topic": "old"}));
        insert(&storage, 2, "m.room.message", None, json!({"body": "root"}));
        insert_related(&storage, 3, "m.room.message", None, json!({}), Some(("m.thread", "$2")));
        insert_related(&storage, 4, "m.reaction", None, json!({}), Some(("m.annotation", "$2")));
        insert_related(&storage, 5, "m.room.message", None, json!({}), Some(("m.reference", "$1")));
        insert_related(&storage, 6, "m.room.message", None, json!({}), Some(("m.thread", "$2")));

        let mut ids: Vec<String> =
            storage.events_by_id(&["$2", "$1", "$nope"]).unwrap().into_iter().map(|e| e.event_id).collect();
        ids.sort();
        assert_eq!(ids, ["$1", "$2"]);
        let contents = storage.senders_and_contents(&["$1", "$nope"]).unwrap();
        assert_eq!(contents.len(), 1);
        assert_eq!(
            (contents["$1"].sender.as_str(), &contents["$1"].content),
            ("@s:x", &Some(json!({"topic": "old"})))
        );

        // Annotations are not aggregated; children come oldest first, with their parent.
        let children: Vec<(String, String)> = storage
            .relation_children(&["$2", "$1", "$3"])
            .unwrap()
            .into_iter()
            .map(|(parent, child)| (parent, child.event_id))
            .collect();
        let expected = [("$2", "$3"), ("$1", "$5"), ("$2", "$6")].map(|(p, c)| (p.to_owned(), c.to_owned()));
        assert_eq!(children, expected);
        assert!(storage.relation_children(&[]).unwrap().is_empty());
    }
}
