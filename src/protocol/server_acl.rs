//! Server access control lists (`m.room.server_acl`): which servers may
//! take part in a room.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-access-control-lists-acls-for-rooms>.

use serde_json::Value;

/// Matches `*` (any run) and `?` (one character) globs, case-insensitively.
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some(('?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((wanted, rest)) => {
            text.first().is_some_and(|found| found.eq_ignore_ascii_case(wanted)) && glob(rest, &text[1..])
        }
    }
}

fn matches_any(list: Option<&Value>, host: &[char]) -> bool {
    list.and_then(Value::as_array).is_some_and(|patterns| {
        patterns.iter().filter_map(Value::as_str).any(|pattern| {
            let pattern: Vec<char> = pattern.chars().collect();
            glob(&pattern, host)
        })
    })
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
    let host = host_of(server_name);
    let allow_ip_literals = content.get("allow_ip_literals").and_then(Value::as_bool).unwrap_or(true);
    let is_ip_literal = host.parse::<std::net::IpAddr>().is_ok();
    if is_ip_literal && !allow_ip_literals {
        return false;
    }
    let host: Vec<char> = host.chars().collect();
    if matches_any(content.get("deny"), &host) {
        return false;
    }
    matches_any(content.get("allow"), &host)
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
}
