//! Link previews: the Open Graph metadata of an HTML page, as
//! `GET /_matrix/client/v1/media/preview_url` answers it (`og:title`,
//! `og:description`, `og:image`, ...; the page's `<title>` when it names no
//! `og:title`). Spec:
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1mediapreview_url>,
//! Open Graph: <https://ogp.me/>.
//!
//! Pure and bounded: one forward scan over at most the bytes the caller
//! fetched, no regular expressions, no tree, no recursion. Not an HTML
//! parser: it reads start tags' attributes, skips comments, and takes the
//! text of `<title>`; anything it cannot read is left out.

use serde_json::{Map, Value};

/// Open Graph values are cut to this many characters (Synapse cuts
/// descriptions at 500).
pub const MAX_VALUE_CHARS: usize = 500;

/// At most this many `og:` keys are answered.
const MAX_KEYS: usize = 32;

/// Whether a `Content-Type` is HTML (Synapse's rule: `text/html` or
/// `application/xhtml...`).
pub fn is_html(content_type: &str) -> bool {
    let lower = content_type.trim_start().to_ascii_lowercase();
    lower.starts_with("text/html") || lower.starts_with("application/xhtml")
}

/// Whether a `Content-Type` is an image.
pub fn is_image(content_type: &str) -> bool {
    content_type.trim_start().to_ascii_lowercase().starts_with("image/")
}

/// The width and height an image's header states: PNG, GIF, JPEG and WebP
/// (lossy, lossless and extended); `None` for anything else or a header cut
/// short. No pixel is decoded; a JPEG's markers are walked forward only.
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| bytes.get(at..at + 2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let le16 = |at: usize| bytes.get(at..at + 2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    let le24 = |at: usize| bytes.get(at..at + 3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]));
    let be32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.get(12..16) == Some(b"IHDR") {
        return Some((be32(16)?, be32(20)?));
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Some((le16(6)?, le16(8)?));
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return match bytes.get(12..16)? {
            b"VP8 " if bytes.get(23..26) == Some(&[0x9d, 0x01, 0x2a]) => {
                Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff))
            }
            b"VP8L" if bytes.get(20) == Some(&0x2f) => {
                let bits = u32::from_le_bytes(bytes.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            _ => None,
        };
    }
    if bytes.starts_with(&[0xff, 0xd8]) {
        // Segments: 0xFF, a marker, a big-endian length counting itself.
        let mut at = 2;
        loop {
            if *bytes.get(at)? != 0xff {
                return None;
            }
            let marker = *bytes.get(at + 1)?;
            match marker {
                // Fill bytes before a marker.
                0xff => at += 1,
                // Start of frame (all but DHT, JPG and DAC).
                0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                    return Some((be16(at + 7)?, be16(at + 5)?));
                }
                // Markers without a length.
                0x01 | 0xd0..=0xd7 => at += 2,
                _ => at += 2 + usize::try_from(be16(at + 2)?).ok()?,
            }
        }
    }
    None
}

/// The Open Graph keys of `html` (`og:*` from `<meta property=...>` or
/// `<meta name=...>`, first occurrence wins), with `og:title` falling back
/// to `<title>` and `og:description` to `<meta name="description">`.
pub fn extract(html: &str) -> Map<String, Value> {
    let mut og = Map::new();
    let mut title: Option<String> = None;
    let mut description: Option<String> = None;
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix("!--") {
            // A comment runs to `-->` (or the end).
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        let (attributes, after_tag) = split_tag(&rest[name_len..]);
        rest = after_tag;
        match name.as_str() {
            "meta" => {
                let attributes = parse_attributes(attributes);
                let get = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
                let Some(content) = get("content") else { continue };
                let key = get("property").or(get("name")).unwrap_or_default().to_ascii_lowercase();
                if key.starts_with("og:") && !og.contains_key(&key) && og.len() < MAX_KEYS {
                    og.insert(key, Value::String(clean(content)));
                } else if key == "description" && description.is_none() {
                    description = Some(clean(content));
                }
            }
            "title" if title.is_none() => {
                let end = find_ascii_case_insensitive(rest, "</title").unwrap_or(rest.len());
                title = Some(clean(&rest[..end]));
                rest = &rest[end..];
            }
            // Text inside these is not markup: skip to their end tag.
            "script" | "style" => {
                let end_tag = format!("</{name}");
                rest = find_ascii_case_insensitive(rest, &end_tag).map_or("", |end| &rest[end..]);
            }
            _ => {}
        }
    }
    if !og.contains_key("og:title") {
        if let Some(title) = title.filter(|title| !title.is_empty()) {
            og.insert("og:title".into(), Value::String(title));
        }
    }
    if !og.contains_key("og:description") {
        if let Some(description) = description.filter(|description| !description.is_empty()) {
            og.insert("og:description".into(), Value::String(description));
        }
    }
    og
}

/// Splits what follows a tag name into its attribute text and what comes
/// after the tag's `>` (quoted `>` do not end it).
fn split_tag(text: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    for (at, c) in text.char_indices() {
        match (quote, c) {
            (Some(open), _) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return (&text[..at], &text[at + 1..]),
            _ => {}
        }
    }
    (text, "")
}

