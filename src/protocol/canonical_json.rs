//! Canonical JSON: the one byte encoding that Matrix hashes and signs.
//!
//! Keys sorted by code point, no insignificant whitespace, the spec's string
//! escapes, integers only. This module encodes and validates `serde_json`
//! values; it knows nothing of events, keys or room state.
//! Spec: <https://spec.matrix.org/latest/appendices/#canonical-json>.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use super::room_version::RoomVersion;

/// Spec: integers must lie in `[-(2**53)+1, (2**53)-1]` so that every JSON
/// library (many store numbers as IEEE doubles) reads them exactly.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The lower end of the canonical integer range.
pub const MIN_SAFE_INTEGER: i64 = -MAX_SAFE_INTEGER;

/// How strictly numbers are checked.
///
/// Spec: room versions 1 to 5 "might not be fully compliant" and servers SHOULD
/// handle such JSON; from v6 servers MUST enforce the format.
/// <https://spec.matrix.org/latest/rooms/v6/#canonical-json>.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Only integers in the safe range (room v6+ and everything we create).
    Strict,
    /// Also out-of-range integers and fractional numbers (room v1 to v5).
    Lenient,
}

impl Strictness {
    /// The strictness a room version demands of its events.
    pub fn for_room_version(version: &RoomVersion) -> Strictness {
        if version.strict_canonical_json { Strictness::Strict } else { Strictness::Lenient }
    }
}

/// Why a value has no canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanonicalJsonError {
    /// The text is not JSON at all.
    Syntax(String),
    /// A number with a fractional part in strict mode.
    Float(String),
    /// An integer outside `[MIN_SAFE_INTEGER, MAX_SAFE_INTEGER]` in strict mode.
    IntegerOutOfRange(String),
    /// NaN or an infinity, which JSON cannot express at all.
    NotFinite,
}

impl std::fmt::Display for CanonicalJsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CanonicalJsonError::Syntax(reason) => write!(f, "invalid JSON: {reason}"),
            CanonicalJsonError::Float(number) => {
                write!(f, "non-integer number {number} in canonical JSON")
            }
            CanonicalJsonError::IntegerOutOfRange(number) => {
                write!(f, "integer {number} outside the canonical JSON range")
            }
            CanonicalJsonError::NotFinite => f.write_str("non-finite number in JSON"),
        }
    }
}

impl std::error::Error for CanonicalJsonError {}

/// Parses JSON text and checks that it has a canonical encoding at `strictness`.
///
/// Exponents and `-0` are fine as long as the value is an integer in range:
/// the spec's own example turns `1e10` into `10000000000` and `-0` into `0`.
pub fn parse(text: &str, strictness: Strictness) -> Result<Value, CanonicalJsonError> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| CanonicalJsonError::Syntax(error.to_string()))?;
    validate(&value, strictness)?;
    Ok(value)
}

/// Checks that every number in `value` is acceptable at `strictness`.
pub fn validate(value: &Value, strictness: Strictness) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(number) => classify(number, strictness).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(|item| validate(item, strictness)),
        Value::Object(map) => map.values().try_for_each(|item| validate(item, strictness)),
    }
}

/// Encodes `value` as canonical JSON text.
pub fn to_string(value: &Value, strictness: Strictness) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value, strictness)?;
    Ok(out)
}

/// Encodes `value` as canonical JSON bytes (UTF-8), ready to hash or sign.
pub fn to_bytes(value: &Value, strictness: Strictness) -> Result<Vec<u8>, CanonicalJsonError> {
    to_string(value, strictness).map(String::into_bytes)
}

/// Encodes a JSON object as canonical JSON text.
pub fn object_to_string(
    object: &Map<String, Value>,
    strictness: Strictness,
) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_object(&mut out, object, strictness)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, strictness: Strictness) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number, strictness)?,
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if 0 < index {
                    out.push(',');
                }
                write_value(out, item, strictness)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, strictness)?,
    }
    Ok(())
}

/// Encodes a JSON object without its top-level keys in `skipped` (as if they
/// were removed first, without copying the object).
pub fn object_to_string_without(
    object: &Map<String, Value>,
    skipped: &[&str],
    strictness: Strictness,
) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_object_without(&mut out, object, skipped, strictness)?;
    Ok(out)
}

fn write_object(
    out: &mut String,
    map: &Map<String, Value>,
    strictness: Strictness,
) -> Result<(), CanonicalJsonError> {
    write_object_without(out, map, &[], strictness)
}

