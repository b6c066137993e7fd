//! Room aliases and the public room directory.

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

#[allow(dead_code)] // the directory API lands with the aliases and publicRooms handlers
impl Storage {
    /// Maps an alias to a room; false if the alias is taken.
    pub fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO room_aliases (alias, room_id, creator, created_ts)
             VALUES (?1, ?2, ?3, ?4)",
            params![alias, room_id, creator, now_ms()],
        )?;
        Ok(inserted == 1)
    }

    /// The room and creator of an alias.
    pub fn alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        let mut statement =
            self.conn.prepare_cached("SELECT room_id, creator FROM room_aliases WHERE alias = ?1")?;
        Ok(statement.query_row([alias], |row| Ok((row.get(0)?, row.get(1)?))).optional()?)
    }

    /// Removes an alias; false if it did not exist.
    pub fn delete_alias(&self, alias: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM room_aliases WHERE alias = ?1", [alias])? == 1)
    }

    /// The local aliases of a room.
    pub fn aliases_of_room(&self, room_id: &str) -> Result<Vec<String>> {
        let mut statement =
            self.conn.prepare_cached("SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias")?;
        let rows = statement.query_map([room_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Publishes a room in the directory (or withdraws it).
    pub fn set_room_visibility(&self, room_id: &str, public: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE rooms SET visibility = ?2 WHERE room_id = ?1",
            params![room_id, if public { "public" } else { "private" }],
        )?;
        Ok(())
    }

    /// Whether a room is published in the directory.
    pub fn room_is_public(&self, room_id: &str) -> Result<bool> {
        let mut statement =
            self.conn.prepare_cached("SELECT visibility = 'public' FROM rooms WHERE room_id = ?1")?;
        Ok(statement.query_row([room_id], |row| row.get(0)).optional()?.unwrap_or(false))
    }

    /// Every room published in the directory.
    pub fn public_rooms(&self) -> Result<Vec<String>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT room_id FROM rooms WHERE visibility = 'public' ORDER BY created_ts")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
