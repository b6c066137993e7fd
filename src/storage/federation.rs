//! Federation state: the per-destination outbound queue (so a restart loses
//! nothing), each destination's backoff, and inbound transaction IDs (so a
//! retried transaction is answered, not applied twice).

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

/// The tables of this module (a migration).
pub const FEDERATION_QUEUE: &str = r#"
    CREATE TABLE federation_outbox (
        id           INTEGER PRIMARY KEY,
        destination  TEXT NOT NULL,
        kind         TEXT NOT NULL,
        payload      TEXT NOT NULL,
        created_ts   INTEGER NOT NULL
    );
    CREATE INDEX federation_outbox_by_destination ON federation_outbox(destination, kind, id);
    CREATE TABLE federation_destinations (
        destination      TEXT PRIMARY KEY,
        failures         INTEGER NOT NULL DEFAULT 0,
        retry_after_ts   INTEGER,
        last_success_ts  INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE remote_invites (
        room_id       TEXT NOT NULL,
        user_id       TEXT NOT NULL,
        event_id      TEXT NOT NULL,
        room_version  TEXT NOT NULL,
        inviter       TEXT NOT NULL,
        invite_state  TEXT NOT NULL,
        stream_id     INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE federation_inbound_transactions (
        origin       TEXT NOT NULL,
        txn_id       TEXT NOT NULL,
        response     TEXT NOT NULL,
        received_ts  INTEGER NOT NULL,
        PRIMARY KEY (origin, txn_id)
    ) WITHOUT ROWID;
"#;

/// One queued item: a PDU (its event ID) or an EDU (its JSON).
#[derive(Clone, Debug)]
pub struct Queued {
    pub id: i64,
    pub payload: String,
}

/// An invite of a local user into a room this server is not in.
#[derive(Clone, Debug)]
pub struct RemoteInvite {
    pub room_id: String,
    pub user_id: String,
    pub event_id: String,
    pub room_version: String,
    /// The inviting user (their server is where we join or decline through).
    pub inviter: String,
    /// The stripped state the inviting server sent, as JSON.
    pub invite_state: String,
    pub stream_id: i64,
}

/// How a destination has been doing.
#[derive(Clone, Debug, Default)]
pub struct DestinationHealth {
    pub failures: i64,
    pub retry_after_ts: Option<i64>,
}

impl Storage {
    /// Queues PDUs (event IDs) or EDUs (JSON) for destinations.
    pub fn enqueue(&mut self, destinations: &[String], kind: &str, payload: &str) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let now = now_ms();
            for destination in destinations {
                insert.execute(params![destination, kind, payload, now])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// The oldest queued items of a kind for a destination.
    pub fn queued(&self, destination: &str, kind: &str, limit: usize) -> Result<Vec<Queued>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, payload FROM federation_outbox WHERE destination = ?1 AND kind = ?2
             ORDER BY id LIMIT ?3",
        )?;
        let rows = statement.query_map(params![destination, kind, limit as i64], |row| {
            Ok(Queued { id: row.get(0)?, payload: row.get(1)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes sent items.
    pub fn dequeue(&mut self, ids: &[i64]) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        {
            let mut delete = transaction.prepare_cached("DELETE FROM federation_outbox WHERE id = ?1")?;
            for id in ids {
                delete.execute([id])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Drops a destination's oldest queued items of a kind beyond `keep`.
    pub fn trim_queue(&self, destination: &str, kind: &str, keep: usize) -> Result<usize> {
        let dropped = self.conn.execute(
            "DELETE FROM federation_outbox WHERE destination = ?1 AND kind = ?2 AND id NOT IN
               (SELECT id FROM federation_outbox WHERE destination = ?1 AND kind = ?2
                ORDER BY id DESC LIMIT ?3)",
            params![destination, kind, keep as i64],
        )?;
        Ok(dropped)
    }

    /// Destinations with anything queued.
    pub fn destinations_with_queue(&self) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached("SELECT DISTINCT destination FROM federation_outbox")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The `limit` destinations with the most items queued, deepest first,
    /// and their item counts (for metrics).
    pub fn deepest_queues(&self, limit: usize) -> Result<Vec<(String, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT destination, COUNT(*) AS depth FROM federation_outbox
             GROUP BY destination ORDER BY depth DESC, destination LIMIT ?1",
        )?;
        let rows = statement.query_map([limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The `limit` destinations in backoff (failing now), most failures in
    /// a row first, with their health (for metrics).
    pub fn failing_destinations(&self, limit: usize) -> Result<Vec<(String, DestinationHealth)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT destination, failures, retry_after_ts FROM federation_destinations
             WHERE failures > 0 ORDER BY failures DESC, destination LIMIT ?1",
        )?;
        let rows = statement.query_map([limit as i64], |row| {
            Ok((row.get(0)?, DestinationHealth { failures: row.get(1)?, retry_after_ts: row.get(2)? }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A destination's failure count and retry time.
    pub fn destination_health(&self, destination: &str) -> Result<DestinationHealth> {
        let mut statement = self.conn.prepare_cached(
            "SELECT failures, retry_after_ts FROM federation_destinations WHERE destination = ?1",
        )?;
        let health = statement
            .query_row([destination], |row| {
                Ok(DestinationHealth { failures: row.get(0)?, retry_after_ts: row.get(1)? })
            })
            .optional()?;
        Ok(health.unwrap_or_default())
    }

    /// Records a failed attempt and when to retry.
    pub fn destination_failed(&self, destination: &str, retry_after_ts: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO federation_destinations (destination, failures, retry_after_ts) VALUES (?1, 1, ?2)
             ON CONFLICT (destination) DO UPDATE SET failures = failures + 1, retry_after_ts = ?2",
            params![destination, retry_after_ts],
        )?;
        Ok(())
    }

    /// Records that the destination accepted a transaction from us (and so is up).
    pub fn destination_accepted(&self, destination: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO federation_destinations (destination, failures, last_success_ts) VALUES (?1, 0, ?2)
             ON CONFLICT (destination) DO UPDATE SET failures = 0, retry_after_ts = NULL,
                last_success_ts = ?2",
            params![destination, now_ms()],
        )?;
        Ok(())
    }

    /// Records that the destination is known to be back (it sent us something):
    /// its backoff ends, but nothing says it accepted anything from us.
    pub fn destination_up(&self, destination: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO federation_destinations (destination, failures) VALUES (?1, 0)
             ON CONFLICT (destination) DO UPDATE SET failures = 0, retry_after_ts = NULL",
            [destination],
        )?;
        Ok(())
    }

    /// When the destination last accepted a transaction from us, if ever.
    pub fn destination_last_accepted(&self, destination: &str) -> Result<Option<i64>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT last_success_ts FROM federation_destinations WHERE destination = ?1")?;
        Ok(statement.query_row([destination], |row| row.get(0)).optional()?.flatten())
    }

    /// The rooms where a user of `our_server` is joined, sorted.
    pub fn rooms_with_members_of(&self, our_server: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT room_id, state_key FROM current_state WHERE kind = 'm.room.member'
               AND membership = 'join' AND state_key LIKE '%:' || ?1",
        )?;
        let rows = statement
            .query_map([our_server], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
        let mut rooms = Vec::new();
        for row in rows {
            let (room_id, user_id) = row?;
            // LIKE treats `_` as a wildcard: keep exact server names only.
            if crate::protocol::power_levels::domain_of(&user_id) == Some(our_server) {
                rooms.push(room_id);
            }
        }
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }

    /// The answer we gave to an inbound transaction, if we saw it.
    pub fn inbound_transaction(&self, origin: &str, txn_id: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT response FROM federation_inbound_transactions WHERE origin = ?1 AND txn_id = ?2",
        )?;
        Ok(statement.query_row(params![origin, txn_id], |row| row.get(0)).optional()?)
    }

    /// Remembers an inbound transaction's answer (and forgets those older than a day).
    pub fn record_inbound_transaction(&self, origin: &str, txn_id: &str, response: &str) -> Result<()> {
        let now = now_ms();
        self.conn.execute(
            "INSERT OR REPLACE INTO federation_inbound_transactions (origin, txn_id, response, received_ts)
             VALUES (?1, ?2, ?3, ?4)",
            params![origin, txn_id, response, now],
        )?;
        self.conn.execute(
            "DELETE FROM federation_inbound_transactions WHERE received_ts < ?1",
            [now - 86_400_000],
        )?;
        Ok(())
    }

    /// Remembers an invite of a local user into a room we are not in.
    pub fn store_remote_invite(&self, invite: &RemoteInvite) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO remote_invites (room_id, user_id, event_id, room_version, inviter,
                invite_state, stream_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                invite.room_id,
                invite.user_id,
                invite.event_id,
                invite.room_version,
                invite.inviter,
                invite.invite_state,
                invite.stream_id
            ],
        )?;
        Ok(())
    }

    /// A user's pending invites into rooms we are not in.
    pub fn remote_invites(&self, user_id: &str) -> Result<Vec<RemoteInvite>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT room_id, user_id, event_id, room_version, inviter, invite_state, stream_id
             FROM remote_invites WHERE user_id = ?1",
        )?;
        let rows = statement.query_map([user_id], |row| {
            Ok(RemoteInvite {
                room_id: row.get(0)?,
                user_id: row.get(1)?,
                event_id: row.get(2)?,
                room_version: row.get(3)?,
                inviter: row.get(4)?,
                invite_state: row.get(5)?,
                stream_id: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a remote invite (accepted, rejected or superseded).
    pub fn delete_remote_invite(&self, room_id: &str, user_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM remote_invites WHERE room_id = ?1 AND user_id = ?2",
            params![room_id, user_id],
        )?;
        Ok(())
    }

    /// Every other server with joined members in a room where we have joined members.
    pub fn servers_sharing_rooms_with(&self, our_server: &str) -> Result<Vec<String>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT state_key FROM current_state WHERE kind = 'm.room.member' AND membership = 'join'
               AND room_id IN (SELECT room_id FROM current_state WHERE kind = 'm.room.member'
                               AND membership = 'join' AND state_key LIKE '%:' || ?1)",
        )?;
        let rows = statement.query_map([our_server], |row| row.get::<_, String>(0))?;
        let mut servers: Vec<String> = Vec::new();
        for user_id in rows {
            if let Some((_, server)) = user_id?.split_once(':') {
                if !servers.iter().any(|known| known == server) {
                    servers.push(server.to_string());
                }
            }
        }
        Ok(servers)
    }

    /// A room's oldest timeline event (where backfill continues from).
    pub fn earliest_event(&self, room_id: &str) -> Result<Option<super::StoredEvent>> {
        let sql = format!(
            "SELECT {} FROM events WHERE room_id = ?1 AND outlier = 0 ORDER BY stream_ordering LIMIT 1",
            super::rooms::EVENT_COLUMNS
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        Ok(statement.query_row([room_id], super::rooms::event_from_row).optional()?)
    }

    /// The lowest stream position in use (backfilled history goes below it).
    pub fn min_stream_ordering(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MIN(stream_ordering), 0) FROM events", [], |row| row.get(0))?)
    }

    /// Starts an empty state group of its own (a full snapshot) for a state
    /// that arrives in batches (a remote join's answer), which
    /// [`Storage::add_to_state_group`] fills; returns the group.
    pub fn new_state_group(&self, room_id: &str) -> Result<i64> {
        super::rooms::insert_group(&self.conn, room_id, None, 0, &super::StateMap::new())
    }

    /// Adds `(type, state key, event ID)` entries to a group started by
    /// [`Storage::new_state_group`], in one transaction; an entry for a key
    /// the group holds already replaces it.
    pub fn add_to_state_group(&mut self, group: i64, entries: &[(&str, &str, &str)]) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO state_group_entries (group_id, kind, state_key, event_id)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (kind, state_key, event_id) in entries {
                insert.execute(params![group, kind, state_key, event_id])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Drops a state group nothing refers to (that of a remote join that failed).
    pub fn delete_state_group(&mut self, group: i64) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        transaction.execute("DELETE FROM state_group_entries WHERE group_id = ?1", [group])?;
        transaction.execute("DELETE FROM state_groups WHERE group_id = ?1", [group])?;
        transaction.commit()?;
        Ok(())
    }

    /// Makes a room's current state that of `group`, a full snapshot (a
    /// [`Storage::new_state_group`]), one slice of at most `limit` keys per
    /// call, each member's membership read from its event: the first call
    /// (`after` is `None`) clears the room's current state, each call
    /// answers the last key it copied, to pass as `after` to the next, and
    /// `None` once the group is copied. Each slice is a transaction of its
    /// own, so a big room's state is never one long write.
    pub fn current_state_from_group(
        &mut self,
        room_id: &str,
        group: i64,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> Result<Option<(String, String)>> {
        let transaction = self.conn.savepoint()?;
        let copy = |from: &str| {
            format!(
                "INSERT OR REPLACE INTO current_state (room_id, kind, state_key, event_id, membership)
                 SELECT ?1, e.kind, e.state_key, e.event_id,
                        CASE WHEN e.kind = 'm.room.member'
                              AND json_type(ev.json, '$.content.membership') = 'text'
                             THEN json_extract(ev.json, '$.content.membership') END
                 FROM state_group_entries e LEFT JOIN events ev ON ev.event_id = e.event_id
                 WHERE e.group_id = ?2 {from}
                 ORDER BY e.kind, e.state_key LIMIT ?3
                 RETURNING kind, state_key"
            )
        };
        let limit = limit.max(1);
        let key = |row: &rusqlite::Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
        let copied: Vec<(String, String)> = match after {
            None => {
                transaction.execute("DELETE FROM current_state WHERE room_id = ?1", [room_id])?;
                let mut statement = transaction.prepare_cached(&copy(""))?;
                let rows = statement.query_map(params![room_id, group, limit as i64], key)?;
                rows.collect::<Result<_, _>>()?
            }
            Some((kind, state_key)) => {
                let mut statement =
                    transaction.prepare_cached(&copy("AND (e.kind, e.state_key) > (?4, ?5)"))?;
                let rows =
                    statement.query_map(params![room_id, group, limit as i64, kind, state_key], key)?;
                rows.collect::<Result<_, _>>()?
            }
        };
        transaction.commit()?;
        if copied.len() < limit {
            return Ok(None);
        }
        Ok(copied.into_iter().max())
    }

    /// Stores history fetched from another server (backfill) at a given
    /// (negative) stream position with a given state group: it joins the
    /// timeline before everything seen live, and changes no current state.
    /// A searchable event is indexed with it.
    pub fn store_backfilled(
        &mut self,
        event: &super::NewEvent<'_>,
        state_group: Option<i64>,
    ) -> Result<bool> {
        let transaction = self.conn.savepoint()?;
        if transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE event_id = ?1 AND outlier = 0)",
            [event.event_id],
            |row| row.get::<_, bool>(0),
        )? {
            return Ok(false);
        }
        transaction.execute("DELETE FROM events WHERE event_id = ?1 AND outlier = 1", [event.event_id])?;
        transaction.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, kind, state_key, sender, depth,
                origin_server_ts, json, state_group, rel_type, relates_to)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                event.stream_ordering,
                event.event_id,
                event.room_id,
                event.kind,
                event.state_key,
                event.sender,
                event.depth,
                event.origin_server_ts,
                serde_json::Value::Object(event.json.clone()).to_string(),
                state_group,
                event.rel_type,
                event.relates_to,
            ],
        )?;
        super::search::index_event_at(&transaction, event.stream_ordering)?;
        transaction.commit()?;
        Ok(true)
    }

    /// Stores many outliers in one transaction (events already stored stay as they are).
    pub fn store_outliers(
        &mut self,
        room_id: &str,
        events: &[(&str, &serde_json::Map<String, serde_json::Value>, i64)],
    ) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO events (stream_ordering, event_id, room_id, kind, state_key, sender,
                    depth, origin_server_ts, json, outlier)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)",
            )?;
            for (event_id, json, stream_ordering) in events {
                let text = |key: &str| json.get(key).and_then(|value| value.as_str());
                let number = |key: &str| json.get(key).and_then(|value| value.as_i64()).unwrap_or(0);
                insert.execute(params![
                    stream_ordering,
                    event_id,
                    room_id,
                    text("type").unwrap_or_default(),
                    text("state_key"),
                    text("sender").unwrap_or_default(),
                    number("depth"),
                    number("origin_server_ts"),
                    serde_json::Value::Object((*json).clone()).to_string(),
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Stores an event we only need for its auth chain or state (an outlier):
    /// not in the timeline, no state of its own.
    pub fn store_outlier(
        &self,
        event_id: &str,
        room_id: &str,
        json: &serde_json::Map<String, serde_json::Value>,
        stream_ordering: i64,
    ) -> Result<()> {
        let kind = json.get("type").and_then(|v| v.as_str()).unwrap_or_default();
        let state_key = json.get("state_key").and_then(|v| v.as_str());
        let sender = json.get("sender").and_then(|v| v.as_str()).unwrap_or_default();
        let depth = json.get("depth").and_then(|v| v.as_i64()).unwrap_or(0);
        let ts = json.get("origin_server_ts").and_then(|v| v.as_i64()).unwrap_or(0);
        self.conn.execute(
            "INSERT OR IGNORE INTO events (stream_ordering, event_id, room_id, kind, state_key, sender, depth,
                origin_server_ts, json, outlier)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)",
            params![stream_ordering, event_id, room_id, kind, state_key, sender, depth, ts,
                serde_json::Value::Object(json.clone()).to_string()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use crate::storage::StateMap;

    /// A state that arrives in batches goes to its group as it comes (a key
    /// given again replaces the earlier entry), and becomes the room's
    /// current state in slices: the first clears what the room had, each
    /// member entry gets the membership its event sets, and the slices end
    /// once the group is copied.
    #[test]
    fn a_state_in_batches_becomes_the_current_state_in_slices() {
        let mut storage = crate::storage::in_memory();
        storage.create_room("!r:x", "11").unwrap();
        let event = |n: usize, membership: Value| -> Map<String, Value> {
            let Value::Object(json) = json!({"event_id": format!("$m{n}"), "type": "m.room.member",
                "state_key": format!("@u{n}:x"), "content": {"membership": membership}})
            else {
                unreachable!()
            };
            json
        };
        let events: Vec<Map<String, Value>> = (0..7)
            .map(|n| {
                event(
                    n,
                    if n == 3 {
                        json!(5)
                    } else if n % 2 == 0 {
                        json!("join")
                    } else {
                        json!("leave")
                    },
                )
            })
            .collect();
        let ids: Vec<String> = (0..7).map(|n| format!("$m{n}")).collect();
        let rows: Vec<(&str, &Map<String, Value>, i64)> = events
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(n, (json, id))| (id.as_str(), json, n as i64 + 1))
            .collect();
        storage.store_outliers("!r:x", &rows).unwrap();
        storage
            .conn
            .execute(
                "INSERT INTO current_state (room_id, kind, state_key, event_id) VALUES ('!r:x', 'old', '', '$old')",
                [],
            )
            .unwrap();

        let group = storage.new_state_group("!r:x").unwrap();
        let keys: Vec<String> = (0..7).map(|n| format!("@u{n}:x")).collect();
        let entry = |n: usize| ("m.room.member", keys[n].as_str(), ids[n].as_str());
        storage
            .add_to_state_group(group, &[entry(0), entry(1), ("m.room.member", keys[2].as_str(), "$early")])
            .unwrap();
        storage.add_to_state_group(group, &[entry(2), entry(3), entry(4), entry(5), entry(6)]).unwrap();
        let expected: StateMap =
            (0..7).map(|n| (("m.room.member".to_string(), keys[n].clone()), ids[n].clone())).collect();
        assert_eq!(storage.state_of_group(group).unwrap(), expected);

        let mut slices = 0;
        let mut after = None;
        loop {
            after = storage.current_state_from_group("!r:x", group, after.as_ref(), 3).unwrap();
            slices += 1;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(slices, 3);
        assert_eq!(storage.current_state("!r:x").unwrap(), expected);
        let mut joined = storage.members_with("!r:x", "join").unwrap();
        joined.sort();
        assert_eq!(joined, ["@u0:x", "@u2:x", "@u4:x", "@u6:x"]);
        assert_eq!(storage.members_with("!r:x", "leave").unwrap().len(), 2);
        assert_eq!(storage.membership("!r:x", "@u3:x").unwrap(), None, "a membership that is not a string");

        storage.delete_state_group(group).unwrap();
        assert!(storage.state_of_group(group).unwrap().is_empty());
    }
}
