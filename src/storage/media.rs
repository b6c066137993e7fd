//! The content repository's tables: media content (uploaded here or cached
//! from other servers) with its metadata, and media IDs created for an
//! asynchronous upload that has not come yet.
//!
//! Content lives in the one SQLite file as a BLOB, written and read in
//! pieces (incremental blob I/O), so a large file is never copied whole
//! into SQLite's bind buffers, and a download can stream from its own
//! read-only connection (see [`ContentReader`]).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, DatabaseName, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Storage, now_ms};
use crate::error::Result;

/// Migration 10: media content and pending asynchronous uploads.
///
/// `media` holds one row per piece of content: `origin` and `media_id` are the
/// `mxc://` URI's parts; `variant` is `''` for the content itself and names a
/// thumbnail size and method for thumbnails fetched from another server;
/// `uploader` is the local user who uploaded it, NULL for copies of remote
/// content. `content` stays the last column, so reading the metadata never
/// walks the content's overflow pages. A rowid table: incremental blob I/O
/// addresses rows by rowid.
///
/// `media_pending` holds media IDs made by `POST /_matrix/media/v1/create`
/// until their content is uploaded or they expire.
pub(super) const MEDIA: &str = r#"
    CREATE TABLE media (
        origin          TEXT NOT NULL,
        media_id        TEXT NOT NULL,
        variant         TEXT NOT NULL DEFAULT '',
        content_type    TEXT NOT NULL,
        upload_name     TEXT,
        size            INTEGER NOT NULL,
        sha256          BLOB,
        created_ts      INTEGER NOT NULL,
        uploader        TEXT,
        last_access_ts  INTEGER NOT NULL,
        content         BLOB NOT NULL,
        UNIQUE (origin, media_id, variant)
    );
    CREATE INDEX media_by_uploader ON media(uploader) WHERE uploader IS NOT NULL;
    CREATE INDEX media_remote_by_access ON media(last_access_ts) WHERE uploader IS NULL;
    CREATE TABLE media_pending (
        media_id    TEXT PRIMARY KEY,
        uploader    TEXT NOT NULL,
        created_ts  INTEGER NOT NULL,
        expires_ts  INTEGER NOT NULL
    );
    CREATE INDEX media_pending_by_uploader ON media_pending(uploader, expires_ts);
"#;

/// Pieces in which content is written into its BLOB.
const WRITE_PIECE_BYTES: usize = 1 << 20;

/// A streaming reader's page cache, in KiB (negative `cache_size`).
const READER_CACHE_KIB: i64 = 256;

/// How long a streaming reader waits for a writer in another process.
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Content to store.
pub struct NewMedia<'a> {
    pub origin: &'a str,
    pub media_id: &'a str,
    /// `""` for the content itself.
    pub variant: &'a str,
    pub content_type: &'a str,
    pub upload_name: Option<&'a str>,
    /// The local uploader; `None` for a copy of remote content.
    pub uploader: Option<&'a str>,
    pub content: &'a [u8],
}

/// A stored piece of content, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaInfo {
    /// The row, for reading the content.
    pub rowid: i64,
    pub content_type: String,
    pub upload_name: Option<String>,
    pub size: u64,
    pub created_ts: i64,
    pub uploader: Option<String>,
    pub last_access_ts: i64,
}

/// A media ID waiting for its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMedia {
    pub uploader: String,
    pub expires_ts: i64,
}

