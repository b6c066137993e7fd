//! Unpadded base64, the way Matrix writes keys, hashes, signatures and event IDs.
//!
//! Encoding never pads; decoding accepts input with or without `=` padding, as
//! the spec asks. This module owns only the byte/text conversion, nothing else.
//! Spec: <https://spec.matrix.org/latest/appendices/#unpadded-base64>.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Encodes without padding, decodes padded or unpadded input. Trailing bits are
/// tolerated on decode because the spec says to accept input "wherever possible".
const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);

/// RFC 4648 standard alphabet (`+`, `/`).
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);

/// RFC 4648 URL-safe alphabet (`-`, `_`).
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);

/// Why a base64 string could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base64Error(base64::DecodeError);

impl std::fmt::Display for Base64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid base64: {}", self.0)
    }
}

impl std::error::Error for Base64Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Encodes `bytes` as standard unpadded base64.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#unpadded-base64>.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Encodes `bytes` as URL-safe unpadded base64.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#url-safe-unpadded-base64>.
pub fn encode_url_safe(bytes: &[u8]) -> String {
    URL_SAFE.encode(bytes)
}

/// Decodes standard base64, padded or not.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    STANDARD.decode(text).map_err(Base64Error)
}

/// Decodes URL-safe base64, padded or not.
pub fn decode_url_safe(text: &str) -> Result<Vec<u8>, Base64Error> {
    URL_SAFE.decode(text).map_err(Base64Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/identifiers.json"));

    #[test]
    fn spec_unpadded_base64_examples() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let cases = vectors["unpadded_base64"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let decoded = case["decoded"].as_str().unwrap();
            let encoded = case["encoded"].as_str().unwrap();
            assert_eq!(encode(decoded.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), decoded.as_bytes());
        }
    }

    #[test]
    fn decoding_accepts_padding_and_rejects_garbage() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("Zg", Some(b"f")),
            ("Zg==", Some(b"f")),
            ("Zm8=", Some(b"fo")),
            ("Zm9v", Some(b"foo")),
            ("Z", None),
            ("Zm9v!", None),
            ("Zm 9v", None),
        ];
        for (text, expected) in cases {
            assert_eq!(decode(text).ok().as_deref(), *expected, "{text}");
        }
    }

    #[test]
    fn the_two_alphabets_differ_only_in_two_characters() {
        let bytes = [0xfb, 0xff, 0xbf];
        assert_eq!(encode(&bytes), "+/+/");
        assert_eq!(encode_url_safe(&bytes), "-_-_");
        assert_eq!(decode_url_safe("-_-_").unwrap(), bytes);
        assert!(decode_url_safe("+/+/").is_err());
        assert!(decode("-_-_").is_err());
    }
}
