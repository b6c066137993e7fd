//! Matrix identifiers: server names, user IDs, room IDs, event IDs, room aliases.
//!
//! Each identifier is a newtype that can only be built by validating it, so a
//! function taking `&UserId` never re-checks. This module only parses strings;
//! it does not resolve servers or know which users exist.
//! Spec: <https://spec.matrix.org/latest/appendices/#identifier-grammar>.

use std::fmt;

/// Spec: user IDs, room IDs, event IDs and room aliases, sigil and domain
/// included, MUST NOT exceed 255 bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 255;

/// Spec grammar: `dns-name = 1*255dns-char`.
pub const MAX_DNS_NAME_BYTES: usize = 255;

/// Spec grammar: `IPv6address = 2*45IPv6char`.
pub const MAX_IPV6_CHARS: usize = 45;

/// A sha256 digest (32 bytes) in unpadded base64 is 43 characters: the opaque
/// part of room v12 room IDs and of room v3+ event IDs.
pub const HASH_BASE64_CHARS: usize = 43;

/// Why a string is not a valid identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    /// The identifier does not start with its sigil (`@`, `!`, `$`, `#`).
    MissingSigil(char),
    /// Longer than [`MAX_IDENTIFIER_BYTES`].
    TooLong,
    /// No `:server` part where one is required.
    MissingServerName,
    /// The server name does not follow the grammar.
    InvalidServerName,
    /// The port is not a number in 1..=65535.
    InvalidPort,
    /// The localpart (or opaque part) has characters the grammar forbids.
    InvalidLocalpart,
    /// The localpart is empty where it must not be.
    EmptyLocalpart,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::MissingSigil(sigil) => write!(f, "identifier must start with `{sigil}`"),
            IdError::TooLong => write!(f, "identifier longer than {MAX_IDENTIFIER_BYTES} bytes"),
            IdError::MissingServerName => f.write_str("identifier has no server name"),
            IdError::InvalidServerName => f.write_str("invalid server name"),
            IdError::InvalidPort => f.write_str("invalid port in server name"),
            IdError::InvalidLocalpart => f.write_str("invalid characters in localpart"),
            IdError::EmptyLocalpart => f.write_str("empty localpart"),
        }
    }
}

impl std::error::Error for IdError {}

/// Checks a server name: `hostname [ ":" port ]` where hostname is a DNS name,
/// a dotted-quad IPv4 literal or a bracketed IPv6 literal.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#server-name>. Server names
/// are case-sensitive, so nothing is lowercased here.
pub fn validate_server_name(name: &str) -> Result<(), IdError> {
    let (host, port) = split_host_port(name)?;
    if let Some(port) = port {
        validate_port(port)?;
    }
    if let Some(inner) = host.strip_prefix('[') {
        let address = inner.strip_suffix(']').ok_or(IdError::InvalidServerName)?;
        return validate_ipv6(address);
    }
    if looks_like_ipv4(host) {
        return validate_ipv4(host);
    }
    validate_dns_name(host)
}

/// Splits `host[:port]`, minding the colons inside an IPv6 literal.
fn split_host_port(name: &str) -> Result<(&str, Option<&str>), IdError> {
    if name.starts_with('[') {
        let close = name.find(']').ok_or(IdError::InvalidServerName)?;
        let (host, rest) = name.split_at(close + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(IdError::InvalidServerName),
            },
        };
    }
    match name.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((name, None)),
    }
}

fn validate_port(port: &str) -> Result<(), IdError> {
    // Grammar: `port = 1*5DIGIT`; a TCP port is also never 0 or above 65535.
    let digits_only = port.bytes().all(|byte| byte.is_ascii_digit());
    if !(1..=5).contains(&port.len()) || !digits_only {
        return Err(IdError::InvalidPort);
    }
    match port.parse::<u32>() {
        Ok(number) if (1..=65_535).contains(&number) => Ok(()),
        _ => Err(IdError::InvalidPort),
    }
}

/// Whether `host` is shaped like `1*3DIGIT "." ...` four times, so that it must
/// be judged as an IPv4 literal rather than a DNS name.
fn looks_like_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
}

fn validate_ipv4(host: &str) -> Result<(), IdError> {
    // Spec: four decimal numbers in the range 0 to 255.
    let valid = host.split('.').all(|part| part.len() <= 3 && part.parse::<u8>().is_ok());
    if valid { Ok(()) } else { Err(IdError::InvalidServerName) }
}

