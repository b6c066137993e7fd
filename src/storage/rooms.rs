//! Rooms and their DAG: events as signed PDUs, state groups (state after each
//! event, stored as deltas), current state, forward extremities.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::batch::string_list;
use super::event_json::EventJson;
use super::push::QueuedPush;
use super::unread::UnreadMark;
use super::{Storage, now_ms};
use crate::error::{Error, Result};

/// `(type, state_key) -> event_id`, as state resolution uses.
pub type StateMap = BTreeMap<(String, String), String>;

/// Reading a state walks at most this many groups up from a group to its
/// full snapshot. Groups are written as skip deltas (see
/// [`skip_delta_parent`]): the group at position `n` since its snapshot lies
/// as many steps from it as `n` has bits set, so 128 is never reached (older
/// databases hold plain chains cut every 50 groups, plus at most
/// [`MAX_SKIP_POSITION_BITS`] steps on top).
pub(super) const MAX_STATE_CHAIN: i64 = 128;

/// A group's position since its snapshot (the `chain_length` column) stays
/// below `2^40`; a full snapshot is written past it (never, in practice).
const MAX_SKIP_POSITION_BITS: u32 = 40;

/// One stored event.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    /// The PDU as signed (redacted in place once a redaction applies),
    /// parsed on first use.
    pub json: EventJson,
    /// State after this event.
    pub state_group: Option<i64>,
    /// For state events: the event previously at this state key.
    pub replaces_state: Option<String>,
    pub redacted_by: Option<String>,
    pub device_id: Option<String>,
    pub txn_id: Option<String>,
    pub outlier: bool,
    #[allow(dead_code)] // read by federation (soft-failed events stay out of timelines)
    pub soft_failed: bool,
}

/// One key of a room's current state.
#[derive(Clone, Debug)]
pub struct CurrentStateEntry {
    pub kind: String,
    pub state_key: String,
    pub event_id: String,
    /// For `m.room.member`: the membership the event sets.
    pub membership: Option<String>,
}

/// What a new event does to the room's state.
pub enum StateAfter {
    /// Not a state event: the state after is the state before (this group).
    Same(Option<i64>),
    /// A state event on top of the group `parent`.
    Delta { parent: Option<i64>, changes: StateMap },
    /// A whole state (after resolving several prev_events' states).
    Full(StateMap),
}

/// A new event to store.
pub struct NewEvent<'a> {
    pub stream_ordering: i64,
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub depth: i64,
    pub origin_server_ts: i64,
    pub json: &'a Map<String, Value>,
    pub replaces_state: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub txn_id: Option<&'a str>,
    pub rel_type: Option<&'a str>,
    pub relates_to: Option<&'a str>,
    pub outlier: bool,
    pub soft_failed: bool,
}

impl<'a> NewEvent<'a> {
    /// A timeline event for `pdu` at `stream_ordering`, its relation read from
    /// `content.m.relates_to`; the other fields (replaced state, device
    /// transaction, outlier, soft-failed) are left empty for the caller to set.
    pub fn of(pdu: &'a crate::protocol::pdu::Pdu, stream_ordering: i64) -> NewEvent<'a> {
        let relation = pdu.content.get("m.relates_to");
        NewEvent {
            stream_ordering,
            event_id: &pdu.event_id,
            room_id: &pdu.room_id,
            kind: &pdu.kind,
            state_key: pdu.state_key.as_deref(),
            sender: &pdu.sender,
            depth: pdu.depth,
            origin_server_ts: pdu.origin_server_ts,
            json: &pdu.json,
            replaces_state: None,
            device_id: None,
            txn_id: None,
            rel_type: relation.and_then(|relation| relation.get("rel_type")).and_then(Value::as_str),
            relates_to: relation.and_then(|relation| relation.get("event_id")).and_then(Value::as_str),
            outlier: false,
            soft_failed: false,
        }
    }
}

/// How the room's current state and extremities change with a new event.
pub struct CurrentUpdate {
    /// State entries to set in the current state (with the member's membership).
    pub state: Vec<((String, String), String, Option<String>)>,
    /// Replace the whole current state instead (after a merge).
    pub replace_all: bool,
    /// The room's new forward extremities.
    pub extremities: Vec<String>,
    /// Servers to send the event to: queued in the same transaction, so an
    /// event we store is never missing from the federation outbox.
    pub outbox: Vec<String>,
    /// Notifications for push gateways: queued in the same transaction, so
    /// an event we store is never missing from a pusher's queue.
    pub pushes: Vec<QueuedPush>,
    /// The local users the event notifies: their unread counts grow in the
    /// same transaction, so a count never misses a stored event.
    pub unread: Vec<UnreadMark>,
}

pub(super) const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, kind, state_key, sender, \
    origin_server_ts, json, state_group, replaces_state, redacted_by, device_id, txn_id, \
    outlier, soft_failed";

pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let json = EventJson::from_text(row.get(7)?);
    Ok(StoredEvent {
        stream_ordering: row.get(0)?,
        event_id: row.get(1)?,
        room_id: row.get(2)?,
        kind: row.get(3)?,
        state_key: row.get(4)?,
        sender: row.get(5)?,
        origin_server_ts: row.get(6)?,
        json,
        state_group: row.get(8)?,
        replaces_state: row.get(9)?,
        redacted_by: row.get(10)?,
        device_id: row.get(11)?,
        txn_id: row.get(12)?,
        outlier: row.get(13)?,
        soft_failed: row.get(14)?,
    })
}

