//! Handing events and EDUs to federation: the room engine queues them per
//! destination in the database (our own events in the transaction that
//! stores them) and kicks the destination's sender, which the
//! federation layer registers at start-up (so this layer never calls up).

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;

use crate::error::Result;
use crate::rooms::Engine;

/// Starts (or wakes) the sender of one destination.
pub type Kick = Rc<dyn Fn(&str)>;

/// The federation layer's kick, once registered.
#[derive(Default)]
pub struct Outbox {
    kick: RefCell<Option<Kick>>,
}

impl Outbox {
    /// Registers the function that starts or wakes a destination's sender.
    pub fn register(&self, kick: Kick) {
        *self.kick.borrow_mut() = Some(kick);
    }

    fn kick(&self, destination: &str) {
        let kick = self.kick.borrow().clone();
        if let Some(kick) = kick {
            kick(destination);
        }
    }
}

/// The other servers an event in `room_id` goes to: those with joined
/// members, plus `also` (the server of an invited or departing user).
pub fn destinations(app: &Engine, room_id: &str, also: Option<&str>) -> Result<Vec<String>> {
    let mut servers = app.storage().servers_in_room(room_id)?;
    if let Some(server) = also {
        if !servers.iter().any(|known| known == server) {
            servers.push(server.to_string());
        }
    }
    servers.retain(|server| *server != app.config.server_name);
    if servers.is_empty() {
        return Ok(servers);
    }
    // The room's server ACL applies to what we send as well as what we take.
    if let Some(acl) = super::current_state_content(app, room_id, "m.room.server_acl", "")? {
        let acl = crate::protocol::server_acl::Acl::new(&acl);
        servers.retain(|server| acl.allows(server));
    }
    Ok(servers)
}

/// Queues a PDU another server made (and sent us) for every other server in
/// its room but that one.
pub fn queue_pdu_except(app: &Engine, room_id: &str, event_id: &str, origin: &str) -> Result<()> {
    let mut destinations = destinations(app, room_id, None)?;
    destinations.retain(|server| server != origin);
    if destinations.is_empty() {
        return Ok(());
    }
    app.storage().enqueue(&destinations, "pdu", event_id)?;
    for destination in &destinations {
        app.outbox.kick(destination);
    }
    Ok(())
}

/// Queues an EDU for the given servers.
pub fn queue_edu(app: &Engine, destinations: &[String], edu: &Value) -> Result<()> {
    let destinations: Vec<String> =
        destinations.iter().filter(|server| **server != app.config.server_name).cloned().collect();
    if destinations.is_empty() {
        return Ok(());
    }
    app.storage().enqueue(&destinations, "edu", &edu.to_string())?;
    for destination in &destinations {
        app.outbox.kick(destination);
    }
    Ok(())
}

/// Wakes a destination's sender (it answered us, so it is back).
pub fn nudge(app: &Engine, destination: &str) {
    app.outbox.kick(destination);
}
