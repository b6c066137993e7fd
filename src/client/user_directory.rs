//! `POST /user_directory/search`: users the searcher shares a room with, or
//! who are in a room anyone may join, matched on user ID and display name.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#user-directory>.
//! Which users are searchable follows Synapse's default (`search_all_users`
//! off): those sharing a room with the searcher and those in public rooms.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::rooms;

/// Results per search when the client asks for none (the spec's default).
const DEFAULT_LIMIT: usize = 10;
/// At most this many results per search: each one costs a profile read.
const MAX_LIMIT: usize = 100;

/// One searchable user.
struct Candidate {
    user_id: String,
    display_name: Option<String>,
    avatar_url: Option<String>,
}

/// `POST /user_directory/search`.
pub fn search(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let term = match body.get("search_term") {
        Some(Value::String(term)) => term.trim().to_lowercase(),
        Some(_) => return Err(Error::BadJson("`search_term` must be a string".into())),
        None => return Err(Error::MissingParam("`search_term` is required".into())),
    };
    let limit = match body.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(limit) => {
            let limit =
                limit.as_u64().ok_or_else(|| Error::BadJson("`limit` must be a positive integer".into()))?;
            (limit as usize).min(MAX_LIMIT)
        }
    };

    let mut rooms_to_search: BTreeSet<String> =
        app.storage().rooms_with_membership(&owner.user_id, "join")?.into_iter().collect();
    rooms_to_search.extend(app.storage().rooms_with_public_join_rule()?);
    let mut users = BTreeSet::new();
    for room_id in &rooms_to_search {
        for member in app.storage().members_with(room_id, "join")? {
            users.insert((member, room_id.clone()));
        }
    }

    let mut matches: Vec<Candidate> = Vec::new();
    let mut last_user = None;
    for (user_id, room_id) in users {
        // One entry per user: the set is ordered by user, so repeats are adjacent.
        if last_user.as_ref() == Some(&user_id) {
            continue;
        }
        last_user = Some(user_id.clone());
        let Some(candidate) = candidate(app, &user_id, &room_id)? else { continue };
        let name_matches =
            candidate.display_name.as_ref().is_some_and(|name| name.to_lowercase().contains(&term));
        if user_id.to_lowercase().contains(&term) || name_matches {
            matches.push(candidate);
        }
    }
    // Prefix matches (of the localpart or the name) first, as Synapse ranks them.
    matches.sort_by_key(|candidate| {
        let localpart = candidate.user_id.trim_start_matches('@').to_lowercase();
        let name = candidate.display_name.as_deref().unwrap_or_default().to_lowercase();
        (!(localpart.starts_with(&term) || name.starts_with(&term)), candidate.user_id.clone())
    });
    let limited = matches.len() > limit;
    let results: Vec<Value> = matches
        .into_iter()
        .take(limit)
        .map(|candidate| {
            let mut result = json!({ "user_id": candidate.user_id });
            if let Some(name) = candidate.display_name {
                result["display_name"] = json!(name);
            }
            if let Some(url) = candidate.avatar_url {
                result["avatar_url"] = json!(url);
            }
            result
        })
        .collect();
    Ok(Response::ok(json!({ "results": results, "limited": limited })))
}

/// A user's profile as the directory shows it: the global profile of a local
/// user (none for deactivated accounts), the member event of a remote one.
fn candidate(app: &App, user_id: &str, room_id: &str) -> Result<Option<Candidate>> {
    if app.is_local_user(user_id) {
        let Some(user) = app.storage().user(user_id)? else { return Ok(None) };
        if user.deactivated {
            return Ok(None);
        }
        return Ok(Some(Candidate {
            user_id: user_id.to_owned(),
            display_name: user.displayname,
            avatar_url: user.avatar_url,
        }));
    }
    let content = rooms::current_state_content(app, room_id, "m.room.member", user_id)?.unwrap_or_default();
    let text = |key: &str| content.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok(Some(Candidate {
        user_id: user_id.to_owned(),
        display_name: text("displayname"),
        avatar_url: text("avatar_url"),
    }))
}
