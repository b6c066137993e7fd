//! The link preview cache: the Open Graph answer of each URL fetched, kept
//! while it is fresh, so a URL is fetched at most once an hour however many
//! clients show it.

use rusqlite::{OptionalExtension, params};

use super::Storage;
use crate::error::Result;

/// Migration 19: `url_previews` holds one row per fetch of a URL: when it
/// was fetched, until when the answer is fresh, and the answer (JSON).
pub(super) const URL_PREVIEWS: &str = r#"
    CREATE TABLE url_previews (
        url         TEXT NOT NULL,
        fetched_ts  INTEGER NOT NULL,
        expires_ts  INTEGER NOT NULL,
        og          TEXT NOT NULL,
        PRIMARY KEY (url, fetched_ts)
    ) WITHOUT ROWID;
    CREATE INDEX url_previews_by_expiry ON url_previews(expires_ts);
"#;

/// A cached preview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPreview {
    pub expires_ts: i64,
    /// The answer as JSON text.
    pub og: String,
}

impl Storage {
    /// The cached preview of `url` that was current at `ts`: the last one
    /// fetched at or before `ts`, else the first one fetched after it (as
    /// Synapse picks). Whether it is still fresh is the caller's question.
    pub fn url_preview(&self, url: &str, ts: i64) -> Result<Option<CachedPreview>> {
        let row = |row: &rusqlite::Row<'_>| Ok(CachedPreview { expires_ts: row.get(0)?, og: row.get(1)? });
        let before = self
            .conn
            .prepare_cached(
                "SELECT expires_ts, og FROM url_previews WHERE url = ?1 AND fetched_ts <= ?2
                 ORDER BY fetched_ts DESC LIMIT 1",
            )?
            .query_row(params![url, ts], row)
            .optional()?;
        if before.is_some() {
            return Ok(before);
        }
        let after = self
            .conn
            .prepare_cached(
                "SELECT expires_ts, og FROM url_previews WHERE url = ?1 AND ?2 < fetched_ts
                 ORDER BY fetched_ts ASC LIMIT 1",
            )?
            .query_row(params![url, ts], row)
            .optional()?;
        Ok(after)
    }

    /// Caches a preview of `url` fetched at `fetched_ts`, and forgets the
    /// previews that went stale before `forget_before`.
    pub fn insert_url_preview(
        &self,
        url: &str,
        fetched_ts: i64,
        expires_ts: i64,
        og: &str,
        forget_before: i64,
    ) -> Result<()> {
        self.conn.execute("DELETE FROM url_previews WHERE expires_ts < ?1", params![forget_before])?;
        self.conn.execute(
            "INSERT OR REPLACE INTO url_previews (url, fetched_ts, expires_ts, og) VALUES (?1, ?2, ?3, ?4)",
            params![url, fetched_ts, expires_ts, og],
        )?;
        Ok(())
    }
}
