//! The published room directory (`/publicRooms`), which clients and other
//! servers both read: the page a request asks for, its order and its paging
//! tokens.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#published-room-directory>
//! and <https://spec.matrix.org/latest/server-server-api/#public-room-directory>.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::protocol::identifiers::ServerName;
use crate::rooms::Engine;
use crate::rooms::summary::{self, RoomSummary};

/// At most this many rooms in one `/publicRooms` page (and the page size when
/// the client gives none): every listed room costs a few state reads.
const MAX_PUBLIC_ROOMS_PAGE: usize = 500;

/// What `/publicRooms` was asked for.
pub struct PublicRoomsQuery {
    limit: usize,
    since: Option<String>,
    search_term: Option<String>,
    /// `None`: every type; `Some`: these types, `None` inside standing for rooms without one.
    room_types: Option<Vec<Option<String>>>,
    third_party_instance_id: Option<String>,
}

impl PublicRoomsQuery {
    /// The page `GET /publicRooms` asks for with its `limit` and `since` parameters.
    pub fn from_params(limit: Option<&str>, since: Option<&str>) -> Result<PublicRoomsQuery> {
        let limit = match limit {
            Some(limit) => {
                Some(limit.parse().map_err(|_| Error::InvalidParam("`limit` must be an integer".into()))?)
            }
            None => None,
        };
        Ok(PublicRoomsQuery {
            limit: page_size(limit),
            since: since.map(str::to_owned),
            search_term: None,
            room_types: None,
            third_party_instance_id: None,
        })
    }

