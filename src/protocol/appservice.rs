//! Application service registrations: the YAML file a bridge or bot
//! generates, parsed and validated, and its namespaces matched against user
//! IDs, room aliases and room IDs. Pure: the caller reads the files.
//!
//! Spec: <https://spec.matrix.org/latest/application-service-api/#registration>.
//!
//! Where the spec is loose we follow Synapse: a namespace's regex matches
//! from the start of the string (Python's `re.match`, so `@irc_.*` and
//! `@irc_` both take `@irc_alice:example.org`), the service's own user
//! (`sender_localpart`) is always in its user namespace, and unknown keys are
//! ignored (bridges write extra ones).

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use super::identifiers::UserId;

/// A compiled namespace regex may take this much memory at most: every
/// pattern seen in bridges compiles to a few KiB.
const MAX_REGEX_SIZE: usize = 1 << 20;
/// Longest regex accepted in a namespace.
const MAX_REGEX_LENGTH: usize = 4096;
/// Most entries per namespace kind.
const MAX_NAMESPACE_ENTRIES: usize = 100;

/// One entry of a namespace: a pattern, and whether the service claims what
/// it matches for itself alone.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// Others may not register (or create) what this matches.
    pub exclusive: bool,
    /// Anchored at the start, as Synapse matches.
    pub regex: Regex,
}

/// A validated registration.
#[derive(Clone, Debug)]
pub struct AppService {
    /// Unique among the node's services; names it in logs and in `/ping`.
    pub id: String,
    /// Where transactions go; `None` for a service that only uses the client API.
    pub url: Option<String>,
    /// The token the service authenticates with.
    pub as_token: String,
    /// The token the node authenticates with to the service.
    pub hs_token: String,
    /// `@sender_localpart:server_name`, the service's own user.
    pub sender: String,
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
    /// Whether the service's requests count against rate limits.
    pub rate_limited: bool,
    /// Third-party protocols the service bridges.
    pub protocols: Vec<String>,
    /// Whether the service wants ephemeral events (typing, receipts, presence).
    pub receive_ephemeral: bool,
}

/// The file as written.
#[derive(Deserialize)]
struct Written {
    id: Option<String>,
    /// Required, but may be `null` (Synapse's rule): `Some(None)` is null.
    #[serde(default, deserialize_with = "present")]
    url: Option<Option<String>>,
    as_token: Option<String>,
    hs_token: Option<String>,
    sender_localpart: Option<String>,
    #[serde(default)]
    namespaces: WrittenNamespaces,
    #[serde(default = "yes")]
    rate_limited: bool,
    #[serde(default)]
    protocols: Vec<String>,
    receive_ephemeral: Option<bool>,
    /// The name from MSC2409, which many bridges still write.
    #[serde(rename = "de.sorunome.msc2409.push_ephemeral")]
    push_ephemeral: Option<bool>,
}

/// A key that is there, `null` or not.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

fn yes() -> bool {
    true
}

#[derive(Default, Deserialize)]
struct WrittenNamespaces {
    #[serde(default)]
    users: Vec<WrittenNamespace>,
    #[serde(default)]
    aliases: Vec<WrittenNamespace>,
    #[serde(default)]
    rooms: Vec<WrittenNamespace>,
}

#[derive(Deserialize)]
struct WrittenNamespace {
    exclusive: bool,
    regex: String,
}

impl AppService {
    /// Parses and validates one registration file's text for a node named
    /// `server_name`.
    pub fn parse(text: &str, server_name: &str) -> Result<AppService, String> {
        let written: Written = serde_yaml_ng::from_str(text).map_err(|error| error.to_string())?;
        let required = |value: Option<String>, key: &str| {
            value.filter(|value| !value.is_empty()).ok_or_else(|| format!("`{key}` is required"))
        };
        let id = required(written.id, "id")?;
        let as_token = required(written.as_token, "as_token")?;
        let hs_token = required(written.hs_token, "hs_token")?;
        let localpart = required(written.sender_localpart, "sender_localpart")?;
        let url = written.url.ok_or("`url` is required (it may be null)")?;
        if let Some(url) = &url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("url {url:?} must start with http:// or https://"));
            }
        }
        // Bridges make the service's user up at random, in upper and lower
        // case (mautrix-python: `secrets.token_urlsafe`), so the historical
        // grammar applies, as for any existing user; Synapse asks only that
        // it need no URL encoding, which the characters below never do.
        // Spec: <https://spec.matrix.org/latest/appendices/#historical-user-ids>.
        let localpart_ok = localpart
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-' | '/' | '+' | '~'))
            && UserId::parse(&format!("@{localpart}:{server_name}")).is_ok();
        if !localpart_ok {
            return Err(format!("sender_localpart {localpart:?} is not a valid user name"));
        }
        let namespaces = written.namespaces;
        Ok(AppService {
            id,
            url,
            as_token,
            hs_token,
            sender: format!("@{localpart}:{server_name}"),
            users: compile(namespaces.users, "users")?,
            aliases: compile(namespaces.aliases, "aliases")?,
            rooms: compile(namespaces.rooms, "rooms")?,
            rate_limited: written.rate_limited,
            protocols: written.protocols,
            receive_ephemeral: written.receive_ephemeral.or(written.push_ephemeral).unwrap_or(false),
        })
    }

    /// Whether the service may act as `user_id`: its own user or one its
    /// user namespace matches (exclusive or not).
    pub fn is_interested_in_user(&self, user_id: &str) -> bool {
        user_id == self.sender || matches_any(&self.users, user_id)
    }

    /// Whether the service claims `user_id` for itself alone.
    pub fn claims_user(&self, user_id: &str) -> bool {
        user_id == self.sender || self.has_exclusive_user(user_id)
    }

    /// Whether an exclusive user namespace of the service matches `user_id`
    /// (a bridge's ghost; the service's own user is not one).
    pub fn has_exclusive_user(&self, user_id: &str) -> bool {
        self.users.iter().any(|ns| ns.exclusive && ns.regex.is_match(user_id))
    }

    /// Whether the alias namespace matches `alias`.
    pub fn is_interested_in_alias(&self, alias: &str) -> bool {
        matches_any(&self.aliases, alias)
    }

    /// Whether the service claims `alias` for itself alone.
    pub fn claims_alias(&self, alias: &str) -> bool {
        self.aliases.iter().any(|ns| ns.exclusive && ns.regex.is_match(alias))
    }

    /// Whether the room namespace matches `room_id`.
    pub fn is_interested_in_room(&self, room_id: &str) -> bool {
        matches_any(&self.rooms, room_id)
    }
}

