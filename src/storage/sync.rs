//! What /sync reads besides events: filters, account data and receipts.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::Storage;
use super::rooms::{EVENT_COLUMNS, StoredEvent, event_from_row};
use crate::error::Result;

/// How many of a room's newest events [`Storage::bump_stamp`] looks at
/// for a bump event before it settles for the newest event.
const BUMP_SCAN: usize = 200;

/// One receipt.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

impl Storage {
    /// Rooms with timeline events or receipts in `(after, up_to]`: the rooms an
    /// incremental /sync has to look at (a superset: filters and visibility
    /// still apply). One query instead of two per room.
    pub fn rooms_with_news(&self, after: i64, up_to: i64) -> Result<HashSet<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT room_id FROM events
             WHERE stream_ordering > ?1 AND stream_ordering <= ?2 AND outlier = 0 AND soft_failed = 0
             UNION
             SELECT DISTINCT room_id FROM receipts WHERE stream_id > ?1 AND stream_id <= ?2",
        )?;
        let rows = statement.query_map(params![after, up_to], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stream position of a room's newest timeline event of one of
    /// `kinds`, or of its newest event when it has none of them (sliding
    /// sync's `bump_stamp`). Walks the room's events newest first.
    pub fn bump_stamp(&self, room_id: &str, kinds: &[&str]) -> Result<Option<i64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT stream_ordering, kind FROM events
             WHERE room_id = ?1 AND outlier = 0 AND soft_failed = 0
             ORDER BY stream_ordering DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![room_id, BUMP_SCAN as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut newest = None;
        for row in rows {
            let (position, kind) = row?;
            newest = newest.or(Some(position));
            if kinds.contains(&kind.as_str()) {
                return Ok(Some(position));
            }
        }
        Ok(newest)
    }

    /// The current state events at `(kind, "")` for each of `kinds` in every
    /// room the user has a membership in, in one query (sliding sync's
    /// filters read encryption and room types of all of a user's rooms).
    pub fn user_rooms_state(&self, user_id: &str, kinds: [&str; 2]) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN (
                SELECT event_id FROM current_state
                WHERE state_key = '' AND kind IN (?2, ?3) AND room_id IN (
                    SELECT room_id FROM current_state WHERE kind = 'm.room.member' AND state_key = ?1))"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params![user_id, kinds[0], kinds[1]], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a filter; returns its ID (per user, from 0).
    pub fn create_filter(&self, user_id: &str, json: &str) -> Result<i64> {
        let next: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = ?1",
            [user_id],
            |row| row.get(0),
        )?;
        self.conn.execute(
            "INSERT INTO filters (user_id, filter_id, json) VALUES (?1, ?2, ?3)",
            params![user_id, next, json],
        )?;
        Ok(next)
    }

    /// A stored filter's JSON.
    pub fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>> {
        let mut statement =
            self.conn.prepare_cached("SELECT json FROM filters WHERE user_id = ?1 AND filter_id = ?2")?;
        Ok(statement.query_row(params![user_id, filter_id], |row| row.get(0)).optional()?)
    }

    /// Sets account data (`room_id` empty for global).
    pub fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
        content: &str,
        stream_id: i64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO account_data (user_id, room_id, kind, content, stream_id) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (user_id, room_id, kind) DO UPDATE SET content = excluded.content,
                stream_id = excluded.stream_id",
            params![user_id, room_id, kind, content, stream_id],
        )?;
        Ok(())
    }

    /// One account data entry.
    pub fn account_data(&self, user_id: &str, room_id: &str, kind: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND kind = ?3",
        )?;
        Ok(statement.query_row(params![user_id, room_id, kind], |row| row.get(0)).optional()?)
    }

    /// Account data changed in `(after, up_to]`: `(room_id, kind, content)`.
    pub fn account_data_since(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT room_id, kind, content FROM account_data
             WHERE user_id = ?1 AND stream_id > ?2 AND stream_id <= ?3 ORDER BY stream_id",
        )?;
        let rows = statement
            .query_map(params![user_id, after, up_to], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a receipt (replacing the user's previous one of that type and thread).
    pub fn set_receipt(&self, room_id: &str, receipt: &Receipt, stream_id: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET
                event_id = excluded.event_id, ts = excluded.ts, stream_id = excluded.stream_id",
            params![
                room_id,
                receipt.user_id,
                receipt.receipt_type,
                receipt.thread_id,
                receipt.event_id,
                receipt.ts,
                stream_id
            ],
        )?;
        Ok(())
    }

    /// Receipts of a room changed in `(after, up_to]`.
    pub fn receipts_since(&self, room_id: &str, after: i64, up_to: i64) -> Result<Vec<Receipt>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT user_id, receipt_type, thread_id, event_id, ts FROM receipts
             WHERE room_id = ?1 AND stream_id > ?2 AND stream_id <= ?3",
        )?;
        let rows = statement.query_map(params![room_id, after, up_to], |row| {
            Ok(Receipt {
                user_id: row.get(0)?,
                receipt_type: row.get(1)?,
                thread_id: row.get(2)?,
                event_id: row.get(3)?,
                ts: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stream position of the event a user's receipt of this type points at
    /// (the highest over threads), for unread counts.
    pub fn receipt_position(&self, room_id: &str, user_id: &str) -> Result<Option<i64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT MAX(e.stream_ordering) FROM receipts r JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = ?1 AND r.user_id = ?2 AND r.receipt_type IN ('m.read', 'm.read.private')",
        )?;
        Ok(statement.query_row(params![room_id, user_id], |row| row.get(0))?)
    }
}
