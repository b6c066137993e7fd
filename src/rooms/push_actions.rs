//! What an event does for each local member, decided once, when it is
//! stored: each joined local member's push rules are evaluated over it, and
//! the outcome feeds both the unread counts (`unread`, kept in the same
//! transaction as the event) and the notifications queued for their `http`
//! pushers (`push_queue`). This is what Synapse's bulk push rule evaluator
//! does; /sync then only reads counters.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>:
//! an event counts when the first matching rule's actions say `notify`, and
//! as a highlight when they also set the `highlight` tweak.
//!
//! Decided at write time, so:
//! - a change of a user's push rules (or ignore list) applies to events
//!   stored after it, not to those already counted: the spec leaves this to
//!   the server, and Synapse does the same;
//! - the room facts the conditions read (member count, the recipient's
//!   display name, power levels) are those of the room's current state when
//!   the event arrives;
//! - a user's own events never count, nor do an ignored user's (non-state)
//!   events, soft-failed events, or history fetched by backfill;
//! - a redaction takes its target out of the counts (its content is gone:
//!   `unread::forget_redacted`);
//! - events arriving over federation count like local ones;
//! - an application service's exclusive users (a bridge's ghosts) are
//!   nobody's audience, as in Synapse: no counts, no pushes.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde_json::Value;

use crate::error::Result;
use crate::protocol::identifiers::{EventId, MAX_IDENTIFIER_BYTES};
use crate::protocol::pdu::Pdu;
use crate::protocol::push_rules::Outcome;
use crate::rooms::Engine;
use crate::rooms::engine::RegisteredService;
use crate::storage::{MAIN_THREAD, PusherKey, QueuedPush, UnreadMark};

use super::push_queue::tweaks;
use super::unread::RoomFacts;

/// Rooms whose audience is kept in memory at most; past this the cache
/// starts over (an entry is a member list with display names).
const MAX_CACHED_ROOMS: usize = 64;

/// What evaluating an event needs of its room: the joined local members
/// with their display names, and the facts the conditions read. It depends
/// on the room's current state only, so it is kept per room with the state
/// group it was read at, and read again when the room's state group moved
/// on. A member event that changes the current state by itself moves the
/// entry on with it ([`Audiences::state_stored`]: the one member added,
/// renamed or removed, the member count updated), so that a join costs the
/// same in a room of ten members or of fifty thousand; any other state
/// change forgets it.
///
/// A state group's ID is reused when the transaction that wrote it is
/// rolled back, so an entry read or moved on inside one could be taken for
/// the next change's group: every entry is forgotten when the storage has
/// rolled back work since ([`crate::storage::Storage::rollbacks`]).
#[derive(Default)]
pub struct Audiences {
    rooms: RefCell<HashMap<String, Rc<Audience>>>,
    /// The storage's rollback count the entries were made under.
    rollbacks: Cell<u64>,
}

struct Audience {
    state_group: Option<i64>,
    /// Joined local members (exclusive users of application services left
    /// out) and their display names, by user ID.
    members: BTreeMap<String, Option<String>>,
    facts: RoomFacts,
}

impl Audiences {
    /// Forgets a room's audience (a state event was stored in it).
    pub fn forget(&self, room_id: &str) {
        self.rooms.borrow_mut().remove(room_id);
    }

    /// Forgets every room's audience (the application services, whose
    /// exclusive users are left out of them, were reloaded).
    pub fn forget_all(&self) {
        self.rooms.borrow_mut().clear();
    }

