//! Checking PDUs that arrive from other servers, and fetching the events a
//! PDU needs before it can be accepted (its auth events and missing prev
//! events).
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu>.

use std::collections::{HashMap, HashSet};

use http_types::Method;
use serde_json::{Map, Value, json};

use super::join::MAX_SEND_JOIN_BYTES;
use super::join_answer::{Piece, Shape, Spool};
use super::{client, keys};
use crate::error::{Error, Result};
use crate::protocol::canonical_json::{self, Strictness};
use crate::protocol::hashes::{self, EventHashError};
use crate::protocol::pdu::{MAX_PDU_BYTES, Pdu};
use crate::protocol::redaction;
use crate::protocol::room_version::{EventIdFormat, RoomVersion};
use crate::remote::Remote;
use crate::rooms::incoming::{self, KnownStates, Outcome};
use crate::storage::{EventKey, StateMap, StoredEvent, now_ms};

/// At most this many events are fetched to fill one gap before giving up
/// (a remote server cannot make us fetch unbounded history).
const MAX_FETCHED_EVENTS: usize = 100;
/// Events are verified this many at a time before yielding to other work.
const VERIFY_BATCH: usize = 50;
/// `get_missing_events` asks for this many at a time.
const MISSING_EVENTS_LIMIT: usize = 20;

/// The server part of a user or event ID.
pub fn server_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(_, server)| server)
}

/// The servers whose signatures an event needs.
fn required_signers(version: &RoomVersion, pdu: &Pdu) -> Vec<String> {
    let mut servers = Vec::new();
    if let Some(server) = server_of(&pdu.sender) {
        servers.push(server.to_string());
    }
    if version.event_id_format == EventIdFormat::V1 {
        if let Some(server) = server_of(&pdu.event_id) {
            if !servers.iter().any(|known| known == server) {
                servers.push(server.to_string());
            }
        }
    }
    if version.restricted_join_rule
        && pdu.kind == "m.room.member"
        && pdu.content.get("membership").and_then(Value::as_str) == Some("join")
    {
        let authoriser = pdu.content.get("join_authorised_via_users_server").and_then(Value::as_str);
        if let Some(server) = authoriser.and_then(server_of) {
            if !servers.iter().any(|known| known == server) {
                servers.push(server.to_string());
            }
        }
    }
    servers
}

/// Checks a PDU's format, size, signatures and content hash; a PDU whose
/// content hash does not match is redacted, as the spec says. Returns the PDU.
pub async fn verify(app: &Remote, version: &RoomVersion, mut json: Map<String, Value>) -> Result<Pdu> {
    let bad = |message: String| Error::matrix(400, "M_BAD_JSON", message);
    let strictness = Strictness::for_room_version(version);
    let size =
        canonical_json::object_to_string(&json, strictness).map_err(|error| bad(error.to_string()))?.len();
    if size > MAX_PDU_BYTES {
        return Err(Error::TooLarge(format!("the PDU is {size} bytes, over {MAX_PDU_BYTES}")));
    }
    // The event ID is ours to compute from v3 on; the sender's for v1/v2.
    if version.event_id_format != EventIdFormat::V1 {
        json.remove("event_id");
    }
    let event_id = hashes::event_id(&json, version).map_err(|error| bad(error.to_string()))?;
    let pdu = Pdu::from_json(version, event_id, json.clone()).map_err(|error| bad(error.to_string()))?;
    for server in required_signers(version, &pdu) {
        verify_signature(app, version, &json, &server, pdu.origin_server_ts).await?;
    }
    match hashes::verify_event_content_hash(&json, version) {
        Ok(()) => Ok(pdu),
        Err(EventHashError::ContentHashMismatch | EventHashError::MissingContentHash) => {
            log::info!("{}: content hash mismatch, keeping the redacted form", pdu.event_id);
            let redacted = redaction::redact(&json, version);
            Pdu::from_json(version, pdu.event_id.clone(), redacted).map_err(|error| bad(error.to_string()))
        }
        Err(error) => Err(bad(error.to_string())),
    }
}

