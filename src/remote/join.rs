//! Our users joining, leaving and inviting across servers: the outbound
//! halves of the membership handshakes.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#joining-rooms>,
//! <https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room>,
//! <https://spec.matrix.org/latest/server-server-api/#leaving-rooms-rejecting-invites>.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use http_types::Method;
use serde_json::{Map, Value, json};

use super::client;
use super::join_answer::{Piece, Shape, Spool};
use super::pdus::pdu_json;
use super::pdus::{self, encode, server_of};
use crate::error::{Error, Result};
use crate::protocol::auth;
use crate::protocol::pdu::Pdu;
use crate::protocol::room_version::{self, EventIdFormat, RoomVersion};
use crate::remote::Remote;
use crate::rooms::{self, GroupState, LocalSignatures, StateLookup};
use crate::storage::{CurrentUpdate, NewEvent, StateAfter, StateMap, now_ms};

/// The `ver` parameters telling a server which room versions we speak.
fn supported_versions_query() -> String {
    room_version::ALL.iter().map(|version| format!("ver={}", version.id)).collect::<Vec<_>>().join("&")
}

/// Asks `server` for a membership template and fills it in for `user_id`.
async fn make_membership(
    app: &Remote,
    server: &str,
    room_id: &str,
    user_id: &str,
    membership: &str,
    extra: &Map<String, Value>,
) -> Result<(RoomVersion, Pdu)> {
    let path = format!(
        "/_matrix/federation/v1/make_{membership}/{}/{}?{}",
        encode(room_id),
        encode(user_id),
        supported_versions_query()
    );
    let (status, answer) = client::request(app, server, Method::Get, &path, None).await?;
    if status != 200 {
        let message = reason_given(&answer);
        let errcode = answer.get("errcode").and_then(Value::as_str).unwrap_or("M_UNKNOWN");
        return Err(Error::matrix(
            if status == 403 { 403 } else { 502 },
            leak(errcode),
            format!("{server}: {message}"),
        ));
    }
    let version_id = answer.get("room_version").and_then(Value::as_str).unwrap_or("1");
    let version = room_version::RoomVersion::from_id(version_id)
        .ok_or_else(|| Error::UnsupportedRoomVersion(version_id.to_string()))?;
    let Some(Value::Object(mut event)) = answer.get("event").cloned() else {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} sent no event template")));
    };
    let valid = event.get("type").and_then(Value::as_str) == Some("m.room.member")
        && event.get("state_key").and_then(Value::as_str) == Some(user_id)
        && event.get("sender").and_then(Value::as_str) == Some(user_id)
        && event.get("room_id").and_then(Value::as_str) == Some(room_id);
    if !valid {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} sent a template for something else")));
    }
    let mut content = rooms::member_content(app, user_id, membership, Some(extra))?;
    if let Some(template_content) = event.get("content").and_then(Value::as_object) {
        if let Some(authoriser) = template_content.get("join_authorised_via_users_server") {
            content["join_authorised_via_users_server"] = authoriser.clone();
        }
    }
    event.insert("content".into(), content);
    event.insert("origin_server_ts".into(), json!(now_ms()));
    for key in ["signatures", "hashes", "unsigned", "event_id"] {
        event.remove(key);
    }
    if !version.updated_redaction_rules {
        event.insert("origin".into(), json!(app.config.server_name));
    }
    if version.event_id_format == EventIdFormat::V1 {
        let event_id = format!("${}:{}", crate::credentials::random_string(18), app.config.server_name);
        event.insert("event_id".into(), json!(event_id));
    }
    let pdu = rooms::sign(app, &version, event)?;
    Ok((version, pdu))
}

/// The largest `send_join` answer we take: the state and auth chain of a
/// room of well over 50,000 members. It is never held whole: it goes to a
/// spool file as it arrives and is read back one batch of events at a time
/// (`join_answer`).
pub const MAX_SEND_JOIN_BYTES: usize = 256 << 20;

