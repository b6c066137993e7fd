//! Unread notifications kept at write time: per recipient, the notifying
//! events after their read receipt (`unread_marks`) and their tallies per
//! thread (`unread_tallies`), both written in the transaction that stores the
//! event or the receipt. What notifies is decided by the room engine
//! (`rooms::push_actions`); this module only keeps the rows and counters.

use rusqlite::{OptionalExtension, params};

use super::Storage;
use crate::error::Result;

/// Migration 17: the unread notifying events of each local user (replaced
/// by `unread_marks`, migration 21) and the per-thread counters /sync reads
/// (replaced by `unread_tallies`, migration 21).
/// Events stored before this migration start from zero: counting them would
/// need every user's push rules, which SQL cannot evaluate.
pub(super) const UNREAD_COUNTS: &str = r#"
    CREATE TABLE unread_events (
        user_id          TEXT NOT NULL,
        room_id          TEXT NOT NULL,
        stream_ordering  INTEGER NOT NULL,
        thread_id        TEXT NOT NULL,
        highlight        INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id, stream_ordering)
    ) WITHOUT ROWID;
    CREATE TABLE unread_counts (
        user_id        TEXT NOT NULL,
        room_id        TEXT NOT NULL,
        thread_id      TEXT NOT NULL,
        notifications  INTEGER NOT NULL,
        highlights     INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id, thread_id)
    ) WITHOUT ROWID;
"#;

