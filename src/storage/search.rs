//! Full-text search over room events: the FTS5 table `event_search`, filled
//! in batches from `events` (see [`SEARCH_IN_BATCHES`]) and pruned by a
//! trigger on redaction, and the query text built from a user's search term.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-side-search>.

use rusqlite::params;

use super::Storage;
use super::rooms::{EVENT_COLUMNS, event_from_row};
use crate::error::Result;
use crate::storage::StoredEvent;

/// Migration 4: the FTS5 table, kept in step with `events` by triggers
/// (indexed on insert, dropped on redaction), filled from the events already
/// stored; and the indexes behind /threads and /timestamp_to_event.
pub(super) const SEARCH_SCHEMA: &str = r#"
    CREATE VIRTUAL TABLE event_search USING fts5(body, name, topic, tokenize = 'porter unicode61');
    INSERT INTO event_search (rowid, body, name, topic)
        SELECT stream_ordering,
            CASE WHEN kind = 'm.room.message' THEN json_extract(json, '$.content.body') END,
            CASE WHEN kind = 'm.room.name' THEN json_extract(json, '$.content.name') END,
            CASE WHEN kind = 'm.room.topic' THEN json_extract(json, '$.content.topic') END
        FROM events
        WHERE kind IN ('m.room.message', 'm.room.name', 'm.room.topic')
          AND outlier = 0 AND soft_failed = 0 AND redacted_by IS NULL;
    CREATE TRIGGER events_search_insert AFTER INSERT ON events
        WHEN NEW.kind IN ('m.room.message', 'm.room.name', 'm.room.topic')
          AND NEW.outlier = 0 AND NEW.soft_failed = 0 AND NEW.redacted_by IS NULL
    BEGIN
        INSERT INTO event_search (rowid, body, name, topic) VALUES (
            NEW.stream_ordering,
            CASE WHEN NEW.kind = 'm.room.message' THEN json_extract(NEW.json, '$.content.body') END,
            CASE WHEN NEW.kind = 'm.room.name' THEN json_extract(NEW.json, '$.content.name') END,
            CASE WHEN NEW.kind = 'm.room.topic' THEN json_extract(NEW.json, '$.content.topic') END);
    END;
    CREATE TRIGGER events_search_redact AFTER UPDATE OF redacted_by ON events
        WHEN NEW.redacted_by IS NOT NULL AND OLD.redacted_by IS NULL
    BEGIN
        DELETE FROM event_search WHERE rowid = NEW.stream_ordering;
    END;
    CREATE INDEX events_threads ON events(room_id, stream_ordering) WHERE rel_type = 'm.thread';
    CREATE INDEX events_by_room_ts ON events(room_id, origin_server_ts);
    "#;

/// Migration 9: the index no longer keeps a copy of the text (contentless,
/// rows deletable) and new events reach it in batches rather than one FTS
/// segment per stored event: `search_progress.indexed_upto` is the stream
/// position up to which every event is indexed ([`Storage::index_new_events`]
/// moves it on). Events stored below zero (history fetched from other servers,
/// which arrives in batches anyway) are still indexed by a trigger.
pub(super) const SEARCH_IN_BATCHES: &str = r#"
    DROP TRIGGER events_search_insert;
    DROP TABLE event_search;
    CREATE VIRTUAL TABLE event_search USING fts5(
        body, name, topic, content = '', contentless_delete = 1, tokenize = 'porter unicode61');
    INSERT INTO event_search (rowid, body, name, topic)
        SELECT stream_ordering,
            CASE WHEN kind = 'm.room.message' THEN json_extract(json, '$.content.body') END,
            CASE WHEN kind = 'm.room.name' THEN json_extract(json, '$.content.name') END,
            CASE WHEN kind = 'm.room.topic' THEN json_extract(json, '$.content.topic') END
        FROM events
        WHERE kind IN ('m.room.message', 'm.room.name', 'm.room.topic')
          AND outlier = 0 AND soft_failed = 0 AND redacted_by IS NULL;
    CREATE TABLE search_progress (indexed_upto INTEGER NOT NULL);
    INSERT INTO search_progress SELECT COALESCE(MAX(stream_ordering), 0) FROM events;
    CREATE TRIGGER events_search_insert_backfilled AFTER INSERT ON events
        WHEN NEW.stream_ordering < 0
          AND NEW.kind IN ('m.room.message', 'm.room.name', 'm.room.topic')
          AND NEW.outlier = 0 AND NEW.soft_failed = 0 AND NEW.redacted_by IS NULL
    BEGIN
        INSERT INTO event_search (rowid, body, name, topic) VALUES (
            NEW.stream_ordering,
            CASE WHEN NEW.kind = 'm.room.message' THEN json_extract(NEW.json, '$.content.body') END,
            CASE WHEN NEW.kind = 'm.room.name' THEN json_extract(NEW.json, '$.content.name') END,
            CASE WHEN NEW.kind = 'm.room.topic' THEN json_extract(NEW.json, '$.content.topic') END);
    END;
