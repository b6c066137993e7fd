//! Push rules and pushers: a user's own rules (ordered within each kind),
//! their changes to server-default rules, and the pushers clients register.
//!
//! The server-default rules themselves are not stored: they come from the
//! protocol core, and only a user's changes to them live here.

use rusqlite::{OptionalExtension, Row, params};
use serde_json::Value;

use super::{Storage, now_ms};
use crate::error::Result;
use crate::protocol::push_rules::{DefaultChange, Kind, PushRule};

/// Migration 13: a pusher belongs to the device whose access token set it
/// and is deleted with it (logout, device deletion, a password change that
/// logs other devices out), as the spec asks; pushers of devices already
/// gone are dropped.
pub(super) const PUSHERS_FOLLOW_DEVICES: &str = r#"
    CREATE TRIGGER pushers_of_deleted_devices AFTER DELETE ON devices
    BEGIN
        DELETE FROM pushers WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    END;
    DELETE FROM pushers WHERE device_id IS NOT NULL AND NOT EXISTS
        (SELECT 1 FROM devices WHERE devices.user_id = pushers.user_id AND devices.device_id = pushers.device_id);
"#;

/// Migration 16: notifications waiting for a push gateway, per pusher
/// (named by its key, not its rowid, which `VACUUM INTO` may change), oldest first; written in the transaction that stores
/// the event, so a restart or crash loses none. A pusher's queue goes with it.
pub(super) const PUSH_QUEUE: &str = r#"
    CREATE TABLE push_queue (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     TEXT NOT NULL,
        app_id      TEXT NOT NULL,
        pushkey     TEXT NOT NULL,
        event_id    TEXT NOT NULL,
        room_id     TEXT NOT NULL,
        tweaks      TEXT NOT NULL,
        high        INTEGER NOT NULL,
        created_ts  INTEGER NOT NULL
    );
    CREATE INDEX push_queue_by_pusher ON push_queue(user_id, app_id, pushkey, id);
    CREATE TRIGGER push_queue_of_deleted_pushers AFTER DELETE ON pushers
    BEGIN
        DELETE FROM push_queue
        WHERE user_id = OLD.user_id AND app_id = OLD.app_id AND pushkey = OLD.pushkey;
    END;
"#;

/// A pusher's queue keeps at most this many notifications; past it the
/// oldest go (a phone away for days needs the latest badge, not every
/// message). Each row is a few hundred bytes.
pub const MAX_QUEUED_PER_PUSHER: i64 = 1000;

/// A notification to queue for one pusher (the event is the one stored with it).
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedPush {
    pub pusher: PusherKey,
    /// The `tweaks` of the matching rule's actions, as JSON text.
    pub tweaks: String,
    /// Whether the notification goes with `prio: high`.
    pub high: bool,
}

/// What names a pusher: spec, `app_id` and `pushkey` for a user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PusherKey {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
}

/// A queued notification.
#[derive(Clone, Debug, PartialEq)]
pub struct PushQueued {
    pub id: i64,
    pub event_id: String,
    pub room_id: String,
    pub tweaks: String,
    pub high: bool,
    pub created_ts: i64,
}

/// Queues `pushes` for an event inside the transaction storing it, trimming
/// each pusher's queue to [`MAX_QUEUED_PER_PUSHER`].
pub(super) fn enqueue_pushes(
    transaction: &rusqlite::Connection,
    event_id: &str,
    room_id: &str,
    pushes: &[QueuedPush],
) -> Result<()> {
    let now = now_ms();
    let mut insert = transaction.prepare_cached(
        "INSERT INTO push_queue (user_id, app_id, pushkey, event_id, room_id, tweaks, high, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut trim = transaction.prepare_cached(
        "DELETE FROM push_queue WHERE id IN (SELECT id FROM push_queue
         WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3 ORDER BY id DESC LIMIT -1 OFFSET ?4)",
    )?;
    for push in pushes {
        let key = &push.pusher;
        insert.execute(params![
            key.user_id,
            key.app_id,
            key.pushkey,
            event_id,
            room_id,
            push.tweaks,
            push.high,
            now
        ])?;
        let dropped = trim.execute(params![key.user_id, key.app_id, key.pushkey, MAX_QUEUED_PER_PUSHER])?;
        if dropped > 0 {
            log::warn!(
                "the push queue of {} ({}) is full: dropped its oldest notification",
                key.user_id,
                key.app_id
            );
        }
    }
    Ok(())
}

