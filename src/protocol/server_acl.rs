//! Server access control lists (`m.room.server_acl`): which servers may
//! take part in a room.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-access-control-lists-acls-for-rooms>.

use serde_json::Value;

use super::glob::{self, Glob};
use super::identifiers::MAX_DNS_NAME_BYTES;

/// Patterns longer than this are skipped. A host name is at most
/// [`MAX_DNS_NAME_BYTES`], so a longer pattern is mostly `*`s; skipping it
/// bounds the work one check does (the event itself is at most 64 KiB, and
/// every inbound federation request for the room runs the check).
pub const MAX_PATTERN_BYTES: usize = 2 * MAX_DNS_NAME_BYTES;

/// An ACL's patterns, compiled once to check many servers.
#[derive(Clone, Debug)]
pub struct Acl {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
    allow_ip_literals: bool,
}

impl Acl {
    /// Reads an `m.room.server_acl` content. Missing or malformed lists are
    /// empty (an empty `allow` lets no one in), non-string entries and
    /// patterns over [`MAX_PATTERN_BYTES`] are skipped.
    pub fn new(content: &Value) -> Acl {
        let compile = |key: &str| -> Vec<Glob> {
            let patterns = content.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            patterns
                .iter()
                .filter_map(Value::as_str)
                .filter(|pattern| pattern.len() <= MAX_PATTERN_BYTES)
                .map(|pattern| Glob::new(pattern, glob::SERVER_ACL))
                .collect()
        };
        Acl {
            allow: compile("allow"),
            deny: compile("deny"),
            allow_ip_literals: content.get("allow_ip_literals").and_then(Value::as_bool).unwrap_or(true),
        }
    }

    /// Whether `server_name` may take part. Each pattern costs a scan of the
    /// host (at most 255 characters) in 64-character steps.
    pub fn allows(&self, server_name: &str) -> bool {
        let host = host_of(server_name);
        let is_ip_literal = host.parse::<std::net::IpAddr>().is_ok();
        if is_ip_literal && !self.allow_ip_literals {
            return false;
        }
        if self.deny.iter().any(|pattern| pattern.matches(host)) {
            return false;
        }
        self.allow.iter().any(|pattern| pattern.matches(host))
    }
}

/// The host of a server name, without its port.
fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    server_name.rsplit_once(':').map_or(server_name, |(host, _)| host)
}

/// Whether `server_name` may take part under the ACL `content`.
pub fn allowed(content: &Value, server_name: &str) -> bool {
    Acl::new(content).allows(server_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_wins_and_empty_allow_denies_everyone() {
        let acl = json!({"allow": ["*"], "deny": ["*.evil.example", "evil.example"]});
        assert!(allowed(&acl, "good.example:8448"));
        assert!(!allowed(&acl, "evil.example"));
        assert!(!allowed(&acl, "sub.evil.example:443"));
        assert!(!allowed(&json!({"deny": []}), "good.example"));
    }

    #[test]
    fn ip_literals_and_globs() {
        let acl = json!({"allow": ["*"], "allow_ip_literals": false});
        assert!(!allowed(&acl, "1.2.3.4:8448"));
        assert!(!allowed(&acl, "[::1]:8448"));
        assert!(allowed(&json!({"allow": ["?.example"]}), "a.example"));
        assert!(!allowed(&json!({"allow": ["?.example"]}), "ab.example"));
        assert!(allowed(&json!({"allow": ["LOCALHOST"]}), "localhost:9000"));
    }

    /// A hostile room creator's ACL: backtracking patterns, and as many
    /// worst-case ones as a 64 KiB event holds, against the longest host.
    /// Each check stays bounded (it runs on every inbound request).
    #[test]
    fn hostile_patterns_cost_little() {
        let host = format!("{}.example", "a".repeat(200));
        let started = std::time::Instant::now();
        let acl = json!({"allow": ["*"], "deny": ["*a*a*a*a*a*a*a*a*b"]});
        assert!(allowed(&acl, &host));
        let single = started.elapsed();
        let worst = format!("*{}b*", "a".repeat(100));
        let deny: Vec<String> = (0..65_536 / (worst.len() + 3)).map(|_| worst.clone()).collect();
        let acl = json!({"allow": ["*"], "deny": deny});
        let started = std::time::Instant::now();
        assert!(allowed(&acl, &host));
        let full = started.elapsed();
        let too_long = json!({"allow": ["*"], "deny": ["*".repeat(MAX_PATTERN_BYTES + 1)]});
        assert!(allowed(&too_long, &host), "patterns over the limit are skipped");
        eprintln!("one pathological pattern: {single:?}; a 64 KiB ACL of worst cases: {full:?}");
        // Microseconds and milliseconds in a release build (a backtracking
        // matcher takes minutes on the first); the bounds leave room for a
        // loaded debug build.
        assert!(single < std::time::Duration::from_millis(100), "{single:?}");
        assert!(full < std::time::Duration::from_secs(3), "{full:?}");
    }
}
