//! Reading a `send_join` or `/state` answer as a stream: the answer is
//! spooled to a file as it arrives, and a helper thread parses it element by
//! element, handing the events of the state (`state`, or `/state`'s `pdus`)
//! and `auth_chain` over in batches, so that a room's state is never held
//! whole (neither as text nor as a JSON tree) and the event loop never
//! parses for long. Memory is bounded by the batch, not by the room.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>
//! (and the deprecated v1, whose answer is `[200, object]`),
//! <https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1stateroomid>.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// Events handed over at a time. What is held at once: the batch being
/// checked (as parsed PDUs, the most of it), those parsed ahead (as text)
/// and the one being parsed.
pub const BATCH: usize = 100;

/// Batches parsed ahead of the one being checked (text, ~100 KiB each for
/// member events): slack for a busy machine, where the parsing thread and
/// the event loop do not always run at once.
const BATCHES_AHEAD: usize = 4;

/// The largest error answer read back from the spool (anything longer is not
/// a Matrix error worth showing).
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// A part of the answer, in the order it arrives.
#[derive(Debug)]
pub enum Piece {
    /// Events of `auth_chain`.
    AuthChain(Vec<Box<RawValue>>),
    /// Events of `state`.
    State(Vec<Box<RawValue>>),
    /// `event`: our join, countersigned for a restricted join.
    Event(Box<RawValue>),
}

/// Which answer is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `send_join` v2: an object with `state`, `auth_chain` and `event`.
    SendJoin,
    /// The deprecated `send_join` v1: `[200, object]`.
    SendJoinV1,
    /// `/state`: an object with `pdus` (the state) and `auth_chain`.
    State,
}

impl Shape {
    /// The key of the list of state events.
    fn state_list(self) -> &'static str {
        match self {
            Shape::SendJoin | Shape::SendJoinV1 => "state",
            Shape::State => "pdus",
        }
    }
}

/// What the parsing thread sends: pieces, then how the parse ended.
enum Parsed {
    Piece(Piece),
    Done(std::result::Result<(), String>),
}

/// The answer's body on disk: a file in the data directory, unlinked as
/// soon as it is created, so that nothing is left behind by a crash.
pub struct Spool {
    file: File,
}

impl Spool {
    /// A fresh, empty spool in `dir`.
    pub fn new(dir: &Path) -> Result<Spool> {
        let path = dir.join(format!("send_join-{}.spool", crate::credentials::random_string(16)));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| Error::Internal(format!("cannot create {}: {error}", path.display())))?;
        std::fs::remove_file(&path)
            .map_err(|error| Error::Internal(format!("cannot unlink {}: {error}", path.display())))?;
        Ok(Spool { file })
    }

    /// Where the body is written as it arrives.
    pub fn sink(&mut self) -> &mut File {
        &mut self.file
    }

    /// The body as JSON if it is a small one (an error answer); else `null`.
    pub fn small_json(&mut self) -> serde_json::Value {
        let mut bytes = Vec::new();
        let read =
            self.file.rewind().and_then(|()| (&self.file).take(MAX_ERROR_BYTES + 1).read_to_end(&mut bytes));
        match read {
            Ok(length) if length as u64 <= MAX_ERROR_BYTES => {
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Starts parsing the spooled answer, of `shape`, on a helper thread;
    /// the pieces come out of the returned [`Pieces`].
    pub fn parse(mut self, shape: Shape) -> Result<Pieces> {
        self.file.rewind().map_err(|error| Error::Internal(format!("cannot rewind the spool: {error}")))?;
        let (sender, receiver) = smol::channel::bounded(BATCHES_AHEAD);
        let file = self.file;
        std::thread::Builder::new()
            .name("send_join parser".into())
            .spawn(move || {
                let mut emit = |piece| sender.send_blocking(Parsed::Piece(piece)).is_ok();
                let outcome =
                    parse(shape, BufReader::new(file), &mut emit).map_err(|error| error.to_string());
                let _ = sender.send_blocking(Parsed::Done(outcome));
            })
            .map_err(|error| Error::Internal(format!("cannot start the send_join parser: {error}")))?;
        Ok(Pieces { receiver, done: false })
    }
}

/// The pieces of an answer being parsed; dropping it stops the parser.
pub struct Pieces {
    receiver: smol::channel::Receiver<Parsed>,
    done: bool,
}

impl Pieces {
    /// The next piece; `None` once the whole answer was read, an error if
    /// it is not a well-formed answer.
    pub async fn next(&mut self) -> std::result::Result<Option<Piece>, String> {
        if self.done {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Ok(Parsed::Piece(piece)) => Ok(Some(piece)),
            Ok(Parsed::Done(outcome)) => {
                self.done = true;
                outcome.map(|()| None)
            }
            Err(_) => {
                self.done = true;
                Err("the parser stopped".into())
            }
        }
    }
}

/// The most text one event of the answer may take (whitespace and escapes
/// included): far more than a PDU's 64 KiB in canonical form, and a bound on
/// what one element can make us hold.
const MAX_EVENT_TEXT: u64 = 1 << 20;

/// The message of the error that stops a parse whose reader went away.
const STOPPED: &str = "no one is reading the answer any more";

/// Parses an answer of `shape` from `reader`, calling `emit` with each
/// piece as soon as it is complete; stops with an error when `emit` answers
/// false, or when an event is longer than [`MAX_EVENT_TEXT`].
pub fn parse<R: Read>(
    shape: Shape,
    reader: R,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> serde_json::Result<()> {
    let budget = Rc::new(Cell::new(None));
    let reader = Budgeted { inner: reader, budget: budget.clone() };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut events = Events { emit, budget };
    let state_list = shape.state_list();
    if shape == Shape::SendJoinV1 {
        V1Seed { events: &mut events }.deserialize(&mut deserializer)?;
    } else {
        AnswerSeed { state_list, events: &mut events }.deserialize(&mut deserializer)?;
    }
    deserializer.end()
}

/// A reader that fails once more than its budget (when one is set) was
/// read: each event is read under [`MAX_EVENT_TEXT`], so no element of the
/// answer makes us hold more than that.
struct Budgeted<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        if let Some(left) = self.budget.get() {
            let left = left
                .checked_sub(count as u64)
                .ok_or_else(|| std::io::Error::other(format!("an event is over {MAX_EVENT_TEXT} bytes")))?;
            self.budget.set(Some(left));
        }
        Ok(count)
    }
}

/// Where the events go, and the budget each is read under.
struct Events<'a> {
    emit: &'a mut dyn FnMut(Piece) -> bool,
    budget: Rc<Cell<Option<u64>>>,
}

