//! Other servers, as this one reaches them: the signed request client,
//! server discovery, DNS and the HTTPS transport; server keys and the checks
//! of the PDUs other servers send; what we ask of them (joins, backfill,
//! keys, queries, media, link previews); and the senders that push to them
//! (the per-destination federation queue, push gateways, application
//! services); and the ACME client that renews our certificate. The only
//! module that makes outgoing HTTP requests; both API layers (`client/`,
//! `federation/`) call it.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/>.

pub mod acme;
pub mod appservice;
pub mod auth;
pub mod client;
pub mod discovery;
pub mod dns;
pub mod doctor;
pub mod e2ee;
pub mod join;
pub mod join_answer;
pub mod keys;
pub mod media;
pub mod pdus;
pub mod preview;
pub mod push;
pub mod queries;
pub mod sender;
pub mod transport;

use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::net::Cidr;
use crate::rooms::Engine;
use crate::rooms::media::Slots;

/// What the outbound side needs: the room engine, and its own state beside
/// it. It reads as the engine (`Deref`), so `remote/` functions call
/// `rooms/` ones with it as they are.
pub struct Remote {
    pub engine: Rc<Engine>,
    /// Outbound federation: TLS roots, allow-list, discovery caches.
    pub federation: Federation,
    /// Link previews being fetched, per user and in all.
    pub url_previews: Rc<Slots>,
    /// The rooms our users are joining through other servers now.
    pub joins_underway: Rc<join::JoinsUnderway>,
    /// Turns to fetch a room's whole state past a gap ([`pdus::MAX_WHOLE_STATES`]).
    pub whole_states: smol::lock::Semaphore,
}

impl Remote {
    /// Builds the outbound state from the engine's configuration (reads the CA files).
    pub fn new(engine: Rc<Engine>) -> Result<Remote> {
        let federation = Federation::new(&engine.config.federation).map_err(Error::Internal)?;
        Ok(Remote {
            engine,
            federation,
            url_previews: Slots::new(preview::MAX_PREVIEWS, preview::MAX_PREVIEWS_PER_USER),
            joins_underway: Rc::default(),
            whole_states: smol::lock::Semaphore::new(pdus::MAX_WHOLE_STATES),
        })
    }
}

impl Deref for Remote {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// The outbound side's state: TLS roots, the address allow-list, caches.
pub struct Federation {
    /// Public roots plus the configured extra CAs; verification is never off.
    pub tls: Arc<rustls::ClientConfig>,
    /// Private ranges outbound requests may reach anyway (config `allow_ips`).
    pub allow_ips: Vec<Cidr>,
    pub dns: dns::Resolver,
    pub discovery: discovery::Caches,
    /// Servers whose keys were fetched lately (so an unknown key ID cannot
    /// make us fetch again on every request).
    pub recent_key_fetches: discovery::ExpiringCache<()>,
    /// Remote room aliases looked up lately (see [`queries::resolve_remote_alias`]).
    pub remote_aliases: discovery::ExpiringCache<queries::AliasAnswer>,
    /// The running per-destination senders.
    pub senders: sender::Senders,
    /// The running per-pusher push gateway senders.
    pub push_senders: push::PushSenders,
    /// The application services whose sender runs, by ID.
    pub appservice_senders: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl Federation {
    /// Builds the state from the configuration (reads the CA files).
    pub fn new(config: &crate::config::Federation) -> Result<Federation, String> {
        let allow_ips = config
            .allow_ips
            .iter()
            .map(|cidr| Cidr::parse(cidr).map_err(|error| format!("allow_ips {cidr:?}: {error}")))
            .collect::<Result<_, _>>()?;
        Ok(Federation {
            tls: transport::tls_config(&config.ca_files)?,
            allow_ips,
            dns: dns::Resolver::default(),
            discovery: discovery::Caches::default(),
            recent_key_fetches: discovery::ExpiringCache::default(),
            remote_aliases: discovery::ExpiringCache::default(),
            senders: sender::Senders::default(),
            push_senders: push::PushSenders::default(),
            appservice_senders: Default::default(),
        })
    }
}
