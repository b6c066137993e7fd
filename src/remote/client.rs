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

/// [`request`] with a smaller response limit.
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
    if destination == app.config.server_name {
        return Err(Error::Internal(format!(
            "refusing to send a federation request to ourselves ({destination})"
        )));
    }
    // Nothing we say may rest on writes a crash could still undo.
    app.durable().await?;
    let federation = &app.federation;
    let target = discovery::resolve(federation, destination).await?;
    let (_, uri) = transport::request_target(path_and_query)?;
    let authorization = auth::authorization_header(app, destination, method.as_ref(), &uri, body.as_ref())?;
    let bytes = body
        .as_ref()
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|error| Error::Internal(error.to_string()))?;
    let headers = [("authorization", authorization)];
    match transport::exchange(federation, &target, method, &uri, &headers, bytes, max_response_bytes).await {
        Ok(response) => Ok(response),
        Err(error) => {
            // The addresses may have moved: resolve afresh next time.
            discovery::forget(federation, destination);
            Err(error)
        }
    }
}
