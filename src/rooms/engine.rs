//! The room engine's state on the event loop thread: configuration, the open
//! database and its group commit, the server signing key, the stream
//! counter, the application services, and the engine's caches and queues.
//! `rooms/` functions take it; `remote::Remote` and `app::App` sit above it.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::LocalExecutor;

use crate::config::Config;
use crate::credentials;
use crate::error::{Error, Result};
use crate::protocol::appservice::AppService;
use crate::protocol::signing::SigningKey;
use crate::request::Request;
use crate::rooms::notify::Notifier;
use crate::rooms::outbox::Outbox;
use crate::rooms::pdu_cache::PduCache;
use crate::rooms::presence::Presence;
use crate::rooms::search_index::SearchIndex;
use crate::rooms::typing::Typing;
use crate::rooms::visibility;
use crate::storage::{Storage, TokenOwner};

/// The group commit's state: whether a commit is scheduled, and a signal
/// with a generation count for those waiting on it.
#[derive(Default)]
struct GroupCommit {
    scheduled: Cell<bool>,
    /// When the last group was committed, and whether a checkpoint waits for
    /// the writes to pause.
    last_commit: Cell<Option<Instant>>,
    idle_checkpoint_pending: Cell<bool>,
    generation: Cell<u64>,
    /// The generation whose commit failed last.
    failed: Cell<Option<u64>>,
    done: event_listener::Event,
}

impl GroupCommit {
    fn finish(&self, committed: Result<()>) {
        if let Err(error) = committed {
            log::error!("group commit failed, its writes are undone: {error}");
            self.failed.set(Some(self.generation.get()));
        }
        self.generation.set(self.generation.get() + 1);
        self.scheduled.set(false);
        self.last_commit.set(Some(Instant::now()));
        self.done.notify(usize::MAX);
    }
}

/// Once writes pause this long, the WAL is folded into the database file and
/// truncated: the disk holds one file between bursts (SQLite's automatic
/// checkpoints keep the WAL from growing during them).
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(2);

/// Waits for the writes to pause, then checkpoints (trying again later if
/// another process is reading).
async fn checkpoint_when_idle(storage: Rc<RefCell<Storage>>, group: Rc<GroupCommit>) {
    loop {
        smol::Timer::after(IDLE_CHECKPOINT_AFTER).await;
        let quiet = group.last_commit.get().is_none_or(|last| last.elapsed() >= IDLE_CHECKPOINT_AFTER);
        if !quiet || storage.borrow().group_open() {
            continue;
        }
        // Bound first: the borrow must end before the next await.
        let checkpointed = storage.borrow().checkpoint_without_waiting();
        match checkpointed {
            Ok(false) => continue,
            Ok(true) => break,
            Err(error) => {
                log::warn!("idle checkpoint failed: {error}");
                break;
            }
        }
    }
    group.idle_checkpoint_pending.set(false);
}

/// What the room engine needs.
pub struct Engine {
    pub config: Config,
    storage: Rc<RefCell<Storage>>,
    /// Commits concurrent requests' writes together.
    group_commit: Rc<GroupCommit>,
    pub signing_key: SigningKey,
    /// The last stream position handed out (events, account data, receipts).
    stream: Cell<i64>,
    /// Wakes long-polling syncs.
    pub notifier: Notifier,
    /// Who is typing where (memory only).
    pub typing: Typing,
    /// Who is online (memory only).
    pub presence: Presence,
    /// Each local user's push rules and ignore list as evaluation needs them (memory only).
    pub push_rules: crate::rooms::push::Cache,
    /// What state groups say for history visibility (memory only).
    pub visibility: visibility::Cache,
    /// OpenID tokens our users handed to third parties (memory only).
    pub openid_tokens: crate::rooms::openid::OpenIdTokens,
    /// Which member events each device was sent under lazy loading (memory only).
    pub lazy_members: crate::rooms::lazy_members::LazyMembers,
    /// What each sliding sync connection was sent (memory only, bounded).
    pub sliding_sync: crate::rooms::sliding_sync::Connections,
    /// Hands events to the federation senders.
    pub outbox: Outbox,
    /// Starts the senders of pushers with notifications queued.
    pub push_queue: crate::rooms::push_queue::PushQueue,
    /// Each room's joined local members and rule facts at its current state (memory only).
    pub push_audiences: crate::rooms::push_actions::Audiences,
    /// Parsed state events, for auth checks.
    pub pdu_cache: PduCache,
    /// Whether the full-text index lags behind the events.
    pub search_index: SearchIndex,
    /// Wakes downloads waiting for an asynchronous upload's content.
    pub media_uploaded: event_listener::Event,
    /// Turns for streaming large content (see `rooms::media`).
    pub media_streams: smol::lock::Semaphore,
    /// Turns for streaming state answers (`send_join`, `/state`,
    /// `/state_ids`; see `rooms::state_answer`).
    pub state_answers: smol::lock::Semaphore,
    /// State answers under way per requesting server (see
    /// `rooms::state_answer::MAX_ANSWERS_PER_SERVER`).
    pub state_answer_servers: Rc<crate::rooms::media::Slots>,
    /// Streams per client (see `rooms::media::MAX_STREAMS_PER_CLIENT`).
    pub media_stream_clients: Rc<crate::rooms::media::Slots>,
    /// Uploads under way, in all and per user (see `rooms::upload`).
    pub media_uploads: Rc<crate::rooms::media::Slots>,
    /// Runs background work (typing expiry, federation queues) on this thread.
    pub executor: Rc<LocalExecutor<'static>>,
    /// What `GET /metrics` reports (see `metrics.rs`).
    pub metrics: crate::metrics::Metrics,
    /// The application services registered (`app_service_config_files` and
    /// `hearth appservice add`), replaced whole when SIGHUP reloads them.
    app_services: RefCell<Rc<Vec<RegisteredService>>>,
}

