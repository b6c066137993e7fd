//! The resident server's answer to `send_join`, made while it is sent: the
//! state before the join and its auth chain are read a page of events at a
//! time on a connection of their own (`storage::StateReader`) and written
//! out as they are read, so answering a join of a room of 50,000 members
//! holds a page, never the whole answer. The joining side of the same
//! answer is `remote::join_answer`.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid>,
//! <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_joinroomideventid>.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value};
use smol::channel::Sender;
use smol::future::FutureExt;

use super::Engine;
use super::media::ContentStream;
use crate::error::{Error, Result};
use crate::request::Body;
use crate::storage::{PageLimit, StateReader};

/// What a page holds at most: 500 events (a big room's state events are
/// well under 1 KiB each, so a page is read in a few milliseconds and the
/// event loop turns between pages) and, for rooms of bigger events (a PDU
/// may be 64 KiB), no more events once 512 KiB of JSON is read.
pub const PAGE: PageLimit = PageLimit { events: 500, bytes: 512 << 10 };

/// Answers streamed at once: each holds a SQLite connection of its own (a
/// file descriptor, a small page cache and a temporary file) and up to
/// three pages; past this, answers wait for a turn before their first
/// page (at most the stall deadline), so a burst of joins cannot add up.
pub const MAX_ANSWERS: usize = 4;

/// Pages written ahead of the socket: the answer holds at most this many
/// and the one being read.
const PAGES_AHEAD: usize = 2;

/// What an answer is made of besides the state and auth chain.
pub struct JoinAnswer {
    /// The deprecated v1 form: `[200, answer]`.
    pub v1: bool,
    /// The answer's other fields (`origin`, `event`, `members_omitted`,
    /// `servers_in_room`).
    pub fields: Map<String, Value>,
    /// The join event's state group: the state after it.
    pub state_group: i64,
    pub join_event_id: String,
    /// The join's state key (the joining user), where the state before the
    /// join holds `replaced` (the user's earlier membership event, if any)
    /// rather than the join.
    pub joiner: String,
    pub replaced: Option<String>,
}

/// The answer as a response body of unknown length, written by a task of
/// its own as the socket takes it, once a turn ([`MAX_ANSWERS`]) is free.
/// The stream fails (and the connection is cut before the body's end) if
/// reading fails, or no turn comes or the peer takes nothing for
/// `limits.stall_timeout_secs`.
pub fn stream(app: &Rc<Engine>, answer: JoinAnswer) -> Body {
    let (sender, pieces) = smol::channel::bounded(PAGES_AHEAD);
    let stall = Duration::from_secs(app.config.limits.stall_timeout_secs);
    let producer = Producer { sender, stall };
    let app = app.clone();
    app.executor
        .clone()
        .spawn(async move {
            match producer.write(&app, &answer).await {
                Ok(()) | Err(Stop::Gone) => {}
                Err(Stop::Stalled) => {
                    log::info!("the send_join answer for {} stalled: given up", answer.join_event_id);
                    producer.sender.close();
                }
                Err(Stop::Failed(error)) => {
                    log::warn!("the send_join answer for {} failed: {error}", answer.join_event_id);
                    if producer.sender.try_send(Err(io::Error::other(error.to_string()))).is_err() {
                        producer.sender.close();
                    }
                }
            }
        })
        .detach();
    Body::Unsized { reader: Box::new(ContentStream::new(pieces, None)) }
}

/// Why an answer stopped before its end.
enum Stop {
    /// The response was dropped (the peer went away).
    Gone,
    /// The response took no piece for the stall deadline.
    Stalled,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Failed(error)
    }
}

struct Producer {
    sender: Sender<io::Result<Vec<u8>>>,
    stall: Duration,
}

