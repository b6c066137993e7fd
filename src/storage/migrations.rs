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
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every migration the file lacks, all in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), OpenError> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            found,
            known: SCHEMA_VERSION,
        });
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
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(OpenError::TooNew { .. })));
    }
}
