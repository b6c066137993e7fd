//! TLS configuration: certificates from PEM files (reloadable), or a
//! self-signed certificate generated on first start and kept in the database.
//!
//! Only the `ring` provider is used. Knows nothing of Matrix.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    fn host_of_strips_ports() {
        assert_eq!(host_of("example.org:8448"), "example.org");
        assert_eq!(host_of("example.org"), "example.org");
        assert_eq!(host_of("[::1]:8448"), "::1");
    }
}
