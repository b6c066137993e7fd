//! Looking at a database file without changing it (`hearth check`), and
//! putting a backup in its place (`hearth restore`).
//!
//! Both work on the file itself rather than on an open [`Storage`](super::Storage): a check
//! must not migrate or write anything (it runs beside a serving node, on a
//! read-only connection), and a restore must not touch a database a node
//! still has open.
//!
//! A node has its database open for its whole life, and in WAL mode every
//! open connection holds a shared lock on the database file until it closes
//! (the kernel drops it when the process dies, even by `kill -9`). A restore
//! takes the exclusive lock by switching the current file out of WAL mode
//! with `locking_mode = EXCLUSIVE` and no busy wait: that succeeds only when
//! no other connection is open, and keeps a node that starts meanwhile
//! waiting until the swap is done. So "a node is running on this data dir"
//! needs no lock file or PID file of its own that could go stale.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::SERVER_NAME;
use super::migrations::SCHEMA_VERSION;

/// How long the check's queries wait for a node's write to finish.
const CHECK_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `integrity_check` stops after this many problems: a badly damaged file
/// could otherwise list millions.
const MAX_INTEGRITY_MESSAGES: u32 = 20;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    /// Worth knowing, expected in a healthy database.
    Note,
    Fail,
}

/// One line of a check's answer.
#[derive(Debug)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

/// Sizes and counts of a database.
#[derive(Debug, Default)]
pub struct Stats {
    pub users: i64,
    pub deactivated_users: i64,
    pub rooms: i64,
    pub events: i64,
    pub outliers: i64,
    pub backfilled: i64,
    pub media_files: i64,
    pub media_bytes: i64,
    pub database_bytes: u64,
    pub wal_bytes: u64,
}

/// The result of [`examine`].
#[derive(Debug)]
pub struct Health {
    pub findings: Vec<Finding>,
    /// `None` when the file could not be read far enough to count.
    pub stats: Option<Stats>,
}

impl Health {
    /// Whether any finding is a failure.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|finding| finding.severity == Severity::Fail)
    }

    fn push(&mut self, severity: Severity, text: String) {
        self.findings.push(Finding { severity, text });
    }
}

