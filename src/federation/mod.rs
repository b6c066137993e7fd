//! The server-server API: the inbound routes (keys, version; the room
//! endpoints land on top of these) and the outbound transport (discovery,
//! TLS, request signing). The only module that makes outgoing HTTP requests.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/>.

pub mod auth;
pub mod client;
pub mod discovery;
pub mod dns;
pub mod keys;
pub mod transport;

use std::rc::Rc;
use std::sync::Arc;

use http_types::Method;
use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::net::Cidr;

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
        (Some("key"), ["v2", "query", server_name]) => {
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
        _ => {
            // Every other federation endpoint needs a signed request; the
            // ones not built yet say so only to a server that proved who it is.
            auth::authenticate_server(app, request).await?;
            Err(Error::Unrecognized { method_not_allowed: false })
        }
    }
}

fn require_method(method: &Method, expected: Method) -> Result<()> {
    if *method == expected { Ok(()) } else { Err(Error::Unrecognized { method_not_allowed: true }) }
}
