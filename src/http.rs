//! The HTTP layer between the socket loop and the Matrix handlers: request
//! decoding (request targets, body size limits), CORS, and dispatch by path
//! prefix.
//!
//! Handlers below this see a [`Request`] with its whole body (a media
//! upload's body is left unread, for its handler to stream: see
//! [`UploadBody`]) and return a [`Response`] or an [`Error`]; they never
//! touch the codec's types. Those types are `request.rs`, below the
//! handlers. Paths with `.` or `..` segments are refused here, never folded.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use http_types::Method;
use smol::io::AsyncReadExt;

use crate::app::App;
use crate::error::{Error, Result};
use crate::http1::{Framing, OutgoingBody};
use crate::request::{Body, Request, Response, UploadBody};
use crate::server::{Handler, Peer};

/// Whether the path is a media upload (whose body its handler streams).
fn is_media_upload(segments: &[String]) -> bool {
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    matches!(
        path.as_slice(),
        ["_matrix", "media", "r0" | "v1" | "v3", "upload", ..]
            | ["_matrix", "client", "v1", "media", "upload", ..]
    )
}

/// Bodies of at most this many bytes, declared, are read without a share
/// of the [`crate::request::BodyBudget`]: a login, a message or a receipt
/// is not held up by large bodies waiting. A connection holds at most one,
/// so they stay within 16 KiB per open connection.
const SMALL_BODY: usize = 16 << 10;

/// The largest body of a federation transaction (`PUT
/// /_matrix/federation/v1/send/{txnId}`): the spec allows 50 PDUs of up to
/// 64 KiB each and 100 EDUs in one, over 3 MiB, and a peer whose transaction
/// is refused sends it again for ever (the link to it stops).
pub const MAX_TRANSACTION_BODY: usize = 4 << 20;

/// How large a JSON body may be at `segments`: the configured limit, or a
/// federation transaction's if that is larger.
fn json_body_limit(app: &App, segments: &[String]) -> usize {
    let configured = app.config.limits.max_json_body;
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["_matrix", "federation", "v1", "send", _] => configured.max(MAX_TRANSACTION_BODY),
        _ => configured,
    }
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
    let mut body_share = None;
    if is_media_upload(&segments) {
        // Left unread: the handler authenticates, checks the declared size
        // and the quota, and streams it (see `rooms::upload`).
        let length = length.map(|length| length as u64);
        upload = Some(UploadBody::new(length, Box::new(reader), head.expect_continue));
    } else {
        let limit = json_body_limit(app, &segments);
        if length.is_some_and(|length| length > limit) {
            return Err(Error::TooLarge(format!("the body is larger than {limit} bytes")));
        }
        if length != Some(0) && method != Method::Get {
            // Small bodies (most requests: a message, a login) need no share,
            // so they go on while large ones wait.
            if length.is_none_or(|length| SMALL_BODY < length) {
                body_share = Some(app.bodies.take(length.unwrap_or(limit).saturating_add(1)).await);
            }
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
        _body_share: body_share,
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
        Body::Unsized { reader } => OutgoingBody::Unsized { reader, chunked: true },
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