/// The `-wal`/`-shm`/`-journal` file next to a database.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens an existing database without creating or migrating it; nothing is
/// written through this connection.
fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(CHECK_BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Checks the database at `path` (which must exist), read-only: SQLite's
/// integrity and foreign-key checks, the schema version, the signing key and
/// the event graph; and counts what it holds.
pub fn examine(path: &Path) -> Result<Health, String> {
    if !path.is_file() {
        return Err(format!("no database at {}", path.display()));
    }
    let conn = open_existing(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let mut health = Health { findings: Vec::new(), stats: None };

    match integrity(&conn) {
        Ok(problems) if problems.is_empty() => health.push(Severity::Ok, "integrity_check".into()),
        Ok(problems) => {
            health.push(Severity::Fail, format!("integrity_check: {}", problems.join("; ")));
        }
        Err(error) => {
            // Not a database at all, or too damaged to read: nothing else can be checked.
            health.push(Severity::Fail, format!("integrity_check: {error}"));
            return Ok(health);
        }
    }
    match foreign_key_problems(&conn) {
        Ok(0) => health.push(Severity::Ok, "foreign keys".into()),
        Ok(count) => health.push(Severity::Fail, format!("foreign keys: {count} rows refer to missing rows")),
        Err(error) => health.push(Severity::Fail, format!("foreign keys: {error}")),
    }
    let version = match schema_version(&conn) {
        Ok(version) => version,
        Err(error) => {
            health.push(Severity::Fail, format!("schema version: {error}"));
            return Ok(health);
        }
    };
    match version {
        0 => {
            health.push(Severity::Fail, "schema version 0: this is not a hearth database".into());
            return Ok(health);
        }
        found if found > SCHEMA_VERSION => {
            health.push(
                Severity::Fail,
                format!(
                    "schema version {found}: newer than this hearth knows ({SCHEMA_VERSION}); \
                     it was written by a newer hearth"
                ),
            );
            return Ok(health);
        }
        found if found < SCHEMA_VERSION => health.push(
            Severity::Ok,
            format!(
                "schema version {found} (this hearth brings it to {SCHEMA_VERSION} when the node starts)"
            ),
        ),
        found => health.push(Severity::Ok, format!("schema version {found}")),
    }
    match signing_key(&conn) {
        Ok(Some(key_id)) => health.push(Severity::Ok, format!("signing key {key_id}")),
        Ok(None) => health.push(
            Severity::Fail,
            "signing key: none (the node makes one at its first start; without it other servers \
             cannot verify this one)"
                .into(),
        ),
        Err(error) => health.push(Severity::Fail, format!("signing key: {error}")),
    }
    match server_name(&conn) {
        Ok(Some(name)) => health.push(Severity::Ok, format!("server name {name}")),
        Ok(None) => health.push(Severity::Note, "server name: not recorded yet".into()),
        Err(error) => health.push(Severity::Fail, format!("server name: {error}")),
    }
    match event_graph(&conn) {
        Ok(graph) => graph.report(&mut health),
        Err(error) => health.push(Severity::Fail, format!("event graph: {error}")),
    }
    match stats(&conn, path) {
        Ok(stats) => health.stats = Some(stats),
        Err(error) => health.push(Severity::Fail, format!("stats: {error}")),
    }
    Ok(health)
}

/// `PRAGMA integrity_check`'s complaints (empty when it says "ok").
fn integrity(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let sql = format!("PRAGMA integrity_check({MAX_INTEGRITY_MESSAGES})");
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    let messages: Vec<String> = rows.collect::<Result<_, _>>()?;
    Ok(messages.into_iter().filter(|message| message != "ok").collect())
}

/// Rows `PRAGMA foreign_key_check` reports.
fn foreign_key_problems(conn: &Connection) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = statement.query([])?;
    let mut count = 0;
    while rows.next()?.is_some() {
        count += 1;
    }
    Ok(count)
}

fn schema_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn signing_key(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT key_id FROM signing_keys WHERE expired_ts IS NULL ORDER BY created_ts DESC LIMIT 1",
        [],
        |row| row.get(0),
    )
    .optional()
}

