//! Room aliases, the published room directory, the user directory's
//! candidate queries, and content reports.

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

/// A user the directory may show: `(user_id, display_name, avatar_url)`.
pub type DirectoryCandidate = (String, Option<String>, Option<String>);

/// What a report is about.
pub enum ReportTarget<'a> {
    Event { room_id: &'a str, event_id: &'a str },
    Room { room_id: &'a str },
    User { user_id: &'a str },
}

impl Storage {
    /// Maps an alias to a room; false if the alias is taken.
    pub fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO room_aliases (alias, room_id, creator, created_ts)
             VALUES (?1, ?2, ?3, ?4)",
            params![alias, room_id, creator, now_ms()],
        )?;
        Ok(inserted == 1)
    }

    /// The room and creator of an alias.
    pub fn alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        let mut statement =
            self.conn.prepare_cached("SELECT room_id, creator FROM room_aliases WHERE alias = ?1")?;
        Ok(statement.query_row([alias], |row| Ok((row.get(0)?, row.get(1)?))).optional()?)
    }

    /// Removes an alias; false if it did not exist.
    pub fn delete_alias(&self, alias: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM room_aliases WHERE alias = ?1", [alias])? == 1)
    }

    /// The local aliases of a room.
    pub fn aliases_of_room(&self, room_id: &str) -> Result<Vec<String>> {
        let mut statement =
            self.conn.prepare_cached("SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias")?;
        let rows = statement.query_map([room_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Publishes a room in the directory (or withdraws it).
    pub fn set_room_visibility(&self, room_id: &str, public: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE rooms SET visibility = ?2 WHERE room_id = ?1",
            params![room_id, if public { "public" } else { "private" }],
        )?;
        Ok(())
    }

    /// Whether a room is published in the directory.
    pub fn room_is_public(&self, room_id: &str) -> Result<bool> {
        let mut statement =
            self.conn.prepare_cached("SELECT visibility = 'public' FROM rooms WHERE room_id = ?1")?;
        Ok(statement.query_row([room_id], |row| row.get(0)).optional()?.unwrap_or(false))
    }

    /// Every room published in the directory.
    pub fn public_rooms(&self) -> Result<Vec<String>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT room_id FROM rooms WHERE visibility = 'public' ORDER BY created_ts")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves every local alias of `from` to `to`, returning the moved aliases.
    pub fn move_aliases(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let aliases = self.aliases_of_room(from)?;
        self.conn.execute("UPDATE room_aliases SET room_id = ?2 WHERE room_id = ?1", params![from, to])?;
        Ok(aliases)
    }

    /// Everyone a user directory search by `searcher` may find, as Synapse
    /// chooses them with `user_directory.search_all_users` off: users joined
    /// to a public room (join rule `public`, or history `world_readable`,
    /// Synapse's `is_room_world_readable_or_publicly_joinable`) and users
    /// joined to a room the searcher is joined to (not the searcher, unless
    /// in a public room), without deactivated accounts. With each, the
    /// profile shown: a local user's global profile, a remote user's
    /// display name and avatar from one of their member events in those
    /// rooms. `(user_id, display_name, avatar_url)`, by user ID. Rooms are
    /// visited through `rooms` and their state read by primary key, so no
    /// search scans the whole current state.
    pub fn user_directory_candidates(&self, searcher: &str) -> Result<Vec<DirectoryCandidate>> {
        let mut statement = self.conn.prepare_cached(
            "WITH public_rooms(room_id) AS (
                SELECT r.room_id FROM rooms r
                WHERE EXISTS (SELECT 1 FROM current_state c JOIN events e ON e.event_id = c.event_id
                              WHERE c.room_id = r.room_id AND c.kind = 'm.room.join_rules' AND c.state_key = ''
                                AND json_extract(e.json, '$.content.join_rule') = 'public')
                   OR EXISTS (SELECT 1 FROM current_state c JOIN events e ON e.event_id = c.event_id
                              WHERE c.room_id = r.room_id AND c.kind = 'm.room.history_visibility'
                                AND c.state_key = ''
                                AND json_extract(e.json, '$.content.history_visibility') = 'world_readable')
             ),
             own_rooms(room_id) AS (
                SELECT room_id FROM current_state
                WHERE kind = 'm.room.member' AND state_key = ?1 AND membership = 'join'
             ),
             members(user_id, event_id) AS (
                SELECT m.state_key, MIN(m.event_id) FROM current_state m
                WHERE m.kind = 'm.room.member' AND m.membership = 'join'
                  AND (m.room_id IN (SELECT room_id FROM public_rooms)
                       OR (m.state_key != ?1 AND m.room_id IN (SELECT room_id FROM own_rooms)))
                GROUP BY m.state_key
             )
             SELECT members.user_id,
                CASE WHEN u.user_id IS NOT NULL THEN u.displayname
                     WHEN json_type(e.json, '$.content.displayname') = 'text'
                     THEN json_extract(e.json, '$.content.displayname') END,
                CASE WHEN u.user_id IS NOT NULL THEN u.avatar_url
                     WHEN json_type(e.json, '$.content.avatar_url') = 'text'
                     THEN json_extract(e.json, '$.content.avatar_url') END
             FROM members JOIN events e ON e.event_id = members.event_id
             LEFT JOIN users u ON u.user_id = members.user_id
             WHERE u.user_id IS NULL OR u.deactivated = 0
             ORDER BY members.user_id",
        )?;
        let rows = statement.query_map([searcher], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a content report.
    pub fn insert_report(
        &self,
        reporter: &str,
        target: ReportTarget<'_>,
        reason: Option<&str>,
        score: Option<i64>,
    ) -> Result<()> {
        let (room_id, event_id, target_user) = match target {
            ReportTarget::Event { room_id, event_id } => (Some(room_id), Some(event_id), None),
            ReportTarget::Room { room_id } => (Some(room_id), None, None),
            ReportTarget::User { user_id } => (None, None, Some(user_id)),
        };
        self.conn.execute(
            "INSERT INTO reports (reporter, room_id, event_id, target_user, reason, score, received_ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![reporter, room_id, event_id, target_user, reason, score, now_ms()],
        )?;
        Ok(())
    }

    /// The number of reports about a room (operators read the table directly).
    #[cfg(test)]
    pub fn report_count(&self, room_id: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM reports WHERE room_id = ?1", [room_id], |row| row.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_move_with_an_upgrade() {
        let storage = crate::storage::in_memory();
        assert!(storage.create_alias("#a:x", "!old:x", "@u:x").unwrap());
        assert!(!storage.create_alias("#a:x", "!other:x", "@u:x").unwrap());
        assert!(storage.create_alias("#b:x", "!old:x", "@u:x").unwrap());
        assert_eq!(storage.move_aliases("!old:x", "!new:x").unwrap(), ["#a:x", "#b:x"]);
        assert!(storage.aliases_of_room("!old:x").unwrap().is_empty());
        assert_eq!(storage.alias("#b:x").unwrap().unwrap().0, "!new:x");
    }

    #[test]
    fn reports_are_stored() {
        let storage = crate::storage::in_memory();
        storage.insert_report("@u:x", ReportTarget::Room { room_id: "!r:x" }, Some("spam"), None).unwrap();
        let target = ReportTarget::Event { room_id: "!r:x", event_id: "$e" };
        storage.insert_report("@u:x", target, None, Some(-100)).unwrap();
        storage.insert_report("@u:x", ReportTarget::User { user_id: "@v:x" }, Some(""), None).unwrap();
        assert_eq!(storage.report_count("!r:x").unwrap(), 2);
    }
}
