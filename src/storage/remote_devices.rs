//! The cache of remote users' device lists: their devices with keys and
//! their cross-signing keys, as their server last gave them, with the
//! origin's stream position, so that `m.device_list_update` EDUs can be
//! applied as deltas and a gap in their `prev_id` chain noticed.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#device-management>.

use rusqlite::{OptionalExtension, params};

use super::Storage;
use crate::error::Result;

/// The migration that creates the cache, and marks which local device-list
/// changes are device updates (sent as `m.device_list_update` with a
/// stream ID) rather than cross-signing changes (sent as
/// `m.signing_key_update`, without one), so that the `prev_id` chain other
/// servers follow names only updates they were sent. Rows from before count
/// as device updates: at worst a peer resyncs once.
pub const REMOTE_DEVICE_LISTS: &str = r#"
    ALTER TABLE device_list_changes ADD COLUMN device_update INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE remote_device_lists (
        user_id           TEXT PRIMARY KEY,
        stream_id         INTEGER NOT NULL,
        stale             INTEGER NOT NULL,
        master_key        TEXT,
        self_signing_key  TEXT
    ) WITHOUT ROWID;
    CREATE TABLE remote_devices (
        user_id       TEXT NOT NULL,
        device_id     TEXT NOT NULL,
        display_name  TEXT,
        keys          TEXT,
        PRIMARY KEY (user_id, device_id),
        FOREIGN KEY (user_id) REFERENCES remote_device_lists(user_id) ON DELETE CASCADE
    ) WITHOUT ROWID;
"#;

/// One cached device: `(device_id, display_name, keys_json)`.
pub type RemoteDevice = (String, Option<String>, Option<String>);

/// A remote user's cached device list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteDeviceList {
    /// The origin's stream ID of the last update applied.
    pub stream_id: i64,
    pub devices: Vec<RemoteDevice>,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
}

