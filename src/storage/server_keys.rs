//! Other servers' signing keys as fetched from them (or a notary): the
//! individual keys with their validity, and the last signed answer per
//! server, kept verbatim so that a notary query can pass it on.

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

/// One remote verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteKey {
    /// `ed25519:version`.
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    /// For a current key (`verify_keys`): until when it may be used.
    pub valid_until_ts: Option<i64>,
    /// For an old key (`old_verify_keys`): when it stopped being used.
    pub expired_ts: Option<i64>,
}

impl Storage {
    /// Stores a server's verified key answer and the keys in it. Keys the
    /// answer does not mention are kept: old signatures still need them.
    pub fn store_server_keys(
        &mut self,
        server_name: &str,
        response: &str,
        valid_until_ts: i64,
        keys: &[RemoteKey],
    ) -> Result<()> {
        let now = now_ms();
        let transaction = self.conn.savepoint()?;
        transaction.execute(
            "INSERT INTO remote_key_responses (server_name, response, valid_until_ts, fetched_ts)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (server_name) DO UPDATE SET
                 response = excluded.response, valid_until_ts = excluded.valid_until_ts,
                 fetched_ts = excluded.fetched_ts",
            params![server_name, response, valid_until_ts, now],
        )?;
        for key in keys {
            transaction.execute(
                "INSERT INTO remote_server_keys
                     (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (server_name, key_id) DO UPDATE SET
                     public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts,
                     expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts",
                params![server_name, key.key_id, key.public_key, key.valid_until_ts, key.expired_ts, now],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// A cached key of `server_name`.
    pub fn remote_server_key(&self, server_name: &str, key_id: &str) -> Result<Option<RemoteKey>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT key_id, public_key, valid_until_ts, expired_ts FROM remote_server_keys
             WHERE server_name = ?1 AND key_id = ?2",
        )?;
        let key = statement
            .query_row([server_name, key_id], |row| {
                Ok(RemoteKey {
                    key_id: row.get(0)?,
                    public_key: row.get(1)?,
                    valid_until_ts: row.get(2)?,
                    expired_ts: row.get(3)?,
                })
            })
            .optional()?;
        Ok(key)
    }

    /// The last key answer of `server_name` as received, and its `valid_until_ts`.
    pub fn remote_key_response(&self, server_name: &str) -> Result<Option<(String, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT response, valid_until_ts FROM remote_key_responses WHERE server_name = ?1",
        )?;
        Ok(statement.query_row([server_name], |row| Ok((row.get(0)?, row.get(1)?))).optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key_id: &str, valid_until_ts: Option<i64>, expired_ts: Option<i64>) -> RemoteKey {
        RemoteKey { key_id: key_id.into(), public_key: format!("pk-{key_id}"), valid_until_ts, expired_ts }
    }

    #[test]
    fn keys_are_stored_updated_and_kept() {
        let mut storage = crate::storage::in_memory();
        assert_eq!(storage.remote_server_key("a.example", "ed25519:1").unwrap(), None);
        storage
            .store_server_keys("a.example", "{\"first\":1}", 100, &[key("ed25519:1", Some(100), None)])
            .unwrap();
        storage
            .store_server_keys(
                "a.example",
                "{\"second\":1}",
                200,
                &[key("ed25519:2", Some(200), None), key("ed25519:1", None, Some(150))],
            )
            .unwrap();
        storage.store_server_keys("b.example", "{}", 50, &[key("ed25519:9", Some(50), None)]).unwrap();
        assert_eq!(
            storage.remote_server_key("a.example", "ed25519:1").unwrap(),
            Some(key("ed25519:1", None, Some(150)))
        );
        assert_eq!(
            storage.remote_server_key("a.example", "ed25519:2").unwrap(),
            Some(key("ed25519:2", Some(200), None))
        );
        assert_eq!(storage.remote_server_key("a.example", "ed25519:9").unwrap(), None);
        assert_eq!(storage.remote_key_response("a.example").unwrap(), Some(("{\"second\":1}".into(), 200)));
        assert_eq!(storage.remote_key_response("c.example").unwrap(), None);
    }
}
