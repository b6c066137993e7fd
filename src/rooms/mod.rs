//! The room engine: builds, signs, authorizes and stores events created on this
//! server, applies redactions, and answers "what is the state / who may see
//! this" questions for the client API.
//!
//! Sits between storage and the handlers: it calls the protocol core (pure) and
//! storage, and knows nothing of HTTP.

pub mod aggregations;
mod bulk_signing;
pub mod directory;
pub mod e2ee;
mod engine;
pub mod format;
pub mod hierarchy;
pub mod incoming;
pub mod invites;
pub mod lazy_members;
pub mod media;
pub mod notifications;
pub mod notify;
pub mod openid;
pub mod outbox;
pub mod pdu_cache;
pub mod presence;
pub mod push;
pub mod push_actions;
pub mod push_queue;
pub mod remote_devices;
pub mod resilience;
pub mod search_index;
pub mod sliding_sync;
pub mod state_answer;
pub mod summary;
pub mod timeline;
pub mod typing;
pub mod unread;
pub mod upgrade;
pub mod upload;
pub mod visibility;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::protocol::auth::{self, SignatureCheck};
use crate::protocol::pdu::{MAX_PDU_BYTES, Pdu};
use crate::protocol::power_levels::RoomPower;
use crate::protocol::room_version::{EventIdFormat, RoomVersion};
use crate::protocol::{hashes, redaction};
use crate::storage::{CurrentUpdate, NewEvent, StateAfter, StateMap, StoredEvent, now_ms};
pub use engine::{Engine, added_source, app_service_registrations};

/// At most this many prev_events on a new event (spec: servers may cap them; 20 is
/// the limit servers enforce on receipt, we stay well below).
const MAX_PREV_EVENTS: usize = 10;

/// A create event whose room ID is taken is rebuilt a millisecond later at
/// most this many times: the n-th identical create of a burst within one
/// millisecond takes n attempts, and a create costs far more than a
/// millisecond's work, so bursts stay short; past this, 429.
const MAX_CREATE_ATTEMPTS: u32 = 100;

/// An event a local user wants to add to a room.
pub struct Draft {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
    /// For `m.room.redaction`: the event to redact.
    pub redacts: Option<String>,
}

impl Draft {
    pub fn message(kind: &str, content: Value) -> Draft {
        Draft { kind: kind.into(), state_key: None, content, redacts: None }
    }

    pub fn state(kind: &str, state_key: &str, content: Value) -> Draft {
        Draft { kind: kind.into(), state_key: Some(state_key.into()), content, redacts: None }
    }
}

/// The device transaction an event was sent with (for idempotency and echo).
#[derive(Clone, Copy)]
pub struct Transaction<'a> {
    pub device_id: &'a str,
    pub txn_id: &'a str,
}

/// Signature checks for the auth rules, on events we hold.
pub struct LocalSignatures;

impl SignatureCheck for LocalSignatures {
    fn event_signed_by(&self, event: &Pdu, server_name: &str) -> bool {
        // Events we hold passed signature checks on arrival (or we signed them).
        event.json.get("signatures").and_then(|signatures| signatures.get(server_name)).is_some()
    }

    fn signed_by_public_key(&self, signed: &Value, public_key: &str) -> bool {
        let Ok(key) = crate::protocol::signing::public_key_from_base64(public_key) else {
            return false;
        };
        let Some(signatures) = signed.get("signatures").and_then(Value::as_object) else {
            return false;
        };
        signatures.iter().any(|(server, keys)| {
            keys.as_object().is_some_and(|keys| {
                keys.keys()
                    .any(|key_id| crate::protocol::signing::verify_json(signed, server, key_id, &key).is_ok())
            })
        })
    }
}

/// A room's version, or 404 if we do not know the room.
pub fn room_version(app: &Engine, room_id: &str) -> Result<RoomVersion> {
    let id = app.storage().room_version(room_id)?.ok_or_else(|| Error::NotFound("unknown room".into()))?;
    RoomVersion::from_id(&id).ok_or(Error::UnsupportedRoomVersion(id))
}

/// Parses a stored event as a PDU.
pub fn to_pdu(version: &RoomVersion, event: &StoredEvent) -> Option<Pdu> {
    Pdu::from_json(version, event.event_id.clone(), event.json.map().clone()).ok()
}

/// Loads an event as a PDU.
pub fn load_pdu(app: &Engine, version: &RoomVersion, event_id: &str) -> Result<Option<Pdu>> {
    Ok(load_shared_pdu(app, version, event_id)?.map(Rc::unwrap_or_clone))
}

