//! Transactions spanning several storage calls, and the group commit.
//!
//! Every statement run on its own is a transaction of its own, which takes
//! and drops SQLite's locks (a few system calls) each time; a request that
//! reads a dozen rows pays that a dozen times. [`Storage::begin`] opens one
//! transaction for a whole piece of work instead: nested calls become
//! savepoints, so each piece of work still succeeds or fails as a whole.
//!
//! Work that writes (`begin`) joins the *group transaction*: finishing it
//! releases its savepoint but does not commit. The caller commits the group
//! ([`Storage::commit_group`]) once the event loop has run the other requests
//! that were ready, so concurrent sends share one commit (one write of the
//! WAL pages they touch) instead of one each. Nothing may leave the process
//! (an HTTP response, a federation request) before the group it may have
//! read from is committed; the app enforces that (see `Engine::durable`).
//!
//! Read-only work (`begin_read`) outside a group takes a plain deferred
//! transaction and ends it at once.
//!
//! Work that opens the group has no savepoint of its own: undoing it is
//! undoing the group, which held nothing else. A savepoint makes SQLite copy
//! every page the work changes to the statement journal first (to put it
//! back on `ROLLBACK TO`), which was a third of the cost of storing an event;
//! only work that joins a group others wrote to pays for it.

use super::Storage;
use crate::error::Result;

/// What is open on the connection.
#[derive(Default)]
pub(super) struct Levels {
    /// Open `begin`/`begin_read` levels.
    depth: u32,
    /// A group transaction is open (written to, not yet committed).
    group: bool,
    /// The outermost level is a read-only transaction of its own.
    read_only_top: bool,
    /// The outermost level is work that opened the group and has no
    /// savepoint: ending it well releases nothing, undoing it rolls the
    /// group back.
    bare_top: bool,
    /// Rollbacks that may have undone writes so far (see [`Storage::rollbacks`]).
    rollbacks: u64,
}

impl Storage {
    /// Opens a piece of work that writes, inside the group transaction
    /// (started here with the write lock taken at once, so a later write
    /// cannot fail on a snapshot another process made stale).
    pub fn begin(&mut self) -> Result<()> {
        if self.transactions.depth == 0 && !self.transactions.group {
            self.run("BEGIN IMMEDIATE")?;
            self.transactions.group = true;
            self.transactions.bare_top = true;
            self.transactions.depth += 1;
            return Ok(());
        }
        self.run("SAVEPOINT work")?;
        self.transactions.depth += 1;
        Ok(())
    }

    /// Opens a piece of work that only reads: one snapshot and one lock for
    /// all its reads (inside the group transaction if one is open).
    pub fn begin_read(&mut self) -> Result<()> {
        if self.transactions.depth == 0 && !self.transactions.group {
            self.run("BEGIN DEFERRED")?;
            self.transactions.read_only_top = true;
        } else {
            self.run("SAVEPOINT work")?;
        }
        self.transactions.depth += 1;
        Ok(())
    }

    /// Ends the latest level successfully: its writes stay, to be committed
    /// with the group.
    pub fn commit(&mut self) -> Result<()> {
        let top = self.transactions.depth == 1;
        if top && self.transactions.bare_top {
            self.transactions.bare_top = false;
        } else {
            let top_read = top && self.transactions.read_only_top;
            self.run(if top_read { "COMMIT" } else { "RELEASE work" })?;
            if top_read {
                self.transactions.read_only_top = false;
            }
        }
        self.transactions.depth -= 1;
        Ok(())
    }

    /// Undoes the latest level's writes.
    pub fn rollback(&mut self) {
        let top = self.transactions.depth == 1;
        let top_read = top && self.transactions.read_only_top;
        let whole_group = top && self.transactions.bare_top;
        let sql = if top_read || whole_group { "ROLLBACK" } else { "ROLLBACK TO work; RELEASE work" };
        if let Err(error) = self.conn.execute_batch(sql) {
            log::error!("rollback failed: {error}");
        }
        if !top_read {
            self.transactions.rollbacks += 1;
        }
        self.transactions.depth = self.transactions.depth.saturating_sub(1);
        if top_read {
            self.transactions.read_only_top = false;
        }
        if whole_group {
            self.transactions.bare_top = false;
            self.transactions.group = false;
        }
    }

