//! Server discovery: from a server name to the addresses, `Host` header and
//! TLS name to use, following the spec's steps (IP literal, explicit port,
//! `/.well-known/matrix/server` delegation, SRV `_matrix-fed._tcp`, legacy
//! SRV `_matrix._tcp`, then A/AAAA on port 8448), with bounded caches.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#resolving-server-names>.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use http_types::Method;

use super::Federation;
use super::dns::Record;
use super::transport::{self, Target};
use crate::error::{Error, Result};
use crate::protocol::identifiers::ServerName;

/// Spec: the default federation port.
pub const DEFAULT_PORT: u16 = 8448;
/// A well-known answer without caching headers is kept this long (spec: 24 hours).
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Spec: cache well-known answers at most 48 hours.
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// A well-known answer is kept at least this long, whatever its headers say,
/// so that a `max-age=0` server is not asked before every request.
const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// Spec: errors are cached "for up to an hour".
const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);
/// Spec: follow 30x redirects "being careful to avoid redirect loops".
pub const MAX_REDIRECTS: usize = 5;
/// A well-known document is a few dozen bytes; Synapse refuses past 50 KiB.
const MAX_WELL_KNOWN_BYTES: usize = 50 * 1024;
/// A resolved target is reused this long (DNS TTLs are not tracked).
const TARGET_TTL: Duration = Duration::from_secs(10 * 60);
/// Each cache holds at most this many server names.
const MAX_CACHED_NAMES: usize = 1024;

/// A map whose entries expire, holding at most [`MAX_CACHED_NAMES`].
pub struct ExpiringCache<V> {
    entries: RefCell<HashMap<String, (Instant, V)>>,
}

impl<V> Default for ExpiringCache<V> {
    fn default() -> Self {
        ExpiringCache { entries: RefCell::new(HashMap::new()) }
    }
}

impl<V: Clone> ExpiringCache<V> {
    /// The live value for `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        let mut entries = self.entries.borrow_mut();
        match entries.get(key) {
            Some((expires, value)) if Instant::now() < *expires => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `ttl`, making room if the cache is full.
    pub fn insert(&self, key: &str, value: V, ttl: Duration) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_CACHED_NAMES && !entries.contains_key(key) {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| now < *expires);
            if entries.len() >= MAX_CACHED_NAMES {
                // Still full of live entries: drop the one closest to expiry.
                if let Some(oldest) =
                    entries.iter().min_by_key(|(_, (expires, _))| *expires).map(|(key, _)| key.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key.to_string(), (Instant::now() + ttl, value));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }
}

/// The discovery caches.
#[derive(Default)]
pub struct Caches {
    /// Server name -> delegated server name (`None`: no delegation).
    well_known: ExpiringCache<Option<String>>,
    /// Server name -> where to connect.
    targets: ExpiringCache<Target>,
}

fn not_found(server_name: &str, why: impl std::fmt::Display) -> Error {
    Error::matrix(502, "M_UNKNOWN", format!("cannot resolve {server_name}: {why}"))
}

/// Where requests for `server_name` go.
pub async fn resolve(federation: &Federation, server_name: &str) -> Result<Target> {
    if let Some(target) = federation.discovery.targets.get(server_name) {
        return Ok(target);
    }
    let name = ServerName::parse(server_name)
        .map_err(|error| Error::InvalidParam(format!("{server_name:?} is not a server name: {error}")))?;
    let target = resolve_name(federation, &name).await?;
    federation.discovery.targets.insert(server_name, target.clone(), TARGET_TTL);
    Ok(target)
}

/// Drops the cached target (after a failed connection, say).
pub fn forget(federation: &Federation, server_name: &str) {
    federation.discovery.targets.remove(server_name);
}

async fn resolve_name(federation: &Federation, name: &ServerName) -> Result<Target> {
    // Steps 1 and 2: an IP literal or an explicit port is used as it is.
    if let Some(target) = literal_or_explicit_port(federation, name).await? {
        return Ok(target);
    }
    // Step 3: delegation through /.well-known/matrix/server.
    let host = name.host();
    if let Some(delegated) = delegation(federation, host).await {
        if let Ok(delegated) = ServerName::parse(&delegated) {
            // Steps 3.1 and 3.2, then 3.3 to 3.5 on the delegated name.
            if let Some(target) = literal_or_explicit_port(federation, &delegated).await? {
                return Ok(target);
            }
            return srv_or_default(federation, delegated.host()).await;
        }
    }
    // Steps 4 to 6 on the name itself.
    srv_or_default(federation, host).await
}

/// Steps 1 / 3.1 (IP literal) and 2 / 3.2 (explicit port). The `Host` header
/// is the name as given, the certificate must match the host.
async fn literal_or_explicit_port(federation: &Federation, name: &ServerName) -> Result<Option<Target>> {
    let host = name.host();
    let port = name.port();
    if let Some(ip) = ip_literal(host) {
        return Ok(Some(Target {
            addresses: vec![SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT))],
            host_header: name.as_str().to_string(),
            tls_name: ip.to_string(),
        }));
    }
    let Some(port) = port else {
        return Ok(None);
    };
    let addresses = lookup(federation, host, port).await?;
    Ok(Some(Target { addresses, host_header: name.as_str().to_string(), tls_name: host.to_string() }))
}

