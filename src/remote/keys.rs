//! Server signing keys over federation: publishing ours
//! (`GET /_matrix/key/v2/server`), fetching and caching other servers' keys
//! (which `federation::keys` answers notary queries from).
//!
//! Keys are fetched directly from the server they belong to; we do not ask
//! a third-party notary. Spec:
//! <https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys>.

use std::time::Duration;

use http_types::Method;
use serde_json::{Map, Value, json};

use super::client;
use crate::error::{Error, Result};
use crate::protocol::signing::{self, PublicKey, SigningKey, sign_json, verify_json};
use crate::remote::Remote;
use crate::storage::{RemoteKey, now_ms};

/// Our published keys are declared valid this long (Synapse's default
/// refresh interval); other servers ask again after it.
const OWN_KEYS_VALIDITY_MS: i64 = 24 * 3600 * 1000;
/// Spec (room v5+): a key is trusted at most 7 days past its fetch, whatever
/// its `valid_until_ts` says.
const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// A server's keys are fetched at most once in this long, so that requests
/// naming an unknown key cannot make us fetch again and again.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// A key answer is a few hundred bytes; a server with many old keys stays far below this.
const MAX_KEY_RESPONSE_BYTES: usize = 64 * 1024;

/// Our `/_matrix/key/v2/server` answer, signed with our current key.
pub fn own_keys(app: &Remote) -> Result<Value> {
    let mut old_verify_keys = Map::new();
    for (key_id, seed, expired_ts) in app.storage().old_signing_keys()? {
        let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id);
        let key = SigningKey::from_seed(version, &seed)
            .map_err(|error| Error::Internal(format!("stored key {key_id} is corrupt: {error}")))?;
        old_verify_keys.insert(key_id, json!({"key": key.public_key_base64(), "expired_ts": expired_ts}));
    }
    let key = &app.signing_key;
    let mut answer = json!({
        "server_name": app.config.server_name,
        "valid_until_ts": now_ms() + OWN_KEYS_VALIDITY_MS,
        "verify_keys": { key.key_id.as_str(): {"key": key.public_key_base64()} },
        "old_verify_keys": old_verify_keys,
    });
    sign_json(&mut answer, &app.config.server_name, key)
        .map_err(|error| Error::Internal(format!("cannot sign our keys: {error}")))?;
    Ok(answer)
}

/// The keys a checked key answer holds.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedKeys {
    /// The answer's `valid_until_ts`, capped at 7 days from now.
    pub valid_until_ts: i64,
    pub keys: Vec<RemoteKey>,
}

/// Checks a `/_matrix/key/v2/server` answer of `server_name`: it names that
/// server, and every key in `verify_keys` signed it.
pub fn check_key_response(answer: &Value, server_name: &str, now: i64) -> Result<CheckedKeys, String> {
    if answer.get("server_name").and_then(Value::as_str) != Some(server_name) {
        return Err(format!("the answer is not about {server_name}"));
    }
    let valid_until_ts = answer.get("valid_until_ts").and_then(Value::as_i64).ok_or("no valid_until_ts")?;
    let valid_until_ts = valid_until_ts.min(now + MAX_KEY_VALIDITY_MS);
    let verify_keys = answer.get("verify_keys").and_then(Value::as_object).ok_or("no verify_keys")?;
    if verify_keys.is_empty() {
        return Err("verify_keys is empty".into());
    }
    let mut keys = Vec::new();
    for (key_id, entry) in verify_keys {
        let public_key = entry.get("key").and_then(Value::as_str).ok_or(format!("{key_id} has no key"))?;
        let parsed =
            signing::public_key_from_base64(public_key).map_err(|error| format!("{key_id}: {error}"))?;
        verify_json(answer, server_name, key_id, &parsed)
            .map_err(|error| format!("not signed with {key_id}: {error}"))?;
        keys.push(RemoteKey {
            key_id: key_id.clone(),
            public_key: public_key.to_string(),
            valid_until_ts: Some(valid_until_ts),
            expired_ts: None,
        });
    }
    if let Some(old) = answer.get("old_verify_keys").and_then(Value::as_object) {
        for (key_id, entry) in old {
            let (Some(public_key), Some(expired_ts)) =
                (entry.get("key").and_then(Value::as_str), entry.get("expired_ts").and_then(Value::as_i64))
            else {
                continue;
            };
            if verify_keys.contains_key(key_id) || signing::public_key_from_base64(public_key).is_err() {
                continue;
            }
            keys.push(RemoteKey {
                key_id: key_id.clone(),
                public_key: public_key.to_string(),
                valid_until_ts: None,
                expired_ts: Some(expired_ts),
            });
        }
    }
    Ok(CheckedKeys { valid_until_ts, keys })
}

