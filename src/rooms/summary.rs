//! Room summaries: what the published room directory and the space hierarchy
//! say about a room (name, topic, alias, member count, join rule, ...), read
//! from its current state, and whether a user may see that summary.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3publicrooms>
//! (the `PublishedRoomsChunk` fields) and
//! <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy>.

use serde_json::{Map, Value, json};

use crate::error::Result;
use crate::rooms;
use crate::rooms::Engine;

/// The public facts about a room, from its current state.
#[derive(Clone, Debug)]
pub struct RoomSummary {
    pub room_id: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub num_joined_members: usize,
    pub world_readable: bool,
    pub guest_can_join: bool,
    /// The join rule (`invite` when the room has none, as the auth rules assume).
    pub join_rule: String,
    /// `type` of `m.room.create` (`m.space` for spaces).
    pub room_type: Option<String>,
    pub room_version: String,
    pub encryption: Option<String>,
    /// The rooms named by a `restricted`/`knock_restricted` join rule.
    pub allowed_room_ids: Vec<String>,
}

fn string_at(content: &Option<Value>, key: &str) -> Option<String> {
    content.as_ref()?.get(key)?.as_str().map(str::to_owned)
}

/// The summary of a room we hold, or `None` for a room we do not know.
pub fn summary(app: &Engine, room_id: &str) -> Result<Option<RoomSummary>> {
    let Some(room_version) = app.storage().room_version(room_id)? else { return Ok(None) };
    let content = |kind: &str| rooms::current_state_content(app, room_id, kind, "");
    let join_rules = content("m.room.join_rules")?;
    let allowed_room_ids = join_rules
        .as_ref()
        .and_then(|rules| rules.get("allow"))
        .and_then(Value::as_array)
        .map(|allow| {
            allow
                .iter()
                .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                .filter_map(|entry| entry.get("room_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Bound first: a storage borrow inside the struct literal would live to its end.
    let num_joined_members = app.storage().member_count(room_id, "join")? as usize;
    Ok(Some(RoomSummary {
        room_id: room_id.to_owned(),
        name: string_at(&content("m.room.name")?, "name").filter(|name| !name.is_empty()),
        topic: string_at(&content("m.room.topic")?, "topic").filter(|topic| !topic.is_empty()),
        canonical_alias: string_at(&content("m.room.canonical_alias")?, "alias"),
        avatar_url: string_at(&content("m.room.avatar")?, "url").filter(|url| !url.is_empty()),
        num_joined_members,
        world_readable: string_at(&content("m.room.history_visibility")?, "history_visibility").as_deref()
            == Some("world_readable"),
        guest_can_join: string_at(&content("m.room.guest_access")?, "guest_access").as_deref()
            == Some("can_join"),
        join_rule: string_at(&join_rules, "join_rule").unwrap_or_else(|| "invite".into()),
        room_type: string_at(&content("m.room.create")?, "type"),
        room_version,
        encryption: string_at(&content("m.room.encryption")?, "algorithm"),
        allowed_room_ids,
    }))
}

impl RoomSummary {
    /// The `PublishedRoomsChunk` JSON (absent optional fields are omitted).
    pub fn directory_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("room_id".into(), json!(self.room_id));
        out.insert("num_joined_members".into(), json!(self.num_joined_members));
        out.insert("world_readable".into(), json!(self.world_readable));
        out.insert("guest_can_join".into(), json!(self.guest_can_join));
        out.insert("join_rule".into(), json!(self.join_rule));
        let optional = [
            ("name", &self.name),
            ("topic", &self.topic),
            ("canonical_alias", &self.canonical_alias),
            ("avatar_url", &self.avatar_url),
            ("room_type", &self.room_type),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                out.insert(key.into(), json!(value));
            }
        }
        out
    }

    /// The `RoomSummary` JSON of the space hierarchy: the directory fields plus
    /// room version, encryption and the restricted join rule's rooms.
    pub fn hierarchy_json(&self) -> Map<String, Value> {
        let mut out = self.directory_json();
        out.insert("room_version".into(), json!(self.room_version));
        if let Some(encryption) = &self.encryption {
            out.insert("encryption".into(), json!(encryption));
        }
        if !self.allowed_room_ids.is_empty() {
            out.insert("allowed_room_ids".into(), json!(self.allowed_room_ids));
        }
        out
    }

    /// Whether the summary matches a directory search term: a case-insensitive
    /// substring of the name, topic or canonical alias (Synapse also searches
    /// these three).
    pub fn matches(&self, term: &str) -> bool {
        let term = term.to_lowercase();
        [&self.name, &self.topic, &self.canonical_alias]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(&term))
    }
}

/// Whether `user_id` may see a room's summary in the space hierarchy: they are
/// joined or invited, the room is world readable, its join rule lets anyone
/// join or knock, or it is restricted to a room they are joined to.
/// Spec: the `rooms` list of `GET /rooms/{roomId}/hierarchy`.
pub fn may_preview(app: &Engine, user_id: &str, summary: &RoomSummary) -> Result<bool> {
    let membership = app.storage().membership(&summary.room_id, user_id)?;
    if matches!(membership.as_deref(), Some("join" | "invite")) || summary.world_readable {
        return Ok(true);
    }
    if membership.as_deref() == Some("ban") {
        return Ok(false);
    }
    Ok(match summary.join_rule.as_str() {
        "public" | "knock" | "knock_restricted" => true,
        "restricted" => summary.allowed_room_ids.iter().any(|allowed| {
            app.storage().membership(allowed, user_id).ok().flatten().as_deref() == Some("join")
        }),
        _ => false,
    })
}