impl Producer {
    async fn write(&self, app: &Engine, answer: &JoinAnswer) -> Result<(), Stop> {
        // The reader sees committed data only: the join event first.
        app.durable().await?;
        let turn = async { Some(app.join_answers.acquire().await) }
            .or(async {
                smol::Timer::after(self.stall).await;
                None
            })
            .await;
        let Some(_turn) = turn else {
            return Err(Stop::Stalled);
        };
        let reader = StateReader::open(&app.config.database_path())?;
        let mut text = answer_opening(answer)?;
        let mut list = JsonList::default();
        let mut walk = reader.walk(answer.state_group)?;
        while let Some(page) = reader.state_page(&mut walk, PAGE)? {
            let mut ids = Vec::with_capacity(page.len());
            for entry in &page {
                if entry.kind == "m.room.member" && entry.state_key == answer.joiner {
                    continue;
                }
                if let Some(json) = &entry.json {
                    list.push(&mut text, json);
                    ids.push(entry.event_id.as_str());
                }
            }
            reader.start_auth_chain(&ids)?;
            drop(ids);
            self.send(std::mem::take(&mut text)).await?;
        }
        // The state before the join holds the joiner's earlier membership.
        if let Some(replaced) = &answer.replaced {
            if let Some(json) = reader.event_json(replaced)? {
                list.push(&mut text, &json);
                reader.start_auth_chain(&[replaced])?;
            }
        }
        reader.start_auth_chain(&[&answer.join_event_id])?;
        text.push_str("],\"auth_chain\":[");
        let mut list = JsonList::default();
        let mut after = 0;
        while let (page, Some(last)) = reader.auth_chain_page(after, PAGE)? {
            after = last;
            for json in &page {
                list.push(&mut text, json);
            }
            self.send(std::mem::take(&mut text)).await?;
        }
        text.push_str("]}");
        if answer.v1 {
            text.push(']');
        }
        self.send(text).await?;
        // The end mark: the body is complete.
        self.hand_over(Vec::new()).await
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
        let sent = async { self.sender.send(Ok(piece)).await.map_err(|_| Stop::Gone) }
            .or(async {
                smol::Timer::after(self.stall).await;
                Err(Stop::Stalled)
            })
            .await;
        smol::future::yield_now().await;
        sent
    }
}

/// The answer up to the start of its `state` list: `{"origin":...,...,"state":[`
/// (after `[200,` in the v1 form).
fn answer_opening(answer: &JoinAnswer) -> Result<String> {
    let fields = serde_json::to_string(&answer.fields).map_err(|error| Error::Internal(error.to_string()))?;
    let mut text = String::with_capacity(fields.len() + 16);
    if answer.v1 {
        text.push_str("[200,");
    }
    // `{...}` without its closing brace, then the lists.
    text.push_str(fields.strip_suffix('}').unwrap_or("{"));
    if !answer.fields.is_empty() {
        text.push(',');
    }
    text.push_str("\"state\":[");
    Ok(text)
}

/// Items of a JSON list written one at a time: commas between them.
#[derive(Default)]
struct JsonList {
    started: bool,
}

impl JsonList {
    fn push(&mut self, text: &mut String, item: &str) {
        if self.started {
            text.push(',');
        }
        self.started = true;
        text.push_str(item);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(v1: bool, fields: Value) -> JoinAnswer {
        let Value::Object(fields) = fields else { panic!() };
        JoinAnswer {
            v1,
            fields,
            state_group: 1,
            join_event_id: "$join".into(),
            joiner: "@a:x".into(),
            replaced: None,
        }
    }

    /// The pieces the answer is written in make valid JSON of the spec's
    /// shape in both forms.
    #[test]
    fn an_answer_written_in_pieces_is_the_spec_shape() {
        for v1 in [false, true] {
            let fields = json!({"origin": "x", "members_omitted": false, "servers_in_room": ["x"]});
            let mut text = answer_opening(&answer(v1, fields.clone())).unwrap();
            let mut list = JsonList::default();
            for item in [r#"{"a":1}"#, r#"{"b":[2]}"#] {
                list.push(&mut text, item);
            }
            text.push_str("],\"auth_chain\":[");
            let mut list = JsonList::default();
            list.push(&mut text, r#"{"c":3}"#);
            text.push_str("]}");
            if v1 {
                text.push(']');
            }
            let mut expected = fields.clone();
            expected["state"] = json!([{"a": 1}, {"b": [2]}]);
            expected["auth_chain"] = json!([{"c": 3}]);
            let expected = if v1 { json!([200, expected]) } else { expected };
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
        }
        let mut text = answer_opening(&answer(false, json!({}))).unwrap();
        text.push_str("],\"auth_chain\":[]}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"state": [], "auth_chain": []}));
    }
}
