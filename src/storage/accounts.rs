//! Accounts: users, devices, access tokens (stored as SHA-256 hashes),
//! registration tokens and user-interactive auth sessions.

use rusqlite::{OptionalExtension, Row, params};

use super::{Storage, now_ms};
use crate::error::{Error, Result};

/// How long a user-interactive auth session lives. Completed sessions are
/// kept for this long so that a retried request gets the same answer.
pub const UIA_SESSION_LIFETIME_MS: i64 = 86_400_000;

/// Migration 15: which accounts are guests (`/register?kind=guest`).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#guest-access>.
pub const GUEST_ACCOUNTS: &str = "ALTER TABLE users ADD COLUMN is_guest INTEGER NOT NULL DEFAULT 0;";

/// One account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    pub localpart: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
}

/// Who an access token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub is_admin: bool,
    /// A guest account: only the endpoints the spec lists for guests.
    pub is_guest: bool,
}

/// One device of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
}

/// A registration token as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expires_ts: Option<i64>,
}

impl RegistrationToken {
    /// Whether it can still be used at `now`.
    pub fn is_valid(&self, now: i64) -> bool {
        self.uses_allowed.is_none_or(|allowed| self.completed < allowed)
            && self.expires_ts.is_none_or(|expires| now < expires)
    }
}

const USER_COLUMNS: &str = "user_id, localpart, password_hash, is_admin, deactivated, \
                            displayname, avatar_url, created_ts";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: row.get(0)?,
        localpart: row.get(1)?,
        password_hash: row.get(2)?,
        is_admin: row.get(3)?,
        deactivated: row.get(4)?,
        displayname: row.get(5)?,
        avatar_url: row.get(6)?,
        created_ts: row.get(7)?,
    })
}

impl Storage {
    /// Creates an account; `Err(UserInUse)` if the ID is taken.
    /// With `registration_token`, that token's use is counted in the same
    /// transaction, and a token used up meanwhile refuses the account.
    pub fn create_user(
        &mut self,
        user_id: &str,
        localpart: &str,
        password_hash: Option<&str>,
        is_admin: bool,
        registration_token: Option<&str>,
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        let now = now_ms();
        if let Some(token) = registration_token {
            let counted = transaction.execute(
                "UPDATE registration_tokens SET completed = completed + 1
                 WHERE token = ?1 AND (uses_allowed IS NULL OR completed < uses_allowed)
                   AND (expires_ts IS NULL OR expires_ts > ?2)",
                params![token, now],
            )?;
            if counted == 0 {
                return Err(Error::Forbidden("the registration token is not valid".into()));
            }
        }
        // A new account's display name is its localpart, as the reference
        // server sets it, so clients show a name rather than the raw user ID.
        let inserted = transaction.execute(
            "INSERT OR IGNORE INTO users (user_id, localpart, password_hash, is_admin, created_ts, displayname)
             VALUES (?1, ?2, ?3, ?4, ?5, ?2)",
            params![user_id, localpart, password_hash, is_admin, now],
        )?;
        if inserted == 0 {
            return Err(Error::UserInUse);
        }
        transaction.commit()?;
        Ok(())
    }