/// Steps 3.3-3.5 / 4-6: SRV `_matrix-fed._tcp`, SRV `_matrix._tcp`, then
/// A/AAAA on 8448. The `Host` header and certificate name are `host`.
async fn srv_or_default(federation: &Federation, host: &str) -> Result<Target> {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        let records = federation.dns.lookup_srv(&format!("{service}.{host}")).await.unwrap_or_default();
        let mut addresses = Vec::new();
        for record in records {
            let Record::Srv { port, target, .. } = record else { continue };
            // RFC 2782: a target of "." means "no service here".
            if target.is_empty() || target == "." {
                continue;
            }
            if let Ok(found) = lookup(federation, &target, port).await {
                addresses.extend(found);
            }
        }
        if !addresses.is_empty() {
            return Ok(Target { addresses, host_header: host.to_string(), tls_name: host.to_string() });
        }
    }
    let addresses = lookup(federation, host, DEFAULT_PORT).await?;
    Ok(Target { addresses, host_header: host.to_string(), tls_name: host.to_string() })
}

/// `host` as an IP address, with or without IPv6 brackets.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

pub(super) async fn lookup(federation: &Federation, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    if let Some(ip) = ip_literal(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let ips = federation.dns.lookup_ip(host).await.map_err(|error| not_found(host, error))?;
    if ips.is_empty() {
        return Err(not_found(host, "no A or AAAA record"));
    }
    Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
}

/// The delegated server name from `https://{host}/.well-known/matrix/server`,
/// cached; `None` when there is none or it cannot be had.
async fn delegation(federation: &Federation, host: &str) -> Option<String> {
    if let Some(cached) = federation.discovery.well_known.get(host) {
        return cached;
    }
    let (delegated, ttl) = match fetch_well_known(federation, host).await {
        Ok((delegated, ttl)) => (Some(delegated), ttl),
        Err(error) => {
            log::debug!("no usable well-known for {host}: {error}");
            (None, WELL_KNOWN_ERROR_TTL)
        }
    };
    federation.discovery.well_known.insert(host, delegated.clone(), ttl);
    delegated
}

async fn fetch_well_known(federation: &Federation, host: &str) -> Result<(String, Duration), String> {
    let url = format!("https://{host}/.well-known/matrix/server");
    let response =
        get_url(federation, &url, MAX_WELL_KNOWN_BYTES).await.map_err(|error| error.to_string())?;
    if response.status != 200 {
        return Err(format!("status {}", response.status));
    }
    let delegated = parse_well_known(&response.body)?;
    let ttl = cache_ttl(response.header("cache-control"), response.header("expires"), SystemTime::now());
    Ok((delegated, ttl))
}

/// `GET` an `https://` URL (unsigned: a well-known document, media behind a
/// redirect), following up to [`MAX_REDIRECTS`] redirects to HTTPS URLs.
/// The address filter of every outbound request applies.
pub async fn get_url(federation: &Federation, url: &str, max_body: usize) -> Result<transport::RawResponse> {
    fetch_url(federation, url, max_body, Schemes::HttpsOnly).await.map(|(response, _)| response)
}

/// Where a request to the `http://` (`tls` false) or `https://` URL
/// `parsed` goes: the target, its addresses looked up, and the path with its
/// query. `refused` makes the caller's error for a URL without a host.
pub async fn url_target(
    federation: &Federation,
    parsed: &http_types::Url,
    tls: bool,
    refused: impl Fn(String) -> Error,
) -> Result<(Target, String)> {
    let host = parsed.host_str().ok_or_else(|| refused("a URL without a host".into()))?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let addresses = lookup(federation, &host, port).await?;
    let host_header = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let tls_name = ip_literal(&host).map_or(host, |ip| ip.to_string());
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    Ok((Target { addresses, host_header, tls_name }, path))
}

/// Which URL schemes [`fetch_url`] follows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Schemes {
    /// `https://` only.
    HttpsOnly,
    /// `http://` too (link previews): plain TCP to the same addresses TLS
    /// may reach, never to a private one the allow-list does not name.
    HttpOrHttps,
}

