//! Server-side key backups: each user's backup versions (algorithm,
//! `auth_data`, an etag counter, a deleted mark) and the encrypted session
//! keys stored in them. Knows nothing of HTTP; which upload wins is the
//! protocol core's rule ([`key_backup::replaces`]).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-side-key-backups>.

use rusqlite::{OptionalExtension, params};

use super::Storage;
use crate::error::Result;
use crate::protocol::key_backup::{self, KeyBackupData, SessionRank};

/// Migration 11: key backup versions and their session keys.
///
/// `key_backup_versions` has one row per version a user ever created;
/// versions count up per user and are never reused, so a deleted version
/// keeps its row with `deleted = 1` (a second DELETE of it succeeds, as the
/// spec asks). `etag` counts the changes to the version's keys.
/// `key_backup_sessions` holds the keys of live versions, with the metadata
/// the replacement rule compares; `session_data` is the JSON as uploaded.
pub(super) const KEY_BACKUP: &str = r#"
    CREATE TABLE key_backup_versions (
        user_id     TEXT NOT NULL,
        version     INTEGER NOT NULL,
        algorithm   TEXT NOT NULL,
        auth_data   TEXT NOT NULL,
        etag        INTEGER NOT NULL DEFAULT 0,
        deleted     INTEGER NOT NULL DEFAULT 0,
        created_ts  INTEGER NOT NULL,
        PRIMARY KEY (user_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE key_backup_sessions (
        user_id              TEXT NOT NULL,
        version              INTEGER NOT NULL,
        room_id              TEXT NOT NULL,
        session_id           TEXT NOT NULL,
        first_message_index  INTEGER NOT NULL,
        forwarded_count      INTEGER NOT NULL,
        is_verified          INTEGER NOT NULL,
        session_data         TEXT NOT NULL,
        PRIMARY KEY (user_id, version, room_id, session_id)
    );
"#;

/// A live backup version with its key count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    /// The `auth_data` object as JSON text.
    pub auth_data: String,
    pub etag: i64,
    pub count: i64,
}

/// A stored session key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackedUpSession {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// The `session_data` object as JSON text.
    pub session_data: String,
}

/// Which keys of a version a read or delete covers.
#[derive(Clone, Copy, Debug)]
pub enum KeyScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

/// SQL condition for a [`KeyScope`]: `?3`/`?4` are the room and session,
/// NULL meaning "any".
const SCOPE_CONDITION: &str = "(?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)";

/// The room and session of a [`KeyScope`] as SQL parameters.
fn scope_params(scope: KeyScope<'_>) -> (Option<&str>, Option<&str>) {
    match scope {
        KeyScope::All => (None, None),
        KeyScope::Room(room_id) => (Some(room_id), None),
        KeyScope::Session(room_id, session_id) => (Some(room_id), Some(session_id)),
    }
}

impl Storage {
    /// Creates the user's next backup version; returns its number.
    pub fn create_key_backup_version(&self, user_id: &str, algorithm: &str, auth_data: &str) -> Result<i64> {
        let version: i64 = self.conn.query_row(
            "INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data, created_ts)
             VALUES (?1, (SELECT COALESCE(MAX(version), 0) + 1 FROM key_backup_versions WHERE user_id = ?1),
                     ?2, ?3, ?4)
             RETURNING version",
            params![user_id, algorithm, auth_data, super::now_ms()],
            |row| row.get(0),
        )?;
        Ok(version)
    }

