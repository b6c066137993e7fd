//! The ACME client (RFC 8555) and the renewal task: an account per CA, an
//! order for the configured names, TLS-ALPN-01 (RFC 8737) or HTTP-01
//! validation, finalization with a CSR, and the certificate swapped into the
//! TLS listeners without a restart. The pure parts (JWS, thumbprints, the
//! CA's objects, renewal time) are `protocol/acme.rs`; the stored state is
//! `storage/acme.rs`; requests go through `transport` like every outbound one.
//!
//! Renewal runs as one task on the event loop: the certificate is renewed two
//! thirds into its lifetime; a failure is logged and recorded, the current
//! certificate stays, and the attempt is retried after 10 s doubling to an
//! hour. Every answer's size, every poll's count and the whole attempt's time
//! are bounded.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_types::{Method, Url};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use smol::future::FutureExt;

use crate::config::AcmeChallenge;
use crate::error::Error;
use crate::http1::OutgoingBody;
use crate::protocol::acme::{
    self, Authorization, Directory, EcJwk, KeyRef, Order, Problem, base64url, key_authorization,
};
use crate::remote::Remote;
use crate::server::{Handler, Response};
use crate::storage::AcmeCertificate;
use crate::tls::{self, SwappableCertificate};

use super::{discovery, transport};

/// A CA's JSON answers (directory, orders, authorizations) are small.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// A PEM chain of a few certificates.
const MAX_CHAIN_BYTES: usize = 64 * 1024;
/// Polls of one authorization or order.
const MAX_POLLS: u32 = 30;
/// The longest `Retry-After` we honour between polls, and the wait when
/// the CA gives none.
const MAX_POLL_WAIT_SECS: u64 = 10;
const DEFAULT_POLL_WAIT_SECS: u64 = 1;
/// A whole attempt (account, order, validation, finalization, download)
/// gives up after this long.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(300);
/// A `badNonce` answer is retried with the fresh nonce this many times
/// (RFC 8555 §6.5: the client should retry).
const MAX_NONCE_RETRIES: u32 = 3;
/// Replay nonces are base64url (RFC 8555 §6.5.1); longer ones are refused.
const MAX_NONCE_LENGTH: usize = 256;
/// The renewal task looks at the clock again at least this often.
const LONGEST_SLEEP: Duration = Duration::from_secs(3_600);
/// A failure's text as logged and recorded (a CA's problem detail may be long).
const MAX_ERROR_CHARS: usize = 1_000;
/// The media type of an ACME request body (RFC 8555 §6.2).
const JOSE_JSON: &str = "application/jose+json";

