//! The node's configuration: parsed and validated once at start, then passed
//! explicitly. No globals.
//!
//! Sources, weakest first: the embedded defaults, the TOML file (`--config`),
//! then command-line flags. Unknown keys and invalid values are an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::protocol::identifiers::validate_server_name;
use crate::protocol::room_version::{self, RoomVersion};

/// Who may create accounts through the client API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Only the operator creates accounts (`hearth user add`).
    Closed,
    /// Anyone holding a registration token (`hearth token create`).
    Token,
    /// Anyone, with `m.login.dummy`: for test benches and private LANs.
    Open,
}

impl std::str::FromStr for Registration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "closed" => Ok(Registration::Closed),
            "token" => Ok(Registration::Token),
            "open" => Ok(Registration::Open),
            other => Err(format!("registration must be closed, token or open, not {other:?}")),
        }
    }
}

/// One socket the node listens on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ADDR:PORT`, e.g. `127.0.0.1:8008` or `[::]:8448`.
    pub address: SocketAddr,
    /// Serve TLS on this socket (with the configured or self-signed certificate).
    #[serde(default)]
    pub tls: bool,
    /// Serve the federation API here too (the client API is always served).
    #[serde(default)]
    pub federation: bool,
}

/// The TLS certificate. Both empty means a self-signed one kept in the database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain file, reloaded on SIGHUP.
    pub certificate: Option<PathBuf>,
    /// PEM private key file, reloaded on SIGHUP.
    pub private_key: Option<PathBuf>,
}

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the CA checks that we hold a domain (RFC 8555 §8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// A TLS handshake on the TLS listener (port 443 for the CA), RFC 8737.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// `GET /.well-known/acme-challenge/{token}` on `http_listen` (port 80
    /// for the CA), RFC 8555 §8.3.
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeChallenge {
    /// The challenge type's name in ACME.
    pub fn name(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// Certificates from an ACME CA (RFC 8555), obtained and renewed by the
/// node; present means on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    /// The CA's directory URL (`https://`).
    pub directory: String,
    /// The account's contact address, for the CA's expiry warnings.
    pub email: Option<String>,
    /// The names the certificate covers; empty means the server name's host
    /// and the host of `well_known.client`.
    pub domains: Vec<String>,
    pub challenge: AcmeChallenge,
    /// `ADDR:PORT` of the plain-HTTP listener answering HTTP-01 challenges.
    pub http_listen: Option<SocketAddr>,
    /// A PEM file of extra CA certificates to trust for the directory (a test CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            directory: LETS_ENCRYPT_DIRECTORY.into(),
            email: None,
            domains: Vec::new(),
            challenge: AcmeChallenge::default(),
            http_listen: None,
            ca_file: None,
        }
    }
}

/// What `/.well-known/matrix/*` answers, for delegation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WellKnown {
    /// `m.server` in `/.well-known/matrix/server`, e.g. `matrix.example.org:443`.
    pub server: Option<String>,
    /// `m.homeserver.base_url` in `/.well-known/matrix/client`.
    pub client: Option<String>,
}

/// Request size limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest JSON request body in bytes (a federation transaction may
    /// always be up to `http::MAX_TRANSACTION_BODY`, 4 MiB, as the spec's
    /// 50 PDUs of 64 KiB need).
    pub max_json_body: usize,
    /// Largest media upload in bytes.
    pub max_media_body: usize,
    /// Bytes of media each user may store (uploads under way included);
    /// past it uploads are refused with 413 `M_TOO_LARGE`.
    pub media_quota_per_user: u64,
    /// Seconds a media download may go without its reader taking a piece
    /// (or an upload without a byte arriving) before it is given up.
    pub media_stall_timeout_secs: u64,
    /// Most users one `createRoom` may invite.
    pub max_create_room_invites: usize,
    /// A request body or a response that moves no byte for this many
    /// seconds is cut off (see `http1::STALL_TIMEOUT`).
    pub stall_timeout_secs: u64,
}

