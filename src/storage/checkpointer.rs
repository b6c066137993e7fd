//! Folds the WAL into the database file on a thread of its own while the
//! node writes, so that the event loop's commits only append to the WAL.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, on the thread that committed: it copies every page written
//! since the last one into the database file and syncs both files, which
//! held the event loop for milliseconds at a time during a burst of writes
//! (a fifth of the wall time of a `createRoom` with 5,000 invites, most of
//! it waiting for the disk). Here the node's connection nudges this thread
//! after each group commit; once the WAL file is [`CHECKPOINT_WAL_BYTES`]
//! long, the thread runs a `PASSIVE` checkpoint on a connection of its own
//! (at most one per [`CHECKPOINT_SPACING`]), which takes no lock a writer
//! needs. The WAL starts over at the first write after a checkpoint that
//! copied all of it, and SQLite then cuts the file to the journal size
//! limit, below the threshold: the file only reaches the threshold again
//! when that much has been written since.
//!
//! The node's connection keeps an automatic checkpoint at
//! [`FALLBACK_AUTOCHECKPOINT_PAGES`], far above this thread's threshold: if
//! writes never pause long enough for a checkpoint here to copy everything,
//! the writer catches up itself (only the pages not yet copied), and the
//! WAL starts over; the WAL stays bounded either way.
//!
//! See <https://www.sqlite.org/wal.html#checkpointing>.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::JOURNAL_SIZE_LIMIT_BYTES;

/// The WAL file size from which a checkpoint runs (about SQLite's own
/// threshold of 1,000 pages): 64 KiB over the size SQLite cuts the file to
/// when the WAL starts over, since a file of that size may hold only a few
/// new pages.
pub const CHECKPOINT_WAL_BYTES: u64 = JOURNAL_SIZE_LIMIT_BYTES as u64 + 64 * 1024;

/// The least time between two checkpoints: while writes go on faster than
/// a checkpoint copies them, the WAL never starts over and its file stays
/// over the threshold; each checkpoint then copies what came since the last.
const CHECKPOINT_SPACING: Duration = Duration::from_millis(100);

/// The node connection's own automatic checkpoint, in pages (64 MiB of WAL
/// at 4 KiB pages), for when this thread cannot keep the WAL short.
pub const FALLBACK_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The handle the node's connection nudges; dropping it ends the thread.
pub struct Checkpointer {
    nudge: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread that checkpoints the database at `path` on a
    /// second connection, opened at the first checkpoint (an idle node
    /// holds no second copy of the schema).
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let path = path.to_path_buf();
        // One nudge waiting is enough: the thread looks at the WAL's size
        // when it wakes, whatever the number of commits since.
        let (nudge, nudged) = sync_channel(1);
        std::thread::Builder::new()
            .name("checkpoints".into())
            .stack_size(256 * 1024)
            .spawn(move || run(&path, &nudged))?;
        Ok(Checkpointer { nudge })
    }

    /// A group was committed: the WAL grew. Never waits.
    pub fn nudge(&self) {
        match self.nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => log::warn!("the checkpoint thread is gone"),
        }
    }
}

/// The WAL file beside the database at `path` (SQLite's name for it).
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Whether a WAL of `wal_bytes` is due a checkpoint.
fn due(wal_bytes: u64) -> bool {
    CHECKPOINT_WAL_BYTES <= wal_bytes
}

fn run(path: &Path, nudged: &Receiver<()>) {
    let wal = wal_path(path);
    let mut conn: Option<Connection> = None;
    let mut last: Option<Instant> = None;
    // Ends when the node's connection (and its handle) is dropped.
    while nudged.recv().is_ok() {
        let wal_bytes = std::fs::metadata(&wal).map(|metadata| metadata.len()).unwrap_or(0);
        if !due(wal_bytes) {
            continue;
        }
        if let Some(wait) = last.and_then(|last| CHECKPOINT_SPACING.checked_sub(last.elapsed())) {
            std::thread::sleep(wait);
        }
        last = Some(Instant::now());
        if conn.is_none() {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            match Connection::open_with_flags(path, flags) {
                Ok(opened) => conn = Some(opened),
                Err(error) => log::warn!("cannot open the database to checkpoint it: {error}"),
            }
        }
        let Some(conn) = &conn else { continue };
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            log::warn!("checkpoint failed: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_named_as_sqlite_names_it_and_checkpointed_from_sqlites_threshold() {
        assert_eq!(wal_path(Path::new("/data/hearth.db")), Path::new("/data/hearth.db-wal"));
        assert!(!due(0));
        assert!(!due(CHECKPOINT_WAL_BYTES - 1));
        assert!(due(CHECKPOINT_WAL_BYTES));
        // Above the size a WAL that started over is cut to, below the
        // node connection's own fallback.
        assert!(JOURNAL_SIZE_LIMIT_BYTES as u64 + 4096 < CHECKPOINT_WAL_BYTES);
        assert!(CHECKPOINT_WAL_BYTES < FALLBACK_AUTOCHECKPOINT_PAGES as u64 * 4096);
    }

    /// The writer never checkpoints here: the database file only grows by
    /// the checkpoints of the thread, nudged after each commit.
    #[test]
    fn the_thread_folds_a_grown_wal_into_the_database_file() {
        let dir = std::env::temp_dir().join(format!("hearth-checkpointer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hearth.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE pages (content BLOB)").unwrap();
        let checkpointer = Checkpointer::start(&path).unwrap();
        let size = |path: &Path| std::fs::metadata(path).map(|metadata| metadata.len()).unwrap_or(0);
        let before = size(&path);
        let written = 2 * CHECKPOINT_WAL_BYTES;
        for _ in 0..written / 65_536 {
            writer.execute("INSERT INTO pages VALUES (zeroblob(65536))", []).unwrap();
            checkpointer.nudge();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while size(&path) < before + CHECKPOINT_WAL_BYTES && Instant::now() < deadline {
            checkpointer.nudge();
            std::thread::sleep(Duration::from_millis(20));
        }
        let grown = size(&path) - before;
        drop(checkpointer);
        drop(writer);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(CHECKPOINT_WAL_BYTES <= grown, "the file grew by {grown} bytes of {written} written");
    }
}
