//! The content repository's wire formats, as pure functions: `mxc://` URI
//! parts, the `Content-Disposition` we send and the file names we read back,
//! the `multipart/mixed` answer of the federation media endpoints (built and
//! parsed), and sniffing whether an image is animated (from its first bytes).
//!
//! Nothing here stores, fetches or decodes images.
//! Spec: <https://spec.matrix.org/latest/client-server-api/#content-repository>.

use std::fmt;
use std::ops::Range;

use super::identifiers::ServerName;

/// Media IDs longer than this are refused: the spec sets no bound, and 255
/// bytes is the bound of every other identifier (ours are 24 characters).
pub const MAX_MEDIA_ID_BYTES: usize = 255;

/// A validated media ID, the path part of an `mxc://` URI.
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#matrix-content-mxc-uris>:
/// only `A-Za-z0-9`, `_` and `-`, which is what makes it safe in paths and
/// keys (no traversal, no escaping).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MediaId(String);

impl MediaId {
    /// Validates `text` as a media ID.
    pub fn parse(text: &str) -> Result<MediaId, String> {
        if text.is_empty() || MAX_MEDIA_ID_BYTES < text.len() {
            return Err(format!("a media ID has 1 to {MAX_MEDIA_ID_BYTES} characters"));
        }
        let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte == b'-';
        if !text.as_bytes().iter().all(allowed) {
            return Err("a media ID may only hold A-Z, a-z, 0-9, _ and -".into());
        }
        Ok(MediaId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `mxc://{server}/{media_id}`.
pub fn mxc_uri(server: &ServerName, media_id: &MediaId) -> String {
    format!("mxc://{}/{}", server.as_str(), media_id)
}

/// A thumbnail request's parameters.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#thumbnails>.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailRequest {
    /// The smallest width and height the client wants.
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    /// `None` when the client did not say (then: no animation, SHOULD).
    pub animated: Option<bool>,
}

/// How a thumbnail fits the requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailRequest {
    /// Reads `width`, `height`, `method` (default `scale`) and `animated`
    /// through `query`; the error names the bad parameter and whether it was
    /// missing (`Err((true, _))`) or invalid.
    pub fn parse<'a>(query: impl Fn(&str) -> Option<&'a str>) -> Result<ThumbnailRequest, (bool, String)> {
        let size = |name: &str| match query(name) {
            None => Err((true, format!("`{name}` is required"))),
            Some(value) => value
                .parse::<u32>()
                .ok()
                .filter(|size| 0 < *size)
                .ok_or_else(|| (false, format!("`{name}` must be a positive integer"))),
        };
        let method = match query("method") {
            None | Some("scale") => ThumbnailMethod::Scale,
            Some("crop") => ThumbnailMethod::Crop,
            Some(_) => return Err((false, "`method` must be crop or scale".into())),
        };
        let animated = match query("animated") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err((false, "`animated` must be true or false".into())),
        };
        Ok(ThumbnailRequest { width: size("width")?, height: size("height")?, method, animated })
    }

    /// The query string that asks another server for this thumbnail.
    pub fn query_string(&self) -> String {
        let mut query = format!("width={}&height={}&method={}", self.width, self.height, self.method_name());
        if let Some(animated) = self.animated {
            query.push_str(&format!("&animated={animated}"));
        }
        query
    }

    /// A key naming this thumbnail among others of the same media.
    pub fn variant(&self) -> String {
        let animated = match self.animated {
            None => "",
            Some(true) => "-animated",
            Some(false) => "-static",
        };
        format!("{}x{}-{}{animated}", self.width, self.height, self.method_name())
    }

    fn method_name(&self) -> &'static str {
        match self.method {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

/// Image types clients can scale themselves: what a server that makes no
/// thumbnails may answer a thumbnail request with (the spec's list of
/// thumbnail types, APNG being PNG).
const SCALABLE_IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Whether content may be served as its own thumbnail: a scalable image type,
/// and not animated unless the client asked for animation (spec: with
/// `animated=false` the server MUST NOT, without it SHOULD NOT, return an
/// animated thumbnail; [`Animation::Unknown`] counts as animated).
pub fn serves_as_thumbnail(content_type: &str, animation: Animation, request: &ThumbnailRequest) -> bool {
    SCALABLE_IMAGE_TYPES.contains(&essence(content_type).as_str())
        && (animation == Animation::Static || request.animated == Some(true))
}

/// Content types a browser may render inline without risk of script running
/// (spec: "Serving inline content"); everything else is served as an attachment.
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Text types that get `charset=UTF-8` when they name no charset (as Synapse
/// does), so browsers do not guess.
const TEXT_CONTENT_TYPES: &[&str] =
    &["text/css", "text/csv", "text/plain", "application/json", "application/ld+json"];

/// The type and subtype of a content type, lower-cased, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Longest content type we keep; real ones are a few dozen bytes.
const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// The content type as we store and echo it, if it is one: printable ASCII
/// (it goes back out in a header), `type/subtype`, of sane length.
pub fn clean_content_type(text: &str) -> Option<String> {
    let text = text.trim();
    let printable = text.bytes().all(|byte| byte == b' ' || byte.is_ascii_graphic());
    let (kind, subtype) = essence(text).split_once('/').map(|(a, b)| (a.len(), b.len()))?;
    (printable && kind > 0 && subtype > 0 && text.len() <= MAX_CONTENT_TYPE_BYTES).then(|| text.to_owned())
}

/// The `Content-Type` header for stored content.
pub fn content_type_header(content_type: &str) -> String {
    let names_charset = content_type.to_ascii_lowercase().contains("charset=");
    if TEXT_CONTENT_TYPES.contains(&essence(content_type).as_str()) && !names_charset {
        format!("{content_type}; charset=UTF-8")
    } else {
        content_type.to_owned()
    }
}

/// RFC 2616 separators, which a `token` file name may not hold.
const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={}";

/// `Content-Disposition`: `inline` for the safe types, `attachment` for the
/// rest, with the file name as an RFC 2616 token when it is one and as RFC
/// 6266 `filename*=utf-8''…` (percent-encoded) otherwise, as Synapse sends it.
pub fn content_disposition(content_type: &str, file_name: Option<&str>) -> String {
    let kind =
        if INLINE_CONTENT_TYPES.contains(&essence(content_type).as_str()) { "inline" } else { "attachment" };
    match file_name.filter(|name| !name.is_empty()) {
        None => kind.to_owned(),
        Some(name) if name.bytes().all(|byte| byte.is_ascii_graphic() && !SEPARATORS.contains(&byte)) => {
            format!("{kind}; filename={name}")
        }
        Some(name) => format!("{kind}; filename*=utf-8''{}", percent_encode_attr(name)),
    }
}

/// RFC 5987 `value-chars`: `attr-char`s as they are, every other byte as `%XX`.
fn percent_encode_attr(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The file name a `Content-Disposition` header gives: `filename*` in UTF-8
/// first, then a plain (token or quoted) ASCII `filename`.
pub fn file_name_from_disposition(header: &str) -> Option<String> {
    let parameters = split_parameters(header);
    let extended = parameters.iter().find(|(name, _)| name == "filename*").and_then(|(_, value)| {
        let (charset, rest) = value.split_once('\'')?;
        let (_language, encoded) = rest.split_once('\'')?;
        charset.eq_ignore_ascii_case("utf-8").then(|| percent_decode_strict(encoded))?
    });
    let plain = || {
        parameters
            .iter()
            .find(|(name, _)| name == "filename")
            .map(|(_, value)| value.clone())
            .filter(|value| value.is_ascii())
    };
    extended.or_else(plain).filter(|name| !name.is_empty() && !name.chars().any(char::is_control))
}

/// `; name=value` parameters after the first item, names lower-cased, quoted
/// values unquoted; `;` inside quotes does not split.
fn split_parameters(header: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for character in header.chars() {
        match character {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(character);
    }
    items.push(current);
    items
        .into_iter()
        .skip(1)
        .filter_map(|item| {
            let (name, value) = item.split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')) {
                Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => value.to_owned(),
            };
            Some((name.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

/// `%XX`-decodes into UTF-8; `None` on a bad escape or bad UTF-8.
fn percent_decode_strict(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The bytes before and after the media in a federation `multipart/mixed`
/// answer: the JSON metadata part (`{}`, the spec's only metadata today),
/// then the media part's head; after the media, the closing delimiter.
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1mediadownloadmediaid>.
pub fn multipart_frame(boundary: &str, content_type: &str, disposition: &str) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    );
    (head.into_bytes(), format!("\r\n--{boundary}--\r\n").into_bytes())
}

/// The `Content-Type` of a multipart answer with `boundary`.
pub fn multipart_content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

/// The media part of a federation `multipart/mixed` answer.
#[derive(Debug, PartialEq, Eq)]
pub struct MediaPart {
    /// Where the media's bytes are in the body (empty with a `Location`).
    pub content: Range<usize>,
    pub content_type: Option<String>,
    pub disposition: Option<String>,
    /// Where to fetch the media instead, when the part redirects.
    pub location: Option<String>,
}

/// Parses a federation media answer: `content_type` is the response's header
/// (it carries the boundary), `body` the whole body. The media part ends at
/// the last delimiter, so bytes in the media that look like a delimiter do
/// not cut it short.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<MediaPart, String> {
    if essence(content_type) != "multipart/mixed" {
        return Err(format!("expected multipart/mixed, got {content_type:?}"));
    }
    let boundary = split_parameters(content_type)
        .into_iter()
        .find(|(name, _)| name == "boundary")
        .map(|(_, value)| value)
        .filter(|boundary| !boundary.is_empty() && boundary.len() <= 70)
        .ok_or("the multipart answer has no boundary")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let inner_delimiter = [b"\r\n".as_slice(), &delimiter].concat();
    // The first delimiter opens the body or follows a preamble line.
    let first = if body.starts_with(&delimiter) {
        0
    } else {
        find(body, &inner_delimiter, 0).ok_or("no multipart delimiter")? + 2
    };
    let json_part = line_end(body, first + delimiter.len()).ok_or("truncated multipart answer")?;
    let second = find(body, &inner_delimiter, json_part).ok_or("the multipart answer has one part")?;
    let media_part = line_end(body, second + inner_delimiter.len()).ok_or("truncated multipart answer")?;
    let (headers, content_start) = part_headers(body, media_part)?;
    let closing =
        rfind(body, &inner_delimiter).filter(|at| content_start <= *at).ok_or("unterminated media part")?;
    let header = |name: &str| {
        headers.iter().find(|(seen, _)| seen.eq_ignore_ascii_case(name)).map(|(_, value)| value.clone())
    };
    let location = header("location");
    Ok(MediaPart {
        content: if location.is_some() { content_start..content_start } else { content_start..closing },
        content_type: header("content-type"),
        disposition: header("content-disposition"),
        location,
    })
}

/// The position after the CRLF ending the line that `from` is on (a
/// delimiter line may carry trailing whitespace).
fn line_end(body: &[u8], from: usize) -> Option<usize> {
    find(body, b"\r\n", from).map(|at| at + 2)
}

/// A part's headers starting at `from`, and where its content starts.
fn part_headers(body: &[u8], from: usize) -> Result<(Vec<(String, String)>, usize), String> {
    let mut headers = Vec::new();
    let mut at = from;
    loop {
        let end = find(body, b"\r\n", at).ok_or("truncated part headers")?;
        if end == at {
            return Ok((headers, end + 2));
        }
        let line = std::str::from_utf8(&body[at..end]).map_err(|_| "a part header is not UTF-8")?;
        let (name, value) = line.split_once(':').ok_or("a part header without a colon")?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
        at = end + 2;
        if 64 < headers.len() {
            return Err("too many part headers".into());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = haystack.get(from..)?;
    rest.windows(needle.len()).position(|window| window == needle).map(|at| at + from)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

/// What the first bytes of an image tell about its animation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Animation {
    Static,
    Animated,
    /// The bytes seen do not settle it (or the format is not known).
    Unknown,
}

/// Whether an image is animated, from its content type and first bytes:
/// PNG with an `acTL` chunk before `IDAT` (APNG), WebP with the `VP8X`
/// animation flag, GIF with a looping extension or a second frame. JPEG is
/// never animated.
pub fn animation(content_type: &str, prefix: &[u8]) -> Animation {
    match essence(content_type).as_str() {
        "image/jpeg" => Animation::Static,
        "image/png" | "image/apng" => png_animation(prefix),
        "image/webp" => webp_animation(prefix),
        "image/gif" => gif_animation(prefix),
        _ => Animation::Unknown,
    }
}

fn png_animation(bytes: &[u8]) -> Animation {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Animation::Unknown;
    }
    let mut at = 8;
    while let Some(header) = bytes.get(at..at + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match &header[4..8] {
            b"acTL" => return Animation::Animated,
            b"IDAT" => return Animation::Static,
            _ => {}
        }
        // Length, type, data, CRC.
        at = at.saturating_add(12).saturating_add(length);
    }
    Animation::Unknown
}

fn webp_animation(bytes: &[u8]) -> Animation {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WEBP") {
        return Animation::Unknown;
    }
    match (bytes.get(12..16), bytes.get(20)) {
        (Some(b"VP8 " | b"VP8L"), _) => Animation::Static,
        (Some(b"VP8X"), Some(flags)) if flags & 0x02 != 0 => Animation::Animated,
        (Some(b"VP8X"), Some(_)) => Animation::Static,
        _ => Animation::Unknown,
    }
}

fn gif_animation(bytes: &[u8]) -> Animation {
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return Animation::Unknown;
    }
    let Some(&packed) = bytes.get(10) else { return Animation::Unknown };
    let mut at = 13 + color_table_bytes(packed);
    let mut frames = 0;
    loop {
        match bytes.get(at) {
            // Trailer.
            Some(0x3b) => return Animation::Static,
            // Extension: a label, then sub-blocks.
            Some(0x21) => {
                let Some(&label) = bytes.get(at + 1) else { return Animation::Unknown };
                let looping =
                    bytes.get(at + 3..at + 14).is_some_and(|id| id == b"NETSCAPE2.0" || id == b"ANIMEXTS1.0");
                if label == 0xff && looping {
                    return Animation::Animated;
                }
                match skip_sub_blocks(bytes, at + 2) {
                    Some(next) => at = next,
                    None => return Animation::Unknown,
                }
            }
            // Image: descriptor, local color table, LZW code size, sub-blocks.
            Some(0x2c) => {
                frames += 1;
                if 1 < frames {
                    return Animation::Animated;
                }
                let Some(&packed) = bytes.get(at + 9) else { return Animation::Unknown };
                match skip_sub_blocks(bytes, at + 10 + color_table_bytes(packed) + 1) {
                    Some(next) => at = next,
                    None => return Animation::Unknown,
                }
            }
            _ => return Animation::Unknown,
        }
    }
}

/// The size of the color table a GIF packed-fields byte announces.
fn color_table_bytes(packed: u8) -> usize {
    if packed & 0x80 == 0 { 0 } else { 3 << ((packed & 0x07) + 1) }
}

/// The position after a chain of GIF sub-blocks starting at `at`.
fn skip_sub_blocks(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let size = *bytes.get(at)? as usize;
        at += 1;
        if size == 0 {
            return Some(at);
        }
        at += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_url_safe_base64_characters_only() {
        for good in ["AQwafuaFswefuhsfAFAgsw", "a", "a_b-C9"] {
            assert!(MediaId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "../etc/passwd", "a/b", "a.b", "a%2Fb", "ä", "a b", &"x".repeat(256)] {
            assert!(MediaId::parse(bad).is_err(), "{bad}");
        }
        let server = ServerName::parse("example.org:8448").unwrap();
        assert_eq!(mxc_uri(&server, &MediaId::parse("abc").unwrap()), "mxc://example.org:8448/abc");
    }

    #[test]
    fn dispositions_are_inline_only_for_safe_types() {
        let check = |content_type, name, expected: &str| {
            assert_eq!(content_disposition(content_type, name), expected, "{content_type} {name:?}");
        };
        check("image/png", Some("cat.png"), "inline; filename=cat.png");
        check("IMAGE/PNG; foo=bar", None, "inline");
        check("text/html", Some("page.html"), "attachment; filename=page.html");
        check("image/svg+xml", Some("a.svg"), "attachment; filename=a.svg");
        check("application/pdf", Some(""), "attachment");
        check("text/plain", Some("my notes.txt"), "inline; filename*=utf-8''my%20notes.txt");
        check("text/plain", Some("naïve;\"x\".txt"), "inline; filename*=utf-8''na%C3%AFve%3B%22x%22.txt");
    }

    #[test]
    fn file_names_come_back_out_of_dispositions() {
        let check = |header, expected: Option<&str>| {
            assert_eq!(file_name_from_disposition(header).as_deref(), expected, "{header}");
        };
        check("inline; filename=cat.png", Some("cat.png"));
        check("attachment; filename=\"a; \\\"b\\\".txt\"", Some("a; \"b\".txt"));
        check("inline; filename*=utf-8''na%C3%AFve%3B.txt", Some("naïve;.txt"));
        check("inline; filename*=UTF-8'en'x%20y; filename=fallback", Some("x y"));
        check("inline; filename*=utf-8''%FF; filename=fallback", Some("fallback"));
        check("inline; filename*=iso-8859-1''x", None);
        check("inline", None);
        check("inline; filename=\"a\r\nb\"", None);
        for name in ["cat.png", "my notes.txt", "naïve;\"x\".txt", "a\\b"] {
            let header = content_disposition("image/png", Some(name));
            assert_eq!(file_name_from_disposition(&header).as_deref(), Some(name), "{header}");
        }
    }

    #[test]
    fn content_types_are_cleaned_and_text_gets_a_charset() {
        assert_eq!(clean_content_type(" image/png ").as_deref(), Some("image/png"));
        assert_eq!(
            clean_content_type("text/plain; charset=utf-8").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        for bad in ["", "png", "image/", "/png", "image/png\r\nX-Evil: 1", "imäge/png"] {
            assert_eq!(clean_content_type(bad), None, "{bad:?}");
        }
        assert_eq!(content_type_header("text/plain"), "text/plain; charset=UTF-8");
        assert_eq!(content_type_header("text/plain; charset=latin1"), "text/plain; charset=latin1");
        assert_eq!(content_type_header("image/png"), "image/png");
    }

    fn framed(boundary: &str, content: &[u8]) -> Vec<u8> {
        let (head, tail) = multipart_frame(boundary, "image/png", "inline; filename=a.png");
        [head.as_slice(), content, &tail].concat()
    }

    #[test]
    fn multipart_answers_round_trip() {
        // Media holding CRLF, a fake delimiter and a fake closing delimiter.
        let content = b"\x89PNG\r\n--b0undary\r\n\r\n--b0undary--\r\nend";
        let body = framed("b0undary", content);
        let part = parse_multipart(&multipart_content_type("b0undary"), &body).unwrap();
        assert_eq!(&body[part.content.clone()], content);
        assert_eq!(part.content_type.as_deref(), Some("image/png"));
        assert_eq!(part.disposition.as_deref(), Some("inline; filename=a.png"));
        assert_eq!(part.location, None);
        let empty = framed("b", b"");
        let part = parse_multipart("multipart/mixed; boundary=\"b\"", &empty).unwrap();
        assert!(part.content.is_empty());
    }

    #[test]
    fn multipart_answers_as_synapse_sends_them() {
        // A leading CRLF (an empty preamble), as Synapse writes it.
        let body = b"\r\n--6067d4698f8d40a0a794ea7d7379d53a\r\nContent-Type: application/json\r\n\r\n{}\
            \r\n--6067d4698f8d40a0a794ea7d7379d53a\r\nContent-Type: text/plain\r\n\
            Content-Disposition: inline; filename=test_upload\r\n\r\nfile_to_stream\
            \r\n--6067d4698f8d40a0a794ea7d7379d53a--\r\n\r\n";
        let part =
            parse_multipart("multipart/mixed; boundary=6067d4698f8d40a0a794ea7d7379d53a", body).unwrap();
        assert_eq!(&body[part.content], b"file_to_stream");
        assert_eq!(part.disposition.as_deref(), Some("inline; filename=test_upload"));
        let redirect = b"--x\r\nContent-Type: application/json\r\n\r\n{}\r\n--x\r\n\
            Location: https://cdn.example.org/abc\r\n\r\n\r\n--x--\r\n";
        let part = parse_multipart("multipart/mixed; boundary=x", redirect).unwrap();
        assert_eq!(part.location.as_deref(), Some("https://cdn.example.org/abc"));
        assert!(part.content.is_empty());
    }

    #[test]
    fn broken_multipart_answers_are_errors() {
        let body = framed("b", b"data");
        assert!(parse_multipart("image/png", &body).is_err());
        assert!(parse_multipart("multipart/mixed", &body).is_err());
        assert!(parse_multipart("multipart/mixed; boundary=other", &body).is_err());
        let truncated = &body[..body.len() - 10];
        assert!(parse_multipart("multipart/mixed; boundary=b", truncated).is_err());
        let one_part = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n";
        assert!(parse_multipart("multipart/mixed; boundary=b", one_part).is_err());
    }

    #[test]
    fn thumbnail_requests_are_parsed_and_named() {
        let parse = |query: &[(&'static str, &'static str)]| {
            let query = query.to_vec();
            ThumbnailRequest::parse(move |name| {
                query.iter().find(|(key, _)| *key == name).map(|(_, value)| *value)
            })
        };
        let request = parse(&[("width", "96"), ("height", "64"), ("method", "crop")]).unwrap();
        assert_eq!(
            request,
            ThumbnailRequest { width: 96, height: 64, method: ThumbnailMethod::Crop, animated: None }
        );
        assert_eq!(request.variant(), "96x64-crop");
        assert_eq!(request.query_string(), "width=96&height=64&method=crop");
        let animated = parse(&[("width", "1"), ("height", "2"), ("animated", "true")]).unwrap();
        assert_eq!(animated.method, ThumbnailMethod::Scale);
        assert_eq!(animated.variant(), "1x2-scale-animated");
        assert_eq!(animated.query_string(), "width=1&height=2&method=scale&animated=true");
        assert!(matches!(parse(&[("height", "2")]), Err((true, _))));
        for bad in [
            &[("width", "0"), ("height", "2")][..],
            &[("width", "-1"), ("height", "2")],
            &[("width", "x"), ("height", "2")],
            &[("width", "1"), ("height", "2"), ("method", "stretch")],
            &[("width", "1"), ("height", "2"), ("animated", "yes")],
        ] {
            assert!(matches!(parse(bad), Err((false, _))), "{bad:?}");
        }
    }

    #[test]
    fn only_static_scalable_images_serve_as_their_own_thumbnail_unless_animation_is_wanted() {
        let request =
            |animated| ThumbnailRequest { width: 32, height: 32, method: ThumbnailMethod::Crop, animated };
        assert!(serves_as_thumbnail("image/png", Animation::Static, &request(None)));
        assert!(serves_as_thumbnail("image/jpeg; x=y", Animation::Static, &request(Some(false))));
        assert!(!serves_as_thumbnail("image/gif", Animation::Animated, &request(None)));
        assert!(!serves_as_thumbnail("image/gif", Animation::Unknown, &request(Some(false))));
        assert!(serves_as_thumbnail("image/gif", Animation::Animated, &request(Some(true))));
        assert!(!serves_as_thumbnail("image/svg+xml", Animation::Static, &request(None)));
        assert!(!serves_as_thumbnail("application/pdf", Animation::Static, &request(Some(true))));
    }

    fn png(chunks: &[&[u8; 4]]) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        for kind in chunks {
            bytes.extend_from_slice(&[0, 0, 0, 1]);
            bytes.extend_from_slice(*kind);
            bytes.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        bytes
    }

    #[test]
    fn animation_is_sniffed_from_the_first_bytes() {
        assert_eq!(animation("image/png", &png(&[b"IHDR", b"IDAT", b"IEND"])), Animation::Static);
        assert_eq!(animation("image/png", &png(&[b"IHDR", b"acTL", b"IDAT"])), Animation::Animated);
        assert_eq!(animation("image/png", &png(&[b"IHDR"])), Animation::Unknown);
        assert_eq!(animation("image/png", b"not a png"), Animation::Unknown);
        assert_eq!(animation("image/jpeg", b""), Animation::Static);
        assert_eq!(animation("image/webp", b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\0"), Animation::Static);
        assert_eq!(animation("image/webp", b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\x02"), Animation::Animated);
        assert_eq!(animation("image/webp", b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\x10"), Animation::Static);
        assert_eq!(animation("application/pdf", b"%PDF"), Animation::Unknown);
    }

    #[test]
    fn gif_animation_counts_frames_and_looping_extensions() {
        // 1x1, no global color table.
        let header = b"GIF89a\x01\x00\x01\x00\x00\x00\x00";
        let frame = b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00";
        let control = b"\x21\xf9\x04\x00\x0a\x00\x00\x00";
        let looping = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00";
        let gif = |parts: &[&[u8]]| {
            [header.as_slice()].iter().chain(parts).flat_map(|part| part.iter().copied()).collect::<Vec<u8>>()
        };
        assert_eq!(animation("image/gif", &gif(&[control, frame, b";"])), Animation::Static);
        assert_eq!(animation("image/gif", &gif(&[frame, control, frame, b";"])), Animation::Animated);
        assert_eq!(animation("image/gif", &gif(&[looping, frame, b";"])), Animation::Animated);
        assert_eq!(animation("image/gif", &gif(&[frame])), Animation::Unknown);
        let with_table = b"GIF87a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff";
        let gif = [with_table.as_slice(), frame, b";"].concat();
        assert_eq!(animation("image/gif", &gif), Animation::Static);
    }
}