impl Storage {
    /// The stream ID of a remote user's cached device list, if it is cached
    /// and not stale.
    pub fn remote_device_list_stream(&self, user_id: &str) -> Result<Option<i64>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT stream_id FROM remote_device_lists WHERE user_id = ?1 AND stale = 0")?;
        Ok(statement.query_row([user_id], |row| row.get(0)).optional()?)
    }

    /// A remote user's cached device list, if it is cached and not stale.
    pub fn remote_device_list(&self, user_id: &str) -> Result<Option<RemoteDeviceList>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT stream_id, master_key, self_signing_key FROM remote_device_lists
             WHERE user_id = ?1 AND stale = 0",
        )?;
        let head = statement
            .query_row([user_id], |row| {
                Ok(RemoteDeviceList {
                    stream_id: row.get(0)?,
                    devices: Vec::new(),
                    master_key: row.get(1)?,
                    self_signing_key: row.get(2)?,
                })
            })
            .optional()?;
        let Some(mut list) = head else { return Ok(None) };
        let mut statement = self.conn.prepare_cached(
            "SELECT device_id, display_name, keys FROM remote_devices WHERE user_id = ?1 ORDER BY device_id",
        )?;
        let rows = statement.query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        list.devices = rows.collect::<Result<_, _>>()?;
        Ok(Some(list))
    }

    /// How many devices a remote user's cached list holds.
    pub fn remote_device_count(&self, user_id: &str) -> Result<usize> {
        let mut statement =
            self.conn.prepare_cached("SELECT COUNT(*) FROM remote_devices WHERE user_id = ?1")?;
        let count: i64 = statement.query_row([user_id], |row| row.get(0))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Replaces a remote user's cached device list with a full copy from
    /// their server; it is fresh.
    pub fn replace_remote_device_list(&mut self, user_id: &str, list: &RemoteDeviceList) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        transaction.execute("DELETE FROM remote_device_lists WHERE user_id = ?1", [user_id])?;
        transaction.execute(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale, master_key, self_signing_key)
             VALUES (?1, ?2, 0, ?3, ?4)",
            params![user_id, list.stream_id, list.master_key, list.self_signing_key],
        )?;
        {
            let mut statement = transaction.prepare_cached(
                "INSERT OR REPLACE INTO remote_devices (user_id, device_id, display_name, keys)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (device_id, display_name, keys) in &list.devices {
                statement.execute(params![user_id, device_id, display_name, keys])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Applies one device's update to a cached list at `stream_id`: the
    /// device is deleted, or replaced with `device`'s name and keys.
    pub fn apply_remote_device_update(
        &mut self,
        user_id: &str,
        stream_id: i64,
        device_id: &str,
        device: Option<(Option<&str>, Option<&str>)>,
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        transaction.execute(
            "UPDATE remote_device_lists SET stream_id = ?2 WHERE user_id = ?1",
            params![user_id, stream_id],
        )?;
        match device {
            None => {
                transaction.execute(
                    "DELETE FROM remote_devices WHERE user_id = ?1 AND device_id = ?2",
                    params![user_id, device_id],
                )?;
            }
            Some((display_name, keys)) => {
                transaction.execute(
                    "INSERT OR REPLACE INTO remote_devices (user_id, device_id, display_name, keys)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![user_id, device_id, display_name, keys],
                )?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Marks a remote user's cached list stale: the next query fetches it again.
    pub fn mark_remote_device_list_stale(&self, user_id: &str) -> Result<()> {
        self.conn.execute("UPDATE remote_device_lists SET stale = 1 WHERE user_id = ?1", [user_id])?;
        Ok(())
    }

    /// Marks stale the cached lists of everyone joined to a room.
    pub fn mark_room_members_device_lists_stale(&self, room_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE remote_device_lists SET stale = 1 WHERE stale = 0 AND user_id IN (
                SELECT state_key FROM current_state
                WHERE room_id = ?1 AND kind = 'm.room.member' AND membership = 'join')",
            [room_id],
        )?;
        Ok(())
    }

    /// Replaces the cross-signing keys (master, self-signing) of a cached
    /// list; `None` keeps the stored one.
    pub fn set_remote_signing_keys(
        &self,
        user_id: &str,
        master_key: Option<&str>,
        self_signing_key: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE remote_device_lists SET master_key = COALESCE(?2, master_key),
                self_signing_key = COALESCE(?3, self_signing_key) WHERE user_id = ?1",
            params![user_id, master_key, self_signing_key],
        )?;
        Ok(())
    }

    /// Whether a user is joined to a room that a local user (one of our
    /// server, `server_name`, with an account) is joined to: only then does
    /// their server send us their device-list updates. Our members of each
    /// room are found by server, not among all of its members.
    pub fn shares_a_room_with_a_local_user(&self, user_id: &str, server_name: &str) -> Result<bool> {
        let mut statement = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM current_state theirs JOIN current_state ours
                ON ours.room_id = theirs.room_id
             WHERE theirs.kind = 'm.room.member' AND theirs.state_key = ?1 AND theirs.membership = 'join'
               AND ours.membership = 'join' AND ours.server = ?2 AND ours.kind = 'm.room.member'
               AND ours.state_key != ?1
               AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = ours.state_key))",
        )?;
        Ok(statement.query_row(params![user_id, server_name], |row| row.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(stream_id: i64) -> RemoteDeviceList {
        RemoteDeviceList {
            stream_id,
            devices: vec![
                ("D1".into(), Some("phone".into()), Some("{\"k\":1}".into())),
                ("D2".into(), None, None),
            ],
            master_key: Some("{\"m\":1}".into()),
            self_signing_key: None,
        }
    }

    #[test]
    fn a_cached_list_is_replaced_updated_and_made_stale() {
        let mut storage = super::super::in_memory();
        assert_eq!(storage.remote_device_list("@r:y").unwrap(), None);
        storage.replace_remote_device_list("@r:y", &list(5)).unwrap();
        assert_eq!(storage.remote_device_list("@r:y").unwrap(), Some(list(5)));
        assert_eq!(storage.remote_device_list_stream("@r:y").unwrap(), Some(5));

        storage.apply_remote_device_update("@r:y", 6, "D2", None).unwrap();
        storage.apply_remote_device_update("@r:y", 7, "D3", Some((None, Some("{\"k\":3}")))).unwrap();
        storage.set_remote_signing_keys("@r:y", None, Some("{\"s\":1}")).unwrap();
        let updated = storage.remote_device_list("@r:y").unwrap().unwrap();
        assert_eq!(updated.stream_id, 7);
        let ids: Vec<&str> = updated.devices.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, ["D1", "D3"]);
        assert_eq!(updated.master_key.as_deref(), Some("{\"m\":1}"));
        assert_eq!(updated.self_signing_key.as_deref(), Some("{\"s\":1}"));

        storage.mark_remote_device_list_stale("@r:y").unwrap();
        assert_eq!(storage.remote_device_list("@r:y").unwrap(), None);
        assert_eq!(storage.remote_device_list_stream("@r:y").unwrap(), None);
        // A full copy makes it fresh again, with only the devices it names.
        storage.replace_remote_device_list("@r:y", &list(9)).unwrap();
        assert_eq!(storage.remote_device_list("@r:y").unwrap(), Some(list(9)));
    }
}
