//! Who is in a room, by server: the questions asked for every event stored
//! (which servers it goes to, which local users it concerns, whether a
//! server may read the room) answered from an index of the room's members
//! by membership and server, so that their cost follows the servers or the
//! local members asked about, never the room's size.
//!
//! A member's server is the part of their user ID after the first `:`
//! (<https://spec.matrix.org/latest/appendices/#user-identifiers>), as
//! `protocol::power_levels::domain_of` reads it; a member event whose state
//! key has no `:` has none.

use rusqlite::params;

use super::Storage;
use super::batch::string_list;
use super::rooms::CurrentStateEntry;
use crate::error::Result;

/// Migration 25: each member row of `current_state` gets its server (a
/// virtual column, computed when read, so nothing is stored twice), and an
/// index finds a room's members by membership and server. The index also
/// holds the row's key (`kind`, `state_key`), so a room's local members and
/// the distinct servers of its joined ones are read from it alone.
pub(super) const MEMBERS_BY_SERVER: &str = r#"
    ALTER TABLE current_state ADD COLUMN server TEXT GENERATED ALWAYS AS (
        CASE WHEN instr(state_key, ':') > 0 THEN substr(state_key, instr(state_key, ':') + 1) END
    ) VIRTUAL;
    CREATE INDEX current_state_members_by_server ON current_state(room_id, membership, server)
        WHERE kind = 'm.room.member';
"#;

