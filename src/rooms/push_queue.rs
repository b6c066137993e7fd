//! Which pushers an event notifies: the push rules of each joined local
//! member with an `http` pusher, evaluated when the event is stored, give
//! the rows queued for push gateways in the same transaction as the event
//! (see `storage::push`). The federation layer registers the function that
//! starts a pusher's sender (so this layer never calls up), as for the
//! federation outbox.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::app::App;
use crate::error::Result;
use crate::protocol::pdu::Pdu;
use crate::protocol::push_rules::Outcome;
use crate::storage::{PusherKey, QueuedPush};

use super::push;
use super::unread::RoomFacts;

/// Starts a pusher's sender unless it runs.
pub type Kick = Rc<dyn Fn(&PusherKey)>;

/// The federation layer's kick, once registered.
#[derive(Default)]
pub struct PushQueue {
    kick: RefCell<Option<Kick>>,
}

impl PushQueue {
    /// Registers the function that starts a pusher's sender.
    pub fn register(&self, kick: Kick) {
        *self.kick.borrow_mut() = Some(kick);
    }

    /// Starts the senders of the pushers that got a notification.
    pub fn kick(&self, pushes: &[QueuedPush]) {
        let kick = self.kick.borrow().clone();
        if let Some(kick) = kick {
            for push in pushes {
                kick(&push.pusher);
            }
        }
    }
}

/// The notifications to queue for `pdu`, about to be stored in its room:
/// one per `http` pusher of each joined local member (and local user
/// invited by it) other than the sender whose rules say `notify`.
pub fn pushes_for(app: &App, pdu: &Pdu) -> Result<Vec<QueuedPush>> {
    let mut pushers = app.storage().room_http_pushers(&pdu.room_id)?;
    // A local user invited is no member yet, but `.m.rule.invite_for_me`
    // is for them.
    let invited = (pdu.kind == "m.room.member"
        && pdu.content.get("membership").and_then(Value::as_str) == Some("invite"))
    .then_some(pdu.state_key.as_deref())
    .flatten()
    .filter(|user_id| user_id.split_once(':').is_some_and(|(_, server)| server == app.config.server_name));
    if let Some(invited) = invited {
        let theirs = app.storage().pushers(invited)?;
        pushers.extend(theirs.into_iter().filter(|pusher| pusher.kind == "http").map(|pusher| PusherKey {
            user_id: pusher.user_id,
            app_id: pusher.app_id,
            pushkey: pusher.pushkey,
        }));
    }
    let mut pushes = Vec::new();
    let mut index = 0;
    while let Some(first) = pushers.get(index) {
        let user_id = first.user_id.clone();
        let end = pushers[index..]
            .iter()
            .position(|key| key.user_id != user_id)
            .map_or(pushers.len(), |n| index + n);
        let of_user = &pushers[index..end];
        index = end;
        if user_id == pdu.sender {
            continue;
        }
        let ruleset = push::ruleset(app, &user_id)?;
        let facts = RoomFacts::load(app, &pdu.room_id, &user_id)?;
        let Some((_, rule)) = ruleset.matching_rule(&pdu.json, &facts.context(&user_id)) else { continue };
        let outcome = Outcome::of(&rule.actions);
        if !outcome.notify {
            continue;
        }
        let tweaks = tweaks(&rule.actions);
        // As Synapse does: `high` wakes the phone for what makes a sound,
        // highlights and encrypted messages (whose rules cannot be read here).
        let high = outcome.highlight || outcome.sound.is_some() || pdu.kind == "m.room.encrypted";
        let tweaks_text = Value::Object(tweaks).to_string();
        pushes.extend(of_user.iter().map(|key| QueuedPush {
            pusher: key.clone(),
            tweaks: tweaks_text.clone(),
            high,
        }));
    }
    Ok(pushes)
}

/// Queues a count-only notification for the user's `http` pushers (a read
/// receipt lowered their unread count: the phone's badge follows), as
/// Synapse does.
pub fn queue_badge(app: &App, user_id: &str) -> Result<()> {
    let keys: Vec<PusherKey> = app
        .storage()
        .pushers(user_id)?
        .into_iter()
        .filter(|pusher| pusher.kind == "http")
        .map(|pusher| PusherKey { user_id: pusher.user_id, app_id: pusher.app_id, pushkey: pusher.pushkey })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    app.storage().enqueue_badge(&keys)?;
    let kick = app.push_queue.kick.borrow().clone();
    if let Some(kick) = kick {
        keys.iter().for_each(|key| kick(key));
    }
    Ok(())
}

/// The `set_tweak` actions as the Push Gateway API's `tweaks` object
/// (`highlight` without a value is `true`).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#actions>.
pub fn tweaks(actions: &[Value]) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions {
        let Some(name) = action.get("set_tweak").and_then(Value::as_str) else { continue };
        let value = match action.get("value") {
            Some(value) => value.clone(),
            None if name == "highlight" => Value::Bool(true),
            None => continue,
        };
        tweaks.insert(name.to_owned(), value);
    }
    tweaks
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tweaks_come_from_set_tweak_actions() {
        let actions = [
            json!("notify"),
            json!({"set_tweak": "sound", "value": "default"}),
            json!({"set_tweak": "highlight"}),
            json!({"set_tweak": "odd"}),
        ];
        assert_eq!(Value::Object(tweaks(&actions)), json!({"sound": "default", "highlight": true}));
        assert!(tweaks(&[json!({"set_tweak": "highlight", "value": false})])["highlight"] == json!(false));
    }
}
