//! Push rules and pushers: `GET /pushrules/`, `GET/PUT/DELETE
//! /pushrules/global/{kind}/{ruleId}` with its `/enabled` and `/actions`,
//! `GET /pushers` and `POST /pushers/set`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#push-rules-api>,
//! <https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3pushersset>.
//!
//! Pushers are stored and listed here; the notifications they ask for are
//! queued by `rooms::push_queue` and sent by `remote::push`.

use http_types::Method;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::push_rules::{self, Kind, PushRule};
use crate::request::{Request, Response};
use crate::rooms::push::{self as rules, Attribute};
use crate::storage::Pusher;

/// Spec (`POST /pushers/set`): `app_id` is at most 64 characters.
const MAX_APP_ID_CHARS: usize = 64;
/// Spec (`POST /pushers/set`): `pushkey` is at most 512 bytes.
const MAX_PUSHKEY_BYTES: usize = 512;
/// Pushers per user at most: each one is a sender and a request per
/// notification, so an account cannot turn the server into a flood of
/// requests to some URL (a household's phones and tablets need a few).
const MAX_PUSHERS_PER_USER: usize = 32;
/// A pusher's `data` at most (serialised): it goes into every notification
/// (Sygnal's `default_payload` for iOS is the largest use, well under this).
const MAX_DATA_BYTES: usize = 16 * 1024;
/// Spec: an http pusher's URL has this path.
const PUSH_GATEWAY_PATH: &str = "/_matrix/push/v1/notify";

/// Routes `/pushrules...`; `path` is what follows `pushrules`. The paths
/// and refusals follow the spec's push rules API as the reference server
/// serves it: listings end in a slash (`/pushrules/`, `/pushrules/global/`,
/// `/pushrules/global/{kind}/`), the same paths without the slash, unknown
/// scopes, kinds and attributes answer 400 `M_UNRECOGNIZED`, an unknown
/// rule 404 `M_NOT_FOUND`.
pub fn route(app: &App, request: &Request, path: &[&str]) -> Result<Response> {
    if path.is_empty() {
        // `/pushrules` without a slash names no endpoint at all.
        return Err(Error::Unrecognized { method_not_allowed: false });
    }
    let owner = app.authenticate(request)?;
    match request.method {
        Method::Get => get(app, &owner.user_id, path),
        Method::Put | Method::Delete => {
            let (kind, rule_id, attribute) = rule_path(path)?;
            match (&request.method, attribute) {
                (Method::Put, None) => put_rule(app, request, &owner.user_id, kind, rule_id),
                (Method::Put, Some(attribute)) => {
                    let kind = Kind::parse(kind).ok_or_else(|| unrecognized("unknown push rule kind"))?;
                    put_attribute(app, request, &owner.user_id, kind, rule_id, attribute)
                }
                (_, None) => {
                    let kind = Kind::parse(kind).ok_or_else(rules::not_found)?;
                    rules::delete_rule(app, &owner.user_id, kind, rule_id)?;
                    Ok(Response::ok(json!({})))
                }
                (_, Some(_)) => Err(unrecognized("rule attributes cannot be deleted")),
            }
        }
        _ => Err(Error::Unrecognized { method_not_allowed: true }),
    }
}

/// 400 `M_UNRECOGNIZED`: a push rules path that names nothing.
fn unrecognized(message: &str) -> Error {
    Error::matrix(400, "M_UNRECOGNIZED", message)
}

const TRAILING_SLASH: &str = "unrecognised request: you probably wanted a trailing slash";

/// `GET /pushrules/...`: the rulesets, one ruleset, one kind's rules, one
/// rule, or one attribute of a rule (`{attribute: value}`).
fn get(app: &App, user_id: &str, path: &[&str]) -> Result<Response> {
    let ruleset = rules::ruleset(app, user_id)?;
    let (scope, rest) = path.split_first().ok_or_else(|| unrecognized(TRAILING_SLASH))?;
    match *scope {
        "" => return Ok(Response::ok(rules::account_data_content(&ruleset))),
        "global" => {}
        _ => return Err(unrecognized("the only push rule scope is global")),
    }
    let global = ruleset.to_json();
    let (kind, rest) = rest.split_first().ok_or_else(|| unrecognized(TRAILING_SLASH))?;
    if kind.is_empty() {
        return Ok(Response::ok(global));
    }
    let rules_of_kind = global.get(*kind).ok_or_else(|| unrecognized("unknown push rule kind"))?;
    let (rule_id, rest) = rest.split_first().ok_or_else(|| unrecognized(TRAILING_SLASH))?;
    if rule_id.is_empty() {
        return Ok(Response::ok(rules_of_kind.clone()));
    }
    let rule = rules_of_kind
        .as_array()
        .and_then(|rules| rules.iter().find(|rule| rule["rule_id"] == *rule_id))
        .ok_or_else(rules::not_found)?;
    match rest.first() {
        None => Ok(Response::ok(rule.clone())),
        Some(attribute) => match rule.get(*attribute) {
            Some(value) => Ok(Response::ok(json!({ *attribute: value }))),
            None => Err(unrecognized("unknown push rule attribute")),
        },
    }
}

