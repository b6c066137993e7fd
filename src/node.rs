//! `hearth serve`: assembles the node (storage, keys, TLS, listeners), runs the
//! event loop on this one thread, and handles signals: SIGTERM/SIGINT shut down
//! gracefully, SIGHUP reloads the TLS certificate files and the application
//! service registration files (telling systemd, which the event loop also
//! pings as its watchdog).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::LocalExecutor;
use smol::stream::StreamExt;

use crate::app::App;
use crate::config::Config;
use crate::remote::acme::Acme;
use crate::server::{ListenerSpec, Server};
use crate::storage::Storage;
use crate::tls;

/// In-flight requests get this long to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const SELF_SIGNED_CERTIFICATE: &str = "tls.self_signed.certificate";
const SELF_SIGNED_KEY: &str = "tls.self_signed.private_key";

/// Media left by the previous run: uploads a crash interrupted are deleted,
/// and content stored whole (before content was kept in parts) is split.
fn prepare_media(storage: &Storage) -> crate::error::Result<()> {
    let interrupted = storage.delete_incomplete_media()?;
    if 0 < interrupted {
        log::info!("deleted {interrupted} unfinished media uploads");
    }
    let split = storage.split_whole_media()?;
    if 0 < split {
        log::info!("stored {split} media files in parts");
    }
    Ok(())
}

/// Runs the node until SIGTERM or SIGINT.
pub fn serve(config: Config) -> Result<(), String> {
    crate::malloc::pin_mmap_threshold();
    let started = Instant::now();
    let storage = Storage::open(&config.database_path()).map_err(|error| error.to_string())?;
    check_server_name(&config, &storage)?;
    prepare_media(&storage).map_err(|error| error.to_string())?;
    if !config.privacy.store_client_ips {
        let forgotten = storage.forget_client_ips().map_err(|error| error.to_string())?;
        if 0 < forgotten {
            log::info!(
                "erased the client addresses of {forgotten} devices (privacy.store_client_ips is off)"
            );
        }
    }
    let (tls_config, acme) = match &config.acme {
        Some(acme_config) => {
            let (server_config, acme) = load_acme(&config, acme_config, &storage)?;
            (Some(Rc::new(RefCell::new(server_config))), Some(acme))
        }
        None if config.listeners.iter().any(|listener| listener.tls) => {
            (Some(Rc::new(RefCell::new(load_tls(&config, &storage)?))), None)
        }
        None => (None, None),
    };
    let executor = Rc::new(LocalExecutor::new());
    let app = Rc::new(App::new(config, storage, executor.clone()).map_err(|error| error.to_string())?);
    let (shutdown_sender, shutdown) = smol::channel::bounded::<()>(1);
    let listeners = app
        .config
        .listeners
        .iter()
        .map(|listener| ListenerSpec {
            address: listener.address,
            tls: if listener.tls { tls_config.clone() } else { None },
        })
        .collect();
    let handler = crate::http::handler(app.clone());
    let signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Int,
        async_signal::Signal::Hup,
    ])
    .map_err(|error| format!("cannot install signal handlers: {error}"))?;
    smol::block_on(executor.run(async {
        let stall_timeout = std::time::Duration::from_secs(app.config.limits.stall_timeout_secs);
        let server = Server::start(executor.clone(), listeners, handler, shutdown.clone(), stall_timeout)
            .map_err(|error| error.to_string())?;
        let _metrics_server = match app.config.metrics {
            Some(address) => {
                let spec = ListenerSpec { address, tls: None };
                let handler = crate::scrape::handler(app.clone(), server.clone());
                let metrics =
                    Server::start(executor.clone(), vec![spec], handler, shutdown.clone(), stall_timeout)
                        .map_err(|error| format!("metrics: {error}"))?;
                executor.spawn(crate::scrape::measure_loop_lag(app.clone())).detach();
                Some(metrics)
            }
            None => None,
        };
        let _acme_server = match &acme {
            Some(acme) => start_acme(&app, acme.clone(), &executor, &shutdown, stall_timeout)?,
            None => None,
        };
        log::info!(
            "{} ready in {} ms (server name {})",
            env!("CARGO_PKG_NAME"),
            started.elapsed().as_millis(),
            app.config.server_name
        );
        crate::remote::sender::start(&app.remote);
        crate::remote::push::start(&app.remote);
        crate::remote::appservice::start(&app.remote);
        crate::rooms::search_index::start(&app.engine);
        crate::systemd::notify("READY=1");
        if let Some(interval) = crate::systemd::watchdog_interval() {
            log::info!("pinging the systemd watchdog every {} ms", interval.as_millis());
            executor.spawn(crate::systemd::watchdog(interval)).detach();
        }
        let mut signals = signals;
        while let Some(signal) = signals.next().await {
            match signal {
                Ok(async_signal::Signal::Hup) => {
                    crate::systemd::notify("RELOADING=1");
                    match reload_tls(&app, tls_config.as_ref()) {
                        Ok(true) => log::info!("TLS certificate reloaded from its files"),
                        Ok(false) => {}
                        Err(error) => {
                            log::error!("TLS reload failed, keeping the old one: {error}")
                        }
                    }
                    match app.reload_app_services() {
                        Ok(count) => {
                            log::info!("application service registrations reloaded ({count})");
                            crate::remote::appservice::start(&app.remote);
                        }
                        Err(error) => log::error!(
                            "application service registrations not reloaded, keeping the old ones: {error}"
                        ),
                    }
                    crate::systemd::notify("READY=1");
                }
                Ok(_) => break,
                Err(error) => log::warn!("signal error: {error}"),
            }
        }
        log::info!("shutting down");
        crate::systemd::notify("STOPPING=1");
        shutdown_sender.close();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while server.active_connections() > 0 && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        Ok::<(), String>(())
    }))?;
    if let Err(error) = app.commit_now() {
        log::error!("the last writes could not be committed: {error}");
    }
    if let Err(error) = crate::rooms::search_index::catch_up(&app) {
        log::warn!("search indexing at shutdown failed: {error}");
    }
    if let Err(error) = app.storage().checkpoint() {
        log::warn!("final WAL checkpoint failed: {error}");
    }
    log::info!("stopped");
    Ok(())
}

