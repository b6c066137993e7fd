//! `GET /voip/turnServer`: credentials for the TURN server the operator runs
//! beside the node (coturn), so that calls get through NAT.
//!
//! Two kinds, as Synapse offers them: with `turn_shared_secret`, short-lived
//! credentials in the TURN REST scheme that coturn's `use-auth-secret`
//! checks (username `EXPIRY:USER_ID`, password the base64 HMAC-SHA1 of the
//! username under the secret); with `turn_username`/`turn_password`, those
//! fixed values. Without `turn_uris` the answer is `{}`, which clients read
//! as "no TURN server".
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3voipturnserver>.

use base64::Engine;
use serde_json::json;

use crate::app::App;
use crate::config::Turn;
use crate::error::Result;
use crate::request::{Request, Response};
use crate::storage::now_ms;

/// `GET /voip/turnServer`.
pub fn turn_server(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let turn = app.config.turn();
    let answer = match credentials(&turn, &owner.user_id, now_ms()) {
        Some(credentials) => json!({
            "username": credentials.username,
            "password": credentials.password,
            "uris": turn.uris,
            "ttl": credentials.ttl_seconds,
        }),
        None => json!({}),
    };
    Ok(Response::ok(answer))
}

/// What a client gets to authenticate with the TURN server.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// How long the credentials stay valid, in seconds.
    pub ttl_seconds: u64,
}

/// The credentials for `user_id` at `now_ms`, or `None` if no TURN server is
/// configured.
pub fn credentials(turn: &Turn, user_id: &str, now_ms: i64) -> Option<Credentials> {
    if turn.uris.is_empty() {
        return None;
    }
    let ttl_seconds = turn.user_lifetime_ms / 1000;
    if let Some(secret) = &turn.shared_secret {
        let expiry_seconds = (now_ms.max(0) as u64 + turn.user_lifetime_ms) / 1000;
        let username = format!("{expiry_seconds}:{user_id}");
        let password = rest_password(secret, &username);
        return Some(Credentials { username, password, ttl_seconds });
    }
    match (&turn.username, &turn.password) {
        (Some(username), Some(password)) => {
            Some(Credentials { username: username.clone(), password: password.clone(), ttl_seconds })
        }
        _ => None,
    }
}

/// The TURN REST scheme's password: base64 (padded, as coturn compares it)
/// of HMAC-SHA1 over the username, keyed by the shared secret.
fn rest_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(secret: Option<&str>) -> Turn {
        Turn {
            uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            shared_secret: secret.map(String::from),
            user_lifetime_ms: 3_600_000,
            ..Turn::default()
        }
    }

    #[test]
    fn shared_secret_credentials_follow_the_rest_scheme() {
        // Expected password computed independently (Python's hmac + base64).
        let credentials = credentials(&turn(Some("north wind")), "@alice:example.org", 1_699_996_400_000);
        assert_eq!(
            credentials,
            Some(Credentials {
                username: "1700000000:@alice:example.org".into(),
                password: "ONq2C0i31ah6iQriFWa9RN3SqsQ=".into(),
                ttl_seconds: 3600,
            })
        );
    }

    #[test]
    fn fixed_credentials_and_no_server() {
        let fixed = Turn { username: Some("u".into()), password: Some("p".into()), ..turn(None) };
        let answer = credentials(&fixed, "@a:x", 0).unwrap();
        assert_eq!((answer.username.as_str(), answer.password.as_str()), ("u", "p"));
        assert_eq!(credentials(&turn(None), "@a:x", 0), None);
        assert_eq!(credentials(&Turn { uris: vec![], ..turn(Some("s")) }, "@a:x", 0), None);
    }
}
