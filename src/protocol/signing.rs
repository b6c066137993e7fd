//! Ed25519 signing keys and signed JSON.
//!
//! Signs and verifies the canonical JSON of an object (minus `signatures` and
//! `unsigned`) and files signatures under `signatures.{server}.{key_id}`. Where
//! keys come from (files, key servers) is not this module's business.
//! Spec: <https://spec.matrix.org/latest/appendices/#signing-json>.

use std::sync::Arc;

use ed25519_compact::{KeyPair, Seed, Signature};
use ring::signature::Ed25519KeyPair;

/// The verification key type callers hold (re-exported so they need not name the crate).
pub use ed25519_compact::PublicKey;
use serde_json::{Map, Value};

use super::canonical_json::{self, CanonicalJsonError, Strictness};
use super::encoding::{self, Base64Error};

/// The only signing algorithm the spec defines.
pub const ED25519: &str = "ed25519";

/// Spec: the key version of a key ID is `[a-zA-Z0-9_]`; we bound its length
/// so that a key ID stays a short map key.
pub const MAX_KEY_VERSION_BYTES: usize = 64;

/// Why signing or verifying failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningError {
    /// The value to sign or verify is not a JSON object.
    NotAnObject,
    /// The object has no canonical encoding.
    CanonicalJson(CanonicalJsonError),
    /// `signatures` is present but not an object of objects of strings.
    MalformedSignatures,
    /// No signature from this server with this key ID.
    MissingSignature,
    /// A key or signature is not valid base64.
    Base64(Base64Error),
    /// A key or signature has the wrong length or is not a valid curve point.
    InvalidKey,
    /// The key ID is not `ed25519:version`.
    InvalidKeyId,
    /// The signature does not match.
    BadSignature,
}

impl std::fmt::Display for SigningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningError::NotAnObject => f.write_str("only JSON objects can be signed"),
            SigningError::CanonicalJson(error) => write!(f, "cannot sign: {error}"),
            SigningError::MalformedSignatures => f.write_str("malformed `signatures` object"),
            SigningError::MissingSignature => f.write_str("no signature for this server and key"),
            SigningError::Base64(error) => error.fmt(f),
            SigningError::InvalidKey => f.write_str("invalid ed25519 key or signature bytes"),
            SigningError::InvalidKeyId => f.write_str("key ID is not `ed25519:<version>`"),
            SigningError::BadSignature => f.write_str("signature does not verify"),
        }
    }
}

impl std::error::Error for SigningError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SigningError::CanonicalJson(error) => Some(error),
            SigningError::Base64(error) => Some(error),
            _ => None,
        }
    }
}

impl From<CanonicalJsonError> for SigningError {
    fn from(error: CanonicalJsonError) -> Self {
        SigningError::CanonicalJson(error)
    }
}

impl From<Base64Error> for SigningError {
    fn from(error: Base64Error) -> Self {
        SigningError::Base64(error)
    }
}

/// A server's signing key: its ID (`ed25519:version`) and the key pair.
#[derive(Clone)]
pub struct SigningKey {
    pub key_id: String,
    pub key_pair: KeyPair,
    /// The same key for signing with `ring` (already in the tree for TLS),
    /// whose Ed25519 signs in about two thirds of the time: every event this
    /// server makes is signed, thousands for one createRoom with many
    /// invites. Both make the same deterministic RFC 8032 signatures.
    signer: Arc<Ed25519KeyPair>,
}

/// Shows the key ID and public key only: the secret half must never reach a log.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Builds the key `ed25519:{version}` from its 32-byte seed (what Synapse
    /// stores in its `.signing.key` file, base64-encoded).
    pub fn from_seed(version: &str, seed: &[u8]) -> Result<SigningKey, SigningError> {
        let seed = Seed::from_slice(seed).map_err(|_| SigningError::InvalidKey)?;
        SigningKey::of(version, KeyPair::from_seed(seed))
    }

    /// Makes a fresh random key `ed25519:{version}`.
    pub fn generate(version: &str) -> Result<SigningKey, SigningError> {
        SigningKey::of(version, KeyPair::generate())
    }

    fn of(version: &str, key_pair: KeyPair) -> Result<SigningKey, SigningError> {
        let signer =
            Ed25519KeyPair::from_seed_and_public_key(key_pair.sk.seed().as_ref(), key_pair.pk.as_ref())
                .map_err(|_| SigningError::InvalidKey)?;
        Ok(SigningKey { key_id: key_id(version)?, key_pair, signer: Arc::new(signer) })
    }

    /// The 32-byte seed, to store the key.
    pub fn seed(&self) -> [u8; 32] {
        *self.key_pair.sk.seed()
    }

    /// The public key in unpadded base64, as published in `verify_keys`.
    pub fn public_key_base64(&self) -> String {
        encoding::encode(self.key_pair.pk.as_ref())
    }

    /// Signs `message` and returns the signature in unpadded base64.
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        // Deterministic RFC 8032 signatures, as NaCl makes.
        encoding::encode(self.signer.sign(message).as_ref())
    }
}