    /// Creates a guest account (no password, the localpart as display
    /// name); `Err(UserInUse)` if the ID is taken.
    pub fn create_guest(&self, user_id: &str, localpart: &str) -> Result<()> {
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO users (user_id, localpart, is_admin, is_guest, created_ts, displayname)
             VALUES (?1, ?2, 0, 1, ?3, ?2)",
            params![user_id, localpart, now_ms()],
        )?;
        if inserted == 0 {
            return Err(Error::UserInUse);
        }
        Ok(())
    }

    /// Makes the guest `user_id` a full account with this password hash,
    /// counting a registration token's use as [`Storage::create_user`] does;
    /// `Err(UserInUse)` if it is no longer a guest (upgraded meanwhile).
    pub fn upgrade_guest(
        &mut self,
        user_id: &str,
        password_hash: Option<&str>,
        registration_token: Option<&str>,
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        if let Some(token) = registration_token {
            let counted = transaction.execute(
                "UPDATE registration_tokens SET completed = completed + 1
                 WHERE token = ?1 AND (uses_allowed IS NULL OR completed < uses_allowed)
                   AND (expires_ts IS NULL OR expires_ts > ?2)",
                params![token, now_ms()],
            )?;
            if counted == 0 {
                return Err(Error::Forbidden("the registration token is not valid".into()));
            }
        }
        let changed = transaction.execute(
            "UPDATE users SET is_guest = 0, password_hash = ?2 WHERE user_id = ?1 AND is_guest = 1",
            params![user_id, password_hash],
        )?;
        if changed == 0 {
            return Err(Error::UserInUse);
        }
        transaction.commit()?;
        Ok(())
    }

    /// Whether this account is a guest's.
    pub fn is_guest(&self, user_id: &str) -> Result<bool> {
        let mut statement = self.conn.prepare_cached("SELECT is_guest FROM users WHERE user_id = ?1")?;
        Ok(statement.query_row([user_id], |row| row.get(0)).optional()?.unwrap_or(false))
    }

    /// The account with this user ID.
    pub fn user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1");
        let mut statement = self.conn.prepare_cached(&sql)?;
        Ok(statement.query_row([user_id], user_from_row).optional()?)
    }

    /// Every account, oldest first.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_ts, user_id");
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the password hash. Returns false if there is no such user.
    pub fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
            params![user_id, password_hash],
        )?;
        Ok(changed == 1)
    }

    /// Deactivates an account: no password, no devices, no tokens, no
    /// pushers, empty profile, no key backups.
    pub fn deactivate_user(&mut self, user_id: &str) -> Result<bool> {
        let transaction = self.conn.savepoint()?;
        let changed = transaction.execute(
            "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL,
             avatar_url = NULL WHERE user_id = ?1",
            [user_id],
        )?;
        transaction.execute("DELETE FROM devices WHERE user_id = ?1", [user_id])?;
        transaction.execute("DELETE FROM pushers WHERE user_id = ?1", [user_id])?;
        super::key_backup::drop_user_backups(&transaction, user_id)?;
        transaction.commit()?;
        Ok(changed == 1)
    }

    /// Sets the display name (`None` removes it).
    pub fn set_displayname(&self, user_id: &str, displayname: Option<&str>) -> Result<()> {
        self.conn
            .execute("UPDATE users SET displayname = ?2 WHERE user_id = ?1", params![user_id, displayname])?;
        Ok(())
    }

    /// Sets the avatar URL (`None` removes it).
    pub fn set_avatar_url(&self, user_id: &str, avatar_url: Option<&str>) -> Result<()> {
        self.conn
            .execute("UPDATE users SET avatar_url = ?2 WHERE user_id = ?1", params![user_id, avatar_url])?;
        Ok(())
    }

    /// Erases every stored client address (when the node stops keeping them);
    /// answers how many devices had one. The freed bytes are zeroed
    /// (`secure_delete`) and the write-ahead log folded in and truncated, so
    /// no copy of an address stays behind in the files.
    pub fn forget_client_ips(&self) -> Result<usize> {
        self.conn.pragma_update(None, "secure_delete", true)?;
        let erased =
            self.conn.execute("UPDATE devices SET last_seen_ip = NULL WHERE last_seen_ip IS NOT NULL", []);
        self.conn.pragma_update(None, "secure_delete", false)?;
        let erased = erased?;
        if 0 < erased {
            self.checkpoint()?;
        }
        Ok(erased)
    }

    /// Creates or reuses a device and issues a new access token for it.
    pub fn login_device(
        &mut self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token_hash: &[u8],
        ip: Option<&str>,
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        let now = now_ms();
        transaction.execute(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ts,
                                  created_ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (user_id, device_id) DO UPDATE SET
                display_name = COALESCE(excluded.display_name, display_name),
                last_seen_ip = excluded.last_seen_ip, last_seen_ts = excluded.last_seen_ts",
            params![user_id, device_id, display_name, ip, now],
        )?;
        // A device has one live token: logging in again on it replaces the old one.
        transaction.execute(
            "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id],
        )?;
        transaction.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)
             VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, user_id, device_id, now],
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Who holds the token with this hash (deactivated users hold none).
    pub fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT t.user_id, t.device_id, u.is_admin, u.is_guest FROM access_tokens t
             JOIN users u ON u.user_id = t.user_id
             WHERE t.token_hash = ?1 AND u.deactivated = 0",
        )?;
        let owner = statement
            .query_row([token_hash], |row| {
                Ok(TokenOwner {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                    is_admin: row.get(2)?,
                    is_guest: row.get(3)?,
                })
            })
            .optional()?;
        Ok(owner)
    }

    /// Deletes a device and its token.
    pub fn delete_device(&self, user_id: &str, device_id: &str) -> Result<bool> {
        let deleted = self.conn.execute(
            "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id],
        )?;
        Ok(deleted == 1)
    }

    /// Deletes every device of a user except `keep` (if given), with their tokens.
    pub fn delete_devices_except(&self, user_id: &str, keep: Option<&str>) -> Result<()> {
        self.conn.execute(
            "DELETE FROM devices WHERE user_id = ?1 AND device_id IS NOT ?2",
            params![user_id, keep],
        )?;
        Ok(())
    }

    /// A user's devices.
    pub fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
             WHERE user_id = ?1 ORDER BY created_ts, device_id",
        )?;
        let rows = statement.query_map([user_id], |row| {
            Ok(Device {
                device_id: row.get(0)?,
                display_name: row.get(1)?,
                last_seen_ip: row.get(2)?,
                last_seen_ts: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Renames a device. Returns false if there is no such device.
    pub fn rename_device(&self, user_id: &str, device_id: &str, name: Option<&str>) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id, name],
        )?;
        Ok(changed == 1)
    }

    /// Creates a registration token.
    pub fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expires_ts: Option<i64>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO registration_tokens (token, uses_allowed, expires_ts, created_ts)
             VALUES (?1, ?2, ?3, ?4)",
            params![token, uses_allowed, expires_ts, now_ms()],
        )?;
        Ok(())
    }

    /// One registration token.
    pub fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT token, uses_allowed, completed, expires_ts FROM registration_tokens
             WHERE token = ?1",
        )?;
        Ok(statement.query_row([token], registration_token_from_row).optional()?)
    }

    /// Every registration token, newest first.
    pub fn registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT token, uses_allowed, completed, expires_ts FROM registration_tokens
             ORDER BY created_ts DESC",
        )?;
        let rows = statement.query_map([], registration_token_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a registration token. Returns false if it did not exist.
    pub fn revoke_registration_token(&self, token: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM registration_tokens WHERE token = ?1", [token])? == 1)
    }

    /// Starts a user-interactive auth session with `state`, and ends the
    /// sessions older than [`UIA_SESSION_LIFETIME_MS`].
    pub fn create_uia_session(&self, session: &str, state: &serde_json::Value) -> Result<()> {
        let now = now_ms();
        self.conn
            .execute("DELETE FROM uia_sessions WHERE created_ts < ?1", [now - UIA_SESSION_LIFETIME_MS])?;
        self.conn.execute(
            "INSERT INTO uia_sessions (session, completed, created_ts) VALUES (?1, ?2, ?3)",
            params![session, state.to_string(), now],
        )?;
        Ok(())
    }

    /// A UIA session's state (a JSON object), or `None` if it does not
    /// exist or is older than [`UIA_SESSION_LIFETIME_MS`].
    pub fn uia_session(&self, session: &str) -> Result<Option<serde_json::Value>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT completed FROM uia_sessions WHERE session = ?1 AND created_ts >= ?2")?;
        let state: Option<String> = statement
            .query_row(params![session, now_ms() - UIA_SESSION_LIFETIME_MS], |row| row.get(0))
            .optional()?;
        Ok(state.map(|text| serde_json::from_str(&text).unwrap_or_default()))
    }

    /// Stores a UIA session's state.
    pub fn set_uia_session(&self, session: &str, state: &serde_json::Value) -> Result<()> {
        self.conn.execute(
            "UPDATE uia_sessions SET completed = ?2 WHERE session = ?1",
            params![session, state.to_string()],
        )?;
        Ok(())
    }
}