/// Loads an event as a shared PDU (state events from the cache of parsed ones).
pub fn load_shared_pdu(app: &Engine, version: &RoomVersion, event_id: &str) -> Result<Option<Rc<Pdu>>> {
    if let Some(cached) = app.pdu_cache.get(event_id) {
        return Ok(Some(cached));
    }
    let Some(pdu) = app.storage().event(event_id)?.and_then(|event| to_pdu(version, &event)) else {
        return Ok(None);
    };
    let pdu = Rc::new(pdu);
    if pdu.state_key.is_some() {
        app.pdu_cache.insert(pdu.clone());
    }
    Ok(Some(pdu))
}

/// A room state that can be asked one key at a time: a loaded map, or the
/// room's current state or a state group read key by key from the database
/// (so checking an event in a room of thousands of members does not load
/// thousands of entries).
pub trait StateLookup {
    /// The event ID at `(kind, state_key)`.
    fn event_id(&self, app: &Engine, kind: &str, state_key: &str) -> Option<String>;
}

impl StateLookup for StateMap {
    fn event_id(&self, _app: &Engine, kind: &str, state_key: &str) -> Option<String> {
        self.get(&(kind.to_string(), state_key.to_string())).cloned()
    }
}

/// A room's current state, read from the database key by key.
pub struct CurrentState<'a>(pub &'a str);

impl StateLookup for CurrentState<'_> {
    fn event_id(&self, app: &Engine, kind: &str, state_key: &str) -> Option<String> {
        app.storage().current_state_event(self.0, kind, state_key).ok().flatten()
    }
}

/// A state group's state, read from the database key by key.
pub struct GroupState(pub i64);

impl StateLookup for GroupState {
    fn event_id(&self, app: &Engine, kind: &str, state_key: &str) -> Option<String> {
        app.storage().state_entry_of_group(self.0, kind, state_key).ok().flatten()
    }
}

/// A state read key by key that remembers what it read, for one piece of
/// work that asks for the same keys more than once (a send selects the auth
/// events, then checks them).
pub struct Remembered<L> {
    lookup: L,
    seen: std::cell::RefCell<HashMap<(String, String), Option<String>>>,
}

impl<L: StateLookup> Remembered<L> {
    pub fn new(lookup: L) -> Remembered<L> {
        Remembered { lookup, seen: Default::default() }
    }

    /// Records a change made since (an event stored on top of this state).
    fn note(&self, kind: &str, state_key: &str, event_id: &str) {
        self.seen.borrow_mut().insert((kind.to_string(), state_key.to_string()), Some(event_id.to_string()));
    }
}

impl<L: StateLookup> StateLookup for Remembered<L> {
    fn event_id(&self, app: &Engine, kind: &str, state_key: &str) -> Option<String> {
        let key = (kind.to_string(), state_key.to_string());
        if let Some(known) = self.seen.borrow().get(&key) {
            return known.clone();
        }
        let found = self.lookup.event_id(app, kind, state_key);
        self.seen.borrow_mut().insert(key, found.clone());
        found
    }
}

/// The PDU at a key of a state.
pub fn state_pdu(
    app: &Engine,
    version: &RoomVersion,
    state: &dyn StateLookup,
    kind: &str,
    state_key: &str,
) -> Option<Rc<Pdu>> {
    let event_id = state.event_id(app, kind, state_key)?;
    load_shared_pdu(app, version, &event_id).ok().flatten()
}

/// Checks an event made here against the auth rules at `state`; a refusal
/// is the client's 403 `M_FORBIDDEN`.
fn authorize_local(app: &Engine, version: &RoomVersion, state: &dyn StateLookup, pdu: &Pdu) -> Result<()> {
    auth::auth_check(
        version,
        pdu,
        |kind, state_key| state_pdu(app, version, state, kind, state_key),
        &LocalSignatures,
    )
    .map_err(|error| Error::Forbidden(error.to_string()))
}

