//! Wake-ups for long-polling `/sync`: a waiter per user, woken when anything
//! for that user arrives (an event in one of their rooms, account data, a
//! receipt, typing). No busy polling.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use event_listener::{Event, EventListener};

/// Waits for `listener` to fire, at most `left`: whether it fired (a
/// long-poll answers at once when it did, and once more at its deadline
/// when it did not).
pub async fn woken_within(listener: EventListener, left: Duration) -> bool {
    smol::future::or(
        async {
            listener.await;
            true
        },
        async {
            smol::Timer::after(left).await;
            false
        },
    )
    .await
}

/// Per-user wake-up signals.
#[derive(Default)]
pub struct Notifier {
    users: RefCell<HashMap<String, Rc<Event>>>,
    /// Fires at every wake: something was stored (application service
    /// senders wait on it for new events).
    anything: Event,
}

impl Notifier {
    /// A listener that fires at the next [`Notifier::wake`] for `user_id`.
    /// Create it BEFORE checking for news, so nothing slips between.
    pub fn listen(&self, user_id: &str) -> EventListener {
        let mut users = self.users.borrow_mut();
        let event = users.entry(user_id.to_string()).or_insert_with(|| Rc::new(Event::new()));
        event.listen()
    }

    /// A listener that fires at the next [`Notifier::wake`] of anyone.
    pub fn listen_anything(&self) -> EventListener {
        self.anything.listen()
    }

    /// The users with a request waiting now.
    pub fn waiting(&self) -> Vec<String> {
        let users = self.users.borrow();
        users
            .iter()
            .filter(|(_, event)| event.total_listeners() > 0)
            .map(|(user_id, _)| user_id.clone())
            .collect()
    }

    /// Wakes every waiting request of these users.
    pub fn wake<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        self.anything.notify(usize::MAX);
        let mut users = self.users.borrow_mut();
        for user_id in user_ids {
            if let Some(event) = users.get(user_id) {
                event.notify(usize::MAX);
            }
        }
        // Forget users nobody waits for, so the map stays as small as the waiters.
        users.retain(|_, event| event.total_listeners() > 0);
    }
}
