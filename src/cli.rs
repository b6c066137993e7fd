//! The command line: `serve`, `init`, `user`, `token`, `backup`, `restore`,
//! `check`, `resilience`, `doctor`, `key`, `tls`, `federation`, `appservice`
//! (in `cli/appservice.rs`).
//!
//! Operator commands open the same SQLite file as a running server (WAL lets
//! them work side by side) and print plain text.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argh::FromArgs;

use crate::config::{Config, Overrides, Registration};
use crate::credentials;
use crate::storage::{Storage, now_ms};

/// `println!` for the commands' output: a reader that has gone away (`hearth
/// resilience | head -1`) ends the command quietly, as it does other Unix
/// tools, instead of `println!`'s panic (an abort in a release build).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

/// Writes one line of output; see [`out!`].
pub(crate) fn write_out(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("hearth: cannot write the output: {error}");
        }
        std::process::exit(if error.kind() == std::io::ErrorKind::BrokenPipe { 0 } else { 1 });
    }
}

/// Declares an operator command's options with the ones every command on
/// the database takes (`--config`, `--data-dir`) first; after `federation`,
/// also the outbound federation ones (`--server-name`, `--federation-ca`,
/// `--federation-allow-ip`) and [`FederationOptions::federation_config`].
/// argh cannot flatten one options struct into another, so this declares
/// them once for all.
macro_rules! command_options {
    (federation $(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        command_options! {
            $(#[$meta])*
            pub struct $name {
                /// our server name (as given to serve)
                #[argh(option)]
                pub server_name: Option<String>,
                /// extra trusted CA certificate (PEM) for outbound requests (repeatable)
                #[argh(option)]
                pub federation_ca: Vec<PathBuf>,
                /// private range outbound requests may reach, e.g. 127.0.0.0/8 (repeatable)
                #[argh(option)]
                pub federation_allow_ip: Vec<String>,
                $($fields)*
            }
        }

        impl FederationOptions for $name {
            fn federation_config(&self) -> Result<Config, String> {
                let overrides = Overrides {
                    data_dir: self.data_dir.clone(),
                    server_name: self.server_name.clone(),
                    federation_ca: self.federation_ca.clone(),
                    federation_allow_ips: self.federation_allow_ip.clone(),
                    ..Overrides::default()
                };
                Config::load(self.config.as_deref(), overrides)
            }
        }
    };
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            /// configuration file
            #[argh(option)]
            pub config: Option<PathBuf>,
            /// directory for the database
            #[argh(option)]
            pub data_dir: Option<PathBuf>,
            $($fields)*
        }
    };
}

// After `command_options!`, which it uses.
pub mod appservice;

/// A command with the outbound federation options.
trait FederationOptions {
    /// The configuration with the command's options over it.
    fn federation_config(&self) -> Result<Config, String>;
}

/// hearth: a Matrix homeserver for small devices.
#[derive(FromArgs)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
    /// log more (debug level); HEARTH_LOG=trace|debug|info|warn|error also works
    #[argh(switch, short = 'v')]
    pub verbose: bool,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Command {
    Serve(Serve),
    Init(Init),
    User(User),
    Token(Token),
    Backup(Backup),
    Restore(Restore),
    Check(Check),
    Resilience(Resilience),
    Doctor(Doctor),
    Key(Key),
    Tls(Tls),
    Federation(FederationCommand),
    Appservice(appservice::Appservice),
}

/// run the node
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct Serve {
    /// configuration file (TOML); without it the embedded defaults apply
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database (default ./data)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// server name, e.g. example.org (default localhost:8448)
    #[argh(option)]
    pub server_name: Option<String>,
    /// plain HTTP client API listener ADDR:PORT (repeatable; replaces configured listeners)
    #[argh(option)]
    pub http: Vec<SocketAddr>,
    /// TLS client+federation listener ADDR:PORT (repeatable; replaces configured listeners)
    #[argh(option)]
    pub https: Vec<SocketAddr>,
    /// metrics listener ADDR:PORT serving only GET /metrics (Prometheus text format; off by default)
    #[argh(option)]
    pub metrics: Option<SocketAddr>,
    /// TLS certificate chain (PEM), reloaded on SIGHUP
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), reloaded on SIGHUP
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// who may register: closed, token (default) or open
    #[argh(option)]
    pub registration: Option<Registration>,
    /// extra trusted CA certificate (PEM) for outbound federation (repeatable)
    #[argh(option)]
    pub federation_ca: Vec<PathBuf>,
    /// private range outbound federation may reach, e.g. 127.0.0.0/8 (repeatable)
    #[argh(option)]
    pub federation_allow_ip: Vec<String>,
}

