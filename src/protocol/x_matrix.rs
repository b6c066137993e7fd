//! The `X-Matrix` Authorization header of server-server requests: parsing
//! and formatting it, and the JSON object whose signature it carries.
//!
//! Pure: no keys are fetched and no clock is read here. The header faces the
//! network, so the parser accepts exactly the grammar of RFC 9110 section 11.4
//! (plus the spec's allowance for unquoted colons) and refuses everything else.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#request-authentication>.

use serde_json::{Map, Value};

/// The auth scheme name (compared case-insensitively, as RFC 9110 asks).
pub const SCHEME: &str = "X-Matrix";

/// A header longer than this is refused: four short parameters never need it.
pub const MAX_HEADER_BYTES: usize = 4096;

/// The parameters of one `X-Matrix` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XMatrix {
    /// The sending server's name.
    pub origin: String,
    /// The receiving server's name; older servers omit it (spec v1.3).
    pub destination: Option<String>,
    /// The key ID, e.g. `ed25519:abc`.
    pub key: String,
    /// The unpadded base64 signature.
    pub sig: String,
}

/// Why a header is not a usable `X-Matrix` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XMatrixError {
    /// Another scheme (`Bearer` and the like).
    WrongScheme,
    /// The parameter list does not follow the grammar.
    Malformed(&'static str),
    /// A required parameter (`origin`, `key` or `sig`) is absent.
    Missing(&'static str),
    /// A parameter appears twice.
    Duplicate(String),
    /// The header is longer than [`MAX_HEADER_BYTES`].
    TooLong,
}

impl std::fmt::Display for XMatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XMatrixError::WrongScheme => f.write_str("the Authorization scheme is not X-Matrix"),
            XMatrixError::Malformed(what) => write!(f, "malformed X-Matrix header: {what}"),
            XMatrixError::Missing(name) => write!(f, "the X-Matrix header has no {name}"),
            XMatrixError::Duplicate(name) => write!(f, "the X-Matrix header repeats {name}"),
            XMatrixError::TooLong => f.write_str("the X-Matrix header is too long"),
        }
    }
}

impl std::error::Error for XMatrixError {}

/// RFC 9110 `tchar`, plus `:` which the spec lets older servers leave unquoted.
fn is_value_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&byte)
}

/// RFC 9110 `tchar` (parameter names).
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn skip_whitespace(bytes: &[u8], mut index: usize) -> usize {
    while index < bytes.len() && (bytes[index] == b' ' || bytes[index] == b'\t') {
        index += 1;
    }
    index
}

