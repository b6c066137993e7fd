//! The pure parts of ACME (RFC 8555): JWS requests signed with ES256, JWK
//! thumbprints, key authorizations, the TLS-ALPN-01 certificate's extension,
//! the server's JSON objects, and when a certificate is due for renewal.
//!
//! Knows nothing of sockets, SQL or the clock: the signing itself is a
//! callback, times are passed in.
//!
//! Spec: <https://www.rfc-editor.org/rfc/rfc8555>.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::encoding::encode_url_safe;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737 §6.2).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The `id-pe-acmeIdentifier` extension OID (RFC 8737 §6.1).
pub const ACME_IDENTIFIER_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 31];

/// Where HTTP-01 responses are served (RFC 8555 §8.3).
pub const HTTP01_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// A CA's token is at least 128 bits of base64url (RFC 8555 §8.1); anything
/// much longer is not a token we serve.
const MAX_TOKEN_LENGTH: usize = 256;

/// More names than one certificate may carry at Let's Encrypt.
pub const MAX_DOMAINS: usize = 100;

/// base64url without padding, as JWS uses it (RFC 7515 §2).
pub fn base64url(bytes: &[u8]) -> String {
    encode_url_safe(bytes)
}

/// A P-256 public key as a JWK (RFC 7518 §6.2.1), from its uncompressed
/// point (`0x04 || x || y`, as ring gives it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcJwk {
    pub x: String,
    pub y: String,
}

impl EcJwk {
    /// Splits an uncompressed P-256 point; `None` if it is not one.
    pub fn from_uncompressed_point(point: &[u8]) -> Option<EcJwk> {
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        Some(EcJwk { x: base64url(&point[1..33]), y: base64url(&point[33..]) })
    }

    /// The JWK's required members (RFC 7638 §3.2: `crv`, `kty`, `x`, `y`).
    fn members(&self) -> BTreeMap<&'static str, &str> {
        BTreeMap::from([("crv", "P-256"), ("kty", "EC"), ("x", self.x.as_str()), ("y", self.y.as_str())])
    }

    /// The JWK as JSON, for a `jwk` header.
    pub fn to_json(&self) -> Value {
        json!(self.members())
    }

    /// The key's thumbprint (RFC 7638 §3), base64url.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.members())
    }
}

/// RFC 7638 §3: SHA-256 of the required members in lexicographic order, no
/// whitespace, base64url. The members are strings (base64url values and
/// fixed names), which serde_json writes as JSON strings.
fn thumbprint(members: &BTreeMap<&str, &str>) -> String {
    // A BTreeMap serialises its keys sorted and compact: RFC 7638's form.
    let text = serde_json::to_string(members).unwrap_or_default();
    base64url(&Sha256::digest(text.as_bytes()))
}

/// How a request names its account key (RFC 8555 §6.2): the whole key for
/// `newAccount`, the account URL afterwards.
#[derive(Clone, Copy, Debug)]
pub enum KeyRef<'a> {
    Jwk(&'a EcJwk),
    Kid(&'a str),
}

/// The JWS protected header of an ACME request (RFC 8555 §6.2): `alg`
/// ES256, `jwk` or `kid`, the replay nonce and the URL.
pub fn protected_header(key: KeyRef<'_>, nonce: &str, url: &str) -> Value {
    let mut header = json!({ "alg": "ES256", "nonce": nonce, "url": url });
    match key {
        KeyRef::Jwk(jwk) => header["jwk"] = jwk.to_json(),
        KeyRef::Kid(kid) => header["kid"] = json!(kid),
    }
    header
}

/// A flattened JWS JSON body (RFC 7515 §7.2.2). `payload` `None` is a
/// POST-as-GET (RFC 8555 §6.3: an empty payload). `sign` takes the signing
/// input and gives the raw ES256 signature (`r || s`, RFC 7518 §3.4).
pub fn jws<E>(
    protected: &Value,
    payload: Option<&Value>,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let protected = base64url(protected.to_string().as_bytes());
    let payload = payload.map_or(String::new(), |payload| base64url(payload.to_string().as_bytes()));
    let signature = sign(format!("{protected}.{payload}").as_bytes())?;
    let body = json!({ "protected": protected, "payload": payload, "signature": base64url(&signature) });
    Ok(body.to_string().into_bytes())
}

/// Whether `token` is a token we may serve: base64url characters only
/// (RFC 8555 §8.1), so it is safe in a path and in a key authorization.
pub fn is_valid_token(token: &str) -> bool {
    (16..=MAX_TOKEN_LENGTH).contains(&token.len())
        && token.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The key authorization of a challenge (RFC 8555 §8.1): `token || '.' ||
/// base64url(thumbprint(accountKey))`.
pub fn key_authorization(token: &str, thumbprint: &str) -> String {
    format!("{token}.{thumbprint}")
}

/// The DER value of the `acmeIdentifier` extension of a TLS-ALPN-01
/// certificate (RFC 8737 §3): an OCTET STRING holding the SHA-256 of the
/// key authorization.
pub fn acme_identifier_value(key_authorization: &str) -> Vec<u8> {
    let digest = Sha256::digest(key_authorization.as_bytes());
    let mut value = vec![0x04, 0x20];
    value.extend_from_slice(&digest);
    value
}

/// The ACME directory (RFC 8555 §7.1.1): the URLs we use.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    pub new_nonce: String,
    pub new_account: String,
    pub new_order: String,
}

/// An error document (RFC 8555 §6.7, RFC 7807).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub detail: String,
}