/// `GET` a URL of `schemes`, following up to [`MAX_REDIRECTS`] redirects,
/// each one checked like the first (scheme, address filter). Answers the
/// response and the URL that gave it (where relative links start).
pub async fn fetch_url(
    federation: &Federation,
    url: &str,
    max_body: usize,
    schemes: Schemes,
) -> Result<(transport::RawResponse, http_types::Url)> {
    let refused = |why: String| Error::matrix(502, "M_UNKNOWN", format!("cannot fetch {url}: {why}"));
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let parsed = http_types::Url::parse(&url).map_err(|error| refused(error.to_string()))?;
        let tls = match (parsed.scheme(), schemes) {
            ("https", _) => true,
            ("http", Schemes::HttpOrHttps) => false,
            _ => return Err(refused(format!("{url} is not an URL we may fetch"))),
        };
        let (target, path) = url_target(federation, &parsed, tls, &refused).await?;
        let reach = transport::Reach::PublicOrAllowed(&federation.allow_ips);
        let response =
            transport::exchange_via(federation, &target, tls, reach, Method::Get, &path, &[], None, max_body)
                .await?;
        if (300..400).contains(&response.status) {
            let location =
                response.header("location").ok_or_else(|| refused("a redirect without Location".into()))?;
            url = parsed.join(location).map_err(|error| refused(error.to_string()))?.to_string();
            continue;
        }
        return Ok((response, parsed));
    }
    Err(refused("too many redirects".into()))
}

/// The `m.server` of a well-known document, if it is a valid server name.
pub fn parse_well_known(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    let server = value.get("m.server").and_then(|server| server.as_str()).ok_or("no m.server string")?;
    ServerName::parse(server).map_err(|error| format!("m.server {server:?}: {error}"))?;
    Ok(server.to_string())
}

/// How long to keep a well-known answer: `Cache-Control: max-age` (or
/// `no-store`/`no-cache`), else `Expires`, else a day, bounded to
/// [`WELL_KNOWN_MIN_TTL`]..[`WELL_KNOWN_MAX_TTL`].
pub fn cache_ttl(cache_control: Option<&str>, expires: Option<&str>, now: SystemTime) -> Duration {
    let mut ttl = None;
    if let Some(cache_control) = cache_control {
        for directive in cache_control.split(',').map(|directive| directive.trim().to_ascii_lowercase()) {
            if directive == "no-store" || directive == "no-cache" {
                ttl = Some(Duration::ZERO);
            } else if let Some(seconds) = directive.strip_prefix("max-age=") {
                if let Ok(seconds) = seconds.trim_matches('"').parse::<u64>() {
                    ttl = ttl.or(Some(Duration::from_secs(seconds)));
                }
            }
        }
    }
    if ttl.is_none() {
        ttl = expires.and_then(parse_http_date).map(|at| at.duration_since(now).unwrap_or(Duration::ZERO));
    }
    ttl.unwrap_or(WELL_KNOWN_DEFAULT_TTL).clamp(WELL_KNOWN_MIN_TTL, WELL_KNOWN_MAX_TTL)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 5.6.7).