impl Namespace {
    /// The regex as the registration wrote it (without the anchor added).
    pub fn pattern(&self) -> &str {
        let anchored = self.regex.as_str();
        anchored.strip_prefix("^(?:").and_then(|rest| rest.strip_suffix(')')).unwrap_or(anchored)
    }
}

fn matches_any(namespaces: &[Namespace], value: &str) -> bool {
    namespaces.iter().any(|ns| ns.regex.is_match(value))
}

fn compile(written: Vec<WrittenNamespace>, kind: &str) -> Result<Vec<Namespace>, String> {
    if MAX_NAMESPACE_ENTRIES < written.len() {
        return Err(format!("namespaces.{kind}: at most {MAX_NAMESPACE_ENTRIES} entries"));
    }
    written
        .into_iter()
        .map(|entry| {
            if MAX_REGEX_LENGTH < entry.regex.len() {
                return Err(format!("namespaces.{kind}: a regex longer than {MAX_REGEX_LENGTH} bytes"));
            }
            let regex = RegexBuilder::new(&format!("^(?:{})", entry.regex))
                .size_limit(MAX_REGEX_SIZE)
                .build()
                .map_err(|error| format!("namespaces.{kind}: bad regex {:?}: {error}", entry.regex))?;
            Ok(Namespace { exclusive: entry.exclusive, regex })
        })
        .collect()
}

