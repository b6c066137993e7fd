//! Full-text search over room events: the FTS5 table `event_search` (filled
//! and pruned by triggers on `events`, see migration 3) and the query text
//! built from a user's search term.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-side-search>.

use rusqlite::params;

use super::Storage;
use super::rooms::{EVENT_COLUMNS, event_from_row};
use crate::error::Result;
use crate::storage::StoredEvent;

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

    /// How many events match in the given rooms (before visibility checks).
    pub fn search_count(&self, fts: &str, rooms_json: &str) -> Result<i64> {
        let mut statement = self.conn.prepare_cached(
            "SELECT COUNT(*) FROM event_search JOIN events e ON e.stream_ordering = event_search.rowid
             WHERE event_search MATCH ?1 AND e.room_id IN (SELECT value FROM json_each(?2))
               AND e.redacted_by IS NULL",
        )?;
        Ok(statement.query_row(params![fts, rooms_json], |row| row.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn triggers_index_new_events_and_drop_redacted_ones() {
        let storage = crate::storage::in_memory();
        insert(&storage, 1, "m.room.message", r#"{"body": "I like cake"}"#);
        insert(&storage, 2, "m.room.topic", r#"{"topic": "cakes and pies"}"#);
        insert(&storage, 3, "m.room.message", r#"{"body": "cake cake cake"}"#);
        insert(&storage, 4, "m.reaction", r#"{"body": "cake"}"#);
        let all = ["body", "name", "topic"];
        let recent = SearchOrder::Recent { before: i64::MAX };
        assert_eq!(found(&storage, "cake", &all, recent), ["$3", "$2", "$1"]);
        assert_eq!(found(&storage, "cake", &["topic"], recent), ["$2"]);
        // Rank: the message saying it three times first.
        assert_eq!(found(&storage, "cake", &["body"], SearchOrder::Rank { offset: 0 }), ["$3", "$1"]);
        assert_eq!(found(&storage, "cake", &["body"], SearchOrder::Rank { offset: 1 }), ["$1"]);
        assert_eq!(found(&storage, "cake", &all, SearchOrder::Recent { before: 3 }), ["$2", "$1"]);
        assert_eq!(storage.search_count(&fts_expression("cake", &all).unwrap(), r#"["!r:x"]"#).unwrap(), 3);
        assert_eq!(storage.search_count(&fts_expression("cake", &all).unwrap(), r#"["!s:x"]"#).unwrap(), 0);
        storage.conn.execute("UPDATE events SET redacted_by = '$9' WHERE stream_ordering = 3", []).unwrap();
        assert_eq!(found(&storage, "cake", &["body"], recent), ["$1"]);
    }
}
