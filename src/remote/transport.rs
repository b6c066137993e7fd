//! One outbound HTTPS exchange: refuse forbidden addresses, connect (TCP,
//! TLS with certificate verification that is never off; plain TCP only to
//! addresses the allow-list names, for push gateways), send one HTTP/1.1
//! request with our codec (`http1`), read a bounded response (head under
//! the codec's limits, body under the caller's).
//!
//! Knows nothing of server names, signatures or Matrix JSON: the caller hands
//! it resolved addresses, the `Host` header and the TLS name. Every timeout
//! here is a `smol::Timer` on this thread.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use http_types::{Method, Url};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use smol::Async;
use smol::future::FutureExt;

use crate::error::{Error, Result};
use crate::http1::{self, ClientError};
use crate::net::Cidr;

use super::Federation;

/// A dead or filtered address costs at most this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole exchange (connect, TLS, request, response) takes at most this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where to send a request, as discovery worked it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Addresses to try, in order.
    pub addresses: Vec<SocketAddr>,
    /// The `Host` header.
    pub host_header: String,
    /// The name (or IP) the certificate must be valid for; also the SNI.
    pub tls_name: String,
}

/// A response with its whole (bounded) body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(seen, _)| seen == name).map(|(_, value)| value.as_str())
    }
}

/// The rustls client config: webpki's public roots plus the configured extra
/// CA files. Verification is always on.
pub fn tls_config(ca_files: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = root_store(ca_files)?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates outbound federation trusts: webpki's public roots plus
/// the configured extra CA files.
pub fn root_store(ca_files: &[PathBuf]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for path in ca_files {
        let pem = std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|error| format!("{}: bad certificate PEM: {error}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|error| format!("{}: {error}", path.display()))?;
        }
    }
    Ok(roots)
}

/// Whether `ip` is an address outbound federation must not reach on its own:
/// private, loopback, link-local, unspecified, multicast, broadcast,
/// documentation, shared (CGNAT), benchmarking or reserved.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_forbidden_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(mapped) = ip.to_ipv4_mapped() {
                return is_forbidden_v4(mapped);
            }
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation 2001:db8::/32
                || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 64:ff9b::/32 (may embed private v4)
                || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // discard 100::/64
                || ip.to_ipv4().is_some() // IPv4-compatible ::a.b.c.d (deprecated)
        }
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network" 0.0.0.0/8
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved 240.0.0.0/4
}

/// Whether outbound federation may connect to `ip` given the allow-list.
pub fn may_connect(ip: IpAddr, allow: &[Cidr]) -> bool {
    !is_forbidden(ip) || allow.iter().any(|cidr| cidr.contains(ip))
}

/// The request target we send for `path_and_query`, normalised by the URL
/// parser, so that what is signed is exactly what is sent.
pub fn request_target(path_and_query: &str) -> Result<(Url, String)> {
    if !path_and_query.starts_with('/') {
        return Err(Error::Internal(format!("request path {path_and_query:?} does not start with /")));
    }
    // The host is a placeholder: the Host header is set explicitly.
    let url = Url::parse(&format!("https://placeholder.invalid{path_and_query}"))
        .map_err(|error| Error::Internal(format!("bad request path {path_and_query:?}: {error}")))?;
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    Ok((url, target))
}

fn unreachable(message: String) -> Error {
    Error::matrix(502, "M_UNKNOWN", message)
}

/// The spec's answer when a remote server's content is too large to proxy
/// (502 `M_TOO_LARGE`), used for every oversized answer.
fn too_large(host: &str, max_body: usize) -> Error {
    Error::matrix(502, "M_TOO_LARGE", format!("{host}: the response is larger than {max_body} bytes"))
}

/// Sends one request to `target` and reads the response, whose body may be
/// at most `max_body` bytes.
pub async fn exchange(
    federation: &Federation,
    target: &Target,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    max_body: usize,
) -> Result<RawResponse> {
    let reach = Reach::Filtered(&federation.allow_ips);
    exchange_via(federation, target, true, reach, method, path_and_query, headers, body, max_body).await
}

/// `work`, or a 504 once [`REQUEST_TIMEOUT`] has passed.
async fn within_deadline<T>(
    target: &Target,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    work.or(async {
        smol::Timer::after(REQUEST_TIMEOUT).await;
        Err(Error::matrix(504, "M_UNKNOWN", format!("{}: no answer in time", target.host_header)))
    })
    .await
}

