//! Event hashes, event IDs and event signatures.
//!
//! The content hash (over the whole event), the reference hash (over its
//! redacted form), event IDs derived from it per room version, and signing and
//! checking events. Pure functions over event JSON; key lookup is the caller's.
//! Spec: <https://spec.matrix.org/latest/server-server-api/#signing-events>.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical_json::{self, CanonicalJsonError, Strictness};
use super::encoding::{self, Base64Error};
use super::redaction;
use super::room_version::{EventIdFormat, RoomVersion};
use super::signing::{self, PublicKey, SigningError, SigningKey};

/// A sha256 digest.
pub type Sha256Hash = [u8; 32];

/// Why an event could not be hashed, named or checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventHashError {
    /// The event has no canonical encoding in its room version.
    CanonicalJson(CanonicalJsonError),
    /// A room v1/v2 event without a string `event_id`.
    MissingEventId,
    /// The event has no `hashes.sha256` string.
    MissingContentHash,
    /// `hashes.sha256` is not base64.
    Base64(Base64Error),
    /// `hashes.sha256` does not match the event: it was redacted or tampered with.
    ContentHashMismatch,
    /// The room version does not derive room IDs from create events (before v12).
    NoRoomIdFromCreateEvent,
    /// Signing or checking a signature failed.
    Signing(SigningError),
}

impl std::fmt::Display for EventHashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventHashError::CanonicalJson(error) => {
                write!(f, "event is not canonical JSON: {error}")
            }
            EventHashError::MissingEventId => f.write_str("event has no `event_id`"),
            EventHashError::MissingContentHash => f.write_str("event has no `hashes.sha256`"),
            EventHashError::Base64(error) => write!(f, "bad content hash: {error}"),
            EventHashError::ContentHashMismatch => f.write_str("content hash does not match"),
            EventHashError::NoRoomIdFromCreateEvent => {
                f.write_str("room version does not derive room IDs from create events")
            }
            EventHashError::Signing(error) => write!(f, "event signature: {error}"),
        }
    }
}

impl std::error::Error for EventHashError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EventHashError::CanonicalJson(error) => Some(error),
            EventHashError::Base64(error) => Some(error),
            EventHashError::Signing(error) => Some(error),
            _ => None,
        }
    }
}

impl From<CanonicalJsonError> for EventHashError {
    fn from(error: CanonicalJsonError) -> Self {
        EventHashError::CanonicalJson(error)
    }
}

impl From<SigningError> for EventHashError {
    fn from(error: SigningError) -> Self {
        EventHashError::Signing(error)
    }
}

/// sha256 over the canonical JSON of `object` without the `removed` keys.
fn hash_without(
    object: &Map<String, Value>,
    removed: &[&str],
    version: &RoomVersion,
) -> Result<Sha256Hash, EventHashError> {
    Ok(hash_and_length_without(object, removed, version)?.0)
}

/// [`hash_without`], and the length of the canonical text hashed.
fn hash_and_length_without(
    object: &Map<String, Value>,
    removed: &[&str],
    version: &RoomVersion,
) -> Result<(Sha256Hash, usize), EventHashError> {
    let text =
        canonical_json::object_to_string_without(object, removed, Strictness::for_room_version(version))?;
    Ok((Sha256::digest(text.as_bytes()).into(), text.len()))
}

/// The content hash: sha256 of the canonical event without `unsigned`,
/// `signatures` and `hashes`.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#calculating-the-content-hash-for-an-event>.
pub fn content_hash(event: &Map<String, Value>, version: &RoomVersion) -> Result<Sha256Hash, EventHashError> {
    hash_without(event, &["unsigned", "signatures", "hashes"], version)
}

/// The reference hash: sha256 of the canonical redacted event without
/// `signatures` and `unsigned`.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#calculating-the-reference-hash-for-an-event>.
pub fn reference_hash(
    event: &Map<String, Value>,
    version: &RoomVersion,
) -> Result<Sha256Hash, EventHashError> {
    let redacted = redaction::redact(event, version);
    hash_without(&redacted, &["signatures", "unsigned"], version)
}