    /// The page a `POST /publicRooms` body asks for (clients, and other
    /// servers through federation).
    pub fn from_body(body: &Map<String, Value>) -> Result<PublicRoomsQuery> {
        let limit = match body.get("limit") {
            None | Some(Value::Null) => None,
            Some(limit) => {
                Some(limit.as_i64().ok_or_else(|| Error::BadJson("`limit` must be an integer".into()))?)
            }
        };
        let since = match body.get("since") {
            None | Some(Value::Null) => None,
            Some(Value::String(since)) => Some(since.clone()),
            Some(_) => return Err(Error::BadJson("`since` must be a string".into())),
        };
        let filter = body.get("filter").cloned().unwrap_or(Value::Null);
        let search_term = filter
            .get("generic_search_term")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(str::to_owned);
        let room_types = match filter.get("room_types") {
            None | Some(Value::Null) => None,
            Some(Value::Array(types)) => Some(
                types
                    .iter()
                    .map(|kind| match kind {
                        Value::Null => Ok(None),
                        Value::String(kind) => Ok(Some(kind.clone())),
                        _ => Err(Error::BadJson("`room_types` holds strings or null".into())),
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(_) => return Err(Error::BadJson("`room_types` must be an array".into())),
        };
        let third_party_instance_id =
            body.get("third_party_instance_id").and_then(Value::as_str).map(str::to_owned);
        Ok(PublicRoomsQuery {
            limit: page_size(limit),
            since,
            search_term,
            room_types,
            third_party_instance_id,
        })
    }
}

fn page_size(limit: Option<i64>) -> usize {
    match limit {
        Some(limit) if limit > 0 => (limit as usize).min(MAX_PUBLIC_ROOMS_PAGE),
        _ => MAX_PUBLIC_ROOMS_PAGE,
    }
}

/// Checks a `server` parameter naming whose directory to list: ours, or
/// none. Clients asking for another server's are sent there before this
/// (`remote::queries::remote_public_rooms`); a server asking us for a
/// third server's directory is refused, as we relay no one's.
pub fn check_directory_server(app: &Engine, server: Option<&str>) -> Result<()> {
    let Some(server) = server else { return Ok(()) };
    ServerName::parse(server).map_err(|error| Error::InvalidParam(format!("server {server}: {error}")))?;
    if server == app.config.server_name {
        return Ok(());
    }
    Err(Error::InvalidParam(format!("this server lists only its own room directory, not {server}'s")))
}

/// The directory page `query` asks for, as `/publicRooms` answers it.
pub fn public_rooms(app: &Engine, query: &PublicRoomsQuery) -> Result<Value> {
    let mut listed = Vec::new();
    // Application-service networks: we host none, so a named one lists nothing.
    if query.third_party_instance_id.is_none() {
        let published = app.storage().public_rooms()?;
        for room_id in published {
            let Some(summary) = summary::summary(app, &room_id)? else { continue };
            if is_listable(&summary) && matches_query(&summary, query) {
                listed.push(summary);
            }
        }
    }
    // Largest rooms first, then by room ID: a stable order for paging.
    let mut keys: Vec<PageKey> = listed.iter().map(PageKey::of).collect();
    keys.sort();
    listed.sort_by_key(PageKey::of);
    let page = Page::select(&keys, query.since.as_deref(), query.limit)?;
    let chunk: Vec<Value> =
        listed[page.start..page.end].iter().map(|room| Value::Object(room.directory_json())).collect();
    let mut answer = json!({ "chunk": chunk, "total_room_count_estimate": listed.len() });
    if let Some(next) = page.next_batch {
        answer["next_batch"] = json!(next);
    }
    if let Some(prev) = page.prev_batch {
        answer["prev_batch"] = json!(prev);
    }
    Ok(answer)
}

/// Synapse lists a published room only while someone is joined and it can be
/// joined, knocked on, or read by anyone.
fn is_listable(summary: &RoomSummary) -> bool {
    summary.num_joined_members > 0
        && (matches!(summary.join_rule.as_str(), "public" | "knock" | "knock_restricted")
            || summary.world_readable)
}

fn matches_query(summary: &RoomSummary, query: &PublicRoomsQuery) -> bool {
    if let Some(types) = &query.room_types {
        if !types.contains(&summary.room_type) {
            return false;
        }
    }
    query.search_term.as_deref().is_none_or(|term| summary.matches(term))
}

/// A room's place in the directory order: most joined members first, then room ID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PageKey {
    members: std::cmp::Reverse<usize>,
    room_id: String,
}

impl PageKey {
    fn of(summary: &RoomSummary) -> PageKey {
        PageKey { members: std::cmp::Reverse(summary.num_joined_members), room_id: summary.room_id.clone() }
    }

    /// `n<members>_<room>` pages forward from after this key, `p<members>_<room>`
    /// backward from before it. Keys, not offsets, so that a room joining or
    /// leaving the directory between two requests shifts no other room.
    fn token(&self, forward: bool) -> String {
        format!("{}{}_{}", if forward { 'n' } else { 'p' }, self.members.0, self.room_id)
    }

    fn parse_token(token: &str) -> Option<(bool, PageKey)> {
        let forward = match token.chars().next()? {
            'n' => true,
            'p' => false,
            _ => return None,
        };
        let (members, room_id) = token[1..].split_once('_')?;
        Some((
            forward,
            PageKey { members: std::cmp::Reverse(members.parse().ok()?), room_id: room_id.to_owned() },
        ))
    }
}

/// One page of a sorted list: `start..end` and the tokens around it.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    start: usize,
    end: usize,
    next_batch: Option<String>,
    prev_batch: Option<String>,
}

impl Page {
    fn select(keys: &[PageKey], since: Option<&str>, limit: usize) -> Result<Page> {
        let (start, end) = match since {
            None => (0, limit.min(keys.len())),
            Some(token) => {
                let (forward, key) = PageKey::parse_token(token)
                    .ok_or_else(|| Error::InvalidParam("unknown pagination token".into()))?;
                if forward {
                    let start = keys.partition_point(|other| *other <= key);
                    (start, (start + limit).min(keys.len()))
                } else {
                    let end = keys.partition_point(|other| *other < key);
                    (end.saturating_sub(limit), end)
                }
            }
        };
        Ok(Page {
            start,
            end,
            next_batch: (end < keys.len() && start < end).then(|| keys[end - 1].token(true)),
            prev_batch: (start > 0 && start < keys.len()).then(|| keys[start].token(false)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rooms: &[(usize, &str)]) -> Vec<PageKey> {
        let mut keys: Vec<PageKey> = rooms
            .iter()
            .map(|(members, room)| PageKey {
                members: std::cmp::Reverse(*members),
                room_id: room.to_string(),
            })
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn forward_paging_visits_each_room_once_and_back_again() {
        let keys = keys(&[(1, "!a"), (5, "!b"), (5, "!c"), (2, "!d"), (1, "!e")]);
        let mut seen = Vec::new();
        let mut since = None;
        let mut pages = Vec::new();
        loop {
            let page = Page::select(&keys, since.as_deref(), 2).unwrap();
            seen.extend(keys[page.start..page.end].iter().map(|key| key.room_id.clone()));
            pages.push((page.start, page.end, page.prev_batch.clone()));
            match page.next_batch {
                Some(next) => since = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["!b", "!c", "!d", "!a", "!e"]);
        // The last page's prev_batch leads back to the page before it.
        let (_, _, prev) = pages.last().unwrap().clone();
        let back = Page::select(&keys, prev.as_deref(), 2).unwrap();
        assert_eq!((back.start, back.end), (2, 4));
        assert_eq!(Page::select(&keys, None, 2).unwrap().prev_batch, None);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let keys = keys(&[(1, "!a")]);
        for token in ["", "x1_!a", "nfoo_!a", "n1"] {
            assert!(Page::select(&keys, Some(token), 2).is_err(), "{token}");
        }
    }

    #[test]
    fn room_ids_with_underscores_survive_the_token() {
        let key = PageKey { members: std::cmp::Reverse(3), room_id: "!a_b:x_y".into() };
        assert_eq!(PageKey::parse_token(&key.token(true)), Some((true, key)));
    }
}