/// write a commented configuration file with every option and its default
#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
pub struct Init {
    /// the server name (the part after ':' in user IDs)
    #[argh(option)]
    pub server_name: String,
    /// where to write it (default ./hearth.toml); an existing file is not overwritten
    #[argh(option)]
    pub config: Option<PathBuf>,
}

command_options! {
    /// manage accounts
    #[derive(FromArgs)]
    #[argh(subcommand, name = "user")]
    pub struct User {
        #[argh(subcommand)]
        pub action: UserAction,
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum UserAction {
    Add(UserAdd),
    Passwd(UserPasswd),
    Deactivate(UserDeactivate),
    List(UserList),
}

/// create an account
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
pub struct UserAdd {
    /// the localpart (alice for @alice:example.org)
    #[argh(positional)]
    pub name: String,
    /// make the account a server admin
    #[argh(switch)]
    pub admin: bool,
    /// read the password from standard input instead of asking
    #[argh(switch)]
    pub password_stdin: bool,
}

/// set an account's password (read from standard input)
#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
pub struct UserPasswd {
    /// the localpart or full user ID
    #[argh(positional)]
    pub name: String,
}

/// deactivate an account: it can no longer log in and its devices are removed
#[derive(FromArgs)]
#[argh(subcommand, name = "deactivate")]
pub struct UserDeactivate {
    /// the localpart or full user ID
    #[argh(positional)]
    pub name: String,
}

/// list accounts
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
pub struct UserList {}

command_options! {
    /// manage registration tokens
    #[derive(FromArgs)]
    #[argh(subcommand, name = "token")]
    pub struct Token {
        #[argh(subcommand)]
        pub action: TokenAction,
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum TokenAction {
    Create(TokenCreate),
    List(TokenList),
    Revoke(TokenRevoke),
}

/// create a registration token and print it
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
pub struct TokenCreate {
    /// how many accounts it may create (default: unlimited)
    #[argh(option)]
    pub uses: Option<u32>,
    /// how long it stays valid, e.g. 30m, 12h, 7d (default: forever)
    #[argh(option)]
    pub expires: Option<String>,
}

/// list registration tokens
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
pub struct TokenList {}

/// delete a registration token
#[derive(FromArgs)]
#[argh(subcommand, name = "revoke")]
pub struct TokenRevoke {
    /// the token
    #[argh(positional)]
    pub token: String,
}

command_options! {
    /// copy the whole database to a file, consistently, while the server runs
    #[derive(FromArgs)]
    #[argh(subcommand, name = "backup")]
    pub struct Backup {
        /// the backup file to write (must not exist)
        #[argh(positional)]
        pub target: PathBuf,
    }
}

command_options! {
    /// put a backup made by `hearth backup` in place of the database (the node
    /// must be stopped); the current database is kept beside it, renamed. With
    /// --config, its server name must match the backup's
    #[derive(FromArgs)]
    #[argh(subcommand, name = "restore")]
    pub struct Restore {
        /// the backup file
        #[argh(positional)]
        pub source: PathBuf,
    }
}

command_options! {
    /// check the database (integrity, foreign keys, schema version, signing key,
    /// event graph) and print what it holds; read-only, works while the node runs
    #[derive(FromArgs)]
    #[argh(subcommand, name = "check")]
    pub struct Check {

    }
}

command_options! {
    /// for each room of the node: would it outlive the node (other servers with
    /// members, their admins and aliases)? read-only, works while the node runs
    #[derive(FromArgs)]
    #[argh(subcommand, name = "resilience")]
    pub struct Resilience {
        /// print JSON (as GET /_hearth/admin/v1/resilience answers)
        #[argh(switch)]
        pub json: bool,
    }
}

command_options! {
    federation
    /// check the node as other servers and clients see it (well-known, SRV,
    /// resolution, TLS certificate, server keys, client well-known, /versions);
    /// exits non-zero if a check fails
    #[derive(FromArgs)]
    #[argh(subcommand, name = "doctor")]
    pub struct Doctor {

    }
}

command_options! {
    /// manage the server signing key
    #[derive(FromArgs)]
    #[argh(subcommand, name = "key")]
    pub struct Key {
        #[argh(subcommand)]
        pub action: KeyAction,
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum KeyAction {
    Rotate(KeyRotate),
}

/// retire the current signing key (still published as an old key) and make a
/// new one; a running server signs with it after a restart
#[derive(FromArgs)]
#[argh(subcommand, name = "rotate")]
pub struct KeyRotate {}

command_options! {
    /// TLS certificate helpers
    #[derive(FromArgs)]
    #[argh(subcommand, name = "tls")]
    pub struct Tls {
        /// server name (as given to serve), for a certificate made now
        #[argh(option)]
        pub server_name: Option<String>,
        #[argh(subcommand)]
        pub action: TlsAction,
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum TlsAction {
    ExportCert(TlsExportCert),
}

/// print the served certificate (PEM); without configured certificate files
/// this is the self-signed one, made now if the server has not made it yet.
/// Give it to another server's --federation-ca to let it trust this one
#[derive(FromArgs)]
#[argh(subcommand, name = "export-cert")]
pub struct TlsExportCert {}

command_options! {
    federation
    /// talk to other servers as this one (for debugging federation)
    #[derive(FromArgs)]
    #[argh(subcommand, name = "federation")]
    pub struct FederationCommand {
        #[argh(subcommand)]
        pub action: FederationAction,
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum FederationAction {
    Request(FederationRequest),
    SignEvent(FederationSignEvent),
}

/// add hashes and this server's signature to an event read from standard input,
/// and print `{"event_id": ..., "event": ...}` (for debugging and tests)
#[derive(FromArgs)]
#[argh(subcommand, name = "sign-event")]
pub struct FederationSignEvent {
    /// the room version the event is for
    #[argh(option)]
    pub room_version: String,
}

/// send one signed request and print the status and the JSON answer
#[derive(FromArgs)]
#[argh(subcommand, name = "request")]
pub struct FederationRequest {
    /// the destination server name
    #[argh(positional)]
    pub destination: String,
    /// the path and query, e.g. /_matrix/federation/v1/version
    #[argh(positional)]
    pub path: String,
    /// the method (default GET)
    #[argh(option, default = "String::from(\"GET\")")]
    pub method: String,
    /// a JSON body
    #[argh(option)]
    pub body: Option<String>,
}

impl Serve {
    /// The configuration this command runs with.
    pub fn config(&self) -> Result<Config, String> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            server_name: self.server_name.clone(),
            http: self.http.clone(),
            https: self.https.clone(),
            metrics: self.metrics,
            tls_certificate: self.tls_cert.clone(),
            tls_private_key: self.tls_key.clone(),
            registration: self.registration,
            federation_ca: self.federation_ca.clone(),
            federation_allow_ips: self.federation_allow_ip.clone(),
        };
        Config::load(self.config.as_deref(), overrides)
    }
}

/// The options a command group (`user`, `token`, ...) takes before its
/// action, each followed by a value. People type them after the action too
/// (`hearth user add alice --data-dir /var/lib/hearth`), so [`parse`] moves
/// them to where argh expects them.
const GROUP_OPTIONS: &[(&str, &[&str])] = &[
    ("user", &["--config", "--data-dir"]),
    ("token", &["--config", "--data-dir"]),
    ("key", &["--config", "--data-dir"]),
    ("appservice", &["--config", "--data-dir"]),
    ("tls", &["--config", "--data-dir", "--server-name"]),
    ("federation", &["--config", "--data-dir", "--server-name", "--federation-ca", "--federation-allow-ip"]),
];

/// Parses the process's command line (as `argh::from_env` does, with the
/// group options moved in front of the action).
pub fn parse() -> Cli {
    let arguments: Vec<String> =
        std::env::args_os().map(|text| text.to_string_lossy().into_owned()).collect();
    let arguments = group_options_first(arguments);
    let command = arguments.first().map(String::as_str).unwrap_or("hearth");
    let command =
        std::path::Path::new(command).file_name().and_then(|name| name.to_str()).unwrap_or("hearth");
    let rest: Vec<&str> = arguments.iter().skip(1).map(String::as_str).collect();
    Cli::from_args(&[command], &rest).unwrap_or_else(|early_exit| {
        std::process::exit(match early_exit.status {
            Ok(()) => {
                out!("{}", early_exit.output);
                0
            }
            Err(()) => {
                eprintln!("{}\nRun {command} --help for more information.", early_exit.output);
                1
            }
        })
    })
}

/// Moves a command group's own options (with their values) from wherever
/// they stand to right after the group's name.
fn group_options_first(arguments: Vec<String>) -> Vec<String> {
    let group_at = arguments.iter().skip(1).position(|argument| !argument.starts_with('-')).map(|at| at + 1);
    let Some(group_at) = group_at else { return arguments };
    let Some((_, options)) = GROUP_OPTIONS.iter().find(|(group, _)| *group == arguments[group_at]) else {
        return arguments;
    };
    let mut moved = Vec::new();
    let mut rest = Vec::new();
    let mut tail = arguments[group_at + 1..].iter();
    while let Some(argument) = tail.next() {
        let name = argument.split_once('=').map_or(argument.as_str(), |(name, _)| name);
        if !options.contains(&name) {
            rest.push(argument.clone());
        } else if let Some((name, value)) = argument.split_once('=') {
            moved.extend([name.to_string(), value.to_string()]);
        } else {
            moved.push(argument.clone());
            moved.extend(tail.next().cloned());
        }
    }
    let mut reordered = arguments[..=group_at].to_vec();
    reordered.extend(moved);
    reordered.extend(rest);
    reordered
}

/// The configuration of an operator command: the file `--config` names (or
/// the defaults) with `--data-dir` over it.
fn load_config(config: &Option<PathBuf>, data_dir: &Option<PathBuf>) -> Result<Config, String> {
    let overrides = Overrides { data_dir: data_dir.clone(), ..Overrides::default() };
    Config::load(config.as_deref(), overrides)
}

/// The database path of `config`, which must exist: a command run in the
/// wrong directory would otherwise make a new, empty database under the
/// default server name.
fn existing_database(config: &Config) -> Result<PathBuf, String> {
    let path = config.database_path();
    if !path.exists() {
        return Err(format!(
            "no database at {}; start the node once with `hearth serve`, or pass --data-dir",
            path.display()
        ));
    }
    Ok(path)
}

/// Opens the database an operator command works on (see [`existing_database`]).
fn open(config: &Option<PathBuf>, data_dir: &Option<PathBuf>) -> Result<(Config, Storage), String> {
    let from_file = config.is_some();
    let mut config = load_config(config, data_dir)?;
    let path = existing_database(&config)?;
    let storage = Storage::open(&path).map_err(|error| error.to_string())?;
    // Without a config file, the name the node runs under is the one the database recorded.
    let stored = storage.secret(crate::storage::SERVER_NAME).map_err(|error| error.to_string())?;
    if let Some(stored) = stored.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()) {
        if !from_file {
            config.server_name = stored;
        } else if stored != config.server_name {
            return Err(format!(
                "the database belongs to server name {stored:?}, the config says {:?}",
                config.server_name
            ));
        }
    }
    Ok((config, storage))
}

/// `hearth init`.
pub fn init(command: Init) -> Result<(), String> {
    crate::protocol::identifiers::validate_server_name(&command.server_name)
        .map_err(|error| format!("server name {:?}: {error}", command.server_name))?;
    let path = command.config.unwrap_or_else(|| PathBuf::from("hearth.toml"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    file.write_all(crate::config::template(&command.server_name).as_bytes())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    out!("wrote {}", path.display());
    Ok(())
}

fn read_password(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password: {error}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    credentials::validate_new_password(&password).map_err(|error| error.to_string())?;
    Ok(password)
}

fn full_user_id(config: &Config, name: &str) -> String {
    if name.starts_with('@') { name.to_string() } else { format!("@{name}:{}", config.server_name) }
}

/// `hearth user ...`.
pub fn user(command: User) -> Result<(), String> {
    let (config, mut storage) = open(&command.config, &command.data_dir)?;
    let error = |error: crate::error::Error| error.to_string();
    match command.action {
        UserAction::Add(add) => {
            crate::credentials::validate_localpart(&add.name).map_err(error)?;
            let prompt = if add.password_stdin { "" } else { "password: " };
            let password = read_password(prompt)?;
            // No event loop runs in an operator command: it hashes on its own thread.
            let hash = credentials::hash_password(&password).map_err(error)?;
            let user_id = full_user_id(&config, &add.name);
            storage.create_user(&user_id, &add.name, Some(&hash), add.admin, None).map_err(error)?;
            out!("created {user_id}{}", if add.admin { " (admin)" } else { "" });
        }
        UserAction::Passwd(passwd) => {
            let user_id = full_user_id(&config, &passwd.name);
            let password = read_password("new password: ")?;
            let hash = credentials::hash_password(&password).map_err(error)?;
            if !storage.set_password_hash(&user_id, &hash).map_err(error)? {
                return Err(format!("no such user {user_id}"));
            }
            out!("password changed for {user_id}");
        }
        UserAction::Deactivate(deactivate) => {
            let user_id = full_user_id(&config, &deactivate.name);
            if !storage.deactivate_user(&user_id).map_err(error)? {
                return Err(format!("no such user {user_id}"));
            }
            out!("deactivated {user_id}");
        }
        UserAction::List(_) => {
            for user in storage.users().map_err(error)? {
                let flags = match (user.is_admin, user.deactivated) {
                    (_, true) => " (deactivated)",
                    (true, false) => " (admin)",
                    (false, false) => "",
                };
                out!("{}{flags}", user.user_id);
            }
        }
    }
    Ok(())
}

/// Parses `30s`, `30m`, `12h`, `7d` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: i64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 12h"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" | "" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    number.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or_else(|| format!("{text:?} is out of range"))
}

/// `hearth token ...`.
pub fn token(command: Token) -> Result<(), String> {
    let (_, storage) = open(&command.config, &command.data_dir)?;
    let error = |error: crate::error::Error| error.to_string();
    match command.action {
        TokenAction::Create(create) => {
            let expires_ts = match &create.expires {
                Some(text) => Some(now_ms() + parse_duration_ms(text)?),
                None => None,
            };
            let token = credentials::random_string(16);
            storage
                .create_registration_token(&token, create.uses.map(i64::from), expires_ts)
                .map_err(error)?;
            out!("{token}");
        }
        TokenAction::List(_) => {
            let now = now_ms();
            for token in storage.registration_tokens().map_err(error)? {
                let uses = match token.uses_allowed {
                    Some(allowed) => format!("{}/{allowed} used", token.completed),
                    None => format!("{} used", token.completed),
                };
                let expiry = match token.expires_ts {
                    Some(expires) if expires <= now => "expired".to_string(),
                    Some(expires) => format!("expires in {}s", (expires - now) / 1000),
                    None => "no expiry".to_string(),
                };
                let state = if token.is_valid(now) { "valid" } else { "invalid" };
                out!("{}  {state}  {uses}  {expiry}", token.token);
            }
        }
        TokenAction::Revoke(revoke) => {
            if !storage.revoke_registration_token(&revoke.token).map_err(error)? {
                return Err(format!("no such token {}", revoke.token));
            }
            out!("revoked {}", revoke.token);
        }
    }
    Ok(())
}

/// Files smaller than this are copied in a blink: no progress line for them.
const PROGRESS_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// The progress line is redrawn at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// A progress line on standard error (`\r`-redrawn), drawn only when
/// standard error is a terminal and the copy is large.
struct ProgressLine {
    label: &'static str,
    drawn: Option<Instant>,
}

impl ProgressLine {
    fn new(label: &'static str) -> Option<ProgressLine> {
        std::io::stderr().is_terminal().then_some(ProgressLine { label, drawn: None })
    }

    fn update(&mut self, done: u64, total: u64) {
        if total < PROGRESS_MIN_BYTES || self.drawn.is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL) {
            return;
        }
        let done = done.min(total);
        let percent = done.saturating_mul(100) / total.max(1);
        eprint!("\r{} {percent:>3}% ({} of {})\x1b[K", self.label, human_bytes(done), human_bytes(total));
        self.drawn = Some(Instant::now());
    }

    /// Says what a long step without a measure of its own is doing.
    fn status(&mut self, total: u64, text: &str) {
        if total >= PROGRESS_MIN_BYTES {
            eprint!("\r{text}\x1b[K");
            self.drawn = Some(Instant::now());
        }
    }

    /// Clears the line (the command prints its result next).
    fn finish(&self) {
        if self.drawn.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

/// `1.5 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `hearth backup FILE`.
pub fn backup(command: Backup) -> Result<(), String> {
    let (_, storage) = open(&command.config, &command.data_dir)?;
    let terminal = std::io::stderr().is_terminal();
    let progress = ProgressLine::new("backing up").map(|mut line| {
        Box::new(move |done: u64, total: u64| line.update(done, total)) as crate::storage::BackupProgress
    });
    let outcome = storage.backup_to(&command.target, progress);
    if terminal {
        // The handler owned the line; clear whatever it drew.
        ProgressLine { label: "", drawn: Some(Instant::now()) }.finish();
    }
    outcome.map_err(|error| error.to_string())?;
    out!("backed up to {}", command.target.display());
    Ok(())
}

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Copies `source` to `target` (which must not exist) with a progress line,
/// and makes the copy durable.
fn copy_with_progress(source: &Path, target: &Path) -> Result<(), String> {
    let mut input =
        std::fs::File::open(source).map_err(|error| format!("cannot read {}: {error}", source.display()))?;
    let total = input.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|error| format!("cannot create {}: {error}", target.display()))?;
    let mut line = ProgressLine::new("copying");
    let mut buffer = vec![0; 1024 * 1024];
    let mut done = 0u64;
    let outcome = loop {
        let read = match input.read(&mut buffer) {
            Ok(0) => {
                break output
                    .sync_all()
                    .map_err(|error| format!("cannot write {}: {error}", target.display()));
            }
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => break Err(format!("cannot read {}: {error}", source.display())),
        };
        if let Err(error) = output.write_all(&buffer[..read]) {
            break Err(format!("cannot write {}: {error}", target.display()));
        }
        done += read as u64;
        if let Some(line) = &mut line {
            line.update(done, total);
        }
    };
    if let Some(line) = &line {
        line.finish();
    }
    outcome
}

/// Why a restore cannot go on now.
fn in_use(current: &Path) -> String {
    format!(
        "{} is in use: a node (or another hearth command) has it open; stop the node first \
         (e.g. `systemctl stop hearth`), then restore; nothing changed",
        current.display()
    )
}

/// `hearth restore FILE`.
pub fn restore(command: Restore) -> Result<(), String> {
    use crate::storage::health;
    let from_file = command.config.is_some();
    let config = load_config(&command.config, &command.data_dir)?;
    let current = config.database_path();
    let source = &command.source;

    // Cheap checks first: a file, and an SQLite one.
    let mut header = [0u8; 16];
    std::fs::File::open(source)
        .and_then(|mut file| file.read_exact(&mut header))
        .map_err(|error| format!("cannot read {} as a database: {error}", source.display()))?;
    if &header != SQLITE_HEADER {
        return Err(format!(
            "{} is not an SQLite database (not a hearth backup); nothing changed",
            source.display()
        ));
    }
    let mut staged_name = current.as_os_str().to_owned();
    staged_name.push(".restoring");
    let staged_path = PathBuf::from(staged_name);
    // The restore's own working copy is removed and rewritten: never restore from it.
    if let Ok(source) = std::fs::canonicalize(source) {
        for path in [&current, &staged_path] {
            if std::fs::canonicalize(path).is_ok_and(|path| path == source) {
                return Err(format!("{} is the database itself or its restore copy", source.display()));
            }
        }
    }
    // The name the backup must carry: the config's, or the current database's.
    let expected = if from_file {
        Some((config.server_name.clone(), "the config"))
    } else if current.exists() {
        health::recorded_server_name(&current).map(|name| (name, "the current database"))
    } else {
        None
    };

    let data_dir = current.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(data_dir)
        .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
    let lock = if current.exists() {
        match health::lock(&current) {
            Ok(lock) => Some(lock),
            Err(health::LockError::InUse) => return Err(in_use(&current)),
            // Too damaged to take the usual way (the usual reason to restore).
            Err(health::LockError::Other(error)) => match health::probe_unused(&current) {
                Ok(()) => {
                    out!("the current database is damaged ({error}); it is kept aside as it is");
                    None
                }
                Err(health::LockError::InUse) => return Err(in_use(&current)),
                Err(health::LockError::Other(error)) => {
                    return Err(format!(
                        "cannot take {} for the restore ({error}); if no node runs on it, move it \
                         away by hand (with its -wal and -shm files) and restore again; nothing changed",
                        current.display()
                    ));
                }
            },
        }
    } else {
        None
    };

    let staged = (|| {
        // A copy left by an interrupted restore.
        health::remove_with_siblings(&staged_path);
        copy_with_progress(source, &staged_path)
            .inspect_err(|_| health::remove_with_siblings(&staged_path))?;
        let mut line = ProgressLine::new("checking");
        let size = std::fs::metadata(&staged_path).map(|metadata| metadata.len()).unwrap_or(0);
        if let Some(line) = &mut line {
            line.status(size, "checking the copy (integrity_check)...");
        }
        let staged = health::check_staged(&staged_path);
        if let Some(line) = &line {
            line.finish();
        }
        let staged = staged?;
        if let Some((name, from)) = &expected {
            if staged.server_name.as_deref() != Some(name.as_str()) {
                health::remove_with_siblings(&staged_path);
                return Err(format!(
                    "it belongs to server name {:?}, {from} says {name:?}",
                    staged.server_name.as_deref().unwrap_or("(none recorded)")
                ));
            }
        }
        Ok(staged)
    })();
    let staged = match staged {
        Ok(staged) => staged,
        Err(error) => {
            if let Some(lock) = lock {
                lock.release();
            }
            return Err(format!("{} cannot be restored: {error}; nothing changed", source.display()));
        }
    };

    let seconds = now_ms() / 1000;
    let mut aside = PathBuf::from(format!("{}.before-restore-{seconds}", current.display()));
    let mut attempt = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{}.before-restore-{seconds}-{attempt}", current.display()));
        attempt += 1;
    }
    match lock {
        Some(lock) => lock.swap(&staged.path, &aside)?,
        None => health::swap_files(&current, &staged.path, &aside)?,
    }
    out!(
        "restored {} into {} (server name {}, schema version {})",
        source.display(),
        current.display(),
        staged.server_name.as_deref().unwrap_or("not recorded"),
        staged.schema_version
    );
    if aside.exists() {
        out!("the previous database is kept at {}", aside.display());
    }
    out!("start the node again (e.g. `systemctl start hearth`)");
    Ok(())
}

/// `hearth check`.
pub fn check(command: Check) -> Result<(), String> {
    use crate::storage::health::{self, Severity};
    let config = load_config(&command.config, &command.data_dir)?;
    let path = existing_database(&config)?;
    let mut health = health::examine(&path)?;
    if command.config.is_some() {
        let recorded = health::recorded_server_name(&path);
        if recorded.as_ref().is_some_and(|name| *name != config.server_name) {
            health.findings.push(health::Finding {
                severity: Severity::Fail,
                text: format!(
                    "the database belongs to server name {:?}, the config says {:?}",
                    recorded.unwrap_or_default(),
                    config.server_name
                ),
            });
        }
    }
    out!("database {}", path.display());
    for finding in &health.findings {
        let label = match finding.severity {
            Severity::Ok => "ok",
            Severity::Note => "note",
            Severity::Fail => "FAIL",
        };
        out!("{label:<5} {}", finding.text);
    }
    if let Some(stats) = &health.stats {
        out!("users     {} ({} deactivated)", stats.users, stats.deactivated_users);
        out!("rooms     {}", stats.rooms);
        out!("events    {} ({} outliers, {} backfilled)", stats.events, stats.outliers, stats.backfilled);
        out!("media     {} files, {}", stats.media_files, human_bytes(stats.media_bytes.max(0) as u64));
        out!("database  {}", human_bytes(stats.database_bytes));
        out!("wal       {}", human_bytes(stats.wal_bytes));
    }
    if health.failed() {
        let failures = health.findings.iter().filter(|finding| finding.severity == Severity::Fail).count();
        return Err(format!("{failures} check(s) failed"));
    }
    out!("all checks passed");
    Ok(())
}

/// `hearth resilience`: on a read-only connection beside the node.
pub fn resilience(command: Resilience) -> Result<(), String> {
    use crate::rooms::resilience;
    let config = load_config(&command.config, &command.data_dir)?;
    let path = existing_database(&config)?;
    // The name the node runs under is the one its database recorded.
    let server_name =
        crate::storage::health::recorded_server_name(&path).unwrap_or_else(|| config.server_name.clone());
    let storage = Storage::open_read_only(&path).map_err(|error| error.to_string())?;
    let error = |error: crate::error::Error| error.to_string();
    let mut reports = Vec::new();
    for room_id in resilience::rooms(&storage, &server_name).map_err(error)? {
        reports.extend(resilience::room(&storage, &server_name, &room_id).map_err(error)?);
    }
    if command.json {
        let rooms: Vec<serde_json::Value> = reports.iter().map(|report| report.to_json()).collect();
        out!("{}", serde_json::json!({ "server_name": server_name, "rooms": rooms }));
        return Ok(());
    }
    if reports.is_empty() {
        out!("no local user is joined to any room");
    }
    let now = now_ms();
    for report in &reports {
        match &report.name {
            Some(name) => out!("{} \"{name}\"", report.room_id),
            None => out!("{}", report.room_id),
        }
        out!("  members here   {}", report.local_members);
        for server in &report.other_servers {
            let accepted = match server.last_accepted_ts {
                Some(ts) => format!("last accepted our transactions {} ago", human_age(now - ts)),
                None => "never accepted a transaction from us".into(),
            };
            out!("  {}  {} joined, {accepted}", server.server_name, server.joined_members);
            for admin in &server.admins {
                out!("      admin {} ({})", admin.user_id, resilience::power_text(admin.power));
            }
        }
        if !report.remote_aliases.is_empty() {
            out!("  aliases elsewhere  {}", report.remote_aliases.join(", "));
        }
        out!("  => {}", report.summary());
    }
    let dying =
        reports.iter().filter(|report| report.verdict == resilience::Verdict::DiesWithThisNode).count();
    out!("{} rooms, {dying} would die with this node", reports.len());
    Ok(())
}

/// `hearth doctor`: every check, then a non-zero exit if one failed.
pub fn doctor(command: Doctor) -> Result<(), String> {
    use crate::remote::doctor::{self, Status};
    let named = command.server_name.is_some();
    let mut config = command.federation_config()?;
    existing_database(&config)?;
    // Read-only beside the node. Unless named, the node is checked under the
    // name its database recorded.
    if !named {
        if let Some(recorded) = crate::storage::health::recorded_server_name(&config.database_path()) {
            config.server_name = recorded;
        }
    }
    let storage = Storage::open_read_only(&config.database_path()).map_err(|error| error.to_string())?;
    let executor = std::rc::Rc::new(smol::LocalExecutor::new());
    let app = crate::app::App::new(config, storage, executor.clone()).map_err(|error| error.to_string())?;
    let checks = smol::block_on(executor.run(doctor::run(&app)));
    for check in &checks {
        let label = match check.status {
            Status::Ok => "ok",
            Status::Note => "note",
            Status::Fail => "FAIL",
        };
        out!("{label:<5} {:<11} {}", check.subject, check.text);
    }
    let failures = checks.iter().filter(|check| check.status == Status::Fail).count();
    if failures > 0 {
        return Err(format!("{failures} check(s) failed"));
    }
    out!("all checks passed");
    Ok(())
}

/// A duration in ms for people: "40 s", "5 min", "3 h", "2 days".
fn human_age(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// `hearth key rotate`.
pub fn key(command: Key) -> Result<(), String> {
    let (_, mut storage) = open(&command.config, &command.data_dir)?;
    let error = |error: crate::error::Error| error.to_string();
    match command.action {
        KeyAction::Rotate(_) => {
            let key = crate::protocol::signing::SigningKey::generate(&credentials::random_string(8))
                .map_err(|error| error.to_string())?;
            let retired = storage.rotate_signing_key(&key.key_id, &key.seed()).map_err(error)?;
            match retired {
                Some(old) => out!("retired {old}; the new signing key is {}", key.key_id),
                None => out!("the new signing key is {}", key.key_id),
            }
            out!("restart the server to sign with it");
        }
    }
    Ok(())
}

/// `hearth tls export-cert`.
pub fn tls(command: Tls) -> Result<(), String> {
    let overrides =
        Overrides { data_dir: command.data_dir, server_name: command.server_name, ..Overrides::default() };
    let config = Config::load(command.config.as_deref(), overrides)?;
    let storage = Storage::open(&config.database_path()).map_err(|error| error.to_string())?;
    match command.action {
        TlsAction::ExportCert(_) => {
            let certificate = match &config.tls.certificate {
                Some(path) => {
                    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?
                }
                None => crate::node::self_signed_pem(&config, &storage)?.certificate,
            };
            std::io::stdout().write_all(&certificate).map_err(|error| error.to_string())?;
        }
    }
    Ok(())
}

/// `hearth federation request`.
pub fn federation(command: FederationCommand) -> Result<(), String> {
    let config = command.federation_config()?;
    existing_database(&config)?;
    let storage = Storage::open(&config.database_path()).map_err(|error| error.to_string())?;
    let executor = std::rc::Rc::new(smol::LocalExecutor::new());
    let app = crate::app::App::new(config, storage, executor.clone()).map_err(|error| error.to_string())?;
    match command.action {
        FederationAction::Request(request) => {
            let method: http_types::Method =
                request.method.parse().map_err(|_| format!("{:?} is not an HTTP method", request.method))?;
            let body = match &request.body {
                Some(text) => Some(serde_json::from_str(text).map_err(|error| format!("--body: {error}"))?),
                None => None,
            };
            // An operator may ask for a big room's `/state`: the answer is
            // read up to the largest one a join takes, not the usual 8 MiB.
            let limit = crate::remote::join::MAX_SEND_JOIN_BYTES;
            let work = crate::remote::client::request_with_limit(
                &app,
                &request.destination,
                method,
                &request.path,
                body,
                limit,
            );
            let (status, answer) = smol::block_on(executor.run(work)).map_err(|error| error.to_string())?;
            out!("{status}");
            out!("{answer}");
        }
        FederationAction::SignEvent(sign) => {
            let version = crate::protocol::room_version::RoomVersion::from_id(&sign.room_version)
                .ok_or_else(|| format!("room version {} is unknown", sign.room_version))?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|error| format!("cannot read the event: {error}"))?;
            let event = match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(event)) => event,
                _ => return Err("the event must be a JSON object".into()),
            };
            let pdu = crate::rooms::sign(&app, &version, event).map_err(|error| error.to_string())?;
            out!("{}", serde_json::json!({ "event_id": pdu.event_id, "event": pdu.json }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reordered(line: &str) -> String {
        group_options_first(line.split(' ').map(String::from).collect()).join(" ")
    }

    #[test]
    fn group_options_move_in_front_of_the_action() {
        assert_eq!(
            reordered("hearth user add alice --data-dir /d --password-stdin"),
            "hearth user --data-dir /d add alice --password-stdin"
        );
        assert_eq!(
            reordered("hearth -v token list --config=/c.toml"),
            "hearth -v token --config /c.toml list"
        );
        assert_eq!(reordered("hearth user --data-dir /d list"), "hearth user --data-dir /d list");
        assert_eq!(reordered("hearth serve --data-dir /d"), "hearth serve --data-dir /d");
        assert_eq!(reordered("hearth user list --data-dir"), "hearth user --data-dir list");
        assert_eq!(reordered("hearth"), "hearth");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("0s").is_err());
    }
}
