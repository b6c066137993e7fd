//! The HTTP layer between the socket loop and the Matrix handlers: request
//! decoding, body size limits, JSON parsing with the spec's error codes,
//! access-token extraction, CORS, and dispatch by path prefix.
//!
//! Handlers below this see a [`Request`] with its whole body (a media
//! upload's body is left unread, for its handler to stream: see
//! [`UploadBody`]) and return a [`Response`] or an [`Error`]; they never
//! touch the codec's types. Paths with `.` or `..` segments are refused
//! here, never folded.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use http_types::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use smol::future::FutureExt;
use smol::io::{AsyncBufRead, AsyncRead, AsyncReadExt};

use crate::app::App;
use crate::error::{Error, Result};
use crate::http1::{Framing, Headers, OutgoingBody};
use crate::server::{Handler, Peer};

/// A decoded request with its whole body.
pub struct Request {
    pub method: Method,
    /// Percent-decoded path segments, without the leading empty one.
    pub segments: Vec<String>,
    /// The request target as received: path and query, still percent-encoded
    /// (what an `X-Matrix` signature covers).
    pub target: String,
    /// Percent-decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub headers: Headers,
    /// The whole body; empty for a media upload, whose body is in `upload`.
    pub body: Vec<u8>,
    /// A media upload's body, unread, for its handler to take once.
    pub upload: Cell<Option<UploadBody>>,
    pub peer: Peer,
    /// Whether a guest's access token is good for this request: the client
    /// router sets it for the endpoints the spec opens to guests, and
    /// `App::authenticate` refuses guests everywhere else.
    pub guests_allowed: Cell<bool>,
}

/// The body of a media upload, not yet read: its handler authenticates and
/// admits the upload first, then streams it into the database.
pub struct UploadBody {
    /// `Content-Length`; `None` for a chunked body.
    pub length: Option<u64>,
    reader: Box<dyn AsyncRead + Unpin>,
    /// Whether the client waits for `100 Continue` (sent by the codec on
    /// the body's first read) before sending the body.
    expect_continue: bool,
}

/// A refused upload's body up to this size is read and dropped before the
/// answer, so the connection can carry the next request (larger ones close
/// it, as a client waiting for `100 Continue` has sent nothing).
const DISCARD_MAX_BYTES: u64 = 64 << 10;

/// How long reading a refused upload's small body may take.
const DISCARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl UploadBody {
    /// The body's bytes, once the request has passed its checks: a client
    /// waiting for `100 Continue` is told to send them now.
    pub async fn into_reader(self) -> Box<dyn AsyncRead + Unpin> {
        self.reader
    }

    /// Drops the body of a refused upload. A small one that is on its way
    /// is read first: answering before it is read and draining it after
    /// races the client's next request on the connection.
    pub async fn discard(self) {
        let small = self.length.is_some_and(|length| length <= DISCARD_MAX_BYTES);
        if !small || self.expect_continue {
            return;
        }
        let mut reader = self.reader.take(DISCARD_MAX_BYTES);
        let _ = smol::io::copy(&mut reader, &mut smol::io::sink())
            .or(async {
                smol::Timer::after(DISCARD_TIMEOUT).await;
                Ok(0)
            })
            .await;
    }
}

/// A response before it is turned into an HTTP response.
pub struct Response {
    pub status: u16,
    /// `application/json` for the API; stored content types for media.
    pub content_type: Cow<'static, str>,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
}

/// A response body: bytes in hand, or bytes read while the response goes out.
pub enum Body {
    Bytes(Vec<u8>),
    /// Exactly `length` bytes from `reader` (large media, streamed from the
    /// database); a reader error cuts the connection.
    Stream {
        reader: Box<dyn AsyncBufRead + Unpin + Send + Sync>,
        length: usize,
    },
}

impl From<crate::rooms::media::Content> for Body {
    fn from(content: crate::rooms::media::Content) -> Body {
        match content {
            crate::rooms::media::Content::Bytes(bytes) => Body::Bytes(bytes),
            crate::rooms::media::Content::Stream(stream) => {
                Body::Stream { length: stream.length, reader: Box::new(stream) }
            }
        }
    }
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &Value) -> Response {
        Response::bytes(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
    }

    /// A response carrying `body` as `content_type`.
    pub fn bytes(status: u16, content_type: impl Into<Cow<'static, str>>, body: Vec<u8>) -> Response {
        Response { status, content_type: content_type.into(), body: Body::Bytes(body), headers: Vec::new() }
    }

    /// `200 {}` or any other JSON with 200.
    pub fn ok(value: Value) -> Response {
        Response::json(200, &value)
    }

    /// 200 with a body of any serialisable type (an answer built as typed
    /// sections rather than one JSON value).
    pub fn ok_json(body: &impl serde::Serialize) -> Response {
        Response::bytes(200, "application/json", serde_json::to_vec(body).unwrap_or_default())
    }

    fn error(error: &Error) -> Response {
        let (status, _) = error.status_and_errcode();
        let mut response = Response::json(status, &error.to_json());
        if let Error::LimitExceeded { retry_after_ms } = error {
            response.headers.push(("retry-after", retry_after_ms.div_ceil(1000).to_string()));
        }
        response
    }
}