impl Problem {
    /// The `urn:ietf:params:acme:error:badNonce` error: retry with the new nonce.
    pub fn is_bad_nonce(&self) -> bool {
        self.kind == "urn:ietf:params:acme:error:badNonce"
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind.is_empty() && self.detail.is_empty() {
            return write!(formatter, "no problem document");
        }
        write!(formatter, "{}: {}", self.kind, self.detail)
    }
}

/// An order (RFC 8555 §7.1.3).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Order {
    pub status: String,
    #[serde(default)]
    pub authorizations: Vec<String>,
    pub finalize: String,
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default)]
    pub error: Option<Problem>,
}

/// An identifier (RFC 8555 §9.7.7): we ask for `dns` ones only.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// An authorization (RFC 8555 §7.1.4).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Authorization {
    pub status: String,
    pub identifier: Identifier,
    #[serde(default)]
    pub challenges: Vec<Challenge>,
}

/// A challenge (RFC 8555 §8).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Challenge {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub error: Option<Problem>,
}

impl Authorization {
    /// The challenge of `kind` (`tls-alpn-01`, `http-01`) with a token we may serve.
    pub fn challenge(&self, kind: &str) -> Option<(&Challenge, &str)> {
        self.challenges.iter().find(|challenge| challenge.kind == kind).and_then(|challenge| {
            let token = challenge.token.as_deref()?;
            is_valid_token(token).then_some((challenge, token))
        })
    }

    /// Why validation failed, as the CA put it.
    pub fn failure(&self) -> String {
        let problems: Vec<String> = self
            .challenges
            .iter()
            .filter_map(|challenge| {
                challenge.error.as_ref().map(|error| format!("{}: {error}", challenge.kind))
            })
            .collect();
        if problems.is_empty() { format!("authorization {}", self.status) } else { problems.join("; ") }
    }
}

/// The `newOrder` payload for `domains` (RFC 8555 §7.4).
pub fn new_order_payload(domains: &[String]) -> Value {
    let identifiers: Vec<Value> =
        domains.iter().map(|domain| json!({ "type": "dns", "value": domain })).collect();
    json!({ "identifiers": identifiers })
}

/// The `newAccount` payload (RFC 8555 §7.3): the terms agreed (the operator
/// agreed by configuring the CA), the contact if an email is configured.
pub fn new_account_payload(email: Option<&str>) -> Value {
    let mut payload = json!({ "termsOfServiceAgreed": true });
    if let Some(email) = email {
        payload["contact"] = json!([format!("mailto:{email}")]);
    }
    payload
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds)
/// should be renewed: two thirds into its lifetime.
pub fn renewal_time(not_before: i64, not_after: i64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(lifetime / 3 * 2 + lifetime % 3 * 2 / 3)
}

/// The wait before retry number `failures` (1 for the first) after a failed
/// renewal: 10 s doubling to an hour, so a CA that is down is asked again
/// soon, and one that keeps failing is not hammered.
pub fn retry_delay_secs(failures: u32) -> u64 {
    const FIRST: u64 = 10;
    const MOST: u64 = 3_600;
    FIRST.saturating_mul(1u64 << failures.saturating_sub(1).min(20)).min(MOST)
}