/// The ID of `event` in a room of `version`: carried in the event for v1/v2,
/// `$` + the reference hash in standard (v3) or URL-safe (v4+) base64.
///
/// Spec: <https://spec.matrix.org/latest/rooms/v1/#event-ids>,
/// <https://spec.matrix.org/latest/rooms/v3/#event-ids>,
/// <https://spec.matrix.org/latest/rooms/v4/#event-ids>.
pub fn event_id(event: &Map<String, Value>, version: &RoomVersion) -> Result<String, EventHashError> {
    match version.event_id_format {
        EventIdFormat::V1 => event_id_with_reference(event, version, &[0; 32]),
        _ => event_id_with_reference(event, version, &reference_hash(event, version)?),
    }
}

/// [`event_id`] where the event's reference hash is known already.
pub fn event_id_with_reference(
    event: &Map<String, Value>,
    version: &RoomVersion,
    reference: &Sha256Hash,
) -> Result<String, EventHashError> {
    match version.event_id_format {
        EventIdFormat::V1 => event
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(EventHashError::MissingEventId),
        EventIdFormat::V2 => Ok(format!("${}", encoding::encode(reference))),
        EventIdFormat::V3 => Ok(format!("${}", encoding::encode_url_safe(reference))),
    }
}

/// The room ID a room v12 `m.room.create` event founds: `!` + the URL-safe
/// base64 reference hash, that is its event ID with `!` for `$`.
///
/// Spec: <https://spec.matrix.org/latest/rooms/v12/#event-format>.
pub fn room_id_from_create_event(
    create_event: &Map<String, Value>,
    version: &RoomVersion,
) -> Result<String, EventHashError> {
    if !version.room_id_from_create_event {
        return Err(EventHashError::NoRoomIdFromCreateEvent);
    }
    Ok(format!("!{}", encoding::encode_url_safe(&reference_hash(create_event, version)?)))
}

/// Adds `hashes.sha256` to `event`, signs its redacted form as `server_name`
/// with `key`, and copies the signatures back onto the full event. Answers the
/// length of the canonical JSON that was hashed (the event without hashes,
/// signatures and `unsigned`), for size checks.
///
/// For room v3+ the event must not contain `event_id` (its ID is derived from
/// what is signed here). Spec:
/// <https://spec.matrix.org/latest/server-server-api/#adding-hashes-and-signatures-to-outgoing-events>.
pub fn sign_event(
    event: &mut Map<String, Value>,
    version: &RoomVersion,
    server_name: &str,
    key: &SigningKey,
) -> Result<usize, EventHashError> {
    let ready = prepare_signing(event, version)?;
    let signature = key.sign_bytes(ready.signing_text.as_bytes());
    attach_signature(event, server_name, &key.key_id, signature)?;
    Ok(ready.hashed_length)
}

/// An event whose content hash is in place, ready to be signed: the
/// signature does not enter its reference hash (nor so its v3+ event ID),
/// so it can be named, checked and built upon before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyToSign {
    /// The length of the canonical JSON the content hash was taken of.
    pub hashed_length: usize,
    /// The text to sign: the redacted event without `signatures` and
    /// `unsigned`, in canonical JSON.
    pub signing_text: String,
    /// The reference hash, taken of `signing_text`.
    pub reference: Sha256Hash,
}

/// Puts `hashes.sha256` into `event` and answers what signing it takes
/// ([`sign_event`] without the signature; [`attach_signature`] adds it).
/// The text signed (the redacted event without `signatures` and
/// `unsigned`) is the text the reference hash is taken of, so it is made
/// once for both.
pub fn prepare_signing(
    event: &mut Map<String, Value>,
    version: &RoomVersion,
) -> Result<ReadyToSign, EventHashError> {
    let (hash, hashed_length) =
        hash_and_length_without(event, &["unsigned", "signatures", "hashes"], version)?;
    let mut hashes = Map::new();
    hashes.insert("sha256".to_owned(), Value::String(encoding::encode(&hash)));
    event.insert("hashes".to_owned(), Value::Object(hashes));
    let redacted = redaction::redact(event, version);
    let signing_text = canonical_json::object_to_string_without(
        &redacted,
        &["signatures", "unsigned"],
        Strictness::for_room_version(version),
    )?;
    let reference = Sha256::digest(signing_text.as_bytes()).into();
    Ok(ReadyToSign { hashed_length, signing_text, reference })
}

