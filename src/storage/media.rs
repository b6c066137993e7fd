//! The content repository's tables: media content (uploaded here or cached
//! from other servers) with its metadata, and media IDs created for an
//! asynchronous upload that has not come yet.
//!
//! Content lives in the one SQLite file in parts of [`PART_BYTES`], one row
//! each (`media_parts`): an upload is written part by part as it arrives
//! (nothing holds it whole, and a body of unknown length needs no size up
//! front), and a download reads each part in a statement of its own, so no
//! read transaction stays open while it waits for its socket (an open one
//! would keep the WAL from being folded). One BLOB per content would need
//! either a transaction held across the whole download or, per piece, a
//! walk of its overflow chain from the start (quadratic in the content's
//! size). Content whose upload has not finished has `complete = 0`: it is
//! invisible to every read and is deleted when the upload fails, or at the
//! next start after a crash.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, DatabaseName, OptionalExtension, params};
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

/// Migration 14: content in parts (`media_parts`, `seq` counting from 0, each
/// [`PART_BYTES`] but the last); `media.content` is left empty for new
/// content, and content stored whole before this migration is moved into
/// parts at the next start ([`Storage::split_whole_media`]). `complete` is 0
/// while an upload is being written; `size` then holds the bytes it reserves
/// of its uploader's quota.
pub(super) const MEDIA_PARTS: &str = r#"
    ALTER TABLE media ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE media_parts (
        media  INTEGER NOT NULL,
        seq    INTEGER NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (media, seq)
    );
"#;

/// Content is stored in parts of this size: a part is what an upload
/// holds in memory before writing it, and what a download reads at once
/// (a few milliseconds of SQLite on a board).
pub const PART_BYTES: usize = 256 << 10;

/// A streaming reader's page cache, in KiB (negative `cache_size`).
const READER_CACHE_KIB: i64 = 256;