impl Storage {
    /// Stores content; false (and nothing changes) when the row exists.
    pub fn insert_media(&self, media: &NewMedia<'_>) -> Result<bool> {
        let now = now_ms();
        let digest = Sha256::digest(media.content);
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO media (origin, media_id, variant, content_type, upload_name, size,
                 sha256, created_ts, uploader, last_access_ts, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?8, zeroblob(?6))",
            params![
                media.origin,
                media.media_id,
                media.variant,
                media.content_type,
                media.upload_name,
                media.content.len() as i64,
                digest.as_slice(),
                now,
                media.uploader,
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        let rowid = self.conn.last_insert_rowid();
        let mut blob = self.conn.blob_open(DatabaseName::Main, "media", "content", rowid, false)?;
        for piece in media.content.chunks(WRITE_PIECE_BYTES) {
            blob.write_all(piece).map_err(|error| crate::error::Error::Internal(error.to_string()))?;
        }
        Ok(true)
    }

    /// The metadata of stored content.
    pub fn media(&self, origin: &str, media_id: &str, variant: &str) -> Result<Option<MediaInfo>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT rowid, content_type, upload_name, size, created_ts, uploader, last_access_ts
             FROM media WHERE origin = ?1 AND media_id = ?2 AND variant = ?3",
        )?;
        let info = statement
            .query_row(params![origin, media_id, variant], |row| {
                Ok(MediaInfo {
                    rowid: row.get(0)?,
                    content_type: row.get(1)?,
                    upload_name: row.get(2)?,
                    size: row.get::<_, i64>(3)? as u64,
                    created_ts: row.get(4)?,
                    uploader: row.get(5)?,
                    last_access_ts: row.get(6)?,
                })
            })
            .optional()?;
        Ok(info)
    }

    /// Up to `limit` bytes from the start of a row's content (all of it for
    /// small content).
    pub fn media_content(&self, rowid: i64, limit: usize) -> Result<Vec<u8>> {
        let blob = self.conn.blob_open(DatabaseName::Main, "media", "content", rowid, true)?;
        let mut bytes = Vec::with_capacity(blob.len().min(limit));
        blob.take(limit as u64)
            .read_to_end(&mut bytes)
            .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
        Ok(bytes)
    }

    /// Records that content was served at `now`.
    pub fn touch_media(&self, rowid: i64, now: i64) -> Result<()> {
        self.conn.execute("UPDATE media SET last_access_ts = ?2 WHERE rowid = ?1", params![rowid, now])?;
        Ok(())
    }

    /// Reserves a media ID for an asynchronous upload.
    pub fn insert_pending_media(&self, media_id: &str, uploader: &str, expires_ts: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO media_pending (media_id, uploader, created_ts, expires_ts) VALUES (?1, ?2, ?3, ?4)",
            params![media_id, uploader, now_ms(), expires_ts],
        )?;
        Ok(())
    }

    /// A reserved media ID that has not expired by `now`.
    pub fn pending_media(&self, media_id: &str, now: i64) -> Result<Option<PendingMedia>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT uploader, expires_ts FROM media_pending WHERE media_id = ?1 AND ?2 < expires_ts",
        )?;
        let pending = statement
            .query_row(params![media_id, now], |row| {
                Ok(PendingMedia { uploader: row.get(0)?, expires_ts: row.get(1)? })
            })
            .optional()?;
        Ok(pending)
    }

    /// A user's unexpired reservations: how many, and when the first expires.
    pub fn pending_media_of(&self, uploader: &str, now: i64) -> Result<(usize, Option<i64>)> {
        let mut statement = self.conn.prepare_cached(
            "SELECT COUNT(*), MIN(expires_ts) FROM media_pending WHERE uploader = ?1 AND ?2 < expires_ts",
        )?;
        let (count, first) = statement.query_row(params![uploader, now], |row| {
            Ok((row.get::<_, i64>(0)? as usize, row.get::<_, Option<i64>>(1)?))
        })?;
        Ok((count, first))
    }

    /// Drops a reservation (its content came).
    pub fn delete_pending_media(&self, media_id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM media_pending WHERE media_id = ?1", [media_id])?;
        Ok(())
    }

    /// Drops reservations that expired by `now`.
    pub fn delete_expired_pending_media(&self, now: i64) -> Result<()> {
        self.conn.execute("DELETE FROM media_pending WHERE expires_ts <= ?1", [now])?;
        Ok(())
    }
}

/// A read-only connection of its own for streaming one download: it keeps
/// its read transaction (and so its snapshot) only while the download runs,
/// and the node's connection stays free for everything else meanwhile.
pub struct ContentReader {
    conn: Connection,
}

/// The content of one row, read front to back.
pub struct ContentBlob<'a> {
    blob: rusqlite::blob::Blob<'a>,
}

impl ContentReader {
    /// Opens the database file read-only.
    pub fn open(path: &Path) -> Result<ContentReader> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(READER_BUSY_TIMEOUT)?;
        // Content is read front to back once: cached pages would not be read again.
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
        Ok(ContentReader { conn })
    }

    /// The content of `rowid`. One blob handle per download walks the
    /// content's overflow pages once; reopening it per piece would walk them
    /// from the start each time.
    pub fn content(&self, rowid: i64) -> Result<ContentBlob<'_>> {
        let blob = self.conn.blob_open(DatabaseName::Main, "media", "content", rowid, true)?;
        Ok(ContentBlob { blob })
    }
}