/// Whether a cached key may check a signature made at `at_ts`.
fn usable(key: &RemoteKey, at_ts: i64) -> bool {
    key.valid_until_ts.is_some_and(|until| at_ts <= until)
        || key.expired_ts.is_some_and(|expired| at_ts < expired)
}

/// The public key `key_id` of `server_name`, usable for a signature made at
/// `at_ts`: from the cache, or fetched from the server.
pub async fn verify_key(app: &Remote, server_name: &str, key_id: &str, at_ts: i64) -> Result<PublicKey> {
    let unknown = || Error::NotFound(format!("no usable key {key_id} for {server_name}"));
    if server_name == app.config.server_name {
        if key_id == app.signing_key.key_id {
            return Ok(app.signing_key.key_pair.pk);
        }
        let own = own_keys(app)?;
        let expired = own["old_verify_keys"][key_id]["expired_ts"].as_i64().ok_or_else(unknown)?;
        let key = own["old_verify_keys"][key_id]["key"].as_str().ok_or_else(unknown)?;
        return if at_ts < expired {
            signing::public_key_from_base64(key).map_err(|error| Error::Internal(error.to_string()))
        } else {
            Err(unknown())
        };
    }
    let cached = app.storage().remote_server_key(server_name, key_id)?;
    let key = match cached {
        Some(key) if usable(&key, at_ts) => key,
        _ => {
            if app.federation.recent_key_fetches.get(server_name).is_some() {
                return Err(unknown());
            }
            fetch_keys(app, server_name).await?;
            app.storage()
                .remote_server_key(server_name, key_id)?
                .filter(|key| usable(key, at_ts))
                .ok_or_else(unknown)?
        }
    };
    signing::public_key_from_base64(&key.public_key).map_err(|error| Error::Internal(error.to_string()))
}

/// Fetches `server_name`'s keys from it, checks and caches them, and returns
/// its answer as received.
///
/// The fetch is remembered when it ends (not when it starts), so that a
/// second request arriving while the first fetch runs fetches too instead
/// of being refused.
pub async fn fetch_keys(app: &Remote, server_name: &str) -> Result<Value> {
    let result = fetch_and_store(app, server_name).await;
    app.federation.recent_key_fetches.insert(server_name, (), KEY_REFETCH_INTERVAL);
    result
}

async fn fetch_and_store(app: &Remote, server_name: &str) -> Result<Value> {
    let (status, answer) = client::request_with_limit(
        app,
        server_name,
        Method::Get,
        "/_matrix/key/v2/server",
        None,
        MAX_KEY_RESPONSE_BYTES,
    )
    .await?;
    if status != 200 {
        return Err(Error::matrix(
            502,
            "M_UNKNOWN",
            format!("{server_name} answered its key request with {status}"),
        ));
    }
    let checked = check_key_response(&answer, server_name, now_ms())
        .map_err(|error| Error::matrix(502, "M_UNKNOWN", format!("bad keys from {server_name}: {error}")))?;
    app.storage().store_server_keys(
        server_name,
        &answer.to_string(),
        checked.valid_until_ts,
        &checked.keys,
    )?;
    Ok(answer)
}