    /// A state event, `pdu`, was stored in its room, whose state group went
    /// from `parent` to `group`. `was_joined` is whether a member event's
    /// target was joined before it, when the event changed the current state
    /// by itself (`None` otherwise): the audience read at `parent` then
    /// takes the change; in every other case it is forgotten.
    pub fn state_stored(
        &self,
        app: &Engine,
        pdu: &Pdu,
        parent: Option<i64>,
        group: Option<i64>,
        was_joined: Option<bool>,
    ) {
        self.forget_after_rollback(app);
        let mut rooms = self.rooms.borrow_mut();
        let (Some(was_joined), Some(user_id)) = (was_joined, pdu.state_key.as_deref()) else {
            rooms.remove(&pdu.room_id);
            return;
        };
        let entry = rooms.get_mut(&pdu.room_id).filter(|audience| audience.state_group == parent);
        // Shared (an evaluation holds it): forgotten rather than copied.
        let Some(audience) = entry.and_then(Rc::get_mut).filter(|_| pdu.kind == "m.room.member") else {
            rooms.remove(&pdu.room_id);
            return;
        };
        let joined = pdu.content.get("membership").and_then(Value::as_str) == Some("join");
        if joined != was_joined {
            audience.facts.count_member(joined);
        }
        if app.is_local_user(user_id) && !is_exclusive_user(&app.app_services(), user_id) {
            if joined {
                let name = pdu.content.get("displayname").and_then(Value::as_str).map(str::to_owned);
                audience.members.insert(user_id.to_owned(), name);
            } else {
                audience.members.remove(user_id);
            }
        }
        audience.state_group = group;
    }

    /// The audience of a room whose current state group is `state_group`.
    fn of(&self, app: &Engine, room_id: &str, state_group: Option<i64>) -> Result<Rc<Audience>> {
        self.forget_after_rollback(app);
        let cached = self.rooms.borrow().get(room_id).cloned();
        if let Some(audience) = cached.filter(|audience| audience.state_group == state_group) {
            return Ok(audience);
        }
        let members = audience_members(app, room_id)?;
        let audience = Rc::new(Audience { state_group, members, facts: RoomFacts::of_room(app, room_id)? });
        let mut rooms = self.rooms.borrow_mut();
        if rooms.len() >= MAX_CACHED_ROOMS {
            rooms.clear();
        }
        rooms.insert(room_id.to_owned(), audience.clone());
        Ok(audience)
    }

    /// Forgets every entry if work was rolled back since they were made.
    fn forget_after_rollback(&self, app: &Engine) {
        let rollbacks = app.storage().rollbacks();
        if self.rollbacks.replace(rollbacks) != rollbacks {
            self.rooms.borrow_mut().clear();
        }
    }
}

/// Whether `user_id` is an exclusive user of one of `services` (a bridge's
/// ghost), whom no event notifies.
fn is_exclusive_user(services: &[RegisteredService], user_id: &str) -> bool {
    services.iter().any(|registered| registered.service.has_exclusive_user(user_id))
}

/// The joined local members of a room with their display names in it,
/// an application service's exclusive users (a bridge's ghosts) left out,
/// as Synapse leaves them out: they get no counts and no pushes, their
/// service sees the room's events in its transactions. A bridged room can
/// hold thousands of them, so their names are not even read.
fn audience_members(app: &Engine, room_id: &str) -> Result<BTreeMap<String, Option<String>>> {
    let server_name = app.config.server_name.as_str();
    let services = app.app_services();
    if services.is_empty() {
        return Ok(app.storage().local_joined_members(room_id, server_name, true)?.into_iter().collect());
    }
    let all = app.storage().local_joined_members(room_id, server_name, false)?;
    let count = all.len();
    let kept: Vec<String> = all
        .into_iter()
        .map(|(user_id, _)| user_id)
        .filter(|user_id| !is_exclusive_user(&services, user_id))
        .collect();
    if kept.len() == count {
        return Ok(app.storage().local_joined_members(room_id, server_name, true)?.into_iter().collect());
    }
    kept.into_iter()
        .map(|user_id| {
            let member = super::current_state_content(app, room_id, "m.room.member", &user_id)?;
            let name = member.and_then(|member| member.get("displayname")?.as_str().map(str::to_owned));
            Ok((user_id, name))
        })
        .collect()
}

/// The local members an event stored in the room now is evaluated for (its
/// joined local members but the exclusive users of application services):
/// the only users who can have it counted unread.
pub fn audience(app: &Engine, room_id: &str) -> Result<Vec<String>> {
    // Bound first: the storage is borrowed again below.
    let state_group = app.storage().room_state_group(room_id)?;
    let audience = app.push_audiences.of(app, room_id, state_group)?;
    Ok(audience.members.keys().cloned().collect())
}