/// Whether a server refused a request because it does not know the endpoint
/// (`M_UNRECOGNIZED` with 400 or 404): the spec's cue to fall back from the
/// v2 `send_join`, `send_leave` and `invite` to their deprecated v1 forms.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>.
fn is_unrecognized(status: u16, answer: &Value) -> bool {
    matches!(status, 400 | 404) && answer.get("errcode").and_then(Value::as_str) == Some("M_UNRECOGNIZED")
}

/// The rooms one of our users is joining through another server now. A
/// second of our users joining the same room meanwhile waits for that join
/// and then joins here, the room being ours by then: two joins through other
/// servers at once would each make their answer's state the room's current
/// state, and the later could leave out the earlier's member.
#[derive(Default)]
pub struct JoinsUnderway {
    rooms: RefCell<HashMap<String, Rc<event_listener::Event>>>,
}

/// Whose turn it is to join a room through another server.
pub enum JoinTurn {
    /// Ours: the join is under way until this is dropped.
    Ours(JoinUnderway),
    /// Another user's join of the room is under way; this resolves when it ends.
    Wait(event_listener::EventListener),
}

impl JoinsUnderway {
    /// Takes the room's turn, or says how to wait for the join that has it.
    pub fn begin(self: &Rc<Self>, room_id: &str) -> JoinTurn {
        let mut rooms = self.rooms.borrow_mut();
        if let Some(ended) = rooms.get(room_id) {
            return JoinTurn::Wait(ended.listen());
        }
        rooms.insert(room_id.to_string(), Rc::new(event_listener::Event::new()));
        JoinTurn::Ours(JoinUnderway { joins: self.clone(), room_id: room_id.to_string() })
    }
}

/// A join through another server under way; dropping it (the join done or
/// failed) wakes the joins waiting for it.
pub struct JoinUnderway {
    joins: Rc<JoinsUnderway>,
    room_id: String,
}

impl Drop for JoinUnderway {
    fn drop(&mut self) {
        if let Some(ended) = self.joins.rooms.borrow_mut().remove(&self.room_id) {
            ended.notify(usize::MAX);
        }
    }
}

/// Joins `user_id` to a room hosted elsewhere, trying `servers` in turn.
pub async fn join_remote(
    app: &Rc<Remote>,
    user_id: &str,
    room_id: &str,
    servers: &[String],
    extra: &Map<String, Value>,
) -> Result<()> {
    let mut last_error = Error::NotFound("no server to join the room through".into());
    for server in servers.iter().filter(|server| **server != app.config.server_name) {
        match join_through(app, server, user_id, room_id, extra).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                log::info!("joining {room_id} through {server} failed: {error}");
                last_error = error;
            }
        }
    }
    Err(last_error)
}