/// The content of the current state event at a key.
pub fn current_state_content(
    app: &Engine,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Option<Value>> {
    let Some(event_id) = app.storage().current_state_event(room_id, kind, state_key)? else {
        return Ok(None);
    };
    Ok(app.storage().event(&event_id)?.and_then(|event| event.json.get("content").cloned()))
}

/// The current state event at a key, if `sender` sent it with exactly this
/// content and is still joined: setting state to what it already is makes no
/// new event (as the reference server does; it also keeps `createRoom`'s
/// presets from repeating themselves).
pub fn unchanged_state(
    app: &Engine,
    room_id: &str,
    sender: &str,
    kind: &str,
    state_key: &str,
    content: &Value,
) -> Result<Option<String>> {
    if app.storage().membership(room_id, sender)?.as_deref() != Some("join") {
        return Ok(None);
    }
    let Some(event_id) = app.storage().current_state_event(room_id, kind, state_key)? else {
        return Ok(None);
    };
    let Some(event) = app.storage().event(&event_id)? else { return Ok(None) };
    let same = event.json.get("sender").and_then(Value::as_str) == Some(sender)
        && event.json.get("content") == Some(content);
    Ok(same.then_some(event_id))
}

/// Power in the room's current state.
pub fn current_power(app: &Engine, version: &RoomVersion, state: &dyn StateLookup) -> RoomPower {
    let power_levels = state_pdu(app, version, state, "m.room.power_levels", "");
    let create = state_pdu(app, version, state, "m.room.create", "");
    RoomPower::new(version, power_levels.as_deref(), create.as_deref())
}

/// Who hears of a new local event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The room's joined and invited members waiting in a sync (their syncs
    /// wake) and the servers of the joined members: read for every event.
    Members,
    /// Nobody yet: the events of a room being created, whose one joined
    /// member is its local creator (so no other server is in it). Reading
    /// the growing member list for each of thousands of invites would make
    /// createRoom quadratic; the creator wakes the room once at the end
    /// ([`wake_room`]). A local invitee's pushers still hear of their
    /// invite ([`push_actions::actions_in_creation`]).
    RoomInCreation,
}

/// Builds, signs and authorizes an event on top of the room's current state,
/// stores it, wakes the members' syncs, and returns its ID. All of it in one
/// database transaction: one lock for the reads, nothing stored on failure.
pub fn send(
    app: &Engine,
    room_id: &str,
    sender: &str,
    draft: Draft,
    txn: Option<Transaction<'_>>,
) -> Result<String> {
    send_to(app, room_id, sender, draft, txn, Audience::Members)
}

/// [`send`] for a given audience.
pub fn send_to(
    app: &Engine,
    room_id: &str,
    sender: &str,
    draft: Draft,
    txn: Option<Transaction<'_>>,
    audience: Audience,
) -> Result<String> {
    app.in_transaction(|| send_in_transaction(app, room_id, sender, draft, txn, audience))
}

fn send_in_transaction(
    app: &Engine,
    room_id: &str,
    sender: &str,
    draft: Draft,
    txn: Option<Transaction<'_>>,
    audience: Audience,
) -> Result<String> {
    if let Some(txn) = txn {
        if let Some(event_id) = app.storage().event_for_transaction(sender, txn.device_id, txn.txn_id)? {
            return Ok(event_id);
        }
    }
    let version = room_version(app, room_id).map_err(|error| match error {
        Error::NotFound(_) => Error::Forbidden("you are not in this room".into()),
        other => other,
    })?;
    let state = Remembered::new(CurrentState(room_id));
    let pdu = build(app, &version, Some(room_id), sender, &draft, &state)?;
    authorize_local(app, &version, &state, &pdu)?;
    if pdu.kind == "m.room.redaction" {
        check_redaction_allowed(app, &version, &state, &pdu)?;
    }
    persist_local(app, &version, &pdu, &state, txn, audience)?;
    Ok(pdu.event_id)
}

/// Authorizes an already built and signed event (perhaps countersigned by
/// another server, as invites are) against the current state and stores it.
pub fn store_signed(app: &Engine, version: &RoomVersion, pdu: &Pdu) -> Result<()> {
    let state = CurrentState(&pdu.room_id);
    authorize_local(app, version, &state, pdu)?;
    persist_local(app, version, pdu, &state, None, Audience::Members)
}

/// Creates the `m.room.create` event of a new room and stores room and event;
/// returns the room ID (derived from the event in v12, random before).
pub fn create_room_with(
    app: &Engine,
    version: &RoomVersion,
    creator: &str,
    content: Value,
) -> Result<String> {
    let room_id = (!version.room_id_from_create_event).then(|| new_room_id(app));
    create_room_as(app, version, room_id.as_deref(), creator, content)
}

/// A fresh room ID on this server, for versions whose room IDs are not the
/// create event's hash.
pub fn new_room_id(app: &Engine) -> String {
    format!("!{}:{}", crate::credentials::random_string(18), app.config.server_name)
}