"#;

/// Migration 26: history fetched from other servers (stored below stream
/// position zero) is indexed by the code that stores it
/// ([`Storage::store_backfilled`]) instead of by a trigger on `events`.
/// With a trigger, every insert into `events` was a statement that may write
/// more than one table and abort, which SQLite wraps in a statement journal:
/// a copy of every page the insert changed, made for each event stored.
pub(super) const BACKFILL_INDEXED_WHEN_STORED: &str = r#"
    DROP TRIGGER events_search_insert_backfilled;
"#;

/// At most this many stream positions are indexed per transaction, so one
/// catch-up step stays short.
const INDEX_BATCH_POSITIONS: i64 = 256;

/// A search term longer than this many words is cut (each word is one FTS
/// term; a few dozen already pins a query down).
const MAX_SEARCH_WORDS: usize = 32;

/// The searchable keys and their FTS5 columns.
pub const SEARCH_KEYS: [(&str, &str); 3] =
    [("content.body", "body"), ("content.name", "name"), ("content.topic", "topic")];

/// How results are ordered, with the position to continue after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SearchOrder {
    /// Newest first, stream positions strictly below `before`.
    Recent { before: i64 },
    /// Best match first, skipping the first `offset` matches.
    Rank { offset: i64 },
}

/// One search, already reduced to an FTS5 expression.
pub struct SearchQuery<'a> {
    pub fts: &'a str,
    /// The rooms to search, as a JSON array of room IDs.
    pub rooms_json: &'a str,
    pub order: SearchOrder,
    pub limit: usize,
}

/// Indexes the event stored at `stream_ordering` now if it is searchable:
/// for history fetched from other servers, stored below the positions
/// [`Storage::index_new_events`] goes through.
pub(super) fn index_event_at(conn: &rusqlite::Connection, stream_ordering: i64) -> Result<()> {
    index_events_between(conn, stream_ordering.saturating_sub(1), stream_ordering)
}

/// Adds the searchable events at stream positions in `(after, upto]` to the
/// index (messages' bodies, room names and topics; not outliers, soft-failed
/// or redacted events).
fn index_events_between(conn: &rusqlite::Connection, after: i64, upto: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO event_search (rowid, body, name, topic)
         SELECT stream_ordering,
            CASE WHEN kind = 'm.room.message' THEN json_extract(json, '$.content.body') END,
            CASE WHEN kind = 'm.room.name' THEN json_extract(json, '$.content.name') END,
            CASE WHEN kind = 'm.room.topic' THEN json_extract(json, '$.content.topic') END
         FROM events
         WHERE stream_ordering > ?1 AND stream_ordering <= ?2
           AND kind IN ('m.room.message', 'm.room.name', 'm.room.topic')
           AND outlier = 0 AND soft_failed = 0 AND redacted_by IS NULL",
    )?
    .execute([after, upto])?;
    Ok(())
}

/// The words of a search term, lowercased (for the query and for `highlights`).
pub fn search_words(term: &str) -> Vec<String> {
    term.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(MAX_SEARCH_WORDS)
        .map(str::to_lowercase)
        .collect()
}

/// The FTS5 expression for a term over some columns: every word must match,
/// as a prefix (as Synapse does). `None` when the term has no words.
pub fn fts_expression(term: &str, columns: &[&str]) -> Option<String> {
    let words = search_words(term);
    if words.is_empty() || columns.is_empty() {
        return None;
    }
    // Words hold only alphanumerics, so quoting cannot be escaped out of.
    let terms: Vec<String> = words.iter().map(|word| format!("\"{word}\"*")).collect();
    Some(format!("{{{}}} : ({})", columns.join(" "), terms.join(" AND ")))
}