async fn join_through(
    app: &Rc<Remote>,
    server: &str,
    user_id: &str,
    room_id: &str,
    extra: &Map<String, Value>,
) -> Result<()> {
    let (version, join) = make_membership(app, server, room_id, user_id, "join", extra).await?;
    let mut api = "v2";
    let mut busy_answers = 0;
    let spool = loop {
        let path =
            format!("/_matrix/federation/{api}/send_join/{}/{}", encode(room_id), encode(&join.event_id));
        let body = Some(Value::Object(join.json.clone()));
        let mut spool = Spool::new(&app.config.data_dir)?;
        let status =
            client::request_to(app, server, Method::Put, &path, body, MAX_SEND_JOIN_BYTES, spool.sink())
                .await?;
        if status == 200 {
            break spool;
        }
        let answer = spool.small_json();
        if api == "v2" && is_unrecognized(status, &answer) {
            log::info!("{server} does not know send_join v2; trying the deprecated v1");
            api = "v1";
            continue;
        }
        // The resident answers a few joins at a time (ours among them, when
        // several of our users join at once): wait as it asks, a few times.
        if status == 429 && busy_answers < MAX_BUSY_RETRIES {
            busy_answers += 1;
            let asked = answer.get("retry_after_ms").and_then(Value::as_u64).unwrap_or(1_000);
            smol::Timer::after(Duration::from_millis(asked.clamp(100, MAX_BUSY_WAIT_MS))).await;
            continue;
        }
        let message = reason_given(&answer);
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} refused the join: {message}")));
    };
    // The state group before the join is filled as the answer's state
    // arrives; a join that fails leaves none behind.
    let mut before_join = None;
    let joined = take_answer(app, server, &version, join, spool, api == "v1", &mut before_join).await;
    match joined {
        Ok(join) => {
            app.storage().delete_remote_invite(room_id, user_id)?;
            // Recent history, so the room does not open empty; older history is the
            // resident servers' to keep.
            let backfilled = backfill(app, &version, server, room_id, &join.prev_events, before_join).await;
            if let Err(error) = backfilled {
                log::info!("backfilling {room_id} from {server} failed: {error}");
            }
            Ok(())
        }
        Err(error) => {
            if let Some(group) = before_join {
                if let Err(error) = app.storage().delete_state_group(group) {
                    log::warn!("cannot drop the state group of a failed join of {room_id}: {error}");
                }
            }
            Err(error)
        }
    }
}

/// How many times a `send_join` answered 429 (the resident is busy
/// answering other joins) is sent again, and the longest wait before each.
const MAX_BUSY_RETRIES: u32 = 5;
const MAX_BUSY_WAIT_MS: u64 = 5_000;

/// Keys of the room's current state copied per transaction when a join
/// makes the state it received the room's current state: a few
/// milliseconds of writing, then the loop turns (1,000 keys took 11 ms
/// on a loaded 2-core machine, 250 took 4 ms).
const CURRENT_STATE_SLICE: usize = 250;

/// Reads the `send_join` answer in `spool` and stores the state and auth
/// events it carries, then our join on top; answers the join as stored
/// (countersigned, for a restricted join). The answer is read back one
/// batch of events at a time, each batch checked and stored before the
/// next is parsed, and the state goes to its group (`before_join`, started
/// at the first batch) batch by batch: a big room's state is never whole
/// in memory.
async fn take_answer(
    app: &Remote,
    server: &str,
    version: &RoomVersion,
    mut join: Pdu,
    spool: Spool,
    v1: bool,
    before_join: &mut Option<i64>,
) -> Result<Pdu> {
    let room_id = join.room_id.clone();
    let mut pieces = spool.parse(if v1 { Shape::SendJoinV1 } else { Shape::SendJoin })?;
    let bad_answer = |error: String| {
        Error::matrix(502, "M_UNKNOWN", format!("{server} sent a bad send_join answer: {error}"))
    };
    let mut countersigned = None;
    let mut batches = 0;
    while let Some(piece) = pieces.next().await.map_err(bad_answer)? {
        let (events, is_state) = match piece {
            Piece::Event(event) => {
                countersigned = Some(event);
                continue;
            }
            Piece::AuthChain(events) => (events, false),
            Piece::State(events) => (events, true),
        };
        if app.storage().room_version(&room_id)?.is_none() {
            app.storage().create_room(&room_id, version.id)?;
        }
        let stored = pdus::store_verified_outliers(app, version, &room_id, &events).await?;
        drop(events);
        batches += 1;
        if !is_state {
            continue;
        }
        let group = match *before_join {
            Some(group) => group,
            None => *before_join.insert(app.storage().new_state_group(&room_id)?),
        };
        let entries: Vec<(&str, &str, &str)> = stored
            .iter()
            .filter_map(|event| {
                Some((event.kind.as_str(), event.state_key.as_deref()?, event.event_id.as_str()))
            })
            .collect();
        app.storage().add_to_state_group(group, &entries)?;
    }
    // A restricted join comes back countersigned by the authorising server.
    if let Some(countersigned) = countersigned {
        if let Ok(countersigned) = serde_json::from_str::<Map<String, Value>>(countersigned.get()) {
            let checked = pdus::verify(app, version, countersigned).await?;
            if checked.event_id == join.event_id {
                join = checked;
            }
        }
    }
    let no_create =
        || Error::matrix(502, "M_UNKNOWN", format!("{server} sent a state without this room's create event"));
    let state = GroupState(before_join.ok_or_else(no_create)?);
    let create_ok = rooms::state_pdu(app, version, &state, "m.room.create", "").is_some_and(|create| {
        create.room_id == room_id
            && create.content.get("room_version").and_then(Value::as_str).unwrap_or("1") == version.id
    });
    if !create_ok {
        return Err(no_create());
    }
    store_join(app, version, &join, state).await?;
    log::info!(
        "{} joined {room_id} through {server}: {batches} batches of state and auth events",
        join.sender
    );
    Ok(join)
}
/// Events fetched per backfill after a join.
const BACKFILL_AFTER_JOIN: usize = 50;