/// Checks that `json` carries a valid signature by `server`.
async fn verify_signature(
    app: &Remote,
    version: &RoomVersion,
    json: &Map<String, Value>,
    server: &str,
    ts: i64,
) -> Result<()> {
    let forged = || Error::Forbidden(format!("the event is not signed by {server}"));
    let key_ids: Vec<String> = json
        .get("signatures")
        .and_then(|signatures| signatures.get(server))
        .and_then(Value::as_object)
        .map(|keys| keys.keys().filter(|key_id| key_id.starts_with("ed25519:")).cloned().collect())
        .unwrap_or_default();
    // Before v5 keys are not held to their validity period.
    let at_ts = if version.enforce_key_validity { ts } else { now_ms().min(ts.max(0)) };
    for key_id in key_ids {
        let Ok(public_key) = keys::verify_key(app, server, &key_id, at_ts).await else { continue };
        if hashes::verify_event_signature(json, version, server, &key_id, &public_key).is_ok() {
            return Ok(());
        }
    }
    Err(forged())
}

/// Fetches one event by ID from `server` and verifies it.
pub async fn fetch_event(app: &Remote, version: &RoomVersion, server: &str, event_id: &str) -> Result<Pdu> {
    let path = format!("/_matrix/federation/v1/event/{}", encode(event_id));
    let (status, answer) = client::request(app, server, Method::Get, &path, None).await?;
    if status != 200 {
        return Err(Error::NotFound(format!("{server} did not give us {event_id} ({status})")));
    }
    let json = answer
        .get("pdus")
        .and_then(Value::as_array)
        .and_then(|pdus| pdus.first())
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| Error::matrix(502, "M_UNKNOWN", format!("{server} sent no PDU for {event_id}")))?;
    let pdu = verify(app, version, json).await?;
    if pdu.event_id != event_id {
        return Err(Error::matrix(
            502,
            "M_UNKNOWN",
            format!("{server} sent {} for {event_id}", pdu.event_id),
        ));
    }
    Ok(pdu)
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Makes sure the auth events of `pdu` are stored (as outliers if new),
/// fetching them from `origin`, recursively, within a budget.
async fn ensure_auth_events(
    app: &Remote,
    version: &RoomVersion,
    origin: &str,
    pdu: &Pdu,
    budget: &mut usize,
) -> Result<()> {
    let mut wanted: Vec<String> = pdu.auth_events.clone();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(event_id) = wanted.pop() {
        if !seen.insert(event_id.clone()) || app.storage().event(&event_id)?.is_some() {
            continue;
        }
        if *budget == 0 {
            return Err(Error::Forbidden("too many missing auth events".into()));
        }
        *budget -= 1;
        let auth_event = fetch_event(app, version, origin, &event_id).await?;
        wanted.extend(auth_event.auth_events.iter().cloned());
        let stream = app.next_stream_id();
        app.storage().store_outlier(&auth_event.event_id, &pdu.room_id, &auth_event.json, stream)?;
    }
    Ok(())
}

/// Whether an event is in the room's DAG (not just an outlier).
fn have_in_timeline(app: &Remote, event_id: &str) -> Result<bool> {
    Ok(app.storage().event(event_id)?.is_some_and(|event| !event.outlier))
}

/// Handles a PDU from `origin` for a room we are in: fills gaps before it
/// (`get_missing_events`, then single events), then runs the auth checks and
/// stores it.
pub async fn receive(app: &Remote, origin: &str, version: &RoomVersion, pdu: Pdu) -> Result<Outcome> {
    if have_in_timeline(app, &pdu.event_id)? {
        return Ok(Outcome::Duplicate);
    }
    let mut budget = MAX_FETCHED_EVENTS;
    let missing: Vec<String> =
        pdu.prev_events.iter().filter(|id| !have_in_timeline(app, id).unwrap_or(false)).cloned().collect();
    if !missing.is_empty() {
        fill_gap(app, origin, version, &pdu, &mut budget).await?;
    }
    // Prev events still missing: take them as outliers with the state the
    // origin says holds after them.
    let mut known = KnownStates::new();
    for prev in &pdu.prev_events {
        if have_in_timeline(app, prev)? {
            continue;
        }
        if app.storage().event(prev)?.is_none() {
            let event = fetch_event(app, version, origin, prev).await?;
            let stream = app.next_stream_id();
            app.storage().store_outlier(prev, &pdu.room_id, &event.json, stream)?;
        }
        let mut state = state_at(app, version, origin, &pdu.room_id, prev).await?;
        if let Some(event) = app.storage().event(prev)? {
            if let Some(state_key) = event.state_key {
                state.insert((event.kind, state_key), event.event_id);
            }
        }
        known.insert(prev.clone(), state);
    }
    ensure_auth_events(app, version, origin, &pdu, &mut budget).await?;
    incoming::accept(app, version, &pdu, &known)
}