    /// A live (not deleted) version, or the latest live one for `None`.
    pub fn key_backup_version(&self, user_id: &str, version: Option<i64>) -> Result<Option<BackupVersion>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                    (SELECT COUNT(*) FROM key_backup_sessions s
                     WHERE s.user_id = v.user_id AND s.version = v.version)
             FROM key_backup_versions v
             WHERE v.user_id = ?1 AND v.deleted = 0 AND (?2 IS NULL OR v.version = ?2)
             ORDER BY v.version DESC LIMIT 1",
        )?;
        let found = statement
            .query_row(params![user_id, version], |row| {
                Ok(BackupVersion {
                    version: row.get(0)?,
                    algorithm: row.get(1)?,
                    auth_data: row.get(2)?,
                    etag: row.get(3)?,
                    count: row.get(4)?,
                })
            })
            .optional()?;
        Ok(found)
    }

    /// Replaces a live version's `auth_data`; false if there is no such version.
    pub fn set_key_backup_auth_data(&self, user_id: &str, version: i64, auth_data: &str) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE key_backup_versions SET auth_data = ?3
             WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
            params![user_id, version, auth_data],
        )?;
        Ok(changed == 1)
    }

    /// Marks a version deleted and drops its keys; false if the user never
    /// had this version (deleting a deleted version again is true).
    pub fn delete_key_backup_version(&mut self, user_id: &str, version: i64) -> Result<bool> {
        let transaction = self.conn.savepoint()?;
        let existed = transaction.execute(
            "UPDATE key_backup_versions SET deleted = 1 WHERE user_id = ?1 AND version = ?2",
            params![user_id, version],
        )?;
        transaction.execute(
            "DELETE FROM key_backup_sessions WHERE user_id = ?1 AND version = ?2",
            params![user_id, version],
        )?;
        transaction.commit()?;
        Ok(existed == 1)
    }

    /// Stores uploaded keys into a version, each one only where the
    /// replacement rule lets it replace the stored key; bumps the version's
    /// etag when anything changed.
    pub fn put_backup_keys<'a>(
        &mut self,
        user_id: &str,
        version: i64,
        keys: impl IntoIterator<Item = (&'a str, &'a str, &'a KeyBackupData)>,
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        let mut changed = false;
        {
            let mut stored_rank = transaction.prepare_cached(
                "SELECT is_verified, first_message_index, forwarded_count FROM key_backup_sessions
                 WHERE user_id = ?1 AND version = ?2 AND room_id = ?3 AND session_id = ?4",
            )?;
            let mut upsert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO key_backup_sessions (user_id, version, room_id, session_id,
                     first_message_index, forwarded_count, is_verified, session_data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (room_id, session_id, data) in keys {
                let stored = stored_rank
                    .query_row(params![user_id, version, room_id, session_id], |row| {
                        Ok(SessionRank {
                            is_verified: row.get(0)?,
                            first_message_index: row.get::<_, i64>(1)? as u64,
                            forwarded_count: row.get::<_, i64>(2)? as u64,
                        })
                    })
                    .optional()?;
                if stored.is_some_and(|stored| !key_backup::replaces(stored, SessionRank::from(data))) {
                    continue;
                }
                let session_data = serde_json::Value::Object(data.session_data.clone()).to_string();
                upsert.execute(params![
                    user_id,
                    version,
                    room_id,
                    session_id,
                    data.first_message_index as i64,
                    data.forwarded_count as i64,
                    data.is_verified,
                    session_data,
                ])?;
                changed = true;
            }
        }
        if changed {
            bump_etag(&transaction, user_id, version)?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// The stored keys of a version within `scope`, by room and session.
    pub fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<Vec<BackedUpSession>> {
        let (room_id, session_id) = scope_params(scope);
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
             FROM key_backup_sessions WHERE user_id = ?1 AND version = ?2 AND {SCOPE_CONDITION}
             ORDER BY room_id, session_id"
        ))?;
        let rows = statement.query_map(params![user_id, version, room_id, session_id], |row| {
            Ok(BackedUpSession {
                room_id: row.get(0)?,
                session_id: row.get(1)?,
                first_message_index: row.get(2)?,
                forwarded_count: row.get(3)?,
                is_verified: row.get(4)?,
                session_data: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes the keys of a version within `scope`; bumps its etag when any
    /// were there.
    pub fn delete_backup_keys(&mut self, user_id: &str, version: i64, scope: KeyScope<'_>) -> Result<()> {
        let (room_id, session_id) = scope_params(scope);
        let transaction = self.conn.savepoint()?;
        let deleted = transaction.execute(
            &format!(
                "DELETE FROM key_backup_sessions WHERE user_id = ?1 AND version = ?2 AND {SCOPE_CONDITION}"
            ),
            params![user_id, version, room_id, session_id],
        )?;
        if 0 < deleted {
            bump_etag(&transaction, user_id, version)?;
        }
        transaction.commit()?;
        Ok(())
    }
}

/// Drops every backup of a deactivated account (as Synapse does): its
/// versions are marked deleted and their keys go. Runs inside the caller's
/// transaction.
pub(super) fn drop_user_backups(conn: &rusqlite::Connection, user_id: &str) -> Result<()> {
    conn.execute("UPDATE key_backup_versions SET deleted = 1 WHERE user_id = ?1", [user_id])?;
    conn.execute("DELETE FROM key_backup_sessions WHERE user_id = ?1", [user_id])?;
    Ok(())
}

/// Counts one more change to a version's keys.
fn bump_etag(conn: &rusqlite::Connection, user_id: &str, version: i64) -> Result<()> {
    conn.execute(
        "UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
        params![user_id, version],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(first_message_index: u64, ciphertext: &str) -> KeyBackupData {
        serde_json::from_value(json!({
            "first_message_index": first_message_index, "forwarded_count": 0, "is_verified": false,
            "session_data": {"ciphertext": ciphertext},
        }))
        .unwrap()
    }

    #[test]
    fn versions_count_up_per_user_and_a_deleted_one_is_not_reused() {
        let mut storage = super::super::in_memory();
        assert_eq!(storage.create_key_backup_version("@a:x", "alg", "{}").unwrap(), 1);
        assert_eq!(storage.create_key_backup_version("@b:x", "alg", "{}").unwrap(), 1);
        assert_eq!(storage.create_key_backup_version("@a:x", "alg", "{}").unwrap(), 2);
        assert!(storage.delete_key_backup_version("@a:x", 2).unwrap());
        assert!(storage.delete_key_backup_version("@a:x", 2).unwrap());
        assert!(!storage.delete_key_backup_version("@a:x", 3).unwrap());
        assert_eq!(storage.key_backup_version("@a:x", None).unwrap().unwrap().version, 1);
        assert!(storage.key_backup_version("@a:x", Some(2)).unwrap().is_none());
        assert_eq!(storage.create_key_backup_version("@a:x", "alg", "{}").unwrap(), 3);
    }

    #[test]
    fn the_etag_moves_only_when_keys_change() {
        let mut storage = super::super::in_memory();
        let version = storage.create_key_backup_version("@a:x", "alg", "{}").unwrap();
        let etag =
            |storage: &Storage| storage.key_backup_version("@a:x", Some(version)).unwrap().unwrap().etag;
        let first = data(3, "first");
        storage.put_backup_keys("@a:x", version, [("!r:x", "s", &first)]).unwrap();
        assert_eq!(etag(&storage), 1);
        let worse = data(4, "worse");
        storage.put_backup_keys("@a:x", version, [("!r:x", "s", &worse)]).unwrap();
        assert_eq!(etag(&storage), 1);
        let kept = storage.backup_keys("@a:x", version, KeyScope::All).unwrap();
        assert_eq!(kept[0].session_data, r#"{"ciphertext":"first"}"#);
        storage.delete_backup_keys("@a:x", version, KeyScope::Room("!other:x")).unwrap();
        assert_eq!(etag(&storage), 1);
        storage.delete_backup_keys("@a:x", version, KeyScope::Session("!r:x", "s")).unwrap();
        assert_eq!(etag(&storage), 2);
        assert_eq!(storage.key_backup_version("@a:x", Some(version)).unwrap().unwrap().count, 0);
    }

    #[test]
    fn deactivation_drops_every_backup() {
        let mut storage = super::super::in_memory();
        storage.create_user("@a:x", "a", Some("hash"), false, None).unwrap();
        let version = storage.create_key_backup_version("@a:x", "alg", "{}").unwrap();
        let key = data(0, "c");
        storage.put_backup_keys("@a:x", version, [("!r:x", "s", &key)]).unwrap();
        assert!(storage.deactivate_user("@a:x").unwrap());
        assert!(storage.key_backup_version("@a:x", None).unwrap().is_none());
        assert!(storage.backup_keys("@a:x", version, KeyScope::All).unwrap().is_empty());
    }
}