/// Which addresses a connection may go to.
#[derive(Clone, Copy)]
pub enum Reach<'a> {
    /// Over TLS, public addresses and those the allow-list names; over
    /// plain TCP, only those the allow-list names (push gateways): nothing
    /// public is ever reached without TLS.
    Filtered(&'a [Cidr]),
    /// Public addresses and those the allow-list names, also over plain TCP:
    /// `http://` URLs a user asked for (link previews).
    PublicOrAllowed(&'a [Cidr]),
    /// Any address: the operator wrote the URL into the configuration (an
    /// application service, usually on loopback), no user named it.
    Configured,
}

/// [`exchange`] for URLs that are not a server's federation API (push
/// gateways, link previews, application services): over TLS (`tls`) or
/// plain TCP, to the addresses `reach` permits.
#[allow(clippy::too_many_arguments)] // exchange's arguments, the scheme and the reach
pub async fn exchange_via(
    federation: &Federation,
    target: &Target,
    tls: bool,
    reach: Reach<'_>,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    max_body: usize,
) -> Result<RawResponse> {
    let tls = tls.then_some(&federation.tls);
    exchange_on(tls, target, reach, method, path_and_query, headers, body, max_body).await
}

/// [`exchange_via`] with the TLS client config to verify the server with
/// (`None`: plain TCP), for a caller that trusts other roots than
/// federation does (an ACME CA's test root).
#[allow(clippy::too_many_arguments)] // exchange_via's arguments
pub async fn exchange_on(
    tls: Option<&Arc<rustls::ClientConfig>>,
    target: &Target,
    reach: Reach<'_>,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    max_body: usize,
) -> Result<RawResponse> {
    let work = async {
        if let Some(tls) = tls {
            let stream = connect(tls, reach, target).await?;
            send_on(stream, target, method, path_and_query, headers, body, max_body).await
        } else {
            let stream = connect_plain(reach, target).await?;
            send_on(stream, target, method, path_and_query, headers, body, max_body).await
        }
    };
    within_deadline(target, work).await
}

/// [`exchange`] writing the response body to `sink` as it arrives instead of
/// holding it (answers too large to hold, such as a big room's `send_join`);
/// answers the status and headers, the body being in `sink`.
#[allow(clippy::too_many_arguments)] // exchange's arguments and the sink
pub async fn exchange_to<W: std::io::Write>(
    federation: &Federation,
    target: &Target,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    max_body: usize,
    sink: &mut W,
) -> Result<RawResponse> {
    let reach = Reach::Filtered(&federation.allow_ips);
    let work = async {
        let stream = connect(&federation.tls, reach, target).await?;
        send_to(stream, target, method, path_and_query, headers, body, max_body, sink).await
    };
    within_deadline(target, work).await
}

/// Sends one request on a connected stream and reads the bounded response.
async fn send_on<S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin>(
    stream: S,
    target: &Target,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    max_body: usize,
) -> Result<RawResponse> {
    let mut answer = Vec::new();
    let response =
        send_to(stream, target, method, path_and_query, headers, body, max_body, &mut answer).await?;
    Ok(RawResponse { body: answer, ..response })
}

/// [`send_on`] writing the body to `sink`; the answer's `body` stays empty.
#[allow(clippy::too_many_arguments)] // send_on's arguments and the sink
async fn send_to<S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin, W: std::io::Write>(
    stream: S,
    target: &Target,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    max_body: usize,
    sink: &mut W,
) -> Result<RawResponse> {
    let (_, request_target) = request_target(path_and_query)?;
    let mut request_headers: Vec<(&str, &str)> = vec![
        ("host", target.host_header.as_str()),
        ("user-agent", concat!("hearth/", env!("CARGO_PKG_VERSION"))),
        // One request per connection: no pool to keep, nothing to drain.
        ("connection", "close"),
    ];
    request_headers.extend(headers.iter().map(|(name, value)| (*name, value.as_str())));
    let typed = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if body.is_some() && !typed {
        request_headers.push(("content-type", "application/json"));
    }
    let body_length = match &body {
        Some(body) => Some(body.len() as u64),
        None if matches!(method, Method::Put | Method::Post) => Some(0),
        None => None,
    };
    let head = http1::request_head(method.as_ref(), &request_target, &request_headers, body_length);
    let response = http1::exchange_to(stream, head, body.unwrap_or_default(), max_body, sink).await.map_err(
        |error| match error {
            ClientError::TooLarge => too_large(&target.host_header, max_body),
            ClientError::Read(error) => unreachable(format!("{}: {error}", target.host_header)),
        },
    )?;
    let headers =
        response.headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    Ok(RawResponse { status: response.status, headers, body: Vec::new() })
}

/// Tries each address `reach` permits, in turn, over plain TCP.
async fn connect_plain(reach: Reach<'_>, target: &Target) -> Result<Async<TcpStream>> {
    let mut errors = Vec::new();
    for address in &target.addresses {
        let refusal = match reach {
            Reach::Filtered(allow) if !allow.iter().any(|cidr| cidr.contains(address.ip())) => {
                Some("plain HTTP only to allowed addresses")
            }
            Reach::PublicOrAllowed(allow) if !may_connect(address.ip(), allow) => {
                Some("not a public address")
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            errors.push(format!("{address}: {refusal}"));
            continue;
        }
        let attempt =
            async { Async::<TcpStream>::connect(*address).await.map_err(|error| error.to_string()) }
                .or(async {
                    smol::Timer::after(CONNECT_TIMEOUT).await;
                    Err("timed out".to_string())
                })
                .await;
        match attempt {
            Ok(tcp) => {
                let _ = tcp.get_ref().set_nodelay(true);
                return Ok(tcp);
            }
            Err(error) => errors.push(format!("{address}: {error}")),
        }
    }
    if errors.is_empty() {
        errors.push("no address".into());
    }
    Err(unreachable(format!("cannot reach {}: {}", target.host_header, errors.join("; "))))
}

type TlsStream = futures_rustls::client::TlsStream<Async<TcpStream>>;

/// Tries each address in turn; the first that connects and completes a
/// verified TLS handshake wins.
async fn connect(tls: &Arc<rustls::ClientConfig>, reach: Reach<'_>, target: &Target) -> Result<TlsStream> {
    let server_name = ServerName::try_from(target.tls_name.clone())
        .map_err(|_| unreachable(format!("{:?} is not a valid TLS name", target.tls_name)))?;
    let mut errors = Vec::new();
    for address in &target.addresses {
        let allowed = match reach {
            Reach::Filtered(allow) | Reach::PublicOrAllowed(allow) => may_connect(address.ip(), allow),
            Reach::Configured => true,
        };
        if !allowed {
            errors.push(format!("{address}: not a public address"));
            continue;
        }
        let attempt = async {
            let tcp = Async::<TcpStream>::connect(*address).await.map_err(|error| error.to_string())?;
            // Without this every request waits ~40 ms (Nagle vs delayed ACK).
            let _ = tcp.get_ref().set_nodelay(true);
            TlsConnector::from(tls.clone())
                .connect(server_name.clone(), tcp)
                .await
                .map_err(|error| format!("TLS: {error}"))
        }
        .or(async {
            smol::Timer::after(CONNECT_TIMEOUT).await;
            Err("timed out".to_string())
        })
        .await;
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(error) => errors.push(format!("{address}: {error}")),
        }
    }
    if errors.is_empty() {
        errors.push("no address".into());
    }
    Err(unreachable(format!("cannot reach {}: {}", target.host_header, errors.join("; "))))
}

/// Takes any certificate chain, so that `hearth doctor` can look at one
/// that would fail verification and say why; the handshake signatures are
/// still checked. Nothing is ever sent over such a connection.
#[derive(Debug)]
struct TakeAnyChain(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for TakeAnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate chain `target` presents (end entity first) and the address
/// that presented it, unverified: the caller verifies it to say what is wrong.
/// The address filter applies; the connection closes after the handshake.
pub async fn presented_chain(
    allow: &[Cidr],
    target: &Target,
) -> Result<(SocketAddr, Vec<CertificateDer<'static>>)> {
    let provider = crate::tls::provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Internal(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TakeAnyChain(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = connect(&Arc::new(config), Reach::Filtered(allow), target).await?;
    let (tcp, connection) = stream.get_ref();
    let address = tcp.get_ref().peer_addr().map_err(|error| unreachable(error.to_string()))?;
    let chain = connection.peer_certificates().unwrap_or_default();
    Ok((address, chain.iter().map(|certificate| certificate.clone().into_owned()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        let forbidden = [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "100.64.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ];
        for ip in forbidden {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_allow_list_opens_forbidden_ranges() {
        let allow = [Cidr::parse("127.0.0.0/8").unwrap()];
        assert!(may_connect("127.0.0.1".parse().unwrap(), &allow));
        assert!(!may_connect("10.0.0.1".parse().unwrap(), &allow));
        assert!(may_connect("8.8.8.8".parse().unwrap(), &[]));
    }

    #[test]
    fn request_targets_are_what_is_sent() {
        let (_, target) = request_target("/_matrix/key/v2/server").unwrap();
        assert_eq!(target, "/_matrix/key/v2/server");
        let (_, target) =
            request_target("/_matrix/federation/v1/query/profile?user_id=%40a%3Ab&field=x").unwrap();
        assert_eq!(target, "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab&field=x");
        let (_, target) = request_target("/a b").unwrap();
        assert_eq!(target, "/a%20b");
        assert!(request_target("relative").is_err());
    }

    #[test]
    fn extra_ca_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("hearth-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.pem");
        std::fs::write(&good, crate::tls::self_signed("example.org").unwrap().certificate).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        assert!(tls_config(std::slice::from_ref(&good)).is_ok());
        assert!(tls_config(&[empty]).is_err());
        assert!(tls_config(&[dir.join("missing.pem")]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
