//! The node's shared state on the event loop thread, as handlers get it
//! (`Rc<App>`): the outbound side (`remote::Remote`, which holds the room
//! engine) and what only the APIs use (login limits, the password hashing
//! thread). It reads as the layers below it (`Deref`), so handlers call
//! `rooms/` and `remote/` functions with it as they are.

use std::ops::Deref;
use std::rc::Rc;

use smol::LocalExecutor;

use crate::config::Config;
use crate::error::Result;
use crate::remote::Remote;
use crate::rooms::Engine;
use crate::storage::Storage;

/// Everything a handler may need.
pub struct App {
    pub remote: Rc<Remote>,
    /// Login attempts per client address and per account (`rc_login`).
    pub login_limits: crate::ratelimit::LoginLimits,
    /// Wrong passwords in user-interactive auth, per account.
    pub failed_uia: crate::ratelimit::Limiter,
    /// The password hashing thread.
    pub passwords: crate::hasher::Hasher,
    /// The bytes of request bodies held at once (`request::BODY_BUDGET`).
    pub bodies: Rc<crate::request::BodyBudget>,
}

impl App {
    /// Builds the room engine (loading or making the signing key), the
    /// outbound side on it, and the handlers' state on top.
    pub fn new(config: Config, storage: Storage, executor: Rc<LocalExecutor<'static>>) -> Result<App> {
        let engine = Rc::new(Engine::new(config, storage, executor)?);
        let remote = Rc::new(Remote::new(engine)?);
        let login_limits = crate::ratelimit::LoginLimits::new(&remote.config.rc_login);
        let failed_uia = crate::ratelimit::Limiter::new(remote.config.rc_login.failed_attempts);
        let passwords = crate::hasher::Hasher::start()?;
        let bodies = crate::request::BodyBudget::new(crate::request::BODY_BUDGET);
        Ok(App { remote, login_limits, failed_uia, passwords, bodies })
    }
}

impl Deref for App {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}
