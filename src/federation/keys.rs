//! Notary queries (`/_matrix/key/v2/query`): other servers' keys answered
//! from the cache `remote::keys` keeps, countersigned with ours.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#querying-keys-through-another-server>.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::ServerName;
use crate::protocol::signing::sign_json;
use crate::remote::keys::server_keys;
use crate::request::{Request, Response};
use crate::storage::now_ms;

/// A notary query names at most this many servers (each may cost a fetch).
const MAX_NOTARY_SERVERS: usize = 32;
/// Adds our notary signature to each answer.
fn notary_response(app: &App, answers: Vec<Value>) -> Result<Response> {
    let mut signed = Vec::with_capacity(answers.len());
    for mut answer in answers {
        sign_json(&mut answer, &app.config.server_name, &app.signing_key)
            .map_err(|error| Error::Internal(format!("cannot countersign keys: {error}")))?;
        signed.push(answer);
    }
    Ok(Response::ok(json!({ "server_keys": signed })))
}

fn parse_server_name(name: &str) -> Result<()> {
    ServerName::parse(name).map(|_| ()).map_err(|error| Error::InvalidParam(format!("{name:?}: {error}")))
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub async fn query_one(app: &Rc<App>, request: &Request, server_name: &str) -> Result<Response> {
    parse_server_name(server_name)?;
    let minimum = match request.query("minimum_valid_until_ts") {
        Some(text) => {
            text.parse::<i64>().map_err(|_| Error::InvalidParam("minimum_valid_until_ts".into()))?
        }
        None => now_ms(),
    };
    let answer = server_keys(app, server_name, minimum).await?;
    notary_response(app, answer.into_iter().collect())
}

/// `POST /_matrix/key/v2/query`: the servers are looked up concurrently.
pub async fn query_many(app: &Rc<App>, request: &Request) -> Result<Response> {
    let body = request.json_object()?;
    let servers = body
        .get("server_keys")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::BadJson("server_keys must be an object".into()))?;
    if servers.len() > MAX_NOTARY_SERVERS {
        return Err(Error::InvalidParam(format!("at most {MAX_NOTARY_SERVERS} servers per query")));
    }
    let now = now_ms();
    let mut tasks = Vec::new();
    for (server_name, criteria) in servers {
        parse_server_name(server_name)?;
        // The strictest criterion of any key asked for; none means "valid now".
        let minimum = criteria
            .as_object()
            .into_iter()
            .flat_map(|keys| keys.values())
            .filter_map(|criterion| criterion.get("minimum_valid_until_ts").and_then(Value::as_i64))
            .max()
            .unwrap_or(now);
        let (app, server_name) = (app.clone(), server_name.clone());
        tasks.push(app.executor.clone().spawn(async move { server_keys(&app, &server_name, minimum).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        if let Some(answer) = task.await? {
            answers.push(answer);
        }
    }
    notary_response(app, answers)
}