/// Builds the key ID `ed25519:{version}`, checking the version's grammar.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#signing-details> and
/// <https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys>.
pub fn key_id(version: &str) -> Result<String, SigningError> {
    let valid = !version.is_empty()
        && version.len() <= MAX_KEY_VERSION_BYTES
        && version.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid { Ok(format!("{ED25519}:{version}")) } else { Err(SigningError::InvalidKeyId) }
}

/// Reads a public key from unpadded (or padded) base64.
pub fn public_key_from_base64(text: &str) -> Result<PublicKey, SigningError> {
    let bytes = encoding::decode(text)?;
    PublicKey::from_slice(&bytes).map_err(|_| SigningError::InvalidKey)
}

/// The bytes that a signature over `object` covers: its canonical JSON
/// without `signatures` and `unsigned`.
fn signed_bytes(object: &Map<String, Value>) -> Result<Vec<u8>, SigningError> {
    // Lenient: signed objects may carry events of room v1 to v5 with
    // out-of-range numbers; the caller decides whether those are acceptable.
    let text =
        canonical_json::object_to_string_without(object, &["signatures", "unsigned"], Strictness::Lenient)?;
    Ok(text.into_bytes())
}

/// Signs `value` (a JSON object) as `server_name` with `key`, adding the
/// signature at `signatures.{server_name}.{key.key_id}` and keeping the
/// signatures already present.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#signing-details>.
pub fn sign_json(value: &mut Value, server_name: &str, key: &SigningKey) -> Result<(), SigningError> {
    let object = value.as_object_mut().ok_or(SigningError::NotAnObject)?;
    let signature = key.sign_bytes(&signed_bytes(object)?);
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?;
    let by_server = signatures
        .entry(server_name)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?;
    by_server.insert(key.key_id.clone(), Value::String(signature));
    Ok(())
}