impl Events<'_> {
    /// Reads one value (an event, or the end of a list) under [`MAX_EVENT_TEXT`].
    fn bounded<T, E>(&self, read: impl FnOnce() -> std::result::Result<T, E>) -> std::result::Result<T, E> {
        self.budget.set(Some(MAX_EVENT_TEXT));
        let value = read();
        self.budget.set(None);
        value
    }

    fn hand_over<E: de::Error>(&mut self, piece: Piece) -> std::result::Result<(), E> {
        if (self.emit)(piece) { Ok(()) } else { Err(E::custom(STOPPED)) }
    }
}

/// v1's `[status, answer]`.
struct V1Seed<'a, 'b> {
    events: &'b mut Events<'a>,
}

impl<'de> DeserializeSeed<'de> for V1Seed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for V1Seed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("[status, answer]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        seq.next_element::<u16>()?.ok_or_else(|| de::Error::invalid_length(0, &"2 elements"))?;
        seq.next_element_seed(AnswerSeed {
            state_list: Shape::SendJoinV1.state_list(),
            events: self.events,
        })?
        .ok_or_else(|| de::Error::invalid_length(1, &"2 elements"))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &"2 elements"));
        }
        Ok(())
    }
}

/// The answer object: the state (the list at `state_list`) and
/// `auth_chain` element by element, `event` whole, everything else skipped
/// (without being held).
struct AnswerSeed<'a, 'b> {
    state_list: &'static str,
    events: &'b mut Events<'a>,
}

