//! Answers made of a room's state and its auth chain, written while they are
//! sent: the resident server's answer to `send_join` (the state before the
//! join) and `/state` and `/state_ids` (the state before an event, as events
//! or as IDs). The state and its auth chain are read a page of events at a
//! time on a connection of their own (`storage::StateReader`) and written
//! out as they are read, so answering for a room of 50,000 members holds a
//! page, never the whole answer. The joining side of `send_join`'s answer is
//! `remote::join_answer`.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>,
//! <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_joinroomideventid>,
//! <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1stateroomid>,
//! <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1state_idsroomid>.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value};
use smol::channel::Sender;

use super::Engine;
use super::incoming::{self, Before, KnownStates};
use super::media::{self, ContentStream, Slot, Stop};
use crate::error::{Error, Result};
use crate::request::Body;
use crate::storage::{PageLimit, StateReader, StoredEvent};

/// What a page holds at most: 500 events (a big room's state events are
/// well under 1 KiB each, so a page is read in a few milliseconds and the
/// event loop turns between pages) and, for rooms of bigger events (a PDU
/// may be 64 KiB), no more events once 512 KiB of JSON is read.
pub const PAGE: PageLimit = PageLimit { events: 500, bytes: 512 << 10 };

/// Answers streamed at once: each holds a SQLite connection of its own (a
/// file descriptor, a small page cache and a temporary file) and up to
/// three pages; past this, answers wait for a turn before their first
/// page (at most the stall deadline), so a burst of requests cannot add up.
pub const MAX_ANSWERS: usize = 4;

/// Answers one server may have under way, streaming or waiting for a turn:
/// a peer that reads as slowly as the stall deadline lets it holds at most
/// this many of the [`MAX_ANSWERS`] turns, and the others stay for everyone
/// else. A server asking for more is told to retry.
pub const MAX_ANSWERS_PER_SERVER: usize = 2;

/// Answers under way in all, streaming or waiting for a turn (a waiting
/// answer holds a response and a task, nothing read yet).
pub const MAX_PENDING_ANSWERS: usize = 16;

const _: () = assert!(MAX_ANSWERS_PER_SERVER < MAX_ANSWERS, "another server can always stream");

/// When a server over [`MAX_ANSWERS_PER_SERVER`] may ask again.
const RETRY_AFTER_MS: u64 = 2_000;

/// Pages written ahead of the socket: the answer holds at most this many
/// and the one being read.
const PAGES_AHEAD: usize = 2;

/// Which answer: its lists' names, and whether they hold events or IDs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Form {
    /// `send_join`: `state` and `auth_chain`, events; the deprecated v1
    /// answer is `[200, answer]`.
    SendJoin { v1: bool },
    /// `/state`: `pdus` and `auth_chain`, events.
    State,
    /// `/state_ids`: `pdu_ids` and `auth_chain_ids`, event IDs.
    StateIds,
}

impl Form {
    /// The names of the state list and the auth chain list.
    fn list_names(self) -> (&'static str, &'static str) {
        match self {
            Form::SendJoin { .. } => ("state", "auth_chain"),
            Form::State => ("pdus", "auth_chain"),
            Form::StateIds => ("pdu_ids", "auth_chain_ids"),
        }
    }

    fn ids(self) -> bool {
        self == Form::StateIds
    }

    fn v1(self) -> bool {
        self == Form::SendJoin { v1: true }
    }
}

/// Where an answer's state is read from.
#[derive(Debug, PartialEq)]
pub enum StateSource {
    /// A state group's state, but for the entry at `except`, which holds
    /// `instead` (if anything): the state after a state event, turned into
    /// the state before it.
    Group { group: i64, except: Option<(String, String)>, instead: Option<String> },
    /// A state already in hand (resolved from several states): its event IDs.
    Listed(Vec<String>),
}

/// An answer to write.
pub struct StateAnswer {
    pub form: Form,
    /// The answer's other fields (`send_join`'s `origin`, `event`,
    /// `members_omitted`, `servers_in_room`; none for `/state`).
    pub fields: Map<String, Value>,
    pub state: StateSource,
    /// Events whose auth chains join the answer's besides the state's (the
    /// join event of `send_join`).
    pub chain_also: Vec<String>,
    /// What the answer is, for the log.
    pub label: String,
}