fn server_name(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let value: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM server_secrets WHERE name = ?1", [SERVER_NAME], |row| row.get(0))
        .optional()?;
    Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// References from stored events to events the database does not hold,
/// by where the referring event sits.
#[derive(Debug, Default, PartialEq)]
struct Graph {
    /// Rows whose JSON does not parse.
    bad_json: i64,
    /// Missing prev or auth events of timeline events received live, beyond
    /// the first one of each room (after a join over federation, the first
    /// event's prev events are the room's history before it, which may not
    /// have been fetched). Every other live event had its prev and auth
    /// events fetched before it was accepted: these are damage.
    live: Dangling,
    /// Missing prev events of a room's first live event.
    first_live: Dangling,
    /// Missing references of backfilled history (the oldest fetched events
    /// point further back) and of outliers (events known for an auth chain
    /// or a state, whose own history was never fetched): expected.
    history: Dangling,
}

/// Counts of missing references, with one example.
#[derive(Debug, Default, PartialEq)]
struct Dangling {
    prev: i64,
    auth: i64,
    example: Option<String>,
}

impl Dangling {
    fn total(&self) -> i64 {
        self.prev + self.auth
    }

    fn describe(&self) -> String {
        let example = self.example.as_deref().map(|id| format!(", e.g. in {id}")).unwrap_or_default();
        format!("{} prev and {} auth references{example}", self.prev, self.auth)
    }
}

impl Graph {
    fn report(&self, health: &mut Health) {
        if self.bad_json > 0 {
            health.push(Severity::Fail, format!("event graph: {} events are not valid JSON", self.bad_json));
        }
        if self.live.total() > 0 {
            health.push(
                Severity::Fail,
                format!("event graph: timeline events refer to missing events: {}", self.live.describe()),
            );
        }
        if self.first_live.total() > 0 {
            health.push(
                Severity::Note,
                format!(
                    "event graph: the first events of rooms joined over federation refer to history \
                     not fetched: {}",
                    self.first_live.describe()
                ),
            );
        }
        if self.history.total() > 0 {
            health.push(
                Severity::Note,
                format!(
                    "event graph: backfilled history and outliers refer to older events not fetched \
                     (expected): {}",
                    self.history.describe()
                ),
            );
        }
        if self.bad_json == 0 && self.live.total() == 0 {
            health.push(
                Severity::Ok,
                "event graph: every timeline event's prev and auth events are known".into(),
            );
        }
    }
}

/// Walks every event's `prev_events` and `auth_events` (one pass, each
/// reference looked up in the event ID index). Room versions 1 and 2 list
/// `[event_id, hashes]` pairs; later ones plain IDs.
fn event_graph(conn: &Connection) -> rusqlite::Result<Graph> {
    let mut graph = Graph {
        bad_json: conn
            .query_row("SELECT COUNT(*) FROM events WHERE NOT json_valid(json)", [], |row| row.get(0))?,
        ..Graph::default()
    };
    let mut statement = conn.prepare(
        "SELECT
            CASE
                WHEN e.outlier != 0 OR e.stream_ordering < 0 THEN 'history'
                WHEN list.name = 'prev_events' AND e.stream_ordering = (
                    SELECT MIN(f.stream_ordering) FROM events f
                    WHERE f.room_id = e.room_id AND f.outlier = 0 AND f.stream_ordering >= 0
                ) THEN 'first'
                ELSE 'live'
            END AS place,
            list.name,
            COUNT(*),
            MIN(e.event_id)
         FROM events e
         JOIN (SELECT 'prev_events' AS name UNION ALL SELECT 'auth_events') AS list
         JOIN json_each(e.json, '$.' || list.name) AS reference
         WHERE json_valid(e.json)
           AND NOT EXISTS (
               SELECT 1 FROM events known WHERE known.event_id =
                   CASE reference.type WHEN 'array' THEN json_extract(reference.value, '$[0]')
                   ELSE reference.value END
           )
         GROUP BY place, list.name",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let place: String = row.get(0)?;
        let list: String = row.get(1)?;
        let count: i64 = row.get(2)?;
        let example: Option<String> = row.get(3)?;
        let dangling = match place.as_str() {
            "live" => &mut graph.live,
            "first" => &mut graph.first_live,
            _ => &mut graph.history,
        };
        if list == "prev_events" {
            dangling.prev += count;
        } else {
            dangling.auth += count;
        }
        if dangling.example.is_none() {
            dangling.example = example;
        }
    }
    Ok(graph)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|metadata| metadata.len()).unwrap_or(0)
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<i64> {
    conn.query_row(sql, [], |row| row.get(0))
}

fn stats(conn: &Connection, path: &Path) -> rusqlite::Result<Stats> {
    let (media_files, media_bytes) =
        conn.query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM media WHERE variant = ''", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    Ok(Stats {
        users: count(conn, "SELECT COUNT(*) FROM users")?,
        deactivated_users: count(conn, "SELECT COUNT(*) FROM users WHERE deactivated != 0")?,
        rooms: count(conn, "SELECT COUNT(*) FROM rooms")?,
        events: count(conn, "SELECT COUNT(*) FROM events")?,
        outliers: count(conn, "SELECT COUNT(*) FROM events WHERE outlier != 0")?,
        backfilled: count(conn, "SELECT COUNT(*) FROM events WHERE stream_ordering < 0 AND outlier = 0")?,
        media_files,
        media_bytes,
        database_bytes: file_size(path),
        wal_bytes: file_size(&sibling(path, "-wal")),
    })
}

/// What a backup file holds, once [`check_staged`] found it sound.
#[derive(Debug)]
pub struct Staged {
    /// The checked copy, next to the database, ready to be moved in.
    pub path: PathBuf,
    pub schema_version: u32,
    pub server_name: Option<String>,
}