fn write_object_without(
    out: &mut String,
    map: &Map<String, Value>,
    skipped: &[&str],
    strictness: Strictness,
) -> Result<(), CanonicalJsonError> {
    // `str` orders by UTF-8 bytes, which is the same as ordering by code point.
    // We sort here rather than rely on serde_json's map type, whose order
    // depends on the `preserve_order` feature that any dependency may enable.
    let mut entries: Vec<(&String, &Value)> =
        map.iter().filter(|(key, _)| !skipped.contains(&key.as_str())).collect();
    entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
    out.push('{');
    for (index, (key, item)) in entries.into_iter().enumerate() {
        if 0 < index {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, item, strictness)?;
    }
    out.push('}');
    Ok(())
}

/// Writes a string with exactly the escapes of the spec's grammar: `\"`, `\\`,
/// the short forms `\b \t \n \f \r`, `\u00xx` (lowercase hex) for the other
/// ASCII controls, and everything else (DEL and non-ASCII included) raw.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    // Runs of bytes written as they are go in whole. Every byte escaped is
    // ASCII, and no byte of a multi-byte UTF-8 character is, so each run
    // starts and ends on a character boundary.
    let mut run_start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[run_start..index]);
        if escape.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        run_start = index + 1;
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

/// A JSON number as canonical JSON sees it.
enum Canonical {
    /// An exact integer, written in decimal.
    Integer(i128),
    /// A fractional or inexact number, only allowed in lenient mode.
    Float(f64),
}

fn classify(number: &Number, strictness: Strictness) -> Result<Canonical, CanonicalJsonError> {
    let canonical = if let Some(integer) = number.as_i64() {
        Canonical::Integer(i128::from(integer))
    } else if let Some(integer) = number.as_u64() {
        Canonical::Integer(i128::from(integer))
    } else {
        let float = number.as_f64().ok_or(CanonicalJsonError::NotFinite)?;
        if !float.is_finite() {
            return Err(CanonicalJsonError::NotFinite);
        }
        // An integral float in the safe range is exactly that integer (`1e10`,
        // `-0`, `2.0`); the cast is exact because |float| < 2^53.
        if float.fract() == 0.0 && float.abs() <= MAX_SAFE_INTEGER as f64 {
            Canonical::Integer(float as i128)
        } else {
            Canonical::Float(float)
        }
    };
    match (strictness, &canonical) {
        // Integral but beyond 2^53 (`1e16`): out of range rather than fractional.
        (Strictness::Strict, Canonical::Float(float)) if float.fract() == 0.0 => {
            Err(CanonicalJsonError::IntegerOutOfRange(number.to_string()))
        }
        (Strictness::Strict, Canonical::Float(_)) => Err(CanonicalJsonError::Float(number.to_string())),
        (Strictness::Strict, Canonical::Integer(integer))
            if !(i128::from(MIN_SAFE_INTEGER) <= *integer && *integer <= i128::from(MAX_SAFE_INTEGER)) =>
        {
            Err(CanonicalJsonError::IntegerOutOfRange(number.to_string()))
        }
        _ => Ok(canonical),
    }
}

fn write_number(out: &mut String, number: &Number, strictness: Strictness) -> Result<(), CanonicalJsonError> {
    match classify(number, strictness)? {
        Canonical::Integer(integer) => {
            let _ = write!(out, "{integer}");
        }
        Canonical::Float(float) => write_python_float(out, float),
    }
    Ok(())
}