/// Fetches the history before `from` from `server` and stores it before
/// everything in our timeline, newest nearest. Visibility is judged by the
/// state before our join (`state_group`).
async fn backfill(
    app: &Remote,
    version: &RoomVersion,
    server: &str,
    room_id: &str,
    from: &[String],
    state_group: Option<i64>,
) -> Result<usize> {
    if from.is_empty() {
        return Ok(0);
    }
    let query: Vec<String> = from.iter().map(|id| format!("v={}", encode(id))).collect();
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?{}&limit={BACKFILL_AFTER_JOIN}",
        encode(room_id),
        query.join("&")
    );
    let (status, answer) = client::request(app, server, Method::Get, &path, None).await?;
    if status != 200 {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} answered backfill with {status}")));
    }
    let empty = Vec::new();
    let events = answer.get("pdus").and_then(Value::as_array).unwrap_or(&empty);
    let mut verified = pdus::store_verified_outliers(app, version, room_id, events).await?;
    // Newest first: each takes the next lower stream position.
    verified.sort_by_key(|pdu| std::cmp::Reverse((pdu.depth, pdu.origin_server_ts)));
    let mut position = app.storage().min_stream_ordering()?.min(0);
    let mut stored = 0;
    for pdu in &verified {
        position -= 1;
        let event = NewEvent::of(pdu, position);
        stored += usize::from(app.storage().store_backfilled(&event, state_group)?);
    }
    log::debug!("backfilled {stored} events of {room_id} from {server}");
    Ok(stored)
}

/// Fetches older history of a room from the other servers in it when our
/// oldest event's prev events are not here (a `/messages` that reached the
/// start of what we hold). Returns how many events were added.
pub async fn backfill_older(app: &Remote, room_id: &str) -> Result<usize> {
    let version = rooms::room_version(app, room_id)?;
    let Some(earliest) = app.storage().earliest_event(room_id)? else { return Ok(0) };
    let mut missing = Vec::new();
    for prev in super::pdus::prev_events_of(&earliest) {
        if app.storage().event(&prev)?.is_none_or(|event| event.outlier) {
            missing.push(prev);
        }
    }
    if missing.is_empty() {
        return Ok(0);
    }
    let servers = app.storage().servers_in_room(room_id)?;
    for server in servers.iter().filter(|server| **server != app.config.server_name) {
        // A server we are backing off from would only make the reader wait.
        let backing_off = app
            .storage()
            .destination_health(server)?
            .retry_after_ts
            .is_some_and(|retry_after| retry_after > crate::storage::now_ms());
        if backing_off {
            continue;
        }
        match backfill(app, &version, server, room_id, &missing, earliest.state_group).await {
            Ok(stored) => return Ok(stored),
            Err(error) => log::info!("backfilling {room_id} from {server} failed: {error}"),
        }
    }
    Ok(0)
}

