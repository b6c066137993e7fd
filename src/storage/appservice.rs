//! Where each application service's stream of events stands: the position up
//! to which every event was delivered (or was of no interest to it), and the
//! transaction in flight, so a restart resends the same transaction (same ID,
//! same range) and loses nothing. The events themselves are read from the
//! `events` table in stream order; nothing is copied into a queue.
//!
//! Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>.

use rusqlite::{OptionalExtension, params};

use super::Storage;
use super::rooms::{EVENT_COLUMNS, event_from_row};
use crate::error::Result;
use crate::storage::{Receipt, StoredEvent};

/// Migration 20: per application service (by its `id`), the stream position
/// delivered up to, the next transaction ID, and the end of the range the
/// transaction in flight covers (`NULL` when none is); receipts by stream
/// position across rooms, for the services that take ephemeral events.
pub(super) const APP_SERVICE_STREAMS: &str = r#"
    CREATE TABLE appservice_streams (
        appservice_id  TEXT PRIMARY KEY,
        position       INTEGER NOT NULL,
        next_txn_id    INTEGER NOT NULL,
        pending_end    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX receipts_by_stream_id ON receipts(stream_id);
"#;

/// One service's place in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppServiceStream {
    /// Every event up to here was delivered or skipped.
    pub position: i64,
    /// The ID of the next transaction (or of the one in flight).
    pub next_txn_id: i64,
    /// The transaction in flight covers `(position, pending_end]`.
    pub pending_end: Option<i64>,
}

impl Storage {
    /// The service's place, starting at `start` the first time (a new
    /// service gets what happens from then on, not the past).
    pub fn appservice_stream(&self, appservice_id: &str, start: i64) -> Result<AppServiceStream> {
        self.conn.execute(
            "INSERT OR IGNORE INTO appservice_streams (appservice_id, position, next_txn_id) VALUES (?1, ?2, 1)",
            params![appservice_id, start],
        )?;
        let mut statement = self.conn.prepare_cached(
            "SELECT position, next_txn_id, pending_end FROM appservice_streams WHERE appservice_id = ?1",
        )?;
        let stream = statement
            .query_row([appservice_id], |row| {
                Ok(AppServiceStream {
                    position: row.get(0)?,
                    next_txn_id: row.get(1)?,
                    pending_end: row.get(2)?,
                })
            })
            .optional()?;
        Ok(stream.unwrap_or(AppServiceStream { position: start, next_txn_id: 1, pending_end: None }))
    }

    /// Records the transaction about to be sent, covering events up to `end`.
    pub fn appservice_pending(&self, appservice_id: &str, end: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE appservice_streams SET pending_end = ?2 WHERE appservice_id = ?1",
            params![appservice_id, end],
        )?;
        Ok(())
    }

    /// The transaction in flight was delivered: on to the next.
    pub fn appservice_delivered(&self, appservice_id: &str, end: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE appservice_streams SET position = ?2, next_txn_id = next_txn_id + 1, pending_end = NULL
             WHERE appservice_id = ?1",
            params![appservice_id, end],
        )?;
        Ok(())
    }

    /// Nothing up to `position` interests the service.
    pub fn appservice_skip_to(&self, appservice_id: &str, position: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE appservice_streams SET position = ?2 WHERE appservice_id = ?1 AND pending_end IS NULL",
            params![appservice_id, position],
        )?;
        Ok(())
    }

    /// Up to `limit` events of room timelines after `position` (and at most
    /// `end`), in stream order: neither outliers nor soft-failed events,
    /// which no timeline shows.
    pub fn timeline_events_after(&self, position: i64, end: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE stream_ordering > ?1 AND stream_ordering <= ?2 AND outlier = 0 AND soft_failed = 0
             ORDER BY stream_ordering LIMIT ?3"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![position, end, limit], event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The receipts set in `(after, up_to]`, across rooms, by room, at
    /// most `limit` (the newest are the ones kept when there are more).
    pub fn receipts_between(&self, after: i64, up_to: i64, limit: usize) -> Result<Vec<(String, Receipt)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts
             WHERE stream_id > ?1 AND stream_id <= ?2 ORDER BY stream_id DESC LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![after, up_to, limit], |row| {
            let receipt = Receipt {
                user_id: row.get(1)?,
                receipt_type: row.get(2)?,
                thread_id: row.get(3)?,
                event_id: row.get(4)?,
                ts: row.get(5)?,
            };
            Ok((row.get::<_, String>(0)?, receipt))
        })?;
        let mut receipts: Vec<(String, Receipt)> = rows.collect::<rusqlite::Result<_>>()?;
        receipts.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(receipts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_in_flight_is_kept_until_delivered() {
        let storage = super::super::in_memory();
        let fresh = storage.appservice_stream("bridge", 40).unwrap();
        assert_eq!(fresh, AppServiceStream { position: 40, next_txn_id: 1, pending_end: None });
        // The start applies once: the place is kept from then on.
        assert_eq!(storage.appservice_stream("bridge", 99).unwrap(), fresh);
        storage.appservice_pending("bridge", 45).unwrap();
        let pending = storage.appservice_stream("bridge", 99).unwrap();
        assert_eq!(pending, AppServiceStream { position: 40, next_txn_id: 1, pending_end: Some(45) });
        // Nothing is skipped while a transaction is in flight.
        storage.appservice_skip_to("bridge", 50).unwrap();
        assert_eq!(storage.appservice_stream("bridge", 99).unwrap(), pending);
        storage.appservice_delivered("bridge", 45).unwrap();
        let after = storage.appservice_stream("bridge", 99).unwrap();
        assert_eq!(after, AppServiceStream { position: 45, next_txn_id: 2, pending_end: None });
        storage.appservice_skip_to("bridge", 50).unwrap();
        assert_eq!(storage.appservice_stream("bridge", 99).unwrap().position, 50);
        // Services are apart.
        assert_eq!(storage.appservice_stream("other", 7).unwrap().position, 7);
    }
}
