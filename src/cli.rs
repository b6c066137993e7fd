//! The command line: `serve`, `init`, `user`, `token`, `backup`, `key`, `tls`,
//! `federation`.
//!
//! Operator commands open the same SQLite file as a running server (WAL lets
//! them work side by side) and print plain text.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use argh::FromArgs;

use crate::config::{Config, Overrides, Registration};
use crate::credentials;
use crate::storage::{Storage, now_ms};

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
    Key(Key),
    Tls(Tls),
    Federation(FederationCommand),
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

/// manage accounts
#[derive(FromArgs)]
#[argh(subcommand, name = "user")]
pub struct User {
    /// configuration file
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    #[argh(subcommand)]
    pub action: UserAction,
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

/// manage registration tokens
#[derive(FromArgs)]
#[argh(subcommand, name = "token")]
pub struct Token {
    /// configuration file
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    #[argh(subcommand)]
    pub action: TokenAction,
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

/// copy the whole database to a file, consistently, while the server runs
#[derive(FromArgs)]
#[argh(subcommand, name = "backup")]
pub struct Backup {
    /// configuration file
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// the backup file to write (must not exist)
    #[argh(positional)]
    pub target: PathBuf,
}

/// manage the server signing key
#[derive(FromArgs)]
#[argh(subcommand, name = "key")]
pub struct Key {
    /// configuration file
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    #[argh(subcommand)]
    pub action: KeyAction,
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

/// TLS certificate helpers
#[derive(FromArgs)]
#[argh(subcommand, name = "tls")]
pub struct Tls {
    /// configuration file
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// server name (as given to serve), for a certificate made now
    #[argh(option)]
    pub server_name: Option<String>,
    #[argh(subcommand)]
    pub action: TlsAction,
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

/// talk to other servers as this one (for debugging federation)
#[derive(FromArgs)]
#[argh(subcommand, name = "federation")]
pub struct FederationCommand {
    /// configuration file
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// directory for the database
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// our server name (as given to serve)
    #[argh(option)]
    pub server_name: Option<String>,
    /// extra trusted CA certificate (PEM) (repeatable)
    #[argh(option)]
    pub federation_ca: Vec<PathBuf>,
    /// private range requests may reach, e.g. 127.0.0.0/8 (repeatable)
    #[argh(option)]
    pub federation_allow_ip: Vec<String>,
    #[argh(subcommand)]
    pub action: FederationAction,
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
                println!("{}", early_exit.output);
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

/// Opens the database an operator command works on. It must exist: a
/// command run in the wrong directory would otherwise make a new, empty
/// database under the default server name.
fn open(config: &Option<PathBuf>, data_dir: &Option<PathBuf>) -> Result<(Config, Storage), String> {
    let overrides = Overrides { data_dir: data_dir.clone(), ..Overrides::default() };
    let from_file = config.is_some();
    let mut config = Config::load(config.as_deref(), overrides)?;
    let path = config.database_path();
    if !path.exists() {
        return Err(format!(
            "no database at {}; start the node once with `hearth serve`, or pass --data-dir",
            path.display()
        ));
    }
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
    println!("wrote {}", path.display());
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
            println!("created {user_id}{}", if add.admin { " (admin)" } else { "" });
        }
        UserAction::Passwd(passwd) => {
            let user_id = full_user_id(&config, &passwd.name);
            let password = read_password("new password: ")?;
            let hash = credentials::hash_password(&password).map_err(error)?;
            if !storage.set_password_hash(&user_id, &hash).map_err(error)? {
                return Err(format!("no such user {user_id}"));
            }
            println!("password changed for {user_id}");
        }
        UserAction::Deactivate(deactivate) => {
            let user_id = full_user_id(&config, &deactivate.name);
            if !storage.deactivate_user(&user_id).map_err(error)? {
                return Err(format!("no such user {user_id}"));
            }
            println!("deactivated {user_id}");
        }
        UserAction::List(_) => {
            for user in storage.users().map_err(error)? {
                let flags = match (user.is_admin, user.deactivated) {
                    (_, true) => " (deactivated)",
                    (true, false) => " (admin)",
                    (false, false) => "",
                };
                println!("{}{flags}", user.user_id);
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
            println!("{token}");
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
                println!("{}  {state}  {uses}  {expiry}", token.token);
            }
        }
        TokenAction::Revoke(revoke) => {
            if !storage.revoke_registration_token(&revoke.token).map_err(error)? {
                return Err(format!("no such token {}", revoke.token));
            }
            println!("revoked {}", revoke.token);
        }
    }
    Ok(())
}

/// `hearth backup FILE`.
pub fn backup(command: Backup) -> Result<(), String> {
    let (_, storage) = open(&command.config, &command.data_dir)?;
    storage.backup_to(&command.target).map_err(|error| error.to_string())?;
    println!("backed up to {}", command.target.display());
    Ok(())
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
                Some(old) => println!("retired {old}; the new signing key is {}", key.key_id),
                None => println!("the new signing key is {}", key.key_id),
            }
            println!("restart the server to sign with it");
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
    let overrides = Overrides {
        data_dir: command.data_dir,
        server_name: command.server_name,
        federation_ca: command.federation_ca,
        federation_allow_ips: command.federation_allow_ip,
        ..Overrides::default()
    };
    let config = Config::load(command.config.as_deref(), overrides)?;
    if !config.database_path().exists() {
        return Err(format!(
            "no database at {}; start the node once with `hearth serve`, or pass --data-dir",
            config.database_path().display()
        ));
    }
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
            let work =
                crate::federation::client::request(&app, &request.destination, method, &request.path, body);
            let (status, answer) = smol::block_on(executor.run(work)).map_err(|error| error.to_string())?;
            println!("{status}");
            println!("{answer}");
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
            println!("{}", serde_json::json!({ "event_id": pdu.event_id, "event": pdu.json }));
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
