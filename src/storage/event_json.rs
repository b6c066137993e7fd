//! A stored event's JSON, parsed only when something reads it whole.
//!
//! Reads for clients (a /sync timeline, a /messages page) need little more
//! than an event's content, yet parsing whole PDUs (hashes, signatures, auth
//! and prev events) into maps was the largest cost of an initial /sync.
//! [`EventJson`] keeps the text as stored and parses it on first use; its
//! [`EventJson::client_fields`] reads just the fields the client format
//! shows, skipping the rest without building it.

use std::cell::OnceCell;
use std::ops::Deref;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A PDU as stored: its JSON text, parsed into a map on first use (through
/// `Deref`, so it reads as the map it holds). Text that is not a JSON object
/// reads as an empty map, as a missing event would.
#[derive(Clone, Debug, Default)]
pub struct EventJson {
    /// The stored text; empty when made from a map.
    text: Box<str>,
    parsed: OnceCell<Map<String, Value>>,
}

/// The top-level fields of an event that the client format copies.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct ClientFields {
    pub content: Option<Value>,
    pub redacts: Option<Value>,
}

impl EventJson {
    /// The JSON text of a stored event, not parsed yet.
    pub fn from_text(text: String) -> EventJson {
        EventJson { text: text.into_boxed_str(), parsed: OnceCell::new() }
    }

    /// The whole map, parsed now if not yet.
    pub fn map(&self) -> &Map<String, Value> {
        self.parsed.get_or_init(|| serde_json::from_str(&self.text).unwrap_or_default())
    }

    /// The whole map, owned.
    pub fn into_map(self) -> Map<String, Value> {
        match self.parsed.into_inner() {
            Some(map) => map,
            None => serde_json::from_str(&self.text).unwrap_or_default(),
        }
    }

    /// `content` and `redacts`, without parsing the rest when the map has
    /// not been parsed yet.
    pub fn client_fields(&self) -> ClientFields {
        match self.parsed.get() {
            Some(map) => {
                ClientFields { content: map.get("content").cloned(), redacts: map.get("redacts").cloned() }
            }
            None => serde_json::from_str(&self.text).unwrap_or_default(),
        }
    }
}

impl From<Map<String, Value>> for EventJson {
    fn from(map: Map<String, Value>) -> EventJson {
        EventJson { text: Box::default(), parsed: OnceCell::from(map) }
    }
}

impl Deref for EventJson {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        self.map()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PDU: &str = r#"{"auth_events":["$a","$b"],"content":{"body":"hi","n":[1,2.5,{"x":null}]},
        "hashes":{"sha256":"abc"},"prev_events":["$p"],"redacts":"$r","room_id":"!r:x","type":"m.room.redaction",
        "signatures":{"x":{"ed25519:1":"sig"}}}"#;

    #[test]
    fn client_fields_match_the_parsed_map_before_and_after_parsing() {
        let lazy = EventJson::from_text(PDU.to_owned());
        let before = lazy.client_fields();
        assert_eq!(before.content, Some(json!({"body": "hi", "n": [1, 2.5, {"x": null}]})));
        assert_eq!(before.redacts, Some(json!("$r")));
        assert_eq!(lazy.get("type"), Some(&json!("m.room.redaction")));
        assert_eq!(lazy.client_fields(), before);
        let whole: Map<String, Value> = serde_json::from_str(PDU).unwrap();
        assert_eq!(*lazy, whole);
        assert_eq!(EventJson::from_text(PDU.to_owned()).into_map(), whole);
        assert_eq!(EventJson::from(whole.clone()).client_fields(), before);
    }

    #[test]
    fn missing_fields_and_broken_text_read_as_absent() {
        let lazy = EventJson::from_text(r#"{"type":"m.room.message"}"#.to_owned());
        assert_eq!(lazy.client_fields(), ClientFields::default());
        let broken = EventJson::from_text("not json".to_owned());
        assert_eq!(broken.client_fields(), ClientFields::default());
        assert!(broken.is_empty());
        assert!(EventJson::from_text("[1]".to_owned()).into_map().is_empty());
    }
}