/// One pusher. Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3pushers>.
#[derive(Clone, Debug, PartialEq)]
pub struct Pusher {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The `data` object as JSON text.
    pub data: String,
    /// The device whose access token set the pusher.
    pub device_id: Option<String>,
}

fn json_list(text: Option<String>) -> Vec<Value> {
    text.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

fn rule_from_row(row: &Row<'_>) -> rusqlite::Result<(String, PushRule)> {
    let kind: String = row.get(0)?;
    let rule = PushRule {
        rule_id: row.get(1)?,
        default: false,
        enabled: row.get(5)?,
        conditions: json_list(row.get(2)?),
        pattern: row.get(3)?,
        actions: json_list(row.get(4)?),
    };
    Ok((kind, rule))
}

fn pusher_from_row(row: &Row<'_>) -> rusqlite::Result<Pusher> {
    Ok(Pusher {
        user_id: row.get(0)?,
        app_id: row.get(1)?,
        pushkey: row.get(2)?,
        kind: row.get(3)?,
        app_display_name: row.get(4)?,
        device_display_name: row.get(5)?,
        profile_tag: row.get(6)?,
        lang: row.get(7)?,
        data: row.get(8)?,
        device_id: row.get(9)?,
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<PusherKey> {
    Ok(PusherKey { user_id: row.get(0)?, app_id: row.get(1)?, pushkey: row.get(2)? })
}

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, device_display_name, \
    profile_tag, lang, data, device_id";

impl Storage {
    /// A user's own rules, each kind's most important first.
    pub fn push_rules(&self, user_id: &str) -> Result<Vec<(Kind, PushRule)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT kind, rule_id, conditions, pattern, actions, enabled FROM push_rules
             WHERE user_id = ?1 ORDER BY kind, priority DESC",
        )?;
        let rows = statement.query_map([user_id], rule_from_row)?;
        let mut rules = Vec::new();
        for row in rows {
            let (kind, rule) = row?;
            // A kind this binary does not know (written by a newer one) is skipped.
            if let Some(kind) = Kind::parse(&kind) {
                rules.push((kind, rule));
            }
        }
        Ok(rules)
    }

    /// Replaces a user's rules of one kind with `rules` (most important first).
    pub fn replace_push_rules(&mut self, user_id: &str, kind: Kind, rules: &[PushRule]) -> Result<()> {
        let transaction = self.conn.savepoint()?;
        transaction.execute(
            "DELETE FROM push_rules WHERE user_id = ?1 AND kind = ?2",
            params![user_id, kind.as_str()],
        )?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions, enabled)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (index, rule) in rules.iter().enumerate() {
                let conditions = matches!(kind, Kind::Override | Kind::Underride)
                    .then(|| Value::Array(rule.conditions.clone()).to_string());
                insert.execute(params![
                    user_id,
                    kind.as_str(),
                    rule.rule_id,
                    (rules.len() - index) as i64,
                    conditions,
                    rule.pattern,
                    Value::Array(rule.actions.clone()).to_string(),
                    rule.enabled,
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Deletes one of a user's own rules; false if there was none.
    pub fn delete_push_rule(&self, user_id: &str, kind: Kind, rule_id: &str) -> Result<bool> {
        let deleted = self.conn.execute(
            "DELETE FROM push_rules WHERE user_id = ?1 AND kind = ?2 AND rule_id = ?3",
            params![user_id, kind.as_str(), rule_id],
        )?;
        Ok(deleted > 0)
    }

    /// Enables or disables one of a user's own rules; false if there is none.
    pub fn set_push_rule_enabled(
        &self,
        user_id: &str,
        kind: Kind,
        rule_id: &str,
        enabled: bool,
    ) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE push_rules SET enabled = ?4 WHERE user_id = ?1 AND kind = ?2 AND rule_id = ?3",
            params![user_id, kind.as_str(), rule_id, enabled],
        )?;
        Ok(changed > 0)
    }

    /// Sets the actions of one of a user's own rules; false if there is none.
    pub fn set_push_rule_actions(
        &self,
        user_id: &str,
        kind: Kind,
        rule_id: &str,
        actions: &[Value],
    ) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE push_rules SET actions = ?4 WHERE user_id = ?1 AND kind = ?2 AND rule_id = ?3",
            params![user_id, kind.as_str(), rule_id, Value::Array(actions.to_vec()).to_string()],
        )?;
        Ok(changed > 0)
    }

    /// A user's changes to server-default rules.
    pub fn push_rule_defaults(&self, user_id: &str) -> Result<Vec<DefaultChange>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = ?1",
        )?;
        let rows = statement.query_map([user_id], |row| {
            let kind: String = row.get(0)?;
            let actions: Option<String> = row.get(3)?;
            Ok((kind, row.get::<_, String>(1)?, row.get::<_, Option<bool>>(2)?, actions))
        })?;
        let mut changes = Vec::new();
        for row in rows {
            let (kind, rule_id, enabled, actions) = row?;
            let Some(kind) = Kind::parse(&kind) else { continue };
            let actions = actions.map(|text| json_list(Some(text)));
            changes.push(DefaultChange { kind, rule_id, enabled, actions });
        }
        Ok(changes)
    }

    /// Records a change to a server-default rule; `None` leaves that part as
    /// it was.
    pub fn set_push_rule_default(
        &self,
        user_id: &str,
        kind: Kind,
        rule_id: &str,
        enabled: Option<bool>,
        actions: Option<&[Value]>,
    ) -> Result<()> {
        let actions = actions.map(|actions| Value::Array(actions.to_vec()).to_string());
        self.conn.execute(
            "INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled, actions) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET
                enabled = COALESCE(excluded.enabled, enabled), actions = COALESCE(excluded.actions, actions)",
            params![user_id, kind.as_str(), rule_id, enabled, actions],
        )?;
        Ok(())
    }

    /// Creates or updates a pusher. Unless `append`, pushers of other users
    /// with the same app ID and pushkey are removed (spec: `append`).
    pub fn set_pusher(&self, pusher: &Pusher, append: bool) -> Result<()> {
        if !append {
            self.conn.execute(
                "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id != ?3",
                params![pusher.app_id, pusher.pushkey, pusher.user_id],
            )?;
        }
        self.conn.execute(
            "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name,
                profile_tag, lang, data, device_id, created_ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind,
                app_display_name = excluded.app_display_name,
                device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,
                lang = excluded.lang, data = excluded.data, device_id = excluded.device_id",
            params![
                pusher.user_id,
                pusher.app_id,
                pusher.pushkey,
                pusher.kind,
                pusher.app_display_name,
                pusher.device_display_name,
                pusher.profile_tag,
                pusher.lang,
                pusher.data,
                pusher.device_id,
                now_ms(),
            ],
        )?;
        Ok(())
    }

    /// Deletes a user's pusher; false if there was none.
    pub fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
        let deleted = self.conn.execute(
            "DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
            params![user_id, app_id, pushkey],
        )?;
        Ok(deleted > 0)
    }

    /// The `http` pushers of some users (the local members an event is
    /// evaluated for), by user: read per user, so a room's other members
    /// cost nothing.
    pub fn http_pushers_of(&self, user_ids: &[&str]) -> Result<Vec<PusherKey>> {
        match user_ids {
            [] => return Ok(Vec::new()),
            // One user (each invite): by the index, without a JSON list.
            [user_id] => {
                let mut statement = self.conn.prepare_cached(
                    "SELECT user_id, app_id, pushkey FROM pushers
                     WHERE user_id = ?1 AND kind = 'http' ORDER BY app_id, pushkey",
                )?;
                let rows = statement.query_map([user_id], key_from_row)?;
                return Ok(rows.collect::<Result<_, _>>()?);
            }
            _ => {}
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT user_id, app_id, pushkey FROM pushers
             WHERE user_id IN (SELECT value FROM json_each(?1)) AND kind = 'http'
             ORDER BY user_id, app_id, pushkey",
        )?;
        let rows = statement.query_map([super::batch::string_list(user_ids)], key_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A pusher by key, with when it was set (ms).
    pub fn pusher_by_key(&self, key: &PusherKey) -> Result<Option<(Pusher, i64)>> {
        let sql = format!(
            "SELECT {PUSHER_COLUMNS}, created_ts FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        Ok(statement
            .query_row(params![key.user_id, key.app_id, key.pushkey], |row| {
                Ok((pusher_from_row(row)?, row.get(10)?))
            })
            .optional()?)
    }

    /// How many notifications are queued, for every pusher (for metrics).
    pub fn push_queue_depth(&self) -> Result<i64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM push_queue")?.query_row([], |row| row.get(0))?)
    }

    /// The pushers with notifications queued.
    pub fn pushers_with_queue(&self) -> Result<Vec<PusherKey>> {
        let mut statement =
            self.conn.prepare_cached("SELECT DISTINCT user_id, app_id, pushkey FROM push_queue")?;
        let rows = statement.query_map([], key_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The oldest notification queued for a pusher.
    pub fn next_push(&self, key: &PusherKey) -> Result<Option<PushQueued>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, event_id, room_id, tweaks, high, created_ts FROM push_queue
             WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3 ORDER BY id LIMIT 1",
        )?;
        Ok(statement
            .query_row(params![key.user_id, key.app_id, key.pushkey], |row| {
                Ok(PushQueued {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    room_id: row.get(2)?,
                    tweaks: row.get(3)?,
                    high: row.get(4)?,
                    created_ts: row.get(5)?,
                })
            })
            .optional()?)
    }

    /// Queues a count-only notification (no event: empty `event_id`) for
    /// each pusher, unless one waits already (its counts are those of when
    /// it is sent, so one is enough).
    pub fn enqueue_badge(&self, keys: &[PusherKey]) -> Result<()> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO push_queue (user_id, app_id, pushkey, event_id, room_id, tweaks, high, created_ts)
             SELECT ?1, ?2, ?3, '', '', '{}', 0, ?4 WHERE NOT EXISTS (SELECT 1 FROM push_queue
                WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3 AND event_id = '')",
        )?;
        let now = now_ms();
        for key in keys {
            insert.execute(params![key.user_id, key.app_id, key.pushkey, now])?;
        }
        Ok(())
    }

    /// Removes a queued notification (sent or given up).
    pub fn delete_push(&self, id: i64) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM push_queue WHERE id = ?1")?.execute([id])?;
        Ok(())
    }

    /// Removes a pusher's notifications queued before `created_ts` (given up).
    pub fn delete_pushes_before(&self, key: &PusherKey, created_ts: i64) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM push_queue WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3 AND created_ts < ?4",
            )?
            .execute(params![key.user_id, key.app_id, key.pushkey, created_ts])?)
    }

    /// Removes a pusher's whole queue (the pusher is gone).
    pub fn delete_pushes_of(&self, key: &PusherKey) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM push_queue WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3")?
            .execute(params![key.user_id, key.app_id, key.pushkey])?;
        Ok(())
    }

    /// A user's pushers, oldest first.
    pub fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>> {
        let sql = format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = ?1 ORDER BY created_ts, app_id, pushkey"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map([user_id], pusher_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A pusher of app `app` for `user_id` with `pushkey`, of `kind`.
    fn pusher(user_id: &str, pushkey: &str, kind: &str) -> Pusher {
        Pusher {
            user_id: user_id.into(),
            app_id: "app".into(),
            pushkey: pushkey.into(),
            kind: kind.into(),
            app_display_name: "app".into(),
            device_display_name: "phone".into(),
            profile_tag: None,
            lang: "en".into(),
            data: "{}".into(),
            device_id: None,
        }
    }

    fn rule(rule_id: &str, enabled: bool) -> PushRule {
        PushRule {
            rule_id: rule_id.into(),
            default: false,
            enabled,
            conditions: vec![json!({"kind": "event_match", "key": "type", "pattern": "x"})],
            pattern: None,
            actions: vec![json!("notify")],
        }
    }

    #[test]
    fn rules_keep_their_order_and_changes() {
        let mut storage = super::super::in_memory();
        let rules = [rule("b", true), rule("a", false)];
        storage.replace_push_rules("@u:x", Kind::Override, &rules).unwrap();
        storage.replace_push_rules("@u:x", Kind::Sender, &[rule("@s:x", true)]).unwrap();
        let stored = storage.push_rules("@u:x").unwrap();
        let overrides: Vec<_> =
            stored.iter().filter(|(kind, _)| *kind == Kind::Override).map(|(_, r)| r.clone()).collect();
        assert_eq!(overrides, rules);
        let sender = stored.iter().find(|(kind, _)| *kind == Kind::Sender).unwrap();
        assert!(sender.1.conditions.is_empty(), "only override/underride rules keep conditions");

        assert!(storage.set_push_rule_enabled("@u:x", Kind::Override, "a", true).unwrap());
        assert!(!storage.set_push_rule_enabled("@u:x", Kind::Underride, "a", true).unwrap());
        assert!(storage.set_push_rule_actions("@u:x", Kind::Override, "b", &[]).unwrap());
        assert!(storage.delete_push_rule("@u:x", Kind::Sender, "@s:x").unwrap());
        assert!(!storage.delete_push_rule("@u:x", Kind::Sender, "@s:x").unwrap());
        let stored = storage.push_rules("@u:x").unwrap();
        assert_eq!(stored.len(), 2);
        assert!(stored[0].1.actions.is_empty() && stored[1].1.enabled);

        storage.set_push_rule_default("@u:x", Kind::Underride, ".m.rule.message", Some(false), None).unwrap();
        storage
            .set_push_rule_default("@u:x", Kind::Underride, ".m.rule.message", None, Some(&[json!("notify")]))
            .unwrap();
        let changes = storage.push_rule_defaults("@u:x").unwrap();
        assert_eq!(
            changes,
            [DefaultChange {
                kind: Kind::Underride,
                rule_id: ".m.rule.message".into(),
                enabled: Some(false),
                actions: Some(vec![json!("notify")]),
            }]
        );
    }

    /// One user's `http` pushers read alone are the ones read among others;
    /// an email pusher is none of them.
    #[test]
    fn http_pushers_of_one_user_or_several() {
        let storage = super::super::in_memory();
        for (user_id, pushkey, kind) in
            [("@a:x", "k2", "http"), ("@a:x", "k1", "http"), ("@a:x", "mail", "email"), ("@b:x", "k", "http")]
        {
            storage.set_pusher(&pusher(user_id, pushkey, kind), false).unwrap();
        }
        let keys = |keys: Vec<PusherKey>| -> Vec<(String, String)> {
            keys.into_iter().map(|key| (key.user_id, key.pushkey)).collect()
        };
        let alone = keys(storage.http_pushers_of(&["@a:x"]).unwrap());
        assert_eq!(alone, [("@a:x".to_string(), "k1".to_string()), ("@a:x".into(), "k2".into())]);
        let among = keys(storage.http_pushers_of(&["@b:x", "@a:x", "@c:x"]).unwrap());
        assert_eq!(among[..2], alone[..]);
        assert_eq!(among.len(), 3);
        assert!(storage.http_pushers_of(&["@c:x"]).unwrap().is_empty());
    }

    #[test]
    fn push_queues_are_bounded_deduplicated_and_go_with_their_pusher() {
        let storage = super::super::in_memory();
        storage.set_pusher(&pusher("@a:x", "key", "http"), false).unwrap();
        let key = PusherKey { user_id: "@a:x".into(), app_id: "app".into(), pushkey: "key".into() };
        let push = QueuedPush { pusher: key.clone(), tweaks: "{}".into(), high: true };
        for n in 0..MAX_QUEUED_PER_PUSHER + 5 {
            enqueue_pushes(&storage.conn, &format!("$e{n}"), "!r:x", std::slice::from_ref(&push)).unwrap();
        }
        let count = |storage: &Storage| -> i64 {
            storage.conn.query_row("SELECT count(*) FROM push_queue", [], |row| row.get(0)).unwrap()
        };
        assert_eq!(count(&storage), MAX_QUEUED_PER_PUSHER, "the oldest are dropped");
        assert_eq!(storage.next_push(&key).unwrap().unwrap().event_id, "$e5");
        assert_eq!(storage.pushers_with_queue().unwrap(), std::slice::from_ref(&key));
        storage.enqueue_badge(std::slice::from_ref(&key)).unwrap();
        storage.enqueue_badge(std::slice::from_ref(&key)).unwrap();
        assert_eq!(count(&storage), MAX_QUEUED_PER_PUSHER + 1, "one count-only notification waits at most");
        assert!(storage.delete_pusher("@a:x", "app", "key").unwrap());
        assert_eq!(count(&storage), 0, "the queue goes with its pusher");
    }

    #[test]
    fn pushers_replace_other_users_unless_appended() {
        let storage = super::super::in_memory();
        let pusher = |user: &str, name: &str| Pusher {
            user_id: user.into(),
            app_id: "com.example.app".into(),
            pushkey: "key".into(),
            kind: "http".into(),
            app_display_name: name.into(),
            device_display_name: "phone".into(),
            profile_tag: None,
            lang: "en".into(),
            data: json!({"url": "https://push.example/_matrix/push/v1/notify"}).to_string(),
            device_id: Some("DEV".into()),
        };
        storage.set_pusher(&pusher("@a:x", "one"), false).unwrap();
        storage.set_pusher(&pusher("@a:x", "two"), false).unwrap();
        assert_eq!(storage.pushers("@a:x").unwrap(), [pusher("@a:x", "two")]);
        storage.set_pusher(&pusher("@b:x", "b"), true).unwrap();
        assert_eq!(storage.pushers("@a:x").unwrap().len(), 1, "append keeps the other user's pusher");
        storage.set_pusher(&pusher("@b:x", "b"), false).unwrap();
        assert!(storage.pushers("@a:x").unwrap().is_empty());
        assert!(storage.delete_pusher("@b:x", "com.example.app", "key").unwrap());
        assert!(storage.pushers("@b:x").unwrap().is_empty());
    }
}
