//! Presence: whether users are online, idle or offline, with an optional
//! status message, for `/sync`, `GET /presence/{userId}/status` and the
//! `m.presence` EDU. Owns the per-user records and their serial; knows
//! nothing of HTTP.
//!
//! Kept in memory only: a restart forgets everyone's presence, and users read
//! as offline until they sync or set it again (remote servers re-send theirs
//! on the next change or keep-alive). Synapse keeps the liveness side (who is
//! syncing, the timers) in memory too; it also persists the last states,
//! which we deliberately do not, to spare the SD card a write per sync.
//!
//! The serial starts from the wall clock in milliseconds (as typing's does),
//! so `/sync` tokens issued before a restart still compare lower than any
//! issued after it.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#presence>,
//! <https://spec.matrix.org/latest/server-server-api/#presence>.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::rooms::Engine;
use crate::storage::now_ms;

use super::outbox;

/// Synapse's `SYNC_ONLINE_TIMEOUT`: a local user who has neither synced nor
/// been active for this long goes offline.
const SYNC_ONLINE_TIMEOUT_MS: i64 = 30_000;
/// Synapse's `LAST_ACTIVE_GRANULARITY`: activity within this window counts
/// as `currently_active`, and bumps inside it are not news.
const LAST_ACTIVE_GRANULARITY_MS: i64 = 60_000;
/// Synapse's `FEDERATION_PING_INTERVAL`: online local users are re-announced
/// to other servers this often, so those servers do not time them out.
const FEDERATION_PING_INTERVAL_MS: i64 = 25 * 60_000;
/// Synapse's `FEDERATION_TIMEOUT`: a remote user not heard of for this long
/// goes offline (their server pings every 25 minutes while they are online).
const FEDERATION_TIMEOUT_MS: i64 = 30 * 60_000;
/// How often the timeouts above are checked while anyone is not offline
/// (Synapse checks every 5 seconds too).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Spec: the `presence` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Online,
    Unavailable,
    Offline,
}

impl State {
    /// Parses the spec's enum.
    pub fn parse(text: &str) -> Option<State> {
        match text {
            "online" => Some(State::Online),
            "unavailable" => Some(State::Unavailable),
            "offline" => Some(State::Offline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Unavailable => "unavailable",
            State::Offline => "offline",
        }
    }
}

/// One user's presence.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub state: State,
    pub status_msg: Option<String>,
    /// The last pro-active event (ms since epoch); 0 for never.
    pub last_active_ts: i64,
    /// The serial of the latest change others should hear of.
    pub serial: i64,
    /// Whether the user is ours (their liveness is tracked here) or a
    /// remote server's (it tells us).
    local: bool,
    /// Local users: when their latest `/sync` is due to end.
    syncing_until: i64,
    /// Remote users: `currently_active` as their server said.
    remote_active: bool,
    /// Local users: when they were last announced to other servers.
    /// Remote users: when their server last told us of them.
    federated_ts: i64,
}

impl Record {
    fn new(local: bool) -> Record {
        Record {
            state: State::Offline,
            status_msg: None,
            last_active_ts: 0,
            serial: 0,
            local,
            syncing_until: 0,
            remote_active: false,
            federated_ts: 0,
        }
    }

    /// Spec: `currently_active`, only meaningful while online.
    pub fn currently_active(&self, now: i64) -> bool {
        self.state == State::Online
            && if self.local {
                now - self.last_active_ts < LAST_ACTIVE_GRANULARITY_MS
            } else {
                self.remote_active
            }
    }

    /// What others see: the state, status and activity flag (not the times).
    fn visible(&self, now: i64) -> (State, Option<&str>, bool) {
        (self.state, self.status_msg.as_deref(), self.currently_active(now))
    }

    /// The `m.presence` content (also the `GET .../status` answer).
    pub fn content(&self, now: i64) -> Value {
        let mut content = json!({ "presence": self.state.as_str() });
        if 0 < self.last_active_ts {
            content["last_active_ago"] = json!((now - self.last_active_ts).max(0));
        }
        if let Some(status_msg) = &self.status_msg {
            content["status_msg"] = json!(status_msg);
        }
        // As Synapse: the flag is only sent with `online`.
        if self.state == State::Online {
            content["currently_active"] = json!(self.currently_active(now));
        }
        content
    }
}