impl Request {
    /// The first query value for `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The access token from `Authorization: Bearer` or `?access_token=`.
    pub fn access_token(&self) -> Option<&str> {
        if let Some(value) = self.header("authorization") {
            let (scheme, token) = value.split_once(' ')?;
            return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
        }
        self.query("access_token")
    }

    /// The body as JSON of type `T`: `M_NOT_JSON` if it is not JSON at all,
    /// `M_BAD_JSON` if it is JSON of the wrong shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let value = self.json_value()?;
        serde_json::from_value(value).map_err(|error| Error::BadJson(error.to_string()))
    }

    /// The body as a JSON object (an empty body counts as `{}`).
    pub fn json_object(&self) -> Result<serde_json::Map<String, Value>> {
        match self.json_value()? {
            Value::Object(map) => Ok(map),
            _ => Err(Error::BadJson("the body must be a JSON object".into())),
        }
    }

    fn json_value(&self) -> Result<Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&self.body).map_err(|error| Error::NotJson(error.to_string()))
    }

    /// Path segments as `&str`s, for matching.
    pub fn path(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

/// Whether the path is a media upload (whose body its handler streams).
fn is_media_upload(segments: &[String]) -> bool {
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    matches!(
        path.as_slice(),
        ["_matrix", "media", "r0" | "v1" | "v3", "upload", ..]
            | ["_matrix", "client", "v1", "media", "upload", ..]
    )
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |byte: u8| (byte as char).to_digit(16).map(|digit| digit as u8);
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[index + 1]), hex(bytes[index + 2])) {
                decoded.push(high * 16 + low);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Splits a request target into its path and query. Origin form
/// (`/path?query`), absolute form (`http://host/path`, RFC 9112 §3.2.2) and
/// `*` (for `OPTIONS`) are accepted.
fn split_target(target: &str) -> Result<(&str, Option<&str>)> {
    let target = match target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        Some(rest) => rest.find('/').and_then(|start| rest.get(start..)).unwrap_or("/"),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if path != "*" && !path.starts_with('/') {
        return Err(Error::InvalidParam(format!("{target:?} is not a request path")));
    }
    Ok((path, query))
}

/// The percent-decoded segments of a path. A `.` or `..` segment (raw or
/// percent-encoded) is refused rather than folded: no client needs one, and
/// folding would route a request somewhere its sender did not name.
fn path_segments(path: &str) -> Result<Vec<String>> {
    let Some(path) = path.strip_prefix('/') else {
        return Ok(Vec::new());
    };
    let segments: Vec<String> = path.split('/').map(percent_decode).collect();
    if segments.iter().any(|segment| segment == "." || segment == "..") {
        return Err(Error::InvalidParam("the path has a \".\" or \"..\" segment".into()));
    }
    Ok(segments)
}

/// Query pairs as a form decodes them (`+` is a space, then `%XX` escapes).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&key.replace('+', " ")), percent_decode(&value.replace('+', " ")))
        })
        .collect()
}

/// What reading a request body failed with, as an answer: a stalled client
/// gets 408, a truncated or malformed body 400.
fn body_error(error: std::io::Error) -> Error {
    match error.kind() {
        std::io::ErrorKind::TimedOut => Error::matrix(408, "M_UNKNOWN", "the body arrived too slowly"),
        _ => Error::matrix(400, "M_UNKNOWN", format!("cannot read the body: {error}")),
    }
}

/// Builds the socket loop's handler for this node.
pub fn handler(app: Rc<App>) -> Handler {
    Rc::new(move |request, peer| {
        let app = app.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let group = split_target(&request.head.target)
                .map_or(crate::metrics::Group::Other, |(path, _)| crate::metrics::Group::of(path));
            let mut response = match read_request(&app, request, peer).await {
                Ok(request) => dispatch(&app, request).await,
                Err(error) => Response::error(&error),
            };
            // What the answer says must be committed before it goes out.
            if let Err(error) = app.durable().await {
                response = Response::error(&error);
            }
            app.metrics.request_done(group, response.status, started.elapsed());
            into_http(response)
        })
    })
}

