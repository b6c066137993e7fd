//! hearth: a Matrix homeserver for small devices.
//!
//! Parse the command line, then hand over to the command. No logic here.
#![forbid(unsafe_code)]

mod app;
mod cli;
mod client;
mod config;
mod credentials;
#[cfg(test)]
mod endpoints;
mod error;
mod federation;
#[cfg(test)]
mod fuzz;
mod hasher;
mod http;
mod http1;
#[cfg(test)]
mod layers;
mod logging;
mod malloc;
mod metrics;
mod net;
mod node;
// The protocol core lands ahead of the room and federation code that calls it.
#[allow(dead_code)]
mod protocol;
mod ratelimit;
mod remote;
mod request;
mod rooms;
mod scrape;
mod server;
mod storage;
mod systemd;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    logging::init(cli.verbose);
    let result = match cli.command {
        cli::Command::Serve(serve) => serve.config().and_then(node::serve),
        cli::Command::Init(init) => cli::init(init),
        cli::Command::User(user) => cli::user(user),
        cli::Command::Token(token) => cli::token(token),
        cli::Command::Backup(backup) => cli::backup(backup),
        cli::Command::Restore(restore) => cli::restore(restore),
        cli::Command::Check(check) => cli::check(check),
        cli::Command::Resilience(resilience) => cli::resilience(resilience),
        cli::Command::Doctor(doctor) => cli::doctor(doctor),
        cli::Command::Key(key) => cli::key(key),
        cli::Command::Tls(tls) => cli::tls(tls),
        cli::Command::Federation(federation) => cli::federation(federation),
        cli::Command::Appservice(command) => cli::appservice::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hearth: {message}");
            ExitCode::FAILURE
        }
    }
}
