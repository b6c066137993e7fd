//! `GET /thirdparty/protocols`: the third-party networks reachable through
//! application-service bridges. The services' protocols are not asked for
//! yet (`/_matrix/app/v1/thirdparty/protocol`), so the map is empty; the
//! per-protocol lookups answer `M_UNRECOGNIZED`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3thirdpartyprotocols>.

use serde_json::json;

use crate::app::App;
use crate::error::Result;
use crate::http::{Request, Response};

/// `GET /thirdparty/protocols`: an empty map of protocols.
pub fn protocols(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    Ok(Response::ok(json!({})))
}
