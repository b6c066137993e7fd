//! Reading a state group's events and their auth chain in pages, on a
//! read-only connection of its own, for answers too big to hold (a big
//! room's `send_join`, `/state` and `/state_ids`).
//!
//! No page is more than the caller's limit of events and bytes of event
//! JSON ([`PageLimit`]), and each page is a statement of its own: no read transaction stays open while the answer
//! waits for its socket, so the WAL can still be folded. State groups never
//! change once written (and events only by redaction), so a group read page
//! by page is one consistent state however many events arrive meanwhile.
//! The auth chain's walk keeps event IDs only, in a temporary table of this
//! connection that spills to a file rather than grow the heap.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>,
//! <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1stateroomid>,
//! <https://spec.matrix.org/latest/server-server-api/#auth-events-selection>.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::batch::string_list;
use super::rooms::MAX_STATE_CHAIN;
use crate::error::{Error, Result};

/// This connection's page cache, KiB: pages are read front to back once.
const READER_CACHE_KIB: i64 = 512;

/// The ID an `auth_events` item names: the item itself (room versions 3 and
/// up) or the first of its `[id, hashes]` pair (versions 1 and 2).
const AUTH_EVENT_ID: &str =
    "CASE a.type WHEN 'text' THEN a.value WHEN 'array' THEN json_extract(a.value, '$[0]') END";

/// How much one page holds at most: `events` events, and no more events
/// once their JSON reaches `bytes` (a page always holds one, and a PDU is at
/// most 64 KiB, so a page is under `bytes` + 64 KiB).
#[derive(Clone, Copy, Debug)]
pub struct PageLimit {
    pub events: usize,
    pub bytes: usize,
}

/// The first rows of `rows` within `limit`, `size` telling each one's bytes.
fn take_within<T>(
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    limit: PageLimit,
    size: impl Fn(&T) -> usize,
) -> Result<Vec<T>> {
    let mut page = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row = row?;
        bytes += size(&row);
        page.push(row);
        if limit.events <= page.len() || limit.bytes <= bytes {
            break;
        }
    }
    Ok(page)
}

/// One entry of a state, with its event's stored PDU text (`None` when the
/// event is not stored here).
pub struct StateEntryEvent {
    pub kind: String,
    pub state_key: String,
    pub event_id: String,
    pub json: Option<String>,
}

/// A page of an auth chain: (event ID, stored PDU text) of each event, and
/// the position to go on from.
pub type ChainPage = (Vec<(String, String)>, Option<i64>);

/// Where a walk over a state group's state has got to: the groups from the
/// group up to its full snapshot (nearest first), the one being read, and
/// the last key read in it. Each key is read from the nearest group that
/// sets it, so each comes once, with its value in the state.
pub struct StateWalk {
    chain: Vec<i64>,
    position: usize,
    after: Option<(String, String)>,
}

/// A read-only connection of its own (see the module's documentation).
pub struct StateReader {
    conn: Connection,
}

impl StateReader {
    /// Opens the database file read-only, with an empty auth chain.
    pub fn open(path: &Path) -> Result<StateReader> {
        let conn = super::open_reader(path, READER_CACHE_KIB)?;
        // The temporary table goes to a file past the cache, not to the heap.
        conn.pragma_update(None, "temp_store", "FILE")?;
        conn.execute_batch(
            "CREATE TEMP TABLE auth_chain (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE)",
        )?;
        Ok(StateReader { conn })
    }

    /// A walk over the state of `group` from its start.
    pub fn walk(&self, group: i64) -> Result<StateWalk> {
        let mut chain = Vec::new();
        let mut next = Some(group);
        let mut parent = self.conn.prepare_cached("SELECT parent FROM state_groups WHERE group_id = ?1")?;
        while let Some(group) = next {
            if MAX_STATE_CHAIN + 1 < chain.len() as i64 {
                return Err(Error::Internal(format!("state group {group} chain is too long")));
            }
            chain.push(group);
            next = parent.query_row([group], |row| row.get(0)).optional()?.flatten();
        }
        Ok(StateWalk { chain, position: 0, after: None })
    }