/// [`create_room_with`] under a room ID chosen beforehand (`None` where the
/// version derives it from the create event).
pub fn create_room_as(
    app: &Engine,
    version: &RoomVersion,
    room_id: Option<&str>,
    creator: &str,
    content: Value,
) -> Result<String> {
    let draft = Draft::state("m.room.create", "", content);
    let event = template(app, version, room_id, creator, &draft, &StateMap::new())?;
    // Everything runs on one thread, so nothing can take the ID between this
    // check and the store below.
    let pdu = unused_room_create(
        event,
        |event| sign_checked(app, version, event),
        |room_id| Ok(app.storage().room_version(room_id)?.is_some()),
    )?;
    auth::auth_check(version, &pdu, |_, _| None::<&Pdu>, &LocalSignatures)
        .map_err(|error| Error::BadJson(format!("invalid create event: {error}")))?;
    app.storage().create_room(&pdu.room_id, version.id)?;
    persist_local(app, version, &pdu, &StateMap::new(), None, Audience::RoomInCreation)?;
    Ok(pdu.room_id)
}

/// Invites local users into a room being created (see
/// [`Audience::RoomInCreation`]), one event after the other, in one
/// database transaction, for as long as `turn` lasts (at least one invite);
/// returns how many of `invitees`, from the first, it invited. What every
/// invite reads (the room's version, the state the auth rules look at, the
/// room's extremity) is read once and carried from one invite to the next,
/// each event building on the one before it; each is still built, signed,
/// authorized and stored as [`send`] does. Nothing is stored if one fails.
pub fn invite_in_creation(
    app: &Engine,
    room_id: &str,
    inviter: &str,
    invitees: &[&str],
    extra: &Map<String, Value>,
    turn: std::time::Duration,
) -> Result<usize> {
    let started = std::time::Instant::now();
    app.in_transaction(|| {
        let version = room_version(app, room_id)?;
        let state = Remembered::new(CurrentState(room_id));
        let mut prev = prev_events(app, room_id)?;
        bulk_signing::with_signer(&app.signing_key, invitees.len(), |signer| {
            // Built, checked and handed to the signer; stored in order as
            // their signatures come back, with the state each replaces.
            let mut unsigned: VecDeque<(Pdu, Option<String>)> = VecDeque::new();
            let mut invited = 0;
            for invitee in invitees {
                if invited + unsigned.len() > 0 && turn <= started.elapsed() {
                    break;
                }
                let content = member_content(app, invitee, "invite", Some(extra))?;
                let draft = Draft::state("m.room.member", invitee, content);
                let event = template_on(app, &version, Some(room_id), inviter, &draft, &state, prev)?;
                let (pdu, ready) = ready_to_sign(&version, event)?;
                check_size(&ready)?;
                authorize_local(app, &version, &state, &pdu)?;
                let replaced = state.event_id(app, "m.room.member", invitee);
                signer.submit(ready.signing_text);
                state.note("m.room.member", invitee, &pdu.event_id);
                prev = (vec![pdu.event_id.clone()], pdu.depth + 1);
                unsigned.push_back((pdu, replaced));
                while SIGNING_AHEAD < unsigned.len() {
                    let Some(oldest) = unsigned.pop_front() else { break };
                    store_invite_signed(app, &version, signer, oldest)?;
                    invited += 1;
                }
            }
            while let Some(oldest) = unsigned.pop_front() {
                store_invite_signed(app, &version, signer, oldest)?;
                invited += 1;
            }
            Ok(invited)
        })
    })
}

/// How many invites of a `createRoom` are built ahead of the one being
/// stored, for the signing thread to work on meanwhile.
const SIGNING_AHEAD: usize = 16;

/// Stores an invite built by [`invite_in_creation`] once its signature is
/// back; `replaced` is the member event it replaces, if any.
fn store_invite_signed(
    app: &Engine,
    version: &RoomVersion,
    signer: &mut bulk_signing::Signer<'_>,
    (mut pdu, replaced): (Pdu, Option<String>),
) -> Result<()> {
    let signature =
        signer.next_signature().ok_or_else(|| Error::Internal("an invite came back unsigned".into()))?;
    attach_our_signature(app, &mut pdu, signature)?;
    let mut before = StateMap::new();
    if let (Some(replaced), Some(state_key)) = (replaced, pdu.state_key.clone()) {
        before.insert((pdu.kind.clone(), state_key), replaced);
    }
    persist_local(app, version, &pdu, &before, None, Audience::RoomInCreation)
}