/// The server name recorded in an existing database, if it can be read.
pub fn recorded_server_name(path: &Path) -> Option<String> {
    open_existing(path).ok().and_then(|conn| server_name(&conn).ok().flatten())
}

/// Checks a copy of a backup (already at `staged`, a file no one else
/// uses): an SQLite database that passes `integrity_check`, of a schema
/// version this hearth knows, holding a signing key; then turns it into a
/// single file (rollback journal) so that no `-wal` goes with it. The copy is
/// removed if anything is wrong.
pub fn check_staged(staged: &Path) -> Result<Staged, String> {
    let outcome = check_staged_inner(staged);
    if outcome.is_err() {
        remove_with_siblings(staged);
    }
    outcome
}

fn check_staged_inner(staged: &Path) -> Result<Staged, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(staged, flags).map_err(|error| format!("cannot open it: {error}"))?;
    let not_sqlite = |error: rusqlite::Error| format!("it is not a readable SQLite database ({error})");
    let problems = integrity(&conn).map_err(not_sqlite)?;
    if !problems.is_empty() {
        return Err(format!("integrity_check failed: {}", problems.join("; ")));
    }
    let version = schema_version(&conn).map_err(not_sqlite)?;
    if version == 0 {
        return Err("it is not a hearth database (schema version 0)".into());
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "it has schema version {version}, newer than this hearth knows ({SCHEMA_VERSION}); \
             restore it with the hearth that made it"
        ));
    }
    let server_name = server_name(&conn).map_err(|error| format!("it is not a hearth database ({error})"))?;
    if signing_key(&conn).map_err(|error| format!("it is not a hearth database ({error})"))?.is_none() {
        return Err("it holds no signing key".into());
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
        .map_err(|error| format!("cannot prepare it: {error}"))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("cannot prepare it (journal mode stays {mode})"));
    }
    drop(conn);
    Ok(Staged { path: staged.to_path_buf(), schema_version: version, server_name })
}

/// Removes a file and any `-wal`, `-shm` or `-journal` beside it.
pub fn remove_with_siblings(path: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(sibling(path, suffix));
    }
    let _ = std::fs::remove_file(path);
}

/// The current database held so that no one else can open it: no node is
/// running on it, and none can start until [`Exclusive::swap`] (or drop).
pub struct Exclusive {
    conn: Connection,
    path: PathBuf,
}

/// Why [`lock`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process has the database open.
    InUse,
    Other(String),
}

/// Takes the current database at `path` for a restore: folds its WAL into
/// the file and keeps an exclusive lock on it (see the module docs).
pub fn lock(path: &Path) -> Result<Exclusive, LockError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let other = |error: rusqlite::Error| LockError::Other(error.to_string());
    let conn = Connection::open_with_flags(path, flags).map_err(other)?;
    conn.busy_timeout(Duration::ZERO).map_err(other)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(other)?;
    match conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get::<_, String>(0)) {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => {}
        Ok(_) => return Err(LockError::InUse),
        Err(rusqlite::Error::SqliteFailure(error, _))
            if matches!(
                error.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            return Err(LockError::InUse);
        }
        // A current database too damaged to switch cannot be locked this
        // way either; the caller says how to move it away by hand.
        Err(error) => return Err(LockError::Other(error.to_string())),
    }
    // In exclusive locking mode the lock taken by the switch stays until close.
    Ok(Exclusive { conn, path: path.to_path_buf() })
}

/// For a current database too damaged for [`lock`]: whether anyone else
/// has it open, by taking (and at once giving back) its exclusive lock,
/// which reads no more than the file's first page. Answers `Ok` when no one
/// has, or when even that page is unreadable (no node can be serving such a
/// file).
pub fn probe_unused(path: &Path) -> Result<(), LockError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let other = |error: rusqlite::Error| LockError::Other(error.to_string());
    let conn = Connection::open_with_flags(path, flags).map_err(other)?;
    conn.busy_timeout(Duration::ZERO).map_err(other)?;
    match conn.execute_batch("BEGIN EXCLUSIVE; ROLLBACK;") {
        Ok(()) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(error, _)) => match error.code {
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => Err(LockError::InUse),
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt => Ok(()),
            _ => Err(LockError::Other(error.to_string())),
        },
        Err(error) => Err(other(error)),
    }
}

