//! A stored event's JSON, parsed only when something reads it whole.
//!
//! Reads for clients (a /sync timeline, a /messages page) need little more
//! than an event's content, yet parsing whole PDUs (hashes, signatures, auth
//! and prev events) into maps was the largest cost of an initial /sync.
//! [`EventJson`] keeps the text as stored and parses it on first use; its
//! [`EventJson::client_fields`] finds just the fields the client format
//! shows and hands them out as slices of the text, to be copied into an
//! answer as they are.

use std::cell::OnceCell;
use std::ops::Deref;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
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

/// A value inside an event's JSON: a slice of the stored text while that is
/// not parsed, else a part of the parsed map. Serialises as the value.
#[derive(Clone, Copy, Debug)]
pub enum JsonRef<'a> {
    Raw(&'a RawValue),
    Parsed(&'a Value),
}

impl JsonRef<'_> {
    /// The value, parsed (an unparseable slice reads as null).
    pub fn to_value(self) -> Value {
        match self {
            JsonRef::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
            JsonRef::Parsed(value) => value.clone(),
        }
    }
}

impl Serialize for JsonRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonRef::Raw(raw) => raw.serialize(serializer),
            JsonRef::Parsed(value) => value.serialize(serializer),
        }
    }
}

/// The top-level fields of an event that the client format copies.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientFields<'a> {
    pub content: Option<JsonRef<'a>>,
    pub redacts: Option<JsonRef<'a>>,
}

/// [`ClientFields`] as found in the text: the rest is skipped, not built.
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    redacts: Option<&'a RawValue>,
}

impl EventJson {
    /// The JSON text of a stored event, not parsed yet.
    pub fn from_text(text: String) -> EventJson {
        EventJson { text: text.into_boxed_str(), parsed: OnceCell::new() }
    }

    /// The whole map, parsed now if not yet.
    /// The length of the stored text, in bytes.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

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
    /// not been parsed yet (JSON `null` reads as absent).
    pub fn client_fields(&self) -> ClientFields<'_> {
        if let Some(map) = self.parsed.get() {
            let field = |key: &str| map.get(key).filter(|value| !value.is_null()).map(JsonRef::Parsed);
            return ClientFields { content: field("content"), redacts: field("redacts") };
        }
        match serde_json::from_str::<RawFields<'_>>(&self.text) {
            Ok(fields) => ClientFields {
                content: fields.content.map(JsonRef::Raw),
                redacts: fields.redacts.map(JsonRef::Raw),
            },
            Err(_) => ClientFields::default(),
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

    const PDU: &str = r#"{"auth_events":["$a","$b"],"content":{"body":"hi \"x\"","n":[1,2.5,{"x":null}]},
        "hashes":{"sha256":"abc"},"prev_events":["$p"],"redacts":"$r","room_id":"!r:x","type":"m.room.redaction",
        "signatures":{"x":{"ed25519:1":"sig"}}}"#;

    fn values(fields: ClientFields<'_>) -> (Option<Value>, Option<Value>) {
        (fields.content.map(JsonRef::to_value), fields.redacts.map(JsonRef::to_value))
    }

    #[test]
    fn client_fields_match_the_parsed_map_before_and_after_parsing() {
        let lazy = EventJson::from_text(PDU.to_owned());
        let expected = (Some(json!({"body": "hi \"x\"", "n": [1, 2.5, {"x": null}]})), Some(json!("$r")));
        let fields = lazy.client_fields();
        assert!(matches!(fields.content, Some(JsonRef::Raw(_))));
        // Serialised as they are: the same text a parse and a write give.
        assert_eq!(serde_json::to_string(&fields.content).unwrap(), expected.0.as_ref().unwrap().to_string());
        assert_eq!(values(fields), expected);
        assert_eq!(serde_json::to_value(fields.content).unwrap(), expected.0.clone().unwrap());
        assert_eq!(lazy.get("type"), Some(&json!("m.room.redaction")));
        assert!(matches!(lazy.client_fields().content, Some(JsonRef::Parsed(_))));
        assert_eq!(values(lazy.client_fields()), expected);
        let whole: Map<String, Value> = serde_json::from_str(PDU).unwrap();
        assert_eq!(*lazy, whole);
        assert_eq!(EventJson::from_text(PDU.to_owned()).into_map(), whole);
        assert_eq!(values(EventJson::from(whole).client_fields()), expected);
    }

    #[test]
    fn missing_fields_and_broken_text_read_as_absent() {
        let lazy = EventJson::from_text(r#"{"type":"m.room.message","redacts":null}"#.to_owned());
        assert_eq!(values(lazy.client_fields()), (None, None));
        lazy.map();
        assert_eq!(values(lazy.client_fields()), (None, None));
        let broken = EventJson::from_text("not json".to_owned());
        assert_eq!(values(broken.client_fields()), (None, None));
        assert!(broken.is_empty());
        assert!(EventJson::from_text("[1]".to_owned()).into_map().is_empty());
    }
}
