//! TLS configuration: certificates from PEM files (reloadable), a
//! self-signed certificate generated on first start and kept in the database,
//! or a certificate obtained through ACME, swapped in while the node runs,
//! with the TLS-ALPN-01 challenge certificates (RFC 8737) beside it.
//!
//! Only the `ring` provider is used. Knows nothing of Matrix.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::protocol::acme::{ACME_IDENTIFIER_OID, ALPN_ACME_TLS, acme_identifier_value};

/// A certificate chain and its private key, both PEM.
pub struct PemPair {
    pub certificate: Vec<u8>,
    pub private_key: Vec<u8>,
}

/// The crypto provider every TLS config here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and key from PEM files.
pub fn read_pem_files(certificate: &Path, private_key: &Path) -> Result<PemPair, String> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()));
    Ok(PemPair { certificate: read(certificate)?, private_key: read(private_key)? })
}

/// Builds a rustls server config (HTTP/1.1 only) from a PEM pair.
pub fn server_config(pem: &PemPair) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.certificate)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("bad certificate PEM: {error}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.private_key)
        .map_err(|error| format!("bad private key PEM: {error}"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("certificate and key do not fit: {error}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The chain and signing key of a PEM pair, as a resolver hands them to rustls.
pub fn certified_key(pem: &PemPair) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.certificate)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("bad certificate PEM: {error}"))?;
    if chain.is_empty() {
        return Err("the certificate PEM holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.private_key)
        .map_err(|error| format!("bad private key PEM: {error}"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|error| format!("unusable private key: {error}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|error| format!("certificate and key do not fit: {error}"))?;
    Ok(Arc::new(certified))
}

/// The certificate a TLS listener serves, swapped while the node runs (a
/// renewed ACME certificate is used from the next handshake on), and the
/// TLS-ALPN-01 challenge certificates by domain: a handshake offering ALPN
/// `acme-tls/1` gets the challenge certificate of its SNI name, or fails
/// (RFC 8737 §3).
#[derive(Debug)]
pub struct SwappableCertificate {
    current: Mutex<Arc<CertifiedKey>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

/// A lock that a panic elsewhere cannot make unusable (the data is a
/// pointer swapped whole, never left half-written).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SwappableCertificate {
    pub fn new(current: Arc<CertifiedKey>) -> Arc<SwappableCertificate> {
        Arc::new(SwappableCertificate {
            current: Mutex::new(current),
            challenges: Mutex::new(HashMap::new()),
        })
    }

    /// Serves `certified` from the next handshake on.
    pub fn swap(&self, certified: Arc<CertifiedKey>) {
        *lock(&self.current) = certified;
    }

    /// Answers TLS-ALPN-01 validation handshakes for `domain` with `certified`.
    pub fn add_challenge(&self, domain: &str, certified: Arc<CertifiedKey>) {
        lock(&self.challenges).insert(domain.to_ascii_lowercase(), certified);
    }

    /// Stops answering validation handshakes for `domain`.
    pub fn remove_challenge(&self, domain: &str) {
        lock(&self.challenges).remove(&domain.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for SwappableCertificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation =
            hello.alpn().is_some_and(|mut protocols| protocols.any(|offered| offered == ALPN_ACME_TLS));
        if validation {
            let name = hello.server_name()?.to_ascii_lowercase();
            return lock(&self.challenges).get(&name).cloned();
        }
        Some(lock(&self.current).clone())
    }
}

/// A rustls server config serving what `resolver` holds: HTTP/1.1, and
/// `acme-tls/1` for TLS-ALPN-01 validation (the server closes those
/// connections after the handshake).
pub fn swappable_server_config(resolver: Arc<SwappableCertificate>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec(), ALPN_ACME_TLS.to_vec()];
    Ok(Arc::new(config))
}

/// The self-signed TLS-ALPN-01 certificate for `domain` (RFC 8737 §3): the
/// domain as its only name, and the critical `acmeIdentifier` extension
/// holding the SHA-256 of the key authorization.
pub fn acme_challenge_certificate(
    domain: &str,
    key_authorization: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|error| error.to_string())?;
    let mut extension = rcgen::CustomExtension::from_oid_content(
        ACME_IDENTIFIER_OID,
        acme_identifier_value(key_authorization),
    );
    extension.set_criticality(true);
    params.custom_extensions = vec![extension];
    let key_pair = rcgen::KeyPair::generate().map_err(|error| error.to_string())?;
    let certificate = params.self_signed(&key_pair).map_err(|error| error.to_string())?;
    let key = PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|error| error.to_string())?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|error| error.to_string())?;
    // Not `certified_key`: its check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension it does not know.
    Ok(Arc::new(CertifiedKey::new(vec![certificate.der().clone()], signing_key)))
}

/// Makes a self-signed certificate for `host` (plus `localhost` and loopback).
pub fn self_signed(host: &str) -> Result<PemPair, String> {
    let mut names = vec![host.to_string()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|name| name == extra) {
            names.push(extra.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names).map_err(|error| error.to_string())?;
    Ok(PemPair {
        certificate: certified.cert.pem().into_bytes(),
        private_key: certified.key_pair.serialize_pem().into_bytes(),
    })
}

/// The host part of a server name (`example.org:8448` -> `example.org`, `[::1]:80` -> `::1`).
pub fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    server_name.rsplit_once(':').map_or(server_name, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_makes_a_server_config() {
        let pem = self_signed("example.org").unwrap();
        assert!(server_config(&pem).is_ok());
        let broken = PemPair { certificate: b"junk".to_vec(), private_key: pem.private_key };
        assert!(server_config(&broken).is_err());
    }

    #[test]
    fn certified_keys_and_challenge_certificates() {
        let pem = self_signed("example.org").unwrap();
        assert!(certified_key(&pem).is_ok());
        let other = self_signed("example.org").unwrap();
        let mismatched = PemPair { certificate: pem.certificate, private_key: other.private_key };
        assert!(certified_key(&mismatched).is_err());
        let challenge = acme_challenge_certificate("node.example", "token.thumbprint").unwrap();
        let der = challenge.end_entity_cert().unwrap().as_ref();
        let value = acme_identifier_value("token.thumbprint");
        // The extension's value appears verbatim in the certificate.
        assert!(der.windows(value.len()).any(|window| window == value.as_slice()));
    }

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("example.org:8448"), "example.org");
        assert_eq!(host_of("example.org"), "example.org");
        assert_eq!(host_of("[::1]:8448"), "::1");
    }
}
