//! Request authentication between servers: the `X-Matrix` header we put on
//! outbound requests, and the check of the one on inbound requests.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#request-authentication>.

use serde_json::{Value, json};

use super::keys;
use crate::error::{Error, Result};
use crate::protocol::identifiers::ServerName;
use crate::protocol::signing::{sign_json, verify_json};
use crate::protocol::x_matrix::{self, XMatrix};
use crate::remote::Remote;
use crate::request::Request;
use crate::storage::now_ms;

fn unauthorized(message: impl Into<String>) -> Error {
    Error::matrix(401, "M_UNAUTHORIZED", message)
}

/// The `Authorization` header for a request from us to `destination`.
/// `uri` is the path and query exactly as sent.
pub fn authorization_header(
    app: &Remote,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String> {
    let origin = &app.config.server_name;
    let mut signed = x_matrix::request_json(method, uri, origin, destination, content);
    sign_json(&mut signed, origin, &app.signing_key)
        .map_err(|error| Error::Internal(format!("cannot sign the request: {error}")))?;
    let sig = signed["signatures"][origin.as_str()][app.signing_key.key_id.as_str()]
        .as_str()
        .ok_or_else(|| Error::Internal("the request signature is missing".into()))?
        .to_string();
    Ok(x_matrix::format(&XMatrix {
        origin: origin.clone(),
        destination: Some(destination.to_string()),
        key: app.signing_key.key_id.clone(),
        sig,
    }))
}

/// Checks the request's `X-Matrix` signature and returns the origin server's
/// name. 401 `M_UNAUTHORIZED` when it is missing, malformed, meant for
/// another server, made with a key we cannot get, or wrong.
pub async fn authenticate_server(app: &Remote, request: &Request) -> Result<String> {
    let header = request
        .header("authorization")
        .ok_or_else(|| unauthorized("missing X-Matrix Authorization header"))?;
    let header = x_matrix::parse(header).map_err(|error| unauthorized(error.to_string()))?;
    ServerName::parse(&header.origin)
        .map_err(|_| unauthorized(format!("origin {:?} is not a server name", header.origin)))?;
    let our_name = &app.config.server_name;
    if let Some(destination) = &header.destination {
        if destination != our_name {
            return Err(unauthorized(format!("this request is for {destination}, this is {our_name}")));
        }
    }
    let content = if request.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&request.body)
                .map_err(|error| Error::NotJson(error.to_string()))?,
        )
    };
    let mut signed = x_matrix::request_json(
        request.method.as_ref(),
        &request.target,
        &header.origin,
        our_name,
        content.as_ref(),
    );
    signed["signatures"] = json!({ header.origin.as_str(): { header.key.as_str(): header.sig.as_str() } });
    let public_key = keys::verify_key(app, &header.origin, &header.key, now_ms()).await.map_err(|error| {
        unauthorized(format!("cannot get key {} of {}: {error}", header.key, header.origin))
    })?;
    verify_json(&signed, &header.origin, &header.key, &public_key)
        .map_err(|error| unauthorized(format!("bad X-Matrix signature from {}: {error}", header.origin)))?;
    Ok(header.origin)
}
