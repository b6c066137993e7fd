//! `POST /rooms/{roomId}/upgrade`: the handler; the work is in `rooms::upgrade`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidupgrade>.

use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::room_version::RoomVersion;
use crate::request::{Request, Response};
use crate::rooms::upgrade::{self, Upgrade};

#[derive(Deserialize)]
struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

/// `POST /rooms/{roomId}/upgrade`.
pub fn upgrade(app: &App, request: &Request, room_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body: UpgradeBody = request.json()?;
    let new_version = RoomVersion::from_id(&body.new_version)
        .ok_or(Error::UnsupportedRoomVersion(body.new_version.clone()))?;
    let request = Upgrade { new_version, additional_creators: &body.additional_creators };
    let replacement = upgrade::upgrade(app, room_id, &owner.user_id, &request)?;
    Ok(Response::ok(json!({ "replacement_room": replacement })))
}