impl Exclusive {
    /// Moves the current database aside to `aside` (with any `-wal`/`-shm`
    /// beside it, which would otherwise be read as part of the restored
    /// file) and `staged` in its place, each by an atomic rename in the same
    /// directory.
    pub fn swap(self, staged: &Path, aside: &Path) -> Result<(), String> {
        swap_files(&self.path, staged, aside)?;
        drop(self.conn);
        Ok(())
    }

    /// Gives up: the current database goes back to WAL mode, as the node keeps it.
    pub fn release(self) {
        let _ = self.conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0));
    }
}

/// Renames `current` (if any) to `aside`, then `staged` to `current`.
pub fn swap_files(current: &Path, staged: &Path, aside: &Path) -> Result<(), String> {
    if current.exists() {
        std::fs::rename(current, aside)
            .map_err(|error| format!("cannot move {} aside: {error}", current.display()))?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let old = sibling(current, suffix);
            if old.exists() {
                std::fs::rename(&old, sibling(aside, suffix))
                    .map_err(|error| format!("cannot move {} aside: {error}", old.display()))?;
            }
        }
    }
    std::fs::rename(staged, current)
        .map_err(|error| format!("cannot move the restored database in: {error}"))?;
    // The renames are durable once the directory is.
    if let Some(directory) = current.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        if let Ok(directory) = std::fs::File::open(directory) {
            let _ = directory.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> PathBuf {
        let path = dir.join("hearth.db");
        let storage = super::super::Storage::open(&path).unwrap();
        storage.insert_signing_key("ed25519:a", &[7; 32]).unwrap();
        storage.secret_or_insert(SERVER_NAME, b"example.org").unwrap();
        storage
            .conn
            .execute_batch(
                "INSERT INTO rooms (room_id, room_version, created_ts) VALUES ('!r:x', '10', 0);
                 INSERT INTO events (stream_ordering, event_id, room_id, kind, sender, depth, origin_server_ts, json)
                 VALUES (1, '$create', '!r:x', 'm.room.create', '@a:x', 1, 0,
                         '{\"prev_events\": [], \"auth_events\": []}'),
                        (2, '$join', '!r:x', 'm.room.member', '@a:x', 2, 0,
                         '{\"prev_events\": [\"$create\"], \"auth_events\": [\"$create\"]}'),
                        (-1, '$old', '!r:x', 'm.room.message', '@a:x', 0, 0,
                         '{\"prev_events\": [\"$older\"], \"auth_events\": [\"$create\"]}');",
            )
            .unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-health-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_sound_database_passes_and_backfilled_edges_are_notes() {
        let dir = scratch("sound");
        let path = database(&dir);
        let health = examine(&path).unwrap();
        assert!(!health.failed(), "{health:?}");
        let stats = health.stats.as_ref().unwrap();
        assert_eq!((stats.rooms, stats.events, stats.backfilled), (1, 3, 1));
        assert!(
            health
                .findings
                .iter()
                .any(|finding| finding.severity == Severity::Note
                    && finding.text.contains("1 prev and 0 auth")),
            "{health:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_live_event_with_a_missing_prev_event_fails() {
        let dir = scratch("dangling");
        let path = database(&dir);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO events (stream_ordering, event_id, room_id, kind, sender, depth, origin_server_ts, json)
             VALUES (3, '$bad', '!r:x', 'm.room.message', '@a:x', 3, 0,
                     '{\"prev_events\": [[\"$gone\", {}]], \"auth_events\": [\"$create\"]}');",
        )
        .unwrap();
        drop(conn);
        let health = examine(&path).unwrap();
        assert!(health.failed(), "{health:?}");
        assert!(health.findings.iter().any(|finding| finding.text.contains("e.g. in $bad")), "{health:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
