//! Which member events each device was sent under lazy-loaded members, kept
//! in memory and bounded, for `/sync` (and held by `Engine`).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#lazy-loading-room-members>.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Member events (and device-room pairs) remembered as sent under lazy
/// loading, over all devices and rooms (~150 bytes each); past this the
/// memory starts over, which only costs members sent again.
const MAX_LAZY_MEMBERS: usize = 50_000;

/// Which member events each device was sent under lazy-loaded members, per
/// room, so an incremental sync sends a timeline sender's membership only
/// when the device may not have it (spec: the server may assume clients
/// remember the member events they were sent). Memory only: after a restart,
/// or for a room not remembered, the senders' member events are sent again.
#[derive(Default)]
pub struct LazyMembers {
    /// (user, device, room) → member → the member event ID sent.
    sent: RefCell<HashMap<LazyKey, HashMap<String, String>>>,
    entries: Cell<usize>,
}

/// (user, device, room).
pub type LazyKey = (String, String, String);

impl LazyMembers {
    /// Whether the device is known to have `event_id` as `member`'s
    /// membership (`None`: nothing is remembered of the room).
    pub fn has(&self, key: &LazyKey, member: &str, event_id: &str) -> Option<bool> {
        self.sent.borrow().get(key).map(|sent| sent.get(member).is_some_and(|id| id == event_id))
    }

    /// Forgets what the device was sent of the room (it sees it anew).
    pub fn reset(&self, key: &LazyKey) {
        let mut all = self.sent.borrow_mut();
        self.make_room(&mut all);
        let removed = all.insert(key.clone(), HashMap::new());
        let removed = removed.map_or(0, |sent| sent.len());
        self.entries.set(self.entries.get().saturating_sub(removed));
    }

    pub fn record<'e>(&self, key: &LazyKey, sent: impl Iterator<Item = (&'e str, &'e str)>) {
        let mut all = self.sent.borrow_mut();
        self.make_room(&mut all);
        let room = all.entry(key.clone()).or_default();
        for (member, event_id) in sent {
            if room.insert(member.to_owned(), event_id.to_owned()).is_none() {
                self.entries.set(self.entries.get() + 1);
            }
        }
    }

    /// Starts over when the memory is full.
    fn make_room(&self, all: &mut HashMap<LazyKey, HashMap<String, String>>) {
        if self.entries.get() + all.len() >= MAX_LAZY_MEMBERS {
            all.clear();
            self.entries.set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_member_memory_knows_rooms_it_saw_and_stays_bounded() {
        let memory = LazyMembers::default();
        let key: LazyKey = ("@a:x".into(), "D".into(), "!r:x".into());
        assert_eq!(memory.has(&key, "@b:x", "$1"), None);
        memory.reset(&key);
        assert_eq!(memory.has(&key, "@b:x", "$1"), Some(false));
        memory.record(&key, [("@b:x", "$1")].into_iter());
        assert_eq!(memory.has(&key, "@b:x", "$1"), Some(true));
        // A changed membership is news again.
        assert_eq!(memory.has(&key, "@b:x", "$2"), Some(false));
        let names: Vec<String> = (0..MAX_LAZY_MEMBERS + 10).map(|n| format!("@{n}:x")).collect();
        memory.record(&key, names.iter().map(|name| (name.as_str(), "$1")));
        memory.record(&key, [("@c:x", "$1")].into_iter());
        assert!(memory.entries.get() <= MAX_LAZY_MEMBERS + 10);
        assert!(memory.sent.borrow().values().map(HashMap::len).sum::<usize>() < MAX_LAZY_MEMBERS);
        memory.reset(&key);
        assert_eq!(memory.entries.get(), 0);
        // Rooms count too, even with nothing recorded in them.
        for n in 0..MAX_LAZY_MEMBERS + 10 {
            memory.reset(&("@a:x".into(), "D".into(), format!("!{n}:x")));
        }
        assert!(memory.sent.borrow().len() <= MAX_LAZY_MEMBERS);
    }
}
