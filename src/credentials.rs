//! Secrets users hold: passwords (argon2id), access tokens (random, stored as
//! SHA-256 hashes), device IDs, and the localpart grammar for new accounts.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Argon2id with 12 MiB and 3 passes: the OWASP minimum for argon2id, light
/// enough for a small board (tens of milliseconds on a Pi 4).
const ARGON2_MEMORY_KIB: u32 = 12 * 1024;
const ARGON2_PASSES: u32 = 3;

/// The longest password accepted, in characters (Synapse's limit for new
/// passwords). It bounds what a queued hash holds (see `hasher.rs`); a longer
/// one given at login cannot match and is not hashed.
pub const MAX_PASSWORD_CHARS: usize = 512;

/// Spec: user IDs are at most 255 bytes, `@` and `:server` included.
pub const MAX_USER_ID_BYTES: usize = 255;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None).unwrap_or_else(|_| Params::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// `len` random characters from `[A-Za-z0-9]`.
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::getrandom(&mut bytes).expect("the OS random source failed");
    // 62 does not divide 256; the bias (4 of 256) is irrelevant at these lengths.
    bytes.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect()
}

/// A new access token: long enough that storing only its hash is safe.
pub fn new_access_token() -> String {
    format!("hth_{}", random_string(40))
}

/// A new device ID, in the upper-case style clients show.
pub fn new_device_id() -> String {
    random_string(10).to_ascii_uppercase()
}

/// The stored form of an access token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hashes a password for storage (PHC string).
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt_bytes = [0u8; 16];
    getrandom::getrandom(&mut salt_bytes).map_err(|error| Error::Internal(error.to_string()))?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|error| Error::Internal(error.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Error::Internal(format!("password hashing failed: {error}")))
}

/// Whether `password` matches the stored hash.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| argon2().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Whether a password is too long to be one (see [`MAX_PASSWORD_CHARS`]).
pub fn password_too_long(password: &str) -> bool {
    password.len() > MAX_PASSWORD_CHARS && password.chars().nth(MAX_PASSWORD_CHARS).is_some()
}

/// Checks a NEW password: not empty, not longer than [`MAX_PASSWORD_CHARS`].
pub fn validate_new_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::matrix(400, "M_WEAK_PASSWORD", "the password is empty"));
    }
    if password_too_long(password) {
        return Err(Error::InvalidParam(format!(
            "the password is longer than {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks a localpart for a NEW local account: the spec's grammar
/// `[a-z0-9._=\-/+]+`. Spec: <https://spec.matrix.org/latest/appendices/#user-identifiers>.
pub fn validate_localpart(localpart: &str) -> Result<()> {
    if localpart.is_empty() {
        return Err(Error::InvalidUsername("the user name is empty".into()));
    }
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+');
    if !localpart.chars().all(allowed) {
        return Err(Error::InvalidUsername("user names may only contain a-z, 0-9, and . _ = - / +".into()));
    }
    Ok(())
}

/// Checks the full length of a user ID made from `localpart` on `server_name`.
pub fn validate_user_id_length(localpart: &str, server_name: &str) -> Result<()> {
    if localpart.len() + server_name.len() + 2 > MAX_USER_ID_BYTES {
        return Err(Error::InvalidUsername("the user ID is longer than 255 bytes".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn new_passwords_are_not_empty_nor_too_long() {
        assert!(validate_new_password("x").is_ok());
        assert!(validate_new_password(&"é".repeat(MAX_PASSWORD_CHARS)).is_ok());
        assert!(validate_new_password("").is_err());
        assert!(validate_new_password(&"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert!(password_too_long(&"é".repeat(MAX_PASSWORD_CHARS + 1)));
    }

    #[test]
    fn localparts_follow_the_strict_grammar() {
        for good in ["alice", "a.b_c=d-e/f+g", "0"] {
            assert!(validate_localpart(good).is_ok(), "{good}");
        }
        for bad in ["", "Alice", "a b", "a:b", "émile"] {
            assert!(validate_localpart(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let first = new_access_token();
        assert_ne!(first, new_access_token());
        assert_eq!(hash_token(&first), hash_token(&first));
        assert_ne!(hash_token(&first), hash_token("other"));
    }
}