/// Parses an `Authorization` header value. Unknown parameters are ignored;
/// names are case-insensitive; values may be tokens or quoted strings with
/// backslash escapes.
pub fn parse(header: &str) -> Result<XMatrix, XMatrixError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(XMatrixError::TooLong);
    }
    let bytes = header.as_bytes();
    let scheme_end = bytes.iter().position(|byte| *byte == b' ' || *byte == b'\t').unwrap_or(bytes.len());
    if !header[..scheme_end].eq_ignore_ascii_case(SCHEME) {
        return Err(XMatrixError::WrongScheme);
    }
    if scheme_end == bytes.len() {
        return Err(XMatrixError::Missing("origin"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let mut index = skip_whitespace(bytes, scheme_end);
    loop {
        // A parameter name.
        let name_start = index;
        while index < bytes.len() && is_token_char(bytes[index]) {
            index += 1;
        }
        if index == name_start {
            return Err(XMatrixError::Malformed("expected a parameter name"));
        }
        let name = header[name_start..index].to_ascii_lowercase();
        if bytes.get(index) != Some(&b'=') {
            return Err(XMatrixError::Malformed("expected `=` after a parameter name"));
        }
        index += 1;
        // Its value: a quoted string or a token.
        let value = if bytes.get(index) == Some(&b'"') {
            index += 1;
            let mut value = Vec::new();
            loop {
                match bytes.get(index) {
                    None => return Err(XMatrixError::Malformed("unterminated quoted value")),
                    Some(b'"') => {
                        index += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let escaped =
                            *bytes.get(index + 1).ok_or(XMatrixError::Malformed("dangling backslash"))?;
                        // RFC 9110 quoted-pair: HTAB, SP, VCHAR or obs-text only.
                        if escaped.is_ascii_control() && escaped != b'\t' {
                            return Err(XMatrixError::Malformed("control character in a quoted value"));
                        }
                        value.push(escaped);
                        index += 2;
                    }
                    Some(byte) if byte.is_ascii_control() && *byte != b'\t' => {
                        return Err(XMatrixError::Malformed("control character in a quoted value"));
                    }
                    Some(byte) => {
                        value.push(*byte);
                        index += 1;
                    }
                }
            }
            String::from_utf8(value).map_err(|_| XMatrixError::Malformed("value is not UTF-8"))?
        } else {
            let value_start = index;
            while index < bytes.len() && is_value_char(bytes[index]) {
                index += 1;
            }
            if index == value_start {
                return Err(XMatrixError::Malformed("expected a parameter value"));
            }
            header[value_start..index].to_string()
        };
        if params.iter().any(|(seen, _)| *seen == name) {
            return Err(XMatrixError::Duplicate(name));
        }
        params.push((name, value));
        // Then either the end or a comma (with optional whitespace around it).
        index = skip_whitespace(bytes, index);
        if index == bytes.len() {
            break;
        }
        if bytes[index] != b',' {
            return Err(XMatrixError::Malformed("expected `,` between parameters"));
        }
        index = skip_whitespace(bytes, index + 1);
    }
    let mut take = |name: &str| {
        params.iter().position(|(seen, _)| seen == name).map(|position| params.swap_remove(position).1)
    };
    Ok(XMatrix {
        origin: take("origin").ok_or(XMatrixError::Missing("origin"))?,
        destination: take("destination"),
        key: take("key").ok_or(XMatrixError::Missing("key"))?,
        sig: take("sig").ok_or(XMatrixError::Missing("sig"))?,
    })
}

/// Formats the header the way the spec asks senders to: one space after the
/// scheme, lower-case names, quoted values, no whitespace around commas.
pub fn format(header: &XMatrix) -> String {
    let quote = |value: &str| value.replace('\\', "\\\\").replace('"', "\\\"");
    let mut text = format!("{SCHEME} origin=\"{}\"", quote(&header.origin));
    if let Some(destination) = &header.destination {
        text.push_str(&format!(",destination=\"{}\"", quote(destination)));
    }
    text.push_str(&format!(",key=\"{}\",sig=\"{}\"", quote(&header.key), quote(&header.sig)));
    text
}

/// The JSON object a request signature covers (step 1 of the spec):
/// `method`, `uri` (path and query as sent), `origin`, `destination` and, if
/// the request has a body, `content`.
pub fn request_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Value {
    let mut object = Map::new();
    object.insert("method".into(), Value::String(method.to_string()));
    object.insert("uri".into(), Value::String(uri.to_string()));
    object.insert("origin".into(), Value::String(origin.to_string()));
    object.insert("destination".into(), Value::String(destination.to_string()));
    if let Some(content) = content {
        object.insert("content".into(), content.clone());
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signing::{SigningKey, sign_json, verify_json};
    use serde_json::json;

    fn header(origin: &str, destination: Option<&str>, key: &str, sig: &str) -> XMatrix {
        XMatrix {
            origin: origin.into(),
            destination: destination.map(Into::into),
            key: key.into(),
            sig: sig.into(),
        }
    }

    #[test]
    fn valid_headers_parse() {
        let expected = header("origin.example", Some("dest.example:8448"), "ed25519:key1", "ABC/+de");
        let cases = [
            r#"X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:key1",sig="ABC/+de""#,
            // Case-insensitive scheme and names, any order, whitespace around commas.
            r#"x-matrix  SIG="ABC/+de" ,	Key="ed25519:key1" , DESTINATION="dest.example:8448",origin=origin.example"#,
            // Unquoted values with colons, as older servers send them.
            r#"X-Matrix origin=origin.example,destination=dest.example:8448,key=ed25519:key1,sig="ABC/+de""#,
            // Escapes inside quotes; unknown parameters are ignored.
            r#"X-Matrix origin="origin\.example",destination="dest.example:8448",key="ed25519:key1",sig="ABC/+de",extra="a,b""#,
        ];
        for case in cases {
            assert_eq!(parse(case), Ok(expected.clone()), "{case}");
        }
        let without_destination = r#"X-Matrix origin=o.example,key="ed25519:k",sig="s""#;
        assert_eq!(parse(without_destination), Ok(header("o.example", None, "ed25519:k", "s")));
        // A comma inside quotes belongs to the value.
        let comma = r#"X-Matrix origin="a,b",key="ed25519:k",sig="s""#;
        assert_eq!(parse(comma).unwrap().origin, "a,b");
        let quote = r#"X-Matrix origin="a\"b\\c",key="ed25519:k",sig="s""#;
        assert_eq!(parse(quote).unwrap().origin, "a\"b\\c");
    }

    #[test]
    fn invalid_headers_are_refused() {
        use XMatrixError::*;
        let cases: &[(&str, XMatrixError)] = &[
            ("Bearer abc", WrongScheme),
            ("X-Matrixorigin=a", WrongScheme),
            ("X-Matrix", Missing("origin")),
            ("X-Matrix ", Malformed("expected a parameter name")),
            (r#"X-Matrix key="ed25519:k",sig="s""#, Missing("origin")),
            (r#"X-Matrix origin=o,sig="s""#, Missing("key")),
            (r#"X-Matrix origin=o,key="ed25519:k""#, Missing("sig")),
            (r#"X-Matrix origin="o"#, Malformed("unterminated quoted value")),
            (r#"X-Matrix origin="o\"#, Malformed("dangling backslash")),
            (r#"X-Matrix origin=o key=k"#, Malformed("expected `,` between parameters")),
            (r#"X-Matrix origin="o"x,key=k,sig=s"#, Malformed("expected `,` between parameters")),
            (r#"X-Matrix origin=,key=k,sig=s"#, Malformed("expected a parameter value")),
            (r#"X-Matrix origin,key=k,sig=s"#, Malformed("expected `=` after a parameter name")),
            (r#"X-Matrix origin=o,,key=k,sig=s"#, Malformed("expected a parameter name")),
            (r#"X-Matrix origin=o,key=k,sig=s,"#, Malformed("expected a parameter name")),
            (r#"X-Matrix origin=a,ORIGIN=b,key=k,sig=s"#, Duplicate("origin".into())),
            ("X-Matrix origin=\"a\u{1}\",key=k,sig=s", Malformed("control character in a quoted value")),
            // Regression: an escaped control character was let through.
            ("X-Matrix origin=\"a\\\u{0}\",key=k,sig=s", Malformed("control character in a quoted value")),
            (r#"X-Matrix origin=a/b,key=k,sig=s"#, Malformed("expected `,` between parameters")),
        ];
        for (case, expected) in cases {
            assert_eq!(parse(case).as_ref(), Err(expected), "{case}");
        }
        let long = format!("X-Matrix origin=\"{}\",key=k,sig=s", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(parse(&long), Err(TooLong));
    }

    /// A poor man's fuzzer (there is no fuzz harness yet): every truncation
    /// and many one-byte mutations of a valid header parse without panicking,
    /// and whatever parses formats back to itself.
    #[test]
    fn mutated_headers_never_panic() {
        let seed = r#"X-Matrix origin="o.example",destination=d.example:1,key="ed25519:k",sig="a\"b""#;
        let mut inputs: Vec<String> =
            (0..=seed.len()).filter_map(|end| seed.get(..end)).map(String::from).collect();
        for index in 0..seed.len() {
            for replacement in ['"', '\\', ',', '=', ' ', '\t', '\u{0}', '\u{e9}', 'X'] {
                let mut mutated: Vec<char> = seed.chars().collect();
                if index < mutated.len() {
                    mutated[index] = replacement;
                }
                inputs.push(mutated.into_iter().collect());
            }
        }
        for input in inputs {
            if let Ok(parsed) = parse(&input) {
                assert_eq!(parse(&format(&parsed)), Ok(parsed), "{input}");
            }
        }
    }

    #[test]
    fn formatted_headers_parse_back() {
        let cases = [
            header("origin.example", Some("dest.example"), "ed25519:1", "sig+/"),
            header("a\"b\\c", None, "ed25519:1", "s"),
        ];
        for case in cases {
            assert_eq!(parse(&format(&case)), Ok(case.clone()));
        }
        assert_eq!(
            format(&header("o.example", Some("d.example"), "ed25519:1", "abc")),
            r#"X-Matrix origin="o.example",destination="d.example",key="ed25519:1",sig="abc""#
        );
    }

    #[test]
    fn request_json_signs_and_verifies() {
        let key = SigningKey::from_seed("1", &[3; 32]).unwrap();
        let content = json!({"edus": [], "pdus": []});
        let mut signed = request_json("PUT", "/_matrix/federation/v1/send/1", "o", "d", Some(&content));
        assert_eq!(signed["content"], content);
        sign_json(&mut signed, "o", &key).unwrap();
        verify_json(&signed, "o", "ed25519:1", &key.key_pair.pk).unwrap();
        // The signature covers the destination, the URI and the body.
        let other = request_json("PUT", "/_matrix/federation/v1/send/1", "o", "x", Some(&content));
        let mut moved = other.clone();
        moved["signatures"] = signed["signatures"].clone();
        assert!(verify_json(&moved, "o", "ed25519:1", &key.key_pair.pk).is_err());
        let no_body = request_json("GET", "/x", "o", "d", None);
        assert!(no_body.get("content").is_none());
    }
}
