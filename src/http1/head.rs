//! Pure HTTP/1.1 head parsing: finds where a head ends under fixed limits,
//! then parses it with `httparse` and checks what `httparse` leaves to us
//! (header bytes, message framing, connection options).
//!
//! No I/O: bytes in, a parsed head or an error out, so it can be fuzzed.
//! Spec: <https://www.rfc-editor.org/rfc/rfc9112> (message syntax and framing).

use std::fmt;

/// The longest request line (method, target, version). Matrix paths carry
/// room, event and user IDs (255 bytes each at most) and `/sync` may carry a
/// filter inline; 8 KiB is also the request-line limit of common proxies,
/// so no client can depend on more.
pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
/// The longest header line. The longest we expect is an `X-Matrix`
/// authorization (origin, destination, key ID, signature: a few hundred bytes).
pub const MAX_HEADER_LINE_BYTES: usize = 8 * 1024;
/// At most this many header lines: clients send about ten.
pub const MAX_HEADERS: usize = 64;
/// The whole head, request or status line included; nothing past this is
/// ever buffered while looking for the end of a head.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why a head was refused, and so which status answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x as RFC 9112 writes it (400).
    Malformed(&'static str),
    /// The request line is longer than [`MAX_REQUEST_LINE_BYTES`] (414).
    RequestLineTooLong,
    /// A header line, the header count or the whole head is over its limit (431).
    HeadTooLarge(&'static str),
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferCoding,
    /// The connection ended inside a head (no answer possible).
    Incomplete,
}

impl HeadError {
    /// The status to answer a request head refused for this reason.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::Incomplete => 400,
            HeadError::RequestLineTooLong => 414,
            HeadError::HeadTooLarge(_) => 431,
            HeadError::UnsupportedTransferCoding => 501,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(why) => write!(formatter, "malformed head: {why}"),
            HeadError::RequestLineTooLong => {
                write!(formatter, "request line over {MAX_REQUEST_LINE_BYTES} bytes")
            }
            HeadError::HeadTooLarge(why) => write!(formatter, "head too large: {why}"),
            HeadError::UnsupportedTransferCoding => write!(formatter, "unsupported transfer coding"),
            HeadError::Incomplete => write!(formatter, "the connection ended inside a head"),
        }
    }
}

impl std::error::Error for HeadError {}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Header fields in the order received; names lower-cased, values trimmed
/// and known to be visible ASCII, spaces and tabs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of the header `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(seen, _)| seen.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Every value of the header `name` (any case), in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(seen, _)| seen.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every header, names lower-cased.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Whether the comma-separated list in the headers `name` holds `token` (any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name).flat_map(|value| value.split(',')).any(|item| item.trim().eq_ignore_ascii_case(token))
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as received (visible ASCII only).
    pub target: String,
    pub version: Version,
    pub headers: Headers,
    pub framing: Framing,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    pub headers: Headers,
    /// How the body is delimited, for a response to a request that is not `HEAD`.
    pub framing: Framing,
}

/// Where a scan for the end of a head stands; lets bytes be fed as they
/// arrive without looking at any byte twice.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Bytes examined so far.
    position: usize,
    /// Where the line being read starts.
    line_start: usize,
    /// Complete non-empty lines seen (the start line and headers).
    lines: usize,
}

