//! Server secrets: the ed25519 signing keys and the self-signed TLS certificate.

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

impl Storage {
    /// A named secret blob, if stored.
    pub fn secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let mut statement = self.conn.prepare_cached("SELECT value FROM server_secrets WHERE name = ?1")?;
        Ok(statement.query_row([name], |row| row.get(0)).optional()?)
    }

    /// Stores a named secret unless one exists; returns the stored value.
    pub fn secret_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.conn.execute(
            "INSERT OR IGNORE INTO server_secrets (name, value, created_ts) VALUES (?1, ?2, ?3)",
            params![name, value, now_ms()],
        )?;
        Ok(self.secret(name)?.unwrap_or_default())
    }

    /// The current signing key `(key_id, seed)`, if one was made.
    pub fn current_signing_key(&self) -> Result<Option<(String, Vec<u8>)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT key_id, seed FROM signing_keys WHERE expired_ts IS NULL
             ORDER BY created_ts DESC LIMIT 1",
        )?;
        Ok(statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))).optional()?)
    }

    /// Stores a new current signing key.
    pub fn insert_signing_key(&self, key_id: &str, seed: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO signing_keys (key_id, seed, created_ts) VALUES (?1, ?2, ?3)",
            params![key_id, seed, now_ms()],
        )?;
        Ok(())
    }

    /// Keys that no longer sign, with when they stopped: `(key_id, seed, expired_ts)`.
    pub fn old_signing_keys(&self) -> Result<Vec<(String, Vec<u8>, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT key_id, seed, expired_ts FROM signing_keys WHERE expired_ts IS NOT NULL",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Retires the current signing key (it stays published as an old key,
    /// `expired_ts` = now) and makes `key_id` with `seed` the current one.
    /// Returns the retired key's ID.
    pub fn rotate_signing_key(&mut self, key_id: &str, seed: &[u8]) -> Result<Option<String>> {
        let now = now_ms();
        let transaction = self.conn.savepoint()?;
        let retired: Option<String> = transaction
            .query_row(
                "SELECT key_id FROM signing_keys WHERE expired_ts IS NULL ORDER BY created_ts DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        transaction.execute("UPDATE signing_keys SET expired_ts = ?1 WHERE expired_ts IS NULL", [now])?;
        transaction.execute(
            "INSERT INTO signing_keys (key_id, seed, created_ts) VALUES (?1, ?2, ?3)",
            params![key_id, seed, now],
        )?;
        transaction.commit()?;
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotation_retires_the_current_key() {
        let mut storage = crate::storage::in_memory();
        storage.insert_signing_key("ed25519:a", &[1; 32]).unwrap();
        assert_eq!(storage.rotate_signing_key("ed25519:b", &[2; 32]).unwrap(), Some("ed25519:a".into()));
        assert_eq!(storage.current_signing_key().unwrap(), Some(("ed25519:b".into(), vec![2; 32])));
        let old = storage.old_signing_keys().unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!((old[0].0.as_str(), old[0].1.as_slice()), ("ed25519:a", &[1u8; 32][..]));
    }
}
