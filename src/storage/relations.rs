//! Reading events by their relations (`m.relates_to`), thread roots, and
//! events by timestamp: the queries behind /relations, /threads,
//! /timestamp_to_event and bundled aggregations.
//!
//! Redacted children are left out everywhere: a redaction breaks the relation
//! ([spec](https://spec.matrix.org/latest/client-server-api/#aggregations-of-child-events)).

use rusqlite::params;

use super::Storage;
use super::batch::string_list;
use super::rooms::{EVENT_COLUMNS, event_from_row};
use crate::error::Result;
use crate::storage::StoredEvent;

/// A child event's facts that aggregations need, without its JSON.
#[derive(Clone, Debug)]
pub struct RelationChild {
    pub event_id: String,
    pub rel_type: String,
    pub sender: String,
    pub kind: String,
    pub origin_server_ts: i64,
}

/// Which related events to read, and the stream window `(after, up_to]`.
pub struct RelationQuery<'a> {
    pub room_id: &'a str,
    pub parent: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// 1 for direct children only; more to follow children of children.
    pub max_depth: u32,
    pub after: i64,
    pub up_to: i64,
    /// Newest first when true, oldest first otherwise.
    pub backwards: bool,
    pub limit: usize,
}

/// One thread in a room: its root and its newest reply's stream position.
#[derive(Clone, Debug)]
pub struct ThreadSummary {
    pub root: String,
    pub latest: i64,
}

impl Storage {
    /// The children that bundled aggregations look at (`m.replace`, `m.thread`,
    /// `m.reference`) of each of `parents`, oldest first (stream order), as
    /// `(parent, child)`: one query on the relation index for a whole page.
    pub fn relation_children(&self, parents: &[&str]) -> Result<Vec<(String, RelationChild)>> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT relates_to, event_id, rel_type, sender, kind, origin_server_ts FROM events
             WHERE relates_to IN (SELECT value FROM json_each(?1))
               AND rel_type IN ('m.replace', 'm.thread', 'm.reference')
               AND redacted_by IS NULL AND outlier = 0 AND soft_failed = 0
             ORDER BY stream_ordering ASC",
        )?;
        let rows = statement.query_map([string_list(parents)], |row| {
            let child = RelationChild {
                event_id: row.get(1)?,
                rel_type: row.get(2)?,
                sender: row.get(3)?,
                kind: row.get(4)?,
                origin_server_ts: row.get(5)?,
            };
            Ok((row.get(0)?, child))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events relating to a parent (directly, or through up to `max_depth`
    /// steps), in the window, filtered by relation and event type at every step.
    pub fn related_events(&self, query: &RelationQuery<'_>) -> Result<Vec<StoredEvent>> {
        let order = if query.backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "WITH RECURSIVE related(event_id, depth) AS (
                SELECT event_id, 1 FROM events
                WHERE relates_to = ?1 AND room_id = ?2 AND redacted_by IS NULL AND outlier = 0
                  AND soft_failed = 0 AND (?3 IS NULL OR rel_type = ?3) AND (?4 IS NULL OR kind = ?4)
                UNION
                SELECT e.event_id, related.depth + 1 FROM events e
                JOIN related ON e.relates_to = related.event_id
                WHERE related.depth < ?5 AND e.room_id = ?2 AND e.redacted_by IS NULL
                  AND e.outlier = 0 AND e.soft_failed = 0
                  AND (?3 IS NULL OR e.rel_type = ?3) AND (?4 IS NULL OR e.kind = ?4)
             )
             SELECT {EVENT_COLUMNS} FROM events
             WHERE event_id IN (SELECT event_id FROM related)
               AND stream_ordering > ?6 AND stream_ordering <= ?7
             ORDER BY stream_ordering {order} LIMIT ?8"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![
                query.parent,
                query.room_id,
                query.rel_type,
                query.event_type,
                query.max_depth,
                query.after,
                query.up_to,
                query.limit as i64
            ],
            event_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Threads of a room by latest reply, newest first: replies at or before
    /// `replies_up_to` count, and only threads whose latest such reply is at or
    /// before `latest_up_to` are listed. With `participant`, only threads that
    /// user started or replied in.
    pub fn thread_roots(
        &self,
        room_id: &str,
        participant: Option<&str>,
        replies_up_to: i64,
        latest_up_to: i64,
        limit: usize,
    ) -> Result<Vec<ThreadSummary>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT t.relates_to, MAX(t.stream_ordering) AS latest FROM events t
             WHERE t.room_id = ?1 AND t.rel_type = 'm.thread' AND t.stream_ordering <= ?2
               AND t.redacted_by IS NULL AND t.outlier = 0 AND t.soft_failed = 0
             GROUP BY t.relates_to
             HAVING latest <= ?3 AND (?4 IS NULL OR MAX(t.sender = ?4) = 1
                OR EXISTS (SELECT 1 FROM events r WHERE r.event_id = t.relates_to AND r.sender = ?4))
             ORDER BY latest DESC LIMIT ?5",
        )?;
        let rows = statement
            .query_map(params![room_id, replies_up_to, latest_up_to, participant, limit as i64], |row| {
                Ok(ThreadSummary { root: row.get(0)?, latest: row.get(1)? })
            })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Timeline events of a room nearest to `ts`: at or after it, oldest first
    /// (`forwards`), or at or before it, newest first.
    pub fn events_near_timestamp(
        &self,
        room_id: &str,
        ts: i64,
        forwards: bool,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let (comparison, order) = if forwards { (">=", "ASC") } else { ("<=", "DESC") };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = ?1 AND origin_server_ts {comparison} ?2 AND outlier = 0 AND soft_failed = 0
             ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT ?3"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params![room_id, ts, limit as i64], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