/// A change to one user's presence.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// `PUT /presence/{userId}/status`: sets the state and replaces the status.
    Put { state: State, status_msg: Option<String> },
    /// A `/sync` with `set_presence` online or unavailable, due to end at `until`.
    Sync { state: State, until: i64 },
    /// An `m.presence` EDU entry from the user's server.
    Remote { state: State, status_msg: Option<String>, last_active_ago: i64, currently_active: bool },
}

/// What a sweep found.
#[derive(Debug, Default, PartialEq)]
pub struct Sweep {
    /// Users who timed out to offline.
    pub went_offline: Vec<String>,
    /// Online local users due for a keep-alive to other servers.
    pub ping: Vec<String>,
    /// Whether anyone is still not offline (so sweeping should go on).
    pub anyone_live: bool,
}

/// Everyone's presence, in memory.
pub struct Presence {
    users: RefCell<HashMap<String, Record>>,
    serial: Cell<i64>,
    sweeping: Cell<bool>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            users: RefCell::new(HashMap::new()),
            serial: Cell::new(now_ms()),
            sweeping: Cell::new(false),
        }
    }
}

impl Presence {
    /// The latest serial.
    pub fn serial(&self) -> i64 {
        self.serial.get()
    }

    fn bump(&self) -> i64 {
        let next = (self.serial.get() + 1).max(now_ms());
        self.serial.set(next);
        next
    }

    /// A user's record, if we know anything of them.
    pub fn get(&self, user_id: &str) -> Option<Record> {
        self.users.borrow().get(user_id).cloned()
    }

    /// Applies a change at time `now`; true if others should hear of it (the
    /// state, the status or `currently_active` changed).
    pub fn apply(&self, user_id: &str, update: Update, now: i64) -> bool {
        let mut users = self.users.borrow_mut();
        let local = !matches!(update, Update::Remote { .. });
        let record = users.entry(user_id.to_owned()).or_insert_with(|| Record::new(local));
        let before = record.clone();
        record.local = local;
        match update {
            Update::Put { state, status_msg } => {
                record.state = state;
                record.status_msg = status_msg;
                // A client that sets its presence is alive: it gets the same
                // grace before timing out as after a sync.
                record.syncing_until = record.syncing_until.max(now);
                if state == State::Online {
                    record.last_active_ts = now;
                }
            }
            Update::Sync { state, until } => {
                record.syncing_until = record.syncing_until.max(until);
                match state {
                    // A sync does not undo an `unavailable` the user set (as
                    // Synapse: an idle client's polls must not mark it online),
                    // but counts as activity, as Synapse has always done.
                    State::Online => {
                        if record.state == State::Offline {
                            record.state = State::Online;
                        }
                        record.last_active_ts = now;
                    }
                    State::Unavailable => record.state = State::Unavailable,
                    // Syncing with `offline` does not touch presence at all.
                    State::Offline => {}
                }
            }
            Update::Remote { state, status_msg, last_active_ago, currently_active } => {
                record.state = state;
                record.status_msg = status_msg;
                record.last_active_ts = now - last_active_ago.max(0);
                record.remote_active = currently_active;
                record.federated_ts = now;
            }
        }
        let changed = record.visible(now) != before.visible(now) || (!local && *record != before);
        if changed {
            record.serial = self.bump();
        }
        changed
    }

    /// Records that `user_id` was just announced to other servers.
    pub fn mark_federated(&self, user_id: &str, now: i64) {
        if let Some(record) = self.users.borrow_mut().get_mut(user_id) {
            record.federated_ts = now;
        }
    }

    /// Users whose presence changed after serial `since` and up to `up_to`
    /// (everyone known, for `None`), ordered by user.
    pub fn changed_since(&self, since: Option<i64>, up_to: i64) -> Vec<(String, Record)> {
        let mut changed: Vec<(String, Record)> = self
            .users
            .borrow()
            .iter()
            .filter(|(_, record)| since.is_none_or(|since| since < record.serial) && record.serial <= up_to)
            .map(|(user_id, record)| (user_id.clone(), record.clone()))
            .collect();
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        changed
    }