/// Adds `server_name`'s `signature` (unpadded base64) under `key_id` to
/// `event`'s `signatures`, keeping any other server's.
pub fn attach_signature(
    event: &mut Map<String, Value>,
    server_name: &str,
    key_id: &str,
    signature: String,
) -> Result<(), EventHashError> {
    let mut signatures = match event.remove("signatures") {
        Some(Value::Object(signatures)) => signatures,
        _ => Map::new(),
    };
    let by_server = signatures.entry(server_name).or_insert_with(|| Value::Object(Map::new()));
    let Some(by_server) = by_server.as_object_mut() else {
        return Err(SigningError::MalformedSignatures.into());
    };
    by_server.insert(key_id.to_owned(), Value::String(signature));
    event.insert("signatures".to_owned(), Value::Object(signatures));
    Ok(())
}

/// Checks `hashes.sha256` against the event. A mismatch means the event was
/// redacted (or altered) on the way: the caller should keep the redacted form.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#validating-hashes-and-signatures-on-received-events>.
pub fn verify_event_content_hash(
    event: &Map<String, Value>,
    version: &RoomVersion,
) -> Result<(), EventHashError> {
    let claimed = event
        .get("hashes")
        .and_then(|hashes| hashes.get("sha256"))
        .and_then(Value::as_str)
        .ok_or(EventHashError::MissingContentHash)?;
    let claimed = encoding::decode(claimed).map_err(EventHashError::Base64)?;
    if claimed == content_hash(event, version)? { Ok(()) } else { Err(EventHashError::ContentHashMismatch) }
}