async fn read_request(app: &App, request: crate::server::Request, peer: Peer) -> Result<Request> {
    let crate::server::Request { head, body: mut reader } = request;
    let method: Method = head.method.parse().map_err(|_| Error::Unrecognized { method_not_allowed: true })?;
    let (path, query) = split_target(&head.target)?;
    let segments = path_segments(path)?;
    let target = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let query = query.map(query_pairs).unwrap_or_default();
    let length = match head.framing {
        Framing::Empty => Some(0),
        Framing::Length(length) => Some(usize::try_from(length).unwrap_or(usize::MAX)),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let mut body = Vec::new();
    let mut upload = None;
    if is_media_upload(&segments) {
        // Left unread: the handler authenticates, checks the declared size
        // and the quota, and streams it (see `rooms::upload`).
        let length = length.map(|length| length as u64);
        upload = Some(UploadBody { length, reader: Box::new(reader), expect_continue: head.expect_continue });
    } else {
        let limit = app.config.limits.max_json_body;
        if length.is_some_and(|length| length > limit) {
            return Err(Error::TooLarge(format!("the body is larger than {limit} bytes")));
        }
        if length != Some(0) && method != Method::Get {
            (&mut reader).take(limit as u64 + 1).read_to_end(&mut body).await.map_err(body_error)?;
            if body.len() > limit {
                return Err(Error::TooLarge(format!("the body is larger than {limit} bytes")));
            }
        }
    }
    Ok(Request {
        method,
        segments,
        target,
        query,
        headers: head.headers,
        body,
        upload: Cell::new(upload),
        peer,
        guests_allowed: Cell::new(false),
    })
}

async fn dispatch(app: &Rc<App>, request: Request) -> Response {
    if request.method == Method::Options {
        return Response::bytes(204, "text/plain", Vec::new());
    }
    let result = match request.segments.first().map(String::as_str) {
        Some(".well-known") => crate::client::well_known::route(app, &request),
        Some("_matrix") => match request.segments.get(1).map(String::as_str) {
            Some("client") => crate::client::route(app, &request).await,
            Some("media") => crate::client::media::route_legacy(app, &request).await,
            Some("key" | "federation") if app.serves_federation(request.peer.listener) => {
                crate::federation::route(app, &request).await
            }
            _ => Err(Error::Unrecognized { method_not_allowed: false }),
        },
        Some("_hearth") => crate::client::admin::route(app, &request).await,
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    };
    match result {
        Ok(response) => response,
        Err(error) => {
            if let Error::Database(_) | Error::Internal(_) = error {
                log::error!("{} /{}: {error}", request.method, request.segments.join("/"));
            }
            Response::error(&error)
        }
    }
}

fn into_http(response: Response) -> crate::server::Response {
    let body = match response.body {
        Body::Bytes(bytes) => OutgoingBody::Bytes(bytes),
        Body::Stream { reader, length } => OutgoingBody::Stream { reader, length: length as u64 },
    };
    let mut headers: Vec<(Cow<'static, str>, String)> = vec![
        ("content-type".into(), response.content_type.into_owned()),
        // CORS for browser clients, as the spec asks of every endpoint.
        ("access-control-allow-origin".into(), "*".into()),
        ("access-control-allow-methods".into(), "GET, POST, PUT, DELETE, OPTIONS".into()),
        ("access-control-allow-headers".into(), "X-Requested-With, Content-Type, Authorization, Date".into()),
    ];
    headers.extend(response.headers.into_iter().map(|(name, value)| (Cow::Borrowed(name), value)));
    crate::server::Response { status: response.status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("%40alice%3Aexample.org"), "@alice:example.org");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
    }

    #[test]
    fn dot_segments_are_refused() {
        for path in ["/a/..", "/a/./b", "/a/%2e%2E/b", "/a/%2e", "/.."] {
            assert!(path_segments(path).is_err(), "{path}");
        }
        assert_eq!(path_segments("/a/...%2F/b.c/").unwrap(), vec!["a", ".../", "b.c", ""]);
    }

    #[test]
    fn targets_split_into_path_and_query() {
        assert_eq!(split_target("/a?b=c").unwrap(), ("/a", Some("b=c")));
        assert_eq!(split_target("http://host:8008/a/b").unwrap(), ("/a/b", None));
        assert_eq!(split_target("http://host").unwrap(), ("/", None));
        assert_eq!(split_target("*").unwrap(), ("*", None));
        assert!(split_target("a/b").is_err());
        assert_eq!(
            query_pairs("a=1&&b=%40x+y&c&a=2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "@x y".into()),
                ("c".into(), "".into()),
                ("a".into(), "2".into())
            ]
        );
    }
}