/// The obsolete formats are not accepted (the caller falls back to the default).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let (_, rest) = text.trim().split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months.iter().position(|name| *name == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let mut clock = time.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn federation() -> Federation {
        Federation::new(&crate::config::Federation::default()).unwrap()
    }

    #[test]
    fn ip_literals_and_explicit_ports_resolve_offline() {
        let federation = federation();
        let cases = [
            ("1.2.3.4", "1.2.3.4:8448", "1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:443", "1.2.3.4:443", "1.2.3.4:443", "1.2.3.4"),
            ("[2001:db8::1]", "[2001:db8::1]:8448", "[2001:db8::1]", "2001:db8::1"),
            ("[::1]:9000", "[::1]:9000", "[::1]:9000", "::1"),
        ];
        for (name, address, host_header, tls_name) in cases {
            let target = smol::block_on(resolve(&federation, name)).unwrap();
            assert_eq!(
                target,
                Target {
                    addresses: vec![address.parse().unwrap()],
                    host_header: host_header.into(),
                    tls_name: tls_name.into()
                },
                "{name}"
            );
        }
        assert!(matches!(smol::block_on(resolve(&federation, "bad name")), Err(Error::InvalidParam(_))));
    }

    #[test]
    fn well_known_documents() {
        assert_eq!(
            parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#),
            Ok("matrix.example.org:443".into())
        );
        assert!(parse_well_known(br#"{"m.server": "bad name"}"#).is_err());
        assert!(parse_well_known(br#"{"m.server": 1}"#).is_err());
        assert!(parse_well_known(b"<html>").is_err());
    }

    #[test]
    fn well_known_cache_lifetimes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let hours = |hours: u64| Duration::from_secs(hours * 3600);
        let cases = [
            (None, None, WELL_KNOWN_DEFAULT_TTL),
            (Some("max-age=7200"), None, hours(2)),
            (Some("public, max-age=\"3600\""), None, hours(1)),
            (Some("max-age=999999999"), None, WELL_KNOWN_MAX_TTL),
            (Some("no-store"), None, WELL_KNOWN_MIN_TTL),
            (None, Some("Sun, 06 Nov 1994 11:49:37 GMT"), hours(3)),
            (None, Some("Sun, 06 Nov 1994 07:49:37 GMT"), WELL_KNOWN_MIN_TTL),
            (None, Some("yesterday"), WELL_KNOWN_DEFAULT_TTL),
            (Some("max-age=7200"), Some("Sun, 06 Nov 1994 11:49:37 GMT"), hours(2)),
        ];
        for (cache_control, expires, expected) in cases {
            assert_eq!(cache_ttl(cache_control, expires, now), expected, "{cache_control:?} {expires:?}");
        }
    }

    #[test]
    fn http_dates() {
        let parsed = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parsed.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let leap = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT").unwrap();
        assert_eq!(leap.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_709_164_800);
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn caches_expire_and_stay_bounded() {
        let cache = ExpiringCache::<u32>::default();
        cache.insert("a", 1, Duration::from_secs(60));
        cache.insert("gone", 2, Duration::ZERO);
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("gone"), None);
        for index in 0..MAX_CACHED_NAMES + 10 {
            cache.insert(&index.to_string(), 0, Duration::from_secs(60));
        }
        assert!(cache.entries.borrow().len() <= MAX_CACHED_NAMES);
    }
}
