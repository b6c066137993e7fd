//! `hearth doctor`: checks the node as the rest of the federation sees it,
//! with our own resolver: server delegation (`/.well-known/matrix/server`,
//! SRV), where the server name resolves to, the TLS certificate there, our
//! server keys fetched over that path, the client well-known and
//! `/versions` behind it. Each check says ok, or what to change.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#resolving-server-names>,
//! <https://spec.matrix.org/latest/server-server-api/#tls>,
//! <https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys>,
//! <https://spec.matrix.org/latest/client-server-api/#well-known-uri>.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_types::Method;
use rustls::CertificateError;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName as TlsName, UnixTime};
use serde_json::Value;

use super::discovery::{self, ip_literal};
use super::dns::Record;
use super::keys::check_key_response;
use super::transport::{self, Target};
use crate::protocol::identifiers::ServerName;
use crate::remote::Remote;
use crate::storage::now_ms;

/// A certificate that ends sooner than this is worth a note.
const RENEW_WITHIN: Duration = Duration::from_secs(21 * 86_400);
/// A well-known document or a key answer is small.
const MAX_SMALL_BODY: usize = 64 * 1024;

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Worth knowing, not wrong.
    Note,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    /// What was checked: `well-known`, `srv`, `resolve`, `tls`, `keys`, ...
    pub subject: &'static str,
    pub text: String,
}

fn check(status: Status, subject: &'static str, text: impl Into<String>) -> Check {
    Check { status, subject, text: text.into() }
}

/// Runs every check in order; later checks use what earlier ones found.
pub async fn run(app: &Remote) -> Vec<Check> {
    let server_name = app.config.server_name.as_str();
    let mut checks = Vec::new();
    let Ok(name) = ServerName::parse(server_name) else {
        checks.push(check(Status::Fail, "name", format!("{server_name:?} is not a valid server name")));
        return checks;
    };
    let delegated = server_well_known(app, &name, &mut checks).await;
    srv(app, &name, delegated.as_deref(), &mut checks).await;
    let target = match discovery::resolve(&app.federation, server_name).await {
        Ok(target) => {
            let addresses: Vec<String> = target.addresses.iter().map(ToString::to_string).collect();
            checks.push(check(
                Status::Ok,
                "resolve",
                format!(
                    "{server_name} resolves to {} (Host: {}, certificate name: {})",
                    addresses.join(", "),
                    target.host_header,
                    target.tls_name
                ),
            ));
            Some(target)
        }
        Err(error) => {
            checks.push(check(
                Status::Fail,
                "resolve",
                format!(
                    "{server_name} does not resolve ({error}): publish an A/AAAA record, SRV or well-known"
                ),
            ));
            None
        }
    };
    if let Some(target) = &target {
        tls(app, target, &mut checks).await;
        keys(app, target, &mut checks).await;
    }
    client(app, &mut checks).await;
    checks
}

/// `https://{host}/.well-known/matrix/server`, when other servers look for
/// it (no IP literal, no port); answers the delegated name.
async fn server_well_known(app: &Remote, name: &ServerName, checks: &mut Vec<Check>) -> Option<String> {
    let subject = "well-known";
    if ip_literal(name.host()).is_some() || name.port().is_some() {
        checks.push(check(
            Status::Note,
            subject,
            format!(
                "not consulted: {} names its address and port, so other servers connect there directly",
                name.as_str()
            ),
        ));
        return None;
    }
    let url = format!("https://{}/.well-known/matrix/server", name.host());
    let configured = app.config.well_known.server.is_some();
    let response = match discovery::get_url(&app.federation, &url, MAX_SMALL_BODY).await {
        Ok(response) => response,
        Err(error) => {
            let status = if configured { Status::Fail } else { Status::Note };
            checks.push(check(
                status,
                subject,
                format!("{url}: {error}; without it servers use SRV records or port 8448 of {}", name.host()),
            ));
            return None;
        }
    };
    let (status, text, delegated) = judge_server_well_known(
        &url,
        response.status,
        &response.body,
        response.header("cache-control"),
        configured,
    );
    checks.push(check(status, subject, text));
    delegated
}