    /// Applies the timeouts at time `now`.
    pub fn sweep(&self, now: i64) -> Sweep {
        let mut sweep = Sweep::default();
        let mut users = self.users.borrow_mut();
        let mut ids: Vec<&String> = users.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for user_id in ids {
            let Some(record) = users.get_mut(&user_id) else { continue };
            if record.state == State::Offline {
                continue;
            }
            let timed_out = if record.local {
                record.syncing_until.max(record.last_active_ts) + SYNC_ONLINE_TIMEOUT_MS < now
            } else {
                record.federated_ts + FEDERATION_TIMEOUT_MS < now
            };
            if timed_out {
                record.state = State::Offline;
                record.serial = self.bump();
                sweep.went_offline.push(user_id);
                continue;
            }
            sweep.anyone_live = true;
            if record.local && record.federated_ts + FEDERATION_PING_INTERVAL_MS < now {
                sweep.ping.push(user_id);
            }
        }
        // Offline users with nothing to say are forgotten, to keep the map small.
        users.retain(|_, record| {
            record.state != State::Offline
                || record.status_msg.is_some()
                || now - record.serial < FEDERATION_TIMEOUT_MS
        });
        sweep
    }
}

/// Local users who should see `user_id`'s presence: members of the rooms
/// they are joined to, and themselves.
fn local_peers(app: &Engine, user_id: &str) -> Result<BTreeSet<String>> {
    let mut peers = BTreeSet::from([user_id.to_owned()]);
    // The storage is borrowed one statement at a time.
    let rooms = app.storage().rooms_with_membership(user_id, "join")?;
    for room_id in rooms {
        peers.extend(app.storage().server_members(&room_id, &app.config.server_name, "join")?);
    }
    Ok(peers)
}

/// Whether `viewer` may see `target`'s presence: themselves, or someone they
/// share a joined room with.
pub fn can_see(app: &Engine, viewer: &str, target: &str) -> Result<bool> {
    if viewer == target {
        return Ok(true);
    }
    let theirs: BTreeSet<String> = app.storage().rooms_with_membership(target, "join")?.into_iter().collect();
    Ok(app.storage().rooms_with_membership(viewer, "join")?.iter().any(|room| theirs.contains(room)))
}

/// `PUT /presence/{userId}/status` for a local user.
pub fn put(app: &Rc<Engine>, user_id: &str, state: State, status_msg: Option<String>) -> Result<()> {
    if app.presence.apply(user_id, Update::Put { state, status_msg }, now_ms()) {
        announce(app, user_id)?;
    }
    start_sweeping(app);
    Ok(())
}

/// `/sync`'s `set_presence` (`online` when absent): marks the syncing user,
/// whose sync may last `timeout`. Costs a map lookup unless something changed.
pub fn on_sync(app: &Rc<Engine>, user_id: &str, set_presence: Option<&str>, timeout: Duration) -> Result<()> {
    let state = State::parse(set_presence.unwrap_or("online")).ok_or_else(|| {
        Error::InvalidParam("`set_presence` must be one of online, unavailable, offline".into())
    })?;
    if state == State::Offline {
        return Ok(());
    }
    let now = now_ms();
    let until = now + timeout.as_millis() as i64;
    if app.presence.apply(user_id, Update::Sync { state, until }, now) {
        announce(app, user_id)?;
    }
    start_sweeping(app);
    Ok(())
}

/// An `m.presence` EDU from `origin`: applies its entries and wakes the
/// local users who share a room with them.
pub fn receive_edu(app: &Engine, origin: &str, content: &Value) -> Result<()> {
    let now = now_ms();
    for (user_id, update) in pushed_updates(origin, content) {
        if app.presence.apply(&user_id, update, now) {
            let peers = local_peers(app, &user_id)?;
            app.notifier.wake(peers.iter().map(String::as_str));
        }
    }
    Ok(())
}

/// The well-formed entries of an `m.presence` EDU's `push` list. Each must be
/// about one of `origin`'s own users, else it is dropped.
fn pushed_updates(origin: &str, content: &Value) -> Vec<(String, Update)> {
    let Some(push) = content.get("push").and_then(Value::as_array) else { return Vec::new() };
    let mut updates = Vec::new();
    for entry in push {
        let Some(user_id) = entry.get("user_id").and_then(Value::as_str) else { continue };
        if user_id.split_once(':').map(|(_, server)| server) != Some(origin) {
            log::debug!("presence for {user_id} from {origin} dropped: not its user");
            continue;
        }
        let Some(state) = entry.get("presence").and_then(Value::as_str).and_then(State::parse) else {
            continue;
        };
        let update = Update::Remote {
            state,
            status_msg: entry.get("status_msg").and_then(Value::as_str).map(str::to_owned),
            last_active_ago: entry.get("last_active_ago").and_then(Value::as_i64).unwrap_or(0),
            currently_active: entry.get("currently_active").and_then(Value::as_bool).unwrap_or(false),
        };
        updates.push((user_id.to_owned(), update));
    }
    updates
}