/// What the ACME client shares with the listeners: the certificate the TLS
/// listeners serve (with the TLS-ALPN-01 challenge certificates), and the
/// HTTP-01 key authorizations by token.
pub struct Acme {
    pub certificates: Arc<SwappableCertificate>,
    http_tokens: RefCell<HashMap<String, String>>,
    /// Public roots plus `acme.ca_file`; without one, federation's config
    /// (the same public roots) is used rather than a second copy of them.
    client_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Acme {
    /// The client state around the certificate served now.
    pub fn new(
        config: &crate::config::Acme,
        certificates: Arc<SwappableCertificate>,
    ) -> Result<Rc<Acme>, String> {
        let client_tls = match &config.ca_file {
            Some(ca_file) => Some(transport::tls_config(std::slice::from_ref(ca_file))?),
            None => None,
        };
        Ok(Rc::new(Acme { certificates, http_tokens: RefCell::new(HashMap::new()), client_tls }))
    }
}

/// The certificate obtained last, as the TLS listeners serve it; `None` if
/// there is none (or it no longer reads, which is logged).
pub fn stored_certificate(storage: &crate::storage::Storage) -> Option<Arc<rustls::sign::CertifiedKey>> {
    let stored = match storage.acme_certificate() {
        Ok(stored) => stored?,
        Err(error) => {
            log::warn!("ACME: cannot read the stored certificate: {error}");
            return None;
        }
    };
    let pem = tls::PemPair { certificate: stored.chain_pem, private_key: stored.key_pem };
    match tls::certified_key(&pem) {
        Ok(certified) => Some(certified),
        Err(error) => {
            log::warn!("ACME: the stored certificate is unusable: {error}");
            None
        }
    }
}

/// The handler of the HTTP-01 listener (`acme.http_listen`): `GET
/// /.well-known/acme-challenge/{token}` answers the key authorization while
/// its challenge is pending (RFC 8555 §8.3); everything else is 404.
pub fn http01_handler(acme: Rc<Acme>) -> Handler {
    Rc::new(move |request, _peer| {
        let acme = acme.clone();
        Box::pin(async move {
            let path = request.head.target.split('?').next().unwrap_or_default();
            let answer = path
                .strip_prefix(acme::HTTP01_PATH_PREFIX)
                .filter(|_| request.head.method == "GET")
                .and_then(|token| acme.http_tokens.borrow().get(token).cloned());
            let (status, body) = match answer {
                Some(key_authorization) => (200, key_authorization),
                None => (404, "no such challenge\n".to_string()),
            };
            Response {
                status,
                headers: vec![(Cow::Borrowed("content-type"), "application/octet-stream".into())],
                body: OutgoingBody::Bytes(body.into_bytes()),
            }
        })
    })
}

/// Starts the renewal task.
pub fn start(app: &Rc<Remote>, acme: Rc<Acme>) {
    let app_for_task = app.clone();
    app.executor.spawn(renew_forever(app_for_task, acme)).detach();
}

fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// When the next attempt is due (Unix seconds): after a failure, when its
/// retry is; without a certificate for these names, now; else two thirds
/// into the certificate's lifetime.
fn next_attempt(app: &Remote, domains: &[String]) -> crate::error::Result<i64> {
    app.in_snapshot(|| {
        let storage = app.storage();
        if let Some(renewal) = storage.acme_renewal()? {
            return Ok(renewal.next_attempt_ts / 1000);
        }
        Ok(match storage.acme_certificate()? {
            Some(certificate) if certificate.domains == domains => {
                acme::renewal_time(certificate.not_before, certificate.not_after)
            }
            _ => 0,
        })
    })
}

async fn renew_forever(app: Rc<Remote>, acme: Rc<Acme>) {
    let domains = app.config.acme_domains();
    loop {
        let due = match next_attempt(&app, &domains) {
            Ok(due) => due,
            Err(error) => {
                log::error!("ACME: cannot read the renewal state: {error}");
                smol::Timer::after(LONGEST_SLEEP).await;
                continue;
            }
        };
        let now = unix_seconds();
        if now < due {
            let wait = Duration::from_secs(due.saturating_sub(now) as u64).min(LONGEST_SLEEP);
            smol::Timer::after(wait).await;
            continue;
        }
        log::info!("ACME: asking {} for a certificate for {}", directory(&app), domains.join(", "));
        let attempt = obtain(&app, &acme, &domains).or(async {
            smol::Timer::after(ATTEMPT_DEADLINE).await;
            Err(format!("no certificate within {} s", ATTEMPT_DEADLINE.as_secs()))
        });
        match attempt.await {
            Ok(certificate) => log::info!(
                "ACME: serving the new certificate for {} (serial {}, valid until {} Unix time); \
                 renewal due at {}",
                domains.join(", "),
                certificate.serial,
                certificate.not_after,
                acme::renewal_time(certificate.not_before, certificate.not_after)
            ),
            Err(error) => {
                let delay = record_failure(&app, &error);
                smol::Timer::after(delay).await;
            }
        }
    }
}

/// Records a failed attempt (the error cut to [`MAX_ERROR_CHARS`]) and logs
/// it; answers the wait before the next one.
fn record_failure(app: &Remote, error: &str) -> Duration {
    let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
    let recorded = app.in_transaction(|| {
        let storage = app.storage();
        let failures = storage.acme_renewal()?.map_or(0, |renewal| renewal.failures).saturating_add(1);
        let delay = acme::retry_delay_secs(failures);
        storage.record_acme_failure(&error, (unix_seconds() + delay as i64) * 1000)?;
        Ok((failures, delay))
    });
    let (failures, delay) = recorded.unwrap_or_else(|record_error| {
        log::error!("ACME: cannot record the failure: {record_error}");
        (1, acme::retry_delay_secs(1))
    });
    log::warn!(
        "ACME: renewal failed (failure {failures} in a row), keeping the current certificate, \
         retrying in {delay} s: {error}"
    );
    Duration::from_secs(delay)
}

fn directory(app: &Remote) -> &str {
    app.config.acme.as_ref().map_or(crate::config::LETS_ENCRYPT_DIRECTORY, |acme| acme.directory.as_str())
}

/// One attempt: a certificate for `domains`, stored and served.
async fn obtain(app: &Remote, acme: &Acme, domains: &[String]) -> Result<AcmeCertificate, String> {
    let config = app.config.acme.as_ref().ok_or("ACME is not configured")?;
    let mut session = Session::open(app, acme, &config.directory).await?;
    session.register(config.email.as_deref()).await?;
    let (order_url, order) = session.new_order(domains).await?;
    if domains.len() < order.authorizations.len() {
        return Err(format!(
            "the order has {} authorizations for {} names",
            order.authorizations.len(),
            domains.len()
        ));
    }
    for url in &order.authorizations {
        session.authorize(url, domains, config.challenge).await?;
    }
    let order = session.poll_order(&order_url, &["ready", "valid"]).await?;
    let key_pair = rcgen::KeyPair::generate().map_err(|error| format!("cannot make a key: {error}"))?;
    let order = if order.status == "ready" {
        let csr = rcgen::CertificateParams::new(domains.to_vec())
            .and_then(|params| params.serialize_request(&key_pair))
            .map_err(|error| format!("cannot make the CSR: {error}"))?;
        let payload = json!({ "csr": base64url(csr.der()) });
        session.post_json::<Order>(&order.finalize, Some(&payload)).await?;
        session.poll_order(&order_url, &["valid"]).await?
    } else {
        order
    };
    let certificate_url = order.certificate.ok_or("a valid order without a certificate URL")?;
    let chain = session.post(&certificate_url, None, MAX_CHAIN_BYTES).await?.body;
    let pem = tls::PemPair { certificate: chain, private_key: key_pair.serialize_pem().into_bytes() };
    let certified = tls::certified_key(&pem).map_err(|error| format!("the CA's certificate: {error}"))?;
    let leaf = certified.end_entity_cert().map_err(|error| format!("the CA's certificate: {error}"))?;
    let facts = acme::certificate_facts(leaf.as_ref())?;
    let stored = AcmeCertificate {
        domains: domains.to_vec(),
        chain_pem: pem.certificate,
        key_pem: pem.private_key,
        serial: facts.serial,
        not_before: facts.not_before,
        not_after: facts.not_after,
    };
    app.in_transaction(|| app.storage().store_acme_certificate(&stored))
        .map_err(|error| format!("cannot store the certificate: {error}"))?;
    acme.certificates.swap(certified);
    Ok(stored)
}

/// A conversation with the CA: its directory, the account key, the account
/// URL once known, and the next replay nonce.
struct Session<'a> {
    app: &'a Remote,
    acme: &'a Acme,
    directory: Directory,
    key: EcdsaKeyPair,
    jwk: EcJwk,
    rng: SystemRandom,
    account_url: Option<String>,
    directory_url: String,
    nonce: Option<String>,
}