/// The verdict on a server well-known answer; pure.
pub fn judge_server_well_known(
    url: &str,
    status: u16,
    body: &[u8],
    cache_control: Option<&str>,
    configured: bool,
) -> (Status, String, Option<String>) {
    if status == 404 && !configured {
        return (Status::Note, format!("{url}: none (404); servers use SRV records or port 8448"), None);
    }
    if status != 200 {
        return (
            Status::Fail,
            format!("{url} answers {status}: serve {{\"m.server\": \"HOST:PORT\"}} there"),
            None,
        );
    }
    let delegated = match discovery::parse_well_known(body) {
        Ok(delegated) => delegated,
        Err(error) => {
            return (
                Status::Fail,
                format!("{url} is unusable ({error}): serve {{\"m.server\": \"HOST:PORT\"}} as JSON"),
                None,
            );
        }
    };
    match cache_control {
        Some(cache_control) => (
            Status::Ok,
            format!("{url} delegates to {delegated} (Cache-Control: {cache_control})"),
            Some(delegated),
        ),
        None => (
            Status::Note,
            format!(
                "{url} delegates to {delegated}, without Cache-Control: servers keep it a day; \
                 add e.g. Cache-Control: max-age=3600"
            ),
            Some(delegated),
        ),
    }
}

/// SRV records for the name other servers look them up for (the delegated
/// name or ours, when it carries no port).
async fn srv(app: &Remote, name: &ServerName, delegated: Option<&str>, checks: &mut Vec<Check>) {
    let looked_up = match delegated.map(ServerName::parse) {
        Some(Ok(delegated)) => delegated,
        _ => name.clone(),
    };
    if ip_literal(looked_up.host()).is_some() || looked_up.port().is_some() {
        return;
    }
    let host = looked_up.host();
    let mut found = Vec::new();
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        let records = app.federation.dns.lookup_srv(&format!("{service}.{host}")).await.unwrap_or_default();
        for record in records {
            if let Record::Srv { port, target, .. } = record {
                found.push((service, format!("{target}:{port}")));
            }
        }
    }
    if found.is_empty() {
        checks.push(check(Status::Note, "srv", format!("no SRV records for {host}: servers use port 8448")));
    } else if found.iter().all(|(service, _)| *service == "_matrix._tcp") {
        checks.push(check(
            Status::Note,
            "srv",
            format!("only the deprecated _matrix._tcp.{host}: publish _matrix-fed._tcp.{host} too"),
        ));
    } else {
        let listed: Vec<String> =
            found.iter().map(|(service, at)| format!("{service}.{host} -> {at}")).collect();
        checks.push(check(Status::Ok, "srv", listed.join(", ")));
    }
}

/// The certificate presented where the name resolves: trusted chain, name,
/// expiry.
async fn tls(app: &Remote, target: &Target, checks: &mut Vec<Check>) {
    let (address, chain) = match transport::presented_chain(&app.federation.allow_ips, target).await {
        Ok(presented) => presented,
        Err(error) => {
            checks.push(check(Status::Fail, "tls", format!("no TLS handshake: {error}")));
            return;
        }
    };
    let roots = match transport::root_store(&app.config.federation.ca_files) {
        Ok(roots) => roots,
        Err(error) => {
            checks.push(check(Status::Fail, "tls", error));
            return;
        }
    };
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (status, text) = judge_chain(&chain, &roots, &target.tls_name, now);
    checks.push(check(status, "tls", format!("{address}: {text}")));
}