    /// The next entries of the walk's state within `limit`, with their
    /// events; `None` once it has given them all.
    pub fn state_page(&self, walk: &mut StateWalk, limit: PageLimit) -> Result<Option<Vec<StateEntryEvent>>> {
        // A key is read from a group only if no nearer group sets it.
        const FROM: &str = "FROM state_group_entries e LEFT JOIN events ev ON ev.event_id = e.event_id
             WHERE e.group_id = ?1
               AND NOT EXISTS (SELECT 1 FROM json_each(?2) nearer JOIN state_group_entries o
                               ON o.group_id = nearer.value AND o.kind = e.kind AND o.state_key = e.state_key)";
        const COLUMNS: &str = "SELECT e.kind, e.state_key, e.event_id, ev.json";
        while let Some(&group) = walk.chain.get(walk.position) {
            let nearer = serde_json::to_string(&walk.chain[..walk.position])
                .map_err(|error| Error::Internal(error.to_string()))?;
            let row = |row: &rusqlite::Row<'_>| {
                Ok(StateEntryEvent {
                    kind: row.get(0)?,
                    state_key: row.get(1)?,
                    event_id: row.get(2)?,
                    json: row.get(3)?,
                })
            };
            let events = limit.events.max(1) as i64;
            let size = |entry: &StateEntryEvent| entry.json.as_ref().map_or(0, String::len);
            let page: Vec<StateEntryEvent> = match &walk.after {
                None => {
                    let sql = format!("{COLUMNS} {FROM} ORDER BY e.kind, e.state_key LIMIT ?3");
                    let mut statement = self.conn.prepare_cached(&sql)?;
                    let rows = statement.query_map(params![group, nearer, events], row)?;
                    take_within(rows, limit, size)?
                }
                Some((kind, state_key)) => {
                    let sql = format!(
                        "{COLUMNS} {FROM} AND (e.kind, e.state_key) > (?4, ?5)
                         ORDER BY e.kind, e.state_key LIMIT ?3"
                    );
                    let mut statement = self.conn.prepare_cached(&sql)?;
                    let rows = statement.query_map(params![group, nearer, events, kind, state_key], row)?;
                    take_within(rows, limit, size)?
                }
            };
            match page.last() {
                Some(last) => {
                    walk.after = Some((last.kind.clone(), last.state_key.clone()));
                    return Ok(Some(page));
                }
                None => {
                    walk.position += 1;
                    walk.after = None;
                }
            }
        }
        Ok(None)
    }

    /// One event's stored PDU text.
    pub fn event_json(&self, event_id: &str) -> Result<Option<String>> {
        let mut statement = self.conn.prepare_cached("SELECT json FROM events WHERE event_id = ?1")?;
        Ok(statement.query_row([event_id], |row| row.get(0)).optional()?)
    }

    /// Starts the auth chain from these events: their auth events join it
    /// (the events themselves only if one of them is reached in turn).
    pub fn start_auth_chain(&self, event_ids: &[&str]) -> Result<()> {
        let sql = format!(
            "INSERT OR IGNORE INTO temp.auth_chain (event_id)
             SELECT {AUTH_EVENT_ID} AS auth_id
             FROM json_each(?1) s JOIN events ev ON ev.event_id = s.value,
                  json_each(ev.json, '$.auth_events') a
             WHERE auth_id IS NOT NULL"
        );
        self.conn.prepare_cached(&sql)?.execute([string_list(event_ids)])?;
        Ok(())
    }

    /// The next events within `limit` of the auth chain after position
    /// `after` (0 at the start) as (event ID, stored PDU text) (events not
    /// stored here are left out), and the position to go on from (`None`
    /// once the chain is walked). The chain grows as it is read, breadth
    /// first: each page's auth events join its end, each event once.
    pub fn auth_chain_page(&self, after: i64, limit: PageLimit) -> Result<ChainPage> {
        let mut statement = self.conn.prepare_cached(
            "SELECT c.id, c.event_id, ev.json FROM temp.auth_chain c
             LEFT JOIN events ev ON ev.event_id = c.event_id
             WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit.events.max(1) as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<String>>(2)?))
        })?;
        let page = take_within(rows, limit, |(_, _, json)| json.as_ref().map_or(0, String::len))?;
        drop(statement);
        let Some(&(last, _, _)) = page.last() else {
            return Ok((Vec::new(), None));
        };
        let sql = format!(
            "INSERT OR IGNORE INTO temp.auth_chain (event_id)
             SELECT {AUTH_EVENT_ID} AS auth_id
             FROM temp.auth_chain c JOIN events ev ON ev.event_id = c.event_id,
                  json_each(ev.json, '$.auth_events') a
             WHERE c.id > ?1 AND c.id <= ?2 AND auth_id IS NOT NULL"
        );
        self.conn.prepare_cached(&sql)?.execute(params![after, last])?;
        let stored = page.into_iter().filter_map(|(_, event_id, json)| Some((event_id, json?))).collect();
        Ok((stored, Some(last)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Map, Value, json};

    use super::*;
    use crate::storage::{CurrentUpdate, NewEvent, StateAfter, StateMap, Storage};

    fn no_update() -> CurrentUpdate {
        CurrentUpdate {
            state: Vec::new(),
            replace_all: false,
            extremities: Vec::new(),
            outbox: Vec::new(),
            pushes: Vec::new(),
            unread: Vec::new(),
        }
    }

    /// Stores state event `$e{n}` at key `@u{key}:x` with these auth events
    /// (in the room version 3+ form, or v1's pairs when `pairs`), on top of
    /// `parent`; returns its state group.
    fn store(
        storage: &mut Storage,
        n: usize,
        key: usize,
        auth: &[usize],
        pairs: bool,
        parent: Option<i64>,
    ) -> i64 {
        let event_id = format!("$e{n}");
        let state_key = format!("@u{key}:x");
        let auth: Vec<Value> = auth
            .iter()
            .map(|a| if pairs { json!([format!("$e{a}"), {"sha256": "x"}]) } else { json!(format!("$e{a}")) })
            .collect();
        let mut json = Map::new();
        json.insert("event_id".into(), json!(event_id));
        json.insert("auth_events".into(), Value::Array(auth));
        let event = NewEvent {
            stream_ordering: n as i64 + 1,
            event_id: &event_id,
            room_id: "!r:x",
            kind: "m.room.member",
            state_key: Some(&state_key),
            sender: &state_key,
            depth: n as i64,
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
        let changes = StateMap::from([(("m.room.member".to_string(), state_key.clone()), event_id.clone())]);
        storage.persist_event(&event, StateAfter::Delta { parent, changes }, &no_update()).unwrap().unwrap()
    }

    fn ids_of(texts: &[String]) -> Vec<String> {
        texts
            .iter()
            .map(|text| {
                serde_json::from_str::<Value>(text).unwrap()["event_id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// A group several skip-delta steps from its snapshot, with keys set
    /// again on the way, is read in small pages as exactly its state (each
    /// key once, with its latest event), and the auth chain walk finds
    /// every event reachable through `auth_events` once, in either format.
    #[test]
    fn a_state_group_and_its_auth_chain_are_read_in_pages() {
        let dir = std::env::temp_dir().join(format!("hearth-state-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut storage = Storage::open(&dir.join("hearth.db")).unwrap();
        // Events 0..40: event n sets key n % 25 (so keys 0..15 are set twice),
        // authorised by event n - 1 and, from 20 on, by event 3 in v1's pairs.
        let mut group = None;
        for n in 0..40 {
            let auth: Vec<usize> = match n {
                0 => vec![],
                n if n < 20 => vec![n - 1],
                n => vec![n - 1, 3],
            };
            group = Some(store(&mut storage, n, n % 25, &auth, 20 <= n, group));
        }
        let group = group.unwrap();
        let expected = storage.state_of_group(group).unwrap();
        assert_eq!(expected.len(), 25);

        let reader = StateReader::open(&dir.join("hearth.db")).unwrap();
        let mut walk = reader.walk(group).unwrap();
        assert!(1 < walk.chain.len(), "the group is a delta: {:?}", walk.chain);
        let mut read = StateMap::new();
        let mut pages = 0;
        let limit = PageLimit { events: 4, bytes: usize::MAX };
        while let Some(page) = reader.state_page(&mut walk, limit).unwrap() {
            assert!(page.len() <= 4);
            pages += 1;
            for entry in page {
                assert!(entry.json.is_some());
                let previous = read.insert((entry.kind, entry.state_key), entry.event_id);
                assert_eq!(previous, None, "a key came twice");
            }
        }
        assert_eq!(read, expected);
        assert!(7 <= pages, "{pages}");

        // From the latest event, the chain is every event before it.
        reader.start_auth_chain(&["$e39", "$missing"]).unwrap();
        let mut after = 0;
        let mut chain = Vec::new();
        // Two events' worth of bytes: pages of at most three events stop at two.
        let one = reader.event_json("$e5").unwrap().unwrap().len();
        let limit = PageLimit { events: 3, bytes: 2 * one };
        while let (page, Some(last)) = reader.auth_chain_page(after, limit).unwrap() {
            assert!(page.len() <= 2, "{}", page.len());
            let texts: Vec<String> = page.iter().map(|(_, json)| json.clone()).collect();
            let ids: Vec<String> = page.into_iter().map(|(event_id, _)| event_id).collect();
            assert_eq!(ids_of(&texts), ids);
            chain.extend(ids);
            after = last;
        }
        let unique: BTreeSet<&String> = chain.iter().collect();
        assert_eq!(unique.len(), chain.len(), "an event came twice");
        let expected: BTreeSet<String> = (0..39).map(|n| format!("$e{n}")).collect();
        assert_eq!(chain.iter().cloned().collect::<BTreeSet<_>>(), expected);
        // Breadth first: the nearest auth event comes first.
        assert_eq!(chain[0], "$e38");
        assert!(reader.conn.is_autocommit(), "no read transaction is held between pages");
        // A byte bound below one event still gives one event a page.
        let mut walk = reader.walk(group).unwrap();
        let page = reader.state_page(&mut walk, PageLimit { events: 10, bytes: 1 }).unwrap().unwrap();
        assert_eq!(page.len(), 1);
        drop(reader);
        drop(storage);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
