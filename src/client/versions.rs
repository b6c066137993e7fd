//! `/versions` and `/capabilities`: what this server speaks.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::Result;
use crate::http::{Request, Response};
use crate::protocol::room_version;

/// Spec versions whose client API this server follows.
const SPEC_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
    "v1.10", "v1.11", "v1.12",
];

/// `GET /_matrix/client/versions` (no auth).
pub fn versions() -> Response {
    // Simplified Sliding Sync (MSC4186) is served natively: matrix-rust-sdk
    // looks for this flag before it uses it.
    let unstable_features = json!({ "org.matrix.simplified_msc3575": true });
    Response::ok(json!({ "versions": SPEC_VERSIONS, "unstable_features": unstable_features }))
}

/// `GET /_matrix/client/v3/capabilities`.
pub fn capabilities(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    let available: Map<String, Value> = room_version::ALL
        .iter()
        .map(|version| {
            let stability = if version.stable { "stable" } else { "unstable" };
            (version.id.to_string(), json!(stability))
        })
        .collect();
    Ok(Response::ok(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": {
                "default": app.config.default_room_version,
                "available": available,
            },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    })))
}