/// Checks the signature of `server_name` with `key_id` on the redacted form of
/// `event`, which succeeds for the full event and for a redacted copy alike.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#validating-hashes-and-signatures-on-received-events>.
pub fn verify_event_signature(
    event: &Map<String, Value>,
    version: &RoomVersion,
    server_name: &str,
    key_id: &str,
    public_key: &PublicKey,
) -> Result<(), EventHashError> {
    let redacted = Value::Object(redaction::redact(event, version));
    // The room version's strictness applies to the event as a whole.
    canonical_json::validate(&redacted, Strictness::for_room_version(version))?;
    signing::verify_json(&redacted, server_name, key_id, public_key)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTORS: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/event_signing.json"));

    fn version(id: &str) -> RoomVersion {
        RoomVersion::from_id(id).unwrap()
    }

    fn object(value: &Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn spec_key(vectors: &Value) -> SigningKey {
        let seed = encoding::decode(vectors["seed_unpadded_base64"].as_str().unwrap()).unwrap();
        SigningKey::from_seed("1", &seed).unwrap()
    }

    /// A room v4+ style event (no `event_id`), with `unsigned` data.
    fn message_event() -> Map<String, Value> {
        object(&json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin_server_ts": 1000000,
            "type": "m.room.message", "content": {"body": "hi", "msgtype": "m.text"},
            "prev_events": ["$p"], "auth_events": ["$a"], "depth": 3,
            "unsigned": {"age_ts": 1000000}
        }))
    }

    #[test]
    fn spec_event_signing_vectors_byte_for_byte() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let key = spec_key(&vectors);
        assert_eq!(key.key_id, vectors["key_id"].as_str().unwrap());
        let server = vectors["server_name"].as_str().unwrap();
        let v1 = version("1");
        let cases = vectors["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 2);
        for case in cases {
            let mut event = object(&case["input"]);
            sign_event(&mut event, &v1, server, &key).unwrap();
            let expected = object(&case["signed"]);
            assert_eq!(
                canonical_json::object_to_string(&event, Strictness::Lenient).unwrap(),
                canonical_json::object_to_string(&expected, Strictness::Lenient).unwrap()
            );
            verify_event_content_hash(&expected, &v1).unwrap();
            verify_event_signature(&expected, &v1, server, &key.key_id, &key.key_pair.pk).unwrap();
        }
    }

    #[test]
    fn reference_hash_matches_an_independent_computation() {
        // Computed with Python: sha256(json.dumps(redacted, sort_keys=True,
        // separators=(",", ":"), ensure_ascii=False).encode()) of the redacted
        // `message_event()`, i.e. without `content.*` and `unsigned`.
        let cases: &[(&str, &str)] = &[
            ("1", REFERENCE_HASH_STANDARD),
            ("3", REFERENCE_HASH_STANDARD),
            ("4", REFERENCE_HASH_URL_SAFE),
            ("12", REFERENCE_HASH_URL_SAFE),
        ];
        for (id, expected) in cases {
            let hash = reference_hash(&message_event(), &version(id)).unwrap();
            let encoded = match version(id).event_id_format {
                EventIdFormat::V3 => encoding::encode_url_safe(&hash),
                _ => encoding::encode(&hash),
            };
            assert_eq!(&encoded, expected, "room v{id}");
        }
    }

    const REFERENCE_HASH_STANDARD: &str = "iBEipeb4M5nqRmbkLF+c5TcHOaoQhbsUXKMdsQK0yPA";
    const REFERENCE_HASH_URL_SAFE: &str = "iBEipeb4M5nqRmbkLF-c5TcHOaoQhbsUXKMdsQK0yPA";

    #[test]
    fn event_ids_per_format() {
        let event = message_event();
        let v3 = event_id(&event, &version("3")).unwrap();
        let v4 = event_id(&event, &version("4")).unwrap();
        assert_eq!(v3, format!("${REFERENCE_HASH_STANDARD}"));
        assert_eq!(v4, format!("${REFERENCE_HASH_URL_SAFE}"));
        assert_eq!(v3.replace('+', "-").replace('/', "_"), v4);
        // v1/v2: the event's own ID, whatever its hash.
        let mut old = event.clone();
        assert_eq!(event_id(&old, &version("1")), Err(EventHashError::MissingEventId));
        old.insert("event_id".into(), json!("$abc:domain"));
        assert_eq!(event_id(&old, &version("2")).unwrap(), "$abc:domain");
        // Unprotected data does not change the ID; protected data does.
        let mut decorated = event.clone();
        decorated.insert("unsigned".into(), json!({"age": 5}));
        decorated.insert("signatures".into(), json!({"domain": {"ed25519:1": "x"}}));
        decorated["content"]["body"] = json!("edited");
        assert_eq!(event_id(&decorated, &version("4")).unwrap(), v4);
        let mut moved = event;
        moved.insert("depth".into(), json!(4));
        assert_ne!(event_id(&moved, &version("4")).unwrap(), v4);
    }

    /// The reference hash preparing to sign answers is the one taken afresh
    /// of the signed event, and the signature is the one [`sign_event`] has
    /// always made (over the redacted event): checked against the key.
    #[test]
    fn signing_answers_the_reference_hash() {
        let key = SigningKey::generate("1").unwrap();
        for id in ["3", "10", "12"] {
            let v = version(id);
            let mut event = message_event();
            event.insert("unsigned".into(), json!({"age": 5}));
            let ready = prepare_signing(&mut event, &v).unwrap();
            attach_signature(
                &mut event,
                "domain",
                &key.key_id,
                key.sign_bytes(ready.signing_text.as_bytes()),
            )
            .unwrap();
            let reference = ready.reference;
            assert_eq!(reference, reference_hash(&event, &v).unwrap(), "v{id}");
            assert_eq!(event_id_with_reference(&event, &v, &reference), event_id(&event, &v));
            let redacted = Value::Object(redaction::redact(&event, &v));
            let public = signing::public_key_from_base64(&key.public_key_base64()).unwrap();
            assert!(signing::verify_json(&redacted, "domain", "ed25519:1", &public).is_ok(), "v{id}");
        }
    }

    /// Preparing, naming and signing afterwards (as a bulk run does on a
    /// second thread) makes the same event, ID and signature as signing at
    /// once; another server's signature stays beside ours.
    #[test]
    fn an_event_signed_after_it_is_named_is_the_event_signed_at_once() {
        let key = SigningKey::generate("1").unwrap();
        for id in ["3", "10", "12"] {
            let v = version(id);
            let mut at_once = message_event();
            at_once.insert("signatures".into(), json!({"other": {"ed25519:a": "sig"}}));
            let mut later = at_once.clone();
            let length = sign_event(&mut at_once, &v, "domain", &key).unwrap();
            let ready = prepare_signing(&mut later, &v).unwrap();
            assert_eq!(
                (ready.hashed_length, ready.reference),
                (length, reference_hash(&at_once, &v).unwrap())
            );
            assert_eq!(event_id_with_reference(&later, &v, &ready.reference), event_id(&at_once, &v));
            let signature = key.sign_bytes(ready.signing_text.as_bytes());
            attach_signature(&mut later, "domain", &key.key_id, signature).unwrap();
            assert_eq!(later, at_once, "v{id}");
            assert_eq!(later["signatures"]["other"], json!({"ed25519:a": "sig"}));
        }
        let mut malformed = message_event();
        malformed.insert("signatures".into(), json!({"domain": "not an object"}));
        assert_eq!(
            attach_signature(&mut malformed, "domain", "ed25519:1", "x".into()),
            Err(SigningError::MalformedSignatures.into())
        );
    }

    #[test]
    fn room_v12_room_id_is_the_create_event_id_with_a_bang() {
        let create = object(&json!({
            "type": "m.room.create", "state_key": "", "sender": "@a:domain",
            "content": {"room_version": "12"}, "prev_events": [], "auth_events": [],
            "depth": 1, "origin_server_ts": 5
        }));
        let v12 = version("12");
        let room_id = room_id_from_create_event(&create, &v12).unwrap();
        let event_id = event_id(&create, &v12).unwrap();
        assert_eq!(room_id.strip_prefix('!'), event_id.strip_prefix('$'));
        assert_eq!(room_id.len(), 1 + 43);
        assert!(super::super::identifiers::RoomId::parse(&room_id).is_ok());
        assert_eq!(
            room_id_from_create_event(&create, &version("11")),
            Err(EventHashError::NoRoomIdFromCreateEvent)
        );
    }

    #[test]
    fn signed_events_verify_until_tampered_and_survive_redaction() {
        let key = SigningKey::from_seed("k", &[3; 32]).unwrap();
        let pk = key.key_pair.pk;
        for room in ["1", "6", "11", "12"] {
            let v = version(room);
            let mut event = message_event();
            sign_event(&mut event, &v, "domain", &key).unwrap();
            assert_eq!(event["unsigned"], json!({"age_ts": 1000000}), "unsigned kept");
            verify_event_content_hash(&event, &v).unwrap();
            verify_event_signature(&event, &v, "domain", "ed25519:k", &pk).unwrap();

            // A redacted copy: signature still good, content hash no longer.
            let redacted = redaction::redact(&event, &v);
            verify_event_signature(&redacted, &v, "domain", "ed25519:k", &pk).unwrap();
            assert_eq!(verify_event_content_hash(&redacted, &v), Err(EventHashError::ContentHashMismatch));

            // Tampering with a protected key breaks the signature.
            let mut tampered = event.clone();
            tampered.insert("sender".into(), json!("@b:domain"));
            assert_eq!(
                verify_event_signature(&tampered, &v, "domain", "ed25519:k", &pk),
                Err(EventHashError::Signing(SigningError::BadSignature))
            );
        }
    }

    #[test]
    fn content_hash_errors() {
        let v = version("10");
        let mut event = message_event();
        assert_eq!(verify_event_content_hash(&event, &v), Err(EventHashError::MissingContentHash));
        event.insert("hashes".into(), json!({"sha256": "!!"}));
        assert!(matches!(verify_event_content_hash(&event, &v), Err(EventHashError::Base64(_))));
        // Floats are fine to hash in room v5 and refused from v6.
        event["content"]["x"] = json!(1.5);
        assert!(content_hash(&event, &version("5")).is_ok());
        assert!(matches!(
            content_hash(&event, &version("6")),
            Err(EventHashError::CanonicalJson(CanonicalJsonError::Float(_)))
        ));
    }
}
