//! OpenID tokens our users hand to third parties, which trade them for the
//! user's ID at federation `/openid/userinfo`. Memory only: a restart
//! forgets them, as they last an hour.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#openid> and
//! <https://spec.matrix.org/latest/server-server-api/#openid>.

use std::cell::RefCell;
use std::collections::HashMap;

/// How long an OpenID token lasts (spec example and Synapse: one hour).
pub const OPENID_TOKEN_LIFETIME_MS: i64 = 3_600_000;

/// Live tokens one user may hold; a new one past this replaces their oldest
/// (a client asks for one per widget or integration, not hundreds).
pub const MAX_TOKENS_PER_USER: usize = 20;
/// Live tokens on the node; a new one past this replaces the one nearest
/// its expiry, so memory stays bounded whoever asks.
pub const MAX_TOKENS: usize = 10_000;

/// The tokens handed out: token -> (user, expiry).
#[derive(Default)]
pub struct OpenIdTokens {
    tokens: RefCell<HashMap<String, (String, i64)>>,
}

impl OpenIdTokens {
    /// A new token for `user_id`, valid [`OPENID_TOKEN_LIFETIME_MS`] from
    /// `now`; expired tokens are dropped first, then the user's oldest past
    /// [`MAX_TOKENS_PER_USER`] and the node's oldest past [`MAX_TOKENS`].
    pub fn issue(&self, user_id: &str, now: i64) -> String {
        let token = crate::credentials::random_string(32);
        let mut tokens = self.tokens.borrow_mut();
        tokens.retain(|_, (_, expires)| *expires > now);
        let oldest = |tokens: &HashMap<String, (String, i64)>, of_user: bool| {
            tokens
                .iter()
                .filter(|(_, (owner, _))| !of_user || owner == user_id)
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(token, _)| token.clone())
        };
        if tokens.values().filter(|(owner, _)| owner == user_id).count() >= MAX_TOKENS_PER_USER {
            if let Some(old) = oldest(&tokens, true) {
                tokens.remove(&old);
            }
        }
        if tokens.len() >= MAX_TOKENS {
            if let Some(old) = oldest(&tokens, false) {
                tokens.remove(&old);
            }
        }
        tokens.insert(token.clone(), (user_id.to_owned(), now + OPENID_TOKEN_LIFETIME_MS));
        token
    }

    /// The user a token was issued to, while it is valid.
    pub fn user_of(&self, token: &str, now: i64) -> Option<String> {
        match self.tokens.borrow().get(token) {
            Some((user_id, expires)) if *expires > now => Some(user_id.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_user_until_they_expire() {
        let tokens = OpenIdTokens::default();
        let token = tokens.issue("@a:x", 1_000);
        assert_eq!(tokens.user_of(&token, 1_000).as_deref(), Some("@a:x"));
        assert_eq!(tokens.user_of(&token, 1_000 + OPENID_TOKEN_LIFETIME_MS), None);
        assert_eq!(tokens.user_of("unknown", 1_000), None);
        // Issuing later drops the expired one.
        tokens.issue("@b:x", 1_000 + OPENID_TOKEN_LIFETIME_MS);
        assert_eq!(tokens.tokens.borrow().len(), 1);
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_tokens_and_loses_the_oldest_first() {
        let tokens = OpenIdTokens::default();
        let first = tokens.issue("@a:x", 1_000);
        for tick in 1..MAX_TOKENS_PER_USER as i64 {
            tokens.issue("@a:x", 1_000 + tick);
        }
        let other = tokens.issue("@b:x", 1_000);
        assert_eq!(tokens.user_of(&first, 2_000).as_deref(), Some("@a:x"));
        let newest = tokens.issue("@a:x", 2_000);
        assert_eq!(tokens.user_of(&first, 2_000), None, "the oldest of the user's tokens went");
        assert_eq!(tokens.user_of(&newest, 2_000).as_deref(), Some("@a:x"));
        assert_eq!(tokens.user_of(&other, 2_000).as_deref(), Some("@b:x"), "others keep theirs");
        assert_eq!(tokens.tokens.borrow().len(), MAX_TOKENS_PER_USER + 1);
    }

    #[test]
    fn the_node_holds_a_bounded_number_of_tokens() {
        let tokens = OpenIdTokens::default();
        for index in 0..MAX_TOKENS + 5 {
            tokens.issue(&format!("@u{index}:x"), 1_000 + index as i64);
        }
        assert_eq!(tokens.tokens.borrow().len(), MAX_TOKENS);
    }
}
