//! Reading a `send_join` answer as a stream: the answer is spooled to a
//! file as it arrives, and a helper thread parses it element by element,
//! handing the events of `state` and `auth_chain` over in batches, so that a
//! room's state is never held whole (neither as text nor as a JSON tree) and
//! the event loop never parses for long. Memory is bounded by the batch, not
//! by the room.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>
//! (and the deprecated v1, whose answer is `[200, object]`).

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// Events handed over at a time: the most held in memory at once (twice
/// this, with one batch in the channel and one being checked).
pub const BATCH: usize = 500;

/// Batches parsed ahead of the one being checked.
const BATCHES_AHEAD: usize = 1;

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

    /// Starts parsing the spooled answer (v1's `[200, object]` when `v1`) on
    /// a helper thread; the pieces come out of the returned [`Pieces`].
    pub fn parse(mut self, v1: bool) -> Result<Pieces> {
        self.file.rewind().map_err(|error| Error::Internal(format!("cannot rewind the spool: {error}")))?;
        let (sender, receiver) = smol::channel::bounded(BATCHES_AHEAD);
        let file = self.file;
        std::thread::Builder::new()
            .name("send_join parser".into())
            .spawn(move || {
                let mut emit = |piece| sender.send_blocking(Parsed::Piece(piece)).is_ok();
                let outcome = parse(v1, BufReader::new(file), &mut emit).map_err(|error| error.to_string());
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

/// The message of the error that stops a parse whose reader went away.
const STOPPED: &str = "no one is reading the answer any more";

/// Parses a `send_join` answer from `reader`, v2's object or (with `v1`) the
/// deprecated `[200, object]`, calling `emit` with each piece as soon as it
/// is complete; stops with an error when `emit` answers false.
pub fn parse<R: Read>(v1: bool, reader: R, emit: &mut dyn FnMut(Piece) -> bool) -> serde_json::Result<()> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    if v1 {
        V1Seed { emit }.deserialize(&mut deserializer)?;
    } else {
        AnswerSeed { emit }.deserialize(&mut deserializer)?;
    }
    deserializer.end()
}

/// v1's `[status, answer]`.
struct V1Seed<'a> {
    emit: &'a mut dyn FnMut(Piece) -> bool,
}

impl<'de> DeserializeSeed<'de> for V1Seed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for V1Seed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("[status, answer]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        seq.next_element::<u16>()?.ok_or_else(|| de::Error::invalid_length(0, &"2 elements"))?;
        seq.next_element_seed(AnswerSeed { emit: self.emit })?
            .ok_or_else(|| de::Error::invalid_length(1, &"2 elements"))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &"2 elements"));
        }
        Ok(())
    }
}

/// The answer object: `state` and `auth_chain` element by element, `event`
/// whole, everything else skipped.
struct AnswerSeed<'a> {
    emit: &'a mut dyn FnMut(Piece) -> bool,
}

impl<'de> DeserializeSeed<'de> for AnswerSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnswerSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a send_join answer object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "state" => map.next_value_seed(ListSeed { state: true, emit: &mut *self.emit })?,
                "auth_chain" => map.next_value_seed(ListSeed { state: false, emit: &mut *self.emit })?,
                "event" => {
                    if let Some(event) = map.next_value::<Option<Box<RawValue>>>()? {
                        if !(self.emit)(Piece::Event(event)) {
                            return Err(de::Error::custom(STOPPED));
                        }
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
struct ListSeed<'a> {
    state: bool,
    emit: &'a mut dyn FnMut(Piece) -> bool,
}

impl ListSeed<'_> {
    fn hand_over<E: de::Error>(&mut self, batch: Vec<Box<RawValue>>) -> std::result::Result<(), E> {
        let piece = if self.state { Piece::State(batch) } else { Piece::AuthChain(batch) };
        if (self.emit)(piece) { Ok(()) } else { Err(E::custom(STOPPED)) }
    }
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(event) = seq.next_element::<Box<RawValue>>()? {
            batch.push(event);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                self.hand_over(full)?;
            }
        }
        if !batch.is_empty() {
            self.hand_over(batch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`; answers (state events, auth chain events, event) as raw texts.
    fn pieces(v1: bool, text: &str) -> serde_json::Result<(Vec<String>, Vec<String>, Option<String>)> {
        let (mut state, mut auth_chain, mut event) = (Vec::new(), Vec::new(), None);
        parse(v1, text.as_bytes(), &mut |piece| {
            match piece {
                Piece::State(events) => state.extend(events.iter().map(|e| e.get().to_string())),
                Piece::AuthChain(events) => auth_chain.extend(events.iter().map(|e| e.get().to_string())),
                Piece::Event(raw) => event = Some(raw.get().to_string()),
            }
            true
        })?;
        Ok((state, auth_chain, event))
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
        parse(false, text.as_bytes(), &mut |piece| {
            if let Piece::State(events) = piece {
                sizes.push(events.len());
            }
            true
        })
        .unwrap();
        assert_eq!(sizes, vec![BATCH, BATCH, 3]);
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_parse() {
        let events: Vec<String> = (0..BATCH * 3).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
        let text = format!(r#"{{"state": [{}]}}"#, events.join(","));
        let mut calls = 0;
        let outcome = parse(false, text.as_bytes(), &mut |_| {
            calls += 1;
            false
        });
        assert!(outcome.is_err());
        assert_eq!(calls, 1);
    }
}
