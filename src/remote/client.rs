//! Outbound federation requests: resolve the destination, sign the request
//! with `X-Matrix`, send it over verified TLS, and read a bounded JSON answer.
//!
//! Every outgoing server-server request goes through [`request`].

use http_types::Method;
use serde_json::Value;

use super::{auth, discovery, transport};
use crate::error::{Error, Result};
use crate::remote::Remote;

/// The largest JSON answer we read: 8 MiB holds a large room's state or a
/// backfill batch; beyond that a server is misbehaving.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Sends a signed request to `destination` (a server name) and returns the
/// status and the JSON body (`null` for a non-JSON error body).
pub async fn request(
    app: &Remote,
    destination: &str,
    method: Method,
    path_and_query: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    request_with_limit(app, destination, method, path_and_query, body, MAX_RESPONSE_BYTES).await
}

/// [`request`] with another response limit.
pub async fn request_with_limit(
    app: &Remote,
    destination: &str,
    method: Method,
    path_and_query: &str,
    body: Option<Value>,
    max_response_bytes: usize,
) -> Result<(u16, Value)> {
    let (status, bytes) =
        request_bytes(app, destination, method, path_and_query, body, max_response_bytes).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => Ok((status, value)),
        Err(_) if !(200..300).contains(&status) => Ok((status, Value::Null)),
        Err(error) => {
            Err(Error::matrix(502, "M_UNKNOWN", format!("{destination} answered with bad JSON: {error}")))
        }
    }
}

/// [`request`] answering the raw body, for callers that parse large answers
/// piece by piece instead of building one JSON tree.
pub async fn request_bytes(
    app: &Remote,
    destination: &str,
    method: Method,
    path_and_query: &str,
    body: Option<Value>,
    max_response_bytes: usize,
) -> Result<(u16, Vec<u8>)> {
    let response = request_raw(app, destination, method, path_and_query, body, max_response_bytes).await?;
    Ok((response.status, response.body))
}

/// [`request`] answering the status, the headers and the raw body (media
/// answers are not JSON, and their headers matter).
pub async fn request_raw(
    app: &Remote,
    destination: &str,
    method: Method,
    path_and_query: &str,
    body: Option<Value>,
    max_response_bytes: usize,
) -> Result<transport::RawResponse> {
    let prepared = prepare(app, destination, method.as_ref(), path_and_query, body.as_ref()).await?;
    let headers = [("authorization", prepared.authorization)];
    let federation = &app.federation;
    let sent = transport::exchange(
        federation,
        &prepared.target,
        method,
        &prepared.uri,
        &headers,
        prepared.body,
        max_response_bytes,
    )
    .await;
    forget_on_error(app, destination, sent)
}

/// [`request`] writing the answer's body to `sink` as it arrives, for
/// answers too large to hold (a big room's `send_join`); answers the status.
pub async fn request_to<W: std::io::Write>(
    app: &Remote,
    destination: &str,
    method: Method,
    path_and_query: &str,
    body: Option<Value>,
    max_response_bytes: usize,
    sink: &mut W,
) -> Result<u16> {
    let prepared = prepare(app, destination, method.as_ref(), path_and_query, body.as_ref()).await?;
    let headers = [("authorization", prepared.authorization)];
    let sent = transport::exchange_to(
        &app.federation,
        &prepared.target,
        method,
        &prepared.uri,
        &headers,
        prepared.body,
        max_response_bytes,
        sink,
    )
    .await;
    Ok(forget_on_error(app, destination, sent)?.status)
}

/// A signed request ready to send.
struct Prepared {
    target: transport::Target,
    uri: String,
    authorization: String,
    body: Option<Vec<u8>>,
}

/// Resolves `destination` and signs the request for it.
async fn prepare(
    app: &Remote,
    destination: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
) -> Result<Prepared> {
    if destination == app.config.server_name {
        return Err(Error::Internal(format!(
            "refusing to send a federation request to ourselves ({destination})"
        )));
    }
    // Nothing we say may rest on writes a crash could still undo.
    app.durable().await?;
    let target = discovery::resolve(&app.federation, destination).await?;
    let (_, uri) = transport::request_target(path_and_query)?;
    let authorization = auth::authorization_header(app, destination, method, &uri, body)?;
    let body =
        body.map(serde_json::to_vec).transpose().map_err(|error| Error::Internal(error.to_string()))?;
    Ok(Prepared { target, uri, authorization, body })
}

/// `sent`, forgetting `destination`'s addresses when it failed: they may
/// have moved, so the next request resolves afresh.
fn forget_on_error<T>(app: &Remote, destination: &str, sent: Result<T>) -> Result<T> {
    if sent.is_err() {
        discovery::forget(&app.federation, destination);
    }
    sent
}