/// Content to store whole (a copy of remote content).
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
    /// Stores content whole; false (and nothing changes) when the row exists.
    pub fn insert_media(&self, media: &NewMedia<'_>) -> Result<bool> {
        let Some(rowid) = self.begin_media_upload(media, media.content.len() as u64)? else {
            return Ok(false);
        };
        for (seq, part) in media.content.chunks(PART_BYTES).enumerate() {
            self.insert_media_part(rowid, seq as i64, part)?;
        }
        self.finish_media_upload(rowid, media.content.len() as u64, &Sha256::digest(media.content))?;
        Ok(true)
    }

    /// Starts storing content that comes in parts (`media.content` is
    /// ignored): an incomplete row reserving `reserved` bytes, or `None`
    /// (and nothing changes) when the row exists, complete or not.
    pub fn begin_media_upload(&self, media: &NewMedia<'_>, reserved: u64) -> Result<Option<i64>> {
        let now = now_ms();
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO media (origin, media_id, variant, content_type, upload_name, size,
                 created_ts, uploader, last_access_ts, content, complete)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, x'', 0)",
            params![
                media.origin,
                media.media_id,
                media.variant,
                media.content_type,
                media.upload_name,
                reserved as i64,
                now,
                media.uploader,
            ],
        )?;
        Ok((inserted == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// Stores part `seq` of an unfinished row's content.
    pub fn insert_media_part(&self, rowid: i64, seq: i64, data: &[u8]) -> Result<()> {
        let mut statement =
            self.conn.prepare_cached("INSERT INTO media_parts (media, seq, data) VALUES (?1, ?2, ?3)")?;
        statement.execute(params![rowid, seq, data])?;
        Ok(())
    }

    /// Raises what an unfinished row reserves (an upload of unknown length).
    pub fn reserve_media(&self, rowid: i64, reserved: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET size = MAX(size, ?2) WHERE rowid = ?1 AND complete = 0",
            params![rowid, reserved as i64],
        )?;
        Ok(())
    }

    /// Makes an unfinished row's content visible, with its size and hash.
    pub fn finish_media_upload(&self, rowid: i64, size: u64, sha256: &[u8]) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET size = ?2, sha256 = ?3, complete = 1 WHERE rowid = ?1",
            params![rowid, size as i64, sha256],
        )?;
        Ok(())
    }

    /// Deletes a row and its content.
    pub fn delete_media(&self, rowid: i64) -> Result<()> {
        self.conn.execute("DELETE FROM media_parts WHERE media = ?1", [rowid])?;
        self.conn.execute("DELETE FROM media WHERE rowid = ?1", [rowid])?;
        Ok(())
    }

    /// Deletes the content of uploads a crash interrupted (at start, before
    /// any upload runs); how many there were.
    pub fn delete_incomplete_media(&self) -> Result<usize> {
        self.conn.execute(
            "DELETE FROM media_parts WHERE media IN (SELECT rowid FROM media WHERE complete = 0)",
            [],
        )?;
        Ok(self.conn.execute("DELETE FROM media WHERE complete = 0", [])?)
    }

    /// Moves content stored whole in `media.content` (before migration 14)
    /// into parts, one row per transaction, reading each BLOB front to back
    /// once; how many rows were moved.
    pub fn split_whole_media(&self) -> Result<usize> {
        let rowids: Vec<i64> = self
            .conn
            .prepare("SELECT rowid FROM media WHERE length(content) > 0")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for rowid in &rowids {
            let transaction = self.conn.unchecked_transaction()?;
            transaction.execute("DELETE FROM media_parts WHERE media = ?1", [rowid])?;
            {
                let mut blob = transaction.blob_open(DatabaseName::Main, "media", "content", *rowid, true)?;
                let mut seq = 0;
                loop {
                    let part = read_piece(&mut blob, PART_BYTES)?;
                    if part.is_empty() {
                        break;
                    }
                    self.insert_media_part(*rowid, seq, &part)?;
                    seq += 1;
                }
            }
            transaction.execute("UPDATE media SET content = x'' WHERE rowid = ?1", [rowid])?;
            transaction.commit()?;
        }
        Ok(rowids.len())
    }

    /// Bytes of content `uploader` holds, uploads under way included (what
    /// they declared, or received so far).
    pub fn media_used_by(&self, uploader: &str) -> Result<u64> {
        let mut statement =
            self.conn.prepare_cached("SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = ?1")?;
        let used: i64 = statement.query_row([uploader], |row| row.get(0))?;
        Ok(used.max(0) as u64)
    }

    /// The metadata of stored content (complete content only).
    pub fn media(&self, origin: &str, media_id: &str, variant: &str) -> Result<Option<MediaInfo>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT rowid, content_type, upload_name, size, created_ts, uploader, last_access_ts
             FROM media WHERE origin = ?1 AND media_id = ?2 AND variant = ?3 AND complete = 1",
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
        let mut bytes = Vec::new();
        let mut seq = 0;
        while bytes.len() < limit {
            let Some(part) = media_part(&self.conn, rowid, seq)? else {
                break;
            };
            let wanted = (limit - bytes.len()).min(part.len());
            bytes.extend_from_slice(part.get(..wanted).unwrap_or_default());
            seq += 1;
        }
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

/// Part `seq` of a row's content, read in a statement of its own.
fn media_part(conn: &Connection, rowid: i64, seq: i64) -> Result<Option<Vec<u8>>> {
    let mut statement = conn.prepare_cached("SELECT data FROM media_parts WHERE media = ?1 AND seq = ?2")?;
    Ok(statement.query_row(params![rowid, seq], |row| row.get(0)).optional()?)
}

/// Up to `max` bytes from a BLOB's current position.
fn read_piece(blob: &mut rusqlite::blob::Blob<'_>, max: usize) -> Result<Vec<u8>> {
    let mut piece = Vec::with_capacity(max.min(blob.len()));
    blob.take(max as u64)
        .read_to_end(&mut piece)
        .map_err(|error| crate::error::Error::Internal(error.to_string()))?;
    Ok(piece)
}

/// A read-only connection of its own for streaming downloads: each part is
/// read in a statement (and so a read transaction) of its own, so nothing
/// is held while a download waits for its socket, and the node's
/// connection (with its page cache) stays for everything else.
pub struct ContentReader {
    conn: Connection,
}

