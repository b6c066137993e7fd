//! Numbered, append-only schema migrations keyed on `PRAGMA user_version`.
//!
//! Never edit a released migration: add a new one at the end.

use rusqlite::Connection;

use super::OpenError;

/// Migration N (1-based) brings the schema from version N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: server secrets, accounts, devices, access tokens, registration tokens, UIA.
    r#"
    CREATE TABLE server_secrets (
        name        TEXT PRIMARY KEY,
        value       BLOB NOT NULL,
        created_ts  INTEGER NOT NULL
    );
    CREATE TABLE signing_keys (
        key_id      TEXT PRIMARY KEY,
        seed        BLOB NOT NULL,
        created_ts  INTEGER NOT NULL,
        expired_ts  INTEGER
    );
    CREATE TABLE users (
        user_id        TEXT PRIMARY KEY,
        localpart      TEXT NOT NULL UNIQUE,
        password_hash  TEXT,
        is_admin       INTEGER NOT NULL DEFAULT 0,
        deactivated    INTEGER NOT NULL DEFAULT 0,
        displayname    TEXT,
        avatar_url     TEXT,
        created_ts     INTEGER NOT NULL
    );
    CREATE TABLE devices (
        user_id       TEXT NOT NULL REFERENCES users(user_id),
        device_id     TEXT NOT NULL,
        display_name  TEXT,
        last_seen_ip  TEXT,
        last_seen_ts  INTEGER,
        created_ts    INTEGER NOT NULL,
        PRIMARY KEY (user_id, device_id)
    );
    CREATE TABLE access_tokens (
        token_hash  BLOB PRIMARY KEY,
        user_id     TEXT NOT NULL,
        device_id   TEXT NOT NULL,
        created_ts  INTEGER NOT NULL,
        FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
    );
    CREATE INDEX access_tokens_by_device ON access_tokens(user_id, device_id);
    CREATE TABLE registration_tokens (
        token         TEXT PRIMARY KEY,
        uses_allowed  INTEGER,
        completed     INTEGER NOT NULL DEFAULT 0,
        expires_ts    INTEGER,
        created_ts    INTEGER NOT NULL
    );
    CREATE TABLE uia_sessions (
        session     TEXT PRIMARY KEY,
        completed   TEXT NOT NULL,
        created_ts  INTEGER NOT NULL
    );
    "#,
    // 2: rooms, events (the DAG as signed PDUs), state groups, current state,
    // forward extremities, aliases, account data, receipts, filters.
    r#"
    CREATE TABLE rooms (
        room_id       TEXT PRIMARY KEY,
        room_version  TEXT NOT NULL,
        created_ts    INTEGER NOT NULL,
        visibility    TEXT NOT NULL DEFAULT 'private',
        state_group   INTEGER
    );
    CREATE TABLE events (
        stream_ordering   INTEGER PRIMARY KEY,
        event_id          TEXT NOT NULL UNIQUE,
        room_id           TEXT NOT NULL,
        kind              TEXT NOT NULL,
        state_key         TEXT,
        sender            TEXT NOT NULL,
        depth             INTEGER NOT NULL,
        origin_server_ts  INTEGER NOT NULL,
        json              TEXT NOT NULL,
        state_group       INTEGER,
        replaces_state    TEXT,
        redacted_by       TEXT,
        outlier           INTEGER NOT NULL DEFAULT 0,
        soft_failed       INTEGER NOT NULL DEFAULT 0,
        device_id         TEXT,
        txn_id            TEXT,
        rel_type          TEXT,
        relates_to        TEXT
    );
    CREATE INDEX events_by_room ON events(room_id, stream_ordering);
    CREATE INDEX events_by_relation ON events(relates_to, rel_type) WHERE relates_to IS NOT NULL;
    CREATE INDEX events_member_by_target ON events(state_key, stream_ordering)
        WHERE kind = 'm.room.member';
    CREATE UNIQUE INDEX events_by_transaction ON events(sender, device_id, txn_id)
        WHERE txn_id IS NOT NULL;
    CREATE TABLE state_groups (
        group_id      INTEGER PRIMARY KEY,
        room_id       TEXT NOT NULL,
        parent        INTEGER,
        chain_length  INTEGER NOT NULL
    );
    CREATE TABLE state_group_entries (
        group_id   INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        state_key  TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        PRIMARY KEY (group_id, kind, state_key)
    ) WITHOUT ROWID;
    CREATE TABLE current_state (
        room_id          TEXT NOT NULL,
        kind             TEXT NOT NULL,
        state_key        TEXT NOT NULL,
        event_id         TEXT NOT NULL,
        membership       TEXT,
        PRIMARY KEY (room_id, kind, state_key)
    ) WITHOUT ROWID;
    CREATE INDEX current_state_members ON current_state(state_key, membership)
        WHERE kind = 'm.room.member';
    CREATE TABLE forward_extremities (
        room_id   TEXT NOT NULL,
        event_id  TEXT NOT NULL,
        PRIMARY KEY (room_id, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE forgotten_rooms (
        user_id  TEXT NOT NULL,
        room_id  TEXT NOT NULL,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID;
    CREATE TABLE room_aliases (
        alias       TEXT PRIMARY KEY,
        room_id     TEXT NOT NULL,
        creator     TEXT NOT NULL,
        created_ts  INTEGER NOT NULL
    );
    CREATE INDEX room_aliases_by_room ON room_aliases(room_id);
    CREATE TABLE account_data (
        user_id    TEXT NOT NULL,
        room_id    TEXT NOT NULL DEFAULT '',
        kind       TEXT NOT NULL,
        content    TEXT NOT NULL,
        stream_id  INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id, kind)
    ) WITHOUT ROWID;
    CREATE INDEX account_data_by_stream ON account_data(user_id, stream_id);
    CREATE TABLE receipts (
        room_id       TEXT NOT NULL,
        user_id       TEXT NOT NULL,
        receipt_type  TEXT NOT NULL,
        thread_id     TEXT NOT NULL DEFAULT '',
        event_id      TEXT NOT NULL,
        ts            INTEGER NOT NULL,
        stream_id     INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
    ) WITHOUT ROWID;
    CREATE INDEX receipts_by_stream ON receipts(room_id, stream_id);
    CREATE TABLE filters (
        user_id    TEXT NOT NULL,
        filter_id  INTEGER NOT NULL,
        json       TEXT NOT NULL,
        PRIMARY KEY (user_id, filter_id)
    ) WITHOUT ROWID;
    "#,
    // 3: the federation outbox, destination backoff, inbound transaction IDs.
    super::federation::FEDERATION_QUEUE,
    // 4: full-text search over message bodies, room names and topics, and the
    // indexes behind /threads and /timestamp_to_event.
    super::search::SEARCH_SCHEMA,
    // 5: content reports (see DIRECTORY_REPORTS).
    DIRECTORY_REPORTS,
    // 6: remote servers' signing keys (see FEDERATION_KEY_CACHE).
    FEDERATION_KEY_CACHE,
    // 7: push rules and pushers (see PUSH_RULES_AND_PUSHERS).
    PUSH_RULES_AND_PUSHERS,
    // 8: end-to-end encryption keys, device-list changes, the to-device inbox.
    super::e2ee::E2EE_KEYS,
    // 9: the search index filled in batches (see SEARCH_IN_BATCHES).
    super::search::SEARCH_IN_BATCHES,
    // 10: media content and pending asynchronous uploads (see MEDIA).
    super::media::MEDIA,
    // 11: server-side key backups (see KEY_BACKUP).
    super::key_backup::KEY_BACKUP,
    // 12: the size of each to-device inbox (see TO_DEVICE_INBOX_TOTALS).
    super::e2ee::TO_DEVICE_INBOX_TOTALS,
    // 13: a device's pushers go with it (see PUSHERS_FOLLOW_DEVICES).
    super::push::PUSHERS_FOLLOW_DEVICES,
    // 14: media content in parts, uploads written as they arrive (see MEDIA_PARTS).
    super::media::MEDIA_PARTS,
    // 15: guest accounts (see GUEST_ACCOUNTS).
    super::accounts::GUEST_ACCOUNTS,
    // 16: notifications queued for push gateways (see PUSH_QUEUE).
    super::push::PUSH_QUEUE,
    // 17: unread notifications counted when events are stored (see UNREAD_COUNTS).
    super::unread::UNREAD_COUNTS,
    // 18: remote users' device lists, cached (see REMOTE_DEVICE_LISTS).
    super::remote_devices::REMOTE_DEVICE_LISTS,
    // 19: the link preview cache (see URL_PREVIEWS).
    super::url_previews::URL_PREVIEWS,
    // 20: where each application service's event stream stands (see APP_SERVICE_STREAMS).
    super::appservice::APP_SERVICE_STREAMS,
    // 21: unread marks keyed by room and user numbers (see UNREAD_MARKS).
    super::unread::UNREAD_MARKS,
    // 22: ACME accounts, the certificate obtained and its renewal (see ACME).
    super::acme::ACME,
    // 23: registrations added with `hearth appservice add`, and how each
    // service's last transactions went (see APP_SERVICE_REGISTRATIONS).
    super::appservice::APP_SERVICE_REGISTRATIONS,
    // 24: the history visibility events of each room (see HISTORY_VISIBILITY_EVENTS).
    super::batch::HISTORY_VISIBILITY_EVENTS,
    // 25: a room's members found by membership and server (see MEMBERS_BY_SERVER).
    super::members::MEMBERS_BY_SERVER,
    // 26: backfilled events indexed for search when stored, not by a trigger
    // (see BACKFILL_INDEXED_WHEN_STORED).
    super::search::BACKFILL_INDEXED_WHEN_STORED,
];

/// Migration 5: reports of events, rooms and users (`/report`).
const DIRECTORY_REPORTS: &str = r#"
    CREATE TABLE reports (
        report_id    INTEGER PRIMARY KEY,
        reporter     TEXT NOT NULL,
        room_id      TEXT,
        event_id     TEXT,
        target_user  TEXT,
        reason       TEXT,
        score        INTEGER,
        received_ts  INTEGER NOT NULL
    );
    CREATE INDEX reports_by_room ON reports(room_id) WHERE room_id IS NOT NULL;
"#;

/// Migration 6: remote servers' signing keys fetched over federation (`remote_server_keys`)
/// and each server's last signed key answer, kept verbatim for notary queries
/// (`remote_key_responses`).
const FEDERATION_KEY_CACHE: &str = r#"
    CREATE TABLE remote_server_keys (
        server_name     TEXT NOT NULL,
        key_id          TEXT NOT NULL,
        public_key      TEXT NOT NULL,
        valid_until_ts  INTEGER,
        expired_ts      INTEGER,
        fetched_ts      INTEGER NOT NULL,
        PRIMARY KEY (server_name, key_id)
    ) WITHOUT ROWID;
    CREATE TABLE remote_key_responses (
        server_name     TEXT PRIMARY KEY,
        response        TEXT NOT NULL,
        valid_until_ts  INTEGER NOT NULL,
        fetched_ts      INTEGER NOT NULL
    ) WITHOUT ROWID;
"#;

/// Migration 7: push rules: the user's own rules (`push_rules`, ordered by `priority`
/// within a kind, highest first) and their changes to server-default rules
/// (`push_rule_defaults`); pushers as clients set them.
const PUSH_RULES_AND_PUSHERS: &str = r#"
    CREATE TABLE push_rules (
        user_id     TEXT NOT NULL,
        kind        TEXT NOT NULL,
        rule_id     TEXT NOT NULL,
        priority    INTEGER NOT NULL,
        conditions  TEXT,
        pattern     TEXT,
        actions     TEXT NOT NULL,
        enabled     INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (user_id, kind, rule_id)
    ) WITHOUT ROWID;
    CREATE TABLE push_rule_defaults (
        user_id  TEXT NOT NULL,
        kind     TEXT NOT NULL,
        rule_id  TEXT NOT NULL,
        enabled  INTEGER,
        actions  TEXT,
        PRIMARY KEY (user_id, kind, rule_id)
    ) WITHOUT ROWID;
    CREATE TABLE pushers (
        user_id              TEXT NOT NULL,
        app_id               TEXT NOT NULL,
        pushkey              TEXT NOT NULL,
        kind                 TEXT NOT NULL,
        app_display_name     TEXT NOT NULL,
        device_display_name  TEXT NOT NULL,
        profile_tag          TEXT,
        lang                 TEXT NOT NULL,
        data                 TEXT NOT NULL,
        device_id            TEXT,
        created_ts           INTEGER NOT NULL,
        PRIMARY KEY (app_id, pushkey, user_id)
    );
    CREATE INDEX pushers_by_user ON pushers(user_id);
"#;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every migration the file lacks, all in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), OpenError> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew { found, known: SCHEMA_VERSION });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let transaction = conn.transaction()?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        transaction.execute_batch(sql)?;
        log::info!("database migrated to schema version {}", index + 1);
    }
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    transaction.commit()?;
    // The page cache now holds every page the migrations wrote (a fresh
    // file: a root page per table and index, ~0.5 MiB); requests read others.
    // https://www.sqlite.org/pragma.html#pragma_shrink_memory
    conn.execute_batch("PRAGMA shrink_memory")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_newer_schemas_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(migrate(&mut conn), Err(OpenError::TooNew { .. })));
    }

    #[test]
    fn the_search_migration_indexes_events_stored_before_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, kind, sender, depth, origin_server_ts, json)
             VALUES (1, '$old', '!r:x', 'm.room.message', '@a:x', 1, 0, '{\"content\": {\"body\": \"ancient scrolls\"}}')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let found: i64 = conn
            .query_row("SELECT rowid FROM event_search WHERE event_search MATCH 'scroll*'", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(found, 1);
    }

    #[test]
    fn the_members_by_server_migration_indexes_the_members_stored_before_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..24] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 24).unwrap();
        conn.execute_batch(
            "INSERT INTO current_state VALUES ('!r:x', 'm.room.member', '@a:b.example', '$1', 'join'),
                ('!r:x', 'm.room.member', '@b:a.example', '$2', 'join'),
                ('!r:x', 'm.room.member', '@c:c.example', '$3', 'leave'),
                ('!r:x', 'm.room.name', '', '$4', NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let storage = super::super::Storage { conn, transactions: Default::default() };
        assert_eq!(storage.servers_in_room("!r:x").unwrap(), ["a.example", "b.example"]);
        assert!(storage.server_in_room("!r:x", "b.example").unwrap());
        assert!(!storage.server_in_room("!r:x", "c.example").unwrap());
    }

    #[test]
    fn the_unread_marks_migration_keeps_what_was_unread() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..20] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 20).unwrap();
        conn.execute_batch(
            "INSERT INTO unread_events VALUES ('@a:x', '!r:x', 1, 'main', 0), ('@a:x', '!r:x', 2, '$t', 1),
                ('@b:x', '!r:x', 2, '$t', 0), ('@a:x', '!s:x', 3, 'main', 1);
             INSERT INTO unread_counts VALUES ('@a:x', '!r:x', 'main', 1, 0), ('@a:x', '!r:x', '$t', 1, 1),
                ('@b:x', '!r:x', '$t', 1, 0), ('@a:x', '!s:x', 'main', 1, 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let storage = super::super::Storage { conn, transactions: Default::default() };
        // The counters carried over, by thread.
        assert_eq!(storage.unread_total("@a:x").unwrap(), 3);
        let mut threads: Vec<_> = storage
            .unread_counts("@a:x", "!r:x")
            .unwrap()
            .into_iter()
            .map(|thread| (thread.thread_id, thread.notifications, thread.highlights))
            .collect();
        threads.sort();
        assert_eq!(threads, [("$t".to_owned(), 1, 1), ("main".to_owned(), 1, 0)]);
        // A receipt reads the rows carried over, in its room only.
        assert!(storage.read_unread_up_to("@a:x", "!r:x", None, 2).unwrap());
        assert!(storage.unread_counts("@a:x", "!r:x").unwrap().is_empty());
        assert_eq!(storage.unread_total("@a:x").unwrap(), 1);
        assert!(storage.read_unread_up_to("@b:x", "!r:x", Some("$t"), 2).unwrap());
        assert!(storage.read_unread_up_to("@a:x", "!s:x", None, 3).unwrap());
        assert_eq!(storage.unread_total("@a:x").unwrap() + storage.unread_total("@b:x").unwrap(), 0);
    }
}