fn registration_token_from_row(row: &Row<'_>) -> rusqlite::Result<RegistrationToken> {
    Ok(RegistrationToken {
        token: row.get(0)?,
        uses_allowed: row.get(1)?,
        completed: row.get(2)?,
        expires_ts: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_resolve_to_owners_until_the_device_goes() {
        let mut storage = super::super::in_memory();
        storage.create_user("@a:x", "a", Some("hash"), false, None).unwrap();
        assert!(matches!(storage.create_user("@a:x", "a", None, false, None), Err(Error::UserInUse)));
        storage.login_device("@a:x", "DEV", None, b"h1", None).unwrap();
        assert_eq!(storage.token_owner(b"h1").unwrap().unwrap().device_id, "DEV");
        storage.login_device("@a:x", "DEV", None, b"h2", None).unwrap();
        assert!(storage.token_owner(b"h1").unwrap().is_none());
        assert!(storage.delete_device("@a:x", "DEV").unwrap());
        assert!(storage.token_owner(b"h2").unwrap().is_none());
    }

    #[test]
    fn used_up_and_expired_registration_tokens_refuse_accounts() {
        let mut storage = super::super::in_memory();
        storage.create_registration_token("once", Some(1), None).unwrap();
        storage.create_registration_token("old", None, Some(1)).unwrap();
        storage.create_user("@a:x", "a", None, false, Some("once")).unwrap();
        assert!(storage.create_user("@b:x", "b", None, false, Some("once")).is_err());
        assert!(storage.create_user("@c:x", "c", None, false, Some("old")).is_err());
        assert!(storage.user("@b:x").unwrap().is_none());
        assert!(!storage.registration_token("once").unwrap().unwrap().is_valid(now_ms()));
    }
}