impl Storage {
    /// The highest stream position any stream has reached.
    pub fn max_stream_id(&self) -> Result<i64> {
        let max: i64 = self.conn.query_row(
            "SELECT MAX(
                (SELECT COALESCE(MAX(stream_ordering), 0) FROM events),
                (SELECT COALESCE(MAX(stream_id), 0) FROM account_data),
                (SELECT COALESCE(MAX(stream_id), 0) FROM receipts))",
            [],
            |row| row.get(0),
        )?;
        Ok(max)
    }

    /// Records a new room.
    pub fn create_room(&self, room_id: &str, room_version: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO rooms (room_id, room_version, created_ts) VALUES (?1, ?2, ?3)",
            params![room_id, room_version, now_ms()],
        )?;
        Ok(())
    }

    /// A room's version, if we know the room.
    pub fn room_version(&self, room_id: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached("SELECT room_version FROM rooms WHERE room_id = ?1")?;
        Ok(statement.query_row([room_id], |row| row.get(0)).optional()?)
    }

    /// A room's current state group.
    pub fn room_state_group(&self, room_id: &str) -> Result<Option<i64>> {
        let mut statement = self.conn.prepare_cached("SELECT state_group FROM rooms WHERE room_id = ?1")?;
        Ok(statement.query_row([room_id], |row| row.get(0)).optional()?.flatten())
    }

    /// One event by ID.
    pub fn event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1");
        let mut statement = self.conn.prepare_cached(&sql)?;
        Ok(statement.query_row([event_id], event_from_row).optional()?)
    }

    /// The event a device sent with this transaction ID, if any.
    pub fn event_for_transaction(
        &self,
        sender: &str,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT event_id FROM events WHERE sender = ?1 AND device_id = ?2 AND txn_id = ?3",
        )?;
        Ok(statement.query_row(params![sender, device_id, txn_id], |row| row.get(0)).optional()?)
    }

    /// The room's current state.
    pub fn current_state(&self, room_id: &str) -> Result<StateMap> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT kind, state_key, event_id FROM current_state WHERE room_id = ?1")?;
        let rows = statement.query_map([room_id], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The room's current state with each member's membership, ordered by
    /// type and state key: the state map and the member lists in one query.
    pub fn current_state_entries(&self, room_id: &str) -> Result<Vec<CurrentStateEntry>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT kind, state_key, event_id, membership FROM current_state WHERE room_id = ?1
             ORDER BY kind, state_key",
        )?;
        let rows = statement.query_map([room_id], |row| {
            Ok(CurrentStateEntry {
                kind: row.get(0)?,
                state_key: row.get(1)?,
                event_id: row.get(2)?,
                membership: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The events of the room's current state stored after stream position
    /// `after` (`i64::MIN`: all), in one query, unordered.
    pub fn current_state_events(&self, room_id: &str, after: i64) -> Result<Vec<StoredEvent>> {
        self.current_state_events_except(room_id, after, &[])
    }

    /// [`Storage::current_state_events`] but for the events named in `except`
    /// (those the caller holds already).
    pub fn current_state_events_except(
        &self,
        room_id: &str,
        after: i64,
        except: &[&str],
    ) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE event_id IN (SELECT event_id FROM current_state WHERE room_id = ?1
                                EXCEPT SELECT value FROM json_each(?3))
               AND stream_ordering > ?2"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params![room_id, after, string_list(except)], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The current state event ID at one key.
    pub fn current_state_event(&self, room_id: &str, kind: &str, state_key: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT event_id FROM current_state WHERE room_id = ?1 AND kind = ?2 AND state_key = ?3",
        )?;
        Ok(statement.query_row(params![room_id, kind, state_key], |row| row.get(0)).optional()?)
    }

    /// A user's current membership in a room.
    pub fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT membership FROM current_state
             WHERE room_id = ?1 AND kind = 'm.room.member' AND state_key = ?2",
        )?;
        Ok(statement.query_row(params![room_id, user_id], |row| row.get(0)).optional()?.flatten())
    }

    /// Rooms where the user has this membership now.
    pub fn rooms_with_membership(&self, user_id: &str, membership: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT room_id FROM current_state
             WHERE kind = 'm.room.member' AND state_key = ?1 AND membership = ?2",
        )?;
        let rows = statement.query_map(params![user_id, membership], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every room the user has any membership in now, with that membership.
    pub fn rooms_of_user(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT room_id, membership FROM current_state
             WHERE kind = 'm.room.member' AND state_key = ?1 AND membership IS NOT NULL",
        )?;
        let rows = statement.query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Members of a room with a given membership now.
    pub fn members_with(&self, room_id: &str, membership: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT state_key FROM current_state
             WHERE room_id = ?1 AND kind = 'm.room.member' AND membership = ?2",
        )?;
        let rows = statement.query_map(params![room_id, membership], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many members a room has with a given membership now.
    pub fn member_count(&self, room_id: &str, membership: &str) -> Result<u64> {
        let mut statement = self.conn.prepare_cached(
            "SELECT COUNT(*) FROM current_state
             WHERE room_id = ?1 AND kind = 'm.room.member' AND membership = ?2",
        )?;
        Ok(statement.query_row(params![room_id, membership], |row| row.get(0))?)
    }

    /// The room's forward extremities with their depths.
    pub fn forward_extremities(&self, room_id: &str) -> Result<Vec<(String, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT f.event_id, e.depth FROM forward_extremities f
             JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?1",
        )?;
        let rows = statement.query_map([room_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The full state of a state group (walking its delta chain).
    pub fn state_of_group(&self, group: i64) -> Result<StateMap> {
        let mut chain = Vec::new();
        let mut next = Some(group);
        let mut parent_statement =
            self.conn.prepare_cached("SELECT parent FROM state_groups WHERE group_id = ?1")?;
        while let Some(group) = next {
            chain.push(group);
            next = parent_statement.query_row([group], |row| row.get(0)).optional()?.flatten();
            if chain.len() as i64 > MAX_STATE_CHAIN + 1 {
                return Err(Error::Internal(format!("state group {group} chain is too long")));
            }
        }
        let mut state = StateMap::new();
        let mut entries = self.conn.prepare_cached(
            "SELECT kind, state_key, event_id FROM state_group_entries WHERE group_id = ?1",
        )?;
        for group in chain.iter().rev() {
            let rows = entries.query_map([group], |row| {
                Ok(((row.get::<_, String>(0)?, row.get::<_, String>(1)?), row.get::<_, String>(2)?))
            })?;
            for row in rows {
                let (key, event_id) = row?;
                state.insert(key, event_id);
            }
        }
        Ok(state)
    }

    /// The event at one key of a state group's state (walking its delta chain).
    pub fn state_entry_of_group(&self, group: i64, kind: &str, state_key: &str) -> Result<Option<String>> {
        // One query: walk the delta chain upwards (bounded by MAX_STATE_CHAIN)
        // and take the nearest group that sets the key.
        let mut statement = self.conn.prepare_cached(
            "WITH RECURSIVE chain(group_id, steps) AS (
                 SELECT ?1, 0
                 UNION ALL
                 SELECT g.parent, c.steps + 1 FROM state_groups g JOIN chain c ON g.group_id = c.group_id
                 WHERE g.parent IS NOT NULL AND c.steps <= ?4
             )
             SELECT e.event_id FROM chain c
             JOIN state_group_entries e ON e.group_id = c.group_id AND e.kind = ?2 AND e.state_key = ?3
             ORDER BY c.steps LIMIT 1",
        )?;
        Ok(statement
            .query_row(params![group, kind, state_key, MAX_STATE_CHAIN + 1], |row| row.get(0))
            .optional()?)
    }

    /// Stores an event with its state and the room's new current state and
    /// extremities, in one transaction. Returns the event's state group.
    pub fn persist_event(
        &mut self,
        event: &NewEvent<'_>,
        state_after: StateAfter,
        current: &CurrentUpdate,
    ) -> Result<Option<i64>> {
        self.conn.execute_batch("SAVEPOINT persist_event")?;
        let written = self.write_event(event, state_after, current);
        let end = match written {
            Ok(_) => "RELEASE persist_event",
            Err(_) => "ROLLBACK TO persist_event; RELEASE persist_event",
        };
        let ended = self.conn.execute_batch(end);
        let group = written?;
        ended?;
        Ok(group)
    }

    /// [`Storage::persist_event`] for a caller inside a piece of work
    /// ([`Storage::begin`]) that ends with the error of this call when it
    /// fails, so that the work's own savepoint undoes it: no savepoint of
    /// its own (a savepoint inside another copies every page the event
    /// touches to the statement journal). Outside a piece of work, as
    /// [`Storage::persist_event`].
    pub fn persist_event_in_work(
        &mut self,
        event: &NewEvent<'_>,
        state_after: StateAfter,
        current: &CurrentUpdate,
    ) -> Result<Option<i64>> {
        if !self.in_work() {
            return self.persist_event(event, state_after, current);
        }
        self.write_event(event, state_after, current)
    }

    /// The writes of [`Storage::persist_event`].
    fn write_event(
        &self,
        event: &NewEvent<'_>,
        state_after: StateAfter,
        current: &CurrentUpdate,
    ) -> Result<Option<i64>> {
        let transaction = &self.conn;
        let group = match state_after {
            StateAfter::Same(group) => group,
            StateAfter::Delta { parent, changes } => {
                let chain_length: Option<i64> = match parent {
                    Some(parent) => transaction
                        .prepare_cached("SELECT chain_length FROM state_groups WHERE group_id = ?1")?
                        .query_row([parent], |row| row.get(0))
                        .optional()?,
                    None => None,
                };
                let skip = match (parent, chain_length) {
                    (Some(parent), Some(length)) => skip_delta_parent(transaction, parent, length + 1)?,
                    _ => None,
                };
                match (parent, skip) {
                    (Some(_), Some(skip)) => {
                        let mut entries = skip.changes_since;
                        entries.extend(changes);
                        Some(insert_group(
                            transaction,
                            event.room_id,
                            Some(skip.parent),
                            skip.position,
                            &entries,
                        )?)
                    }
                    (Some(parent), None) => {
                        // No usable chain: write the full state as a new root.
                        let mut full = self.state_of_group(parent)?;
                        full.extend(changes);
                        return self.write_event(event, StateAfter::Full(full), current);
                    }
                    (None, _) => Some(insert_group(transaction, event.room_id, None, 0, &changes)?),
                }
            }
            StateAfter::Full(state) => Some(insert_group(transaction, event.room_id, None, 0, &state)?),
        };
        let json = serde_json::to_string(event.json).map_err(|error| Error::Internal(error.to_string()))?;
        // An event first stored as an outlier (for an auth chain) joins the DAG now.
        transaction
            .prepare_cached("DELETE FROM events WHERE event_id = ?1 AND outlier = 1")?
            .execute([event.event_id])?;
        transaction
            .prepare_cached(
                "INSERT INTO events (stream_ordering, event_id, room_id, kind, state_key, sender, depth,
                origin_server_ts, json, state_group, replaces_state, device_id, txn_id, rel_type,
                relates_to, outlier, soft_failed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
                event.stream_ordering,
                event.event_id,
                event.room_id,
                event.kind,
                event.state_key,
                event.sender,
                event.depth,
                event.origin_server_ts,
                json,
                group,
                event.replaces_state,
                event.device_id,
                event.txn_id,
                event.rel_type,
                event.relates_to,
                event.outlier,
                event.soft_failed,
            ])?;
        if !event.outlier && !event.soft_failed {
            if current.replace_all {
                transaction
                    .prepare_cached("DELETE FROM current_state WHERE room_id = ?1")?
                    .execute([event.room_id])?;
            }
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO current_state (room_id, kind, state_key, event_id, membership)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (room_id, kind, state_key) DO UPDATE SET
                    event_id = excluded.event_id, membership = excluded.membership",
            )?;
            for ((kind, state_key), event_id, membership) in &current.state {
                upsert.execute(params![event.room_id, kind, state_key, event_id, membership])?;
            }
            drop(upsert);
            transaction
                .prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1")?
                .execute([event.room_id])?;
            let mut insert_extremity = transaction.prepare_cached(
                "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)",
            )?;
            for extremity in &current.extremities {
                insert_extremity.execute(params![event.room_id, extremity])?;
            }
            drop(insert_extremity);
            // Most events change no state: leave the row (and its page) alone.
            transaction
                .prepare_cached(
                    "UPDATE rooms SET state_group = ?2 WHERE room_id = ?1 AND state_group IS NOT ?2",
                )?
                .execute(params![event.room_id, group])?;
        }
        if !current.outbox.is_empty() {
            let mut enqueue = transaction.prepare_cached(
                "INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES (?1, 'pdu', ?2, ?3)",
            )?;
            let now = now_ms();
            for destination in &current.outbox {
                enqueue.execute(params![destination, event.event_id, now])?;
            }
        }
        if !current.pushes.is_empty() {
            super::push::enqueue_pushes(transaction, event.event_id, event.room_id, &current.pushes)?;
        }
        if !current.unread.is_empty() && !event.outlier && !event.soft_failed {
            super::unread::mark_unread(transaction, event.room_id, event.stream_ordering, &current.unread)?;
        }
        Ok(group)
    }

    /// Events of a room in stream order within `(after, up_to]`, newest first,
    /// at most `limit` (timeline events only: no outliers, no soft-failed).
    pub fn room_events_backwards(
        &self,
        room_id: &str,
        after: i64,
        up_to: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        self.room_events(room_id, after, up_to, limit, "DESC")
    }

    /// Events of a room in stream order within `(from, up_to]`, oldest first.
    pub fn room_events_forwards(
        &self,
        room_id: &str,
        from: i64,
        up_to: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        self.room_events(room_id, from, up_to, limit, "ASC")
    }

    fn room_events(
        &self,
        room_id: &str,
        after: i64,
        up_to: i64,
        limit: usize,
        order: &'static str,
    ) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = ?1 AND stream_ordering > ?2 AND stream_ordering <= ?3
               AND outlier = 0 AND soft_failed = 0
             ORDER BY stream_ordering {order} LIMIT ?4"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params![room_id, after, up_to, limit as i64], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a room has timeline events in `(after, up_to]`.
    pub fn room_has_events_between(&self, room_id: &str, after: i64, up_to: i64) -> Result<bool> {
        let mut statement = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM events WHERE room_id = ?1 AND stream_ordering > ?2
               AND stream_ordering <= ?3 AND outlier = 0 AND soft_failed = 0)",
        )?;
        Ok(statement.query_row(params![room_id, after, up_to], |row| row.get(0))?)
    }

    /// Member events targeting `user_id` in `(after, up_to]`: how the user's
    /// memberships changed.
    pub fn membership_changes(&self, user_id: &str, after: i64, up_to: i64) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE kind = 'm.room.member' AND state_key = ?1
               AND stream_ordering > ?2 AND stream_ordering <= ?3 AND outlier = 0 AND soft_failed = 0
             ORDER BY stream_ordering ASC"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params![user_id, after, up_to], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces a stored event's JSON with its redacted form.
    pub fn redact_event(
        &self,
        event_id: &str,
        redacted: &Map<String, Value>,
        redacted_by: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE events SET json = ?2, redacted_by = ?3 WHERE event_id = ?1",
            params![
                event_id,
                serde_json::to_string(redacted).map_err(|error| Error::Internal(error.to_string()))?,
                redacted_by
            ],
        )?;
        Ok(())
    }

    /// Marks a room forgotten (or not) by a user.
    pub fn set_forgotten(&self, user_id: &str, room_id: &str, forgotten: bool) -> Result<()> {
        if forgotten {
            self.conn.execute(
                "INSERT OR IGNORE INTO forgotten_rooms (user_id, room_id) VALUES (?1, ?2)",
                params![user_id, room_id],
            )?;
        } else {
            self.conn.execute(
                "DELETE FROM forgotten_rooms WHERE user_id = ?1 AND room_id = ?2",
                params![user_id, room_id],
            )?;
        }
        Ok(())
    }

    /// Whether a user forgot a room.
    pub fn is_forgotten(&self, user_id: &str, room_id: &str) -> Result<bool> {
        let mut statement = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM forgotten_rooms WHERE user_id = ?1 AND room_id = ?2)",
        )?;
        Ok(statement.query_row(params![user_id, room_id], |row| row.get(0))?)
    }

    /// Events relating to `event_id`, oldest first.
    #[allow(dead_code)] // used by /messages, /context and /relations
    pub fn relations(&self, event_id: &str) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE relates_to = ?1 AND outlier = 0
               AND soft_failed = 0 ORDER BY stream_ordering ASC"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map([event_id], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Where a new group at `position` (its parent's position plus one) hangs,