impl ContentReader {
    /// Opens the database file read-only.
    pub fn open(path: &Path) -> Result<ContentReader> {
        // Content is read front to back once: cached pages would not be read again.
        Ok(ContentReader { conn: super::open_reader(path, READER_CACHE_KIB)? })
    }

    /// Part `seq` of `rowid`'s content; `None` past its end.
    pub fn part(&self, rowid: i64, seq: i64) -> Result<Option<Vec<u8>>> {
        media_part(&self.conn, rowid, seq)
    }

    /// Whether a read transaction is open (never, between parts).
    #[cfg(test)]
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
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
        let content: Vec<u8> = (0..(PART_BYTES * 2 + 5)).map(|index| (index % 251) as u8).collect();
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
    fn a_reader_of_its_own_reads_committed_parts_without_holding_a_transaction() {
        let dir = std::env::temp_dir().join(format!("hearth-media-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir.join("hearth.db")).unwrap();
        let content: Vec<u8> = (0..(PART_BYTES + 300)).map(|index| (index % 7) as u8).collect();
        storage.insert_media(&new_media("big", &content)).unwrap();
        let info = storage.media("example.org", "big", "").unwrap().unwrap();
        let reader = ContentReader::open(&dir.join("hearth.db")).unwrap();
        let mut streamed = Vec::new();
        let mut seq = 0;
        while let Some(part) = reader.part(info.rowid, seq).unwrap() {
            assert!(!reader.in_transaction());
            streamed.extend_from_slice(&part);
            seq += 1;
        }
        assert_eq!(seq, 2);
        assert_eq!(streamed, content);
        drop(reader);
        drop(storage);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unfinished_uploads_are_invisible_count_towards_quota_and_can_be_undone() {
        let storage = crate::storage::in_memory();
        storage.insert_media(&new_media("done", b"12345")).unwrap();
        let rowid = storage.begin_media_upload(&new_media("partial", b""), 1_000).unwrap().unwrap();
        assert_eq!(storage.begin_media_upload(&new_media("partial", b""), 1_000).unwrap(), None);
        storage.insert_media_part(rowid, 0, b"abc").unwrap();
        assert_eq!(storage.media("example.org", "partial", "").unwrap(), None);
        assert_eq!(storage.media_used_by("@alice:example.org").unwrap(), 1_005);
        storage.reserve_media(rowid, 2_000).unwrap();
        assert_eq!(storage.media_used_by("@alice:example.org").unwrap(), 2_005);
        storage.delete_media(rowid).unwrap();
        assert_eq!(storage.media_used_by("@alice:example.org").unwrap(), 5);
        let count: i64 =
            storage.conn.query_row("SELECT COUNT(*) FROM media_parts", [], |row| row.get(0)).unwrap();
        assert_eq!(count, 1, "only the finished content's part is left");

        let rowid = storage.begin_media_upload(&new_media("crashed", b""), 10).unwrap().unwrap();
        storage.insert_media_part(rowid, 0, b"abc").unwrap();
        assert_eq!(storage.delete_incomplete_media().unwrap(), 1);
        assert_eq!(storage.media_used_by("@alice:example.org").unwrap(), 5);
        assert!(storage.begin_media_upload(&new_media("crashed", b""), 10).unwrap().is_some());
    }

    #[test]
    fn content_stored_whole_before_parts_is_split() {
        let storage = crate::storage::in_memory();
        let content: Vec<u8> = (0..(PART_BYTES + 10)).map(|index| (index % 13) as u8).collect();
        storage
            .conn
            .execute(
                "INSERT INTO media (origin, media_id, content_type, size, created_ts, last_access_ts, content)
                 VALUES ('example.org', 'old', 'image/png', ?1, 0, 0, ?2)",
                params![content.len() as i64, content],
            )
            .unwrap();
        assert_eq!(storage.split_whole_media().unwrap(), 1);
        assert_eq!(storage.split_whole_media().unwrap(), 0);
        let info = storage.media("example.org", "old", "").unwrap().unwrap();
        assert_eq!(storage.media_content(info.rowid, usize::MAX).unwrap(), content);
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
