//! Typing notifications: kept in memory only (they expire within seconds),
//! with a serial that orders changes for `/sync` tokens.
//!
//! The serial starts from the wall clock in milliseconds, so tokens issued
//! before a restart still compare lower than any issued after it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::storage::now_ms;

/// Spec-less but Synapse's: a typing notification lasts at most this long.
pub const MAX_TYPING_TIMEOUT_MS: i64 = 120_000;

#[derive(Default)]
struct RoomTyping {
    /// user -> expiry (ms since epoch)
    users: HashMap<String, i64>,
    serial: i64,
}

impl RoomTyping {
    /// Who types here at `now`, sorted.
    fn typing_at(&self, now: i64) -> Vec<String> {
        let mut users: Vec<String> =
            self.users.iter().filter(|(_, expires)| **expires > now).map(|(user, _)| user.clone()).collect();
        users.sort();
        users
    }
}

/// Who is typing where.
pub struct Typing {
    rooms: RefCell<HashMap<String, RoomTyping>>,
    serial: Cell<i64>,
}

impl Default for Typing {
    fn default() -> Self {
        Typing { rooms: RefCell::new(HashMap::new()), serial: Cell::new(now_ms()) }
    }
}

impl Typing {
    /// The latest serial.
    pub fn serial(&self) -> i64 {
        self.serial.get()
    }

    fn bump(&self) -> i64 {
        let next = (self.serial.get() + 1).max(now_ms());
        self.serial.set(next);
        next
    }

    /// Starts or stops `user_id` typing in `room_id`; true if that changed anything.
    pub fn set(&self, room_id: &str, user_id: &str, typing: bool, timeout_ms: i64) -> bool {
        let mut rooms = self.rooms.borrow_mut();
        let room = rooms.entry(room_id.to_string()).or_default();
        let changed = if typing {
            let expires = now_ms() + timeout_ms.clamp(0, MAX_TYPING_TIMEOUT_MS);
            room.users.insert(user_id.to_string(), expires).is_none()
        } else {
            room.users.remove(user_id).is_some()
        };
        if changed {
            room.serial = self.bump();
        }
        changed
    }

    /// Drops expired entries; returns the rooms that changed.
    pub fn expire(&self) -> Vec<String> {
        let now = now_ms();
        let mut changed = Vec::new();
        let mut rooms = self.rooms.borrow_mut();
        for (room_id, room) in rooms.iter_mut() {
            let before = room.users.len();
            room.users.retain(|_, expires| *expires > now);
            if room.users.len() != before {
                changed.push(room_id.clone());
            }
        }
        for room_id in &changed {
            let serial = self.bump();
            if let Some(room) = rooms.get_mut(room_id) {
                room.serial = serial;
            }
        }
        rooms.retain(|_, room| !room.users.is_empty() || room.serial > now - MAX_TYPING_TIMEOUT_MS);
        changed
    }

    /// The users typing in a room, if that changed after serial `since`
    /// (`None` for "no change to report").
    pub fn changed_since(&self, room_id: &str, since: Option<i64>) -> Option<Vec<String>> {
        let rooms = self.rooms.borrow();
        let now = now_ms();
        match rooms.get(room_id) {
            Some(room) if since.is_none_or(|since| room.serial > since) => {
                let users = room.typing_at(now);
                (since.is_some() || !users.is_empty()).then_some(users)
            }
            _ => None,
        }
    }

    /// The rooms whose typing changed after serial `since`, with who types
    /// there now (application services get these as `m.typing` events).
    pub fn changed_rooms_since(&self, since: i64) -> Vec<(String, Vec<String>)> {
        let rooms = self.rooms.borrow();
        let now = now_ms();
        let mut changed: Vec<(String, Vec<String>)> = rooms
            .iter()
            .filter(|(_, room)| room.serial > since)
            .map(|(room_id, room)| (room_id.clone(), room.typing_at(now)))
            .collect();
        changed.sort();
        changed
    }

    /// The soonest expiry of anyone typing, if anyone is.
    pub fn next_expiry(&self) -> Option<i64> {
        self.rooms.borrow().values().flat_map(|room| room.users.values().copied()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_changes_bump_the_serial_and_report_once() {
        let typing = Typing::default();
        let start = typing.serial();
        assert!(typing.set("!r", "@a:x", true, 30_000));
        assert!(!typing.set("!r", "@a:x", true, 30_000));
        assert_eq!(typing.changed_since("!r", Some(start)), Some(vec!["@a:x".to_string()]));
        assert_eq!(typing.changed_since("!r", Some(typing.serial())), None);
        let before_stop = typing.serial();
        assert!(typing.set("!r", "@a:x", false, 0));
        assert_eq!(typing.changed_since("!r", Some(before_stop)), Some(vec![]));
    }

    #[test]
    fn changed_rooms_are_those_after_the_serial() {
        let typing = Typing::default();
        typing.set("!a", "@a:x", true, 30_000);
        let between = typing.serial();
        typing.set("!b", "@b:x", true, 30_000);
        typing.set("!b", "@c:x", true, 30_000);
        assert_eq!(
            typing.changed_rooms_since(between),
            vec![("!b".to_string(), vec!["@b:x".into(), "@c:x".into()])]
        );
        assert_eq!(typing.changed_rooms_since(typing.serial()), vec![]);
        assert_eq!(typing.changed_rooms_since(0).len(), 2);
    }

    #[test]
    fn expired_typing_is_dropped() {
        let typing = Typing::default();
        typing.set("!r", "@a:x", true, 0);
        assert_eq!(typing.expire(), vec!["!r".to_string()]);
        assert_eq!(typing.changed_since("!r", None), None);
    }
}