/// The state at an event according to `server`: named by event IDs
/// (`/state_ids`), the events this server lacks fetched one by one (at most
/// [`MAX_MISSING_STATE_EVENTS`]), each verified and stored as an outlier.
/// A room's state is mostly its members, whose events a resident already
/// holds, so a gap in a room of 50,000 members costs a few MB of IDs rather
/// than its 30 MB of state. When more are missing, or `server` does not
/// answer `/state_ids`, the whole state is fetched (`/state`).
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1state_idsroomid>.
pub async fn state_at(
    app: &Remote,
    version: &RoomVersion,
    server: &str,
    room_id: &str,
    event_id: &str,
) -> Result<StateMap> {
    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", encode(room_id), encode(event_id));
    let (status, body) =
        client::request_bytes(app, server, Method::Get, &path, None, MAX_STATE_IDS_BYTES).await?;
    let named = (status == 200).then(|| serde_json::from_slice::<StateIds>(&body).ok()).flatten();
    drop(body);
    let Some(named) = named else {
        log::info!("{server} gave no state IDs at {event_id} ({status}); asking for the whole state");
        return whole_state_at(app, version, server, room_id, event_id).await;
    };
    match state_from_ids(app, version, server, room_id, &named).await? {
        Some(state) => Ok(state),
        None => whole_state_at(app, version, server, room_id, event_id).await,
    }
}

/// The largest `/state_ids` answer read: about 150,000 event IDs (a room of
/// 50,000 members names about 100,000, its state and their auth chain).
const MAX_STATE_IDS_BYTES: usize = 8 << 20;
/// At most this many events named by a `/state_ids` answer are fetched one
/// by one; more, and the whole state is fetched instead.
const MAX_MISSING_STATE_EVENTS: usize = 100;
/// Event IDs looked up in one query (then the loop turns).
const STATE_IDS_PER_QUERY: usize = 500;

/// A `/state_ids` answer.
#[derive(serde::Deserialize)]
struct StateIds {
    pdu_ids: Vec<String>,
    auth_chain_ids: Vec<String>,
}

/// The state named by `named`, fetching from `server` the events we lack;
/// `None` when too many are missing to fetch one by one.
async fn state_from_ids(
    app: &Remote,
    version: &RoomVersion,
    server: &str,
    room_id: &str,
    named: &StateIds,
) -> Result<Option<StateMap>> {
    let mut state = StateMap::new();
    let mut missing: Vec<&str> = Vec::new();
    let wanted =
        named.pdu_ids.iter().map(|id| (id, true)).chain(named.auth_chain_ids.iter().map(|id| (id, false)));
    let wanted: Vec<(&String, bool)> = wanted.collect();
    for page in wanted.chunks(STATE_IDS_PER_QUERY) {
        let ids: Vec<&str> = page.iter().map(|(id, _)| id.as_str()).collect();
        let found = app.storage().state_keys_of(&ids)?;
        let found: HashMap<&str, &EventKey> = found.iter().map(|key| (key.event_id.as_str(), key)).collect();
        for (id, in_state) in page {
            match found.get(id.as_str()) {
                Some(key) if *in_state => add_to_state(&mut state, room_id, key),
                Some(_) => {}
                None => missing.push(id.as_str()),
            }
        }
        if missing.len() > MAX_MISSING_STATE_EVENTS {
            log::info!("{server} named over {MAX_MISSING_STATE_EVENTS} state events we lack in {room_id}");
            return Ok(None);
        }
        smol::future::yield_now().await;
    }
    let in_state: HashSet<&str> = named.pdu_ids.iter().map(String::as_str).collect();
    for event_id in missing {
        let pdu = fetch_event(app, version, server, event_id).await?;
        if pdu.room_id != room_id {
            return Err(Error::matrix(
                502,
                "M_UNKNOWN",
                format!("{server} named {event_id} of another room"),
            ));
        }
        let stream = app.next_stream_id();
        app.storage().store_outlier(&pdu.event_id, room_id, &pdu.json, stream)?;
        if in_state.contains(event_id) {
            let key = EventKey {
                event_id: pdu.event_id,
                room_id: pdu.room_id,
                kind: pdu.kind,
                state_key: pdu.state_key,
            };
            add_to_state(&mut state, room_id, &key);
        }
    }
    Ok(Some(state))
}

