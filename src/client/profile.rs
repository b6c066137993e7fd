//! `/profile/{userId}`: display names and avatars of local users.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#profiles>.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::UserId;
use crate::request::{Request, Response};
use crate::rooms::{self, Draft};

/// Spec-less but Synapse's: display names are capped at 256 characters.
const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Avatar URLs are `mxc://` URIs; this caps pathological ones.
const MAX_AVATAR_URL_BYTES: usize = 1000;

/// A local user's profile: the fields that are set, none of them present
/// when unset.
///
/// A profile with no field set is 404 `M_NOT_FOUND`, as Synapse answers
/// (`ProfileHandler.get_profile`: "Profile was not found"). The spec allows
/// either that or an empty object here (`GET /profile/{userId}`: fields are
/// "not present" when unset, and 404 is "no profile information for this
/// user"), so Synapse decides.
fn profile_of(app: &App, user_id: &str) -> Result<Map<String, Value>> {
    let not_found = || Error::NotFound("profile not found".into());
    let user = app
        .storage()
        .user(user_id)?
        .filter(|user| !user.deactivated || user.displayname.is_some())
        .ok_or_else(not_found)?;
    let mut profile = Map::new();
    if let Some(displayname) = user.displayname {
        profile.insert("displayname".into(), json!(displayname));
    }
    if let Some(avatar_url) = user.avatar_url {
        profile.insert("avatar_url".into(), json!(avatar_url));
    }
    if profile.is_empty() {
        return Err(not_found());
    }
    Ok(profile)
}

/// A local profile from the database, a remote one from its server.
async fn any_profile(app: &App, user_id: &str, field: Option<&str>) -> Result<Map<String, Value>> {
    // Checked before anything else: the server a malformed ID names is never asked.
    UserId::parse(user_id).map_err(|error| Error::InvalidParam(format!("{user_id}: {error}")))?;
    if app.is_local_user(user_id) {
        return profile_of(app, user_id);
    }
    match crate::remote::queries::remote_profile(app, user_id, field).await? {
        Value::Object(profile) => Ok(profile),
        _ => Err(Error::NotFound("profile not found".into())),
    }
}

/// `GET /profile/{userId}`.
pub async fn get(app: &App, user_id: &str) -> Result<Response> {
    Ok(Response::ok(Value::Object(any_profile(app, user_id, None).await?)))
}

/// `GET /profile/{userId}/{displayname|avatar_url}`.
///
/// An unset field is 404 `M_NOT_FOUND`, as the spec says outright ("There
/// is no profile field with this key for this user"), where Synapse answers
/// 200 with the field `null`: the spec is not loose here, so it decides. A
/// `null` from a remote server counts as unset.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3profileuseridkeyname>.
pub async fn get_field(app: &App, user_id: &str, field: &str) -> Result<Response> {
    if field != "displayname" && field != "avatar_url" {
        return Err(Error::Unrecognized { method_not_allowed: false });
    }
    let profile = any_profile(app, user_id, Some(field)).await?;
    let value = profile
        .get(field)
        .filter(|value| !value.is_null())
        .ok_or_else(|| Error::NotFound(format!("no {field} is set")))?;
    Ok(Response::ok(json!({ field: value })))
}

/// A profile change shows in every joined room as a new member event, as
/// clients expect (and Synapse does).
fn propagate_to_rooms(app: &App, user_id: &str, field: &str, value: Option<&str>) {
    let rooms = app.storage().rooms_with_membership(user_id, "join").unwrap_or_default();
    for room_id in rooms {
        let current = rooms::current_state_content(app, &room_id, "m.room.member", user_id).ok().flatten();
        let mut content = current.and_then(|content| content.as_object().cloned()).unwrap_or_default();
        match value {
            Some(value) => content.insert(field.to_string(), json!(value)),
            None => content.remove(field),
        };
        content.insert("membership".into(), json!("join"));
        content.remove("reason");
        let draft = Draft::state("m.room.member", user_id, Value::Object(content));
        if let Err(error) = rooms::send(app, &room_id, user_id, draft, None) {
            log::info!("profile change of {user_id} not shown in {room_id}: {error}");
        }
    }
}

/// `PUT /profile/{userId}/{displayname|avatar_url}`.
pub fn set_field(app: &App, request: &Request, user_id: &str, field: &str) -> Result<Response> {
    if field != "displayname" && field != "avatar_url" {
        return Err(Error::Unrecognized { method_not_allowed: false });
    }
    let owner = app.authenticate(request)?;
    if owner.user_id != user_id {
        return Err(Error::Forbidden("you can only change your own profile".into()));
    }
    let body = request.json_object()?;
    // An empty string unsets the field, as in Synapse (`set_displayname`,
    // `set_avatar_url`), so that it reads back as unset rather than as "".
    let value = match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(text.as_str()),
        Some(_) => return Err(Error::BadJson(format!("`{field}` must be a string"))),
    };
    match field {
        "displayname" => {
            if value.is_some_and(|name| name.chars().count() > MAX_DISPLAYNAME_CHARS) {
                return Err(Error::BadJson("the display name is too long".into()));
            }
            app.storage().set_displayname(user_id, value)?;
        }
        _ => {
            if value.is_some_and(|url| url.len() > MAX_AVATAR_URL_BYTES) {
                return Err(Error::BadJson("the avatar URL is too long".into()));
            }
            app.storage().set_avatar_url(user_id, value)?;
        }
    }
    propagate_to_rooms(app, user_id, field, value);
    Ok(Response::ok(json!({})))
}
