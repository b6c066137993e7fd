//! Test-only builders for hand-made PDUs and DAGs, shared by the auth rule
//! and state resolution tests. Events are not signed or hashed: the
//! algorithms under test never look at `hashes` or `signatures`.

use serde_json::{Map, Value, json};

use super::pdu::Pdu;

/// The room ID every fixture uses unless told otherwise.
pub const ROOM: &str = "!room:x";

/// Builds one PDU; start with [`pdu`].
#[derive(Clone)]
pub struct PduBuilder {
    pdu: Pdu,
    with_room_id: bool,
}

/// A PDU with the given ID, type, state key and sender, empty content, no
/// prev or auth events, `origin_server_ts` 0, in [`ROOM`].
pub fn pdu(event_id: &str, kind: &str, state_key: Option<&str>, sender: &str) -> PduBuilder {
    PduBuilder {
        pdu: Pdu {
            event_id: event_id.to_owned(),
            room_id: ROOM.to_owned(),
            sender: sender.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            content: json!({}),
            prev_events: Vec::new(),
            auth_events: Vec::new(),
            depth: 1,
            origin_server_ts: 0,
            redacts: None,
            json: Map::new(),
        },
        with_room_id: true,
    }
}

/// A membership event for `target` sent by `sender`.
pub fn member(event_id: &str, sender: &str, target: &str, membership: &str) -> PduBuilder {
    pdu(event_id, "m.room.member", Some(target), sender)
        .content(json!({ "membership": membership }))
}

impl PduBuilder {
    pub fn content(mut self, content: Value) -> Self {
        self.pdu.content = content;
        self
    }
    pub fn prev(mut self, prev: &[&str]) -> Self {
        self.pdu.prev_events = prev.iter().map(|id| id.to_string()).collect();
        self
    }
    pub fn auth(mut self, auth: &[&str]) -> Self {
        self.pdu.auth_events = auth.iter().map(|id| id.to_string()).collect();
        self
    }
    pub fn ts(mut self, origin_server_ts: i64) -> Self {
        self.pdu.origin_server_ts = origin_server_ts;
        self
    }
    pub fn room(mut self, room_id: &str) -> Self {
        self.pdu.room_id = room_id.to_owned();
        self
    }
    pub fn redacts(mut self, event_id: &str) -> Self {
        self.pdu.redacts = Some(event_id.to_owned());
        self
    }
    /// A v12 create event: no `room_id` key in the JSON, the room ID derived
    /// from the event ID.
    pub fn without_room_id(mut self) -> Self {
        self.with_room_id = false;
        self.pdu.room_id = format!("!{}", self.pdu.event_id.trim_start_matches('$'));
        self
    }
    pub fn build(mut self) -> Pdu {
        let pdu = &self.pdu;
        let mut json = json!({
            "type": pdu.kind, "sender": pdu.sender, "content": pdu.content,
            "prev_events": pdu.prev_events, "auth_events": pdu.auth_events,
            "depth": pdu.depth, "origin_server_ts": pdu.origin_server_ts,
        });
        if self.with_room_id {
            json["room_id"] = json!(pdu.room_id);
        }
        if let Some(state_key) = &pdu.state_key {
            json["state_key"] = json!(state_key);
        }
        if let Value::Object(map) = json {
            self.pdu.json = map;
        }
        self.pdu
    }
}
