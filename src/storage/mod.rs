//! The one SQLite file: opening it, pragmas, and numbered append-only migrations.
//!
//! This module tree is the ONLY place with SQL. Each submodule owns one group of
//! tables and offers plain functions on [`Storage`]. It knows nothing of HTTP.

mod accounts;
mod acme;
mod appservice;
mod batch;
mod directory;
mod e2ee;
mod event_json;
pub mod federation;
pub mod health;
mod key_backup;
mod media;
mod members;
mod migrations;
mod push;
mod relations;
mod remote_devices;
mod rooms;
mod search;
mod secrets;
mod server_keys;
mod state_reader;
mod sync;
mod transactions;
mod unread;
mod url_previews;

pub use accounts::{Device, TokenOwner};
pub use acme::AcmeCertificate;
pub use batch::{EventKey, GroupVisibility, SenderAndContent};
pub use directory::ReportTarget;
pub use e2ee::{InboxPage, InboxSize, ToDeviceMessage};
pub use event_json::JsonRef;
pub use key_backup::{BackedUpSession, BackupVersion, KeyScope};
pub use media::{ContentReader, MediaInfo, NewMedia, PART_BYTES};
pub use push::{PushQueued, Pusher, PusherKey, QueuedPush};
pub use relations::{RelationChild, RelationQuery};
pub use remote_devices::RemoteDeviceList;
pub use rooms::{CurrentStateEntry, CurrentUpdate, NewEvent, StateAfter, StateMap, StoredEvent};
pub use search::{SEARCH_KEYS, SearchOrder, SearchQuery, fts_expression, search_words};
pub use server_keys::RemoteKey;
pub use state_reader::{PageLimit, StateReader};
pub use sync::Receipt;
pub use unread::{MAIN_THREAD, ThreadCounts, UnreadMark};

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;

/// The `server_secrets` entry holding the server name the database was first served under.
pub const SERVER_NAME: &str = "server_name";

/// Prepared statements kept per connection: the hot paths use ~60 distinct
/// statements, and rusqlite's default of 16 re-prepared them on every call.
const STATEMENT_CACHE_CAPACITY: usize = 128;

/// Cap on the WAL file left after a checkpoint (SQLite truncates it to this
/// when it starts over), so one huge transaction does not leave a huge file.
/// It is above what SQLite's automatic checkpoint (every 1,000 pages, ~4 MiB)
/// lets the WAL grow to: truncating below that made every commit grow the
/// file again, and the kernel's block allocation for the new pages cost more
/// than writing them.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 4608 * 1024;

/// A backup's progress callback: bytes written so far, bytes in all.
pub type BackupProgress = Box<dyn FnMut(u64, u64) + Send>;

/// SQLite calls the backup's progress handler every this many virtual
/// machine steps: often enough for a smooth line, rarely enough that the
/// `stat` it does costs nothing next to the copy.
const BACKUP_PROGRESS_STEPS: i32 = 10_000;

/// Writers wait this long for another process (an operator command) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The open database. One per process; on the server it lives on the event
/// loop thread and every call is short.
pub struct Storage {
    conn: Connection,
    /// Open [`Storage::begin`] levels and the group transaction around them.
    transactions: transactions::Levels,
}

/// Why the database could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Sqlite(rusqlite::Error),
    /// The file was written by a newer hearth.
    TooNew {
        found: u32,
        known: u32,
    },
    Io(std::io::Error),
    /// Opened read-only, the file's older schema cannot be migrated.
    TooOld {
        found: u32,
        known: u32,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Sqlite(error) => write!(f, "database error: {error}"),
            OpenError::Io(error) => write!(f, "cannot create the data directory: {error}"),
            OpenError::TooNew { found, known } => write!(
                f,
                "the database has schema version {found}, but this hearth only knows up to \
                 {known}: it was written by a newer hearth; run that version or restore a backup"
            ),
            OpenError::TooOld { found, known } => write!(
                f,
                "the database has schema version {found}, this hearth writes {known}: start the \
                 node once to migrate it"
            ),
        }
    }
}

impl From<rusqlite::Error> for OpenError {
    fn from(error: rusqlite::Error) -> Self {
        OpenError::Sqlite(error)
    }
}

impl Storage {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Storage, OpenError> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(OpenError::Io)?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer; NORMAL sync is durable across a
        // process crash (kill -9) and only risks the last commits on power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Keep memory small on a board: a 2 MiB page cache.
        conn.pragma_update(None, "cache_size", -2048)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let mut storage = Storage { conn, transactions: transactions::Levels::default() };
        migrations::migrate(&mut storage.conn)?;
        Ok(storage)
    }

    /// Opens an existing database read-only, beside a running node (the
    /// operator's reports): nothing is created, migrated or written, and its
    /// schema must be the one this binary writes.
    pub fn open_read_only(path: &Path) -> Result<Storage, OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let found: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let known = migrations::SCHEMA_VERSION;
        if found > known {
            return Err(OpenError::TooNew { found, known });
        }
        if found < known {
            return Err(OpenError::TooOld { found, known });
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        Ok(Storage { conn, transactions: transactions::Levels::default() })
    }

    /// Whether this is a [`Storage::open_read_only`] connection (an
    /// operator's report beside the node), which must write nothing.
    pub fn is_read_only(&self) -> bool {
        self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }

    /// Copies the whole database into `target`, consistently, while it is in use.
    ///
    /// `VACUUM INTO` reads one snapshot from start to end, so a node writing
    /// meanwhile does not disturb it (SQLite's online backup API starts over
    /// whenever another process writes, and might never finish beside a
    /// busy node). `progress`, if given, is called now and then with the
    /// bytes written so far and the database's size (an upper bound: free
    /// pages are not copied).
    pub fn backup_to(&self, target: &Path, progress: Option<BackupProgress>) -> Result<()> {
        let target_text = target
            .to_str()
            .ok_or_else(|| crate::error::Error::Internal("the backup path is not valid UTF-8".into()))?;
        if let Some(mut progress) = progress {
            let pages: i64 = self.conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
            let page_size: i64 = self.conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
            let total = u64::try_from(pages.saturating_mul(page_size)).unwrap_or(0);
            let target = target.to_path_buf();
            self.conn.progress_handler(
                BACKUP_PROGRESS_STEPS,
                Some(move || {
                    let written = std::fs::metadata(&target).map(|metadata| metadata.len()).unwrap_or(0);
                    progress(written, total);
                    false
                }),
            );
        }
        let outcome = self.conn.execute("VACUUM INTO ?1", [target_text]);
        self.conn.progress_handler(0, None::<fn() -> bool>);
        outcome?;
        Ok(())
    }

    /// Like [`Storage::checkpoint`], but gives up at once (answering false)
    /// rather than wait for another process reading the database.
    pub fn checkpoint_without_waiting(&self) -> Result<bool> {
        self.conn.busy_timeout(Duration::ZERO)?;
        let outcome = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        match outcome {
            Ok(busy) => Ok(busy == 0),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Moves the WAL's content into the main file and truncates the WAL.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// How long a reader of its own ([`open_reader`]) waits for the node's
/// writer to let go of the file (only a checkpoint's brief lock makes it
/// wait at all).
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A read-only connection of its own to the database at `path`, beside the
/// node's, for a stream read a piece at a time (a download, a state answer)
/// with a page cache of `cache_kib` KiB: its reads leave the node's
/// connection and page cache to everything else.
fn open_reader(path: &Path, cache_kib: i64) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(READER_BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(conn)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) fn in_memory() -> Storage {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    migrations::migrate(&mut conn).unwrap();
    Storage { conn, transactions: transactions::Levels::default() }
}