/// Checks the signature of `server_name` with `key_id` on `value` against
/// `public_key`.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#checking-for-a-signature>.
pub fn verify_json(
    value: &Value,
    server_name: &str,
    key_id: &str,
    public_key: &PublicKey,
) -> Result<(), SigningError> {
    let object = value.as_object().ok_or(SigningError::NotAnObject)?;
    if key_id.split_once(':').map(|(algorithm, _)| algorithm) != Some(ED25519) {
        return Err(SigningError::InvalidKeyId);
    }
    let signature = match object.get("signatures") {
        None => return Err(SigningError::MissingSignature),
        Some(Value::Object(signatures)) => match signatures.get(server_name) {
            None => return Err(SigningError::MissingSignature),
            Some(Value::Object(by_server)) => match by_server.get(key_id) {
                None => return Err(SigningError::MissingSignature),
                Some(Value::String(signature)) => signature,
                Some(_) => return Err(SigningError::MalformedSignatures),
            },
            Some(_) => return Err(SigningError::MalformedSignatures),
        },
        Some(_) => return Err(SigningError::MalformedSignatures),
    };
    let signature =
        Signature::from_slice(&encoding::decode(signature)?).map_err(|_| SigningError::InvalidKey)?;
    public_key.verify(signed_bytes(object)?, &signature).map_err(|_| SigningError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTORS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/signing.json"));

    /// The spec's test key: `ed25519:1` of server `domain`.
    fn spec_key(vectors: &Value) -> SigningKey {
        let seed = encoding::decode(vectors["seed_unpadded_base64"].as_str().unwrap()).unwrap();
        let key_id = vectors["key_id"].as_str().unwrap();
        SigningKey::from_seed(key_id.strip_prefix("ed25519:").unwrap(), &seed).unwrap()
    }

    #[test]
    fn spec_json_signing_vectors_byte_for_byte() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let key = spec_key(&vectors);
        let server = vectors["server_name"].as_str().unwrap();
        assert_eq!(key.key_id, vectors["key_id"].as_str().unwrap());
        assert_eq!(key.public_key_base64(), vectors["public_key_unpadded_base64_derived"].as_str().unwrap());
        let cases = vectors["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 2);
        for case in cases {
            let mut value = case["input"].clone();
            sign_json(&mut value, server, &key).unwrap();
            assert_eq!(value, case["signed"]);
            verify_json(&case["signed"], server, &key.key_id, &key.key_pair.pk).unwrap();
        }
    }

    #[test]
    fn spec_illustration_does_not_verify() {
        // The vectors README: `signing_details_example` is not a positive case.
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let signed = &vectors["signing_details_example"]["signed"];
        let public_key =
            public_key_from_base64(signed["signing_keys"]["ed25519:1"].as_str().unwrap()).unwrap();
        assert_eq!(
            verify_json(signed, "example.org", "ed25519:1", &public_key),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn signatures_ignore_unsigned_and_other_signatures() {
        let key = SigningKey::from_seed("a", &[7; 32]).unwrap();
        let other = SigningKey::from_seed("b", &[8; 32]).unwrap();
        let mut value = json!({"name": "x", "unsigned": {"age": 1}});
        sign_json(&mut value, "one", &key).unwrap();
        sign_json(&mut value, "two", &other).unwrap();
        value["unsigned"]["age"] = json!(2);
        verify_json(&value, "one", "ed25519:a", &key.key_pair.pk).unwrap();
        verify_json(&value, "two", "ed25519:b", &other.key_pair.pk).unwrap();
        assert_eq!(value["unsigned"], json!({"age": 2}));
    }

    #[test]
    fn verification_failures() {
        let key = SigningKey::from_seed("a", &[7; 32]).unwrap();
        let mut signed = json!({"name": "x"});
        sign_json(&mut signed, "one", &key).unwrap();
        let mut tampered = signed.clone();
        tampered["name"] = json!("y");
        let mut bad_base64 = signed.clone();
        bad_base64["signatures"]["one"]["ed25519:a"] = json!("!!");
        let mut short = signed.clone();
        short["signatures"]["one"]["ed25519:a"] = json!("AAAA");
        let mut malformed = signed.clone();
        malformed["signatures"]["one"] = json!("text");
        let pk = &key.key_pair.pk;
        let cases: Vec<(&Value, &str, &str, SigningError)> = vec![
            (&tampered, "one", "ed25519:a", SigningError::BadSignature),
            (&signed, "two", "ed25519:a", SigningError::MissingSignature),
            (&signed, "one", "ed25519:b", SigningError::MissingSignature),
            (&signed, "one", "curve25519:a", SigningError::InvalidKeyId),
            (&short, "one", "ed25519:a", SigningError::InvalidKey),
            (&malformed, "one", "ed25519:a", SigningError::MalformedSignatures),
        ];
        for (value, server, key_id, expected) in cases {
            assert_eq!(verify_json(value, server, key_id, pk), Err(expected), "{server} {key_id}");
        }
        assert!(matches!(verify_json(&bad_base64, "one", "ed25519:a", pk), Err(SigningError::Base64(_))));
        assert_eq!(verify_json(&json!([1]), "one", "ed25519:a", pk), Err(SigningError::NotAnObject));
    }

    #[test]
    fn key_ids_and_seeds() {
        let cases: &[(&str, Result<&str, SigningError>)] = &[
            ("1", Ok("ed25519:1")),
            ("a_B_9", Ok("ed25519:a_B_9")),
            ("", Err(SigningError::InvalidKeyId)),
            ("a:b", Err(SigningError::InvalidKeyId)),
            ("a-b", Err(SigningError::InvalidKeyId)),
        ];
        for (version, expected) in cases {
            assert_eq!(key_id(version).as_deref(), expected.as_ref().map(|s| *s), "{version}");
        }
        assert_eq!(SigningKey::from_seed("1", &[0; 31]).unwrap_err(), SigningError::InvalidKey);
        let generated = SigningKey::generate("x").unwrap();
        let reloaded = SigningKey::from_seed("x", &generated.seed()).unwrap();
        assert_eq!(reloaded.public_key_base64(), generated.public_key_base64());
    }
}