/// A `Retry-After` header (RFC 8555 §8.2, delta-seconds only; a date or
/// nothing gives `default`), held between 1 s and `most`.
pub fn retry_after_secs(header: Option<&str>, default: u64, most: u64) -> u64 {
    let seconds = header.and_then(|value| value.trim().parse::<u64>().ok()).unwrap_or(default);
    seconds.clamp(1, most.max(1))
}

/// One DER element: its tag, its content and what follows it.
fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let short = || "truncated DER".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(short)?;
    let (&first, rest) = rest.split_first().ok_or_else(short)?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || 4 < count || rest.len() < count {
            return Err("bad DER length".into());
        }
        let length = rest[..count].iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return Err(short());
    }
    Ok((tag, &rest[..length], &rest[length..]))
}

const DER_SEQUENCE: u8 = 0x30;
const DER_INTEGER: u8 = 0x02;
const DER_UTC_TIME: u8 = 0x17;
const DER_GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` in a TBSCertificate.
const DER_VERSION: u8 = 0xa0;

/// What renewal needs to know of a certificate (DER): its serial number
/// (hex) and validity (Unix seconds), read from the TBSCertificate (RFC
/// 5280 §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The content and the rest of a DER element of `tag`.
fn expect<'a>(
    element: (u8, &'a [u8], &'a [u8]),
    tag: u8,
    what: &str,
) -> Result<(&'a [u8], &'a [u8]), String> {
    if element.0 == tag { Ok((element.1, element.2)) } else { Err(format!("no {what} in the certificate")) }
}

/// Reads [`CertificateFacts`] from a DER certificate.
pub fn certificate_facts(der: &[u8]) -> Result<CertificateFacts, String> {
    let (certificate, _) = expect(der_element(der)?, DER_SEQUENCE, "certificate")?;
    let (tbs, _) = expect(der_element(certificate)?, DER_SEQUENCE, "TBSCertificate")?;
    let mut fields = tbs;
    let first = der_element(fields)?;
    if first.0 == DER_VERSION {
        fields = first.2;
    }
    let (serial, rest) = expect(der_element(fields)?, DER_INTEGER, "serial number")?;
    let (_, rest) = expect(der_element(rest)?, DER_SEQUENCE, "signature algorithm")?;
    let (_, rest) = expect(der_element(rest)?, DER_SEQUENCE, "issuer")?;
    let (validity, _) = expect(der_element(rest)?, DER_SEQUENCE, "validity")?;
    let (tag, not_before, rest) = der_element(validity)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der_element(rest)?;
    let not_after = der_time(tag, not_after)?;
    let serial = serial.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(CertificateFacts { serial, not_before, not_after })
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// Unix seconds (RFC 5280 §4.1.2.5).
fn der_time(tag: u8, content: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(content).map_err(|_| "bad certificate time".to_string())?;
    let digits = text.strip_suffix('Z').ok_or("certificate time not in UTC")?;
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("bad certificate time".into());
    }
    let number = |range: std::ops::Range<usize>| digits.get(range).and_then(|part| part.parse::<i64>().ok());
    let (year, rest) = match (tag, digits.len()) {
        (DER_UTC_TIME, 12) => {
            let year = number(0..2).ok_or("bad certificate time")?;
            (if year < 50 { 2000 + year } else { 1900 + year }, 2)
        }
        (DER_GENERALIZED_TIME, 14) => (number(0..4).ok_or("bad certificate time")?, 4),
        _ => return Err("bad certificate time".into()),
    };
    let field = |at: usize| number(rest + at..rest + at + 2).ok_or("bad certificate time");
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || 23 < hour || 59 < minute || 60 < second {
        return Err("bad certificate time".into());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example: the thumbprint of an RSA key.
    #[test]
    fn thumbprint_of_the_rfc_7638_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let members = BTreeMap::from([("e", "AQAB"), ("kty", "RSA"), ("n", n)]);
        assert_eq!(thumbprint(&members), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    /// RFC 7515 Appendix A.3's ES256 example key.
    fn rfc7515_key() -> EcJwk {
        EcJwk {
            x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
            y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into(),
        }
    }

    /// RFC 7515 Appendix A.3: the example's signature is the raw `r || s`
    /// over `protected.payload`, which is what [`jws`] hands its signer.
    #[test]
    fn the_rfc_7515_es256_example_verifies_as_jws_builds_it() {
        let key = rfc7515_key();
        let mut point = vec![4];
        point.extend(crate::protocol::encoding::decode_url_safe(&key.x).unwrap());
        point.extend(crate::protocol::encoding::decode_url_safe(&key.y).unwrap());
        assert_eq!(EcJwk::from_uncompressed_point(&point), Some(key));
        let input = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = crate::protocol::encoding::decode_url_safe(
            "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
        )
        .unwrap();
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point);
        assert!(public.verify(input.as_bytes(), &signature).is_ok());
    }

    #[test]
    fn a_jws_carries_the_header_payload_and_signature() {
        let key = rfc7515_key();
        let header = protected_header(KeyRef::Jwk(&key), "nonce-1", "https://ca.test/new-account");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert_eq!(header["jwk"]["x"], key.x.as_str());
        assert!(header.get("kid").is_none());
        let mut signed = Vec::new();
        let body = jws(&header, None, |input| {
            signed = input.to_vec();
            Ok::<_, ()>(vec![1, 2, 3])
        })
        .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["payload"], "");
        assert_eq!(body["signature"], "AQID");
        assert_eq!(signed, format!("{}.", body["protected"].as_str().unwrap()).into_bytes());
        let decoded =
            crate::protocol::encoding::decode_url_safe(body["protected"].as_str().unwrap()).unwrap();
        let decoded: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(decoded["nonce"], "nonce-1");
        assert_eq!(decoded["url"], "https://ca.test/new-account");
        let by_kid = protected_header(KeyRef::Kid("https://ca.test/acct/1"), "n", "u");
        assert_eq!(by_kid["kid"], "https://ca.test/acct/1");
        assert!(by_kid.get("jwk").is_none());
        let with_payload = jws(&by_kid, Some(&json!({"a": 1})), |_| Ok::<_, ()>(Vec::new())).unwrap();
        let with_payload: Value = serde_json::from_slice(&with_payload).unwrap();
        assert_eq!(with_payload["payload"], base64url(b"{\"a\":1}"));
    }

    #[test]
    fn key_authorization_and_the_acme_identifier_extension() {
        let key = rfc7515_key();
        let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
        let authorization = key_authorization(token, &key.thumbprint());
        assert_eq!(authorization, format!("{token}.{}", key.thumbprint()));
        let value = acme_identifier_value(&authorization);
        assert_eq!(&value[..2], &[0x04, 0x20]);
        assert_eq!(&value[2..], Sha256::digest(authorization.as_bytes()).as_slice());
    }

    #[test]
    fn tokens_are_base64url_of_a_sane_length() {
        assert!(is_valid_token("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"));
        assert!(!is_valid_token("short"));
        assert!(!is_valid_token("../../etc/passwd/../../etc/passwd"));
        assert!(!is_valid_token(&"a".repeat(MAX_TOKEN_LENGTH + 1)));
    }

    /// The objects of RFC 8555 §7.1's examples, as a CA sends them.
    #[test]
    fn server_objects_parse() {
        let directory: Directory = serde_json::from_str(
            r#"{"newNonce": "https://example.com/acme/new-nonce",
                "newAccount": "https://example.com/acme/new-account",
                "newOrder": "https://example.com/acme/new-order",
                "meta": {"termsOfService": "https://example.com/acme/terms/2017-5-30"}}"#,
        )
        .unwrap();
        assert_eq!(directory.new_order, "https://example.com/acme/new-order");
        let order: Order = serde_json::from_str(
            r#"{"status": "valid", "expires": "2016-01-20T14:09:07.99Z",
                "identifiers": [{"type": "dns", "value": "www.example.org"}],
                "authorizations": ["https://example.com/acme/authz/PAniVnsZcis"],
                "finalize": "https://example.com/acme/order/TOlocE8rfgo/finalize",
                "certificate": "https://example.com/acme/cert/mAt3xBGaobw"}"#,
        )
        .unwrap();
        assert_eq!(order.certificate.as_deref(), Some("https://example.com/acme/cert/mAt3xBGaobw"));
        let authorization: Authorization = serde_json::from_str(
            r#"{"status": "pending", "identifier": {"type": "dns", "value": "www.example.org"},
                "challenges": [
                  {"type": "http-01", "url": "https://example.com/acme/chall/prV_B7yEyA4",
                   "token": "DGyRejmCefe7v4NfDGDKfA"},
                  {"type": "dns-01", "url": "https://example.com/acme/chall/Rg5dV14Gh1Q",
                   "token": "DGyRejmCefe7v4NfDGDKfA"}]}"#,
        )
        .unwrap();
        let (challenge, token) = authorization.challenge("http-01").unwrap();
        assert_eq!(challenge.url, "https://example.com/acme/chall/prV_B7yEyA4");
        assert_eq!(token, "DGyRejmCefe7v4NfDGDKfA");
        assert!(authorization.challenge("tls-alpn-01").is_none());
        let problem: Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:badNonce", "detail": "JWS has an invalid anti-replay nonce"}"#,
        )
        .unwrap();
        assert!(problem.is_bad_nonce());
    }

    #[test]
    fn payloads() {
        let order = new_order_payload(&["a.example".into(), "b.example".into()]);
        assert_eq!(order["identifiers"][1], json!({"type": "dns", "value": "b.example"}));
        assert_eq!(new_account_payload(None), json!({"termsOfServiceAgreed": true}));
        assert_eq!(new_account_payload(Some("me@example.org"))["contact"][0], "mailto:me@example.org");
    }

    #[test]
    fn renewal_comes_two_thirds_into_the_lifetime() {
        assert_eq!(renewal_time(0, 90), 60);
        assert_eq!(renewal_time(1_000, 1_000 + 90 * 86_400), 1_000 + 60 * 86_400);
        assert_eq!(renewal_time(100, 100), 100);
        assert_eq!(renewal_time(100, 50), 100);
        assert_eq!(renewal_time(i64::MAX - 3, i64::MAX), i64::MAX - 1);
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay_secs(1), 10);
        assert_eq!(retry_delay_secs(2), 20);
        assert_eq!(retry_delay_secs(10), 3_600);
        assert_eq!(retry_delay_secs(u32::MAX), 3_600);
        assert_eq!(retry_after_secs(Some("3"), 1, 10), 3);
        assert_eq!(retry_after_secs(Some("100000"), 1, 10), 10);
        assert_eq!(retry_after_secs(Some("Wed, 21 Oct 2015 07:28:00 GMT"), 2, 10), 2);
        assert_eq!(retry_after_secs(Some("0"), 2, 10), 1);
        assert_eq!(retry_after_secs(None, 2, 10), 2);
    }

    #[test]
    fn certificate_facts_read_serial_and_validity() {
        let mut params = rcgen::CertificateParams::new(vec!["node.example".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x12, 0x34]));
        // Dates to 2049 are UTCTime, later ones GeneralizedTime (RFC 5280 §4.1.2.5).
        params.not_before = rcgen::date_time_ymd(2030, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 3, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let facts = certificate_facts(certificate.der()).unwrap();
        assert_eq!(facts.serial, "1234");
        assert_eq!(facts.not_before, 1_893_542_400);
        assert_eq!(facts.not_after, 2_561_241_600);
        assert!(certificate_facts(&certificate.der()[..40]).is_err());
        assert!(certificate_facts(b"").is_err());
        assert!(certificate_facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    /// The fuzz target's hand-made seeds are certificates as far as we read them.
    #[test]
    fn minimal_certificates_read() {
        let v3 = b"\x30\x2f\x30\x2d\xa0\x03\x02\x01\x02\x02\x02\x12\x34\x30\x00\x30\x00\x30\x1e\
          \x17\x0d700101000000Z\x17\x0d491231235959Z";
        let facts = certificate_facts(v3).unwrap();
        assert_eq!((facts.serial.as_str(), facts.not_before, facts.not_after), ("1234", 0, 2_524_607_999));
        let v1 = b"\x30\x2d\x30\x2b\x02\x01\x01\x30\x00\x30\x00\x30\x22\
          \x18\x0f20000301000000Z\x18\x0f99991231235959Z";
        assert_eq!(certificate_facts(v1).unwrap().not_after, 253_402_300_799);
    }

    #[test]
    fn der_times() {
        assert_eq!(der_time(DER_UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(der_time(DER_UTC_TIME, b"491231235959Z"), Ok(2_524_607_999));
        assert_eq!(der_time(DER_GENERALIZED_TIME, b"20000301000000Z"), Ok(951_868_800));
        assert!(der_time(DER_UTC_TIME, b"700101000000+0100").is_err());
        assert!(der_time(DER_UTC_TIME, b"701301000000Z").is_err());
        assert!(der_time(DER_GENERALIZED_TIME, b"700101000000Z").is_err());
    }
}