/// Verifies a presented chain for `tls_name` at `now` (since the epoch) and
/// says what is wrong, or how long it lasts; pure.
pub fn judge_chain(
    chain: &[CertificateDer<'static>],
    roots: &rustls::RootCertStore,
    tls_name: &str,
    now: Duration,
) -> (Status, String) {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return (Status::Fail, "no certificate presented".into());
    };
    let Ok(name) = TlsName::try_from(tls_name.to_string()) else {
        return (Status::Fail, format!("{tls_name:?} cannot be a certificate name"));
    };
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots.clone()),
        crate::tls::provider(),
    )
    .build()
    {
        Ok(verifier) => verifier,
        Err(error) => return (Status::Fail, format!("cannot verify certificates: {error}")),
    };
    let verify = |at: Duration| {
        verifier.verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::since_unix_epoch(at))
    };
    let length = chain.len();
    match verify(now) {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(error)) => {
            return (Status::Fail, certificate_advice(&error, tls_name));
        }
        Err(error) => return (Status::Fail, format!("the certificate is refused: {error}")),
    }
    match verify(now + RENEW_WITHIN) {
        Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. })) => {
            let days = not_after.as_secs().saturating_sub(now.as_secs()) / 86_400;
            (
                Status::Note,
                format!(
                    "certificate for {tls_name} trusted (chain of {length}), but it expires in {days} days: renew it"
                ),
            )
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Expired)) => (
            Status::Note,
            format!(
                "certificate for {tls_name} trusted (chain of {length}), but it expires within 21 days: renew it"
            ),
        ),
        _ => (
            Status::Ok,
            format!("certificate for {tls_name} trusted (chain of {length}), valid for 21 days or more"),
        ),
    }
}

fn certificate_advice(error: &CertificateError, tls_name: &str) -> String {
    match error {
        CertificateError::Expired => format!("the certificate for {tls_name} has expired: renew it"),
        CertificateError::ExpiredContext { time, not_after } => {
            let days = time.as_secs().saturating_sub(not_after.as_secs()) / 86_400;
            format!("the certificate for {tls_name} expired {days} days ago: renew it")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the certificate for {tls_name} is not valid yet: check the clock")
        }
        CertificateError::NotValidForName => {
            format!("the certificate is not valid for {tls_name}: get one whose names include it")
        }
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the certificate is not valid for {tls_name} (it names {}): get one whose names include it",
            presented.join(", ")
        ),
        CertificateError::UnknownIssuer => format!(
            "the certificate for {tls_name} does not lead to a trusted CA: serve the full chain \
             (fullchain.pem), from a CA other servers trust"
        ),
        other => format!("the certificate for {tls_name} is refused: {other:?}"),
    }
}

/// Our server keys, fetched as other servers fetch them, must be ours.
async fn keys(app: &Remote, target: &Target, checks: &mut Vec<Check>) {
    let path = "/_matrix/key/v2/server";
    let response = match transport::exchange(
        &app.federation,
        target,
        Method::Get,
        path,
        &[],
        None,
        MAX_SMALL_BODY,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            checks.push(check(Status::Fail, "keys", format!("{path}: {error}")));
            return;
        }
    };
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let ours = &app.signing_key;
    let (status, text) = if response.status != 200 {
        (
            Status::Fail,
            format!(
                "{path} answers {}: is this node the one behind {}?",
                response.status, target.host_header
            ),
        )
    } else {
        match check_key_response(&answer, &app.config.server_name, now_ms()) {
            Err(error) => (
                Status::Fail,
                format!("{path}: {error}: is this node the one behind {}?", target.host_header),
            ),
            Ok(checked) => {
                let matches = checked
                    .keys
                    .iter()
                    .any(|key| key.key_id == ours.key_id && key.public_key == ours.public_key_base64());
                if matches {
                    (Status::Ok, format!("{path} there serves our key {}", ours.key_id))
                } else {
                    (
                        Status::Fail,
                        format!(
                            "{path} there does not serve our key {}: another server answers for {}",
                            ours.key_id, app.config.server_name
                        ),
                    )
                }
            }
        }
    };
    checks.push(check(status, "keys", text));
}

/// The client well-known at `https://{server_name}` and `/versions` at the
/// base URL it names (or that server name itself when there is none).
async fn client(app: &Remote, checks: &mut Vec<Check>) {
    let server_name = &app.config.server_name;
    let url = format!("https://{server_name}/.well-known/matrix/client");
    let configured = app.config.well_known.client.is_some();
    let response = discovery::get_url(&app.federation, &url, MAX_SMALL_BODY).await;
    let (status, text, base_url) = match response {
        Ok(response) => judge_client_well_known(
            &url,
            response.status,
            &response.body,
            response.header("access-control-allow-origin"),
            configured,
        ),
        Err(error) => (
            if configured { Status::Fail } else { Status::Note },
            format!("{url}: {error}; clients must be told the homeserver URL"),
            None,
        ),
    };
    checks.push(check(status, "client", text));
    let base_url = base_url.unwrap_or_else(|| format!("https://{server_name}"));
    let versions = format!("{}/_matrix/client/versions", base_url.trim_end_matches('/'));
    let (status, text) = match discovery::get_url(&app.federation, &versions, MAX_SMALL_BODY).await {
        Ok(response) if response.status == 200 => {
            let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            if answer.get("versions").is_some_and(Value::is_array) {
                (Status::Ok, format!("{versions} answers"))
            } else {
                (Status::Fail, format!("{versions} answers without a versions list: is it a Matrix server?"))
            }
        }
        Ok(response) => (
            Status::Fail,
            format!("{versions} answers {}: point the base URL at this node's client API", response.status),
        ),
        Err(error) => {
            (Status::Fail, format!("{versions}: {error}: point the base URL at this node's client API"))
        }
    };
    checks.push(check(status, "versions", text));
}

