//! A user's push rules as the server keeps them: loading the merged ruleset
//! (server defaults, the user's changes to them, the user's own rules),
//! changing it, and publishing it as `m.push_rules` account data so that
//! `/sync` carries every change.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#push-rules-api>,
//! <https://spec.matrix.org/latest/client-server-api/#push-rules-events>.
//! The rules drive the unread counts of `/sync`, `GET /notifications` and
//! what is sent to push gateways (`push_actions`, `push_queue`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::protocol::push_rules::{self, Kind, PlaceError, PushRule, Ruleset};
use crate::rooms::Engine;

/// The account data type that carries the ruleset.
pub const ACCOUNT_DATA_TYPE: &str = "m.push_rules";

/// Users whose rules are kept in memory at most; past this the cache starts
/// over. A merged ruleset (the defaults are most of it) is a few KiB, so
/// this bounds the cache to a MiB or two; a board with more active local
/// users reads some rules again, two short queries each.
const MAX_CACHED_USERS: usize = 256;

/// What push rule evaluation needs of a user: their merged ruleset and the
/// users they ignore.
pub struct UserRules {
    pub ruleset: Ruleset,
    /// Spec: an ignored user's events are not delivered, so they notify no one.
    pub ignored: HashSet<String>,
}

/// Each recipient's [`UserRules`], read once and kept until their rules or
/// ignore list change ([`Cache::forget_user`]): every stored event evaluates
/// the rules of each local member.
#[derive(Default)]
pub struct Cache {
    users: RefCell<HashMap<String, Rc<UserRules>>>,
}

impl Cache {
    /// Forgets the user's rules (their push rules or ignore list changed).
    pub fn forget_user(&self, user_id: &str) {
        self.users.borrow_mut().remove(user_id);
    }

    /// The user's rules, from memory or read now.
    pub fn of(&self, app: &Engine, user_id: &str) -> Result<Rc<UserRules>> {
        if let Some(rules) = self.users.borrow().get(user_id) {
            return Ok(rules.clone());
        }
        let rules = Rc::new(UserRules {
            ruleset: ruleset(app, user_id)?,
            ignored: super::visibility::ignored_users(app, user_id)?,
        });
        let mut users = self.users.borrow_mut();
        if users.len() >= MAX_CACHED_USERS {
            users.clear();
        }
        users.insert(user_id.to_owned(), rules.clone());
        Ok(rules)
    }
}

/// The user's global ruleset.
pub fn ruleset(app: &Engine, user_id: &str) -> Result<Ruleset> {
    let changes = app.storage().push_rule_defaults(user_id)?;
    let own = app.storage().push_rules(user_id)?;
    Ok(Ruleset::merged(user_id, &changes, own))
}

/// The content of the `m.push_rules` account data event.
pub fn account_data_content(ruleset: &Ruleset) -> Value {
    json!({ "global": ruleset.to_json() })
}

/// Writes the current ruleset as `m.push_rules` account data at a new stream
/// position and wakes the user's syncs.
fn publish(app: &Engine, user_id: &str) -> Result<()> {
    let content = account_data_content(&ruleset(app, user_id)?).to_string();
    let stream_id = app.next_stream_id();
    app.storage().set_account_data(user_id, "", ACCOUNT_DATA_TYPE, &content, stream_id)?;
    app.push_rules.forget_user(user_id);
    app.notifier.wake([user_id]);
    Ok(())
}

/// Creates or updates one of the user's own rules (`rule.rule_id` must not be
/// a server-default ID; the caller checked).
pub fn put_rule(
    app: &Engine,
    user_id: &str,
    kind: Kind,
    rule: PushRule,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<()> {
    let mut list: Vec<PushRule> = app
        .storage()
        .push_rules(user_id)?
        .into_iter()
        .filter(|(rule_kind, _)| *rule_kind == kind)
        .map(|(_, rule)| rule)
        .collect();
    push_rules::place_rule(&mut list, rule, before, after).map_err(|error| match error {
        // Spec: 400 M_UNKNOWN "before/after rule not found".
        PlaceError::UnknownAnchor(id) => {
            Error::matrix(400, "M_UNKNOWN", format!("before/after rule not found: {id}"))
        }
        PlaceError::DefaultAnchor(id) => {
            Error::InvalidParam(format!("rules cannot be placed relative to the server-default rule {id}"))
        }
    })?;
    app.storage().replace_push_rules(user_id, kind, &list)?;
    publish(app, user_id)
}

/// Deletes one of the user's own rules. Server-default rules cannot be deleted.
pub fn delete_rule(app: &Engine, user_id: &str, kind: Kind, rule_id: &str) -> Result<()> {
    if rule_id.starts_with('.') && Ruleset::defaults(user_id).find(kind, rule_id).is_some() {
        return Err(Error::InvalidParam("server-default rules cannot be deleted".into()));
    }
    if !app.storage().delete_push_rule(user_id, kind, rule_id)? {
        return Err(not_found());
    }
    publish(app, user_id)
}

/// What `PUT .../enabled` or `PUT .../actions` changes.
pub enum Attribute {
    Enabled(bool),
    Actions(Vec<Value>),
}

/// Enables, disables or sets the actions of a rule, default or own.
pub fn set_attribute(
    app: &Engine,
    user_id: &str,
    kind: Kind,
    rule_id: &str,
    attribute: Attribute,
) -> Result<()> {
    let is_default = rule_id.starts_with('.');
    let found = if is_default {
        let exists = Ruleset::defaults(user_id).find(kind, rule_id).is_some();
        if exists {
            let (enabled, actions) = match &attribute {
                Attribute::Enabled(enabled) => (Some(*enabled), None),
                Attribute::Actions(actions) => (None, Some(actions.as_slice())),
            };
            app.storage().set_push_rule_default(user_id, kind, rule_id, enabled, actions)?;
        }
        exists
    } else {
        match &attribute {
            Attribute::Enabled(enabled) => {
                app.storage().set_push_rule_enabled(user_id, kind, rule_id, *enabled)?
            }
            Attribute::Actions(actions) => {
                app.storage().set_push_rule_actions(user_id, kind, rule_id, actions)?
            }
        }
    };
    if !found {
        return Err(not_found());
    }
    publish(app, user_id)
}

/// Spec: 404 M_NOT_FOUND "The push rule was not found".
pub fn not_found() -> Error {
    Error::NotFound("the push rule was not found".into())
}