/// Checks our join against the state the resident server gave us and stores
/// it as the room's first event in our DAG (its prev events stay unknown
/// here): the state after it is `before_join`'s group with our membership
/// on top, and the room's current state becomes that, copied from the group
/// in slices ([`CURRENT_STATE_SLICE`]) that let the loop turn between them.
async fn store_join(app: &Remote, version: &RoomVersion, join: &Pdu, before_join: GroupState) -> Result<()> {
    auth::auth_check(
        version,
        join,
        |kind, state_key| rooms::state_pdu(app, version, &before_join, kind, state_key),
        &LocalSignatures,
    )
    .map_err(|error| Error::Forbidden(format!("our join fails the room's rules: {error}")))?;
    let key = ("m.room.member".to_string(), join.sender.clone());
    let replaces_state = before_join.event_id(app, &key.0, &key.1);
    let mut copied = None;
    loop {
        copied = app.storage().current_state_from_group(
            &join.room_id,
            before_join.0,
            copied.as_ref(),
            CURRENT_STATE_SLICE,
        )?;
        if copied.is_none() {
            break;
        }
        smol::future::yield_now().await;
    }
    let new_event =
        NewEvent { replaces_state: replaces_state.as_deref(), ..NewEvent::of(join, app.next_stream_id()) };
    let update = CurrentUpdate {
        state: vec![(key.clone(), join.event_id.clone(), Some("join".to_string()))],
        replace_all: false,
        extremities: vec![join.event_id.clone()],
        outbox: Vec::new(),
        pushes: Vec::new(),
        unread: Vec::new(),
    };
    let changes = StateMap::from([(key, join.event_id.clone())]);
    app.storage().persist_event(
        &new_event,
        StateAfter::Delta { parent: Some(before_join.0), changes },
        &update,
    )?;
    // Our user now shares the room with its members: lists cached from an
    // earlier shared room may have missed updates.
    rooms::remote_devices::note_join(app, &join.room_id, &join.sender)?;
    app.push_audiences.forget(&join.room_id);
    app.search_index.note_new_events();
    rooms::wake_room(app, &join.room_id, Some(&join.sender));
    Ok(())
}

/// The `make_{leave,knock}` then `send_{leave,knock}` round trip through
/// `server`; answers the status and body of the send.
async fn make_and_send(
    app: &Remote,
    server: &str,
    room_id: &str,
    user_id: &str,
    membership: &str,
    extra: &Map<String, Value>,
) -> Result<(u16, Value)> {
    let (_, event) = make_membership(app, server, room_id, user_id, membership, extra).await?;
    // Spec: send_leave is v2 (v1 deprecated, for servers without v2), send_knock v1.
    let mut api = if membership == "knock" { "v1" } else { "v2" };
    loop {
        let path = format!(
            "/_matrix/federation/{api}/send_{membership}/{}/{}",
            encode(room_id),
            encode(&event.event_id)
        );
        let body = Some(Value::Object(event.json.clone()));
        let (status, answer) = client::request(app, server, Method::Put, &path, body).await?;
        if membership == "leave" && api == "v2" && is_unrecognized(status, &answer) {
            api = "v1";
            continue;
        }
        // v1 answers `[200, {}]`.
        let answer = match answer {
            Value::Array(mut parts) if api == "v1" && membership == "leave" && parts.len() == 2 => {
                parts.remove(1)
            }
            answer => answer,
        };
        return Ok((status, answer));
    }
}

/// Declines an invite into a room we are not in: a leave through the inviting server.
pub async fn reject_remote_invite(
    app: &Rc<Remote>,
    user_id: &str,
    room_id: &str,
    server: &str,
    extra: &Map<String, Value>,
) -> Result<()> {
    let (status, answer) = make_and_send(app, server, room_id, user_id, "leave", extra).await?;
    if status != 200 {
        let message = reason_given(&answer);
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} refused the leave: {message}")));
    }
    Ok(())
}