fn validate_ipv6(address: &str) -> Result<(), IdError> {
    // Spec: RFC 3513 section 2.2, which std's parser implements (including a
    // trailing embedded IPv4 address); the length bound is the grammar's.
    if (2..=MAX_IPV6_CHARS).contains(&address.len()) && address.parse::<std::net::Ipv6Addr>().is_ok() {
        Ok(())
    } else {
        Err(IdError::InvalidServerName)
    }
}

fn validate_dns_name(host: &str) -> Result<(), IdError> {
    // Grammar: `dns-name = 1*255dns-char`, `dns-char = DIGIT / ALPHA / "-" / "."`.
    let valid = (1..=MAX_DNS_NAME_BYTES).contains(&host.len())
        && host.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
    if valid { Ok(()) } else { Err(IdError::InvalidServerName) }
}

/// Checks a localpart for a user we register now: only `a-z 0-9 . _ = - / +`.
///
/// Spec: <https://spec.matrix.org/latest/appendices/#user-identifiers>.
pub fn validate_new_localpart(localpart: &str) -> Result<(), IdError> {
    if localpart.is_empty() {
        return Err(IdError::EmptyLocalpart);
    }
    let valid = localpart
        .bytes()
        .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if valid { Ok(()) } else { Err(IdError::InvalidLocalpart) }
}

/// Checks a user localpart as the spec's historical grammar allows it for
/// users that already exist: one or more printable ASCII characters except
/// `:` (`extended_user_id_char = %x21-39 / %x3B-7E`), so uppercase and
/// punctuation pass while spaces, control characters and anything beyond
/// ASCII never do. Spec: <https://spec.matrix.org/latest/appendices/#historical-user-ids>.
fn validate_historical_user_localpart(localpart: &str) -> Result<(), IdError> {
    if localpart.is_empty() {
        return Err(IdError::EmptyLocalpart);
    }
    let valid = localpart.bytes().all(|byte| matches!(byte, 0x21..=0x39 | 0x3B..=0x7E));
    if valid { Ok(()) } else { Err(IdError::InvalidLocalpart) }
}

/// Checks the opaque part of a room ID, a v1/v2 event ID or a room alias:
/// any code point except `:` and NUL, possibly empty.
/// Spec: <https://spec.matrix.org/latest/appendices/#room-ids>,
/// <https://spec.matrix.org/latest/appendices/#room-aliases>.
fn validate_historical_localpart(localpart: &str) -> Result<(), IdError> {
    if localpart.contains(['\0', ':']) { Err(IdError::InvalidLocalpart) } else { Ok(()) }
}

/// Splits `&localpart:server` after checking the sigil and the length.
fn split_sigil_id(text: &str, sigil: char) -> Result<(&str, &str), IdError> {
    if MAX_IDENTIFIER_BYTES < text.len() {
        return Err(IdError::TooLong);
    }
    let rest = text.strip_prefix(sigil).ok_or(IdError::MissingSigil(sigil))?;
    let (localpart, server) = rest.split_once(':').ok_or(IdError::MissingServerName)?;
    validate_server_name(server)?;
    Ok((localpart, server))
}

