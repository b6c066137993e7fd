//! End-to-end encryption tables: device keys, one-time and fallback keys,
//! cross-signing keys and signatures, the device-list change stream and the
//! to-device inbox. The server only stores and relays keys; it never sees a
//! private key and never decrypts.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption>.

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

/// The migration that creates these tables. Keys, inbox rows and one-time
/// keys belong to a device and go with it (`ON DELETE CASCADE`).
pub const E2EE_KEYS: &str = r#"
    CREATE TABLE device_keys (
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        json       TEXT NOT NULL,
        PRIMARY KEY (user_id, device_id),
        FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE one_time_keys (
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        algorithm  TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        json       TEXT NOT NULL,
        PRIMARY KEY (user_id, device_id, key_id),
        FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE fallback_keys (
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        algorithm  TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        json       TEXT NOT NULL,
        used       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, device_id, algorithm),
        FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE cross_signing_keys (
        user_id  TEXT NOT NULL,
        usage    TEXT NOT NULL,
        json     TEXT NOT NULL,
        PRIMARY KEY (user_id, usage)
    ) WITHOUT ROWID;
    CREATE TABLE key_signatures (
        target_user_id  TEXT NOT NULL,
        target_key_id   TEXT NOT NULL,
        signer_user_id  TEXT NOT NULL,
        signing_key_id  TEXT NOT NULL,
        signature       TEXT NOT NULL,
        PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signing_key_id)
    ) WITHOUT ROWID;
    CREATE TABLE device_list_changes (
        stream_id  INTEGER PRIMARY KEY,
        user_id    TEXT NOT NULL
    );
    CREATE INDEX device_list_changes_by_user ON device_list_changes(user_id, stream_id);
    CREATE TABLE to_device_inbox (
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        stream_id  INTEGER NOT NULL,
        sender     TEXT NOT NULL,
        kind       TEXT NOT NULL,
        content    TEXT NOT NULL,
        PRIMARY KEY (user_id, device_id, stream_id),
        FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE to_device_transactions (
        scope       TEXT NOT NULL,
        txn_id      TEXT NOT NULL,
        created_ts  INTEGER NOT NULL,
        PRIMARY KEY (scope, txn_id)
    ) WITHOUT ROWID;
    CREATE TABLE to_device_high_water (
        id         INTEGER PRIMARY KEY CHECK (id = 0),
        stream_id  INTEGER NOT NULL
    );
"#;

/// The migration that keeps the size of each device's to-device inbox, so
/// that its bound is checked in one read whatever the inbox holds
/// (`bytes` counts the contents' UTF-8 bytes). It goes with its device.
pub const TO_DEVICE_INBOX_TOTALS: &str = r#"
    CREATE TABLE to_device_inbox_totals (
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        messages   INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,
        PRIMARY KEY (user_id, device_id),
        FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    INSERT INTO to_device_inbox_totals (user_id, device_id, messages, bytes)
        SELECT user_id, device_id, COUNT(*), SUM(octet_length(content)) FROM to_device_inbox
        GROUP BY user_id, device_id;
"#;

/// `(device_id, display_name, keys_json)` of one device.
pub type DeviceWithKeys = (String, Option<String>, Option<String>);

/// A message waiting in a device's to-device inbox.
#[derive(Clone, Debug)]
pub struct ToDeviceMessage {
    pub stream_id: i64,
    pub sender: String,
    pub kind: String,
    pub content: String,
}

impl ToDeviceMessage {
    /// What a message adds to a sync answer besides its sender, type and
    /// content: `{"sender":"","type":"","content":}` and a comma.
    pub const FRAME_BYTES: usize = 40;
}

/// How much a device's to-device inbox holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxSize {
    pub messages: i64,
    /// UTF-8 bytes of the contents.
    pub bytes: i64,
}

/// At most how much one read of an inbox returns (a page of a sync answer).
#[derive(Clone, Copy, Debug)]
pub struct InboxPage {
    pub max_messages: usize,
    /// Messages are added while their text (sender, type, content and
    /// [`ToDeviceMessage::FRAME_BYTES`]) stays within this, and the first one
    /// always is (so a page is never empty while messages wait).
    pub max_bytes: usize,
}

impl Storage {
    /// Stores (replacing) a device's identity keys. False if the device does not exist.
    pub fn set_device_keys(&self, user_id: &str, device_id: &str, json: &str) -> Result<bool> {
        let changed = self.conn.execute(
            "INSERT INTO device_keys (user_id, device_id, json)
             SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2)
             ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json",
            params![user_id, device_id, json],
        )?;
        Ok(changed == 1)
    }

    /// One device's identity keys.
    pub fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>> {
        let mut statement =
            self.conn.prepare_cached("SELECT json FROM device_keys WHERE user_id = ?1 AND device_id = ?2")?;
        Ok(statement.query_row(params![user_id, device_id], |row| row.get(0)).optional()?)
    }

    /// Every device of a user with its display name and keys (if uploaded):
    /// `(device_id, display_name, keys_json)`.
    pub fn devices_with_keys(&self, user_id: &str) -> Result<Vec<DeviceWithKeys>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT d.device_id, d.display_name, k.json FROM devices d
             LEFT JOIN device_keys k ON k.user_id = d.user_id AND k.device_id = d.device_id
             WHERE d.user_id = ?1 ORDER BY d.device_id",
        )?;
        let rows = statement.query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds one-time keys (a key ID already stored keeps its first value, as
    /// the spec forbids changing an uploaded key).
    pub fn add_one_time_keys(
        &mut self,
        user_id: &str,
        device_id: &str,
        keys: &[(String, String)],
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        {
            let mut statement = transaction.prepare_cached(
                "INSERT OR IGNORE INTO one_time_keys (user_id, device_id, algorithm, key_id, json)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (key_id, json) in keys {
                let algorithm = key_id.split_once(':').map_or(key_id.as_str(), |(algorithm, _)| algorithm);
                statement.execute(params![user_id, device_id, algorithm, key_id, json])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// How many unclaimed one-time keys a device has, per algorithm.
    pub fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2
             GROUP BY algorithm ORDER BY algorithm",
        )?;
        let rows = statement.query_map(params![user_id, device_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Claims (removes and returns) one one-time key of `algorithm`, or else
    /// the device's fallback key of that algorithm, which stays but is marked
    /// used. Returns `(key_id, json)`.
    pub fn claim_key(
        &mut self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        let transaction = self.conn.savepoint()?;
        let one_time: Option<(String, String)> = transaction
            .query_row(
                "SELECT key_id, json FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
                 ORDER BY key_id LIMIT 1",
                params![user_id, device_id, algorithm],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let claimed = match one_time {
            Some((key_id, json)) => {
                transaction.execute(
                    "DELETE FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND key_id = ?3",
                    params![user_id, device_id, key_id],
                )?;
                Some((key_id, json))
            }
            None => {
                let fallback: Option<(String, String)> = transaction
                    .query_row(
                        "SELECT key_id, json FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2
                         AND algorithm = ?3",
                        params![user_id, device_id, algorithm],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?;
                if fallback.is_some() {
                    transaction.execute(
                        "UPDATE fallback_keys SET used = 1 WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
                        params![user_id, device_id, algorithm],
                    )?;
                }
                fallback
            }
        };
        transaction.commit()?;
        Ok(claimed)
    }

    /// Sets a device's fallback key for one algorithm. Uploading the same key
    /// again keeps its `used` mark; a new key starts unused.
    pub fn set_fallback_key(&self, user_id: &str, device_id: &str, key_id: &str, json: &str) -> Result<()> {
        let algorithm = key_id.split_once(':').map_or(key_id, |(algorithm, _)| algorithm);
        self.conn.execute(
            "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
                used = CASE WHEN key_id = excluded.key_id AND json = excluded.json THEN used ELSE 0 END,
                key_id = excluded.key_id, json = excluded.json",
            params![user_id, device_id, algorithm, key_id, json],
        )?;
        Ok(())
    }

    /// The algorithms for which a device has an unused fallback key.
    pub fn unused_fallback_key_types(&self, user_id: &str, device_id: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT algorithm FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2 AND used = 0
             ORDER BY algorithm",
        )?;
        let rows = statement.query_map(params![user_id, device_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores (replacing) a user's cross-signing key of one usage
    /// (`master`, `self_signing`, `user_signing`).
    pub fn set_cross_signing_key(&self, user_id: &str, usage: &str, json: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO cross_signing_keys (user_id, usage, json) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, usage) DO UPDATE SET json = excluded.json",
            params![user_id, usage, json],
        )?;
        Ok(())
    }

    /// A user's cross-signing key of one usage.
    pub fn cross_signing_key(&self, user_id: &str, usage: &str) -> Result<Option<String>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT json FROM cross_signing_keys WHERE user_id = ?1 AND usage = ?2")?;
        Ok(statement.query_row(params![user_id, usage], |row| row.get(0)).optional()?)
    }

    /// Stores a signature made by `signer_user_id` with `signing_key_id` over
    /// the key `target_key_id` (a device ID or a cross-signing public key) of
    /// `target_user_id`.
    pub fn add_key_signature(
        &self,
        target_user_id: &str,
        target_key_id: &str,
        signer_user_id: &str,
        signing_key_id: &str,
        signature: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signing_key_id, signature)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (target_user_id, target_key_id, signer_user_id, signing_key_id)
             DO UPDATE SET signature = excluded.signature",
            params![target_user_id, target_key_id, signer_user_id, signing_key_id, signature],
        )?;
        Ok(())
    }

    /// Signatures over one key of a user: `(signer_user_id, signing_key_id, signature)`.
    pub fn key_signatures(
        &self,
        target_user_id: &str,
        target_key_id: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT signer_user_id, signing_key_id, signature FROM key_signatures
             WHERE target_user_id = ?1 AND target_key_id = ?2 ORDER BY signer_user_id, signing_key_id",
        )?;
        let rows = statement.query_map(params![target_user_id, target_key_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the signatures over a deleted device's keys.
    pub fn delete_key_signatures(&self, target_user_id: &str, target_key_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM key_signatures WHERE target_user_id = ?1 AND target_key_id = ?2",
            params![target_user_id, target_key_id],
        )?;
        Ok(())
    }

    /// Records that a user's devices (`device_update`) or else their
    /// cross-signing keys or signatures changed at `stream_id`.
    pub fn record_device_list_change(
        &self,
        user_id: &str,
        stream_id: i64,
        device_update: bool,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO device_list_changes (stream_id, user_id, device_update) VALUES (?1, ?2, ?3)",
            params![stream_id, user_id, device_update],
        )?;
        Ok(())
    }

    /// The latest device update of a user before `before`, if any (the
    /// `prev_id` of the next `m.device_list_update`).
    pub fn previous_device_update(&self, user_id: &str, before: i64) -> Result<Option<i64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT MAX(stream_id) FROM device_list_changes
             WHERE user_id = ?1 AND stream_id < ?2 AND device_update = 1",
        )?;
        Ok(statement.query_row(params![user_id, before], |row| row.get(0))?)
    }

    /// Users whose device lists changed in `(after, up_to]` and who share a
    /// joined room with `user_id` now (or are `user_id`).
    pub fn device_list_changes_visible_to(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT c.user_id FROM device_list_changes c
             WHERE c.stream_id > ?2 AND c.stream_id <= ?3 AND (c.user_id = ?1 OR EXISTS (
                SELECT 1 FROM current_state theirs JOIN current_state ours ON ours.room_id = theirs.room_id
                WHERE theirs.kind = 'm.room.member' AND theirs.state_key = c.user_id
                  AND theirs.membership = 'join'
                  AND ours.kind = 'm.room.member' AND ours.state_key = ?1 AND ours.membership = 'join'))
             ORDER BY c.user_id",
        )?;
        let rows = statement.query_map(params![user_id, after, up_to], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Membership events in `(after, up_to]` of the rooms `user_id` has ever
    /// been in: `(room_id, target user, membership)`, oldest first.
    pub fn member_events_in_rooms_of(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT e.room_id, e.state_key, json_extract(e.json, '$.content.membership') FROM events e
             WHERE e.kind = 'm.room.member' AND e.stream_ordering > ?2 AND e.stream_ordering <= ?3
               AND e.outlier = 0
               AND e.room_id IN (SELECT room_id FROM current_state WHERE kind = 'm.room.member'
                                 AND state_key = ?1)
             ORDER BY e.stream_ordering",
        )?;
        let rows = statement.query_map(params![user_id, after, up_to], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, Option<String>>(2)?.unwrap_or_default()))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether two users share a room where both are joined now.
    pub fn share_a_room(&self, user_id: &str, other: &str) -> Result<bool> {
        let mut statement = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM current_state a JOIN current_state b ON a.room_id = b.room_id
             WHERE a.kind = 'm.room.member' AND a.state_key = ?1 AND a.membership = 'join'
               AND b.kind = 'm.room.member' AND b.state_key = ?2 AND b.membership = 'join')",
        )?;
        Ok(statement.query_row(params![user_id, other], |row| row.get(0))?)
    }

    /// Everyone joined to a room that `user_id` is joined to (including `user_id`).
    pub fn users_sharing_rooms_with(&self, user_id: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT theirs.state_key FROM current_state theirs
             JOIN current_state ours ON ours.room_id = theirs.room_id
             WHERE theirs.kind = 'm.room.member' AND theirs.membership = 'join'
               AND ours.kind = 'm.room.member' AND ours.state_key = ?1 AND ours.membership = 'join'
             ORDER BY theirs.state_key",
        )?;
        let rows = statement.query_map([user_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts a message into a device's to-device inbox at `stream_id`. False
    /// (and nothing stored) if the device does not exist.
    pub fn push_to_device(
        &mut self,
        user_id: &str,
        device_id: &str,
        stream_id: i64,
        sender: &str,
        kind: &str,
        content: &str,
    ) -> Result<bool> {
        let transaction = self.conn.savepoint()?;
        let stored = transaction.execute(
            "INSERT INTO to_device_inbox (user_id, device_id, stream_id, sender, kind, content)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2)",
            params![user_id, device_id, stream_id, sender, kind, content],
        )? == 1;
        if stored {
            transaction.execute(
                "INSERT INTO to_device_inbox_totals (user_id, device_id, messages, bytes) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET
                    messages = messages + 1, bytes = bytes + excluded.bytes",
                params![user_id, device_id, content.len() as i64],
            )?;
            // Acknowledged messages are deleted, so the stream position must be
            // remembered elsewhere for the counter to survive a restart.
            transaction.execute(
                "INSERT INTO to_device_high_water (id, stream_id) VALUES (0, ?1)
                 ON CONFLICT (id) DO UPDATE SET stream_id = MAX(stream_id, excluded.stream_id)",
                [stream_id],
            )?;
        }
        transaction.commit()?;
        Ok(stored)
    }

    /// How much a device's inbox holds.
    pub fn to_device_inbox_size(&self, user_id: &str, device_id: &str) -> Result<InboxSize> {
        let mut statement = self.conn.prepare_cached(
            "SELECT messages, bytes FROM to_device_inbox_totals WHERE user_id = ?1 AND device_id = ?2",
        )?;
        let size = statement
            .query_row(params![user_id, device_id], |row| {
                Ok(InboxSize { messages: row.get(0)?, bytes: row.get(1)? })
            })
            .optional()?;
        Ok(size.unwrap_or_default())
    }

    /// The first page of a device's inbox in `(after, up_to]`, oldest first,
    /// and whether messages of the window were left for the next page. Rows
    /// are read one at a time, a message's size is read before its content,
    /// and the read stops at the page's bound: no more than a page is loaded.
    pub fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        up_to: i64,
        page: InboxPage,
    ) -> Result<(Vec<ToDeviceMessage>, bool)> {
        // `octet_length` reads the length from the record header, so a
        // message left out is never loaded.
        let mut statement = self.conn.prepare_cached(
            "SELECT stream_id, octet_length(sender) + octet_length(kind) + octet_length(content),
                    sender, kind, content
             FROM to_device_inbox
             WHERE user_id = ?1 AND device_id = ?2 AND stream_id > ?3 AND stream_id <= ?4
             ORDER BY stream_id",
        )?;
        let mut rows = statement.query(params![user_id, device_id, after, up_to])?;
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            let text_bytes: i64 = row.get(1)?;
            bytes = bytes
                .saturating_add(usize::try_from(text_bytes).unwrap_or(usize::MAX))
                .saturating_add(ToDeviceMessage::FRAME_BYTES);
            let fits = messages.len() < page.max_messages && bytes <= page.max_bytes;
            if !fits && !messages.is_empty() {
                return Ok((messages, true));
            }
            messages.push(ToDeviceMessage {
                stream_id: row.get(0)?,
                sender: row.get(2)?,
                kind: row.get(3)?,
                content: row.get(4)?,
            });
        }
        Ok((messages, false))
    }

    /// Deletes the messages a device acknowledged (everything up to `up_to`).
    pub fn acknowledge_to_device(&mut self, user_id: &str, device_id: &str, up_to: i64) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        // `octet_length` reads the length from the record header: the
        // contents themselves are not loaded.
        let (messages, bytes): (i64, i64) = transaction.query_row(
            "SELECT COUNT(*), COALESCE(SUM(octet_length(content)), 0) FROM to_device_inbox
             WHERE user_id = ?1 AND device_id = ?2 AND stream_id <= ?3",
            params![user_id, device_id, up_to],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if messages > 0 {
            transaction.execute(
                "DELETE FROM to_device_inbox WHERE user_id = ?1 AND device_id = ?2 AND stream_id <= ?3",
                params![user_id, device_id, up_to],
            )?;
            transaction.execute(
                "UPDATE to_device_inbox_totals SET messages = MAX(messages - ?3, 0), bytes = MAX(bytes - ?4, 0)
                 WHERE user_id = ?1 AND device_id = ?2",
                params![user_id, device_id, messages, bytes],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Records a to-device transaction ID in `scope` (a sending device, or a
    /// remote server's message IDs). False if it was seen before.
    pub fn record_to_device_transaction(&self, scope: &str, txn_id: &str) -> Result<bool> {
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO to_device_transactions (scope, txn_id, created_ts) VALUES (?1, ?2, ?3)",
            params![scope, txn_id, now_ms()],
        )?;
        Ok(inserted == 1)
    }

    /// The highest stream position used by these tables (for the counter at start-up).
    pub fn max_e2ee_stream_id(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT MAX((SELECT COALESCE(MAX(stream_id), 0) FROM device_list_changes),
                        (SELECT COALESCE(MAX(stream_id), 0) FROM to_device_high_water))",
            [],
            |row| row.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_device() -> super::Storage {
        let mut storage = super::super::in_memory();
        storage.create_user("@a:x", "a", None, false, None).unwrap();
        storage.login_device("@a:x", "DEV", None, b"h", None).unwrap();
        storage
    }

    #[test]
    fn one_time_keys_are_claimed_once_then_the_fallback_key_is_reused() {
        let mut storage = with_device();
        let keys = vec![("signed_curve25519:AAA".to_string(), "{\"key\":\"1\"}".to_string())];
        storage.add_one_time_keys("@a:x", "DEV", &keys).unwrap();
        storage.set_fallback_key("@a:x", "DEV", "signed_curve25519:FB", "{\"key\":\"f\"}").unwrap();
        assert_eq!(
            storage.one_time_key_counts("@a:x", "DEV").unwrap(),
            vec![("signed_curve25519".into(), 1)]
        );
        let first = storage.claim_key("@a:x", "DEV", "signed_curve25519").unwrap().unwrap();
        assert_eq!(first.0, "signed_curve25519:AAA");
        assert_eq!(storage.unused_fallback_key_types("@a:x", "DEV").unwrap(), vec!["signed_curve25519"]);
        let second = storage.claim_key("@a:x", "DEV", "signed_curve25519").unwrap().unwrap();
        assert_eq!(second.0, "signed_curve25519:FB");
        assert!(storage.unused_fallback_key_types("@a:x", "DEV").unwrap().is_empty());
        // The same fallback key uploaded again stays used; a new one is fresh.
        storage.set_fallback_key("@a:x", "DEV", "signed_curve25519:FB", "{\"key\":\"f\"}").unwrap();
        assert!(storage.unused_fallback_key_types("@a:x", "DEV").unwrap().is_empty());
        storage.set_fallback_key("@a:x", "DEV", "signed_curve25519:FC", "{\"key\":\"g\"}").unwrap();
        assert_eq!(storage.unused_fallback_key_types("@a:x", "DEV").unwrap(), vec!["signed_curve25519"]);
        assert!(storage.claim_key("@a:x", "DEV", "curve25519").unwrap().is_none());
    }

    #[test]
    fn deleting_a_device_drops_its_keys_and_inbox() {
        let mut storage = with_device();
        assert!(storage.set_device_keys("@a:x", "DEV", "{}").unwrap());
        assert!(!storage.set_device_keys("@a:x", "NOPE", "{}").unwrap());
        let keys = vec![("signed_curve25519:AAA".to_string(), "{}".to_string())];
        storage.add_one_time_keys("@a:x", "DEV", &keys).unwrap();
        assert!(storage.push_to_device("@a:x", "DEV", 5, "@b:x", "m.test", "{}").unwrap());
        assert!(storage.delete_device("@a:x", "DEV").unwrap());
        assert!(storage.device_keys("@a:x", "DEV").unwrap().is_none());
        assert!(storage.one_time_key_counts("@a:x", "DEV").unwrap().is_empty());
        // The stream position outlives the deleted message.
        assert_eq!(storage.max_e2ee_stream_id().unwrap(), 5);
        // A device created again with the same ID starts with an empty inbox.
        storage.login_device("@a:x", "DEV", None, b"h2", None).unwrap();
        assert!(storage.to_device_messages("@a:x", "DEV", 0, 10, PAGE).unwrap().0.is_empty());
        assert_eq!(storage.to_device_inbox_size("@a:x", "DEV").unwrap(), InboxSize::default());
    }

    const PAGE: InboxPage = InboxPage { max_messages: 100, max_bytes: 1 << 20 };

    fn stream_ids(messages: &[ToDeviceMessage]) -> Vec<i64> {
        messages.iter().map(|message| message.stream_id).collect()
    }

    #[test]
    fn messages_for_devices_that_do_not_exist_are_not_stored() {
        let mut storage = with_device();
        assert!(!storage.push_to_device("@a:x", "GHOST", 3, "@b:x", "m.test", "{}").unwrap());
        assert!(!storage.push_to_device("@nobody:x", "DEV", 4, "@b:x", "m.test", "{}").unwrap());
        storage.login_device("@a:x", "GHOST", None, b"h2", None).unwrap();
        assert!(storage.to_device_messages("@a:x", "GHOST", 0, 10, PAGE).unwrap().0.is_empty());
        assert_eq!(storage.to_device_inbox_size("@a:x", "GHOST").unwrap(), InboxSize::default());
        assert_eq!(storage.max_e2ee_stream_id().unwrap(), 0);
    }

    #[test]
    fn the_inbox_is_read_in_pages_bounded_in_count_and_bytes() {
        let mut storage = with_device();
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
        for stream_id in 1..=10 {
            storage.push_to_device("@a:x", "DEV", stream_id, "@b:x", "m.test", &big).unwrap();
        }
        let size = storage.to_device_inbox_size("@a:x", "DEV").unwrap();
        assert_eq!(size, InboxSize { messages: 10, bytes: 10 * big.len() as i64 });

        // By count: 4, then 4, then the last 2 and nothing left.
        let by_count = InboxPage { max_messages: 4, max_bytes: 1 << 20 };
        let (page, more) = storage.to_device_messages("@a:x", "DEV", 0, 10, by_count).unwrap();
        assert_eq!((stream_ids(&page), more), (vec![1, 2, 3, 4], true));
        let (page, more) = storage.to_device_messages("@a:x", "DEV", 8, 10, by_count).unwrap();
        assert_eq!((stream_ids(&page), more), (vec![9, 10], false));
        // The window's end bounds the page too.
        let (page, more) = storage.to_device_messages("@a:x", "DEV", 0, 2, by_count).unwrap();
        assert_eq!((stream_ids(&page), more), (vec![1, 2], false));

        // By bytes: three messages fit in 3.5 of them.
        let one = big.len() + "@b:x".len() + "m.test".len() + ToDeviceMessage::FRAME_BYTES;
        let by_bytes = InboxPage { max_messages: 100, max_bytes: one * 7 / 2 };
        let (page, more) = storage.to_device_messages("@a:x", "DEV", 0, 10, by_bytes).unwrap();
        assert_eq!((stream_ids(&page), more), (vec![1, 2, 3], true));
        assert_eq!(page[0].content, big);
        // A message larger than a page still goes, alone.
        let tiny = InboxPage { max_messages: 100, max_bytes: 10 };
        let (page, more) = storage.to_device_messages("@a:x", "DEV", 3, 10, tiny).unwrap();
        assert_eq!((stream_ids(&page), more), (vec![4], true));

        // Acknowledging deletes up to the position and keeps the size right.
        storage.acknowledge_to_device("@a:x", "DEV", 4).unwrap();
        let size = storage.to_device_inbox_size("@a:x", "DEV").unwrap();
        assert_eq!(size, InboxSize { messages: 6, bytes: 6 * big.len() as i64 });
        let (page, _) = storage.to_device_messages("@a:x", "DEV", 0, 10, PAGE).unwrap();
        assert_eq!(stream_ids(&page), vec![5, 6, 7, 8, 9, 10]);
        storage.acknowledge_to_device("@a:x", "DEV", 4).unwrap();
        storage.acknowledge_to_device("@a:x", "DEV", 10).unwrap();
        assert_eq!(storage.to_device_inbox_size("@a:x", "DEV").unwrap(), InboxSize::default());
    }

    #[test]
    fn the_totals_migration_counts_messages_stored_before_it() {
        let mut storage = with_device();
        storage.push_to_device("@a:x", "DEV", 1, "@b:x", "m.test", "{\"é\":1}").unwrap();
        storage.push_to_device("@a:x", "DEV", 2, "@b:x", "m.test", "{}").unwrap();
        storage.conn.execute_batch("DROP TABLE to_device_inbox_totals").unwrap();
        storage.conn.execute_batch(TO_DEVICE_INBOX_TOTALS).unwrap();
        let size = storage.to_device_inbox_size("@a:x", "DEV").unwrap();
        assert_eq!(size, InboxSize { messages: 2, bytes: 8 + 2 });
    }

    #[test]
    fn to_device_transactions_are_seen_once() {
        let storage = with_device();
        assert!(storage.record_to_device_transaction("@a:x|DEV", "t1").unwrap());
        assert!(!storage.record_to_device_transaction("@a:x|DEV", "t1").unwrap());
        assert!(storage.record_to_device_transaction("@a:x|OTHER", "t1").unwrap());
    }
}
