//! The server-server API: the inbound routes (keys, version; the room
//! endpoints land on top of these) and the outbound transport (discovery,
//! TLS, request signing). The only module that makes outgoing HTTP requests.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/>.

pub mod acl;
pub mod appservice;
pub mod auth;
pub mod client;
pub mod discovery;
pub mod dns;
pub mod doctor;
pub mod e2ee;
pub mod events;
pub mod join;
pub mod join_answer;
pub mod keys;
pub mod media;
pub mod membership;
pub mod pdus;
pub mod preview;
pub mod push;
pub mod queries;
pub mod sender;
pub mod transactions;
pub mod transport;

use std::rc::Rc;
use std::sync::Arc;

use http_types::Method;
use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::net::Cidr;
use crate::request::{Request, Response};

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

/// Answers `/_matrix/key/...` and `/_matrix/federation/...` on federation listeners.
pub async fn route(app: &Rc<App>, request: &Request) -> Result<Response> {
    let path = request.path();
    let method = &request.method;
    match (path.get(1).copied(), &path[2.min(path.len())..]) {
        (Some("key"), ["v2", "server"]) | (Some("key"), ["v2", "server", _]) => {
            require_method(method, Method::Get)?;
            Ok(Response::ok(keys::own_keys(app)?))
        }
        // The `/{keyId}` form is deprecated; the answer holds all the server's keys either way.
        (Some("key"), ["v2", "query", server_name] | ["v2", "query", server_name, _]) => {
            require_method(method, Method::Get)?;
            keys::query_one(app, request, server_name).await
        }
        (Some("key"), ["v2", "query"]) => {
            require_method(method, Method::Post)?;
            keys::query_many(app, request).await
        }
        (Some("key"), _) => Err(Error::Unrecognized { method_not_allowed: false }),
        (Some("federation"), ["v1", "version"]) => {
            require_method(method, Method::Get)?;
            Ok(Response::ok(json!({
                "server": {"name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION")}
            })))
        }
        // Asked by third parties holding a token, not by servers: no X-Matrix.
        (Some("federation"), ["v1", "openid", "userinfo"]) => {
            require_method(method, Method::Get)?;
            queries::openid_userinfo(app, request)
        }
        (Some("federation"), rest) => {
            // Every other federation endpoint needs a signed request.
            let origin = auth::authenticate_server(app, request).await.inspect_err(|error| {
                log::debug!("refused {} {}: {error}", request.method, request.target);
            })?;
            // Hearing from a server means it is up: send it what waits for it.
            crate::rooms::outbox::nudge(app, &origin);
            authenticated_route(app, request, &origin, rest).await
        }
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// The federation endpoints that need an authenticated origin.
async fn authenticated_route(
    app: &Rc<App>,
    request: &Request,
    origin: &str,
    path: &[&str],
) -> Result<Response> {
    use Method::{Get, Post, Put};
    let method = request.method;
    match (method, path) {
        (Put, ["v1", "send", txn_id]) => transactions::receive(app, request, origin, txn_id).await,
        (Get, ["v1", "make_join", room_id, user_id]) => {
            membership::make_membership(app, request, origin, room_id, user_id, "join")
        }
        (Get, ["v1", "make_leave", room_id, user_id]) => {
            membership::make_membership(app, request, origin, room_id, user_id, "leave")
        }
        (Get, ["v1", "make_knock", room_id, user_id]) => {
            membership::make_membership(app, request, origin, room_id, user_id, "knock")
        }
        (Put, [api @ ("v1" | "v2"), "send_join", room_id, event_id]) => {
            let answer = membership::send_membership(app, request, origin, room_id, event_id, "join").await?;
            Ok(Response::ok(deprecated_v1_shape(api, answer)))
        }
        (Put, [api @ ("v1" | "v2"), "send_leave", room_id, event_id]) => {
            let answer =
                membership::send_membership(app, request, origin, room_id, event_id, "leave").await?;
            Ok(Response::ok(deprecated_v1_shape(api, answer)))
        }
        (Put, ["v1", "send_knock", room_id, event_id]) => Ok(Response::ok(
            membership::send_membership(app, request, origin, room_id, event_id, "knock").await?,
        )),
        (Put, ["v2", "invite", room_id, event_id]) => {
            membership::invite(app, request, origin, room_id, event_id).await
        }
        (Put, ["v1", "invite", room_id, event_id]) => {
            membership::invite_v1(app, request, origin, room_id, event_id).await
        }
        (Get, ["v1", "event", event_id]) => events::get_event(app, origin, event_id),
        (Get, ["v1", "state", room_id]) => events::get_state(app, request, origin, room_id, false),
        (Get, ["v1", "state_ids", room_id]) => events::get_state(app, request, origin, room_id, true),
        (Get, ["v1", "event_auth", room_id, event_id]) => {
            events::get_event_auth(app, origin, room_id, event_id)
        }
        (Get, ["v1", "backfill", room_id]) => events::backfill(app, request, origin, room_id),
        (Post, ["v1", "get_missing_events", room_id]) => {
            events::get_missing_events(app, request, origin, room_id)
        }
        (Post, ["v1", "user", "keys", "query"]) => e2ee::keys_query(app, request),
        (Post, ["v1", "user", "keys", "claim"]) => e2ee::keys_claim(app, request),
        (Get, ["v1", "user", "devices", user_id]) => e2ee::user_devices(app, user_id),
        (Get, ["v1", "media", "download", media_id]) => media::download(app, request, media_id).await,
        (Get, ["v1", "media", "thumbnail", media_id]) => media::thumbnail(app, request, media_id).await,
        (Get, ["v1", "hierarchy", room_id]) => queries::hierarchy(app, request, origin, room_id),
        (Get, ["v1", "query", "directory"]) => queries::directory(app, request).await,
        (Get, ["v1", "query", "profile"]) => queries::profile(app, request),
        (Get, ["v1", "publicRooms"]) => queries::public_rooms(app, request),
        (Post, ["v1", "publicRooms"]) => queries::filtered_public_rooms(app, request),
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// The deprecated v1 `send_join` and `send_leave` answer `[200, answer]`
/// (the status repeated in the body); v2 answers the object alone.
///
/// Spec: <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_joinroomideventid>,
/// <https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1send_leaveroomideventid>.
fn deprecated_v1_shape(api: &str, answer: serde_json::Value) -> serde_json::Value {
    if api == "v1" { json!([200, answer]) } else { answer }
}

fn require_method(method: &Method, expected: Method) -> Result<()> {
    if *method == expected { Ok(()) } else { Err(Error::Unrecognized { method_not_allowed: true }) }
}
