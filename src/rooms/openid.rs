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

/// The tokens handed out: token -> (user, expiry).
#[derive(Default)]
pub struct OpenIdTokens {
    tokens: RefCell<HashMap<String, (String, i64)>>,
}

impl OpenIdTokens {
    /// A new token for `user_id`, valid [`OPENID_TOKEN_LIFETIME_MS`] from
    /// `now`; expired tokens are dropped first.
    pub fn issue(&self, user_id: &str, now: i64) -> String {
        let token = crate::credentials::random_string(32);
        let mut tokens = self.tokens.borrow_mut();
        tokens.retain(|_, (_, expires)| *expires > now);
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
}