/// What storing an event queues besides the event itself.
#[derive(Default)]
pub struct Actions {
    /// Notifications for push gateways: one per `http` pusher of each
    /// recipient the event notifies.
    pub pushes: Vec<QueuedPush>,
    /// The joined local members whose unread counts it raises.
    pub unread: Vec<UnreadMark>,
}

/// The actions of `pdu`, about to be stored in its room: for each joined
/// local member other than the sender (and a local user it invites, who
/// gets pushes only, as `.m.rule.invite_for_me` is for them) whose rules say
/// `notify`. `state_group` is the room's current state group (the caller
/// reads it before storing the event, and gives it to
/// [`Audiences::state_stored`] after).
pub fn actions_at(app: &Engine, pdu: &Pdu, state_group: Option<i64>) -> Result<Actions> {
    let server_name = app.config.server_name.as_str();
    let audience = app.push_audiences.of(app, &pdu.room_id, state_group)?;
    let (members, facts) = (&audience.members, &audience.facts);
    // A local user invited is no member yet.
    let invited = (pdu.kind == "m.room.member"
        && pdu.content.get("membership").and_then(Value::as_str) == Some("invite"))
    .then_some(pdu.state_key.as_deref())
    .flatten()
    .filter(|user_id| user_id.split_once(':').is_some_and(|(_, server)| server == server_name))
    .filter(|user_id| !members.contains_key(*user_id));
    if members.keys().all(|user_id| *user_id == pdu.sender) && invited.is_none() {
        return Ok(Actions::default());
    }
    let recipients: Vec<&str> = members.keys().map(String::as_str).collect();
    let pushers = app.storage().http_pushers_of(&recipients)?;
    let thread_id = thread_of(app, pdu)?;
    let mut actions = Actions::default();
    for (user_id, display_name) in members {
        let theirs: Vec<&PusherKey> = pushers.iter().filter(|key| key.user_id == *user_id).collect();
        let recipient =
            Recipient { user_id, display_name: display_name.as_deref(), has_pushers: !theirs.is_empty() };
        let Some(outcome) = evaluate(app, pdu, facts, &recipient)? else { continue };
        actions.unread.push(UnreadMark {
            user_id: user_id.clone(),
            thread_id: thread_id.clone(),
            highlight: outcome.highlight,
        });
        actions.pushes.extend(theirs.into_iter().map(|key| outcome.push_for(key)));
    }
    if let Some(invited) = invited {
        let theirs = app.storage().http_pushers_of(&[invited])?;
        actions.pushes.extend(invitee_pushes(app, pdu, facts, invited, &theirs)?);
    }
    Ok(actions)
}

/// The actions of a local invite made while its room is being created
/// (`createRoom`'s `invite`): nobody but the creator is joined yet, so
/// nothing counts unread, but the invitee's `http` pushers hear of it as
/// they would of a later `/invite` (`.m.rule.invite_for_me`). An invitee
/// without pushers costs one lookup.
pub fn actions_in_creation(app: &Engine, pdu: &Pdu, state_group: Option<i64>) -> Result<Actions> {
    let server_name = app.config.server_name.as_str();
    let invited = (pdu.kind == "m.room.member"
        && pdu.content.get("membership").and_then(Value::as_str) == Some("invite"))
    .then_some(pdu.state_key.as_deref())
    .flatten()
    .filter(|user_id| user_id.split_once(':').is_some_and(|(_, server)| server == server_name));
    let Some(invited) = invited else { return Ok(Actions::default()) };
    let theirs = app.storage().http_pushers_of(&[invited])?;
    if theirs.is_empty() {
        return Ok(Actions::default());
    }
    let audience = app.push_audiences.of(app, &pdu.room_id, state_group)?;
    let pushes = invitee_pushes(app, pdu, &audience.facts, invited, &theirs)?;
    Ok(Actions { pushes, unread: Vec::new() })
}

