//! `/.well-known/matrix/server` and `/client`: delegation, from configuration.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#well-known-uri> and
//! <https://spec.matrix.org/latest/server-server-api/#getwell-knownmatrixserver>.

use http_types::Method;
use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};

/// How long other servers and clients may keep a delegation: an hour, so a
/// change reaches them soon (servers keep an answer without a lifetime for a
/// day).
const CACHE_CONTROL: &str = "max-age=3600";

/// Routes `/.well-known/...`.
pub fn route(app: &App, request: &Request) -> Result<Response> {
    let mut response = answer(app, request)?;
    response.headers.push(("cache-control", CACHE_CONTROL.into()));
    Ok(response)
}

/// The delegation document asked for.
fn answer(app: &App, request: &Request) -> Result<Response> {
    if request.method != Method::Get {
        return Err(Error::Unrecognized { method_not_allowed: true });
    }
    let well_known = &app.config.well_known;
    match request.path().as_slice() {
        [".well-known", "matrix", "server"] => match &well_known.server {
            Some(server) => Ok(Response::ok(json!({ "m.server": server }))),
            None => Err(Error::NotFound("no server delegation is configured".into())),
        },
        [".well-known", "matrix", "client"] => match &well_known.client {
            Some(base_url) => Ok(Response::ok(json!({ "m.homeserver": { "base_url": base_url } }))),
            None => Err(Error::NotFound("no client delegation is configured".into())),
        },
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}