/// Migration 21: the unread notifying events of each local user, one row per
/// (room, user, event) with its thread (`main` or the thread root's ID) and
/// whether it highlights. An event adds a row for each recipient, so rooms
/// and users are numbered (`unread_names`, one row per room or user ever
/// marked) and rows hold the numbers: a row with the IDs as text took four
/// times the space, and every page a commit touches is written to the WAL.
/// Rows are found by room and user (receipts count and delete a key range);
/// the room comes first so that the rows an event adds for its recipients
/// sit on the same few pages. A row goes when a receipt covers it (or its
/// event is redacted, or its user leaves the room), so the table holds what
/// is unread, not history. The per-thread counters (`unread_tallies`) are
/// keyed by the numbers too, user first (a push's badge sums a user's), so
/// that the few rows an event raises sit on a page or two.
pub(super) const UNREAD_MARKS: &str = r#"
    CREATE TABLE unread_names (
        id    INTEGER PRIMARY KEY,
        name  TEXT NOT NULL UNIQUE
    );
    CREATE TABLE unread_marks (
        room             INTEGER NOT NULL,
        user             INTEGER NOT NULL,
        stream_ordering  INTEGER NOT NULL,
        thread_id        TEXT NOT NULL,
        highlight        INTEGER NOT NULL,
        PRIMARY KEY (room, user, stream_ordering)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO unread_names (name)
        SELECT room_id FROM unread_events UNION SELECT user_id FROM unread_events;
    INSERT INTO unread_marks (room, user, stream_ordering, thread_id, highlight)
        SELECT r.id, u.id, e.stream_ordering, e.thread_id, e.highlight FROM unread_events e
        JOIN unread_names r ON r.name = e.room_id JOIN unread_names u ON u.name = e.user_id;
    DROP TABLE unread_events;
    CREATE TABLE unread_tallies (
        user           INTEGER NOT NULL,
        room           INTEGER NOT NULL,
        thread_id      TEXT NOT NULL,
        notifications  INTEGER NOT NULL,
        highlights     INTEGER NOT NULL,
        PRIMARY KEY (user, room, thread_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO unread_names (name)
        SELECT room_id FROM unread_counts UNION SELECT user_id FROM unread_counts;
    INSERT INTO unread_tallies (user, room, thread_id, notifications, highlights)
        SELECT u.id, r.id, c.thread_id, c.notifications, c.highlights FROM unread_counts c
        JOIN unread_names r ON r.name = c.room_id JOIN unread_names u ON u.name = c.user_id;
    DROP TABLE unread_counts;
"#;

/// The number of the room (`?1`) and the user (`?2`) in `unread_marks`, as
/// scalar subqueries.
const ROOM: &str = "(SELECT id FROM unread_names WHERE name = ?1)";
const USER: &str = "(SELECT id FROM unread_names WHERE name = ?2)";

/// The thread of events outside any thread.
pub const MAIN_THREAD: &str = "main";

/// One recipient an event notifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadMark {
    pub user_id: String,
    /// [`MAIN_THREAD`] or the thread root's event ID.
    pub thread_id: String,
    pub highlight: bool,
}

/// A thread's counts: `(notification_count, highlight_count)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    pub thread_id: String,
    pub notifications: u64,
    pub highlights: u64,
}

/// Records `marks` for the event at `stream_ordering` inside the transaction
/// storing it: a few statements however many recipients, each reading the
/// recipients as one `json_each` list of user IDs and their highlights as a
/// string of `0`/`1` flags by position (extracting fields from a list of
/// JSON objects per row measured as a good part of a send): per thread (an
/// event is in one) the rows added and the counters raised. The room and
/// users are numbered the first time one of them is marked: the rows are
/// added first, and only when one has no number yet (its column would be
/// NULL, which the table refuses, undoing the statement) are the names
/// numbered and the rows added again, which saves a statement on every
/// other event. An event is marked once, by the transaction that gives it
/// its stream position (the key of `events`), so a mark already there is an
/// error, not something to count again; `marks` name each user once (the
/// room's members).
pub(super) fn mark_unread(
    transaction: &rusqlite::Connection,
    room_id: &str,
    stream_ordering: i64,
    marks: &[UnreadMark],
) -> Result<()> {
    let users = |marks: &[&UnreadMark]| {
        serde_json::to_string(&marks.iter().map(|mark| &mark.user_id).collect::<Vec<_>>()).unwrap_or_default()
    };
    let mut threads: Vec<&str> = marks.iter().map(|mark| mark.thread_id.as_str()).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut insert = transaction.prepare_cached(
        "INSERT INTO unread_marks (room, user, stream_ordering, thread_id, highlight)
         SELECT (SELECT id FROM unread_names WHERE name = ?1),
                (SELECT id FROM unread_names WHERE name = mark.value),
                ?2, ?3, substr(?5, mark.key + 1, 1) = '1'
         FROM json_each(?4) AS mark",
    )?;
    // `WHERE true` tells the parser the `ON CONFLICT` is the upsert's.
    let mut count = transaction.prepare_cached(
        "INSERT INTO unread_tallies (user, room, thread_id, notifications, highlights)
         SELECT (SELECT id FROM unread_names WHERE name = mark.value),
                (SELECT id FROM unread_names WHERE name = ?1),
                ?3, 1, substr(?5, mark.key + 1, 1) = '1'
         FROM json_each(?4) AS mark WHERE true
         ON CONFLICT (user, room, thread_id) DO UPDATE SET
            notifications = notifications + 1, highlights = highlights + excluded.highlights",
    )?;
    for thread in threads {
        let group: Vec<&UnreadMark> = marks.iter().filter(|mark| mark.thread_id == thread).collect();
        let highlights: String = group.iter().map(|mark| if mark.highlight { '1' } else { '0' }).collect();
        let listed = users(&group);
        let parameters = params![room_id, stream_ordering, thread, listed, highlights];
        match insert.execute(parameters) {
            Err(error) if unnumbered(&error) => {
                transaction
                    .prepare_cached(
                        "INSERT OR IGNORE INTO unread_names (name)
                         SELECT ?1 UNION ALL SELECT value FROM json_each(?2)",
                    )?
                    .execute(params![room_id, listed])?;
                insert.execute(parameters)?;
            }
            added => {
                added?;
            }
        }
        count.execute(parameters)?;
    }
    Ok(())
}

/// Whether a statement adding marks failed for a room or user without a
/// number (a NULL in a column that refuses it).
fn unnumbered(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(failure, _)
        if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL)
}