/// Signs a create event whose room ID is not `taken`. A v12 room ID is the
/// create event's hash, and one user's create events may be identical but
/// for their timestamp (two in the same millisecond would name the same
/// room): a taken ID moves the timestamp on by a millisecond, as a create
/// made a little later would have it.
fn unused_room_create(
    mut event: Map<String, Value>,
    sign: impl Fn(Map<String, Value>) -> Result<Pdu>,
    taken: impl Fn(&str) -> Result<bool>,
) -> Result<Pdu> {
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let pdu = sign(event.clone())?;
        if !taken(&pdu.room_id)? {
            return Ok(pdu);
        }
        let timestamp = event.get("origin_server_ts").and_then(Value::as_i64).unwrap_or_else(now_ms);
        event.insert("origin_server_ts".into(), json!(timestamp + 1));
    }
    Err(Error::LimitExceeded { retry_after_ms: 10 })
}

/// Builds and signs an event (not yet authorized or stored).
fn build(
    app: &Engine,
    version: &RoomVersion,
    room_id: Option<&str>,
    sender: &str,
    draft: &Draft,
    state: &dyn StateLookup,
) -> Result<Pdu> {
    let event = template(app, version, room_id, sender, draft, state)?;
    sign_checked(app, version, event)
}

/// Signs an event built by [`template`], refusing one too large to send.
fn sign_checked(app: &Engine, version: &RoomVersion, event: Map<String, Value>) -> Result<Pdu> {
    let (mut pdu, ready) = ready_to_sign(version, event)?;
    check_size(&ready)?;
    attach_our_signature(app, &mut pdu, app.signing_key.sign_bytes(ready.signing_text.as_bytes()))?;
    Ok(pdu)
}

/// Refuses an event too large to send, once its content hash is in place.
fn check_size(ready: &hashes::ReadyToSign) -> Result<()> {
    // Leave room for the hashes and signatures (~200 bytes).
    if ready.hashed_length + 256 > MAX_PDU_BYTES {
        return Err(Error::TooLarge("the event is larger than 65536 bytes".into()));
    }
    Ok(())
}

/// Builds an unsigned event on top of the room's extremities and `state`
/// (for `make_join`-style templates and for [`build`]).
pub fn template(
    app: &Engine,
    version: &RoomVersion,
    room_id: Option<&str>,
    sender: &str,
    draft: &Draft,
    state: &dyn StateLookup,
) -> Result<Map<String, Value>> {
    let prev = match room_id {
        Some(room_id) => prev_events(app, room_id)?,
        None => (Vec::new(), 1),
    };
    template_on(app, version, room_id, sender, draft, state, prev)
}

/// The prev_events of a new event in a room (its newest extremities, at
/// most [`MAX_PREV_EVENTS`]) and the new event's depth.
fn prev_events(app: &Engine, room_id: &str) -> Result<(Vec<String>, i64)> {
    let mut extremities = app.storage().forward_extremities(room_id)?;
    extremities.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
    extremities.truncate(MAX_PREV_EVENTS);
    let depth = extremities.iter().map(|(_, depth)| *depth).max().unwrap_or(0) + 1;
    Ok((extremities.into_iter().map(|(id, _)| id).collect(), depth))
}

/// [`template`] on given prev_events and depth.
fn template_on(
    app: &Engine,
    version: &RoomVersion,
    room_id: Option<&str>,
    sender: &str,
    draft: &Draft,
    state: &dyn StateLookup,
    (prev_events, depth): (Vec<String>, i64),
) -> Result<Map<String, Value>> {
    let mut content = draft.content.clone();
    if !content.is_object() {
        return Err(Error::BadJson("content must be an object".into()));
    }
    let mut event = Map::new();
    let auth_events: Vec<String> =
        auth::auth_types_for_event(&draft.kind, draft.state_key.as_deref(), sender, &content, version)
            .into_iter()
            .filter_map(|(kind, state_key)| state.event_id(app, &kind, &state_key))
            .collect();
    let reference = |ids: Vec<String>| -> Value {
        match version.event_id_format {
            // v1/v2 reference events as [id, {sha256: hash}]; we give an empty hash
            // object, which receivers ignore.
            EventIdFormat::V1 => Value::Array(ids.into_iter().map(|id| json!([id, {}])).collect()),
            _ => json!(ids),
        }
    };
    if let Some(redacts) = &draft.redacts {
        if version.redacts_in_content {
            content["redacts"] = json!(redacts);
        } else {
            event.insert("redacts".into(), json!(redacts));
        }
    }
    event.insert("auth_events".into(), reference(auth_events));
    event.insert("content".into(), content);
    event.insert("depth".into(), json!(depth));
    event.insert("origin_server_ts".into(), json!(now_ms()));
    event.insert("prev_events".into(), reference(prev_events));
    if let Some(room_id) = room_id {
        event.insert("room_id".into(), json!(room_id));
    }
    event.insert("sender".into(), json!(sender));
    event.insert("type".into(), json!(draft.kind));
    if let Some(state_key) = &draft.state_key {
        event.insert("state_key".into(), json!(state_key));
    }
    if !version.updated_redaction_rules {
        event.insert("origin".into(), json!(app.config.server_name));
    }
    if version.event_id_format == EventIdFormat::V1 {
        let event_id = format!("${}:{}", crate::credentials::random_string(18), app.config.server_name);
        event.insert("event_id".into(), json!(event_id));
    }
    Ok(event)
}