/// An application service with the hash of its `as_token`, which requests
/// are matched on as user tokens are (by hash, never the secret itself).
pub struct RegisteredService {
    pub service: Rc<AppService>,
    as_token_hash: [u8; 32],
}

/// Every application service registration the node loads, each with where
/// it comes from (for errors and `hearth appservice list`): the files of
/// `app_service_config_files`, then those added with `hearth appservice add`.
pub fn app_service_registrations(config: &Config, storage: &Storage) -> Result<Vec<(String, String)>> {
    let mut registrations = config.app_service_files().map_err(Error::Internal)?;
    for added in storage.added_app_services()? {
        registrations.push((added_source(&added.appservice_id), added.registration));
    }
    Ok(registrations)
}

/// How errors name a registration added with `hearth appservice add`.
pub fn added_source(appservice_id: &str) -> String {
    format!("{appservice_id:?} (added with `hearth appservice add`)")
}

/// Reads the registrations (files and added ones), validates them together
/// and makes each service's own user, which acts from the start (Synapse
/// needs no registration for it either): an account without a password.
/// On a read-only connection (`hearth doctor` beside the node) the users are
/// left to the node, which makes them when it loads the registrations.
fn load_app_services(config: &Config, storage: &mut Storage) -> Result<Vec<RegisteredService>> {
    let registrations = app_service_registrations(config, storage)?;
    let texts = registrations.iter().map(|(source, text)| (source.as_str(), text.as_str()));
    let services =
        crate::protocol::appservice::parse_all(texts, &config.server_name).map_err(Error::Internal)?;
    let writable = !storage.is_read_only();
    for service in services.iter().filter(|_| writable) {
        if storage.user(&service.sender)?.is_none() {
            let localpart = service.sender.trim_start_matches('@').split(':').next().unwrap_or_default();
            storage.create_user(&service.sender, localpart, None, false, None)?;
        }
    }
    Ok(services
        .into_iter()
        .map(|service| RegisteredService {
            as_token_hash: credentials::hash_token(&service.as_token),
            service: Rc::new(service),
        })
        .collect())
}

