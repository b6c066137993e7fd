//! Applying a room's `m.room.server_acl` to inbound and outbound federation.

use crate::app::App;
use crate::protocol::server_acl;
use crate::rooms;

/// Whether `server_name` may take part in `room_id` now (no ACL: everyone).
pub fn server_allowed(app: &App, room_id: &str, server_name: &str) -> bool {
    match rooms::current_state_content(app, room_id, "m.room.server_acl", "") {
        Ok(Some(content)) => server_acl::allowed(&content, server_name),
        Ok(None) => true,
        Err(error) => {
            log::warn!("cannot read the server ACL of {room_id}: {error}");
            false
        }
    }
}
