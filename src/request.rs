//! What handlers see of HTTP: a decoded [`Request`] with its whole body (a
//! media upload's body is left unread, for its handler to stream: see
//! [`UploadBody`]), its query, headers, access token and JSON body (with the
//! spec's `M_NOT_JSON` and `M_BAD_JSON`), and the [`Response`] they return;
//! and the [`BodyBudget`] every whole body is read under.
//! Decoding requests and dispatching them is `http.rs`, above the handlers;
//! these types are below them, so handlers and `App` import no dispatch.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use http_types::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use smol::future::FutureExt;
use smol::io::{AsyncBufRead, AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::http1::Headers;
use crate::server::Peer;

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
    /// `Engine::authenticate` refuses guests everywhere else.
    pub guests_allowed: Cell<bool>,
    /// The share of the node's [`BodyBudget`] the body holds, for as long
    /// as the request lives.
    pub _body_share: Option<BodyShare>,
}

/// The bytes of request bodies read or handled at once, on every
/// connection together (a [`BodyBudget`]): two federation
/// transactions of 4 MiB, or eight bodies of 1 MiB (the bodies of most
/// requests are a few hundred bytes). A body that does not fit waits, unread
/// (the peer's sends wait in the kernel), for others to end.
pub const BODY_BUDGET: usize = 8 << 20;

/// The bytes of request bodies the node holds at once, across every
/// connection: a body is read only once its declared length (its limit,
/// when chunked) fits, and what it took is given back when its request
/// ends. Without it, connections that each send most of a 1 MiB body (or a
/// 4 MiB federation transaction) and stall would hold that much each, and a
/// few dozen would push a board's node past its memory.
pub struct BodyBudget {
    total: usize,
    free: Cell<usize>,
    given_back: event_listener::Event,
}

/// What one request's body holds of the [`BodyBudget`].
pub struct BodyShare {
    budget: Rc<BodyBudget>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> Rc<BodyBudget> {
        Rc::new(BodyBudget { total, free: Cell::new(total), given_back: event_listener::Event::new() })
    }

    /// Waits until `bytes` (at most the whole budget) are free, and takes them.
    pub async fn take(self: &Rc<Self>, bytes: usize) -> BodyShare {
        let bytes = bytes.min(self.total);
        loop {
            if bytes <= self.free.get() {
                self.free.set(self.free.get() - bytes);
                return BodyShare { budget: self.clone(), bytes };
            }
            let given_back = self.given_back.listen();
            if bytes <= self.free.get() {
                continue;
            }
            given_back.await;
        }
    }

    /// The bytes free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.free.get()
    }
}

impl Drop for BodyShare {
    fn drop(&mut self) {
        self.budget.free.set(self.budget.free.get() + self.bytes);
        self.budget.given_back.notify(usize::MAX);
    }
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
    /// The unread body of a media upload: `length` from `Content-Length`,
    /// `expect_continue` when the client waits for `100 Continue`.
    pub fn new(length: Option<u64>, reader: Box<dyn AsyncRead + Unpin>, expect_continue: bool) -> UploadBody {
        UploadBody { length, reader, expect_continue }
    }

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
    /// Bytes from `reader` until it ends, their length not known before
    /// (an answer made while it goes out, such as a big room's
    /// `send_join`): sent chunked; a reader error cuts the connection
    /// before the body's end.
    Unsized {
        reader: Box<dyn AsyncBufRead + Unpin>,
    },
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

    /// The JSON answer for an error (with `Retry-After` when it says when).
    pub fn error(error: &Error) -> Response {
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

#[cfg(test)]
mod tests {
    use super::BodyBudget;

    /// A share waits until enough is given back; one larger than the whole
    /// budget takes all of it rather than waiting for ever.
    #[test]
    fn body_shares_wait_for_room_and_give_it_back() {
        smol::block_on(async {
            let budget = BodyBudget::new(100);
            let first = budget.take(60).await;
            let second = budget.take(40).await;
            assert_eq!(budget.free(), 0);
            let mut waiting = Box::pin(budget.take(50));
            assert!(smol::future::poll_once(&mut waiting).await.is_none(), "no room yet");
            drop(first);
            let third = waiting.await;
            assert_eq!(budget.free(), 10);
            drop((second, third));
            assert_eq!(budget.free(), 100);
            let all = budget.take(1_000).await;
            assert_eq!(budget.free(), 0);
            drop(all);
            assert_eq!(budget.free(), 100);
        });
    }
}