/// A server's key answer valid until at least `minimum_valid_until_ts`:
/// cached, else fetched; a stale cached answer if the fetch fails.
pub async fn server_keys(
    app: &Remote,
    server_name: &str,
    minimum_valid_until_ts: i64,
) -> Result<Option<Value>> {
    if server_name == app.config.server_name {
        return Ok(Some(own_keys(app)?));
    }
    let cached = app.storage().remote_key_response(server_name)?;
    let cached_value = cached.as_ref().and_then(|(text, _)| serde_json::from_str::<Value>(text).ok());
    if let Some((_, valid_until_ts)) = &cached {
        if minimum_valid_until_ts <= *valid_until_ts
            || app.federation.recent_key_fetches.get(server_name).is_some()
        {
            return Ok(cached_value);
        }
    } else if app.federation.recent_key_fetches.get(server_name).is_some() {
        return Ok(None);
    }
    match fetch_keys(app, server_name).await {
        Ok(answer) => Ok(Some(answer)),
        Err(error) => {
            log::debug!("notary: cannot fetch the keys of {server_name}: {error}");
            Ok(cached_value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_answer(key: &SigningKey, server: &str, valid_until_ts: i64) -> Value {
        let mut answer = json!({
            "server_name": server,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { key.key_id.as_str(): {"key": key.public_key_base64()} },
            "old_verify_keys": { "ed25519:old": {"key": key.public_key_base64(), "expired_ts": 5} },
        });
        sign_json(&mut answer, server, key).unwrap();
        answer
    }

    #[test]
    fn key_answers_are_checked() {
        let key = SigningKey::from_seed("1", &[9; 32]).unwrap();
        let now = 1_000;
        let answer = signed_answer(&key, "a.example", 2_000);
        let checked = check_key_response(&answer, "a.example", now).unwrap();
        assert_eq!(checked.valid_until_ts, 2_000);
        assert_eq!(checked.keys.len(), 2);
        assert_eq!(checked.keys[0].valid_until_ts, Some(2_000));
        assert_eq!(
            checked.keys[1],
            RemoteKey {
                key_id: "ed25519:old".into(),
                public_key: key.public_key_base64(),
                valid_until_ts: None,
                expired_ts: Some(5),
            }
        );
        // Validity is capped at a week.
        let far = signed_answer(&key, "a.example", i64::MAX);
        assert_eq!(
            check_key_response(&far, "a.example", now).unwrap().valid_until_ts,
            now + MAX_KEY_VALIDITY_MS
        );
        // Another server's answer, a tampered one, an unsigned one.
        assert!(check_key_response(&answer, "b.example", now).is_err());
        let mut tampered = answer.clone();
        tampered["valid_until_ts"] = json!(3_000);
        assert!(check_key_response(&tampered, "a.example", now).is_err());
        let mut unsigned = answer.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert!(check_key_response(&unsigned, "a.example", now).is_err());
        // A key in verify_keys that did not sign.
        let other = SigningKey::from_seed("2", &[8; 32]).unwrap();
        let mut extra = answer.clone();
        extra["verify_keys"]["ed25519:2"] = json!({"key": other.public_key_base64()});
        assert!(check_key_response(&extra, "a.example", now).is_err());
    }

    #[test]
    fn key_usability() {
        let key = |valid_until_ts, expired_ts| RemoteKey {
            key_id: "ed25519:1".into(),
            public_key: String::new(),
            valid_until_ts,
            expired_ts,
        };
        assert!(usable(&key(Some(10), None), 10));
        assert!(!usable(&key(Some(10), None), 11));
        assert!(usable(&key(None, Some(10)), 9));
        assert!(!usable(&key(None, Some(10)), 10));
        assert!(!usable(&key(None, None), 0));
    }
}