/// The kind, rule ID and attribute (if any) a `PUT`/`DELETE` path names.
fn rule_path<'a>(path: &[&'a str]) -> Result<(&'a str, &'a str, Option<&'a str>)> {
    match path {
        ["global", kind, rule_id, rest @ ..] if !rule_id.is_empty() => {
            let attribute = rest.first().copied().filter(|attribute| !attribute.is_empty());
            Ok((kind, rule_id, attribute))
        }
        ["global", ..] => Err(unrecognized("the path names no push rule")),
        _ => Err(unrecognized("the only push rule scope is global")),
    }
}

/// `PUT /pushrules/global/{kind}/{ruleId}`.
fn put_rule(app: &App, request: &Request, user_id: &str, kind: &str, rule_id: &str) -> Result<Response> {
    let kind = Kind::parse(kind)
        .ok_or_else(|| Error::matrix(400, "M_UNKNOWN", format!("unknown push rule kind {kind:?}")))?;
    let rule = rule_from_body(request, kind, rule_id)?;
    rules::put_rule(app, user_id, kind, rule, request.query("before"), request.query("after"))?;
    Ok(Response::ok(json!({})))
}

/// Reads and checks the body of `PUT /pushrules/global/{kind}/{ruleId}`.
fn rule_from_body(request: &Request, kind: Kind, rule_id: &str) -> Result<PushRule> {
    // Spec: IDs starting with "." are reserved for server-default rules;
    // slashes and backslashes are not allowed.
    if rule_id.starts_with('.') {
        return Err(Error::InvalidParam(
            "rule IDs starting with '.' are reserved for server-default rules".into(),
        ));
    }
    if rule_id.contains(['/', '\\']) {
        return Err(Error::InvalidParam("rule IDs may not contain slashes or backslashes".into()));
    }
    // A room or sender rule's ID is the room or user it matches; like the
    // reference server, any ID is taken (`#alias:server` matches nothing).
    let body = request.json_object()?;
    let actions = actions_from(&body)?;
    let mut rule = PushRule {
        rule_id: rule_id.to_owned(),
        default: false,
        // Spec: new rules are enabled.
        enabled: true,
        conditions: Vec::new(),
        pattern: None,
        actions,
    };
    match kind {
        Kind::Override | Kind::Underride => {
            rule.conditions = match body.get("conditions") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(conditions)) => conditions.clone(),
                Some(_) => return Err(Error::BadJson("`conditions` must be an array".into())),
            };
            push_rules::validate_conditions(&rule.conditions).map_err(Error::BadJson)?;
        }
        Kind::Content => {
            rule.pattern = match body.get("pattern") {
                Some(Value::String(pattern)) => {
                    push_rules::validate_pattern(pattern).map_err(Error::InvalidParam)?;
                    Some(pattern.clone())
                }
                None | Some(Value::Null) => {
                    return Err(Error::MissingParam("content rules need a `pattern`".into()));
                }
                Some(_) => return Err(Error::BadJson("`pattern` must be a string".into())),
            };
        }
        Kind::Room | Kind::Sender => {}
    }
    Ok(rule)
}

fn actions_from(body: &Map<String, Value>) -> Result<Vec<Value>> {
    let actions = match body.get("actions") {
        Some(Value::Array(actions)) => actions.clone(),
        None | Some(Value::Null) => return Err(Error::MissingParam("`actions` is required".into())),
        Some(_) => return Err(Error::BadJson("`actions` must be an array".into())),
    };
    push_rules::validate_actions(&actions).map_err(Error::InvalidParam)?;
    Ok(actions)
}

/// `PUT /pushrules/global/{kind}/{ruleId}/{enabled|actions}`.
fn put_attribute(
    app: &App,
    request: &Request,
    user_id: &str,
    kind: Kind,
    rule_id: &str,
    attribute: &str,
) -> Result<Response> {
    let body = request.json_object()?;
    let change = match attribute {
        "enabled" => match body.get("enabled") {
            Some(Value::Bool(enabled)) => Attribute::Enabled(*enabled),
            None | Some(Value::Null) => return Err(Error::MissingParam("`enabled` is required".into())),
            Some(_) => return Err(Error::BadJson("`enabled` must be a boolean".into())),
        },
        "actions" => Attribute::Actions(actions_from(&body)?),
        _ => return Err(unrecognized("only `enabled` and `actions` can be set")),
    };
    rules::set_attribute(app, user_id, kind, rule_id, change)?;
    Ok(Response::ok(json!({})))
}

/// `GET /pushers`.
pub fn get_pushers(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let pushers: Vec<Value> = app
        .storage()
        .pushers(&owner.user_id)?
        .into_iter()
        .map(|pusher| {
            let mut object = json!({
                "pushkey": pusher.pushkey,
                "kind": pusher.kind,
                "app_id": pusher.app_id,
                "app_display_name": pusher.app_display_name,
                "device_display_name": pusher.device_display_name,
                "lang": pusher.lang,
                "data": serde_json::from_str::<Value>(&pusher.data).unwrap_or_else(|_| json!({})),
            });
            if let Some(tag) = pusher.profile_tag {
                object["profile_tag"] = json!(tag);
            }
            object
        })
        .collect();
    Ok(Response::ok(json!({ "pushers": pushers })))
}