impl Storage {
    /// Indexes the searchable events stored after the last indexed position
    /// (at most [`INDEX_BATCH_POSITIONS`] stream positions); returns whether
    /// more are left.
    ///
    /// Events are stored in stream order (a position is handed out just before
    /// its event is stored, in the same synchronous step), so everything up to
    /// the highest stored position is there to index.
    pub fn index_new_events(&mut self) -> Result<bool> {
        let transaction = self.conn.savepoint()?;
        let (from, upto, last): (i64, Option<i64>, Option<i64>) = transaction
            .prepare_cached(
                "SELECT p.indexed_upto,
                    (SELECT MAX(stream_ordering) FROM (SELECT stream_ordering FROM events
                        WHERE stream_ordering > p.indexed_upto ORDER BY stream_ordering LIMIT ?1)),
                    (SELECT MAX(stream_ordering) FROM events)
                 FROM search_progress p",
            )?
            .query_row([INDEX_BATCH_POSITIONS], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        let Some(upto) = upto else { return Ok(false) };
        index_events_between(&transaction, from, upto)?;
        transaction.prepare_cached("UPDATE search_progress SET indexed_upto = ?1")?.execute([upto])?;
        transaction.commit()?;
        Ok(last.is_some_and(|last| last > upto))
    }

    /// Indexes every searchable event not yet in the index.
    pub fn index_all_new_events(&mut self) -> Result<()> {
        while self.index_new_events()? {}
        Ok(())
    }

    /// Matching events in the given rooms, with their rank (higher is better).
    pub fn search_events(&self, query: &SearchQuery<'_>) -> Result<Vec<(StoredEvent, f64)>> {
        let columns = EVENT_COLUMNS
            .split(',')
            .map(|column| format!("e.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let (condition, order, position) = match query.order {
            SearchOrder::Recent { before } => {
                ("e.stream_ordering < ?3", "e.stream_ordering DESC LIMIT ?4", before)
            }
            SearchOrder::Rank { offset } => {
                ("?3 >= 0", "bm25(event_search) ASC, e.stream_ordering DESC LIMIT ?4 OFFSET ?3", offset)
            }
        };
        let sql = format!(
            "SELECT {columns}, -bm25(event_search) FROM event_search
             JOIN events e ON e.stream_ordering = event_search.rowid
             WHERE event_search MATCH ?1 AND e.room_id IN (SELECT value FROM json_each(?2))
               AND e.redacted_by IS NULL AND {condition}
             ORDER BY {order}"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement
            .query_map(params![query.fts, query.rooms_json, position, query.limit as i64], |row| {
                Ok((event_from_row(row)?, row.get::<_, f64>(15)?))
            })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many events match in the given rooms, per room and state group
    /// (history visibility is a matter of the state group, so the caller
    /// counts what the user may see from these).
    pub fn search_counts_by_group(
        &self,
        fts: &str,
        rooms_json: &str,
    ) -> Result<Vec<(String, Option<i64>, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT e.room_id, e.state_group, COUNT(*) FROM event_search
             JOIN events e ON e.stream_ordering = event_search.rowid
             WHERE event_search MATCH ?1 AND e.room_id IN (SELECT value FROM json_each(?2))
               AND e.redacted_by IS NULL
             GROUP BY e.room_id, e.state_group",
        )?;
        let rows = statement
            .query_map(params![fts, rooms_json], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_count(storage: &Storage, fts: &str, rooms_json: &str) -> Result<i64> {
        Ok(storage.search_counts_by_group(fts, rooms_json)?.iter().map(|(_, _, count)| count).sum())
    }

    #[test]
    fn search_terms_become_prefix_queries_that_cannot_inject_syntax() {
        assert_eq!(
            fts_expression("Martians and MEN", &["body"]).as_deref(),
            Some("{body} : (\"martians\"* AND \"and\"* AND \"men\"*)")
        );
        assert_eq!(
            fts_expression("\"x\" OR body:*", &["body", "name"]).as_deref(),
            Some("{body name} : (\"x\"* AND \"or\"* AND \"body\"*)")
        );
        assert_eq!(fts_expression("  -- ", &["body"]), None);
        assert_eq!(search_words("héllo wörld"), vec!["héllo", "wörld"]);
    }

    fn insert(storage: &Storage, stream: i64, kind: &str, content: &str) {
        let json = format!(r#"{{"type": "{kind}", "content": {content}}}"#);
        storage
            .conn
            .execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, kind, sender, depth,
                    origin_server_ts, json) VALUES (?1, ?2, '!r:x', ?3, '@a:x', 1, 0, ?4)",
                params![stream, format!("${stream}"), kind, json],
            )
            .unwrap();
    }

    fn found(storage: &Storage, term: &str, columns: &[&str], order: SearchOrder) -> Vec<String> {
        let fts = fts_expression(term, columns).unwrap();
        let query = SearchQuery { fts: &fts, rooms_json: r#"["!r:x"]"#, order, limit: 10 };
        storage.search_events(&query).unwrap().into_iter().map(|(event, _)| event.event_id).collect()
    }

    #[test]
    fn new_events_are_indexed_in_batches_and_redacted_ones_dropped() {
        let mut storage = crate::storage::in_memory();
        insert(&storage, 1, "m.room.message", r#"{"body": "I like cake"}"#);
        insert(&storage, 2, "m.room.topic", r#"{"topic": "cakes and pies"}"#);
        insert(&storage, 3, "m.room.message", r#"{"body": "cake cake cake"}"#);
        insert(&storage, 4, "m.reaction", r#"{"body": "cake"}"#);
        let all_columns = fts_expression("cake", &["body", "name", "topic"]).unwrap();
        assert_eq!(search_count(&storage, &all_columns, r#"["!r:x"]"#).unwrap(), 0, "not indexed yet");
        storage.index_all_new_events().unwrap();
        let all = ["body", "name", "topic"];
        let recent = SearchOrder::Recent { before: i64::MAX };
        assert_eq!(found(&storage, "cake", &all, recent), ["$3", "$2", "$1"]);
        assert_eq!(found(&storage, "cake", &["topic"], recent), ["$2"]);
        // Rank: the message saying it three times first.
        assert_eq!(found(&storage, "cake", &["body"], SearchOrder::Rank { offset: 0 }), ["$3", "$1"]);
        assert_eq!(found(&storage, "cake", &["body"], SearchOrder::Rank { offset: 1 }), ["$1"]);
        assert_eq!(found(&storage, "cake", &all, SearchOrder::Recent { before: 3 }), ["$2", "$1"]);
        assert_eq!(search_count(&storage, &fts_expression("cake", &all).unwrap(), r#"["!r:x"]"#).unwrap(), 3);
        assert_eq!(search_count(&storage, &fts_expression("cake", &all).unwrap(), r#"["!s:x"]"#).unwrap(), 0);
        storage.conn.execute("UPDATE events SET redacted_by = '$9' WHERE stream_ordering = 3", []).unwrap();
        assert_eq!(found(&storage, "cake", &["body"], recent), ["$1"]);
        // Redacting an event not indexed yet is harmless, and it is never indexed.
        insert(&storage, 5, "m.room.message", r#"{"body": "more cake"}"#);
        storage.conn.execute("UPDATE events SET redacted_by = '$9' WHERE stream_ordering = 5", []).unwrap();
        storage.index_all_new_events().unwrap();
        assert_eq!(found(&storage, "cake", &["body"], recent), ["$1"]);
    }

    #[test]
    fn a_long_backlog_is_indexed_in_steps_and_backfilled_events_at_once() {
        let mut storage = crate::storage::in_memory();
        let count = INDEX_BATCH_POSITIONS * 2 + 5;
        for stream in 1..=count {
            insert(&storage, stream, "m.room.message", r#"{"body": "pie"}"#);
        }
        assert!(storage.index_new_events().unwrap(), "more left after the first step");
        assert!(storage.index_new_events().unwrap());
        assert!(!storage.index_new_events().unwrap(), "the last step finishes");
        assert!(!storage.index_new_events().unwrap(), "nothing left");
        let pie = fts_expression("pie", &["body"]).unwrap();
        assert_eq!(search_count(&storage, &pie, r#"["!r:x"]"#).unwrap(), count);
        // History fetched from another server is indexed as it is stored.
        let json = serde_json::json!({"type": "m.room.message", "content": {"body": "old pie"}});
        let backfilled = crate::storage::NewEvent {
            stream_ordering: -7,
            event_id: "$-7",
            room_id: "!r:x",
            kind: "m.room.message",
            state_key: None,
            sender: "@a:x",
            depth: 1,
            origin_server_ts: 0,
            json: json.as_object().unwrap(),
            replaces_state: None,
            device_id: None,
            txn_id: None,
            rel_type: None,
            relates_to: None,
            outlier: false,
            soft_failed: false,
        };
        assert!(storage.store_backfilled(&backfilled, None).unwrap());
        assert_eq!(search_count(&storage, &pie, r#"["!r:x"]"#).unwrap(), count + 1);
        assert!(!storage.store_backfilled(&backfilled, None).unwrap(), "stored once");
        assert_eq!(search_count(&storage, &pie, r#"["!r:x"]"#).unwrap(), count + 1);
    }
}