/// Writes a non-integral float the way Python's `repr` does, because that is
/// what Synapse's canonical JSON produced for the old rooms that contain them:
/// shortest round-trip digits, positional for exponents in `-4..16`,
/// otherwise `d.ddde+XX` with at least two exponent digits.
fn write_python_float(out: &mut String, float: f64) {
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.5e-7".
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(mantissa);
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{exponent_sign}{:02}", exponent.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTORS: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/canonical_json.json"));

    #[test]
    fn spec_vectors_byte_for_byte() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 10);
        for case in cases {
            let input = case["input"].as_str().unwrap();
            let expected = case["canonical"].as_str().unwrap();
            for strictness in [Strictness::Strict, Strictness::Lenient] {
                let value = parse(input, strictness).unwrap();
                assert_eq!(to_string(&value, strictness).unwrap(), expected, "{input}");
                assert_eq!(to_bytes(&value, strictness).unwrap(), expected.as_bytes());
            }
        }
    }

    #[test]
    fn strings_use_only_the_spec_escapes() {
        let check = |input: &str, expected: &str| {
            let value = Value::String(input.to_owned());
            assert_eq!(to_string(&value, Strictness::Strict).unwrap(), expected, "{input:?}");
        };
        check("a\"b\\c", r#""a\"b\\c""#);
        check("\u{08}\u{09}\u{0a}\u{0c}\u{0d}", r#""\b\t\n\f\r""#);
        check("\u{00}\u{01}\u{0b}\u{0e}\u{1f}", r#""\u0000\u0001\u000b\u000e\u001f""#);
        check("\u{7f}/<>&'", "\"\u{7f}/<>&'\"");
        check("日本語 \u{2028} 😀", "\"日本語 \u{2028} 😀\"");
        check("é\"日\n😀\u{01}x", r#""é\"日\n😀\u0001x""#);
        check("", r#""""#);
    }

    #[test]
    fn keys_sort_by_code_point_at_every_depth() {
        let value = json!({"b": [{"z": 1, "a": 2}], "a": {"é": 1, "z": 2, "A": 3}, "": null});
        assert_eq!(
            to_string(&value, Strictness::Strict).unwrap(),
            r#"{"":null,"a":{"A":3,"z":2,"é":1},"b":[{"a":2,"z":1}]}"#
        );
        // U+FF61 sorts before U+1F600 by code point, though not by UTF-16 unit.
        let value = json!({"\u{1F600}": 1, "\u{FF61}": 2});
        assert_eq!(to_string(&value, Strictness::Strict).unwrap(), "{\"\u{FF61}\":2,\"\u{1F600}\":1}");
    }

    #[test]
    fn numbers_by_strictness() {
        // (JSON text, strict result, lenient result)
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("0", Some("0"), Some("0")),
            ("-0", Some("0"), Some("0")),
            ("2.0", Some("2"), Some("2")),
            ("1e10", Some("10000000000"), Some("10000000000")),
            ("9007199254740991", Some("9007199254740991"), Some("9007199254740991")),
            ("-9007199254740991", Some("-9007199254740991"), Some("-9007199254740991")),
            ("9007199254740992", None, Some("9007199254740992")),
            ("-9007199254740992", None, Some("-9007199254740992")),
            ("18446744073709551615", None, Some("18446744073709551615")),
            ("1.5", None, Some("1.5")),
            ("-0.25", None, Some("-0.25")),
            ("0.0001", None, Some("0.0001")),
            ("0.00001", None, Some("1e-05")),
            ("1e100", None, Some("1e+100")),
            ("1.5e300", None, Some("1.5e+300")),
            ("123456.789", None, Some("123456.789")),
            // These need serde_json's `float_roundtrip`: the default parser is
            // off by one ulp here, which would change old events' hashes.
            ("-943305.0469559873", None, Some("-943305.0469559873")),
            ("3.4525830151341587e-17", None, Some("3.4525830151341587e-17")),
            ("5e-324", None, Some("5e-324")),
            ("1.7976931348623157e308", None, Some("1.7976931348623157e+308")),
            ("1e16", None, Some("1e+16")),
        ];
        for (text, strict, lenient) in cases {
            let value: Value = serde_json::from_str(text).unwrap();
            let strict_out = to_string(&value, Strictness::Strict).ok();
            let lenient_out = to_string(&value, Strictness::Lenient).ok();
            assert_eq!(strict_out.as_deref(), *strict, "strict {text}");
            assert_eq!(lenient_out.as_deref(), *lenient, "lenient {text}");
            assert_eq!(parse(text, Strictness::Strict).is_ok(), strict.is_some(), "{text}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let float = parse(r#"{"a":[1.5]}"#, Strictness::Strict).unwrap_err();
        assert_eq!(float, CanonicalJsonError::Float("1.5".into()));
        let big = parse(r#"{"a":9007199254740992}"#, Strictness::Strict).unwrap_err();
        assert_eq!(big, CanonicalJsonError::IntegerOutOfRange("9007199254740992".into()));
        assert!(matches!(parse("{", Strictness::Lenient), Err(CanonicalJsonError::Syntax(_))));
        assert!(!big.to_string().ends_with('.'));
    }

    #[test]
    fn strictness_follows_the_room_version() {
        let v = |id| RoomVersion::from_id(id).unwrap();
        assert_eq!(Strictness::for_room_version(&v("5")), Strictness::Lenient);
        assert_eq!(Strictness::for_room_version(&v("6")), Strictness::Strict);
        assert_eq!(Strictness::for_room_version(&v("12")), Strictness::Strict);
    }
}