/// Knocks on a room hosted elsewhere; answers the stripped state to show.
pub async fn knock_remote(
    app: &Rc<Remote>,
    user_id: &str,
    room_id: &str,
    servers: &[String],
    extra: &Map<String, Value>,
) -> Result<()> {
    let mut last_error = Error::NotFound("no server to knock through".into());
    for server in servers.iter().filter(|server| **server != app.config.server_name) {
        let attempt = async {
            let (status, answer) = make_and_send(app, server, room_id, user_id, "knock", extra).await?;
            if status != 200 {
                let message = reason_given(&answer);
                return Err(Error::matrix(
                    403,
                    "M_FORBIDDEN",
                    format!("{server} refused the knock: {message}"),
                ));
            }
            Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Invites a user of another server into a room we are in: the invitee's
/// server countersigns, then the invite joins the room like any of our events.
pub async fn invite_remote(
    app: &Rc<Remote>,
    room_id: &str,
    sender: &str,
    target: &str,
    extra: &Map<String, Value>,
) -> Result<()> {
    let version = rooms::room_version(app, room_id)?;
    let server = server_of(target)
        .ok_or_else(|| Error::InvalidParam(format!("{target} is not a user ID")))?
        .to_string();
    // Only a joined member may invite (the auth rules check again below):
    // anyone else must not make us query another server.
    if app.storage().membership(room_id, sender)?.as_deref() != Some("join") {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    let mut content = extra.clone();
    if !content.contains_key("displayname") && !content.contains_key("avatar_url") {
        content.extend(invitee_profile(app, target).await);
    }
    content.insert("membership".into(), json!("invite"));
    let state = app.storage().current_state(room_id)?;
    let draft = rooms::Draft::state("m.room.member", target, Value::Object(content));
    let template = rooms::template(app, &version, Some(room_id), sender, &draft, &state)?;
    let invite = rooms::sign(app, &version, template)?;
    auth::auth_check(
        &version,
        &invite,
        |kind, state_key| rooms::state_pdu(app, &version, &state, kind, state_key),
        &LocalSignatures,
    )
    .map_err(|error| Error::Forbidden(error.to_string()))?;
    // Spec (v1.16): whole PDUs in the room's format, the create event among them.
    let invite_room_state = crate::rooms::invites::invite_state_events(app, room_id, sender)?
        .iter()
        .filter(|event| event.kind != "m.room.member")
        .map(pdu_json)
        .collect::<Vec<_>>();
    let body = json!({
        "event": Value::Object(invite.json.clone()),
        "room_version": version.id,
        "invite_room_state": &invite_room_state,
    });
    let path = format!("/_matrix/federation/v2/invite/{}/{}", encode(room_id), encode(&invite.event_id));
    let (mut status, mut answer) = client::request(app, &server, Method::Put, &path, Some(body)).await?;
    if is_unrecognized(status, &answer) {
        // Spec: fall back to the deprecated v1, which only rooms of versions
        // 1 and 2 can use (it carries no room version); Synapse does the same.
        if version.event_id_format != EventIdFormat::V1 {
            return Err(Error::matrix(
                400,
                "M_UNSUPPORTED_ROOM_VERSION",
                format!("{server} does not support room version {}", version.id),
            ));
        }
        let mut event = invite.json.clone();
        let unsigned = event.entry("unsigned").or_insert_with(|| json!({}));
        unsigned["invite_room_state"] = json!(invite_room_state);
        let path = format!("/_matrix/federation/v1/invite/{}/{}", encode(room_id), encode(&invite.event_id));
        (status, answer) =
            client::request(app, &server, Method::Put, &path, Some(Value::Object(event))).await?;
        // v1 answers `[200, {"event": ...}]`.
        if let Value::Array(parts) = &mut answer {
            answer = if parts.len() == 2 { parts.remove(1) } else { Value::Null };
        }
    }
    if status != 200 {
        let message = reason_given(&answer);
        return Err(Error::Forbidden(format!("{server} refused the invite: {message}")));
    }
    let Some(Value::Object(countersigned)) = answer.get("event").cloned() else {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} sent back no event")));
    };
    let checked = pdus::verify(app, &version, countersigned).await?;
    if checked.event_id != invite.event_id {
        return Err(Error::matrix(502, "M_UNKNOWN", format!("{server} changed the invite")));
    }
    rooms::store_signed(app, &version, &checked)?;
    Ok(())
}

/// How long an invite waits for the invitee's profile before it goes
/// without: the inviter's client is waiting on the answer.
const INVITEE_PROFILE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest profile answer read for an invite (Synapse caps a whole
/// profile at 64 KiB).
const MAX_PROFILE_ANSWER_BYTES: usize = 64 << 10;

/// The longest display name and avatar URL copied into an invite (Synapse's
/// limits for its own users' profiles).
const MAX_DISPLAYNAME_CHARS: usize = 256;
const MAX_AVATAR_URL_CHARS: usize = 1000;

/// The invitee's `displayname` and `avatar_url`, asked of their server, for
/// the invite event (as Synapse does, so clients name the invitee). Nothing
/// if the server does not answer in time or has no profile for the user.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1queryprofile>.
async fn invitee_profile(app: &Remote, user_id: &str) -> Map<String, Value> {
    let Some(server) = server_of(user_id) else { return Map::new() };
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode(user_id));
    let fetch = client::request_with_limit(app, server, Method::Get, &path, None, MAX_PROFILE_ANSWER_BYTES);
    let timeout = async {
        smol::Timer::after(INVITEE_PROFILE_TIMEOUT).await;
        Err(Error::matrix(504, "M_UNKNOWN", "the profile query timed out"))
    };
    let answer = match smol::future::or(fetch, timeout).await {
        Ok((200, answer)) => answer,
        Ok((status, _)) => {
            log::debug!("no profile of {user_id} for the invite: {server} answered {status}");
            return Map::new();
        }
        Err(error) => {
            log::debug!("no profile of {user_id} for the invite: {error}");
            return Map::new();
        }
    };
    let mut profile = Map::new();
    for (field, max_chars) in [("displayname", MAX_DISPLAYNAME_CHARS), ("avatar_url", MAX_AVATAR_URL_CHARS)] {
        if let Some(value) = answer.get(field).and_then(Value::as_str) {
            if !value.is_empty() && value.chars().count() <= max_chars {
                profile.insert(field.into(), json!(value));
            }
        }
    }
    profile
}

/// The `error` text of another server's refusal.
fn reason_given(answer: &Value) -> &str {
    answer.get("error").and_then(Value::as_str).unwrap_or("no reason given")
}

/// Errcodes from other servers are free text; keep only well-formed ones.
fn leak(errcode: &str) -> &'static str {
    match errcode {
        "M_FORBIDDEN" => "M_FORBIDDEN",
        "M_NOT_FOUND" => "M_NOT_FOUND",
        "M_INCOMPATIBLE_ROOM_VERSION" => "M_INCOMPATIBLE_ROOM_VERSION",
        "M_UNABLE_TO_AUTHORISE_JOIN" => "M_UNABLE_TO_AUTHORISE_JOIN",
        "M_UNABLE_TO_GRANT_JOIN" => "M_UNABLE_TO_GRANT_JOIN",
        _ => "M_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unrecognized_endpoint_falls_back_to_v1() {
        let unrecognized = json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"});
        assert!(is_unrecognized(404, &unrecognized));
        assert!(is_unrecognized(400, &unrecognized));
        assert!(!is_unrecognized(405, &unrecognized));
        assert!(!is_unrecognized(403, &json!({"errcode": "M_FORBIDDEN"})));
        assert!(!is_unrecognized(404, &json!({"errcode": "M_NOT_FOUND"})));
        assert!(!is_unrecognized(404, &Value::Null));
    }
}