/// Adds hashes and our signature to an event and parses it as a PDU
/// (refusing content canonical JSON cannot encode, such as floats in room
/// v6+, with `M_BAD_JSON`).
pub fn sign(app: &Engine, version: &RoomVersion, event: Map<String, Value>) -> Result<Pdu> {
    let (mut pdu, ready) = ready_to_sign(version, event)?;
    attach_our_signature(app, &mut pdu, app.signing_key.sign_bytes(ready.signing_text.as_bytes()))?;
    Ok(pdu)
}

/// Adds hashes to an event made here and parses it as a PDU, without
/// signing it: a v3+ event ID leaves the signatures out, so the PDU is
/// named already. Answers what signing it takes ([`hashes::prepare_signing`]);
/// [`attach_our_signature`] adds the signature.
fn ready_to_sign(version: &RoomVersion, mut event: Map<String, Value>) -> Result<(Pdu, hashes::ReadyToSign)> {
    let ready = hashes::prepare_signing(&mut event, version).map_err(|error| match error {
        hashes::EventHashError::CanonicalJson(error) => Error::BadJson(error.to_string()),
        error => Error::Internal(format!("cannot sign the event: {error}")),
    })?;
    let event_id = hashes::event_id_with_reference(&event, version, &ready.reference)
        .map_err(|error| Error::Internal(error.to_string()))?;
    let pdu = Pdu::from_json(version, event_id, event).map_err(|error| Error::Internal(error.to_string()))?;
    Ok((pdu, ready))
}

/// Adds our `signature` (of the text [`ready_to_sign`] answered) to `pdu`.
fn attach_our_signature(app: &Engine, pdu: &mut Pdu, signature: String) -> Result<()> {
    hashes::attach_signature(&mut pdu.json, &app.config.server_name, &app.signing_key.key_id, signature)
        .map_err(|error| Error::Internal(format!("cannot sign the event: {error}")))
}

/// Redacting someone else's event takes the `redact` power level.
fn check_redaction_allowed(
    app: &Engine,
    version: &RoomVersion,
    state: &dyn StateLookup,
    redaction: &Pdu,
) -> Result<()> {
    let Some(target_id) = &redaction.redacts else {
        return Err(Error::BadJson("a redaction needs `redacts`".into()));
    };
    let target = app.storage().event(target_id)?;
    let Some(target) = target.filter(|target| target.room_id == redaction.room_id) else {
        return Err(Error::NotFound("the event to redact is not in this room".into()));
    };
    if target.sender != redaction.sender {
        let power = current_power(app, version, state);
        if !power.has_named_level(&redaction.sender, "redact") {
            return Err(Error::Forbidden("you may not redact other users' events".into()));
        }
    }
    Ok(())
}