/// The server name is part of every user ID and event: a database stays with
/// the name it was first served under.
fn check_server_name(config: &Config, storage: &Storage) -> Result<(), String> {
    let stored = storage
        .secret_or_insert(crate::storage::SERVER_NAME, config.server_name.as_bytes())
        .map_err(|error| error.to_string())?;
    let stored = String::from_utf8_lossy(&stored);
    if stored != config.server_name {
        return Err(format!(
            "this database belongs to server name {stored:?}, not {:?}: the name cannot change once \
             the node has run; use --server-name {stored} (or another data directory)",
            config.server_name
        ));
    }
    Ok(())
}

/// The TLS config: from the configured PEM files, or the self-signed pair
/// stored in the database (made on first start).
fn load_tls(config: &Config, storage: &Storage) -> Result<Arc<rustls::ServerConfig>, String> {
    if let (Some(certificate), Some(private_key)) = (&config.tls.certificate, &config.tls.private_key) {
        return tls::server_config(&tls::read_pem_files(certificate, private_key)?);
    }
    tls::server_config(&self_signed_pem(config, storage)?)
}

/// The TLS config when certificates come through ACME: the one obtained
/// last (kept in the database), or the self-signed one until there is one,
/// in a resolver the renewal swaps the new certificate into.
fn load_acme(
    config: &Config,
    acme_config: &crate::config::Acme,
    storage: &Storage,
) -> Result<(Arc<rustls::ServerConfig>, Rc<Acme>), String> {
    let current = match crate::remote::acme::stored_certificate(storage) {
        Some(certified) => certified,
        None => tls::certified_key(&self_signed_pem(config, storage)?)?,
    };
    let certificates = tls::SwappableCertificate::new(current);
    let server_config = tls::swappable_server_config(certificates.clone())?;
    Ok((server_config, Acme::new(acme_config, certificates)?))
}

/// Starts the ACME renewal task, and the HTTP-01 listener if that is the
/// challenge (kept running: the next renewal needs it too).
fn start_acme(
    app: &Rc<App>,
    acme: Rc<Acme>,
    executor: &Rc<LocalExecutor<'static>>,
    shutdown: &smol::channel::Receiver<()>,
    stall_timeout: Duration,
) -> Result<Option<Rc<Server>>, String> {
    let listener = match app.config.acme.as_ref() {
        Some(config) if config.challenge == crate::config::AcmeChallenge::Http01 => config.http_listen,
        _ => None,
    };
    let server = match listener {
        Some(address) => {
            let spec = ListenerSpec { address, tls: None };
            let handler = crate::remote::acme::http01_handler(acme.clone());
            let server =
                Server::start(executor.clone(), vec![spec], handler, shutdown.clone(), stall_timeout)
                    .map_err(|error| format!("acme.http_listen: {error}"))?;
            Some(server)
        }
        None => None,
    };
    crate::remote::acme::start(&app.remote, acme);
    Ok(server)
}

/// The self-signed pair stored in the database, made (for the configured
/// server name) and stored if there is none yet.
pub fn self_signed_pem(config: &Config, storage: &Storage) -> Result<tls::PemPair, String> {
    let error = |error: crate::error::Error| error.to_string();
    let pem = match (
        storage.secret(SELF_SIGNED_CERTIFICATE).map_err(error)?,
        storage.secret(SELF_SIGNED_KEY).map_err(error)?,
    ) {
        (Some(certificate), Some(private_key)) => tls::PemPair { certificate, private_key },
        _ => {
            let made = tls::self_signed(tls::host_of(&config.server_name))?;
            // Another process (an operator command) may have stored one first: keep that.
            let private_key = storage.secret_or_insert(SELF_SIGNED_KEY, &made.private_key).map_err(error)?;
            let certificate =
                storage.secret_or_insert(SELF_SIGNED_CERTIFICATE, &made.certificate).map_err(error)?;
            log::info!("generated a self-signed TLS certificate");
            tls::PemPair { certificate, private_key }
        }
    };
    Ok(pem)
}

/// Reads the configured certificate files again (SIGHUP). `Ok(false)` when
/// there are none to read: a self-signed certificate stays, and ACME swaps
/// its certificates by itself.
fn reload_tls(app: &App, current: Option<&Rc<RefCell<Arc<rustls::ServerConfig>>>>) -> Result<bool, String> {
    let Some(current) = current else {
        return Ok(false);
    };
    let (Some(certificate), Some(private_key)) = (&app.config.tls.certificate, &app.config.tls.private_key)
    else {
        return Ok(false);
    };
    let config = tls::server_config(&tls::read_pem_files(certificate, private_key)?)?;
    *current.borrow_mut() = config;
    Ok(true)
}