/// Tells local peers (waking their syncs) and the servers sharing a room
/// with `user_id` of their presence.
fn announce(app: &Engine, user_id: &str) -> Result<()> {
    let peers = local_peers(app, user_id)?;
    app.notifier.wake(peers.iter().map(String::as_str));
    federate(app, user_id)
}

/// Queues an `m.presence` EDU for every other server in the user's rooms.
fn federate(app: &Engine, user_id: &str) -> Result<()> {
    let Some(record) = app.presence.get(user_id) else { return Ok(()) };
    let mut servers = BTreeSet::new();
    let rooms = app.storage().rooms_with_membership(user_id, "join")?;
    for room_id in rooms {
        servers.extend(outbox::destinations(app, &room_id, None)?);
    }
    let now = now_ms();
    app.presence.mark_federated(user_id, now);
    if servers.is_empty() {
        return Ok(());
    }
    let mut entry = record.content(now);
    entry["user_id"] = json!(user_id);
    entry["last_active_ago"] = json!(if 0 < record.last_active_ts { now - record.last_active_ts } else { 0 });
    entry["currently_active"] = json!(record.currently_active(now));
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [entry] } });
    outbox::queue_edu(app, &servers.into_iter().collect::<Vec<_>>(), &edu)
}

/// Runs the timeouts every [`SWEEP_INTERVAL`] while anyone is not offline.
fn start_sweeping(app: &Rc<Engine>) {
    if app.presence.sweeping.replace(true) {
        return;
    }
    let app_for_timer = app.clone();
    app.executor
        .spawn(async move {
            let app = app_for_timer;
            loop {
                smol::Timer::after(SWEEP_INTERVAL).await;
                let sweep = app.presence.sweep(now_ms());
                for user_id in &sweep.went_offline {
                    if let Err(error) = announce_offline(&app, user_id) {
                        log::warn!("presence of {user_id}: {error}");
                    }
                }
                for user_id in &sweep.ping {
                    if let Err(error) = federate(&app, user_id) {
                        log::warn!("presence of {user_id}: {error}");
                    }
                }
                if !sweep.anyone_live {
                    app.presence.sweeping.set(false);
                    return;
                }
            }
        })
        .detach();
}

/// A user timed out: local peers always hear of it, other servers only of
/// our own users (they time theirs out themselves).
fn announce_offline(app: &Engine, user_id: &str) -> Result<()> {
    if app.is_local_user(user_id) {
        announce(app, user_id)
    } else {
        let peers = local_peers(app, user_id)?;
        app.notifier.wake(peers.iter().map(String::as_str));
        Ok(())
    }
}