/// Parses every registration a node has, each given with where it comes
/// from (named in errors), and checks them against each other: the one
/// validation start-up, SIGHUP and `hearth appservice add` share.
pub fn parse_all<'a>(
    registrations: impl IntoIterator<Item = (&'a str, &'a str)>,
    server_name: &str,
) -> Result<Vec<AppService>, String> {
    let services = registrations
        .into_iter()
        .map(|(source, text)| {
            AppService::parse(text, server_name)
                .map_err(|error| format!("application service {source}: {error}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&services)?;
    Ok(services)
}

/// Checks services against each other: ids and both tokens unique (a token
/// names one service), as Synapse refuses to start otherwise.
pub fn check_unique(services: &[AppService]) -> Result<(), String> {
    for (index, service) in services.iter().enumerate() {
        for earlier in &services[..index] {
            if earlier.id == service.id {
                return Err(format!("two application services have the id {:?}", service.id));
            }
            if earlier.as_token == service.as_token || earlier.as_token == service.hs_token {
                return Err(format!(
                    "application services {:?} and {:?} share a token",
                    earlier.id, service.id
                ));
            }
            if earlier.hs_token == service.hs_token || earlier.hs_token == service.as_token {
                return Err(format!(
                    "application services {:?} and {:?} share a token",
                    earlier.id, service.id
                ));
            }
        }
        if service.as_token == service.hs_token {
            return Err(format!("application service {:?}: as_token and hs_token must differ", service.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r#"
id: telegram
url: http://127.0.0.1:29317
as_token: the_as_token
hs_token: the_hs_token
sender_localpart: telegrambot
namespaces:
  users:
    - exclusive: true
      regex: '@telegram_.*:example\.org'
  aliases:
    - exclusive: false
      regex: '#telegram_.+:example\.org'
  rooms: []
rate_limited: false
protocols: [telegram]
de.sorunome.msc2409.push_ephemeral: true
"#;

    fn bridge() -> AppService {
        AppService::parse(BRIDGE, "example.org").unwrap()
    }

    #[test]
    fn a_bridge_file_parses() {
        let service = bridge();
        assert_eq!(service.id, "telegram");
        assert_eq!(service.url.as_deref(), Some("http://127.0.0.1:29317"));
        assert_eq!(service.sender, "@telegrambot:example.org");
        assert!(!service.rate_limited);
        assert!(service.receive_ephemeral);
        assert_eq!(service.protocols, ["telegram"]);
    }

    #[test]
    fn namespaces_match_from_the_start() {
        let service = bridge();
        assert!(service.is_interested_in_user("@telegram_123:example.org"));
        assert!(service.claims_user("@telegram_123:example.org"));
        assert!(service.has_exclusive_user("@telegram_123:example.org"));
        assert!(!service.has_exclusive_user("@telegrambot:example.org"));
        assert!(!service.has_exclusive_user("@alice:example.org"));
        assert!(service.is_interested_in_user("@telegrambot:example.org"));
        assert!(!service.is_interested_in_user("@alice:example.org"));
        assert!(!service.is_interested_in_user("@x@telegram_1:example.org"));
        assert!(service.is_interested_in_alias("#telegram_chat:example.org"));
        assert!(!service.claims_alias("#telegram_chat:example.org"));
        assert!(!service.is_interested_in_room("!abc:example.org"));
    }

    #[test]
    fn url_may_be_null_but_not_missing() {
        let null = BRIDGE.replace("url: http://127.0.0.1:29317", "url: null");
        assert_eq!(AppService::parse(&null, "example.org").unwrap().url, None);
        let missing = BRIDGE.replace("url: http://127.0.0.1:29317\n", "");
        assert!(AppService::parse(&missing, "example.org").unwrap_err().contains("url"));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for (from, to, reason) in [
            ("'@telegram_.*:example\\.org'", "'@telegram_(:example'", "bad regex"),
            ("as_token: the_as_token\n", "", "as_token"),
            ("sender_localpart: telegrambot", "sender_localpart: Telegram Bot", "sender_localpart"),
            ("url: http://127.0.0.1:29317", "url: ftp://127.0.0.1", "http"),
            ("exclusive: true", "exclusive: maybe", "exclusive"),
        ] {
            let text = BRIDGE.replace(from, to);
            let error = AppService::parse(&text, "example.org").unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
        let huge = BRIDGE.replace("'@telegram_.*:example\\.org'", "'(a{1000}){1000}'");
        assert!(AppService::parse(&huge, "example.org").is_err());
    }

    #[test]
    fn a_random_mixed_case_sender_localpart_is_taken() {
        // What mautrix-python's `-g` writes: `secrets.token_urlsafe(48)`.
        let localpart = "Ow2kX9-_aZ0q";
        let text = BRIDGE.replace("sender_localpart: telegrambot", &format!("sender_localpart: {localpart}"));
        assert_eq!(
            AppService::parse(&text, "example.org").unwrap().sender,
            format!("@{localpart}:example.org")
        );
        let long = BRIDGE
            .replace("sender_localpart: telegrambot", &format!("sender_localpart: {}", "a".repeat(300)));
        assert!(AppService::parse(&long, "example.org").unwrap_err().contains("sender_localpart"));
        for bad in ["a%20b", "a?b", "a#b", "a&b"] {
            let text = BRIDGE.replace("sender_localpart: telegrambot", &format!("sender_localpart: '{bad}'"));
            assert!(AppService::parse(&text, "example.org").is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_read_back_as_written() {
        let service = bridge();
        assert_eq!(service.users[0].pattern(), "@telegram_.*:example\\.org");
        assert_eq!(service.aliases[0].pattern(), "#telegram_.+:example\\.org");
    }

    #[test]
    fn all_registrations_are_checked_together_and_named_in_errors() {
        let other = BRIDGE.replace("id: telegram", "id: other");
        let error = parse_all([("a.yaml", BRIDGE), ("b.yaml", other.as_str())], "example.org").unwrap_err();
        assert!(error.contains("share a token"), "{error}");
        let broken = BRIDGE.replace("'@telegram_.*:example\\.org'", "'@x('");
        let error = parse_all([("a.yaml", BRIDGE), ("b.yaml", broken.as_str())], "example.org").unwrap_err();
        assert!(error.starts_with("application service b.yaml: namespaces.users: bad regex"), "{error}");
        let apart = other.replace("the_as_token", "as2").replace("the_hs_token", "hs2");
        assert_eq!(parse_all([("a", BRIDGE), ("b", apart.as_str())], "example.org").unwrap().len(), 2);
    }

    #[test]
    fn ids_and_tokens_are_unique() {
        let first = bridge();
        let mut second = bridge();
        assert!(check_unique(&[first.clone(), second.clone()]).unwrap_err().contains("id"));
        second.id = "other".into();
        assert!(check_unique(&[first.clone(), second.clone()]).unwrap_err().contains("token"));
        second.as_token = "other_as".into();
        second.hs_token = "other_hs".into();
        assert!(check_unique(&[first.clone(), second]).is_ok());
        let mut same = first;
        same.hs_token = same.as_token.clone();
        assert!(check_unique(&[same]).is_err());
    }
}