/// Stores an authorized local event on top of `state`, applies what it does
/// (redactions), and wakes the syncs of everyone concerned.
fn persist_local(
    app: &Engine,
    version: &RoomVersion,
    pdu: &Pdu,
    state: &dyn StateLookup,
    txn: Option<Transaction<'_>>,
    audience: Audience,
) -> Result<()> {
    let parent_group = app.storage().room_state_group(&pdu.room_id)?;
    let key = pdu.state_key.as_ref().map(|state_key| (pdu.kind.clone(), state_key.clone()));
    let replaces_state = key.as_ref().and_then(|(kind, state_key)| state.event_id(app, kind, state_key));
    let (state_after, current_state) = match &key {
        Some(key) => {
            let mut changes = StateMap::new();
            changes.insert(key.clone(), pdu.event_id.clone());
            let membership = (pdu.kind == "m.room.member")
                .then(|| pdu.content.get("membership").and_then(Value::as_str).map(str::to_owned))
                .flatten();
            (
                StateAfter::Delta { parent: parent_group, changes },
                vec![(key.clone(), pdu.event_id.clone(), membership)],
            )
        }
        None => (StateAfter::Same(parent_group), Vec::new()),
    };
    // The other servers in the room get the event; a remote user leaving,
    // kicked or banned hears of it too (invites travel by the federation
    // invite call instead). A local event changes no remote membership but
    // those, so the servers are the same before and after it.
    let target_server = (pdu.kind == "m.room.member")
        .then(|| pdu.content.get("membership").and_then(Value::as_str))
        .flatten()
        .filter(|membership| matches!(*membership, "leave" | "ban"))
        .and(pdu.state_key.as_deref())
        .and_then(|target| target.split_once(':').map(|(_, server)| server));
    // Who hears of it: the joined and invited members waiting in a sync,
    // and the servers of the joined members.
    let (members, destinations) = match audience {
        Audience::Members => {
            let members = members_to_wake(app, &pdu.room_id)?;
            let destinations = outbox::destinations(app, &pdu.room_id, target_server)?;
            (members, destinations)
        }
        Audience::RoomInCreation => (Vec::new(), Vec::new()),
    };
    // Whether a member event's target was joined before it (for the push
    // audience's member count); a join by someone not joined before may
    // start sharing a room with users whose device lists we cached earlier.
    let target_was_joined = match pdu.kind.as_str() {
        "m.room.member" => Some(was_joined(app, replaces_state.as_deref())?),
        _ => None,
    };
    let new_join = target_was_joined == Some(false)
        && pdu.content.get("membership").and_then(Value::as_str) == Some("join");
    let stream_ordering = app.next_stream_id();
    let new_event = NewEvent {
        replaces_state: replaces_state.as_deref(),
        device_id: txn.map(|txn| txn.device_id),
        txn_id: txn.map(|txn| txn.txn_id),
        ..NewEvent::of(pdu, stream_ordering)
    };
    let actions = match audience {
        Audience::Members => push_actions::actions_at(app, pdu, parent_group)?,
        Audience::RoomInCreation => push_actions::actions_in_creation(app, pdu, parent_group)?,
    };
    let update = CurrentUpdate {
        state: current_state,
        replace_all: false,
        extremities: vec![pdu.event_id.clone()],
        outbox: destinations,
        pushes: actions.pushes,
        unread: actions.unread,
    };
    // Every caller runs in a piece of work that fails with this error.
    let group = app.storage().persist_event_in_work(&new_event, state_after, &update)?;
    if let Some(target) = pdu.state_key.as_deref().filter(|_| new_join) {
        remote_devices::note_join(app, &pdu.room_id, target)?;
    }
    if pdu.state_key.is_some() {
        app.push_audiences.state_stored(app, pdu, parent_group, group, target_was_joined);
    }
    if pdu.kind == "m.room.redaction" {
        apply_redaction(app, version, pdu)?;
    }
    unread::forget_departed(app, pdu)?;
    app.search_index.note_new_events();
    let also = pdu.state_key.as_deref().filter(|_| pdu.kind == "m.room.member");
    app.notifier.wake(members.iter().map(String::as_str).chain(also));
    for destination in &update.outbox {
        outbox::nudge(app, destination);
    }
    app.push_queue.kick(&update.pushes);
    Ok(())
}

/// Whether a member event (the one a new member event replaces) is a join.
pub(crate) fn was_joined(app: &Engine, member_event_id: Option<&str>) -> Result<bool> {
    let Some(event_id) = member_event_id else { return Ok(false) };
    let event = app.storage().event(event_id)?;
    Ok(event.and_then(|event| event.json.get("content")?.get("membership")?.as_str().map(|m| m == "join"))
        == Some(true))
}

/// Replaces the target's stored JSON with its redacted form (keeping the
/// redaction's ID), once the redaction is in the room.
///
/// Not applied (the events are kept, and redact nothing): a redaction naming
/// itself, and one naming a redaction that names it back. Both are possible
/// in room versions 1 and 2, where the sender picks event IDs, and neither
/// means anything. Applying redactions and showing them
/// (`unsigned.redacted_because`) never follows a chain of redactions, so
/// longer cycles cost nothing either.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#redactions>.
pub(crate) fn apply_redaction(app: &Engine, version: &RoomVersion, redaction: &Pdu) -> Result<()> {
    let Some(target_id) = &redaction.redacts else { return Ok(()) };
    if *target_id == redaction.event_id {
        return Ok(());
    }
    let Some(target) = app.storage().event(target_id)? else { return Ok(()) };
    if target.room_id != redaction.room_id || target.redacted_by.is_some() {
        return Ok(());
    }
    // Top level before v11, in `content` from v11.
    let target_redacts = target.json.get("redacts").or_else(|| target.json.get("content")?.get("redacts"));
    if target.kind == "m.room.redaction"
        && target_redacts.and_then(Value::as_str) == Some(&redaction.event_id)
    {
        return Ok(());
    }
    let redacted = redaction::redact(&target.json, version);
    app.storage().redact_event(target_id, &redacted, &redaction.event_id)?;
    app.pdu_cache.forget(target_id);
    unread::forget_redacted(app, &target)?;
    Ok(())
}

