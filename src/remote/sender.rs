//! The outbound side of federation: one sender task per destination, each
//! with at most one transaction in flight, fed from the SQLite outbox (so a
//! restart loses nothing), with exponential backoff up to a ceiling.
//!
//! A destination that was down receives everything queued for it, in order,
//! once it answers again. Any request that reaches us from a server counts as
//! a sign that it is back and wakes its sender at once.
//! Spec: <https://spec.matrix.org/latest/server-server-api/#transactions>.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use event_listener::Event;
use http_types::Method;
use serde_json::{Value, json};

use super::client;
use super::pdus::encode;
use crate::remote::Remote;
use crate::storage::now_ms;

/// Spec: at most 50 PDUs and 100 EDUs per transaction.
const PDUS_PER_TRANSACTION: usize = 50;
const EDUS_PER_TRANSACTION: usize = 100;
/// The first retry waits this long; each failure doubles it.
const FIRST_BACKOFF_MS: i64 = 1_000;
/// Backoff never exceeds this; a server that is back is retried within it
/// even if it never contacts us.
const MAX_BACKOFF_MS: i64 = 5 * 60_000;
/// A destination that stays down keeps at most this many queued PDUs; older
/// ones it can fetch itself (`get_missing_events`, backfill) when it returns.
const MAX_QUEUED_PDUS: usize = 10_000;
/// EDUs (typing, receipts) are ephemeral: a down destination keeps only the latest.
const MAX_QUEUED_EDUS: usize = 200;

/// The running senders: destination -> its wake-up signal.
#[derive(Default)]
pub struct Senders {
    active: RefCell<HashMap<String, Rc<Event>>>,
}

/// Hooks the senders into the room engine's outbox and starts a sender for
/// every destination with something queued from before a restart.
pub fn start(app: &Rc<Remote>) {
    let weak = Rc::downgrade(app);
    app.outbox.register(Rc::new(move |destination: &str| {
        if let Some(app) = weak.upgrade() {
            kick(&app, destination);
        }
    }));
    match app.storage().destinations_with_queue() {
        Ok(destinations) => {
            for destination in destinations {
                kick(app, &destination);
            }
        }
        Err(error) => log::error!("cannot read the federation outbox: {error}"),
    }
    announce(app);
}

/// Starts the destination's sender, or wakes it if it is waiting.
pub fn kick(app: &Rc<Remote>, destination: &str) {
    if destination == app.config.server_name {
        return;
    }
    if let Some(event) = app.federation.senders.active.borrow().get(destination) {
        event.notify(usize::MAX);
        return;
    }
    let wake = Rc::new(Event::new());
    app.federation.senders.active.borrow_mut().insert(destination.to_string(), wake.clone());
    let app_for_task = app.clone();
    let destination = destination.to_string();
    app.executor.spawn(async move { run(app_for_task, destination, wake).await }).detach();
}

fn backoff_ms(failures: i64) -> i64 {
    let exponent = failures.clamp(0, 20) as u32;
    FIRST_BACKOFF_MS.saturating_mul(1_i64 << exponent).min(MAX_BACKOFF_MS)
}