/// A validated server name, e.g. `matrix.org:8448`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    /// Validates `text` as a server name.
    pub fn parse(text: &str) -> Result<ServerName, IdError> {
        validate_server_name(text)?;
        Ok(ServerName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hostname (IPv6 literals keep their brackets), without the port.
    pub fn host(&self) -> &str {
        split_host_port(&self.0).map_or(&self.0, |(host, _)| host)
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        split_host_port(&self.0).ok().and_then(|(_, port)| port).and_then(|port| port.parse().ok())
    }
}

/// A user ID, `@localpart:server`. Spec: <https://spec.matrix.org/latest/appendices/#user-identifiers>.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Parses a user ID as clients and servers name users, historical
    /// localparts (uppercase, punctuation) included.
    pub fn parse(text: &str) -> Result<UserId, IdError> {
        let (localpart, _) = split_sigil_id(text, '@')?;
        validate_historical_user_localpart(localpart)?;
        Ok(UserId(text.to_owned()))
    }

    /// Builds the ID of a user we register now, with the strict localpart grammar.
    pub fn new_local(localpart: &str, server: &ServerName) -> Result<UserId, IdError> {
        validate_new_localpart(localpart)?;
        let text = format!("@{localpart}:{}", server.as_str());
        if MAX_IDENTIFIER_BYTES < text.len() {
            return Err(IdError::TooLong);
        }
        Ok(UserId(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part between `@` and the first `:`.
    pub fn localpart(&self) -> &str {
        split_once_after_sigil(&self.0).0
    }

    /// The server that allocated this user ID.
    pub fn server_name(&self) -> &str {
        split_once_after_sigil(&self.0).1
    }

    /// Whether the localpart follows today's grammar. Spec: IDs outside
    /// U+0021..U+007E or with an empty localpart are "non-compliant".
    pub fn is_historical(&self) -> bool {
        validate_new_localpart(self.localpart()).is_err()
    }
}

/// A room ID: `!opaque:server` (room v1 to v11) or `!hash` (room v12, the
/// create event's reference hash). Spec: <https://spec.matrix.org/latest/appendices/#room-ids>.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// Parses either form. Without a `:` the opaque part must be 43 URL-safe
    /// base64 characters, the only domain-less form the spec defines.
    pub fn parse(text: &str) -> Result<RoomId, IdError> {
        if text.contains(':') {
            let (localpart, _) = split_sigil_id(text, '!')?;
            validate_historical_localpart(localpart)?;
        } else {
            let opaque = text.strip_prefix('!').ok_or(IdError::MissingSigil('!'))?;
            validate_hash(opaque, is_url_safe_base64_char)?;
        }
        Ok(RoomId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server of a `!opaque:server` room ID; `None` for room v12 IDs.
    pub fn server_name(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, server)| server)
    }
}

/// An event ID: `$opaque:server` (room v1, v2) or `$hash` (v3 standard base64,
/// v4+ URL-safe). Spec: <https://spec.matrix.org/latest/appendices/#event-ids>.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    /// Parses any of the three forms.
    pub fn parse(text: &str) -> Result<EventId, IdError> {
        if text.contains(':') {
            let (localpart, _) = split_sigil_id(text, '$')?;
            validate_historical_localpart(localpart)?;
        } else {
            let opaque = text.strip_prefix('$').ok_or(IdError::MissingSigil('$'))?;
            validate_hash(opaque, |byte| is_url_safe_base64_char(byte) || byte == b'+' || byte == b'/')?;
        }
        Ok(EventId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server of a room v1/v2 event ID; `None` for hash-based IDs.
    pub fn server_name(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, server)| server)
    }
}

/// A room alias, `#alias:server`. Spec: <https://spec.matrix.org/latest/appendices/#room-aliases>.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomAliasId(String);

impl RoomAliasId {
    pub fn parse(text: &str) -> Result<RoomAliasId, IdError> {
        let (alias, _) = split_sigil_id(text, '#')?;
        validate_historical_localpart(alias)?;
        Ok(RoomAliasId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part between `#` and the first `:`.
    pub fn alias(&self) -> &str {
        split_once_after_sigil(&self.0).0
    }

    /// The server that holds this alias.
    pub fn server_name(&self) -> &str {
        split_once_after_sigil(&self.0).1
    }
}

/// `(localpart, server)` of an already validated `&localpart:server`.
fn split_once_after_sigil(text: &str) -> (&str, &str) {
    // Sigils are ASCII, so byte 1 is a char boundary.
    text[1..].split_once(':').unwrap_or((&text[1..], ""))
}

fn is_url_safe_base64_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

fn validate_hash(opaque: &str, allowed: impl Fn(u8) -> bool) -> Result<(), IdError> {
    if opaque.is_empty() {
        return Err(IdError::EmptyLocalpart);
    }
    if opaque.len() != HASH_BASE64_CHARS || !opaque.bytes().all(allowed) {
        return Err(IdError::InvalidLocalpart);
    }
    Ok(())
}

macro_rules! impl_display {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}

impl_display!(ServerName, UserId, RoomId, EventId, RoomAliasId);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/identifiers.json"));

    /// Input, then `(localpart, server, historical)` or the error.
    type UserIdCase = (&'static str, Result<(&'static str, &'static str, bool), IdError>);

    /// Input, then `(alias, server)` or the error.
    type AliasCase = (&'static str, Result<(&'static str, &'static str), IdError>);

    #[test]
    fn spec_valid_server_names() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let names = vectors["valid_server_names"].as_array().unwrap();
        assert_eq!(names.len(), 6);
        for name in names {
            let name = name.as_str().unwrap();
            assert_eq!(validate_server_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn server_names() {
        use IdError::*;
        let cases: &[(&str, Result<(), IdError>)] = &[
            ("localhost", Ok(())),
            ("MATRIX.org", Ok(())),
            ("a-b.example.com:65535", Ok(())),
            ("example.com:1", Ok(())),
            ("[::1]", Ok(())),
            ("[::1]:8448", Ok(())),
            ("[::ffff:1.2.3.4]", Ok(())),
            ("255.255.255.255", Ok(())),
            ("1.2.3.4.5", Ok(())), // a DNS name made of digits, as the grammar allows
            ("", Err(InvalidServerName)),
            ("256.1.1.1", Err(InvalidServerName)),
            ("1.2.3.0004", Err(InvalidServerName)),
            ("exa_mple.com", Err(InvalidServerName)),
            ("exämple.com", Err(InvalidServerName)),
            ("example.com:", Err(InvalidPort)),
            ("example.com:0", Err(InvalidPort)),
            ("example.com:65536", Err(InvalidPort)),
            ("example.com:123456", Err(InvalidPort)),
            ("example.com:+80", Err(InvalidPort)),
            ("example.com:80:80", Err(InvalidPort)),
            ("[::1", Err(InvalidServerName)),
            ("[::1]x", Err(InvalidServerName)),
            ("[1:2:3]", Err(InvalidServerName)),
            ("[]", Err(InvalidServerName)),
            ("::1", Err(InvalidPort)),
        ];
        for (name, expected) in cases {
            assert_eq!(&validate_server_name(name), expected, "{name}");
        }
        let too_long = "a".repeat(MAX_DNS_NAME_BYTES + 1);
        assert_eq!(validate_server_name(&too_long), Err(InvalidServerName));
    }

    #[test]
    fn server_name_host_and_port() {
        let cases: &[(&str, &str, Option<u16>)] = &[
            ("matrix.org", "matrix.org", None),
            ("matrix.org:8888", "matrix.org", Some(8888)),
            ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", Some(5678)),
            ("1.2.3.4", "1.2.3.4", None),
        ];
        for (text, host, port) in cases {
            let name = ServerName::parse(text).unwrap();
            assert_eq!((name.host(), name.port()), (*host, *port), "{text}");
        }
    }

    #[test]
    fn user_ids() {
        use IdError::*;
        let cases: &[UserIdCase] = &[
            ("@alice:example.com", Ok(("alice", "example.com", false))),
            ("@a.b_c=d-e/f+g:[::1]:8448", Ok(("a.b_c=d-e/f+g", "[::1]:8448", false))),
            ("@Alice:example.com", Ok(("Alice", "example.com", true))),
            ("@A!~\"#$;<>[]{}|:example.com", Ok(("A!~\"#$;<>[]{}|", "example.com", true))),
            ("@:example.com", Err(EmptyLocalpart)),
            ("@日本:example.com", Err(InvalidLocalpart)),
            ("@é:x", Err(InvalidLocalpart)),
            ("@A B:x", Err(InvalidLocalpart)),
            ("@a\tb:example.com", Err(InvalidLocalpart)),
            ("@a\u{1}b:example.com", Err(InvalidLocalpart)),
            ("@a\u{7f}b:example.com", Err(InvalidLocalpart)),
            ("alice:example.com", Err(MissingSigil('@'))),
            ("@alice", Err(MissingServerName)),
            ("@alice:", Err(InvalidServerName)),
            ("@alice:exa mple", Err(InvalidServerName)),
            ("@a\0b:example.com", Err(InvalidLocalpart)),
            ("@user:matrix.org:80:80", Err(InvalidPort)),
        ];
        for (text, expected) in cases {
            let parsed = UserId::parse(text)
                .map(|id| (id.localpart().to_owned(), id.server_name().to_owned(), id.is_historical()));
            let expected = expected
                .clone()
                .map(|(local, server, historical)| (local.to_owned(), server.to_owned(), historical));
            assert_eq!(parsed, expected, "{text:?}");
        }
        let long = format!("@{}:example.com", "a".repeat(MAX_IDENTIFIER_BYTES));
        assert_eq!(UserId::parse(&long), Err(TooLong));
    }

    #[test]
    fn user_ids_differ_by_server_case() {
        let lower = UserId::parse("@user:matrix.org").unwrap();
        let upper = UserId::parse("@user:MATRIX.ORG").unwrap();
        assert_ne!(lower, upper);
    }

    #[test]
    fn new_local_users_use_the_strict_grammar() {
        let server = ServerName::parse("hearth.example").unwrap();
        let cases: &[(&str, Result<&str, IdError>)] = &[
            ("alice", Ok("@alice:hearth.example")),
            ("a.b_c=d-e/f+g", Ok("@a.b_c=d-e/f+g:hearth.example")),
            ("0", Ok("@0:hearth.example")),
            ("", Err(IdError::EmptyLocalpart)),
            ("Alice", Err(IdError::InvalidLocalpart)),
            ("al ice", Err(IdError::InvalidLocalpart)),
            ("al:ice", Err(IdError::InvalidLocalpart)),
            ("ålice", Err(IdError::InvalidLocalpart)),
        ];
        for (localpart, expected) in cases {
            let built = UserId::new_local(localpart, &server);
            assert_eq!(built.as_ref().map(UserId::as_str), expected.as_ref().map(|s| *s));
        }
        let long = "a".repeat(MAX_IDENTIFIER_BYTES);
        assert_eq!(UserId::new_local(&long, &server), Err(IdError::TooLong));
    }

    #[test]
    fn room_ids() {
        let hash = "a".repeat(HASH_BASE64_CHARS);
        let v12 = format!("!{hash}");
        let cases: &[(&str, Result<Option<&str>, IdError>)] = &[
            ("!abc:example.com", Ok(Some("example.com"))),
            ("!:example.com", Ok(Some("example.com"))),
            ("!abc:example.com:8448", Ok(Some("example.com:8448"))),
            (&v12, Ok(None)),
            ("!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", Ok(None)),
            ("!", Err(IdError::EmptyLocalpart)),
            ("!short", Err(IdError::InvalidLocalpart)),
            ("!Rqnc+F/dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", Err(IdError::InvalidLocalpart)),
            ("abc:example.com", Err(IdError::MissingSigil('!'))),
            ("!abc:bad_server", Err(IdError::InvalidServerName)),
        ];
        for (text, expected) in cases {
            let parsed = RoomId::parse(text);
            assert_eq!(
                parsed.as_ref().map(RoomId::server_name),
                expected.as_ref().map(|server| *server),
                "{text}"
            );
        }
    }

    #[test]
    fn event_ids() {
        let cases: &[(&str, Result<Option<&str>, IdError>)] = &[
            ("$0:domain", Ok(Some("domain"))),
            ("$abc123:example.com:8448", Ok(Some("example.com:8448"))),
            ("$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", Ok(None)),
            ("$Rqnc+F/dvnEYJTyHq/iKxU2bZ1CI92+kuZq3a5lr5Zg", Ok(None)),
            ("$", Err(IdError::EmptyLocalpart)),
            ("$abc", Err(IdError::InvalidLocalpart)),
            ("$a\0:domain", Err(IdError::InvalidLocalpart)),
            ("abc:domain", Err(IdError::MissingSigil('$'))),
        ];
        for (text, expected) in cases {
            let parsed = EventId::parse(text);
            assert_eq!(
                parsed.as_ref().map(EventId::server_name),
                expected.as_ref().map(|server| *server),
                "{text}"
            );
        }
    }

    #[test]
    fn room_aliases() {
        let cases: &[AliasCase] = &[
            ("#room:example.com", Ok(("room", "example.com"))),
            ("#Straße:example.com:443", Ok(("Straße", "example.com:443"))),
            ("#:example.com", Ok(("", "example.com"))),
            ("#room", Err(IdError::MissingServerName)),
            ("@room:example.com", Err(IdError::MissingSigil('#'))),
            ("#ro\0om:example.com", Err(IdError::InvalidLocalpart)),
        ];
        for (text, expected) in cases {
            let parsed = RoomAliasId::parse(text);
            assert_eq!(
                parsed.as_ref().map(|alias| (alias.alias(), alias.server_name())),
                expected.as_ref().map(|pair| *pair),
                "{text}"
            );
        }
    }
}