/// Looks at `buffer[..]` (the bytes of a head so far, `scan` remembering
/// what was already seen) and says where the head ends: `Some(length)` past
/// its empty line, `None` if more bytes are needed. Fails as soon as a
/// line, the header count or the head is over its limit, so a caller never
/// buffers more than [`MAX_HEAD_BYTES`] and one read.
pub fn scan(buffer: &[u8], scan: &mut Scan, request: bool) -> Result<Option<usize>, HeadError> {
    let start_line_limit = if request { MAX_REQUEST_LINE_BYTES } else { MAX_HEADER_LINE_BYTES };
    let line_limit = |lines: usize| if lines == 0 { start_line_limit } else { MAX_HEADER_LINE_BYTES };
    let line_error = |lines: usize| {
        if lines == 0 && request {
            HeadError::RequestLineTooLong
        } else {
            HeadError::HeadTooLarge("a header line is too long")
        }
    };
    while let Some(offset) =
        buffer.get(scan.position..).and_then(|rest| rest.iter().position(|&byte| byte == b'\n'))
    {
        let end = scan.position + offset;
        scan.position = end + 1;
        let line = buffer.get(scan.line_start..end).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line_limit(scan.lines) < line.len() {
            return Err(line_error(scan.lines));
        }
        scan.line_start = scan.position;
        if MAX_HEAD_BYTES < scan.position {
            return Err(HeadError::HeadTooLarge("the head is too large"));
        }
        if line.is_empty() {
            if scan.lines == 0 {
                // Empty lines before a request line are ignored (RFC 9112 §2.2).
                continue;
            }
            return Ok(Some(scan.position));
        }
        scan.lines += 1;
        if MAX_HEADERS + 1 < scan.lines {
            return Err(HeadError::HeadTooLarge("too many header lines"));
        }
    }
    scan.position = buffer.len();
    if line_limit(scan.lines) + 1 < buffer.len() - scan.line_start {
        return Err(line_error(scan.lines));
    }
    if MAX_HEAD_BYTES < buffer.len() {
        return Err(HeadError::HeadTooLarge("the head is too large"));
    }
    Ok(None)
}

/// Parses the request head at the start of `buffer`: `None` if it is not
/// complete yet, else the head and its length in bytes. The fuzzing entry
/// point; the server reads with [`scan`] and [`parse_request_head`].
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse_request(buffer: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some(length) = scan(buffer, &mut Scan::default(), true)? else {
        return Ok(None);
    };
    Ok(Some((parse_request_head(buffer.get(..length).unwrap_or_default())?, length)))
}

/// Parses the response head at the start of `buffer`, as [`parse_request`].
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse_response(buffer: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let Some(length) = scan(buffer, &mut Scan::default(), false)? else {
        return Ok(None);
    };
    Ok(Some((parse_response_head(buffer.get(..length).unwrap_or_default())?, length)))
}

/// Parses a complete request head (as found by [`scan`]).
pub fn parse_request_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge("too many header lines")),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1.x request head")),
    }
    let method = request.method.ok_or(HeadError::Malformed("no method"))?.to_string();
    let target = request.path.ok_or(HeadError::Malformed("no target"))?;
    if target.is_empty() || !target.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(HeadError::Malformed("the target is not visible ASCII"));
    }
    let version = version(request.version)?;
    let headers = headers(request.headers)?;
    let framing = request_framing(&headers, version)?;
    let keep_alive = match version {
        Version::Http11 => !headers.has_token("connection", "close"),
        Version::Http10 => headers.has_token("connection", "keep-alive"),
    };
    let expect_continue = version == Version::Http11
        && headers.all("expect").any(|value| value.eq_ignore_ascii_case("100-continue"));
    Ok(RequestHead {
        method,
        target: target.to_string(),
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// Parses a complete response head (as found by [`scan`]).
pub fn parse_response_head(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge("too many header lines")),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1.x response head")),
    }
    let status = response.code.ok_or(HeadError::Malformed("no status"))?;
    let version = version(response.version)?;
    let headers = headers(response.headers)?;
    // RFC 9112 §6.3: 1xx, 204 and 304 have no body; then chunked, then length.
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match body_framing(&headers)? {
            Some(framing) => framing,
            None => Framing::UntilClose,
        }
    };
    Ok(ResponseHead { status, version, headers, framing })
}

fn version(version: Option<u8>) -> Result<Version, HeadError> {
    match version {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::Malformed("not HTTP/1.0 or HTTP/1.1")),
    }
}

