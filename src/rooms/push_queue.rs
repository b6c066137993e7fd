//! Notifications queued for push gateways: `push_actions` decides which
//! pushers an event notifies when it is stored, and the rows are queued in
//! the same transaction as the event (see `storage::push`). The federation
//! layer registers the function that starts a pusher's sender (so this layer
//! never calls up), as for the federation outbox.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#receiving-notifications>.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::error::Result;
use crate::rooms::Engine;
use crate::storage::{PusherKey, QueuedPush};

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

/// Queues a count-only notification for the user's `http` pushers (a read
/// receipt lowered their unread count: the phone's badge follows), as
/// Synapse does.
pub fn queue_badge(app: &Engine, user_id: &str) -> Result<()> {
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
