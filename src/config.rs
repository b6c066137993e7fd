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
    /// Largest JSON request body in bytes.
    pub max_json_body: usize,
    /// Largest media upload in bytes.
    pub max_media_body: usize,
    /// A request body or a response that moves no byte for this many
    /// seconds is cut off (see `http1::STALL_TIMEOUT`).
    pub stall_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_body: 1 << 20,
            max_media_body: 50 << 20,
            stall_timeout_secs: crate::http1::STALL_TIMEOUT.as_secs(),
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

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The part after `:` in user IDs; may carry a port.
    pub server_name: String,
    /// Directory holding `hearth.db`.
    pub data_dir: PathBuf,
    /// Who may register.
    pub registration: Registration,
    /// Room version for new rooms.
    pub default_room_version: String,
    /// Sockets to serve.
    pub listeners: Vec<Listener>,
    pub tls: Tls,
    pub well_known: WellKnown,
    pub limits: Limits,
    pub federation: Federation,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost:8448".into(),
            data_dir: PathBuf::from("./data"),
            registration: Registration::Token,
            default_room_version: room_version::DEFAULT.into(),
            listeners: vec![
                Listener { address: ([127, 0, 0, 1], 8008).into(), tls: false, federation: false },
                Listener { address: ([127, 0, 0, 1], 8448).into(), tls: true, federation: true },
            ],
            tls: Tls::default(),
            well_known: WellKnown::default(),
            limits: Limits::default(),
            federation: Federation::default(),
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
        if self.limits.max_json_body < 1024 || self.limits.max_media_body < 1024 {
            return Err("limits must be at least 1024 bytes".into());
        }
        if !(1..=3600).contains(&self.limits.stall_timeout_secs) {
            return Err("limits.stall_timeout_secs must be from 1 to 3600".into());
        }
        for cidr in &self.federation.allow_ips {
            crate::net::Cidr::parse(cidr).map_err(|error| format!("allow_ips {cidr:?}: {error}"))?;
        }
        Ok(())
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

# Room version for new rooms.
default_room_version = "{default_version}"

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

[well_known]
# Delegation: what /.well-known/matrix/server and /client answer.
# server = "matrix.example.org:443"
# client = "https://matrix.example.org"

[limits]
# Largest JSON body and largest media upload, in bytes.
max_json_body = 1048576
max_media_body = 52428800
# Seconds a request body or a response may go without moving a byte.
stall_timeout_secs = 30

[federation]
# Extra trusted CA certificates (PEM) for outbound federation.
ca_files = []
# Private, loopback or link-local ranges outbound federation may reach.
allow_ips = []
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
    }

    #[test]
    fn listener_flags_replace_the_configured_listeners() {
        let overrides = Overrides { https: vec!["127.0.0.1:9448".parse().unwrap()], ..Overrides::default() };
        let config = Config::load(None, overrides).unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert!(config.listeners[0].tls && config.listeners[0].federation);
    }
}
