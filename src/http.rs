//! The HTTP layer between the socket loop and the Matrix handlers: request
//! decoding, body size limits, JSON parsing with the spec's error codes,
//! access-token extraction, CORS, and dispatch by path prefix.
//!
//! Handlers below this see a [`Request`] with its whole body and return a
//! [`Response`] or an [`Error`]; they never touch async-h1 types.

use std::borrow::Cow;
use std::rc::Rc;

use http_types::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use smol::io::{AsyncBufRead, AsyncReadExt};

use crate::app::App;
use crate::error::{Error, Result};
use crate::server::{Handler, Interim, Peer};

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
    pub headers: http_types::Headers,
    pub body: Vec<u8>,
    pub peer: Peer,
    /// Whether a guest's access token is good for this request: the client
    /// router sets it for the endpoints the spec opens to guests, and
    /// `App::authenticate` refuses guests everywhere else.
    pub guests_allowed: std::cell::Cell<bool>,
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
        self.headers.get(name).map(|values| values.as_str())
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

/// Whether the path is a media upload (which gets the larger body limit).
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

/// Builds the socket loop's handler for this node.
pub fn handler(app: Rc<App>) -> Handler {
    Rc::new(move |request, peer, interim| {
        let app = app.clone();
        Box::pin(async move {
            let mut response = match read_request(&app, request, peer, &interim).await {
                Ok(request) => dispatch(&app, request).await,
                Err(error) => Response::error(&error),
            };
            // What the answer says must be committed before it goes out.
            if let Err(error) = app.durable().await {
                response = Response::error(&error);
            }
            into_http(response)
        })
    })
}

async fn read_request(
    app: &App,
    mut request: http_types::Request,
    peer: Peer,
    interim: &Interim,
) -> Result<Request> {
    let url = request.url();
    let segments = url
        .path_segments()
        .map(|segments| segments.map(percent_decode).collect::<Vec<_>>())
        .unwrap_or_default();
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let query = url.query_pairs().map(|(key, value)| (key.into_owned(), value.into_owned())).collect();
    let media = is_media_upload(&segments);
    let limit = if media { app.config.limits.max_media_body } else { app.config.limits.max_json_body };
    if media && request.len().is_none_or(|length| length > app.config.limits.max_json_body) {
        // Only a signed-in user may make us hold a large body in memory.
        let token = request
            .header("authorization")
            .and_then(|value| value.as_str().split_once(' ').map(|(_, token)| token.trim().to_string()))
            .or_else(|| {
                url.query_pairs().find(|(key, _)| key == "access_token").map(|(_, value)| value.into_owned())
            })
            .ok_or(Error::MissingToken)?;
        if app.storage().token_owner(&crate::credentials::hash_token(&token))?.is_none() {
            return Err(Error::UnknownToken { soft_logout: false });
        }
    }
    if request.len().is_some_and(|length| length > limit) {
        return Err(Error::TooLarge(format!("the body is larger than {limit} bytes")));
    }
    let mut body = Vec::new();
    if request.len() != Some(0) && request.method() != Method::Get {
        interim.send_continue().await;
        let mut reader = request.take_body().take(limit as u64 + 1);
        reader
            .read_to_end(&mut body)
            .await
            .map_err(|error| Error::BadJson(format!("cannot read the body: {error}")))?;
        if body.len() > limit {
            return Err(Error::TooLarge(format!("the body is larger than {limit} bytes")));
        }
    }
    let headers: &http_types::Headers = request.as_ref();
    Ok(Request {
        method: request.method(),
        segments,
        target,
        query,
        headers: headers.clone(),
        body,
        peer,
        guests_allowed: std::cell::Cell::new(false),
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

fn into_http(response: Response) -> http_types::Response {
    let status = http_types::StatusCode::try_from(response.status)
        .unwrap_or(http_types::StatusCode::InternalServerError);
    let mut http = http_types::Response::new(status);
    match response.body {
        Body::Bytes(bytes) => http.set_body(bytes),
        Body::Stream { reader, length } => http.set_body(http_types::Body::from_reader(reader, Some(length))),
    }
    http.insert_header("content-type", response.content_type.as_ref());
    // CORS for browser clients, as the spec asks of every endpoint.
    http.insert_header("access-control-allow-origin", "*");
    http.insert_header("access-control-allow-methods", "GET, POST, PUT, DELETE, OPTIONS");
    http.insert_header("access-control-allow-headers", "X-Requested-With, Content-Type, Authorization, Date");
    for (name, value) in response.headers {
        http.insert_header(name, value);
    }
    http
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
}
