//! The client-server endpoints only application services call.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv1appserviceappserviceidping>.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::remote::appservice::{PingFailure, ping as ping_service};
use crate::request::{Request, Response};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the node pings
/// the service that asks (only its own `as_token` may ask for its ID) and
/// answers how long that took, or why it failed.
pub async fn ping(app: &App, request: &Request, appservice_id: &str) -> Result<Response> {
    if request.access_token().is_none() {
        return Err(Error::MissingToken);
    }
    let service = app
        .app_service(request)
        .filter(|service| service.id == appservice_id)
        .ok_or_else(|| Error::Forbidden("Provided access token is not the appservice's as_token".into()))?;
    let body = request.json_object()?;
    let transaction_id = match body.get("transaction_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.as_str()),
        Some(_) => return Err(Error::BadJson("`transaction_id` must be a string".into())),
    };
    match ping_service(app, &service, transaction_id).await {
        Ok(took) => Ok(Response::ok(json!({ "duration_ms": took.as_millis() as u64 }))),
        Err(PingFailure::NoUrl) => {
            Err(Error::matrix(400, "M_URL_NOT_SET", "Application service doesn't have a URL configured"))
        }
        Err(PingFailure::Status { status, body }) => Ok(Response::json(
            502,
            &json!({
                "errcode": "M_BAD_STATUS",
                "error": format!("Ping returned status {status}"),
                "status": status,
                "body": body,
            }),
        )),
        Err(PingFailure::Unreachable { timed_out: true, reason }) => Err(Error::matrix(
            504,
            "M_CONNECTION_TIMEOUT",
            format!("Connection to application service timed out: {reason}"),
        )),
        Err(PingFailure::Unreachable { timed_out: false, reason }) => Err(Error::matrix(
            502,
            "M_CONNECTION_FAILED",
            format!("Connection to application service failed: {reason}"),
        )),
    }
}