/// Checks every header value (visible ASCII, spaces and tabs only: RFC 9110
/// §5.5 allows other bytes only as obsolete text, which we refuse).
fn headers(parsed: &[httparse::Header<'_>]) -> Result<Headers, HeadError> {
    let mut headers = Vec::with_capacity(parsed.len());
    for header in parsed {
        if !header.value.iter().all(|&byte| byte.is_ascii_graphic() || byte == b' ' || byte == b'\t') {
            return Err(HeadError::Malformed("a header value holds bytes that are not visible ASCII"));
        }
        let value = std::str::from_utf8(header.value).map_err(|_| HeadError::Malformed("header value"))?;
        headers.push((header.name.to_ascii_lowercase(), value.trim_matches([' ', '\t']).to_string()));
    }
    Ok(Headers(headers))
}

/// The body framing that `Transfer-Encoding` and `Content-Length` give
/// (RFC 9112 §6.1-6.3), `None` if neither is present.
fn body_framing(headers: &Headers) -> Result<Option<Framing>, HeadError> {
    let mut codings = headers.all("transfer-encoding").flat_map(|value| value.split(',')).map(str::trim);
    let has_length = headers.get("content-length").is_some();
    if let Some(first) = codings.next() {
        // Only `chunked`, once: we implement no other coding.
        if !first.eq_ignore_ascii_case("chunked") || codings.next().is_some() {
            return Err(HeadError::UnsupportedTransferCoding);
        }
        if has_length {
            // A smuggling attempt or a broken intermediary (RFC 9112 §6.1).
            return Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        return Ok(Some(Framing::Chunked));
    }
    if !has_length {
        return Ok(None);
    }
    let mut length = None;
    for item in headers.all("content-length").flat_map(|value| value.split(',')).map(str::trim) {
        if item.is_empty() || !item.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(HeadError::Malformed("Content-Length is not a number"));
        }
        let value: u64 = item.parse().map_err(|_| HeadError::Malformed("Content-Length is too large"))?;
        if length.is_some_and(|seen| seen != value) {
            return Err(HeadError::Malformed("different Content-Length values"));
        }
        length = Some(value);
    }
    Ok(length.map(|length| if length == 0 { Framing::Empty } else { Framing::Length(length) }))
}

fn request_framing(headers: &Headers, version: Version) -> Result<Framing, HeadError> {
    match body_framing(headers)? {
        // HTTP/1.0 has no chunked coding (RFC 9112 §6.1: treat as faulty).
        Some(Framing::Chunked) if version == Version::Http10 => {
            Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"))
        }
        Some(framing) => Ok(framing),
        // A request without either has no body (RFC 9112 §6.3, rule 7).
        None => Ok(Framing::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &[u8]) -> Result<RequestHead, HeadError> {
        match parse_request(text) {
            Ok(Some((head, length))) => {
                assert_eq!(length, text.len(), "{:?}", String::from_utf8_lossy(text));
                Ok(head)
            }
            Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(text)),
            Err(error) => Err(error),
        }
    }

    #[test]
    fn a_plain_request() {
        let head =
            request(b"GET /_matrix/client/versions?x=1 HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\n").unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/_matrix/client/versions?x=1");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers.get("HOST"), Some("a"));
        assert_eq!(head.headers.get("x-y"), Some("z"));
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn bytes_arrive_in_any_pieces() {
        let text = b"\r\nPUT /x HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello";
        let mut state = Scan::default();
        let mut found = None;
        for end in 0..=text.len() {
            if let Some(length) = scan(&text[..end], &mut state, true).unwrap() {
                found = Some(length);
                break;
            }
        }
        assert_eq!(found, Some(text.len() - 5));
        let head = parse_request_head(&text[..text.len() - 5]).unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.expect_continue);
    }

    #[test]
    fn bare_line_feeds_are_lines() {
        let head = request(b"GET / HTTP/1.1\nHost: a\n\n").unwrap();
        assert_eq!(head.headers.get("host"), Some("a"));
    }

    #[test]
    fn http_1_0_closes_unless_asked() {
        let head = request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.version, Version::Http10);
        assert!(!head.keep_alive);
        assert!(request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().keep_alive);
        assert!(!request(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").unwrap().keep_alive);
        assert!(request(b"GET / HTTP/2.0\r\n\r\n").is_err());
    }

    #[test]
    fn header_bytes_must_be_visible_ascii() {
        for bad in [
            &b"GET / HTTP/1.1\r\nUser-Agent: Caf\xc3\xa9/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: \x7f\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n",
        ] {
            assert_eq!(
                request(bad).map_err(|error| error.status()),
                Err(400),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(request(b"GET / HTTP/1.1\r\nX: a\tb c\r\n\r\n").unwrap().headers.get("x"), Some("a\tb c"));
    }

    #[test]
    fn framing_is_unambiguous() {
        let status = |text: &[u8]| request(text).map(|head| head.framing).map_err(|error| error.status());
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"), Ok(Framing::Length(3)));
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"), Err(400));
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n"), Err(400));
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"), Err(400));
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), Err(400));
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok(Framing::Chunked));
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Err(501));
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), Err(501));
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(400)
        );
        assert_eq!(status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), Ok(Framing::Empty));
    }

    #[test]
    fn limits_are_enforced_before_the_end_of_a_line() {
        let mut long = b"GET /".to_vec();
        long.resize(MAX_REQUEST_LINE_BYTES + 10, b'a');
        assert_eq!(scan(&long, &mut Scan::default(), true), Err(HeadError::RequestLineTooLong));
        let mut header = b"GET / HTTP/1.1\r\nX: ".to_vec();
        header.resize(MAX_HEADER_LINE_BYTES + 100, b'a');
        assert_eq!(scan(&header, &mut Scan::default(), true).map_err(|error| error.status()), Err(431));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for index in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{index}: a\r\n").as_bytes());
        }
        assert_eq!(scan(&many, &mut Scan::default(), true).map_err(|error| error.status()), Err(431));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES {
            big.extend_from_slice(&[b'a'; 1000]);
            big.extend_from_slice(b": b\r\n");
        }
        assert_eq!(scan(&big, &mut Scan::default(), true).map_err(|error| error.status()), Err(431));
        // Just under the limits is fine.
        let mut fine = b"GET /".to_vec();
        fine.resize(MAX_REQUEST_LINE_BYTES - 9, b'a');
        fine.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert!(request(&fine).is_ok());
    }

    #[test]
    fn responses() {
        let (head, length) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap().unwrap();
        assert_eq!((head.status, head.framing, length), (200, Framing::Length(2), 38));
        let (head, _) = parse_response(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        let (head, _) =
            parse_response(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::Empty);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX-Evil: \xc3\xa9\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX-Evil: a").unwrap().is_none());
    }

    /// Mutated heads (a small deterministic mutation loop; the fuzz targets
    /// go further): never a panic, and a parsed head's length is within the input.
    #[test]
    fn mutated_heads_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
            b"GET / HTTP/1.0\nConnection: keep-alive\nTransfer-Encoding: chunked\n\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nX: \t\r\n\r\n{}",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..30_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next() % 8 {
                let position = (next() % (input.len() as u64 + 1)) as usize;
                let byte = [b'\r', b'\n', b':', b' ', b',', b'0', 0x80, next() as u8][(next() % 8) as usize];
                match next() % 3 {
                    0 => input.insert(position, byte),
                    1 if position < input.len() => {
                        input.remove(position);
                    }
                    _ if position < input.len() => input[position] = byte,
                    _ => {}
                }
            }
            if let Ok(Some((_, length))) = parse_request(&input) {
                assert!(length <= input.len());
            }
            if let Ok(Some((_, length))) = parse_response(&input) {
                assert!(length <= input.len());
            }
        }
    }
}