/// The verdict on a client well-known answer and the base URL it names; pure.
pub fn judge_client_well_known(
    url: &str,
    status: u16,
    body: &[u8],
    allow_origin: Option<&str>,
    configured: bool,
) -> (Status, String, Option<String>) {
    if status == 404 && !configured {
        return (Status::Note, format!("{url}: none (404); clients must be told the homeserver URL"), None);
    }
    if status != 200 {
        return (
            Status::Fail,
            format!("{url} answers {status}: serve the m.homeserver base_url there"),
            None,
        );
    }
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(base_url) = answer.pointer("/m.homeserver/base_url").and_then(Value::as_str) else {
        return (Status::Fail, format!("{url} has no m.homeserver.base_url string: serve one as JSON"), None);
    };
    if !base_url.starts_with("https://") || http_types::Url::parse(base_url).is_err() {
        return (Status::Fail, format!("{url}: base_url {base_url:?} is not an https:// URL"), None);
    }
    if allow_origin != Some("*") {
        return (
            Status::Fail,
            format!("{url} lacks Access-Control-Allow-Origin: *, so web clients cannot read it"),
            Some(base_url.to_string()),
        );
    }
    (Status::Ok, format!("{url} names {base_url} (CORS open)"), Some(base_url.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_well_known_answers() {
        let url = "https://example.org/.well-known/matrix/server";
        let good = br#"{"m.server": "matrix.example.org:443"}"#;
        let (status, _, delegated) = judge_server_well_known(url, 200, good, Some("max-age=3600"), true);
        assert_eq!((status, delegated.as_deref()), (Status::Ok, Some("matrix.example.org:443")));
        assert_eq!(judge_server_well_known(url, 200, good, None, true).0, Status::Note);
        assert_eq!(judge_server_well_known(url, 200, b"{\"m.server\": 5}", None, true).0, Status::Fail);
        assert_eq!(judge_server_well_known(url, 200, b"<html>", None, true).0, Status::Fail);
        assert_eq!(judge_server_well_known(url, 404, b"", None, false).0, Status::Note);
        assert_eq!(judge_server_well_known(url, 404, b"", None, true).0, Status::Fail);
        assert_eq!(judge_server_well_known(url, 500, b"", None, false).0, Status::Fail);
    }

    #[test]
    fn client_well_known_answers() {
        let url = "https://example.org/.well-known/matrix/client";
        let good = br#"{"m.homeserver": {"base_url": "https://matrix.example.org"}}"#;
        let (status, _, base) = judge_client_well_known(url, 200, good, Some("*"), true);
        assert_eq!((status, base.as_deref()), (Status::Ok, Some("https://matrix.example.org")));
        assert_eq!(judge_client_well_known(url, 200, good, None, true).0, Status::Fail);
        let plain = br#"{"m.homeserver": {"base_url": "http://matrix.example.org"}}"#;
        assert_eq!(judge_client_well_known(url, 200, plain, Some("*"), true).0, Status::Fail);
        assert_eq!(judge_client_well_known(url, 200, b"{}", Some("*"), true).0, Status::Fail);
        assert_eq!(judge_client_well_known(url, 404, b"", None, false).0, Status::Note);
    }

    #[test]
    fn an_empty_chain_fails() {
        let roots = rustls::RootCertStore::empty();
        assert_eq!(judge_chain(&[], &roots, "example.org", Duration::from_secs(1)).0, Status::Fail);
    }
}
