//! The node's shared state on the event loop thread: configuration, the open
//! database and the server signing key. Passed to handlers as `Rc<App>`.

use std::cell::{RefCell, RefMut};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::Config;
use crate::credentials;
use crate::error::{Error, Result};
use crate::http::Request;
use crate::storage::{Storage, TokenOwner};

/// The server's current ed25519 signing key.
#[allow(dead_code)] // read by the federation key endpoints
pub struct SigningKey {
    /// `ed25519:...`
    pub key_id: String,
    pub key_pair: ed25519_compact::KeyPair,
}

/// Everything a handler may need.
pub struct App {
    pub config: Config,
    storage: RefCell<Storage>,
    #[allow(dead_code)] // read by the federation key endpoints
    pub signing_key: SigningKey,
}

impl App {
    /// Loads (or makes, on first start) the signing key and wraps the storage.
    pub fn new(config: Config, storage: Storage) -> Result<App> {
        let (key_id, seed) = match storage.current_signing_key()? {
            Some(key) => key,
            None => {
                let mut seed = [0u8; 32];
                getrandom::getrandom(&mut seed)
                    .map_err(|error| Error::Internal(error.to_string()))?;
                let mut suffix = [0u8; 6];
                getrandom::getrandom(&mut suffix)
                    .map_err(|error| Error::Internal(error.to_string()))?;
                let key_id = format!("ed25519:{}", URL_SAFE_NO_PAD.encode(suffix));
                storage.insert_signing_key(&key_id, &seed)?;
                log::info!("generated server signing key {key_id}");
                (key_id, seed.to_vec())
            }
        };
        let seed = ed25519_compact::Seed::from_slice(&seed)
            .map_err(|error| Error::Internal(format!("stored signing key is corrupt: {error}")))?;
        let key_pair = ed25519_compact::KeyPair::from_seed(seed);
        Ok(App {
            config,
            storage: RefCell::new(storage),
            signing_key: SigningKey { key_id, key_pair },
        })
    }

    /// The database. Never hold this across an `.await`.
    pub fn storage(&self) -> RefMut<'_, Storage> {
        self.storage.borrow_mut()
    }

    /// Whether the listener with this index serves the federation API.
    pub fn serves_federation(&self, listener: usize) -> bool {
        self.config
            .listeners
            .get(listener)
            .is_some_and(|listener| listener.federation)
    }

    /// `@localpart:server_name`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.config.server_name)
    }

    /// Whether `user_id` belongs to this server.
    #[allow(dead_code)] // used by membership and federation
    pub fn is_local_user(&self, user_id: &str) -> bool {
        user_id
            .split_once(':')
            .is_some_and(|(_, server)| server == self.config.server_name)
    }

    /// The account behind the request's access token.
    pub fn authenticate(&self, request: &Request) -> Result<TokenOwner> {
        let token = request.access_token().ok_or(Error::MissingToken)?;
        let owner = self
            .storage()
            .token_owner(&credentials::hash_token(token))?;
        owner.ok_or(Error::UnknownToken { soft_logout: false })
    }
}