/// The challenge response a pending authorization needs, removed when
/// validation is over, however it ends.
struct Installed<'a> {
    acme: &'a Acme,
    domain: String,
    token: String,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        self.acme.certificates.remove_challenge(&self.domain);
        self.acme.http_tokens.borrow_mut().remove(&self.token);
    }
}

impl<'a> Session<'a> {
    /// Reads the directory and loads (or makes and stores) the account key.
    async fn open(app: &'a Remote, acme: &'a Acme, directory_url: &str) -> Result<Session<'a>, String> {
        let rng = SystemRandom::new();
        let stored = app
            .in_snapshot(|| app.storage().acme_account(directory_url))
            .map_err(|error| format!("cannot read the account: {error}"))?;
        let (pkcs8, account_url) = match stored {
            Some(stored) => stored,
            None => {
                let fresh = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| "cannot make an account key")?;
                log::info!("ACME: made an account key for {directory_url}");
                app.in_transaction(|| app.storage().acme_account_or_insert(directory_url, fresh.as_ref()))
                    .map_err(|error| format!("cannot store the account key: {error}"))?
            }
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| "the stored account key is unusable")?;
        let jwk = EcJwk::from_uncompressed_point(key.public_key().as_ref())
            .ok_or("the account key is not P-256")?;
        let mut session = Session {
            app,
            acme,
            directory: Directory {
                new_nonce: String::new(),
                new_account: String::new(),
                new_order: String::new(),
            },
            key,
            jwk,
            rng,
            account_url,
            directory_url: directory_url.to_string(),
            nonce: None,
        };
        let response = session.request(Method::Get, directory_url, None, MAX_ANSWER_BYTES).await?;
        if response.status != 200 {
            return Err(format!("{directory_url}: status {}", response.status));
        }
        session.directory = parse(directory_url, &response.body)?;
        Ok(session)
    }

    /// One HTTPS exchange with the CA (whose URL the operator configured,
    /// so any address may be reached, `Reach::Configured`).
    async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        max_body: usize,
    ) -> Result<transport::RawResponse, String> {
        let parsed = Url::parse(url).map_err(|error| format!("{url}: {error}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("{url}: the CA's URLs must be https://"));
        }
        let refused = |why: String| Error::matrix(502, "M_UNKNOWN", format!("{url}: {why}"));
        let (target, path) = discovery::url_target(&self.app.federation, &parsed, true, refused)
            .await
            .map_err(|error| error.to_string())?;
        let mut headers = vec![("accept", "application/json, application/pem-certificate-chain".to_string())];
        if body.is_some() {
            headers.push(("content-type", JOSE_JSON.to_string()));
        }
        let reach = transport::Reach::Configured;
        transport::exchange_on(
            Some(self.acme.client_tls.as_ref().unwrap_or(&self.app.federation.tls)),
            &target,
            reach,
            method,
            &path,
            &headers,
            body,
            max_body,
        )
        .await
        .map_err(|error| error.to_string())
    }

    /// A replay nonce from `newNonce` (RFC 8555 §7.2).
    async fn fresh_nonce(&mut self) -> Result<String, String> {
        let url = self.directory.new_nonce.clone();
        let response = self.request(Method::Get, &url, None, MAX_ANSWER_BYTES).await?;
        self.keep_nonce(&response);
        self.nonce.take().ok_or_else(|| format!("{url}: no Replay-Nonce"))
    }

    fn keep_nonce(&mut self, response: &transport::RawResponse) {
        self.nonce = response
            .header("replay-nonce")
            .filter(|nonce| {
                !nonce.is_empty()
                    && nonce.len() <= MAX_NONCE_LENGTH
                    && nonce.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
            })
            .map(str::to_string);
    }

    /// A signed POST (`payload` `None`: POST-as-GET), retried on `badNonce`;
    /// an error status is an error carrying the CA's problem document.
    async fn post(
        &mut self,
        url: &str,
        payload: Option<&Value>,
        max_body: usize,
    ) -> Result<transport::RawResponse, String> {
        let mut attempt = 0;
        loop {
            let nonce = match self.nonce.take() {
                Some(nonce) => nonce,
                None => self.fresh_nonce().await?,
            };
            let key = match &self.account_url {
                Some(account_url) => KeyRef::Kid(account_url),
                None => KeyRef::Jwk(&self.jwk),
            };
            let header = acme::protected_header(key, &nonce, url);
            let body = acme::jws(&header, payload, |input| {
                self.key.sign(&self.rng, input).map(|signature| signature.as_ref().to_vec())
            })
            .map_err(|_| "cannot sign the request")?;
            let response = self.request(Method::Post, url, Some(body), max_body).await?;
            self.keep_nonce(&response);
            if response.status < 400 {
                return Ok(response);
            }
            let problem: Problem = serde_json::from_slice(&response.body).unwrap_or_default();
            if problem.is_bad_nonce() && attempt < MAX_NONCE_RETRIES {
                attempt += 1;
                continue;
            }
            return Err(format!("{url}: status {}: {problem}", response.status));
        }
    }

    async fn post_json<T: DeserializeOwned>(
        &mut self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<T, String> {
        let response = self.post(url, payload, MAX_ANSWER_BYTES).await?;
        parse(url, &response.body)
    }

    /// Finds or creates the account of our key (RFC 8555 §7.3; for a key
    /// the CA knows, `newAccount` answers the existing account, so a CA that
    /// lost its state gets the account back).
    async fn register(&mut self, email: Option<&str>) -> Result<(), String> {
        self.account_url = None;
        let url = self.directory.new_account.clone();
        let response = self.post(&url, Some(&acme::new_account_payload(email)), MAX_ANSWER_BYTES).await?;
        let account_url = response.header("location").ok_or_else(|| format!("{url}: no account Location"))?;
        if account_url.len() > 2048 {
            return Err(format!("{url}: the account URL is too long"));
        }
        let account_url = account_url.to_string();
        self.app
            .in_transaction(|| self.app.storage().set_acme_account_url(&self.directory_url, &account_url))
            .map_err(|error| format!("cannot store the account: {error}"))?;
        self.account_url = Some(account_url);
        Ok(())
    }

    /// A new order for `domains` (RFC 8555 §7.4): its URL and its state.
    async fn new_order(&mut self, domains: &[String]) -> Result<(String, Order), String> {
        let url = self.directory.new_order.clone();
        let response = self.post(&url, Some(&acme::new_order_payload(domains)), MAX_ANSWER_BYTES).await?;
        let order_url =
            response.header("location").ok_or_else(|| format!("{url}: no order Location"))?.to_string();
        Ok((order_url, parse(&url, &response.body)?))
    }

    /// Validates one authorization with `challenge` (RFC 8555 §7.5.1): the
    /// response installed, the CA told, its verdict polled for.
    async fn authorize(
        &mut self,
        url: &str,
        domains: &[String],
        challenge: AcmeChallenge,
    ) -> Result<(), String> {
        let authorization: Authorization = self.post_json(url, None).await?;
        match authorization.status.as_str() {
            "valid" => return Ok(()),
            "pending" => {}
            _ => return Err(format!("{url}: {}", authorization.failure())),
        }
        let domain = authorization.identifier.value.to_ascii_lowercase();
        if authorization.identifier.kind != "dns" || !domains.contains(&domain) {
            return Err(format!("{url}: an authorization for {domain:?}, which we did not ask for"));
        }
        let (found, token) = authorization
            .challenge(challenge.name())
            .ok_or_else(|| format!("{url}: the CA offers no usable {} challenge", challenge.name()))?;
        let (challenge_url, token) = (found.url.clone(), token.to_string());
        let key_authorization = key_authorization(&token, &self.jwk.thumbprint());
        match challenge {
            AcmeChallenge::TlsAlpn01 => {
                let certified = tls::acme_challenge_certificate(&domain, &key_authorization)?;
                self.acme.certificates.add_challenge(&domain, certified);
            }
            AcmeChallenge::Http01 => {
                self.acme.http_tokens.borrow_mut().insert(token.clone(), key_authorization);
            }
        }
        let _installed = Installed { acme: self.acme, domain: domain.clone(), token };
        self.post(&challenge_url, Some(&json!({})), MAX_ANSWER_BYTES).await?;
        for _ in 0..MAX_POLLS {
            let response = self.post(url, None, MAX_ANSWER_BYTES).await?;
            let authorization: Authorization = parse(url, &response.body)?;
            match authorization.status.as_str() {
                "valid" => {
                    log::info!("ACME: {domain} validated ({})", challenge.name());
                    return Ok(());
                }
                "pending" | "processing" => wait(&response).await,
                _ => return Err(format!("{domain}: {}", authorization.failure())),
            }
        }
        Err(format!("{domain}: still not validated after {MAX_POLLS} polls"))
    }

    /// Polls the order until its status is one of `wanted` (RFC 8555 §7.4).
    async fn poll_order(&mut self, url: &str, wanted: &[&str]) -> Result<Order, String> {
        for _ in 0..MAX_POLLS {
            let response = self.post(url, None, MAX_ANSWER_BYTES).await?;
            let order: Order = parse(url, &response.body)?;
            if wanted.contains(&order.status.as_str()) {
                return Ok(order);
            }
            match order.status.as_str() {
                "pending" | "ready" | "processing" => wait(&response).await,
                _ => {
                    let why = order
                        .error
                        .map_or_else(|| format!("order {}", order.status), |error| error.to_string());
                    return Err(format!("{url}: {why}"));
                }
            }
        }
        Err(format!("{url}: the order is not {} after {MAX_POLLS} polls", wanted.join(" or ")))
    }
}

/// Waits as the CA's `Retry-After` asks (bounded).
async fn wait(response: &transport::RawResponse) {
    let seconds =
        acme::retry_after_secs(response.header("retry-after"), DEFAULT_POLL_WAIT_SECS, MAX_POLL_WAIT_SECS);
    smol::Timer::after(Duration::from_secs(seconds)).await;
}

fn parse<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| format!("{url}: unexpected answer: {error}"))
}