/// Puts a state event named by a `/state_ids` answer into `state`; an ID of
/// a message or of another room's event names nothing there.
fn add_to_state(state: &mut StateMap, room_id: &str, key: &EventKey) {
    match &key.state_key {
        Some(state_key) if key.room_id == room_id => {
            state.insert((key.kind.clone(), state_key.clone()), key.event_id.clone());
        }
        _ => log::info!("{} is not a state event of {room_id}; left out of its state", key.event_id),
    }
}

/// The state at an event according to `server` (`/state`), with every event
/// verified and stored as an outlier. The answer (30 MB for a room of 50,000
/// members) is spooled to disk and read back a batch of events at a time
/// ([`super::join_answer`]), as a `send_join` answer is: only the state's keys and
/// IDs are held, at most [`MAX_STATE_ENTRIES`] of them.
async fn whole_state_at(
    app: &Remote,
    version: &RoomVersion,
    server: &str,
    room_id: &str,
    event_id: &str,
) -> Result<StateMap> {
    // A few at a time: each may spool up to 256 MiB to disk.
    let _turn = app.whole_states.acquire().await;
    let path = format!("/_matrix/federation/v1/state/{}?event_id={}", encode(room_id), encode(event_id));
    let mut spool = Spool::new(&app.config.data_dir)?;
    let status =
        client::request_to(app, server, Method::Get, &path, None, MAX_SEND_JOIN_BYTES, spool.sink()).await?;
    if status != 200 {
        return Err(Error::matrix(
            502,
            "M_UNKNOWN",
            format!("{server} did not give the state at {event_id} ({status})"),
        ));
    }
    let bad_answer =
        |error: String| Error::matrix(502, "M_UNKNOWN", format!("{server} sent a bad state answer: {error}"));
    let mut pieces = spool.parse(Shape::State)?;
    let mut state = StateMap::new();
    while let Some(piece) = pieces.next().await.map_err(bad_answer)? {
        match piece {
            Piece::AuthChain(events) => {
                store_verified_outliers(app, version, room_id, &events).await?;
            }
            Piece::State(events) => {
                for event in store_verified_outliers(app, version, room_id, &events).await? {
                    if let Some(state_key) = event.state_key {
                        state.insert((event.kind, state_key), event.event_id);
                    }
                }
                if state.len() > MAX_STATE_ENTRIES {
                    return Err(bad_answer(format!("a state of over {MAX_STATE_ENTRIES} events")));
                }
            }
            Piece::Event(_) => {}
        }
    }
    Ok(state)
}

/// Whole states fetched at once at most (the others wait their turn).
pub const MAX_WHOLE_STATES: usize = 2;

/// The most entries a state fetched whole may have: a room of 200,000
/// members (a state this large takes ~40 MB in memory while it is used).
const MAX_STATE_ENTRIES: usize = 200_000;

/// An event as received: a parsed JSON value, or raw JSON text parsed only
/// when its turn comes (so a large answer never becomes one big tree).
pub trait EventSource {
    /// The event as a JSON object, if it is one.
    fn object(&self) -> Option<Map<String, Value>>;
}

impl EventSource for Value {
    fn object(&self) -> Option<Map<String, Value>> {
        self.as_object().cloned()
    }
}