impl<'de> DeserializeSeed<'de> for AnswerSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnswerSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a send_join or state answer object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = self.events.bounded(|| map.next_key::<String>())? {
            match key.as_str() {
                key if key == self.state_list => {
                    map.next_value_seed(ListSeed { state: true, events: &mut *self.events })?
                }
                "auth_chain" => map.next_value_seed(ListSeed { state: false, events: &mut *self.events })?,
                "event" => {
                    if let Some(event) = self.events.bounded(|| map.next_value::<Option<Box<RawValue>>>())? {
                        self.events.hand_over(Piece::Event(event))?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `state` (when `state`) or `auth_chain`, handed over [`BATCH`] events at a time.
struct ListSeed<'a, 'b> {
    state: bool,
    events: &'b mut Events<'a>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let piece = |state: bool, batch| if state { Piece::State(batch) } else { Piece::AuthChain(batch) };
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(event) = self.events.bounded(|| seq.next_element::<Box<RawValue>>())? {
            batch.push(event);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                self.events.hand_over(piece(self.state, full))?;
            }
        }
        if !batch.is_empty() {
            self.events.hand_over(piece(self.state, batch))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`; answers (state events, auth chain events, event) as raw texts.
    fn pieces(v1: bool, text: &str) -> serde_json::Result<(Vec<String>, Vec<String>, Option<String>)> {
        shaped_pieces(if v1 { Shape::SendJoinV1 } else { Shape::SendJoin }, text)
    }

    /// [`pieces`] for an answer of any shape.
    fn shaped_pieces(
        shape: Shape,
        text: &str,
    ) -> serde_json::Result<(Vec<String>, Vec<String>, Option<String>)> {
        let (mut state, mut auth_chain, mut event) = (Vec::new(), Vec::new(), None);
        parse(shape, text.as_bytes(), &mut |piece| {
            match piece {
                Piece::State(events) => state.extend(events.iter().map(|e| e.get().to_string())),
                Piece::AuthChain(events) => auth_chain.extend(events.iter().map(|e| e.get().to_string())),
                Piece::Event(raw) => event = Some(raw.get().to_string()),
            }
            true
        })?;
        Ok((state, auth_chain, event))
    }

    /// A `/state` answer's state is its `pdus`; a `state` key there is
    /// nothing, as `pdus` is nothing in a `send_join` answer.
    #[test]
    fn state_answers_give_their_pdus_as_the_state() {
        let text = r#"{"pdus": [{"a": 1}, {"b": 2}], "auth_chain": [{"c": 3}], "state": [{"d": 4}]}"#;
        let (state, auth_chain, event) = shaped_pieces(Shape::State, text).unwrap();
        assert_eq!(state, vec![r#"{"a": 1}"#, r#"{"b": 2}"#]);
        assert_eq!((auth_chain, event), (vec![r#"{"c": 3}"#.to_string()], None));
        let (state, _, _) = shaped_pieces(Shape::SendJoin, text).unwrap();
        assert_eq!(state, vec![r#"{"d": 4}"#]);
        assert!(shaped_pieces(Shape::State, r#"{"pdus": {}}"#).is_err());
    }

    #[test]
    fn send_join_answers_are_read_in_both_shapes() {
        let v2 = r#"{"origin": "x", "state": [{"a": 1}], "auth_chain": [], "members_omitted": false}"#;
        assert_eq!(pieces(false, v2).unwrap(), (vec![r#"{"a": 1}"#.to_string()], vec![], None));
        let v1 = r#"[200, {"origin": "x", "state": [{"a": 1}, {"b": 2}], "auth_chain": [{"c": 3}], "event": {"d": 4}}]"#;
        let (state, auth_chain, event) = pieces(true, v1).unwrap();
        assert_eq!((state.len(), auth_chain.len(), event.as_deref()), (2, 1, Some(r#"{"d": 4}"#)));
        assert!(pieces(true, v2).is_err());
        assert!(pieces(true, "[200]").is_err());
        assert!(pieces(true, r#"[200, {}, 3]"#).is_err());
        assert!(pieces(false, r#"{"state": {}}"#).is_err());
        assert!(pieces(false, r#"{"state": []} trailing"#).is_err());
        assert!(pieces(false, r#"{"state": [{"a": 1}"#).is_err());
    }

    #[test]
    fn events_come_in_bounded_batches() {
        let events: Vec<String> = (0..BATCH * 2 + 3).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
        let text = format!(r#"{{"auth_chain": [], "state": [{}]}}"#, events.join(","));
        let mut sizes = Vec::new();
        parse(Shape::SendJoin, text.as_bytes(), &mut |piece| {
            if let Piece::State(events) = piece {
                sizes.push(events.len());
            }
            true
        })
        .unwrap();
        assert_eq!(sizes, vec![BATCH, BATCH, 3]);
    }

    #[test]
    fn an_event_over_the_bound_stops_the_parse() {
        let big = "x".repeat(MAX_EVENT_TEXT as usize);
        let text = format!(r#"{{"state": [{{"a": 1}}, {{"big": "{big}"}}]}}"#);
        assert!(pieces(false, &text).is_err());
        // Only the events are bounded: anything else is skipped unread.
        let text = format!(r#"{{"padding": "{big}", "state": [{{"a": 1}}]}}"#);
        assert_eq!(pieces(false, &text).unwrap().0.len(), 1);
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_parse() {
        let events: Vec<String> = (0..BATCH * 3).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
        let text = format!(r#"{{"state": [{}]}}"#, events.join(","));
        let mut calls = 0;
        let outcome = parse(Shape::SendJoin, text.as_bytes(), &mut |_| {
            calls += 1;
            false
        });
        assert!(outcome.is_err());
        assert_eq!(calls, 1);
    }
}