/// A turn for an answer to `server`, to take before the work its answer
/// follows (a `send_join` takes it before storing the join), or 429
/// `M_LIMIT_EXCEEDED` when the server has [`MAX_ANSWERS_PER_SERVER`] under
/// way or everyone [`MAX_PENDING_ANSWERS`].
pub fn take_turn(app: &Engine, server: &str) -> Result<Slot> {
    app.state_answer_servers.try_take(server).ok_or(Error::LimitExceeded { retry_after_ms: RETRY_AFTER_MS })
}

/// Where the state before `event` is read from (the state `/state` gives):
/// the state after its single prev event; else the state it was stored
/// with (its own group, which holds the state after it) with its own key
/// set back to what it replaced; else (history fetched at a join, stored
/// with the state before the join rather than its own, and outliers) the
/// resolution of its prev events' states, held whole.
pub fn state_before(app: &Engine, event: &StoredEvent) -> Result<StateSource> {
    let version = super::room_version(app, &event.room_id)?;
    let pdu = super::to_pdu(&version, event).ok_or_else(|| Error::Internal("unreadable event".into()))?;
    if pdu.prev_events.is_empty() {
        return Ok(StateSource::Listed(Vec::new()));
    }
    if let [prev_id] = pdu.prev_events.as_slice() {
        let prev = app.storage().event(prev_id)?;
        if let Some(group) = prev.filter(|prev| !prev.outlier).and_then(|prev| prev.state_group) {
            return Ok(StateSource::Group { group, except: None, instead: None });
        }
    }
    let own_state = !event.outlier && 0 <= event.stream_ordering;
    if let Some(group) = event.state_group.filter(|_| own_state) {
        let except = event.state_key.as_ref().map(|state_key| (event.kind.clone(), state_key.clone()));
        let instead = except.as_ref().and(event.replaces_state.clone());
        return Ok(StateSource::Group { group, except, instead });
    }
    Ok(match incoming::state_before(app, &version, &pdu, &KnownStates::new())? {
        Before::Group(group) => StateSource::Group { group, except: None, instead: None },
        Before::Map(state) => StateSource::Listed(state.into_values().collect()),
    })
}

/// The answer as a response body of unknown length, written by a task of
/// its own as the socket takes it, once a turn ([`MAX_ANSWERS`]) is free;
/// `slot` (from [`take_turn`]) is given back when it ends.
/// The stream fails (and the connection is cut before the body's end) if
/// reading fails, or no turn comes or the peer takes nothing for
/// `limits.stall_timeout_secs`.
pub fn stream(app: &Rc<Engine>, answer: StateAnswer, slot: Slot) -> Body {
    let (sender, pieces) = smol::channel::bounded(PAGES_AHEAD);
    let stall = Duration::from_secs(app.config.limits.stall_timeout_secs);
    let producer = Producer { sender, stall };
    let app = app.clone();
    app.executor
        .clone()
        .spawn(async move {
            let _slot = slot;
            match producer.write(&app, &answer).await {
                Ok(()) | Err(Stop::Gone) => {}
                Err(Stop::Stalled) => {
                    log::info!("the {} stalled: given up", answer.label);
                    producer.sender.close();
                }
                Err(Stop::Failed(error)) => {
                    log::warn!("the {} failed: {error}", answer.label);
                    if producer.sender.try_send(Err(io::Error::other(error.to_string()))).is_err() {
                        producer.sender.close();
                    }
                }
            }
        })
        .detach();
    Body::Unsized { reader: Box::new(ContentStream::new(pieces, None)) }
}

struct Producer {
    sender: Sender<io::Result<Vec<u8>>>,
    stall: Duration,
}