/// `/sync`'s `presence.events`: `m.presence` for the syncing user and those
/// sharing a room with them whose presence changed after serial `since` (all
/// known, for an initial sync) up to `up_to`, and for the users of
/// `newly_met` (who came to share a room with them in the window: their
/// presence is news to the user, as Synapse sends it), that `allows` lets
/// through.
pub fn sync_events(
    app: &Engine,
    user_id: &str,
    since: Option<i64>,
    up_to: i64,
    newly_met: &BTreeSet<String>,
    allows: impl Fn(&str) -> bool,
) -> Result<Vec<Value>> {
    let changed = app.presence.changed_since(since, up_to);
    if changed.is_empty() && newly_met.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut events = Vec::new();
    let mut sent = BTreeSet::new();
    for (sender, record) in changed {
        if allows(&sender) && can_see(app, user_id, &sender)? {
            events.push(json!({ "type": "m.presence", "sender": sender, "content": record.content(now) }));
            sent.insert(sender);
        }
    }
    for sender in newly_met {
        if sent.contains(sender) || !allows(sender) {
            continue;
        }
        if let Some(record) = app.presence.get(sender) {
            events.push(json!({ "type": "m.presence", "sender": sender, "content": record.content(now) }));
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(state: State, status: Option<&str>) -> Update {
        Update::Put { state, status_msg: status.map(str::to_owned) }
    }

    #[test]
    fn puts_bump_the_serial_only_when_others_would_see_a_change() {
        let presence = Presence::default();
        let start = presence.serial();
        assert!(presence.apply("@a:x", put(State::Online, Some("hi")), 1_000));
        assert!(!presence.apply("@a:x", put(State::Online, Some("hi")), 2_000));
        assert!(presence.apply("@a:x", put(State::Online, None), 3_000));
        let changed = presence.changed_since(Some(start), presence.serial());
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].1.last_active_ts, 3_000);
        assert!(presence.changed_since(Some(presence.serial()), presence.serial()).is_empty());
    }

    #[test]
    fn syncing_marks_online_but_keeps_a_chosen_unavailable() {
        let presence = Presence::default();
        assert!(presence.apply("@a:x", Update::Sync { state: State::Online, until: 31_000 }, 1_000));
        assert_eq!(presence.get("@a:x").unwrap().state, State::Online);
        // A later poll while active is no news.
        assert!(!presence.apply("@a:x", Update::Sync { state: State::Online, until: 60_000 }, 30_000));
        assert!(presence.apply("@a:x", put(State::Unavailable, None), 31_000));
        assert!(!presence.apply("@a:x", Update::Sync { state: State::Online, until: 90_000 }, 60_000));
        assert_eq!(presence.get("@a:x").unwrap().state, State::Unavailable);
        // `offline` leaves presence alone.
        assert!(!presence.apply("@b:x", Update::Sync { state: State::Offline, until: 0 }, 1_000));
    }

    #[test]
    fn content_has_last_active_ago_and_currently_active_while_online() {
        let presence = Presence::default();
        presence.apply("@a:x", put(State::Online, Some("busy")), 10_000);
        let record = presence.get("@a:x").unwrap();
        assert_eq!(
            record.content(15_000),
            json!({"presence": "online", "last_active_ago": 5_000, "status_msg": "busy", "currently_active": true})
        );
        assert_eq!(record.content(100_000)["currently_active"], json!(false));
        presence.apply("@a:x", put(State::Offline, None), 20_000);
        assert_eq!(
            presence.get("@a:x").unwrap().content(20_000),
            json!({"presence": "offline", "last_active_ago": 10_000})
        );
    }

    #[test]
    fn users_who_stop_syncing_go_offline_and_remote_ones_after_the_federation_timeout() {
        let presence = Presence::default();
        presence.apply("@a:x", Update::Sync { state: State::Online, until: 40_000 }, 10_000);
        let remote = Update::Remote {
            state: State::Online,
            status_msg: None,
            last_active_ago: 0,
            currently_active: true,
        };
        presence.apply("@r:y", remote, 10_000);
        let still = presence.sweep(40_000 + SYNC_ONLINE_TIMEOUT_MS);
        assert!(still.went_offline.is_empty() && still.anyone_live);
        let later = presence.sweep(41_000 + SYNC_ONLINE_TIMEOUT_MS);
        assert_eq!(later.went_offline, vec!["@a:x".to_string()]);
        assert!(later.anyone_live);
        let much_later = presence.sweep(11_000 + FEDERATION_TIMEOUT_MS);
        assert_eq!(much_later.went_offline, vec!["@r:y".to_string()]);
        assert!(!much_later.anyone_live);
    }

    #[test]
    fn online_local_users_are_pinged_to_other_servers() {
        let presence = Presence::default();
        presence.apply("@a:x", put(State::Online, None), 0);
        presence.apply(
            "@a:x",
            Update::Sync { state: State::Online, until: FEDERATION_PING_INTERVAL_MS + 10 },
            0,
        );
        presence.mark_federated("@a:x", 0);
        assert!(presence.sweep(FEDERATION_PING_INTERVAL_MS).ping.is_empty());
        assert_eq!(presence.sweep(FEDERATION_PING_INTERVAL_MS + 1).ping, vec!["@a:x".to_string()]);
    }

    #[test]
    fn edu_entries_about_other_servers_users_are_dropped() {
        let content = json!({"push": [
            {"user_id": "@a:origin", "presence": "online", "last_active_ago": 5, "currently_active": true},
            {"user_id": "@b:elsewhere", "presence": "online", "last_active_ago": 5},
            {"user_id": "@c:origin", "presence": "busy", "last_active_ago": 5},
            {"user_id": "@d:origin", "presence": "unavailable", "status_msg": "lunch"},
        ]});
        let updates = pushed_updates("origin", &content);
        let users: Vec<&str> = updates.iter().map(|(user, _)| user.as_str()).collect();
        assert_eq!(users, ["@a:origin", "@d:origin"]);
        assert_eq!(
            updates[1].1,
            Update::Remote {
                state: State::Unavailable,
                status_msg: Some("lunch".into()),
                last_active_ago: 0,
                currently_active: false
            }
        );
        assert!(pushed_updates("origin", &json!({"push": "nope"})).is_empty());
    }

    #[test]
    fn states_parse_from_the_spec_enum_only() {
        for state in [State::Online, State::Unavailable, State::Offline] {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::parse("busy"), None);
    }
}