impl Storage {
    /// The distinct servers of a room's joined members, sorted: one index
    /// seek per server (each step asks for the least server after the
    /// previous one), not a read of every member.
    pub fn servers_in_room(&self, room_id: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "WITH RECURSIVE servers(server) AS (
                 SELECT MIN(server) FROM current_state
                 WHERE room_id = ?1 AND membership = 'join' AND kind = 'm.room.member'
                 UNION ALL
                 SELECT (SELECT MIN(c.server) FROM current_state c
                         WHERE c.room_id = ?1 AND c.membership = 'join' AND c.kind = 'm.room.member'
                           AND c.server > servers.server)
                 FROM servers WHERE servers.server IS NOT NULL
             )
             SELECT server FROM servers WHERE server IS NOT NULL",
        )?;
        let rows = statement.query_map([room_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether `server` has a joined member in a room.
    pub fn server_in_room(&self, room_id: &str, server: &str) -> Result<bool> {
        let mut statement = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM current_state
                WHERE room_id = ?1 AND membership = 'join' AND server = ?2 AND kind = 'm.room.member')",
        )?;
        Ok(statement.query_row(params![room_id, server], |row| row.get(0))?)
    }

    /// The members of a room on `server` whose membership now is
    /// `membership`, by user ID.
    pub fn server_members(&self, room_id: &str, server: &str, membership: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT state_key FROM current_state
             WHERE room_id = ?1 AND membership = ?3 AND server = ?2 AND kind = 'm.room.member'
             ORDER BY state_key",
        )?;
        let rows = statement.query_map(params![room_id, server, membership], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Those of `user_ids` whose membership of a room now is one of
    /// `memberships`: one primary-key read each.
    pub fn members_among(
        &self,
        room_id: &str,
        user_ids: &[&str],
        memberships: &[&str],
    ) -> Result<Vec<String>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT state_key, membership FROM current_state
             WHERE room_id = ?1 AND kind = 'm.room.member' AND state_key IN (SELECT value FROM json_each(?2))",
        )?;
        let rows = statement.query_map(params![room_id, string_list(user_ids)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (user_id, membership) = row?;
            if membership.is_some_and(|membership| memberships.contains(&membership.as_str())) {
                members.push(user_id);
            }
        }
        Ok(members)
    }

    /// Each joined member of a room with the JSON text of their member
    /// event's `displayname` and `avatar_url` (`None` when absent, or when
    /// the event is not held here), given to `each` row by row, in no
    /// particular order: a room of 50,000 members is never held whole.
    pub fn joined_member_profiles(
        &self,
        room_id: &str,
        mut each: impl FnMut(&str, Option<&str>, Option<&str>),
    ) -> Result<()> {
        let mut statement = self.conn.prepare_cached(
            "SELECT c.state_key, e.json -> '$.content.displayname', e.json -> '$.content.avatar_url'
             FROM current_state c LEFT JOIN events e ON e.event_id = c.event_id
             WHERE c.room_id = ?1 AND c.membership = 'join' AND c.kind = 'm.room.member'",
        )?;
        let mut rows = statement.query([room_id])?;
        while let Some(row) = rows.next()? {
            let user_id: String = row.get(0)?;
            let name: Option<String> = row.get(1)?;
            let avatar: Option<String> = row.get(2)?;
            each(&user_id, name.as_deref(), avatar.as_deref());
        }
        Ok(())
    }

    /// The entries of a room's current state whose events were stored after
    /// stream position `after`, ordered by type and state key: found from
    /// the room's events since then (each checked against the current
    /// state by key), so an incremental sync of a room of 50,000 members
    /// reads what changed, not the room.
    pub fn current_state_entries_since(&self, room_id: &str, after: i64) -> Result<Vec<CurrentStateEntry>> {
        // CROSS JOIN: the events since `after` drive, whatever SQLite guesses.
        let mut statement = self.conn.prepare_cached(
            "SELECT c.kind, c.state_key, c.event_id, c.membership
             FROM events e CROSS JOIN current_state c
             WHERE e.room_id = ?1 AND e.stream_ordering > ?2 AND e.state_key IS NOT NULL
               AND c.room_id = ?1 AND c.kind = e.kind AND c.state_key = e.state_key
               AND c.event_id = e.event_id
             ORDER BY c.kind, c.state_key",
        )?;
        let rows = statement.query_map(params![room_id, after], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The current member entries of some users in a room (those with one),
    /// ordered by user ID.
    pub fn current_member_entries(&self, room_id: &str, user_ids: &[&str]) -> Result<Vec<CurrentStateEntry>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT kind, state_key, event_id, membership FROM current_state
             WHERE room_id = ?1 AND kind = 'm.room.member' AND state_key IN (SELECT value FROM json_each(?2))
             ORDER BY state_key",
        )?;
        let rows = statement.query_map(params![room_id, string_list(user_ids)], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a room has a joined member on `server` other than `user_id`.
    pub fn server_has_other_member(&self, room_id: &str, server: &str, user_id: &str) -> Result<bool> {
        let mut statement = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM current_state
                WHERE room_id = ?1 AND membership = 'join' AND server = ?2 AND kind = 'm.room.member'
                  AND state_key != ?3)",
        )?;
        Ok(statement.query_row(params![room_id, server, user_id], |row| row.get(0))?)
    }
}

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CurrentStateEntry> {
    Ok(CurrentStateEntry {
        kind: row.get(0)?,
        state_key: row.get(1)?,
        event_id: row.get(2)?,
        membership: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a member row of `current_state` as the event code does.
    fn member(storage: &Storage, room_id: &str, user_id: &str, membership: &str) {
        storage
            .conn
            .execute(
                "INSERT INTO current_state (room_id, kind, state_key, event_id, membership)
                 VALUES (?1, 'm.room.member', ?2, ?3, ?4)
                 ON CONFLICT (room_id, kind, state_key) DO UPDATE SET membership = excluded.membership",
                params![room_id, user_id, format!("${room_id}{user_id}"), membership],
            )
            .unwrap();
    }

    /// The query plan's lines, to check a query reads the index and not the room.
    fn plan(storage: &Storage, sql: &str) -> String {
        let mut statement = storage.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = statement.query_map(["!r:x", "b.example", "@a:b.example"], |row| row.get::<_, String>(3));
        rows.unwrap().map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn servers_in_a_room_are_those_of_its_joined_members_sorted_and_distinct() {
        let storage = crate::storage::in_memory();
        member(&storage, "!r:x", "@a:c.example", "join");
        member(&storage, "@a:c.example", "@z:zz", "join");
        member(&storage, "!r:x", "@b:c.example", "join");
        member(&storage, "!r:x", "@a:a.example:8448", "join");
        member(&storage, "!r:x", "@a:b.example", "leave");
        member(&storage, "!r:x", "@b:b.example", "invite");
        member(&storage, "!r:x", "no-colon", "join");
        member(&storage, "!s:x", "@a:d.example", "join");
        // The same answer as reading every member and taking their servers.
        assert_eq!(storage.servers_in_room("!r:x").unwrap(), ["a.example:8448", "c.example"]);
        assert!(storage.server_in_room("!r:x", "c.example").unwrap());
        assert!(!storage.server_in_room("!r:x", "b.example").unwrap(), "left and invited only");
        assert!(!storage.server_in_room("!r:x", "d.example").unwrap(), "another room's");
        member(&storage, "!r:x", "@a:c.example", "leave");
        member(&storage, "!r:x", "@b:c.example", "ban");
        member(&storage, "!r:x", "@b:b.example", "join");
        assert_eq!(storage.servers_in_room("!r:x").unwrap(), ["a.example:8448", "b.example"]);
        assert!(storage.servers_in_room("!none:x").unwrap().is_empty());
    }

    #[test]
    fn a_servers_members_are_found_by_membership() {
        let storage = crate::storage::in_memory();
        for (user_id, membership) in [
            ("@c:b.example", "join"),
            ("@a:b.example", "join"),
            ("@b:b.example", "invite"),
            ("@d:b.example", "leave"),
            ("@a:b.example.org", "join"),
            ("@e:c.example", "join"),
        ] {
            member(&storage, "!r:x", user_id, membership);
        }
        assert_eq!(
            storage.server_members("!r:x", "b.example", "join").unwrap(),
            ["@a:b.example", "@c:b.example"]
        );
        assert_eq!(storage.server_members("!r:x", "b.example", "invite").unwrap(), ["@b:b.example"]);
        assert!(storage.server_members("!r:x", "c.example", "leave").unwrap().is_empty());
        let among = ["@b:b.example", "@d:b.example", "@e:c.example", "@nobody:b.example"];
        let found = storage.members_among("!r:x", &among, &["join", "invite"]).unwrap();
        assert_eq!(found, ["@b:b.example", "@e:c.example"]);
        assert!(storage.members_among("!s:x", &among, &["join"]).unwrap().is_empty());
        assert!(storage.server_has_other_member("!r:x", "b.example", "@a:b.example").unwrap());
        member(&storage, "!r:x", "@c:b.example", "leave");
        assert!(!storage.server_has_other_member("!r:x", "b.example", "@a:b.example").unwrap());
        assert!(storage.server_has_other_member("!r:x", "b.example", "@z:b.example").unwrap());
    }

    #[test]
    fn joined_member_profiles_are_their_events_values_as_json() {
        let storage = crate::storage::in_memory();
        member(&storage, "!r:x", "@a:x", "join");
        member(&storage, "!r:x", "@b:x", "join");
        member(&storage, "!r:x", "@c:x", "leave");
        let json = r#"{"content": {"membership": "join", "displayname": "A \"a\"", "avatar_url": 7}}"#;
        storage
            .conn
            .execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, kind, state_key, sender, depth,
                    origin_server_ts, json)
                 VALUES (1, '$!r:x@a:x', '!r:x', 'm.room.member', '@a:x', '@a:x', 1, 0, ?1)",
                [json],
            )
            .unwrap();
        let mut found = Vec::new();
        storage
            .joined_member_profiles("!r:x", |user_id, name, avatar| {
                found.push((user_id.to_owned(), name.map(str::to_owned), avatar.map(str::to_owned)))
            })
            .unwrap();
        found.sort();
        // The member whose event is not held here is listed, without a profile.
        let a = ("@a:x".to_owned(), Some(r#""A \"a\"""#.to_owned()), Some("7".to_owned()));
        assert_eq!(found, [a, ("@b:x".to_owned(), None, None)]);
    }

    #[test]
    fn state_changed_since_a_position_is_found_from_the_events_since() {
        let storage = crate::storage::in_memory();
        // Events 1..=4: a's join, b's join, the name, b's leave (which
        // replaced b's join in the current state); 5: a message.
        let events = [
            (1, "$1", "m.room.member", Some("@a:x")),
            (2, "$2", "m.room.member", Some("@b:x")),
            (3, "$3", "m.room.name", Some("")),
            (4, "$4", "m.room.member", Some("@b:x")),
            (5, "$5", "m.room.message", None),
        ];
        for (stream, event_id, kind, state_key) in events {
            storage
                .conn
                .execute(
                    "INSERT INTO events (stream_ordering, event_id, room_id, kind, state_key, sender, depth,
                        origin_server_ts, json)
                     VALUES (?1, ?2, '!r:x', ?3, ?4, '@a:x', ?1, 0, '{}')",
                    params![stream, event_id, kind, state_key],
                )
                .unwrap();
        }
        storage
            .conn
            .execute_batch(
                "INSERT INTO current_state (room_id, kind, state_key, event_id, membership) VALUES
                    ('!r:x', 'm.room.member', '@a:x', '$1', 'join'),
                    ('!r:x', 'm.room.member', '@b:x', '$4', 'leave'),
                    ('!r:x', 'm.room.name', '', '$3', NULL);",
            )
            .unwrap();
        let keys = |entries: Vec<CurrentStateEntry>| -> Vec<(String, String, String)> {
            entries.into_iter().map(|entry| (entry.kind, entry.state_key, entry.event_id)).collect()
        };
        let entry =
            |kind: &str, state_key: &str, event_id: &str| (kind.into(), state_key.into(), event_id.into());
        assert_eq!(
            keys(storage.current_state_entries_since("!r:x", 1).unwrap()),
            [entry("m.room.member", "@b:x", "$4"), entry("m.room.name", "", "$3")],
            "b's replaced join is not current; a's join is older"
        );
        assert!(storage.current_state_entries_since("!r:x", 4).unwrap().is_empty());
        assert_eq!(
            keys(storage.current_member_entries("!r:x", &["@b:x", "@a:x", "@c:x"]).unwrap()),
            [entry("m.room.member", "@a:x", "$1"), entry("m.room.member", "@b:x", "$4")]
        );
    }

    #[test]
    fn member_questions_read_the_index_not_the_room() {
        let storage = crate::storage::in_memory();
        // A seek on the room, the membership and the server, not a scan.
        let seek = "INDEX current_state_members_by_server (room_id=? AND membership=? AND server";
        let since = "SELECT c.kind FROM events e CROSS JOIN current_state c
             WHERE e.room_id = ?1 AND e.stream_ordering > ?2 AND e.state_key IS NOT NULL
               AND c.room_id = ?1 AND c.kind = e.kind AND c.state_key = e.state_key AND c.event_id = ?3";
        let plan_since = plan(&storage, since);
        assert!(plan_since.starts_with("SEARCH e USING INDEX events_by_room"), "{plan_since}");
        for sql in [
            "SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = ?1 AND membership = 'join'
                AND server = ?2 AND kind = 'm.room.member' AND state_key != ?3)",
            "SELECT MIN(server) FROM current_state WHERE room_id = ?1 AND membership = 'join'
                AND kind = 'm.room.member' AND server > ?2 AND ?3 IS NOT NULL",
        ] {
            let plan = plan(&storage, sql);
            assert!(plan.contains(seek), "{sql}: {plan}");
        }
    }
}
