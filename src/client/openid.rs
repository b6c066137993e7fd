//! `POST /_matrix/client/v3/user/{userId}/openid/request_token`: a token a
//! third party can trade for the user's ID at our federation
//! `/openid/userinfo` (`rooms/openid.rs` keeps them).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3useruseridopenidrequest_token>.

use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};
use crate::rooms::openid::OPENID_TOKEN_LIFETIME_MS;

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`.
pub fn request_token(app: &App, request: &Request, user_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only request tokens for yourself".into()));
    }
    let token = app.openid_tokens.issue(&owner.user_id, crate::storage::now_ms());
    Ok(Response::ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.config.server_name,
        "expires_in": OPENID_TOKEN_LIFETIME_MS / 1000,
    })))
}