/// `POST /pushers/set`: creates, updates (`kind` set) or deletes (`kind`
/// null) the user's pusher with this `app_id` and `pushkey`.
pub fn set_pusher(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let body = request.json_object()?;
    let string = |name: &str| -> Result<String> {
        match body.get(name) {
            Some(Value::String(text)) => Ok(text.clone()),
            None | Some(Value::Null) => Err(Error::MissingParam(format!("`{name}` is required"))),
            Some(_) => Err(Error::BadJson(format!("`{name}` must be a string"))),
        }
    };
    let app_id = string("app_id")?;
    let pushkey = string("pushkey")?;
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::InvalidParam(format!("`app_id` is at most {MAX_APP_ID_CHARS} characters")));
    }
    if pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::InvalidParam(format!("`pushkey` is at most {MAX_PUSHKEY_BYTES} bytes")));
    }
    let kind = match body.get("kind") {
        None => return Err(Error::MissingParam("`kind` is required".into())),
        Some(Value::Null) => {
            app.storage().delete_pusher(&owner.user_id, &app_id, &pushkey)?;
            return Ok(Response::ok(json!({})));
        }
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(Error::BadJson("`kind` must be a string or null".into())),
    };
    let data = match body.get("data") {
        Some(Value::Object(data)) => data.clone(),
        None | Some(Value::Null) => return Err(Error::MissingParam("`data` is required".into())),
        Some(_) => return Err(Error::BadJson("`data` must be an object".into())),
    };
    match kind.as_str() {
        "http" => check_gateway_url(data.get("url"))?,
        // Synapse only accepts email pushers for an email address bound to
        // the account; this server binds none.
        "email" => {
            return Err(Error::matrix(
                400,
                "M_THREEPID_NOT_FOUND",
                "no email address is bound to this account",
            ));
        }
        other => return Err(Error::InvalidParam(format!("unknown pusher kind {other:?}"))),
    }
    let profile_tag = match body.get("profile_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(tag)) => Some(tag.clone()),
        Some(_) => return Err(Error::BadJson("`profile_tag` must be a string".into())),
    };
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(append)) => *append,
        Some(_) => return Err(Error::BadJson("`append` must be a boolean".into())),
    };
    let data = Value::Object(data).to_string();
    if data.len() > MAX_DATA_BYTES {
        return Err(Error::InvalidParam(format!("`data` is at most {MAX_DATA_BYTES} bytes")));
    }
    let existing = app.storage().pushers(&owner.user_id)?;
    let is_new = !existing.iter().any(|known| known.app_id == app_id && known.pushkey == pushkey);
    if is_new && existing.len() >= MAX_PUSHERS_PER_USER {
        return Err(Error::InvalidParam(format!("at most {MAX_PUSHERS_PER_USER} pushers per account")));
    }
    let pusher = Pusher {
        user_id: owner.user_id.clone(),
        app_id,
        pushkey,
        kind,
        app_display_name: string("app_display_name")?,
        device_display_name: string("device_display_name")?,
        profile_tag,
        lang: string("lang")?,
        data,
        device_id: Some(owner.device_id.clone()),
    };
    app.storage().set_pusher(&pusher, append)?;
    Ok(Response::ok(json!({})))
}

/// Spec: an http pusher's `data.url` is required and has the path
/// `/_matrix/push/v1/notify`. (The spec asks for HTTPS; like Synapse we also
/// accept plain HTTP, which push gateways on a LAN use: `remote::push`
/// sends over it only to addresses `allow_ips` names.)
fn check_gateway_url(url: Option<&Value>) -> Result<()> {
    let url = match url {
        Some(Value::String(url)) => url,
        None | Some(Value::Null) => {
            return Err(Error::MissingParam("http pushers need `data.url`".into()));
        }
        Some(_) => return Err(Error::BadJson("`data.url` must be a string".into())),
    };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let path = rest.and_then(|rest| rest.find('/').map(|slash| &rest[slash..]));
    let path = path.map(|path| path.split(['?', '#']).next().unwrap_or(path));
    match path {
        Some(PUSH_GATEWAY_PATH) => Ok(()),
        _ => Err(Error::InvalidParam(format!(
            "`data.url` must be an http(s) URL with the path {PUSH_GATEWAY_PATH}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_need_the_notify_path() {
        let check = |url: &str| check_gateway_url(Some(&json!(url))).is_ok();
        assert!(check("https://push.example.org/_matrix/push/v1/notify"));
        assert!(check("http://10.0.0.2:5000/_matrix/push/v1/notify"));
        assert!(check("https://push.example.org/_matrix/push/v1/notify?x=1"));
        assert!(!check("https://push.example.org/"));
        assert!(!check("https://push.example.org"));
        assert!(!check("ftp://push.example.org/_matrix/push/v1/notify"));
        assert!(!check("https://push.example.org/_matrix/push/v1/notify/extra"));
        assert!(check_gateway_url(None).is_err());
    }
}