/// Wakes the syncs of a room's joined and invited members (and of `also`, the
/// target of a membership change).
pub fn wake_room(app: &Engine, room_id: &str, also: Option<&str>) {
    let members = members_to_wake(app, room_id).unwrap_or_default();
    app.notifier.wake(members.iter().map(String::as_str).chain(also));
}

/// A room's joined and invited members whose syncs an event in it wakes:
/// those waiting in one now. Only local users sync here and few wait at
/// once, so they are looked up in the room rather than the room's members
/// read (a room of 50,000 ghosts of a bridge wakes no one, at no cost).
fn members_to_wake(app: &Engine, room_id: &str) -> Result<Vec<String>> {
    let waiting = app.notifier.waiting();
    let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
    app.storage().members_among(room_id, &waiting, &["join", "invite"])
}

/// The membership content for a local user joining or being invited: their
/// profile's display name and avatar.
pub fn member_content(
    app: &Engine,
    user_id: &str,
    membership: &str,
    extra: Option<&Map<String, Value>>,
) -> Result<Value> {
    let mut content = Map::new();
    if let Some(extra) = extra {
        content.extend(extra.clone());
    }
    content.insert("membership".into(), json!(membership));
    if matches!(membership, "join" | "invite" | "knock") {
        if let Some(user) = app.storage().user(user_id)? {
            if let Some(name) = user.displayname {
                content.entry("displayname").or_insert(json!(name));
            }
            if let Some(url) = user.avatar_url {
                content.entry("avatar_url").or_insert(json!(url));
            }
        }
    }
    Ok(Value::Object(content))
}

/// Whether `user_id` has the power, in the room's current state, to send a
/// state event of `kind` (the check Synapse applies to directory and alias
/// changes with `m.room.canonical_alias`, and to upgrades with `m.room.tombstone`).
pub fn can_send_state(app: &Engine, room_id: &str, user_id: &str, kind: &str) -> Result<bool> {
    let version = room_version(app, room_id)?;
    let state = app.storage().current_state(room_id)?;
    let power = current_power(app, &version, &state);
    let needed = power.levels.required_level(kind, true);
    Ok(power.user_power(user_id) >= crate::protocol::power_levels::UserPower::Level(needed))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;

    use super::*;
    use crate::protocol::signing::SigningKey;

    fn sign_v12(key: &SigningKey, mut event: Map<String, Value>) -> Result<Pdu> {
        let version = RoomVersion::from_id("12").unwrap();
        hashes::sign_event(&mut event, &version, "hearth.example", key).unwrap();
        let event_id = hashes::event_id(&event, &version).unwrap();
        Ok(Pdu::from_json(&version, event_id, event).unwrap())
    }

    #[test]
    fn identical_creates_in_one_millisecond_get_distinct_room_ids() {
        let key = SigningKey::generate("test").unwrap();
        let event = json!({
            "auth_events": [], "content": { "room_version": "12" }, "depth": 1,
            "origin_server_ts": 1_700_000_000_000_i64, "prev_events": [],
            "sender": "@alice:hearth.example", "state_key": "", "type": "m.room.create",
        });
        let Value::Object(event) = event else { unreachable!() };
        // The collision: the same create twice names the same room.
        let first = sign_v12(&key, event.clone()).unwrap();
        assert_eq!(first.room_id, sign_v12(&key, event.clone()).unwrap().room_id);

        let rooms = RefCell::new(HashSet::new());
        for n in 0..5_i64 {
            let pdu = unused_room_create(
                event.clone(),
                |event| sign_v12(&key, event),
                |room_id| Ok(rooms.borrow().contains(room_id)),
            )
            .unwrap();
            assert_eq!(pdu.json.get("origin_server_ts"), Some(&json!(1_700_000_000_000_i64 + n)));
            assert!(rooms.borrow_mut().insert(pdu.room_id.clone()), "{} taken twice", pdu.room_id);
        }
        let full = |_: &str| Ok(true);
        let answer = unused_room_create(event, |event| sign_v12(&key, event), full);
        assert!(matches!(answer, Err(Error::LimitExceeded { .. })));
    }
}