impl Storage {
    /// The user's counts in a room, per thread with anything unread.
    pub fn unread_counts(&self, user_id: &str, room_id: &str) -> Result<Vec<ThreadCounts>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT thread_id, notifications, highlights FROM unread_tallies
             WHERE user = {USER} AND room = {ROOM} AND notifications > 0"
        ))?;
        let rows = statement.query_map(params![room_id, user_id], |row| {
            Ok(ThreadCounts { thread_id: row.get(0)?, notifications: row.get(1)?, highlights: row.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The user's notification count over every room.
    pub fn unread_total(&self, user_id: &str) -> Result<u64> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT COALESCE(SUM(notifications), 0) FROM unread_tallies WHERE user = (SELECT id FROM unread_names WHERE name = ?1)")?;
        Ok(statement.query_row([user_id], |row| row.get(0))?)
    }

    /// A read receipt at `stream_ordering`: the user's notifying events up
    /// to it are read, in every thread (`thread_id` `None`, an unthreaded
    /// receipt) or in one. Returns whether the counts changed. A receipt
    /// behind an earlier one reads nothing more (the rows it would cover are
    /// gone), so counts never go back up. The cost is the number of events
    /// it reads (not of those left): the counters go down by what it deleted.
    pub fn read_unread_up_to(
        &self,
        user_id: &str,
        room_id: &str,
        thread_id: Option<&str>,
        stream_ordering: i64,
    ) -> Result<bool> {
        // What the receipt reads, per thread, then the same rows deleted: two
        // scans of the range (DELETE ... RETURNING handing each row back
        // measured several times slower).
        let thread_clause = if thread_id.is_some() { "AND thread_id = ?4" } else { "AND ?4 IS NULL" };
        let range =
            format!("WHERE room = {ROOM} AND user = {USER} AND stream_ordering <= ?3 {thread_clause}");
        let read: Vec<(String, i64, i64)> = {
            let mut statement = self.conn.prepare_cached(&format!(
                "SELECT thread_id, COUNT(*), SUM(highlight) FROM unread_marks {range} GROUP BY thread_id"
            ))?;
            let rows = statement.query_map(params![room_id, user_id, stream_ordering, thread_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        self.conn.prepare_cached(&format!("DELETE FROM unread_marks {range}"))?.execute(params![
            room_id,
            user_id,
            stream_ordering,
            thread_id
        ])?;
        if read.is_empty() {
            return Ok(false);
        }
        let mut lower = self.conn.prepare_cached(&format!(
            "UPDATE unread_tallies SET notifications = MAX(notifications - ?4, 0),
                highlights = MAX(highlights - ?5, 0)
             WHERE user = {USER} AND room = {ROOM} AND thread_id = ?3"
        ))?;
        for (thread, notifications, highlights) in &read {
            lower.execute(params![room_id, user_id, thread, notifications, highlights])?;
        }
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM unread_tallies WHERE user = {USER} AND room = {ROOM} AND notifications = 0"
            ))?
            .execute(params![room_id, user_id])?;
        Ok(true)
    }

    /// The event at `stream_ordering` was redacted: it notifies none of
    /// `users` (the room's local members) any more. Each is one lookup by
    /// key, so rows need no second index for the rare redaction.
    pub fn forget_unread_event(&self, room_id: &str, stream_ordering: i64, users: &[String]) -> Result<()> {
        let mut delete = self.conn.prepare_cached(&format!(
            "DELETE FROM unread_marks WHERE room = {ROOM} AND user = {USER} AND stream_ordering = ?3
             RETURNING thread_id, highlight"
        ))?;
        let mut decrement = self.conn.prepare_cached(&format!(
            "UPDATE unread_tallies SET notifications = MAX(notifications - 1, 0),
                highlights = MAX(highlights - ?4, 0)
             WHERE user = {USER} AND room = {ROOM} AND thread_id = ?3"
        ))?;
        for user_id in users {
            let mark: Option<(String, bool)> = delete
                .query_row(params![room_id, user_id, stream_ordering], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            if let Some((thread_id, highlight)) = mark {
                decrement.execute(params![room_id, user_id, thread_id, highlight])?;
            }
        }
        Ok(())
    }

    /// The user left the room: nothing there is unread for them any more.
    pub fn forget_unread_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        self.conn
            .prepare_cached(&format!("DELETE FROM unread_marks WHERE room = {ROOM} AND user = {USER}"))?
            .execute(params![room_id, user_id])?;
        self.conn
            .prepare_cached(&format!("DELETE FROM unread_tallies WHERE user = {USER} AND room = {ROOM}"))?
            .execute(params![room_id, user_id])?;
        Ok(())
    }

    /// The thread an event belongs to, for an event relating to it: the
    /// thread's root if the event is a thread reply (a reaction or an edit of
    /// a reply is in the reply's thread), else none.
    pub fn thread_of(&self, event_id: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT relates_to FROM events WHERE event_id = ?1 AND rel_type = 'm.thread' AND outlier = 0",
        )?;
        Ok(statement.query_row([event_id], |row| row.get(0)).optional()?.flatten())
    }

    /// The local members joined to a room (whose server is `server_name`,
    /// found by the index of members by server) and, if `with_names`, their
    /// display names there, for evaluating push rules (the names are read
    /// from each member event's JSON, which only `contains_display_name`
    /// needs).
    pub fn local_joined_members(
        &self,
        room_id: &str,
        server_name: &str,
        with_names: bool,
    ) -> Result<Vec<(String, Option<String>)>> {
        let (name, join) = if with_names {
            ("json_extract(e.json, '$.content.displayname')", "JOIN events e ON e.event_id = c.event_id")
        } else {
            ("NULL", "")
        };
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT c.state_key, {name} FROM current_state c {join}
             WHERE c.room_id = ?1 AND c.membership = 'join' AND c.server = ?2 AND c.kind = 'm.room.member'
             ORDER BY c.state_key"
        ))?;
        let rows = statement.query_map(params![room_id, server_name], |row| {
            let name: rusqlite::types::Value = row.get(1)?;
            let name = match name {
                rusqlite::types::Value::Text(name) => Some(name),
                _ => None,
            };
            Ok((row.get(0)?, name))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(user_id: &str, thread_id: &str, highlight: bool) -> UnreadMark {
        UnreadMark { user_id: user_id.into(), thread_id: thread_id.into(), highlight }
    }

    fn counts(storage: &Storage) -> Vec<(String, u64, u64)> {
        let mut counts: Vec<_> = storage
            .unread_counts("@a:x", "!r:x")
            .unwrap()
            .into_iter()
            .map(|thread| (thread.thread_id, thread.notifications, thread.highlights))
            .collect();
        counts.sort();
        counts
    }

    #[test]
    fn receipts_read_their_thread_or_all_and_never_go_back() {
        let storage = super::super::in_memory();
        // Events 1..=6 in main, main, $t, $t, main, $t; the even ones highlight.
        let threads = [MAIN_THREAD, MAIN_THREAD, "$t", "$t", MAIN_THREAD, "$t"];
        for (index, thread) in threads.iter().enumerate() {
            let marks = [mark("@a:x", thread, index % 2 == 1), mark("@b:x", MAIN_THREAD, false)];
            mark_unread(&storage.conn, "!r:x", index as i64 + 1, &marks).unwrap();
        }
        // A user marked for the first time in a room already numbered.
        mark_unread(&storage.conn, "!r:x", 7, &[mark("@c:x", MAIN_THREAD, true)]).unwrap();
        assert_eq!(storage.unread_total("@c:x").unwrap(), 1);
        // Marking the same event again is refused, and counts nothing twice.
        assert!(mark_unread(&storage.conn, "!r:x", 6, &[mark("@b:x", MAIN_THREAD, false)]).is_err());
        assert_eq!(counts(&storage), [("$t".into(), 3, 2), (MAIN_THREAD.into(), 3, 1)]);
        assert_eq!(storage.unread_total("@a:x").unwrap(), 6);

        // A threaded receipt at 4 reads $t up to 4 only.
        assert!(storage.read_unread_up_to("@a:x", "!r:x", Some("$t"), 4).unwrap());
        assert_eq!(counts(&storage), [("$t".into(), 1, 1), (MAIN_THREAD.into(), 3, 1)]);
        // An unthreaded receipt at 2 reads every thread up to 2.
        assert!(storage.read_unread_up_to("@a:x", "!r:x", None, 2).unwrap());
        assert_eq!(counts(&storage), [("$t".into(), 1, 1), (MAIN_THREAD.into(), 1, 0)]);
        // Going back reads nothing more.
        assert!(!storage.read_unread_up_to("@a:x", "!r:x", None, 1).unwrap());
        assert_eq!(counts(&storage), [("$t".into(), 1, 1), (MAIN_THREAD.into(), 1, 0)]);

        // A redaction of event 6 takes it out; bob's counts stay.
        storage.forget_unread_event("!r:x", 6, &["@a:x".into(), "@b:x".into()]).unwrap();
        assert_eq!(counts(&storage), [(MAIN_THREAD.into(), 1, 0)]);
        assert_eq!(storage.unread_total("@b:x").unwrap(), 5);
        // Leaving forgets the room.
        storage.forget_unread_room("@a:x", "!r:x").unwrap();
        assert!(counts(&storage).is_empty());
    }
}