    /// Whether a piece of work ([`Storage::begin`]) is open.
    pub(super) fn in_work(&self) -> bool {
        self.transactions.depth > 0 && !self.transactions.read_only_top
    }

    /// Runs one transaction control statement, prepared once (every send
    /// opens and releases levels: parsing them each time showed in profiles).
    fn run(&self, sql: &str) -> Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Whether a group transaction waits to be committed.
    pub fn group_open(&self) -> bool {
        self.transactions.group
    }

    /// Commits the group transaction (between pieces of work only). When the
    /// commit fails, the group's writes are undone.
    pub fn commit_group(&mut self) -> Result<()> {
        if !self.transactions.group || self.transactions.depth > 0 {
            return Ok(());
        }
        self.transactions.group = false;
        if let Err(error) = self.run("COMMIT") {
            if let Err(rollback) = self.conn.execute_batch("ROLLBACK") {
                log::error!("rollback after a failed commit failed: {rollback}");
            }
            self.transactions.rollbacks += 1;
            return Err(error);
        }
        Ok(())
    }

    /// How many times work that writes was undone (a failed piece of work,
    /// or a group whose commit failed). What was read or written inside it
    /// may have named rows that are gone (a state group whose ID the next
    /// write reuses), so a cache of such reads starts over when this moves.
    pub fn rollbacks(&self) -> u64 {
        self.transactions.rollbacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(storage: &Storage) -> i64 {
        storage.conn.query_row("SELECT COUNT(*) FROM filters", [], |row| row.get(0)).unwrap()
    }

    fn insert(storage: &Storage, id: i64) {
        storage
            .conn
            .execute("INSERT INTO filters (user_id, filter_id, json) VALUES ('@a:x', ?1, '{}')", [id])
            .unwrap();
    }

    #[test]
    fn work_joins_the_group_and_failed_work_is_undone_alone() {
        let mut storage = crate::storage::in_memory();
        storage.begin().unwrap();
        insert(&storage, 1);
        storage.commit().unwrap();
        assert!(storage.group_open());
        storage.begin().unwrap();
        insert(&storage, 2);
        storage.begin().unwrap();
        insert(&storage, 3);
        storage.rollback();
        storage.commit().unwrap();
        storage.begin().unwrap();
        insert(&storage, 4);
        storage.rollback();
        assert_eq!(count(&storage), 2, "1 and 2 stay, 3 and 4 are undone");
        assert_eq!(storage.rollbacks(), 2);
        storage.commit_group().unwrap();
        assert!(!storage.group_open());
        assert!(storage.conn.is_autocommit());
        assert_eq!(count(&storage), 2);
    }

    #[test]
    fn failed_work_that_opened_the_group_undoes_the_group() {
        let mut storage = crate::storage::in_memory();
        storage.begin().unwrap();
        insert(&storage, 1);
        storage.begin().unwrap();
        insert(&storage, 2);
        storage.rollback();
        assert_eq!(count(&storage), 1, "a nested level is undone alone");
        storage.begin_read().unwrap();
        storage.commit().unwrap();
        storage.rollback();
        assert!(!storage.group_open(), "the group held that work alone");
        assert!(storage.conn.is_autocommit());
        assert_eq!(count(&storage), 0);
        // The next work opens a group of its own, which commits.
        storage.begin().unwrap();
        insert(&storage, 3);
        storage.commit().unwrap();
        assert!(storage.group_open());
        storage.commit_group().unwrap();
        assert!(storage.conn.is_autocommit());
        assert_eq!(count(&storage), 1);
    }
    #[test]
    fn reads_alone_end_at_once_and_inside_a_group_nest() {
        let mut storage = crate::storage::in_memory();
        storage.begin_read().unwrap();
        assert!(!storage.conn.is_autocommit());
        storage.commit().unwrap();
        assert!(storage.conn.is_autocommit());
        assert!(!storage.group_open());
        storage.begin().unwrap();
        insert(&storage, 1);
        storage.commit().unwrap();
        storage.begin_read().unwrap();
        assert_eq!(count(&storage), 1, "reads see the group's writes");
        storage.commit().unwrap();
        assert!(storage.group_open(), "a read does not end the group");
        storage.commit_group().unwrap();
        assert!(storage.conn.is_autocommit());
    }
}
