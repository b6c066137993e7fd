//! Where each application service's stream of events stands: the position up
//! to which every event was delivered (or was of no interest to it), and the
//! transaction in flight, so a restart resends the same transaction (same ID,
//! same range) and loses nothing. The events themselves are read from the
//! `events` table in stream order; nothing is copied into a queue.
//!
//! Also the registrations added with `hearth appservice add` (their YAML
//! text, loaded beside the configured files).
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

/// Migration 23: registrations added with `hearth appservice add` (the YAML
/// text as given, validated when added and at every load), and what became
/// of each service's last transaction: when one was last delivered, when
/// one last failed and why (for `hearth appservice list`).
pub(super) const APP_SERVICE_REGISTRATIONS: &str = r#"
    CREATE TABLE appservice_registrations (
        appservice_id  TEXT PRIMARY KEY,
        registration   TEXT NOT NULL,
        added_ts       INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE appservice_streams ADD COLUMN delivered_ts INTEGER;
    ALTER TABLE appservice_streams ADD COLUMN failed_ts INTEGER;
    ALTER TABLE appservice_streams ADD COLUMN last_error TEXT;
"#;

/// A registration added with `hearth appservice add`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedRegistration {
    pub appservice_id: String,
    /// The YAML text, as the file held it.
    pub registration: String,
    pub added_ts: i64,
}

/// What an operator sees of a service's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppServiceStreamStatus {
    pub stream: AppServiceStream,
    /// When a transaction was last delivered.
    pub delivered_ts: Option<i64>,
    /// When a transaction last failed, and why.
    pub failed: Option<(i64, String)>,
}

/// The longest failure reason kept: errors quote URLs and answers.
const MAX_ERROR_TEXT: usize = 1024;

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

    /// The transaction in flight was delivered (at `delivered_ts`; `None`
    /// when it was dropped, nothing in its range being left to send): on
    /// to the next.
    pub fn appservice_delivered(
        &self,
        appservice_id: &str,
        end: i64,
        delivered_ts: Option<i64>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE appservice_streams SET position = ?2, next_txn_id = next_txn_id + 1, pending_end = NULL,
                delivered_ts = coalesce(?3, delivered_ts)
             WHERE appservice_id = ?1",
            params![appservice_id, end, delivered_ts],
        )?;
        Ok(())
    }

    /// The transaction in flight failed at `ts` for `reason` (kept for the
    /// operator; the transaction stays in flight).
    pub fn appservice_failed(&self, appservice_id: &str, ts: i64, reason: &str) -> Result<()> {
        let mut cut = reason.len().min(MAX_ERROR_TEXT);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        self.conn.execute(
            "UPDATE appservice_streams SET failed_ts = ?2, last_error = ?3 WHERE appservice_id = ?1",
            params![appservice_id, ts, &reason[..cut]],
        )?;
        Ok(())
    }

    /// Where the service's stream stands, if it ever started (read only).
    pub fn appservice_stream_status(&self, appservice_id: &str) -> Result<Option<AppServiceStreamStatus>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT position, next_txn_id, pending_end, delivered_ts, failed_ts, last_error
             FROM appservice_streams WHERE appservice_id = ?1",
        )?;
        let status = statement
            .query_row([appservice_id], |row| {
                let failed_ts: Option<i64> = row.get(4)?;
                let last_error: Option<String> = row.get(5)?;
                Ok(AppServiceStreamStatus {
                    stream: AppServiceStream {
                        position: row.get(0)?,
                        next_txn_id: row.get(1)?,
                        pending_end: row.get(2)?,
                    },
                    delivered_ts: row.get(3)?,
                    failed: failed_ts.map(|ts| (ts, last_error.unwrap_or_default())),
                })
            })
            .optional()?;
        Ok(status)
    }

    /// The registrations added with `hearth appservice add`, oldest first.
    pub fn added_app_services(&self) -> Result<Vec<AddedRegistration>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT appservice_id, registration, added_ts FROM appservice_registrations
             ORDER BY added_ts, appservice_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(AddedRegistration {
                appservice_id: row.get(0)?,
                registration: row.get(1)?,
                added_ts: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a registration (validated by the caller); `false` if one with
    /// this ID was added before.
    pub fn add_app_service(&self, appservice_id: &str, registration: &str, added_ts: i64) -> Result<bool> {
        let added = self.conn.execute(
            "INSERT OR IGNORE INTO appservice_registrations (appservice_id, registration, added_ts)
             VALUES (?1, ?2, ?3)",
            params![appservice_id, registration, added_ts],
        )?;
        Ok(added == 1)
    }

    /// Forgets an added registration; `false` if there was none with this ID.
    /// Its place in the stream stays: added again, it goes on from there.
    pub fn remove_app_service(&self, appservice_id: &str) -> Result<bool> {
        let removed = self
            .conn
            .execute("DELETE FROM appservice_registrations WHERE appservice_id = ?1", [appservice_id])?;
        Ok(removed == 1)
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

    /// How many timeline events lie after `position`, counted up to `cap`
    /// (an operator's figure of how far behind a service is).
    pub fn timeline_events_count_after(&self, position: i64, cap: i64) -> Result<i64> {
        let mut statement = self.conn.prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM events
             WHERE stream_ordering > ?1 AND outlier = 0 AND soft_failed = 0 LIMIT ?2)",
        )?;
        Ok(statement.query_row(params![position, cap], |row| row.get(0))?)
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
        storage.appservice_failed("bridge", 1_000, &"é".repeat(2_000)).unwrap();
        let status = storage.appservice_stream_status("bridge").unwrap().unwrap();
        assert_eq!((status.stream, status.delivered_ts), (pending, None));
        let (failed_ts, reason) = status.failed.unwrap();
        assert_eq!((failed_ts, reason.len()), (1_000, MAX_ERROR_TEXT));
        storage.appservice_delivered("bridge", 45, Some(2_000)).unwrap();
        assert_eq!(storage.appservice_stream_status("bridge").unwrap().unwrap().delivered_ts, Some(2_000));
        let after = storage.appservice_stream("bridge", 99).unwrap();
        assert_eq!(after, AppServiceStream { position: 45, next_txn_id: 2, pending_end: None });
        storage.appservice_skip_to("bridge", 50).unwrap();
        assert_eq!(storage.appservice_stream("bridge", 99).unwrap().position, 50);
        // Services are apart.
        assert_eq!(storage.appservice_stream("other", 7).unwrap().position, 7);
        assert_eq!(storage.appservice_stream_status("never").unwrap(), None);
    }

    #[test]
    fn added_registrations_are_kept_by_id() {
        let storage = super::super::in_memory();
        assert!(storage.add_app_service("irc", "id: irc", 2).unwrap());
        assert!(storage.add_app_service("bridge", "id: bridge", 1).unwrap());
        assert!(!storage.add_app_service("irc", "id: irc again", 3).unwrap());
        let added = storage.added_app_services().unwrap();
        let ids: Vec<_> = added.iter().map(|added| added.appservice_id.as_str()).collect();
        assert_eq!(ids, ["bridge", "irc"]);
        assert_eq!(added[1].registration, "id: irc");
        assert!(storage.remove_app_service("irc").unwrap());
        assert!(!storage.remove_app_service("irc").unwrap());
        assert_eq!(storage.added_app_services().unwrap().len(), 1);
    }
}