impl EventSource for Box<serde_json::value::RawValue> {
    fn object(&self) -> Option<Map<String, Value>> {
        serde_json::from_str(self.get()).ok()
    }
}

/// Verifies events (in batches, yielding to other work between them) and
/// stores the good ones as outliers; returns them.
pub async fn store_verified_outliers<T: EventSource>(
    app: &Remote,
    version: &RoomVersion,
    room_id: &str,
    events: &[T],
) -> Result<Vec<Pdu>> {
    let mut stored = Vec::with_capacity(events.len());
    for batch in events.chunks(VERIFY_BATCH) {
        let mut verified = Vec::with_capacity(batch.len());
        for json in batch {
            let Some(json) = json.object() else { continue };
            match verify(app, version, json).await {
                Ok(pdu) if pdu.room_id == room_id => verified.push(pdu),
                Ok(pdu) => log::info!("{} is from another room; dropped", pdu.event_id),
                Err(error) => log::info!("a state or auth event failed its checks: {error}"),
            }
        }
        // One transaction per batch, then let other requests run.
        let rows: Vec<(&str, &Map<String, Value>, i64)> =
            verified.iter().map(|pdu| (pdu.event_id.as_str(), &pdu.json, app.next_stream_id())).collect();
        app.storage().store_outliers(room_id, &rows)?;
        stored.extend(verified);
        smol::future::yield_now().await;
    }
    Ok(stored)
}

/// Asks `origin` for the events between our extremities and `pdu`, and
/// accepts them oldest first.
async fn fill_gap(
    app: &Remote,
    origin: &str,
    version: &RoomVersion,
    pdu: &Pdu,
    budget: &mut usize,
) -> Result<()> {
    let earliest: Vec<String> =
        app.storage().forward_extremities(&pdu.room_id)?.into_iter().map(|(id, _)| id).collect();
    let min_depth =
        app.storage().forward_extremities(&pdu.room_id)?.iter().map(|(_, depth)| *depth).min().unwrap_or(0);
    let body = json!({
        "earliest_events": earliest,
        "latest_events": [pdu.event_id],
        "limit": MISSING_EVENTS_LIMIT.min(*budget),
        "min_depth": min_depth,
    });
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", encode(&pdu.room_id));
    let (status, answer) = client::request(app, origin, Method::Post, &path, Some(body)).await?;
    if status != 200 {
        log::info!("get_missing_events from {origin} answered {status}");
        return Ok(());
    }
    let mut events = Vec::new();
    for json in answer.get("events").and_then(Value::as_array).cloned().unwrap_or_default() {
        let Value::Object(json) = json else { continue };
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        match verify(app, version, json).await {
            Ok(event) if event.room_id == pdu.room_id => events.push(event),
            Ok(_) => {}
            Err(error) => log::info!("a missing event from {origin} failed its checks: {error}"),
        }
    }
    events.sort_by_key(|event| event.depth);
    for event in events {
        if have_in_timeline(app, &event.event_id)? {
            continue;
        }
        if event.prev_events.iter().any(|prev| !have_in_timeline(app, prev).unwrap_or(false)) {
            log::info!("{} still has a gap before it; skipped", event.event_id);
            continue;
        }
        ensure_auth_events(app, version, origin, &event, budget).await?;
        let outcome = incoming::accept(app, version, &event, &KnownStates::new())?;
        log::debug!("filled gap with {}: {outcome:?}", event.event_id);
    }
    Ok(())
}

/// An event as it travels between servers.
pub fn pdu_json(event: &StoredEvent) -> Value {
    Value::Object(event.json.map().clone())
}

/// The IDs in an event's `auth_events` (either format).
pub fn auth_events_of(event: &StoredEvent) -> Vec<String> {
    id_list(event.json.get("auth_events"))
}

/// The IDs in an event's `prev_events` (either format).
pub fn prev_events_of(event: &StoredEvent) -> Vec<String> {
    id_list(event.json.get("prev_events"))
}

fn id_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| match item {
                    Value::String(id) => Some(id.clone()),
                    Value::Array(pair) => pair.first().and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