/// The pushes for a local user `invited` by `pdu` (not a member yet, so
/// their display name is their profile's), one per `http` pusher of
/// theirs (`theirs`), if their rules say `notify`.
fn invitee_pushes(
    app: &Engine,
    pdu: &Pdu,
    facts: &RoomFacts,
    invited: &str,
    theirs: &[PusherKey],
) -> Result<Vec<QueuedPush>> {
    if theirs.is_empty() {
        return Ok(Vec::new());
    }
    let display_name = app.storage().user(invited)?.and_then(|user| user.displayname);
    let recipient = Recipient { user_id: invited, display_name: display_name.as_deref(), has_pushers: true };
    Ok(match evaluate(app, pdu, facts, &recipient)? {
        Some(outcome) => theirs.iter().map(|key| outcome.push_for(key)).collect(),
        None => Vec::new(),
    })
}

/// Whom an event is evaluated for.
struct Recipient<'a> {
    user_id: &'a str,
    /// Their display name in the room, for `contains_display_name`.
    display_name: Option<&'a str>,
    /// Whether they have `http` pushers (else no tweaks are needed).
    has_pushers: bool,
}

/// A recipient's outcome when it notifies.
struct Notifying {
    highlight: bool,
    /// Whether pushes go with `prio: high`.
    high: bool,
    /// The matching rule's tweaks, as JSON text (empty without pushers).
    tweaks: String,
}

impl Notifying {
    fn push_for(&self, key: &PusherKey) -> QueuedPush {
        QueuedPush { pusher: key.clone(), tweaks: self.tweaks.clone(), high: self.high }
    }
}

/// Evaluates the recipient's rules over `pdu`: `None` unless it notifies them.
fn evaluate(
    app: &Engine,
    pdu: &Pdu,
    facts: &RoomFacts,
    recipient: &Recipient<'_>,
) -> Result<Option<Notifying>> {
    let user_id = recipient.user_id;
    if user_id == pdu.sender {
        return Ok(None);
    }
    let rules = app.push_rules.of(app, user_id)?;
    if pdu.state_key.is_none() && rules.ignored.contains(&pdu.sender) {
        return Ok(None);
    }
    let context = facts.context_as(user_id, recipient.display_name);
    let Some((_, rule)) = rules.ruleset.matching_rule(&pdu.json, &context) else { return Ok(None) };
    let outcome = Outcome::of(&rule.actions);
    if !outcome.notify {
        return Ok(None);
    }
    // As Synapse does: `high` wakes the phone for what makes a sound,
    // highlights and encrypted messages (whose rules cannot be read here).
    let high = outcome.highlight || outcome.sound.is_some() || pdu.kind == "m.room.encrypted";
    let tweaks =
        if recipient.has_pushers { Value::Object(tweaks(&rule.actions)).to_string() } else { String::new() };
    Ok(Some(Notifying { highlight: outcome.highlight, high, tweaks }))
}

/// The thread `pdu` is in, for threaded read receipts and per-thread counts:
/// the root of the thread it replies in, the thread of the event it relates
/// to otherwise (a reaction to a thread reply is in that thread), else the
/// main timeline. Spec:
/// <https://spec.matrix.org/latest/client-server-api/#threaded-read-receipts>.
fn thread_of(app: &Engine, pdu: &Pdu) -> Result<String> {
    // What names no event (a remote sender's say-so) is in no thread: a
    // thread ID is kept per recipient, so it must be a bounded event ID.
    let event_id = |text: &str| text.len() <= MAX_IDENTIFIER_BYTES && EventId::parse(text).is_ok();
    let relation = pdu.content.get("m.relates_to");
    let parent = relation.and_then(|relation| relation.get("event_id")).and_then(Value::as_str);
    let Some(parent) = parent.filter(|parent| event_id(parent)) else { return Ok(MAIN_THREAD.to_owned()) };
    let thread = if relation.and_then(|relation| relation.get("rel_type")).and_then(Value::as_str)
        == Some("m.thread")
    {
        Some(parent.to_owned())
    } else {
        app.storage().thread_of(parent)?.filter(|root| event_id(root))
    };
    Ok(thread.unwrap_or_else(|| MAIN_THREAD.to_owned()))
}