impl Producer {
    async fn write(&self, app: &Engine, answer: &StateAnswer) -> Result<(), Stop> {
        // The reader sees committed data only: a join just stored first.
        app.durable().await?;
        let _turn = media::take_turn(&app.state_answers, self.stall).await?;
        let reader = StateReader::open(&app.config.database_path())?;
        let ids = answer.form.ids();
        let mut text = answer_opening(answer)?;
        let mut list = JsonList::default();
        match &answer.state {
            StateSource::Group { group, except, instead } => {
                let mut walk = reader.walk(*group)?;
                while let Some(page) = reader.state_page(&mut walk, PAGE)? {
                    let mut listed = Vec::with_capacity(page.len());
                    for entry in &page {
                        if except
                            .as_ref()
                            .is_some_and(|(kind, key)| *kind == entry.kind && *key == entry.state_key)
                        {
                            continue;
                        }
                        match (&entry.json, ids) {
                            (_, true) => list.push_string(&mut text, &entry.event_id)?,
                            (Some(json), false) => list.push(&mut text, json),
                            // Not stored here: no event to give.
                            (None, false) => continue,
                        }
                        listed.push(entry.event_id.as_str());
                    }
                    reader.start_auth_chain(&listed)?;
                    drop(listed);
                    self.send(std::mem::take(&mut text)).await?;
                }
                if let Some(instead) = instead {
                    self.write_listed(&reader, ids, &mut list, &mut text, std::slice::from_ref(instead))
                        .await?;
                }
            }
            StateSource::Listed(event_ids) => {
                for page in event_ids.chunks(PAGE.events) {
                    self.write_listed(&reader, ids, &mut list, &mut text, page).await?;
                }
            }
        }
        let also: Vec<&str> = answer.chain_also.iter().map(String::as_str).collect();
        reader.start_auth_chain(&also)?;
        let (_, chain_name) = answer.form.list_names();
        text.push_str("],");
        push_json_string(&mut text, chain_name)?;
        text.push_str(":[");
        let mut list = JsonList::default();
        let mut after = 0;
        while let (page, Some(last)) = reader.auth_chain_page(after, PAGE)? {
            after = last;
            for (event_id, json) in &page {
                if ids {
                    list.push_string(&mut text, event_id)?;
                } else {
                    list.push(&mut text, json);
                }
            }
            self.send(std::mem::take(&mut text)).await?;
        }
        text.push_str("]}");
        if answer.form.v1() {
            text.push(']');
        }
        self.send(text).await?;
        // The end mark: the body is complete.
        self.hand_over(Vec::new()).await
    }

    /// Writes the state events `event_ids` (their IDs when `ids`; events
    /// not stored here are left out of a list of events) and starts the
    /// auth chain from them.
    async fn write_listed(
        &self,
        reader: &StateReader,
        ids: bool,
        list: &mut JsonList,
        text: &mut String,
        event_ids: &[String],
    ) -> Result<(), Stop> {
        let mut listed = Vec::with_capacity(event_ids.len());
        for event_id in event_ids {
            if ids {
                list.push_string(text, event_id)?;
            } else if let Some(json) = reader.event_json(event_id)? {
                list.push(text, &json);
            } else {
                continue;
            }
            listed.push(event_id.as_str());
        }
        reader.start_auth_chain(&listed)?;
        self.send(std::mem::take(text)).await
    }

    /// Hands a piece of the body over (nothing if it is empty: an empty
    /// piece is the end mark).
    async fn send(&self, piece: String) -> Result<(), Stop> {
        if piece.is_empty() {
            return Ok(());
        }
        self.hand_over(piece.into_bytes()).await
    }

    /// Hands `piece` over, waiting at most the stall deadline for room, and
    /// lets the loop turn.
    async fn hand_over(&self, piece: Vec<u8>) -> Result<(), Stop> {
        let sent = media::hand_over(&self.sender, piece, self.stall).await;
        smol::future::yield_now().await;
        sent
    }
}

/// The answer up to the start of its state list: `{"origin":...,...,"state":[`
/// (after `[200,` in the v1 form of `send_join`).
fn answer_opening(answer: &StateAnswer) -> Result<String> {
    let fields = serde_json::to_string(&answer.fields).map_err(|error| Error::Internal(error.to_string()))?;
    let mut text = String::with_capacity(fields.len() + 16);
    if answer.form.v1() {
        text.push_str("[200,");
    }
    // `{...}` without its closing brace, then the lists.
    text.push_str(fields.strip_suffix('}').unwrap_or("{"));
    if !answer.fields.is_empty() {
        text.push(',');
    }
    let (state_name, _) = answer.form.list_names();
    push_json_string(&mut text, state_name)?;
    text.push_str(":[");
    Ok(text)
}