async fn run(app: Rc<Remote>, destination: String, wake: Rc<Event>) {
    loop {
        // Wait out the backoff, unless something wakes us (the server spoke to us).
        let retry_after =
            app.storage().destination_health(&destination).ok().and_then(|health| health.retry_after_ts);
        if let Some(retry_after) = retry_after {
            let wait = retry_after - now_ms();
            if wait > 0 {
                let listener = wake.listen();
                smol::future::or(
                    async {
                        listener.await;
                    },
                    async {
                        smol::Timer::after(Duration::from_millis(wait as u64)).await;
                    },
                )
                .await;
            }
        }
        let batch = load_batch(&app, &destination);
        let Some((pdus, edus, ids)) = batch else {
            // Nothing left: the sender ends (atomically with this check, as
            // nothing awaits in between) and the next kick starts a new one.
            app.federation.senders.active.borrow_mut().remove(&destination);
            return;
        };
        let txn_id = format!("{}.{}", now_ms(), ids.first().copied().unwrap_or(0));
        let body = json!({
            "origin": app.config.server_name,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        });
        let path = format!("/_matrix/federation/v1/send/{}", encode(&txn_id));
        match client::request(&app, &destination, Method::Put, &path, Some(body)).await {
            Ok((200, answer)) => {
                log::debug!("sent {} items to {destination}: {answer}", ids.len());
                let _ = app.storage().dequeue(&ids);
                let _ = app.storage().destination_accepted(&destination);
            }
            Ok((status, answer)) if (400..500).contains(&status) && status != 429 => {
                // The destination refuses this transaction as such: retrying it
                // would block everything behind it.
                log::warn!("{destination} refused a transaction ({status}: {answer}); dropping it");
                let _ = app.storage().dequeue(&ids);
            }
            outcome => {
                let failures =
                    app.storage().destination_health(&destination).map(|health| health.failures).unwrap_or(0);
                let delay = backoff_ms(failures);
                match outcome {
                    Ok((status, _)) => {
                        log::info!("sending to {destination} failed ({status}); retry in {delay} ms")
                    }
                    Err(error) => {
                        log::info!("sending to {destination} failed ({error}); retry in {delay} ms")
                    }
                }
                let _ = app.storage().destination_failed(&destination, now_ms() + delay);
                let _ = app.storage().trim_queue(&destination, "pdu", MAX_QUEUED_PDUS);
                let _ = app.storage().trim_queue(&destination, "edu", MAX_QUEUED_EDUS);
            }
        }
    }
}

/// The next transaction's PDUs, EDUs and outbox IDs; `None` when nothing is queued.
fn load_batch(app: &Remote, destination: &str) -> Option<(Vec<Value>, Vec<Value>, Vec<i64>)> {
    let queued_pdus = app.storage().queued(destination, "pdu", PDUS_PER_TRANSACTION).ok()?;
    let queued_edus = app.storage().queued(destination, "edu", EDUS_PER_TRANSACTION).ok()?;
    if queued_pdus.is_empty() && queued_edus.is_empty() {
        return None;
    }
    let mut ids = Vec::new();
    let mut pdus = Vec::new();
    for item in queued_pdus {
        ids.push(item.id);
        if let Ok(Some(event)) = app.storage().event(&item.payload) {
            pdus.push(Value::Object(event.json.into_map()));
        }
    }
    let mut edus = Vec::new();
    for item in queued_edus {
        ids.push(item.id);
        if let Ok(edu) = serde_json::from_str::<Value>(&item.payload) {
            edus.push(edu);
        }
    }
    Some((pdus, edus, ids))
}

/// After a start, tells every server we share a room with that we are back
/// (an empty transaction), so they send what they queued for us without
/// waiting out their backoff.
fn announce(app: &Rc<Remote>) {
    let servers = match app.storage().servers_sharing_rooms_with(&app.config.server_name) {
        Ok(servers) => servers,
        Err(error) => {
            log::warn!("cannot list the servers we share rooms with: {error}");
            return;
        }
    };
    for server in servers {
        if server == app.config.server_name {
            continue;
        }
        let app = app.clone();
        app.executor
            .clone()
            .spawn(async move {
                let txn_id = format!("{}.hello", now_ms());
                let body = json!({ "origin": app.config.server_name, "origin_server_ts": now_ms(), "pdus": [], "edus": [] });
                let path = format!("/_matrix/federation/v1/send/{txn_id}");
                if let Err(error) = client::request(&app, &server, Method::Put, &path, Some(body)).await {
                    log::debug!("could not greet {server}: {error}");
                }
            })
            .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(3), 8_000);
        assert_eq!(backoff_ms(40), MAX_BACKOFF_MS);
    }
}
