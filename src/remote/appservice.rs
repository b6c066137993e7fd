//! Pushing events to application services: one sender task per service with
//! a `url`, one transaction in flight, exponential backoff on failure (as
//! push gateways get). The events come from the `events` table in stream
//! order; where each service stands is in SQLite (`storage::appservice`), so
//! a restart or a service that was down loses nothing and a transaction
//! retried keeps its ID.
//!
//! A service gets the events it is interested in: sent by a user of its
//! namespace (or its own user), a membership of such a user, or in a room
//! its room namespace matches, that has an alias its alias namespace
//! matches, or where a user of its namespace is joined (as Synapse decides).
//! A service registered with `receive_ephemeral` also gets the receipts
//! (never private ones) and typing of the rooms it is interested in, and
//! the presence of its users and of those joined to such rooms: receipts by
//! stream position like events, typing and presence as they changed since
//! the last transaction delivered (memory only, as they are).
//! Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>.

use std::collections::HashMap;
use std::rc::Rc;

use http_types::Method;
use serde_json::{Value, json};
use smol::future::FutureExt;

use super::pdus::encode;
use super::push::{backoff, send_to_url};
use crate::error::{Error, Result};
use crate::protocol::appservice::AppService;
use crate::protocol::identifiers::RoomAliasId;
use crate::remote::Remote;
use crate::rooms::format;
use crate::storage::{StoredEvent, now_ms};

/// Most events in one transaction (Synapse's figure).
const MAX_EVENTS_PER_TRANSACTION: usize = 100;
/// A transaction stops taking events once they make this many bytes (an
/// event is at most 64 KiB): the body is built in memory on a small board.
const MAX_TRANSACTION_BYTES: usize = 1 << 20;
/// Events read from the stream at a time while looking for interesting ones;
/// the loop yields between reads.
const SCAN_BATCH: usize = 500;
/// A service's answer to a transaction is an empty JSON object.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Starts a sender for every service with a URL whose sender does not run
/// (at start, and after SIGHUP reloaded the registrations).
pub fn start(app: &Rc<Remote>) {
    for registered in app.app_services().iter() {
        let service = &registered.service;
        if service.url.is_none() || !app.federation.appservice_senders.borrow_mut().insert(service.id.clone())
        {
            continue;
        }
        // A service new to this database starts from here, pinned now: its
        // sender's first turn may come after events it must be sent.
        if let Err(error) = app.storage().appservice_stream(&service.id, app.current_stream_id()) {
            log::error!("application service {}: {error}", service.id);
        }
        let app_for_task = app.clone();
        let id = service.id.clone();
        app.executor.spawn(async move { run(app_for_task, id).await }).detach();
    }
}

/// The registered service with this ID, if it still has a URL.
fn service_by_id(app: &Remote, id: &str) -> Option<Rc<AppService>> {
    let services = app.app_services();
    let registered = services.iter().find(|registered| registered.service.id == id)?;
    registered.service.url.is_some().then(|| registered.service.clone())
}

/// A transaction ready to send.
struct Transaction {
    id: i64,
    /// It covers the stream up to here.
    end: i64,
    events: Vec<StoredEvent>,
    /// `m.receipt` and `m.typing` events, for services that take them.
    ephemeral: Vec<Value>,
}

/// Where the sender stands on what is not in the stream of events: typing
/// and presence live in memory, each with a serial of its own.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    stream: i64,
    typing: i64,
    presence: i64,
}

