//! `POST /user_directory/search`: users the searcher shares a room with, or
//! who are in a public room, matched on user ID and display name.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3user_directorysearch>:
//! the server must at a minimum consider users who share a room with the
//! searcher and users joined to rooms with a `public` join rule or
//! `world_readable` history. That is also exactly Synapse's default scope
//! (`user_directory.search_all_users` off), whether or not the room is
//! published in the room directory. Both are read from the current state
//! at each search, so a user whose only such room stops being public (or
//! who leaves it) drops out at once.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};

/// Results per search when the client asks for none (the spec's default).
const DEFAULT_LIMIT: usize = 10;
/// At most this many results per search.
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

    let candidates = app.storage().user_directory_candidates(&owner.user_id)?;
    let mut matches: Vec<Candidate> = Vec::new();
    for (user_id, display_name, avatar_url) in candidates {
        let name_matches = display_name.as_ref().is_some_and(|name| name.to_lowercase().contains(&term));
        if user_id.to_lowercase().contains(&term) || name_matches {
            matches.push(Candidate { user_id, display_name, avatar_url });
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
