//! What each sliding sync connection was sent, kept in memory and bounded:
//! [`MAX_CONNECTIONS`] on the node, [`MAX_CONNECTIONS_PER_DEVICE`] per
//! device (the least recently used going first), four positions each. A
//! position names a connection's random ID and a serial, so one from before
//! a restart, or of another connection, is unknown (400 `M_UNKNOWN_POS`).
//! Spec: <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md#connections>.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::{KnownRoom, Wants};
use crate::error::{Error, Result};

/// Connections kept per device (the SDK opens two); past this the least
/// recently used one is forgotten.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 10;
/// Connections kept on the node.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Positions kept per connection: the one last used and the answers given
/// from it (a retry, a cancelled long poll answering late).
const MAX_POSITIONS: usize = 4;
/// Member events remembered per room and connection as sent under `$LAZY`;
/// past this the memory of the room starts over (members are sent again).
const MAX_LAZY_MEMBERS_PER_ROOM: usize = 1000;

/// What a connection was sent of one room.
#[derive(Clone, Debug, Default)]
pub struct SentRoom {
    /// The room's news up to this stream position were sent.
    pub up_to: i64,
    /// The config it was sent under.
    pub wants: Wants,
    /// Member → member event ID, sent under `$LAZY` (shared between
    /// positions until one adds to it).
    pub lazy_members: Rc<HashMap<String, String>>,
    /// The membership it was sent with (a change sends the room anew).
    pub membership: String,
    /// Whether it was sent as a DM.
    pub is_dm: bool,
}

impl SentRoom {
    /// Remembers members sent under `$LAZY`, starting over past the bound.
    pub fn remember_members<'a>(&mut self, sent: impl Iterator<Item = (&'a str, &'a str)>) {
        for (member, event_id) in sent {
            if self.lazy_members.get(member).is_some_and(|known| known == event_id) {
                continue;
            }
            let members = Rc::make_mut(&mut self.lazy_members);
            if members.len() >= MAX_LAZY_MEMBERS_PER_ROOM {
                members.clear();
            }
            members.insert(member.to_owned(), event_id.to_owned());
        }
    }
}

/// What a connection knows at one position.
#[derive(Clone, Debug, Default)]
pub struct ConnectionState {
    /// The stream positions the position stands for.
    pub stream: i64,
    pub typing: i64,
    pub rooms: HashMap<String, Rc<SentRoom>>,
    /// What was learnt of the joined rooms at `stream` (read again only
    /// for rooms with events since).
    pub known: Rc<HashMap<String, KnownRoom>>,
}

/// A connection: its random ID (so a position from before a restart, or of
/// another connection, is unknown) and its last positions.
struct Connection {
    id: String,
    last_used: u64,
    /// The serial of the next position (never reused, so a position answered
    /// but abandoned never names another state).
    next_serial: u64,
    /// The position the client last used and the ones answered from it
    /// (a retry of it is still served), at most [`MAX_POSITIONS`].
    positions: Vec<(u64, Rc<ConnectionState>)>,
}

/// (user, device, conn_id).
pub type ConnectionKey = (String, String, String);

/// Every connection's memory, bounded.
#[derive(Default)]
pub struct Connections {
    connections: RefCell<HashMap<ConnectionKey, Connection>>,
    clock: Cell<u64>,
}

/// The error for a position the server does not know (any more).
fn unknown_pos() -> Error {
    Error::matrix(400, "M_UNKNOWN_POS", "unknown or expired position; start the connection again")
}

impl Connections {
    fn tick(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }

    /// The state at `pos`; forgets the positions before it (the client has
    /// the answer that gave `pos`).
    pub fn at(&self, key: &ConnectionKey, pos: &str) -> Result<Rc<ConnectionState>> {
        let (id, serial) = pos.rsplit_once('_').ok_or_else(unknown_pos)?;
        let serial: u64 = serial.parse().map_err(|_| unknown_pos())?;
        let now = self.tick();
        let mut connections = self.connections.borrow_mut();
        let connection =
            connections.get_mut(key).filter(|connection| connection.id == id).ok_or_else(unknown_pos)?;
        connection.last_used = now;
        connection.positions.retain(|(kept, _)| *kept >= serial);
        connection
            .positions
            .iter()
            .find(|(kept, _)| *kept == serial)
            .map(|(_, state)| Rc::clone(state))
            .ok_or_else(unknown_pos)
    }

    /// Records the state an answer leaves the connection in, answered from
    /// `from` (`None`: a fresh connection, which replaces any of that key);
    /// returns the answer's `pos`.
    ///
    /// Several answers may come from one position: a client cancels a long
    /// poll and sends it again with the same `pos` (MSC4186 "Connections"),
    /// and the cancelled one may still answer later. So the positions
    /// answered from the same base are all kept (up to [`MAX_POSITIONS`]);
    /// the one the client uses next drops the others ([`Connections::at`]).
    pub fn advance(&self, key: &ConnectionKey, from: Option<&str>, state: ConnectionState) -> String {
        let now = self.tick();
        let mut connections = self.connections.borrow_mut();
        let from = from.and_then(|pos| pos.rsplit_once('_'));
        let base = from.and_then(|(_, serial)| serial.parse::<u64>().ok());
        if let (Some((id, _)), Some(existing)) = (from, connections.get(key)) {
            if existing.id != id {
                // The client started this connection over: the late answer of
                // the old one is kept nowhere, and its position is unknown.
                return format!("{id}_0");
            }
        }
        let existing = connections.get_mut(key).filter(|_| base.is_some());
        let connection = match existing {
            Some(connection) => connection,
            // A fresh connection, or one forgotten while the request waited
            // (the answer is still a consistent start for it).
            None => {
                connections.remove(key);
                evict(&mut connections, key);
                let connection = Connection {
                    id: crate::credentials::random_string(8),
                    last_used: now,
                    next_serial: 1,
                    positions: Vec::new(),
                };
                connections.entry(key.clone()).or_insert(connection)
            }
        };
        while connection.positions.len() >= MAX_POSITIONS {
            let oldest = connection
                .positions
                .iter()
                .enumerate()
                .filter(|(_, (serial, _))| Some(*serial) != base)
                .min_by_key(|(_, (serial, _))| *serial)
                .map(|(index, _)| index);
            match oldest {
                Some(index) => connection.positions.remove(index),
                None => break,
            };
        }
        let serial = connection.next_serial;
        connection.next_serial += 1;
        connection.positions.push((serial, Rc::new(state)));
        connection.last_used = now;
        format!("{}_{}", connection.id, serial)
    }