/// The `name=value` pairs of a start tag (names lower-cased; values
/// unquoted, entities left for [`clean`]).
fn parse_attributes(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if rest.is_empty() {
            return pairs;
        }
        let name_len =
            rest.find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start();
        let Some(after_equals) = rest.strip_prefix('=') else {
            pairs.push((name, String::new()));
            continue;
        };
        rest = after_equals.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &rest[1..];
                let end = inner.find(quote).unwrap_or(inner.len());
                rest = inner.get(end + 1..).unwrap_or("");
                &inner[..end]
            }
            _ => {
                let end = rest.find(|c: char| c.is_ascii_whitespace()).unwrap_or(rest.len());
                let value = &rest[..end];
                rest = &rest[end..];
                value
            }
        };
        pairs.push((name, value.to_owned()));
    }
}

/// Where `needle` (ASCII) starts in `haystack`, ignoring ASCII case.
fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack.as_bytes().windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle))
}

/// Decodes character references, folds whitespace runs to one space, trims,
/// and cuts to [`MAX_VALUE_CHARS`].
fn clean(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut pending_space = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (decoded, used) = match c {
            '&' => decode_reference(rest).unwrap_or(('&', 1)),
            _ => (c, c.len_utf8()),
        };
        rest = &rest[used..];
        if decoded.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        if MAX_VALUE_CHARS <= chars {
            break;
        }
        out.push(decoded);
        chars += 1;
    }
    out
}

/// The character an HTML character reference at the start of `text` stands
/// for, and its length; `None` for references we do not know.
fn decode_reference(text: &str) -> Option<(char, usize)> {
    // The longest reference we decode is `&#x10FFFF;` (10 bytes).
    let end = text.char_indices().take(12).find(|(_, c)| *c == ';').map(|(at, _)| at)?;
    let body = &text[1..end];
    let decoded = match body {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let number = body.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code).filter(|c| *c != '\0')?
        }
    };
    Some((decoded, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(html: &str, expected: Value) {
        assert_eq!(Value::Object(extract(html)), expected, "{html}");
    }

    #[test]
    fn reads_open_graph_meta_tags() {
        check(
            r#"<html><head>
            <meta property="og:title" content="The &amp; Title">
            <META PROPERTY='og:description' CONTENT='Line one
               line two'/>
            <meta name="og:image" content=/img.png>
            <meta property="og:image:width" content="640">
            <title>Ignored</title></head><body>x</body></html>"#,
            json!({
                "og:title": "The & Title",
                "og:description": "Line one line two",
                "og:image": "/img.png",
                "og:image:width": "640",
            }),
        );
    }

    #[test]
    fn falls_back_to_title_and_description() {
        check(
            "<title> A  page\n</title><meta name=description content=\"About &#x41;&#66;\">",
            json!({"og:title": "A page", "og:description": "About AB"}),
        );
        check("<p>no metadata</p>", json!({}));
    }

    #[test]
    fn skips_comments_scripts_and_quoted_brackets() {
        check(
            r#"<!-- <meta property="og:title" content="commented"> -->
            <script>var s = "<meta property='og:title' content='scripted'>";</script>
            <meta content="a > b" property="og:title">"#,
            json!({"og:title": "a > b"}),
        );
    }

    #[test]
    fn image_dimensions_come_from_headers() {
        let png =
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x01\x40\x00\x00\x00\xf0\x08\x06\x00\x00\x00";
        assert_eq!(image_dimensions(png), Some((320, 240)));
        assert_eq!(image_dimensions(b"GIF89a\x40\x01\xf0\x00\x00"), Some((320, 240)));
        // JPEG: SOI, an APP0 segment, then SOF0 (precision, height, width).
        let jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xff\xc0\x00\x11\x08\x00\xf0\x01\x40\x03";
        assert_eq!(image_dimensions(jpeg), Some((320, 240)));
        let vp8 = b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00\x00\x9d\x01\x2a\x40\x01\xf0\x00";
        assert_eq!(image_dimensions(vp8), Some((320, 240)));
        // VP8L: 14 bits of width-1 (319), then 14 of height-1 (239).
        let bits: u32 = 319 | (239 << 14);
        let mut vp8l = b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f".to_vec();
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(image_dimensions(&vp8l), Some((320, 240)));
        let vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X\x00\x00\x00\x00\x00\x00\x00\x00\x3f\x01\x00\xef\x00\x00";
        assert_eq!(image_dimensions(vp8x), Some((320, 240)));
        // Cut short, unknown, or a JPEG whose markers run off the end.
        for bytes in [&png[..20], b"BM\x00\x00", b"\xff\xd8\xff\xe0\xff\xff", b"\xff\xd8\x00", b""] {
            assert_eq!(image_dimensions(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn hostile_input_is_bounded_and_never_panics() {
        let long = "x".repeat(10_000);
        let html = format!("<meta property=og:title content=\"{long}\">");
        let og = extract(&html);
        assert_eq!(og["og:title"].as_str().unwrap().chars().count(), MAX_VALUE_CHARS);
        for html in [
            "<",
            "<meta",
            "<meta content",
            "<meta content=",
            "<meta content='",
            "<title",
            "<!--",
            "<script>",
            "&#xFFFFFFFF;",
            "<title>&#0;&#x110000;&bogus;&",
            "<meta property=og:title content=é>",
        ] {
            let _ = extract(html);
        }
        let many: String = (0..100).map(|n| format!("<meta property=og:k{n} content=v>")).collect();
        assert_eq!(extract(&many).len(), MAX_KEYS);
        assert!(is_html("text/html; charset=utf-8") && is_html("application/xhtml+xml"));
        assert!(is_image("image/png") && !is_html("application/octet-stream"));
    }
}
