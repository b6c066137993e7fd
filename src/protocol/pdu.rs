//! The persistent data unit: one signed event of a room's DAG, parsed.
//!
//! [`Pdu`] keeps the event exactly as signed (`json`) next to the fields the
//! auth rules and state resolution read. It knows no storage and no transport.
//! Spec: <https://spec.matrix.org/latest/server-server-api/#pdus>.

use serde_json::{Map, Value};

use super::room_version::{EventIdFormat, RoomVersion};

/// Spec: PDUs over 64 KiB (in canonical JSON) are rejected.
pub const MAX_PDU_BYTES: usize = 65_536;

/// One event of a room, parsed for the protocol core.
#[derive(Clone, Debug, PartialEq)]
pub struct Pdu {
    /// `$...`: for room v3+ computed from the reference hash, for v1/v2 carried in the event.
    pub event_id: String,
    /// `!...`; for room v12 create events (which carry no `room_id`) derived from the event ID.
    pub room_id: String,
    pub sender: String,
    /// The event `type`.
    pub kind: String,
    /// `Some` exactly for state events.
    pub state_key: Option<String>,
    pub content: Value,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// For `m.room.redaction`: top level before v11, in `content` from v11.
    pub redacts: Option<String>,
    /// The whole event as signed and sent over federation (no `event_id` key for v3+).
    pub json: Map<String, Value>,
}

/// Why a JSON object is not a well-formed PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PduFormatError(pub String);

impl std::fmt::Display for PduFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pdu {
    /// Reads the fields of `json`, an event in federation format, whose ID is
    /// `event_id` (computed by the caller for v3+ rooms, read from the event for v1/v2).
    pub fn from_json(
        version: &RoomVersion,
        event_id: String,
        json: Map<String, Value>,
    ) -> Result<Pdu, PduFormatError> {
        let string = |key: &str| -> Result<String, PduFormatError> {
            match json.get(key) {
                Some(Value::String(text)) => Ok(text.clone()),
                _ => Err(PduFormatError(format!("missing or non-string `{key}`"))),
            }
        };
        let integer = |key: &str| -> Result<i64, PduFormatError> {
            json.get(key)
                .and_then(Value::as_i64)
                .ok_or_else(|| PduFormatError(format!("missing or non-integer `{key}`")))
        };
        let id_list = |key: &str| -> Result<Vec<String>, PduFormatError> {
            let items = json
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| PduFormatError(format!("missing or non-array `{key}`")))?;
            items
                .iter()
                .map(|item| match (version.event_id_format, item) {
                    (EventIdFormat::V1, Value::Array(pair)) => pair
                        .first()
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| PduFormatError(format!("bad entry in `{key}`"))),
                    (EventIdFormat::V2 | EventIdFormat::V3, Value::String(id)) => Ok(id.clone()),
                    _ => Err(PduFormatError(format!("bad entry in `{key}`"))),
                })
                .collect()
        };
        let kind = string("type")?;
        let room_id = match json.get("room_id") {
            Some(Value::String(room_id)) => room_id.clone(),
            None if version.room_id_from_create_event && kind == "m.room.create" => {
                format!("!{}", event_id.trim_start_matches('$'))
            }
            _ => return Err(PduFormatError("missing or non-string `room_id`".into())),
        };
        let state_key = match json.get("state_key") {
            None => None,
            Some(Value::String(state_key)) => Some(state_key.clone()),
            Some(_) => return Err(PduFormatError("non-string `state_key`".into())),
        };
        let content = match json.get("content") {
            Some(Value::Object(content)) => Value::Object(content.clone()),
            _ => return Err(PduFormatError("missing or non-object `content`".into())),
        };
        let redacts = if version.redacts_in_content {
            content.get("redacts").and_then(Value::as_str).map(str::to_owned)
        } else {
            json.get("redacts").and_then(Value::as_str).map(str::to_owned)
        };
        Ok(Pdu {
            event_id,
            room_id,
            sender: string("sender")?,
            kind,
            state_key,
            content,
            prev_events: id_list("prev_events")?,
            auth_events: id_list("auth_events")?,
            depth: integer("depth")?,
            origin_server_ts: integer("origin_server_ts")?,
            redacts,
            json,
        })
    }

    /// Whether this is a state event.
    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The `(type, state_key)` pair a state event occupies.
    pub fn state_pair(&self) -> Option<(&str, &str)> {
        self.state_key.as_deref().map(|state_key| (self.kind.as_str(), state_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parses_a_v12_create_event_without_room_id() {
        let version = RoomVersion::from_id("12").unwrap();
        let event = object(json!({
            "type": "m.room.create", "state_key": "", "sender": "@a:x",
            "content": {"room_version": "12"}, "prev_events": [], "auth_events": [],
            "depth": 1, "origin_server_ts": 5, "hashes": {}, "signatures": {}
        }));
        let pdu = Pdu::from_json(&version, "$abc".into(), event).unwrap();
        assert_eq!(pdu.room_id, "!abc");
        assert_eq!(pdu.state_pair(), Some(("m.room.create", "")));
    }

    #[test]
    fn reads_v1_reference_pairs_and_rejects_bad_content() {
        let version = RoomVersion::from_id("1").unwrap();
        let event = object(json!({
            "type": "m.room.message", "room_id": "!r:x", "sender": "@a:x",
            "content": {}, "prev_events": [["$p:x", {"sha256": "h"}]],
            "auth_events": [], "depth": 2, "origin_server_ts": 5
        }));
        let pdu = Pdu::from_json(&version, "$e:x".into(), event.clone()).unwrap();
        assert_eq!(pdu.prev_events, vec!["$p:x".to_string()]);
        let mut bad = event;
        bad.insert("content".into(), json!("text"));
        assert!(Pdu::from_json(&version, "$e:x".into(), bad).is_err());
    }
}