async fn run(app: Rc<Remote>, id: String) {
    let mut failures: u32 = 0;
    let mut seen = Seen { stream: 0, typing: app.typing.serial(), presence: app.presence.serial() };
    // Where nothing was left to send: a wake-up that moved none of the
    // streams costs no read.
    let mut idle_at = None;
    loop {
        // Listen first, so nothing stored while the stream is read slips by.
        let news = app.notifier.listen_anything();
        // Looked up each turn: a reload may change the service or remove it.
        let Some(service) = service_by_id(&app, &id) else { break };
        let service = &*service;
        let now = Seen {
            stream: app.current_stream_id(),
            typing: app.typing.serial(),
            presence: app.presence.serial(),
        };
        if idle_at == Some(now) {
            news.await;
            continue;
        }
        let transaction = match next_transaction(&app, service, seen, now).await {
            Ok(Some(transaction)) => transaction,
            Ok(None) => {
                idle_at = Some(now);
                seen = now;
                news.await;
                continue;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                log::error!("application service {}: {error}", service.id);
                smol::Timer::after(backoff(failures)).await;
                continue;
            }
        };
        match deliver(&app, service, &transaction).await {
            Ok(()) => {
                failures = 0;
                seen = now;
                let delivered =
                    app.storage().appservice_delivered(&service.id, transaction.end, Some(now_ms()));
                if let Err(error) = delivered {
                    log::error!("application service {}: {error}", service.id);
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                log::warn!(
                    "application service {}: transaction {} failed, retry in {wait:?}: {error}",
                    service.id,
                    transaction.id
                );
                if let Err(error) = app.storage().appservice_failed(&service.id, now_ms(), &error.to_string())
                {
                    log::error!("application service {}: {error}", service.id);
                }
                smol::Timer::after(wait).await;
            }
        }
    }
    app.federation.appservice_senders.borrow_mut().remove(&id);
    log::info!("application service {id}: sender stopped (no longer registered with a URL)");
}

/// Most presence changes looked at for one transaction; more at once are
/// dropped (presence is best effort, it changes again soon).
const MAX_PRESENCE_PER_TRANSACTION: usize = 100;
/// Most receipts read for one transaction: the newest are kept.
const MAX_RECEIPTS_PER_TRANSACTION: usize = 100;

/// The next transaction for `service`: the one in flight again, or the
/// interesting events after its position (skipping past the rest), with
/// the receipts of the same range, and the typing and presence changed
/// after `seen` (up to `now`) in rooms it is interested in (if it takes
/// ephemeral events); `None` when there is nothing to send.
async fn next_transaction(
    app: &Remote,
    service: &AppService,
    seen: Seen,
    now: Seen,
) -> Result<Option<Transaction>> {
    let current = app.current_stream_id();
    let stream = app.storage().appservice_stream(&service.id, current)?;
    let end_bound = stream.pending_end.unwrap_or(current);
    let mut position = stream.position;
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut rooms = HashMap::new();
    let full_at = loop {
        let batch = app.storage().timeline_events_after(position, end_bound, SCAN_BATCH)?;
        let Some(last) = batch.last().map(|event| event.stream_ordering) else { break None };
        let mut full_at = None;
        for event in batch {
            let ordering = event.stream_ordering;
            if is_interested(app, service, &event, &mut rooms)? {
                bytes += event.json.text_len();
                events.push(event);
                if MAX_EVENTS_PER_TRANSACTION <= events.len() || MAX_TRANSACTION_BYTES <= bytes {
                    full_at = Some(ordering);
                    break;
                }
            }
        }
        if full_at.is_some() {
            break full_at;
        }
        position = last;
        smol::future::yield_now().await;
    };
    let end = full_at.unwrap_or(end_bound);
    let mut ephemeral = Vec::new();
    if service.receive_ephemeral {
        let receipts = app.storage().receipts_between(stream.position, end, MAX_RECEIPTS_PER_TRANSACTION)?;
        for by_room in receipts.chunk_by(|a, b| a.0 == b.0) {
            let room_id = &by_room[0].0;
            if !is_interested_in_room(app, service, room_id, &mut rooms)? {
                continue;
            }
            let of_room: Vec<_> = by_room.iter().map(|(_, receipt)| receipt.clone()).collect();
            // Private receipts are their owner's alone: an empty viewer sees none.
            let mut event = format::receipt_event(&of_room, "");
            if event["content"].as_object().is_some_and(|content| !content.is_empty()) {
                event["room_id"] = json!(room_id);
                ephemeral.push(event);
            }
        }
        for (room_id, users) in app.typing.changed_rooms_since(seen.typing) {
            if is_interested_in_room(app, service, &room_id, &mut rooms)? {
                ephemeral.push(
                    json!({ "type": "m.typing", "room_id": room_id, "content": { "user_ids": users } }),
                );
            }
        }
        let changed = app.presence.changed_since(Some(seen.presence), now.presence);
        let at = now_ms();
        for (sender, record) in changed.into_iter().take(MAX_PRESENCE_PER_TRANSACTION) {
            if shares_a_room(app, service, &sender, &mut rooms)? {
                ephemeral
                    .push(json!({ "type": "m.presence", "sender": sender, "content": record.content(at) }));
            }
        }
    }
    if events.is_empty() && ephemeral.is_empty() {
        match stream.pending_end {
            // Nothing in the range any more: as if delivered.
            Some(pending_end) => app.storage().appservice_delivered(&service.id, pending_end, None)?,
            None if stream.position < end_bound => {
                app.storage().appservice_skip_to(&service.id, end_bound)?
            }
            None => {}
        }
        return Ok(None);
    }
    if stream.pending_end != Some(end) {
        app.storage().appservice_pending(&service.id, end)?;
    }
    Ok(Some(Transaction { id: stream.next_txn_id, end, events, ephemeral }))
}

/// Whether `service` gets `event`. Room-wide answers (room ID, aliases,
/// members) are kept in `rooms` for one read of the stream.
fn is_interested(
    app: &Remote,
    service: &AppService,
    event: &StoredEvent,
    rooms: &mut HashMap<String, bool>,
) -> Result<bool> {
    if service.is_interested_in_user(&event.sender) {
        return Ok(true);
    }
    let member = event.state_key.as_deref().filter(|_| event.kind == "m.room.member");
    if member.is_some_and(|user_id| service.is_interested_in_user(user_id)) {
        return Ok(true);
    }
    is_interested_in_room(app, service, &event.room_id, rooms)
}

/// Whether `user_id` is the service's, or is joined to a room it is
/// interested in: whose presence it may see.
fn shares_a_room(
    app: &Remote,
    service: &AppService,
    user_id: &str,
    rooms: &mut HashMap<String, bool>,
) -> Result<bool> {
    if service.is_interested_in_user(user_id) {
        return Ok(true);
    }
    // Bound first: the storage borrow must end before the loop borrows it again.
    let joined = app.storage().rooms_with_membership(user_id, "join")?;
    for room_id in joined {
        if is_interested_in_room(app, service, &room_id, rooms)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `service` is interested in everything of a room: its room
/// namespace matches the ID, its alias namespace one of the room's aliases,
/// or a user of its namespace is joined.
fn is_interested_in_room(
    app: &Remote,
    service: &AppService,
    room_id: &str,
    rooms: &mut HashMap<String, bool>,
) -> Result<bool> {
    if let Some(known) = rooms.get(room_id) {
        return Ok(*known);
    }
    let interested = service.is_interested_in_room(room_id)
        || app.storage().aliases_of_room(room_id)?.iter().any(|alias| service.is_interested_in_alias(alias))
        || app
            .storage()
            .server_members(room_id, &app.config.server_name, "join")?
            .iter()
            .any(|user_id| service.is_interested_in_user(user_id));
    rooms.insert(room_id.to_owned(), interested);
    Ok(interested)
}

/// `PUT {url}/_matrix/app/v1/transactions/{txnId}` with the `hs_token` as a
/// bearer token (Synapse no longer sends the deprecated `access_token`
/// query parameter by default, nor do we).
/// Spec: <https://spec.matrix.org/latest/application-service-api/#put_matrixappv1transactionstxnid>.
async fn deliver(app: &Remote, service: &AppService, transaction: &Transaction) -> Result<()> {
    let Some(base) = &service.url else { return Ok(()) };
    query_unknown_users(app, service, &transaction.events).await;
    let events: Vec<Value> =
        transaction.events.iter().map(|event| format::client_event(app, event, None, true)).collect();
    let mut body = json!({ "events": events });
    if service.receive_ephemeral {
        body["ephemeral"] = json!(transaction.ephemeral);
        // The name from MSC2409, which older bridges still read.
        body["de.sorunome.msc2409.ephemeral"] = json!(transaction.ephemeral);
    }
    let body = body.to_string().into_bytes();
    // Nothing leaves before the writes it rests on are committed.
    app.durable().await?;
    let url = format!("{}/_matrix/app/v1/transactions/{}", base.trim_end_matches('/'), transaction.id);
    let headers = [("authorization", format!("Bearer {}", service.hs_token))];
    let response = send_to_url(app, Method::Put, &url, &headers, body, MAX_RESPONSE_BYTES, true).await?;
    match response.status {
        200..=299 => Ok(()),
        status => Err(Error::matrix(502, "M_UNKNOWN", format!("{url}: status {status}"))),
    }
}

/// Before events naming unknown local users of the service's namespace
/// (as sender, or as the target of a membership, such as an invite of a
/// ghost not yet registered) are pushed, the service is asked about each
/// (`GET /_matrix/app/v1/users/{userId}`), so it may register them first,
/// as Synapse does. The answer changes nothing here: the events go all the
/// same. A query gets [`USER_QUERY_TIMEOUT`], and after one goes unanswered
/// no more are asked for this transaction: a service that does not answer
/// them (a matrix-bot-sdk bot without a `query.user` handler never does)
/// delays its transactions by that long, not by a request timeout per user.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#get_matrixappv1usersuserid>.
async fn query_unknown_users(app: &Remote, service: &AppService, events: &[StoredEvent]) {
    let Some(base) = &service.url else { return };
    let mut asked = std::collections::HashSet::new();
    for event in events {
        let member = event.state_key.as_deref().filter(|_| event.kind == "m.room.member");
        for user_id in std::iter::once(event.sender.as_str()).chain(member) {
            let unknown = app.is_local_user(user_id)
                && service.is_interested_in_user(user_id)
                && app.storage().user(user_id).is_ok_and(|user| user.is_none());
            if !unknown
                || MAX_USER_QUERIES_PER_TRANSACTION <= asked.len()
                || !asked.insert(user_id.to_owned())
            {
                continue;
            }
            let url = format!("{}/_matrix/app/v1/users/{}", base.trim_end_matches('/'), encode(user_id));
            let headers = [("authorization", format!("Bearer {}", service.hs_token))];
            let query = send_to_url(app, Method::Get, &url, &headers, Vec::new(), MAX_RESPONSE_BYTES, true);
            let timeout = async {
                smol::Timer::after(USER_QUERY_TIMEOUT).await;
                Err(Error::matrix(504, "M_UNKNOWN", format!("{url}: no answer in time")))
            };
            match query.or(timeout).await {
                Ok(response) => {
                    log::debug!("application service {} on {user_id}: {}", service.id, response.status)
                }
                Err(error) => {
                    log::warn!("application service {}: user query failed: {error}", service.id);
                    if error.status_and_errcode().0 == 504 {
                        return;
                    }
                }
            }
        }
    }
}

/// Users asked about before one transaction at most.
const MAX_USER_QUERIES_PER_TRANSACTION: usize = 10;
/// How long a user query may take: the transaction waits for it.
const USER_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a ping failed.
pub enum PingFailure {
    /// The service has no `url`.
    NoUrl,
    /// The service answered with another status than 2xx.
    Status { status: u16, body: String },
    /// No answer: the connection failed, or (`timed_out`) took too long.
    Unreachable { timed_out: bool, reason: String },
}

/// The longest part of a failed ping's answer handed back to the service.
const MAX_PING_BODY_ECHO: usize = 4096;

/// `POST {url}/_matrix/app/v1/ping` with the caller's `transaction_id`:
/// how long the service took to answer.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#post_matrixappv1ping>.
pub async fn ping(
    app: &Remote,
    service: &AppService,
    transaction_id: Option<&str>,
) -> Result<std::time::Duration, PingFailure> {
    let Some(base) = &service.url else { return Err(PingFailure::NoUrl) };
    let body = match transaction_id {
        Some(id) => json!({ "transaction_id": id }),
        None => json!({}),
    };
    let url = format!("{}/_matrix/app/v1/ping", base.trim_end_matches('/'));
    let headers = [("authorization", format!("Bearer {}", service.hs_token))];
    let started = std::time::Instant::now();
    let sent = send_to_url(
        app,
        Method::Post,
        &url,
        &headers,
        body.to_string().into_bytes(),
        MAX_RESPONSE_BYTES,
        true,
    );
    match sent.await {
        Ok(response) if (200..=299).contains(&response.status) => Ok(started.elapsed()),
        Ok(response) => {
            let mut body = String::from_utf8_lossy(&response.body).into_owned();
            if MAX_PING_BODY_ECHO < body.len() {
                let mut cut = MAX_PING_BODY_ECHO;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
            }
            Err(PingFailure::Status { status: response.status, body })
        }
        Err(error) => {
            let timed_out = error.status_and_errcode().0 == 504;
            Err(PingFailure::Unreachable { timed_out, reason: error.to_string() })
        }
    }
}

/// Before a local alias is resolved: if it is unknown and a service's alias
/// namespace matches it, that service is asked (`GET /_matrix/app/v1/rooms/{alias}`),
/// which may create the room and the alias before it answers, as a bridge
/// does for a portal room. A failed or refused query changes nothing: the
/// alias is then as unknown as before.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#get_matrixappv1roomsroomalias>.
pub async fn query_alias(app: &Remote, alias: &str) {
    // Only well-formed aliases of this server are ever asked about.
    let ours = RoomAliasId::parse(alias).is_ok_and(|parsed| parsed.server_name() == app.config.server_name);
    if !ours {
        return;
    }
    let known = app.storage().alias(alias).map(|found| found.is_some());
    if !matches!(known, Ok(false)) {
        return;
    }
    let services = app.app_services();
    let asked = services.iter().map(|registered| &registered.service);
    for service in asked.filter(|service| service.is_interested_in_alias(alias)) {
        let Some(base) = &service.url else { continue };
        let url = format!("{}/_matrix/app/v1/rooms/{}", base.trim_end_matches('/'), encode(alias));
        let headers = [("authorization", format!("Bearer {}", service.hs_token))];
        match send_to_url(app, Method::Get, &url, &headers, Vec::new(), MAX_RESPONSE_BYTES, true).await {
            Ok(response) if (200..=299).contains(&response.status) => {
                if app.storage().alias(alias).is_ok_and(|found| found.is_some()) {
                    return;
                }
            }
            Ok(response) => {
                log::debug!("application service {} has no {alias}: {}", service.id, response.status)
            }
            Err(error) => log::warn!("application service {}: alias query failed: {error}", service.id),
        }
    }
}

/// `GET {url}/_matrix/app/v1/thirdparty/{path_and_query}` of one service:
/// its JSON answer, or `None` when it has none (another status than 2xx,
/// unreachable, or not JSON), which a lookup across services skips.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#third-party-networks>.
pub async fn thirdparty(app: &Remote, service: &AppService, path_and_query: &str) -> Option<Value> {
    let base = service.url.as_ref()?;
    let url = format!("{}/_matrix/app/v1/thirdparty/{path_and_query}", base.trim_end_matches('/'));
    let headers = [("authorization", format!("Bearer {}", service.hs_token))];
    match send_to_url(app, Method::Get, &url, &headers, Vec::new(), MAX_RESPONSE_BYTES, true).await {
        Ok(response) if (200..=299).contains(&response.status) => serde_json::from_slice(&response.body).ok(),
        Ok(response) => {
            log::debug!("application service {}: {url}: status {}", service.id, response.status);
            None
        }
        Err(error) => {
            log::warn!("application service {}: third-party lookup failed: {error}", service.id);
            None
        }
    }
}