/// Default for [`Limits::max_create_room_invites`]: each invite is a signed
/// event and a state entry, made while the creator waits. 5,000 is well past
/// any household's room (or a company's all-hands) and still answered within
/// a second or so on a small board; the 1 MiB JSON body alone would allow some
/// 40,000 short user IDs.
pub const DEFAULT_MAX_CREATE_ROOM_INVITES: usize = 5_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_body: 1 << 20,
            max_media_body: 50 << 20,
            // A household on an SD card: a few hundred phone videos each.
            media_quota_per_user: 4 << 30,
            // Under 8.5 KiB/s a 256 KiB piece takes longer: no reader that
            // slow will finish a large file anyway.
            media_stall_timeout_secs: 30,
            max_create_room_invites: DEFAULT_MAX_CREATE_ROOM_INVITES,
            stall_timeout_secs: crate::http1::STALL_TIMEOUT.as_secs(),
        }
    }
}

impl Limits {
    /// [`Limits::media_stall_timeout_secs`] as a duration.
    pub fn media_stall_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.media_stall_timeout_secs)
    }
}

/// One rate limit: a bucket that holds `burst_count` attempts and drains
/// `per_second` of them each second (Synapse's shape). An attempt that would
/// overflow the bucket is refused with 429 `M_LIMIT_EXCEEDED`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Attempts given back per second.
    pub per_second: f64,
    /// Attempts allowed at once.
    pub burst_count: u32,
}

/// The largest `burst_count` accepted: more is no limit at all.
const MAX_BURST_COUNT: u32 = 1_000_000;

/// Login limits (Synapse's `rc_login`), checked before any password is hashed.
/// The client address is the TCP peer's (a reverse proxy's address for every
/// client behind it); IPv6 addresses count per /64.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimits {
    /// Every login attempt, per client address: 10 at once, then one every
    /// 20 s. A household behind one reverse proxy shares this bucket.
    pub address: RateLimit,
    /// Successful logins per account: 10 at once, then one a minute (a
    /// stolen password cannot make devices without end).
    pub account: RateLimit,
    /// Wrong passwords per account named, whether it exists or not (and in
    /// user-interactive auth, per signed-in account): 5, then one a minute.
    pub failed_attempts: RateLimit,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            address: RateLimit { per_second: 0.05, burst_count: 10 },
            account: RateLimit { per_second: 1.0 / 60.0, burst_count: 10 },
            failed_attempts: RateLimit { per_second: 1.0 / 60.0, burst_count: 5 },
        }
    }
}

/// Federation settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Federation {
    /// Extra trusted root certificates (PEM files) for outbound federation.
    pub ca_files: Vec<PathBuf>,
    /// CIDRs that outbound federation may reach although they are private or loopback.
    pub allow_ips: Vec<String>,
}

/// The TURN server clients use for calls (`GET /voip/turnServer`), as the
/// top-level keys Synapse reads: `turn_uris`, `turn_shared_secret` (coturn's
/// `static-auth-secret`) or `turn_username`/`turn_password`, and
/// `turn_user_lifetime`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Turn {
    /// `turn:` / `turns:` URIs handed to clients; empty means no TURN server.
    pub uris: Vec<String>,
    /// Secret shared with the TURN server for short-lived credentials.
    pub shared_secret: Option<String>,
    /// Fixed credentials, used when there is no shared secret.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long short-lived credentials stay valid.
    pub user_lifetime_ms: u64,
}

/// Credentials last an hour unless configured otherwise (Synapse's default).
const DEFAULT_TURN_USER_LIFETIME_MS: u64 = 3_600_000;

/// A duration as Synapse's config writes one: milliseconds as a number, or a
/// string with a unit (`"90s"`, `"30m"`, `"1h"`, `"1d"`, `"1w"`, `"1y"`;
/// no unit means milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub u64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(ms) => Ok(Millis(ms)),
            Written::Text(text) => parse_duration_ms(&text).map(Millis).map_err(serde::de::Error::custom),
        }
    }
}

fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit_ms) = match text.char_indices().last() {
        Some((at, 'y')) => (&text[..at], 365 * 86_400_000),
        Some((at, 'w')) => (&text[..at], 7 * 86_400_000),
        Some((at, 'd')) => (&text[..at], 86_400_000),
        Some((at, 'h')) => (&text[..at], 3_600_000),
        Some((at, 'm')) => (&text[..at], 60_000),
        Some((at, 's')) => (&text[..at], 1_000),
        _ => (text, 1),
    };
    let count: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 1d"))?;
    count.checked_mul(unit_ms).ok_or_else(|| format!("{text:?} is too long"))
}

/// What the node keeps about the people using it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Keep the address a device last logged in from (shown in `GET /devices`
    /// and whois). Off by default: devices keep only `last_seen_ts`, and a
    /// node started with it off forgets the addresses kept before.
    pub store_client_ips: bool,
    /// Tell other servers the names people give their devices (in
    /// `/user/devices`, federation `/keys/query` and device-list updates).
    /// Off by default, as in Synapse (`allow_device_name_lookup_over_federation`):
    /// a name like "Alice's work laptop" says more than a key needs to.
    pub device_names_over_federation: bool,
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The part after `:` in user IDs; may carry a port.
    pub server_name: String,
    /// Directory holding `hearth.db`.
    pub data_dir: PathBuf,
    /// Who may register.
    pub registration: Registration,
    /// Whether `POST /register?kind=guest` makes guest accounts (off by
    /// default). Guests may use only the endpoints the spec lists for them.
    /// Spec: <https://spec.matrix.org/latest/client-server-api/#guest-access>.
    pub guest_access: bool,
    /// Whether `GET /_matrix/client/v1/media/preview_url` fetches link
    /// previews (off by default: the server then fetches any URL a user
    /// names; private addresses only as `[federation] allow_ips` allows).
    /// Named as in Synapse's config.
    pub url_preview_enabled: bool,
    /// Room version for new rooms.
    pub default_room_version: String,
    /// Sockets to serve.
    pub listeners: Vec<Listener>,
    /// `ADDR:PORT` of the plain-HTTP listener serving only `GET /metrics`
    /// (Prometheus text format); none by default.
    pub metrics: Option<SocketAddr>,
    pub tls: Tls,
    /// Certificates through ACME; off unless the section is present.
    pub acme: Option<Acme>,
    pub well_known: WellKnown,
    pub limits: Limits,
    pub federation: Federation,
    /// See [`Turn`]; top-level keys named as in Synapse's config.
    pub turn_uris: Vec<String>,
    pub turn_shared_secret: Option<String>,
    pub turn_username: Option<String>,
    pub turn_password: Option<String>,
    pub turn_user_lifetime: Millis,
    pub rc_login: LoginLimits,
    pub privacy: Privacy,
    /// Application service registration files (YAML, as bridges write
    /// them), Synapse's key; read and validated at start and on SIGHUP.
    /// Spec: <https://spec.matrix.org/latest/application-service-api/#registration>.
    pub app_service_config_files: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost:8448".into(),
            data_dir: PathBuf::from("./data"),
            registration: Registration::Token,
            guest_access: false,
            url_preview_enabled: false,
            default_room_version: room_version::DEFAULT.into(),
            listeners: vec![
                Listener { address: ([127, 0, 0, 1], 8008).into(), tls: false, federation: false },
                Listener { address: ([127, 0, 0, 1], 8448).into(), tls: true, federation: true },
            ],
            metrics: None,
            tls: Tls::default(),
            acme: None,
            well_known: WellKnown::default(),
            limits: Limits::default(),
            federation: Federation::default(),
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_username: None,
            turn_password: None,
            turn_user_lifetime: Millis(DEFAULT_TURN_USER_LIFETIME_MS),
            rc_login: LoginLimits::default(),
            privacy: Privacy::default(),
            app_service_config_files: Vec::new(),
        }
    }
}

/// Command-line values that override the file; `None`/empty means "not given".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub server_name: Option<String>,
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub registration: Option<Registration>,
    pub federation_ca: Vec<PathBuf>,
    pub federation_allow_ips: Vec<String>,
}