/// `value` as a JSON string (quoted, escaped) at the end of `text`.
fn push_json_string(text: &mut String, value: &str) -> Result<()> {
    let quoted = serde_json::to_string(value).map_err(|error| Error::Internal(error.to_string()))?;
    text.push_str(&quoted);
    Ok(())
}

/// Items of a JSON list written one at a time: commas between them.
#[derive(Default)]
struct JsonList {
    started: bool,
}

impl JsonList {
    /// Adds `item`, JSON text.
    fn push(&mut self, text: &mut String, item: &str) {
        if self.started {
            text.push(',');
        }
        self.started = true;
        text.push_str(item);
    }

    /// Adds `item` as a JSON string.
    fn push_string(&mut self, text: &mut String, item: &str) -> Result<()> {
        if self.started {
            text.push(',');
        }
        self.started = true;
        push_json_string(text, item)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rooms::media::Slots;

    fn answer(form: Form, fields: Value) -> StateAnswer {
        let Value::Object(fields) = fields else { panic!() };
        StateAnswer {
            form,
            fields,
            state: StateSource::Listed(Vec::new()),
            chain_also: Vec::new(),
            label: "answer".into(),
        }
    }

    /// Writes an answer's pieces as `Producer::write` does: the opening,
    /// the state items, the auth chain's.
    fn written(form: Form, fields: Value, state: &[&str], chain: &[&str]) -> Value {
        let mut text = answer_opening(&answer(form, fields)).unwrap();
        let mut list = JsonList::default();
        for item in state {
            if form.ids() { list.push_string(&mut text, item).unwrap() } else { list.push(&mut text, item) }
        }
        text.push_str("],");
        push_json_string(&mut text, form.list_names().1).unwrap();
        text.push_str(":[");
        let mut list = JsonList::default();
        for item in chain {
            if form.ids() { list.push_string(&mut text, item).unwrap() } else { list.push(&mut text, item) }
        }
        text.push_str("]}");
        if form.v1() {
            text.push(']');
        }
        serde_json::from_str(&text).unwrap()
    }

    /// The pieces an answer is written in make valid JSON of the spec's
    /// shape in each form.
    #[test]
    fn an_answer_written_in_pieces_is_the_spec_shape() {
        for v1 in [false, true] {
            let fields = json!({"origin": "x", "members_omitted": false, "servers_in_room": ["x"]});
            let text = written(
                Form::SendJoin { v1 },
                fields.clone(),
                &[r#"{"a":1}"#, r#"{"b":[2]}"#],
                &[r#"{"c":3}"#],
            );
            let mut expected = fields.clone();
            expected["state"] = json!([{"a": 1}, {"b": [2]}]);
            expected["auth_chain"] = json!([{"c": 3}]);
            let expected = if v1 { json!([200, expected]) } else { expected };
            assert_eq!(text, expected);
        }
        let text = written(Form::SendJoin { v1: false }, json!({}), &[], &[]);
        assert_eq!(text, json!({"state": [], "auth_chain": []}));
        let text = written(Form::State, json!({}), &[r#"{"a":1}"#], &[r#"{"c":3}"#]);
        assert_eq!(text, json!({"pdus": [{"a": 1}], "auth_chain": [{"c": 3}]}));
        // IDs are JSON strings, escaped.
        let text = written(Form::StateIds, json!({}), &["$a", "$b\"c"], &["$d"]);
        assert_eq!(text, json!({"pdu_ids": ["$a", "$b\"c"], "auth_chain_ids": ["$d"]}));
    }

    /// A server gets at most two answers under way, and all servers sixteen
    /// in all: a slow peer cannot hold every turn.
    #[test]
    fn a_server_has_at_most_two_answers_under_way() {
        let slots = Slots::new(MAX_PENDING_ANSWERS, MAX_ANSWERS_PER_SERVER);
        let first = slots.try_take("slow.example").unwrap();
        let _second = slots.try_take("slow.example").unwrap();
        assert!(slots.try_take("slow.example").is_none(), "a third for the same server");
        let others: Vec<Slot> =
            (0..MAX_PENDING_ANSWERS - 2).map(|n| slots.try_take(&format!("s{n}.example")).unwrap()).collect();
        assert!(slots.try_take("late.example").is_none(), "over the bound in all");
        drop(first);
        assert!(slots.try_take("slow.example").is_some(), "a turn given back is free again");
        drop(others);
    }
}
