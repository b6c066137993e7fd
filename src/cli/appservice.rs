//! `hearth appservice list|add|remove`: the application services a node
//! loads, from its configured registration files and from its database
//! (registrations added here, validated as start-up validates them), and
//! where each one's stream of transactions stands.
//!
//! Spec: <https://spec.matrix.org/latest/application-service-api/#registration>.

use std::io::Read;
use std::path::PathBuf;

use argh::FromArgs;

use super::{human_age, open};
use crate::config::Config;
use crate::protocol::appservice::{self, AppService, Namespace};
use crate::rooms::{added_source, app_service_registrations};
use crate::storage::{Storage, now_ms};

/// A registration file is a few hundred bytes; a bigger one is a mistake.
const MAX_REGISTRATION_BYTES: u64 = 1 << 20;
/// Events after a service's position are counted up to this many.
const MAX_COUNTED_EVENTS: i64 = 100_000;
/// Namespace regexes listed per kind; the rest are counted.
const LISTED_PATTERNS: usize = 5;

/// Said after every change: the node reads registrations at start and on SIGHUP.
const RELOAD_HINT: &str = "a running node loads the change on SIGHUP (`systemctl reload hearth`)";

command_options! {
    /// manage application services (bridges and bots); with --config, its
    /// app_service_config_files are listed and checked against
    #[derive(FromArgs)]
    #[argh(subcommand, name = "appservice")]
    pub struct Appservice {
        #[argh(subcommand)]
        pub action: AppserviceAction,
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum AppserviceAction {
    List(AppserviceList),
    Add(AppserviceAdd),
    Remove(AppserviceRemove),
}

/// list the registered services and where their transactions stand
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
pub struct AppserviceList {}

/// register a service from its registration file (YAML), as an alternative
/// to naming the file in app_service_config_files
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
pub struct AppserviceAdd {
    /// the registration file the bridge or bot generated
    #[argh(positional)]
    pub file: PathBuf,
}

/// forget a service added with `hearth appservice add`
#[derive(FromArgs)]
#[argh(subcommand, name = "remove")]
pub struct AppserviceRemove {
    /// the service's id
    #[argh(positional)]
    pub id: String,
}

/// `hearth appservice ...`.
pub fn run(command: Appservice) -> Result<(), String> {
    let (config, storage) = open(&command.config, &command.data_dir)?;
    let unchecked_config = command.config.is_none();
    match command.action {
        AppserviceAction::List(_) => list(&config, &storage),
        AppserviceAction::Add(add) => {
            let text = read_registration(&add.file)?;
            let source = add.file.display().to_string();
            let error = |error: crate::error::Error| error.to_string();
            let mut registrations = app_service_registrations(&config, &storage).map_err(error)?;
            registrations.push((source, text.clone()));
            let texts = registrations.iter().map(|(source, text)| (source.as_str(), text.as_str()));
            let services = appservice::parse_all(texts, &config.server_name)?;
            let Some(service) = services.last() else { return Err("nothing was parsed".into()) };
            if !storage.add_app_service(&service.id, &text, now_ms()).map_err(error)? {
                return Err(format!("an application service {:?} was added before", service.id));
            }
            let url = service.url.as_deref().unwrap_or("no url: it gets no transactions");
            out!("added application service {:?} ({url}, sender {})", service.id, service.sender);
            if unchecked_config {
                out!(
                    "note: without --config, the registration files the node's configuration names were not checked"
                );
            }
            out!("{RELOAD_HINT}");
            Ok(())
        }
        AppserviceAction::Remove(remove) => {
            let error = |error: crate::error::Error| error.to_string();
            if storage.remove_app_service(&remove.id).map_err(error)? {
                out!("removed application service {:?}", remove.id);
                out!("{RELOAD_HINT}");
                return Ok(());
            }
            for (source, text) in config.app_service_files()? {
                if AppService::parse(&text, &config.server_name).is_ok_and(|service| service.id == remove.id)
                {
                    return Err(format!(
                        "application service {:?} comes from {source} (app_service_config_files): remove it there",
                        remove.id
                    ));
                }
            }
            Err(format!("no application service {:?} was added", remove.id))
        }
    }
}

/// Reads a registration file, bounded.
fn read_registration(path: &std::path::Path) -> Result<String, String> {
    let cannot = |error: std::io::Error| format!("cannot read {}: {error}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    file.take(MAX_REGISTRATION_BYTES + 1).read_to_string(&mut text).map_err(cannot)?;
    if MAX_REGISTRATION_BYTES < text.len() as u64 {
        return Err(format!(
            "{}: a registration file is at most {MAX_REGISTRATION_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

/// `hearth appservice list`: every registration, even a broken one (with
/// its error), so that the operator sees what the node would refuse; a
/// non-zero exit when there is such a one.
fn list(config: &Config, storage: &Storage) -> Result<(), String> {
    let error = |error: crate::error::Error| error.to_string();
    let mut registrations: Vec<(String, Result<String, String>)> = config
        .app_service_config_files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read it: {error}"));
            (path.display().to_string(), text)
        })
        .collect();
    for added in storage.added_app_services().map_err(error)? {
        registrations.push((added_source(&added.appservice_id), Ok(added.registration)));
    }
    if registrations.is_empty() {
        out!("no application services are registered");
        return Ok(());
    }
    let current = storage.max_stream_id().map_err(error)?.max(storage.max_e2ee_stream_id().map_err(error)?);
    let now = now_ms();
    let mut problems = 0;
    let mut services = Vec::new();
    for (source, text) in registrations {
        let service = text.and_then(|text| AppService::parse(&text, &config.server_name));
        let service = match service {
            Ok(service) => service,
            Err(reason) => {
                problems += 1;
                out!("BROKEN  {source}: {reason}");
                continue;
            }
        };
        out!("{}  from {source}", service.id);
        out!("  url         {}", service.url.as_deref().unwrap_or("none (client API only, no transactions)"));
        out!("  sender      {}", service.sender);
        for (kind, namespaces) in
            [("users", &service.users), ("aliases", &service.aliases), ("rooms", &service.rooms)]
        {
            out!("  {kind:<11} {}", namespaces_text(namespaces));
        }
        match storage.appservice_stream_status(&service.id).map_err(error)? {
            None => out!("  stream      not started (no node has run with it yet)"),
            Some(status) => {
                let stream = status.stream;
                let in_flight = match stream.pending_end {
                    Some(_) => format!("transaction {} in flight", stream.next_txn_id),
                    None => format!("{} transactions sent", stream.next_txn_id - 1),
                };
                let after = storage
                    .timeline_events_count_after(stream.position, MAX_COUNTED_EVENTS + 1)
                    .map_err(error)?;
                let after = match MAX_COUNTED_EVENTS < after {
                    true => format!("over {MAX_COUNTED_EVENTS}"),
                    false => after.to_string(),
                };
                out!("  stream      at {} of {current} ({in_flight})", stream.position);
                out!(
                    "  pending     {after} events after it in the stream (it is sent those of interest to it)"
                );
                match status.delivered_ts {
                    Some(ts) => out!("  delivered   {} ago", human_age(now - ts)),
                    None => out!("  delivered   never"),
                }
                if let Some((ts, reason)) = status.failed {
                    out!("  last error  {} ago: {reason}", human_age(now - ts));
                }
            }
        }
        services.push(service);
    }
    if let Err(reason) = appservice::check_unique(&services) {
        problems += 1;
        out!("CONFLICT  {reason}");
    }
    if 0 < problems {
        return Err(format!("{problems} problem(s): the node refuses to start or reload with them"));
    }
    Ok(())
}

/// `@ghost_.* (exclusive), @other_.*`, the first few, then a count.
fn namespaces_text(namespaces: &[Namespace]) -> String {
    if namespaces.is_empty() {
        return "none".into();
    }
    let mut listed: Vec<String> = namespaces
        .iter()
        .take(LISTED_PATTERNS)
        .map(|namespace| match namespace.exclusive {
            true => format!("{} (exclusive)", namespace.pattern()),
            false => namespace.pattern().to_owned(),
        })
        .collect();
    if LISTED_PATTERNS < namespaces.len() {
        listed.push(format!("and {} more", namespaces.len() - LISTED_PATTERNS));
    }
    listed.join(", ")
}