/// and what it must hold.
struct SkipDelta {
    /// The ancestor at `position` with its lowest set bit cleared.
    parent: i64,
    position: i64,
    /// Every change between that ancestor and the new group's parent.
    changes_since: StateMap,
}

/// Finds the parent of a new group as a skip delta: the group at position
/// `n` hangs on its ancestor at `n` with the lowest set bit cleared and holds
/// every change since it. A delta on the previous group alone would make a
/// room's state grow by a full snapshot every few dozen changes, quadratic
/// in the room's size (a createRoom with 5,000 invites wrote 250,000 rows);
/// skip deltas write `O(n log n)` rows and keep every group within
/// `log2(n)` steps of its snapshot. The ancestor lies on the path up from
/// `parent` (each step up clears low bits or goes back by one), so it is
/// found in a few steps. `None` when it is not (a chain of an older layout,
/// or a position past [`MAX_SKIP_POSITION_BITS`]): then a full snapshot.
fn skip_delta_parent(
    transaction: &rusqlite::Connection,
    parent: i64,
    position: i64,
) -> Result<Option<SkipDelta>> {
    if !(1..1_i64 << MAX_SKIP_POSITION_BITS).contains(&position) {
        return Ok(None);
    }
    let target = position & (position - 1);
    let mut statement = transaction.prepare_cached(
        "SELECT g.parent, p.chain_length FROM state_groups g JOIN state_groups p ON p.group_id = g.parent
         WHERE g.group_id = ?1",
    )?;
    // The groups from `parent` up to (not including) the target, nearest first.
    let mut between = Vec::new();
    let mut group = parent;
    let mut group_position = position - 1;
    while target < group_position {
        if MAX_STATE_CHAIN <= between.len() as i64 {
            return Ok(None);
        }
        between.push(group);
        let Some((up, up_position)) = statement
            .query_row([group], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
            .optional()?
        else {
            return Ok(None);
        };
        if group_position <= up_position {
            return Ok(None);
        }
        group = up;
        group_position = up_position;
    }
    if group_position != target {
        return Ok(None);
    }
    let mut changes_since = StateMap::new();
    let mut entries = transaction
        .prepare_cached("SELECT kind, state_key, event_id FROM state_group_entries WHERE group_id = ?1")?;
    for between_group in between.iter().rev() {
        let rows = entries.query_map([between_group], |row| {
            Ok(((row.get::<_, String>(0)?, row.get::<_, String>(1)?), row.get::<_, String>(2)?))
        })?;
        for row in rows {
            let (key, event_id) = row?;
            changes_since.insert(key, event_id);
        }
    }
    Ok(Some(SkipDelta { parent: group, position, changes_since }))
}

pub(super) fn insert_group(
    transaction: &rusqlite::Connection,
    room_id: &str,
    parent: Option<i64>,
    chain_length: i64,
    entries: &StateMap,
) -> Result<i64> {
    transaction
        .prepare_cached("INSERT INTO state_groups (room_id, parent, chain_length) VALUES (?1, ?2, ?3)")?
        .execute(params![room_id, parent, chain_length])?;
    let group = transaction.last_insert_rowid();
    let mut insert = transaction.prepare_cached(
        "INSERT INTO state_group_entries (group_id, kind, state_key, event_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for ((kind, state_key), event_id) in entries {
        insert.execute(params![group, kind, state_key, event_id])?;
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> (String, String) {
        ("m.room.member".to_string(), format!("@u{n}:x"))
    }

    /// Stores a state event setting `key(n)` after `parent`; returns its group.
    fn store(storage: &mut Storage, n: usize, state_after: StateAfter) -> i64 {
        let event_id = format!("$e{n}");
        let json = Map::new();
        let (kind, state_key) = key(n);
        let event = NewEvent {
            stream_ordering: n as i64 + 1,
            event_id: &event_id,
            room_id: "!r:x",
            kind: &kind,
            state_key: Some(&state_key),
            sender: "@a:x",
            depth: n as i64 + 1,
            origin_server_ts: 0,
            json: &json,
            replaces_state: None,
            device_id: None,
            txn_id: None,
            rel_type: None,
            relates_to: None,
            outlier: false,
            soft_failed: false,
        };
        let update = CurrentUpdate {
            state: Vec::new(),
            replace_all: false,
            extremities: vec![],
            outbox: vec![],
            pushes: vec![],
            unread: vec![],
        };
        storage.persist_event(&event, state_after, &update).unwrap().unwrap()
    }

    fn delta(parent: i64, n: usize) -> StateAfter {
        StateAfter::Delta { parent: Some(parent), changes: StateMap::from([(key(n), format!("$e{n}"))]) }
    }

    fn check_states(storage: &Storage, groups: &[i64], offset: usize) {
        for (n, group) in groups.iter().enumerate() {
            let state = storage.state_of_group(*group).unwrap();
            assert_eq!(state.len(), offset + n + 1, "group {group}");
            assert_eq!(state.get(&key(offset + n)), Some(&format!("$e{}", offset + n)));
            let (kind, state_key) = key(offset + n / 2);
            let found = storage.state_entry_of_group(*group, &kind, &state_key).unwrap();
            assert_eq!(found, Some(format!("$e{}", offset + n / 2)));
        }
    }

    fn entry_rows(storage: &Storage) -> i64 {
        storage.conn.query_row("SELECT COUNT(*) FROM state_group_entries", [], |row| row.get(0)).unwrap()
    }

    /// Thousands of state changes in a row (createRoom's invites) write
    /// `O(n log n)` entries, never a snapshot per few dozen changes, and
    /// every group still reads as the whole state after its event.
    #[test]
    fn state_groups_are_skip_deltas_that_grow_in_n_log_n() {
        let mut storage = crate::storage::in_memory();
        let count = 2048;
        let mut groups =
            vec![store(&mut storage, 0, StateAfter::Full(StateMap::from([(key(0), "$e0".into())])))];
        for n in 1..count {
            let parent = groups[n - 1];
            groups.push(store(&mut storage, n, delta(parent, n)));
        }
        check_states(&storage, &groups, 0);
        // A chain of plain deltas with a snapshot every 50 wrote ~42,000 rows.
        let rows = entry_rows(&storage);
        assert!(rows <= (count * 12) as i64, "{rows} entries for {count} changes");
        let depth: i64 = storage
            .conn
            .query_row(
                "WITH RECURSIVE up(g, d) AS (SELECT ?1, 0 UNION ALL
                   SELECT s.parent, d + 1 FROM state_groups s JOIN up ON s.group_id = up.g
                   WHERE s.parent IS NOT NULL) SELECT MAX(d) FROM up",
                [groups[count - 1]],
                |row| row.get(0),
            )
            .unwrap();
        assert!(depth <= 11, "depth {depth}");
    }

    /// A database written before skip deltas holds plain chains of up to 50
    /// groups: new groups hang on them correctly.
    #[test]
    fn skip_deltas_continue_plain_chains() {
        let mut storage = crate::storage::in_memory();
        let mut groups = Vec::new();
        {
            let transaction = storage.conn.savepoint().unwrap();
            for n in 0..=50 {
                let changes = StateMap::from([(key(n), format!("$e{n}"))]);
                let parent = groups.last().copied();
                groups.push(insert_group(&transaction, "!r:x", parent, n as i64, &changes).unwrap());
            }
            transaction.commit().unwrap();
        }
        for n in 51..300 {
            let parent = groups[n - 1];
            groups.push(store(&mut storage, n, delta(parent, n)));
        }
        check_states(&storage, &groups, 0);
    }
}