impl Config {
    /// Loads the file (if any), applies the overrides and validates the result.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, String> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                Config::parse(&text).map_err(|error| format!("{}: {error}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no overrides, no validation).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    fn apply(&mut self, overrides: Overrides) {
        if let Some(data_dir) = overrides.data_dir {
            self.data_dir = data_dir;
        }
        if let Some(server_name) = overrides.server_name {
            self.server_name = server_name;
        }
        if !overrides.http.is_empty() || !overrides.https.is_empty() {
            let plain =
                overrides.http.into_iter().map(|address| Listener { address, tls: false, federation: false });
            let tls =
                overrides.https.into_iter().map(|address| Listener { address, tls: true, federation: true });
            self.listeners = plain.chain(tls).collect();
        }
        if let Some(metrics) = overrides.metrics {
            self.metrics = Some(metrics);
        }
        if let Some(certificate) = overrides.tls_certificate {
            self.tls.certificate = Some(certificate);
        }
        if let Some(private_key) = overrides.tls_private_key {
            self.tls.private_key = Some(private_key);
        }
        if let Some(registration) = overrides.registration {
            self.registration = registration;
        }
        self.federation.ca_files.extend(overrides.federation_ca);
        self.federation.allow_ips.extend(overrides.federation_allow_ips);
    }

    fn validate(&self) -> Result<(), String> {
        validate_server_name(&self.server_name)
            .map_err(|error| format!("server_name {:?}: {error}", self.server_name))?;
        if RoomVersion::from_id(&self.default_room_version).is_none() {
            return Err(format!("default_room_version {:?} is unknown", self.default_room_version));
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err("tls.certificate and tls.private_key go together".into());
        }
        if let Some(acme) = &self.acme {
            self.validate_acme(acme)?;
        }
        if self.limits.max_json_body < 1024 || self.limits.max_media_body < 1024 {
            return Err("limits must be at least 1024 bytes".into());
        }
        for uri in &self.turn_uris {
            if !(uri.starts_with("turn:") || uri.starts_with("turns:")) {
                return Err(format!("turn_uris {uri:?}: a TURN URI starts with turn: or turns:"));
            }
        }
        if !self.turn_uris.is_empty()
            && self.turn_shared_secret.is_none()
            && (self.turn_username.is_none() || self.turn_password.is_none())
        {
            return Err("turn_uris needs turn_shared_secret, or turn_username and turn_password".into());
        }
        if self.turn_user_lifetime.0 < 1000 {
            return Err("turn_user_lifetime must be at least a second".into());
        }
        let login = &self.rc_login;
        for (name, limit) in [
            ("address", login.address),
            ("account", login.account),
            ("failed_attempts", login.failed_attempts),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
                return Err(format!("rc_login.{name}.per_second must be a number above 0"));
            }
            if !(1..=MAX_BURST_COUNT).contains(&limit.burst_count) {
                return Err(format!("rc_login.{name}.burst_count must be from 1 to {MAX_BURST_COUNT}"));
            }
        }
        if !(1..=3600).contains(&self.limits.media_stall_timeout_secs) {
            return Err("limits.media_stall_timeout_secs must be between 1 and 3600".into());
        }
        if !(1..=3600).contains(&self.limits.stall_timeout_secs) {
            return Err("limits.stall_timeout_secs must be from 1 to 3600".into());
        }
        for cidr in &self.federation.allow_ips {
            crate::net::Cidr::parse(cidr).map_err(|error| format!("allow_ips {cidr:?}: {error}"))?;
        }
        Ok(())
    }

    fn validate_acme(&self, acme: &Acme) -> Result<(), String> {
        if !acme.directory.starts_with("https://") {
            return Err("acme.directory must be an https:// URL".into());
        }
        if self.tls.certificate.is_some() {
            return Err(
                "[acme] and tls.certificate exclude each other: the certificate comes from one".into()
            );
        }
        if !self.listeners.iter().any(|listener| listener.tls) {
            return Err("[acme] needs a TLS listener to serve the certificate on".into());
        }
        if acme.challenge == AcmeChallenge::Http01 && acme.http_listen.is_none() {
            return Err("acme.challenge \"http-01\" needs acme.http_listen (e.g. \"0.0.0.0:80\")".into());
        }
        let domains = self.acme_domains();
        if domains.is_empty() || crate::protocol::acme::MAX_DOMAINS < domains.len() {
            return Err(format!("acme.domains: from 1 to {} names", crate::protocol::acme::MAX_DOMAINS));
        }
        for domain in &domains {
            let is_name = domain.contains('.')
                && domain.len() <= 253
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                })
                && !domain
                    .rsplit('.')
                    .next()
                    .is_some_and(|top| top.bytes().all(|byte| byte.is_ascii_digit()));
            if !is_name {
                return Err(format!("acme.domains: {domain:?} is not a DNS name a CA issues for"));
            }
        }
        Ok(())
    }

    /// The names the ACME certificate covers: `acme.domains`, or the server
    /// name's host and the host of `well_known.client`, lower-cased and
    /// without repeats, in order.
    pub fn acme_domains(&self) -> Vec<String> {
        let configured = self.acme.as_ref().map(|acme| acme.domains.clone()).unwrap_or_default();
        let names = if configured.is_empty() {
            let mut names = vec![crate::tls::host_of(&self.server_name).to_string()];
            if let Some(client) = &self.well_known.client {
                let host =
                    client.split("://").nth(1).unwrap_or(client).split(['/', '?', '#']).next().unwrap_or("");
                names.push(crate::tls::host_of(host).to_string());
            }
            names
        } else {
            configured
        };
        let mut unique: Vec<String> = Vec::new();
        for name in names {
            let name = name.to_ascii_lowercase();
            if !name.is_empty() && !unique.contains(&name) {
                unique.push(name);
            }
        }
        unique
    }

    /// The TURN settings gathered from their top-level keys.
    pub fn turn(&self) -> Turn {
        Turn {
            uris: self.turn_uris.clone(),
            shared_secret: self.turn_shared_secret.clone(),
            username: self.turn_username.clone(),
            password: self.turn_password.clone(),
            user_lifetime_ms: self.turn_user_lifetime.0,
        }
    }

    /// Reads the application service registration files
    /// (`app_service_config_files`): each file's name and text.
    /// `protocol::appservice::parse_all` validates them, with the ones added
    /// with `hearth appservice add`.
    pub fn app_service_files(&self) -> Result<Vec<(String, String)>, String> {
        self.app_service_config_files
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                Ok((path.display().to_string(), text))
            })
            .collect()
    }

    /// The SQLite file inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("hearth.db")
    }
}