impl ContentBlob<'_> {
    /// The content's length in bytes.
    pub fn len(&self) -> usize {
        self.blob.len()
    }

    /// The next up to `max` bytes; empty at the end.
    pub fn next_piece(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut piece = vec![0; max];
        let mut filled = 0;
        while filled < max {
            let read = self
                .blob
                .read(&mut piece[filled..])
                .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        piece.truncate(filled);
        Ok(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_media<'a>(media_id: &'a str, content: &'a [u8]) -> NewMedia<'a> {
        NewMedia {
            origin: "example.org",
            media_id,
            variant: "",
            content_type: "image/png",
            upload_name: Some("cat.png"),
            uploader: Some("@alice:example.org"),
            content,
        }
    }

    #[test]
    fn content_round_trips_in_pieces_and_is_never_overwritten() {
        let storage = crate::storage::in_memory();
        let content: Vec<u8> = (0..(WRITE_PIECE_BYTES * 2 + 5)).map(|index| (index % 251) as u8).collect();
        assert!(storage.insert_media(&new_media("abc", &content)).unwrap());
        assert!(!storage.insert_media(&new_media("abc", b"other")).unwrap());
        let info = storage.media("example.org", "abc", "").unwrap().unwrap();
        assert_eq!(info.size, content.len() as u64);
        assert_eq!(info.upload_name.as_deref(), Some("cat.png"));
        assert_eq!(storage.media_content(info.rowid, usize::MAX).unwrap(), content);
        assert_eq!(storage.media_content(info.rowid, 10).unwrap(), &content[..10]);
        assert_eq!(storage.media("example.org", "abc", "32x32-crop").unwrap(), None);
        assert_eq!(storage.media("other.org", "abc", "").unwrap(), None);
        assert!(storage.insert_media(&new_media("empty", b"")).unwrap());
        let empty = storage.media("example.org", "empty", "").unwrap().unwrap();
        assert!(storage.media_content(empty.rowid, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_reader_of_its_own_streams_committed_content() {
        let dir = std::env::temp_dir().join(format!("hearth-media-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir.join("hearth.db")).unwrap();
        let content: Vec<u8> = (0..300_000).map(|index| (index % 7) as u8).collect();
        storage.insert_media(&new_media("big", &content)).unwrap();
        let info = storage.media("example.org", "big", "").unwrap().unwrap();
        let reader = ContentReader::open(&dir.join("hearth.db")).unwrap();
        let mut blob = reader.content(info.rowid).unwrap();
        assert_eq!(blob.len(), content.len());
        let mut streamed = Vec::new();
        loop {
            let piece = blob.next_piece(65_536).unwrap();
            if piece.is_empty() {
                break;
            }
            streamed.extend_from_slice(&piece);
        }
        assert_eq!(streamed, content);
        drop(blob);
        drop(reader);
        drop(storage);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reservations_expire_and_are_counted_per_user() {
        let storage = crate::storage::in_memory();
        storage.insert_pending_media("one", "@alice:x", 1_000).unwrap();
        storage.insert_pending_media("two", "@alice:x", 2_000).unwrap();
        storage.insert_pending_media("three", "@bob:x", 2_000).unwrap();
        assert_eq!(storage.pending_media_of("@alice:x", 500).unwrap(), (2, Some(1_000)));
        assert_eq!(storage.pending_media_of("@alice:x", 1_500).unwrap(), (1, Some(2_000)));
        assert_eq!(storage.pending_media("one", 500).unwrap().unwrap().uploader, "@alice:x");
        assert_eq!(storage.pending_media("one", 1_000).unwrap(), None);
        storage.delete_expired_pending_media(1_500).unwrap();
        storage.delete_pending_media("two").unwrap();
        assert_eq!(storage.pending_media_of("@alice:x", 0).unwrap(), (0, None));
        assert_eq!(storage.pending_media_of("@bob:x", 0).unwrap(), (1, Some(2_000)));
    }
}
