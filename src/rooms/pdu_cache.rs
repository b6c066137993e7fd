//! Parsed state events by event ID, so the auth checks of every send do not
//! read and parse the room's create, power levels and member events again.
//!
//! An event's JSON never changes for its ID except by redaction, which
//! [`PduCache::forget`]s it. The cache holds at most [`PDU_CACHE_ENTRIES`]
//! events and forgets the oldest first.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::protocol::pdu::Pdu;

/// State events kept parsed: the few each room's sends consult (create,
/// power levels, join rules, the senders' memberships) for a household's
/// rooms, at a few KiB each.
const PDU_CACHE_ENTRIES: usize = 256;

/// The cache (memory only, on the event loop thread).
#[derive(Default)]
pub struct PduCache {
    entries: RefCell<HashMap<String, Rc<Pdu>>>,
    /// Event IDs, oldest first.
    order: RefCell<VecDeque<String>>,
}

impl PduCache {
    /// The parsed event, if cached.
    pub fn get(&self, event_id: &str) -> Option<Rc<Pdu>> {
        self.entries.borrow().get(event_id).cloned()
    }

    /// Keeps a parsed event, forgetting the oldest when full.
    pub fn insert(&self, pdu: Rc<Pdu>) {
        let mut entries = self.entries.borrow_mut();
        let mut order = self.order.borrow_mut();
        if entries.contains_key(&pdu.event_id) {
            return;
        }
        while entries.len() >= PDU_CACHE_ENTRIES {
            let Some(oldest) = order.pop_front() else { break };
            entries.remove(&oldest);
        }
        order.push_back(pdu.event_id.clone());
        entries.insert(pdu.event_id.clone(), pdu);
    }

    /// Drops an event whose stored JSON changed (it was redacted).
    pub fn forget(&self, event_id: &str) {
        if self.entries.borrow_mut().remove(event_id).is_some() {
            self.order.borrow_mut().retain(|id| id != event_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::room_version::RoomVersion;
    use serde_json::json;

    fn pdu(index: usize) -> Rc<Pdu> {
        let version = RoomVersion::from_id("10").unwrap();
        let json = json!({
            "type": "m.room.member", "state_key": format!("@u{index}:x"), "sender": format!("@u{index}:x"),
            "room_id": "!r:x", "content": {"membership": "join"}, "prev_events": [], "auth_events": [],
            "depth": 1, "origin_server_ts": 0,
        });
        Rc::new(Pdu::from_json(&version, format!("$e{index}"), json.as_object().unwrap().clone()).unwrap())
    }

    #[test]
    fn keeps_the_newest_entries_and_forgets_on_request() {
        let cache = PduCache::default();
        for index in 0..PDU_CACHE_ENTRIES + 10 {
            cache.insert(pdu(index));
        }
        assert!(cache.get("$e0").is_none(), "the oldest went first");
        assert!(cache.get("$e9").is_none());
        assert!(cache.get("$e10").is_some());
        let last = format!("$e{}", PDU_CACHE_ENTRIES + 9);
        assert_eq!(cache.get(&last).unwrap().event_id, last);
        cache.forget(&last);
        assert!(cache.get(&last).is_none());
        // Forgetting made room: nothing else is evicted by the next insert.
        cache.insert(pdu(0));
        assert!(cache.get("$e10").is_some());
        assert_eq!(cache.entries.borrow().len(), PDU_CACHE_ENTRIES);
    }
}