/// The file `hearth init` writes: every option with its default, commented.
pub fn template(server_name: &str) -> String {
    format!(
        r#"# hearth configuration. Command-line flags override what is set here.

# The name in your user IDs (@alice:NAME). It cannot change once accounts exist.
# A port is allowed ("example.org:8448"); with delegation (see [well_known])
# it is usually the bare domain.
server_name = "{server_name}"

# Where the database (one SQLite file, hearth.db) lives.
data_dir = "./data"

# Who may create accounts: "closed" (only `hearth user add`), "token"
# (a registration token from `hearth token create`), or "open" (anyone).
registration = "token"

# Guest accounts (POST /register?kind=guest, no password): they may read
# world-readable rooms, join rooms whose m.room.guest_access is "can_join",
# and use only the endpoints the spec lists for guests.
guest_access = false

# Link previews (GET /_matrix/client/v1/media/preview_url): the server fetches
# pages users link to (http and https; public addresses only, unless
# [federation] allow_ips names a private range), 1 MiB per page, 10 s each,
# and caches each answer for an hour.
url_preview_enabled = false

# Room version for new rooms.
default_room_version = "{default_version}"

# A TURN server for voice and video calls (coturn with `use-auth-secret` and
# the same `static-auth-secret`). Clients get credentials valid for
# turn_user_lifetime from GET /voip/turnServer; without turn_uris, none.
turn_uris = []
# turn_uris = ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp"]
# turn_shared_secret = "a long random string"
# Or fixed credentials instead of a shared secret:
# turn_username = "..."
# turn_password = "..."
turn_user_lifetime = "1h"

# Bridges and bots (application services): the registration files they
# generate (YAML). Their namespaces, tokens and URLs are read at start and
# again on SIGHUP.
app_service_config_files = []
# app_service_config_files = ["/etc/hearth/telegram-registration.yaml"]

# Prometheus metrics: a plain-HTTP listener serving only GET /metrics
# (requests, latencies, connections, queues, database size, memory, event
# loop lag). Off unless set; keep it on loopback or a private network.
# metrics = "127.0.0.1:9090"

# Sockets to serve. The client API is served on every listener; federation
# only where `federation = true`. `tls = true` uses [tls] or a self-signed
# certificate generated on first start. Give --http/--https to replace these.
[[listeners]]
address = "127.0.0.1:8008"
tls = false
federation = false

[[listeners]]
address = "127.0.0.1:8448"
tls = true
federation = true

[tls]
# PEM files; both or neither. Reloaded on SIGHUP (for certificate renewals).
# certificate = "/etc/letsencrypt/live/example.org/fullchain.pem"
# private_key = "/etc/letsencrypt/live/example.org/privkey.pem"

# Certificates from an ACME CA (Let's Encrypt by default), obtained at start,
# kept in the database and renewed two thirds into their lifetime (retried
# with backoff; the old certificate stays until a new one is in hand), served
# without a restart. Uncomment [acme] to turn it on; [tls] must then be empty.
# [acme]
# directory = "https://acme-v02.api.letsencrypt.org/directory"
# email = "admin@example.org"
# Names on the certificate; empty means the server name and the host of
# well_known.client.
# domains = []
# "tls-alpn-01": the CA connects to port 443, so a TLS listener must be
# reachable there. "http-01": the CA fetches http://DOMAIN/.well-known/
# acme-challenge/... from port 80, answered by a listener at http_listen.
# challenge = "tls-alpn-01"
# http_listen = "0.0.0.0:80"
# Extra CA certificates (PEM) to trust for the directory, for a test CA.
# ca_file = "/etc/hearth/test-ca.pem"

[well_known]
# Delegation: what /.well-known/matrix/server and /client answer.
# server = "matrix.example.org:443"
# client = "https://matrix.example.org"

[limits]
# Largest JSON body and largest media upload, in bytes. A federation
# transaction may always be up to 4 MiB (50 events of 64 KiB).
max_json_body = 1048576
max_media_body = 52428800
# Bytes of media each user may store.
media_quota_per_user = 4294967296
# Seconds a media download may wait for its reader (or an upload for its
# sender) before it is given up.
media_stall_timeout_secs = 30
# Most users one createRoom may invite.
max_create_room_invites = 5000
# Seconds a request body or a response may go without moving a byte.
stall_timeout_secs = 30

[federation]
# Extra trusted CA certificates (PEM) for outbound federation.
ca_files = []
# Private, loopback or link-local ranges outbound federation may reach.
allow_ips = []

# Login limits, checked before any password is hashed (429 M_LIMIT_EXCEEDED
# when exceeded). Each is a bucket of `burst_count` attempts that drains
# `per_second`. The client address is the connection's: behind a reverse
# proxy every client has the proxy's address and shares its bucket.
[rc_login.address]
# Every attempt from one address (IPv6: one /64).
per_second = 0.05
burst_count = 10

[rc_login.account]
# Successful logins to one account.
per_second = 0.016666666666666666
burst_count = 10

[rc_login.failed_attempts]
# Wrong passwords for one account name, whether it exists or not (also in
# user-interactive auth).
per_second = 0.016666666666666666
burst_count = 5

[privacy]
# Keep the IP address each device last logged in from, shown to its owner in
# GET /devices and to server admins in whois. Off: no client address is
# written to the database (addresses stored earlier are erased at start), and
# logs carry none unless started with -v. User agents are never kept.
store_client_ips = false
# Tell other servers the names people give their devices ("Alice's work
# laptop"). Off: remote users see device IDs and keys only, as with Synapse's
# default. Local users always see the names.
device_names_over_federation = false
"#,
        default_version = room_version::DEFAULT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() {
        let parsed = Config::parse(&template("localhost:8448")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_and_invalid_options_are_errors() {
        assert!(Config::parse("colour = \"blue\"").is_err());
        assert!(Config::parse("registration = \"sometimes\"").is_err());
        let bad_name = Overrides { server_name: Some("bad name".into()), ..Overrides::default() };
        assert!(Config::load(None, bad_name).is_err());
        for bad_limit in [
            "[rc_login.address]\nper_second = 0.0\nburst_count = 5",
            "[rc_login.account]\nper_second = 1.0\nburst_count = 0",
            "[rc_login.failed_attempts]\nper_second = nan\nburst_count = 5",
        ] {
            assert!(Config::parse(bad_limit).unwrap().validate().is_err(), "{bad_limit}");
        }
    }

    #[test]
    fn turn_keys_as_synapse_writes_them() {
        let text = "turn_uris = [\"turn:t.example:3478\"]\nturn_shared_secret = \"s\"\nturn_user_lifetime = \"1d\"\n";
        let path = std::env::temp_dir().join(format!("hearth-turn-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let config = Config::load(Some(&path), Overrides::default()).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(config.turn().user_lifetime_ms, 86_400_000);
        assert_eq!(config.turn().shared_secret.as_deref(), Some("s"));
        assert_eq!(Config::parse("turn_user_lifetime = 5000").unwrap().turn_user_lifetime, Millis(5000));
        assert!(Config::parse("turn_user_lifetime = \"soon\"").is_err());
        let no_secret = "turn_uris = [\"turn:t.example\"]\n";
        assert!(Config::parse(no_secret).unwrap().validate().is_err());
        assert!(
            Config::parse("turn_uris = [\"http://x\"]\nturn_shared_secret = \"s\"")
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn listener_flags_replace_the_configured_listeners() {
        let overrides = Overrides { https: vec!["127.0.0.1:9448".parse().unwrap()], ..Overrides::default() };
        let config = Config::load(None, overrides).unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert!(config.listeners[0].tls && config.listeners[0].federation);
    }

    #[test]
    fn acme_options_and_default_domains() {
        let config = Config::parse(
            "server_name = \"Example.org\"\n[well_known]\nclient = \"https://matrix.example.org:8443/\"\n[acme]\n",
        )
        .unwrap();
        let acme = config.acme.clone().unwrap();
        assert_eq!(acme.directory, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(config.acme_domains(), vec!["example.org".to_string(), "matrix.example.org".to_string()]);
        assert!(config.validate().is_ok());
        let http = Config::parse("server_name = \"example.org\"\n[acme]\nchallenge = \"http-01\"").unwrap();
        assert!(http.validate().is_err(), "http-01 without http_listen");
        for bad in [
            "server_name = \"localhost\"\n[acme]",
            "server_name = \"127.0.0.1\"\n[acme]",
            "server_name = \"example.org\"\n[acme]\ndirectory = \"http://ca.test/dir\"",
            "server_name = \"example.org\"\n[acme]\ndomains = [\"bad name.example\"]",
            "server_name = \"example.org\"\n[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\n[acme]",
        ] {
            assert!(Config::parse(bad).unwrap().validate().is_err(), "{bad}");
        }
        assert!(Config::parse("[acme]\nchallenge = \"dns-01\"").is_err());
    }

    #[test]
    fn the_metrics_listener_is_off_unless_set() {
        assert_eq!(Config::default().metrics, None);
        let config = Config::parse("metrics = \"127.0.0.1:9090\"").unwrap();
        assert_eq!(config.metrics, Some("127.0.0.1:9090".parse().unwrap()));
        let overrides = Overrides { metrics: Some("[::1]:9091".parse().unwrap()), ..Overrides::default() };
        assert_eq!(Config::load(None, overrides).unwrap().metrics, Some("[::1]:9091".parse().unwrap()));
        assert!(Config::parse("metrics = \"not an address\"").is_err());
    }
}
