//! What each sliding sync connection was sent, kept in memory and bounded:
//! [`MAX_CONNECTIONS`] on the node, [`MAX_CONNECTIONS_PER_DEVICE`] per
//! device (the least recently used going first), two positions each. A
//! position names a connection's random ID and a serial, so one from before
//! a restart, or of another connection, is unknown (400 `M_UNKNOWN_POS`).
//! Spec: <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md#connections>.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::Wants;
use crate::error::{Error, Result};

/// Connections kept per device (the SDK opens two); past this the least
/// recently used one is forgotten.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 10;
/// Connections kept on the node.
pub const MAX_CONNECTIONS: usize = 10_000;
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
    /// Member → member event ID, sent under `$LAZY`.
    pub lazy_members: HashMap<String, String>,
    /// The membership it was sent with (a change sends the room anew).
    pub membership: String,
    /// Whether it was sent as a DM.
    pub is_dm: bool,
}

impl SentRoom {
    /// Remembers members sent under `$LAZY`, starting over past the bound.
    pub fn remember_members<'a>(&mut self, sent: impl Iterator<Item = (&'a str, &'a str)>) {
        for (member, event_id) in sent {
            if self.lazy_members.len() >= MAX_LAZY_MEMBERS_PER_ROOM {
                self.lazy_members.clear();
            }
            self.lazy_members.insert(member.to_owned(), event_id.to_owned());
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
    /// The bump stamps of the joined rooms at `stream` (read again only
    /// for rooms with events since).
    pub bumps: Rc<HashMap<String, i64>>,
}

/// A connection: its random ID (so a position from before a restart, or of
/// another connection, is unknown) and its last positions.
struct Connection {
    id: String,
    last_used: u64,
    /// The serial of the next position (never reused, so a position answered
    /// but abandoned never names another state).
    next_serial: u64,
    /// At most two: the position the client last used, and the one answered
    /// from it (a retry of the older one is still served).
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
    pub fn advance(&self, key: &ConnectionKey, from: Option<&str>, state: ConnectionState) -> String {
        let now = self.tick();
        let mut connections = self.connections.borrow_mut();
        let from_serial =
            from.and_then(|pos| pos.rsplit_once('_')).and_then(|(_, serial)| serial.parse::<u64>().ok());
        let existing = connections.get_mut(key).filter(|_| from_serial.is_some());
        let connection = match existing {
            Some(connection) => connection,
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
        // Positions answered from the same base but not used are dropped:
        // one request at a time per connection (MSC4186 "Connections").
        if let Some(base) = from_serial {
            connection.positions.retain(|(kept, _)| *kept <= base);
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
    fn positions_advance_survive_one_retry_and_are_unknown_elsewhere() {
        let connections = Connections::default();
        let key: ConnectionKey = ("@a:x".into(), "D".into(), "main".into());
        let first = connections.advance(&key, None, ConnectionState { stream: 1, ..Default::default() });
        assert_eq!(connections.at(&key, &first).unwrap().stream, 1);
        let second =
            connections.advance(&key, Some(&first), ConnectionState { stream: 2, ..Default::default() });
        // The answer was lost: the client retries the first position.
        assert_eq!(connections.at(&key, &first).unwrap().stream, 1);
        let again =
            connections.advance(&key, Some(&first), ConnectionState { stream: 3, ..Default::default() });
        assert_ne!(again, second);
        assert_eq!(connections.at(&key, &again).unwrap().stream, 3);
        // Using the newer position forgets the older one.
        assert!(connections.at(&key, &first).is_err());
        let other: ConnectionKey = ("@a:x".into(), "D".into(), "other".into());
        assert!(connections.at(&other, &again).is_err());
        assert!(connections.at(&key, "junk").is_err());
        // A fresh connection replaces the old one's positions.
        connections.advance(&key, None, ConnectionState::default());
        assert!(connections.at(&key, &again).is_err());
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