    /// How many connections are kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.connections.borrow().len()
    }
}

/// Makes room for one more connection of `key`'s device: the device's least
/// recently used goes past [`MAX_CONNECTIONS_PER_DEVICE`], the node's past
/// [`MAX_CONNECTIONS`].
fn evict(connections: &mut HashMap<ConnectionKey, Connection>, key: &ConnectionKey) {
    let same_device = |other: &ConnectionKey| other.0 == key.0 && other.1 == key.1;
    let oldest = |connections: &HashMap<ConnectionKey, Connection>, device_only: bool| {
        connections
            .iter()
            .filter(|(other, _)| !device_only || same_device(other))
            .min_by_key(|(_, connection)| connection.last_used)
            .map(|(other, _)| other.clone())
    };
    if connections.keys().filter(|other| same_device(other)).count() >= MAX_CONNECTIONS_PER_DEVICE {
        if let Some(victim) = oldest(connections, true) {
            connections.remove(&victim);
        }
    }
    if connections.len() >= MAX_CONNECTIONS {
        if let Some(victim) = oldest(connections, false) {
            connections.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_advance_survive_retries_and_are_unknown_elsewhere() {
        let connections = Connections::default();
        let key: ConnectionKey = ("@a:x".into(), "D".into(), "main".into());
        let state = |stream| ConnectionState { stream, ..Default::default() };
        let first = connections.advance(&key, None, state(1));
        assert_eq!(connections.at(&key, &first).unwrap().stream, 1);
        let second = connections.advance(&key, Some(&first), state(2));
        // The client cancelled and sent the first position again; the
        // cancelled request answers late, after the retry.
        assert_eq!(connections.at(&key, &first).unwrap().stream, 1);
        let retried = connections.advance(&key, Some(&first), state(3));
        let late = connections.advance(&key, Some(&first), state(4));
        assert!(second != retried && retried != late);
        // The client goes on from the answer it processed.
        assert_eq!(connections.at(&key, &retried).unwrap().stream, 3);
        // Using it forgets the older positions.
        assert!(connections.at(&key, &first).is_err());
        assert!(connections.at(&key, &second).is_err());
        // Many retries of one position keep it and a bounded few answers.
        for stream in 0..10 {
            connections.advance(&key, Some(&retried), state(stream));
        }
        assert_eq!(connections.at(&key, &retried).unwrap().stream, 3);
        let other: ConnectionKey = ("@a:x".into(), "D".into(), "other".into());
        assert!(connections.at(&other, &retried).is_err());
        assert!(connections.at(&key, "junk").is_err());
        // A fresh connection replaces the old one's positions, and a late
        // answer of the old one is kept nowhere.
        let fresh = connections.advance(&key, None, state(9));
        assert!(connections.at(&key, &retried).is_err());
        let stale = connections.advance(&key, Some(&retried), state(10));
        assert!(connections.at(&key, &stale).is_err());
        assert_eq!(connections.at(&key, &fresh).unwrap().stream, 9);
    }

    #[test]
    fn lazy_members_are_shared_until_changed_and_bounded() {
        let mut room = SentRoom::default();
        room.remember_members([("@b:x", "$1")].into_iter());
        let earlier = room.clone();
        // Nothing new: the memory stays shared with the earlier position.
        room.remember_members([("@b:x", "$1")].into_iter());
        assert!(Rc::ptr_eq(&room.lazy_members, &earlier.lazy_members));
        room.remember_members([("@b:x", "$2")].into_iter());
        assert_eq!(earlier.lazy_members.get("@b:x").map(String::as_str), Some("$1"));
        assert_eq!(room.lazy_members.get("@b:x").map(String::as_str), Some("$2"));
        let names: Vec<String> = (0..MAX_LAZY_MEMBERS_PER_ROOM + 10).map(|n| format!("@{n}:x")).collect();
        room.remember_members(names.iter().map(|name| (name.as_str(), "$1")));
        assert!(room.lazy_members.len() <= MAX_LAZY_MEMBERS_PER_ROOM);
    }

    #[test]
    fn connections_per_device_are_bounded() {
        let connections = Connections::default();
        let keys: Vec<ConnectionKey> =
            (0..MAX_CONNECTIONS_PER_DEVICE + 3).map(|n| ("@a:x".into(), "D".into(), n.to_string())).collect();
        let positions: Vec<String> =
            keys.iter().map(|key| connections.advance(key, None, ConnectionState::default())).collect();
        assert_eq!(connections.len(), MAX_CONNECTIONS_PER_DEVICE);
        // The oldest went first.
        assert!(connections.at(&keys[0], &positions[0]).is_err());
        let last = keys.len() - 1;
        assert!(connections.at(&keys[last], &positions[last]).is_ok());
    }
}