impl Engine {
    /// Loads (or makes, on first start) the signing key and wraps the storage.
    pub fn new(config: Config, mut storage: Storage, executor: Rc<LocalExecutor<'static>>) -> Result<Engine> {
        let signing_key = match storage.current_signing_key()? {
            Some((key_id, seed)) => {
                let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id);
                SigningKey::from_seed(version, &seed).map_err(|error| {
                    Error::Internal(format!("stored signing key {key_id} is corrupt: {error}"))
                })?
            }
            None => {
                let version = credentials::random_string(8);
                let key =
                    SigningKey::generate(&version).map_err(|error| Error::Internal(error.to_string()))?;
                storage.insert_signing_key(&key.key_id, &key.seed())?;
                log::info!("generated server signing key {}", key.key_id);
                key
            }
        };
        let stream = Cell::new(storage.max_stream_id()?.max(storage.max_e2ee_stream_id()?));
        let app_services = RefCell::new(Rc::new(load_app_services(&config, &mut storage)?));
        Ok(Engine {
            app_services,
            config,
            storage: Rc::new(RefCell::new(storage)),
            group_commit: Rc::default(),
            signing_key,
            stream,
            notifier: Notifier::default(),
            typing: Typing::default(),
            presence: Presence::default(),
            push_rules: crate::rooms::push::Cache::default(),
            visibility: visibility::Cache::default(),
            openid_tokens: Default::default(),
            lazy_members: crate::rooms::lazy_members::LazyMembers::default(),
            sliding_sync: crate::rooms::sliding_sync::Connections::default(),
            outbox: Outbox::default(),
            push_queue: Default::default(),
            push_audiences: Default::default(),
            search_index: SearchIndex::default(),
            media_uploaded: event_listener::Event::new(),
            media_streams: smol::lock::Semaphore::new(crate::rooms::media::MAX_STREAMS),
            state_answers: smol::lock::Semaphore::new(crate::rooms::state_answer::MAX_ANSWERS),
            state_answer_servers: crate::rooms::media::Slots::new(
                crate::rooms::state_answer::MAX_PENDING_ANSWERS,
                crate::rooms::state_answer::MAX_ANSWERS_PER_SERVER,
            ),
            media_stream_clients: crate::rooms::media::Slots::new(
                usize::MAX,
                crate::rooms::media::MAX_STREAMS_PER_CLIENT,
            ),
            media_uploads: crate::rooms::media::Slots::new(
                crate::rooms::upload::MAX_UPLOADS,
                crate::rooms::upload::MAX_UPLOADS_PER_USER,
            ),
            pdu_cache: PduCache::default(),
            executor,
            metrics: crate::metrics::Metrics::default(),
        })
    }

    /// The next stream position (strictly increasing, shared by every stream).
    pub fn next_stream_id(&self) -> i64 {
        self.stream.set(self.stream.get() + 1);
        self.stream.get()
    }

    /// The latest stream position handed out.
    pub fn current_stream_id(&self) -> i64 {
        self.stream.get()
    }

    /// The database. Never hold this across an `.await`.
    pub fn storage(&self) -> RefMut<'_, Storage> {
        self.storage.borrow_mut()
    }

    /// Runs `work` in one database transaction (see [`Storage::begin`]): its
    /// reads take the lock once, and its writes stay or, when it fails, are
    /// undone as a whole. They are committed with those of the other requests
    /// the loop runs meanwhile (a group commit, scheduled here); see
    /// [`Engine::durable`]. `work` must not await.
    pub fn in_transaction<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        self.storage().begin()?;
        let result = self.finish_transaction(work());
        self.schedule_group_commit();
        result
    }

    /// Runs `work`, which only reads, in one database transaction: one lock
    /// and one snapshot for all its reads. `work` must not await.
    pub fn in_snapshot<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        self.storage().begin_read()?;
        self.finish_transaction(work())
    }

    /// Ends the level `work` ran in: kept when it and its release succeed,
    /// undone otherwise.
    fn finish_transaction<T>(&self, result: Result<T>) -> Result<T> {
        let result = result.and_then(|value| self.storage().commit().map(|()| value));
        if result.is_err() {
            self.storage().rollback();
        }
        result
    }

    /// Commits the open group transaction once the requests already ready
    /// to run have had their turn.
    fn schedule_group_commit(&self) {
        if !self.storage().group_open() || self.group_commit.scheduled.replace(true) {
            return;
        }
        let storage = self.storage.clone();
        let group = self.group_commit.clone();
        self.executor
            .spawn(async move {
                smol::future::yield_now().await;
                let committed = storage.borrow_mut().commit_group();
                group.finish(committed);
                if !group.idle_checkpoint_pending.replace(true) {
                    checkpoint_when_idle(storage, group).await;
                }
            })
            .detach();
    }

    /// Waits until what this task may have read or written is committed:
    /// every response and every federation request waits for this first, so
    /// nothing leaves the process that a crash could still undo.
    ///
    /// Only the group open now is waited for: a group opened later (by a long
    /// piece of work that writes in turns, such as createRoom's invites) holds
    /// nothing of this task's, and waiting for it too could wait for ever.
    pub async fn durable(&self) -> Result<()> {
        if !self.storage().group_open() {
            return Ok(());
        }
        let generation = self.group_commit.generation.get();
        while self.group_commit.generation.get() == generation {
            let listener = self.group_commit.done.listen();
            if self.group_commit.generation.get() != generation {
                break;
            }
            self.schedule_group_commit();
            listener.await;
        }
        if self.group_commit.failed.get() == Some(generation) {
            return Err(Error::Internal("the database could not commit".into()));
        }
        Ok(())
    }

    /// Commits an open group transaction now (at shutdown).
    pub fn commit_now(&self) -> Result<()> {
        self.storage().commit_group()
    }

    /// Whether the listener with this index serves the federation API.
    pub fn serves_federation(&self, listener: usize) -> bool {
        self.config.listeners.get(listener).is_some_and(|listener| listener.federation)
    }

    /// `@localpart:server_name`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.config.server_name)
    }

    /// Whether `user_id` belongs to this server.
    #[allow(dead_code)] // used by membership and federation
    pub fn is_local_user(&self, user_id: &str) -> bool {
        user_id.split_once(':').is_some_and(|(_, server)| server == self.config.server_name)
    }

    /// The account behind the request's access token.
    pub fn authenticate(&self, request: &Request) -> Result<TokenOwner> {
        let token = request.access_token().ok_or(Error::MissingToken)?;
        let token_hash = credentials::hash_token(token);
        if let Some(service) = self.app_service_by_token_hash(&token_hash) {
            return self.act_for(&service, request);
        }
        let owner = self.storage().token_owner(&token_hash)?;
        let owner = owner.ok_or(Error::UnknownToken { soft_logout: false })?;
        // Guests may use only what the spec lists for them (the router marks
        // those requests); with guest access turned off, nothing.
        // Spec: <https://spec.matrix.org/latest/client-server-api/#guest-access>.
        if owner.is_guest && !(self.config.guest_access && request.guests_allowed.get()) {
            return Err(Error::matrix(403, "M_GUEST_ACCESS_FORBIDDEN", "guests may not use this endpoint"));
        }
        Ok(owner)
    }

    /// The application services registered now.
    pub fn app_services(&self) -> Rc<Vec<RegisteredService>> {
        self.app_services.borrow().clone()
    }

    /// Reads the registration files and the added registrations again
    /// (SIGHUP): on any error the services stay as they were. Returns how many there are now.
    pub fn reload_app_services(&self) -> Result<usize> {
        let loaded = load_app_services(&self.config, &mut self.storage())?;
        let count = loaded.len();
        *self.app_services.borrow_mut() = Rc::new(loaded);
        // Who is an exclusive user (and so nobody's push audience) may have changed.
        self.push_audiences.forget_all();
        Ok(count)
    }

    /// The application service whose `as_token` the request carries, if any.
    pub fn app_service(&self, request: &Request) -> Option<Rc<AppService>> {
        let token = request.access_token()?;
        self.app_service_by_token_hash(&credentials::hash_token(token))
    }

    fn app_service_by_token_hash(&self, token_hash: &[u8; 32]) -> Option<Rc<AppService>> {
        self.app_services
            .borrow()
            .iter()
            .find(|registered| registered.as_token_hash == *token_hash)
            .map(|registered| registered.service.clone())
    }

    /// The user an application service's request acts as: its own user, or
    /// the one `user_id=` names (masquerading) if its user namespace covers
    /// them and they are registered; on the device `device_id=` names, if
    /// any (it must exist), else on none (an empty device ID, as a service
    /// acts on no device of its own).
    /// Spec: <https://spec.matrix.org/latest/application-service-api/#identity-assertion>.
    fn act_for(&self, service: &AppService, request: &Request) -> Result<TokenOwner> {
        let user_id = request.query("user_id").unwrap_or(&service.sender);
        if !service.is_interested_in_user(user_id) || !self.is_local_user(user_id) {
            return Err(Error::Forbidden("Application service cannot masquerade as this user".into()));
        }
        let registered = self.storage().user(user_id)?;
        let Some(user) = registered.filter(|user| !user.deactivated) else {
            return Err(Error::Forbidden("Application service has not registered this user".into()));
        };
        let device_id = request.query("device_id").or_else(|| request.query("org.matrix.msc3202.device_id"));
        if let Some(device_id) = device_id {
            let devices = self.storage().devices(user_id)?;
            if !devices.iter().any(|device| device.device_id == device_id) {
                return Err(Error::Forbidden("Application service has not registered this device".into()));
            }
        }
        Ok(TokenOwner {
            user_id: user.user_id,
            device_id: device_id.unwrap_or_default().to_owned(),
            is_admin: user.is_admin,
            is_guest: false,
        })
    }

    /// Whether an application service other than `except` claims `user_id`
    /// (an exclusive user namespace): no one else may register it.
    pub fn user_claimed_by_app_service(&self, user_id: &str, except: Option<&AppService>) -> bool {
        self.app_services.borrow().iter().any(|registered| {
            except.is_none_or(|except| except.id != registered.service.id)
                && registered.service.claims_user(user_id)
        })
    }
}
