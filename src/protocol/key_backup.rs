//! Server-side key backup wire formats and the rule that decides whether an
//! uploaded session key replaces the one already stored. Pure: no storage.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#server-side-key-backups>.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One backed-up session key (`KeyBackupData`).
///
/// Spec: <https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid>.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct KeyBackupData {
    pub first_message_index: u64,
    pub forwarded_count: u64,
    pub is_verified: bool,
    /// Algorithm-dependent and encrypted: the server stores it as it came.
    pub session_data: Map<String, Value>,
}

/// The body of `PUT /room_keys/keys/{roomId}` (`RoomKeyBackup`).
#[derive(Debug, Deserialize)]
pub struct RoomKeyBackup {
    pub sessions: BTreeMap<String, KeyBackupData>,
}

/// The body of `PUT /room_keys/keys`.
#[derive(Debug, Deserialize)]
pub struct KeysBackup {
    pub rooms: BTreeMap<String, RoomKeyBackup>,
}

/// What the replacement rule compares: a session key's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRank {
    pub is_verified: bool,
    pub first_message_index: u64,
    pub forwarded_count: u64,
}

impl From<&KeyBackupData> for SessionRank {
    fn from(data: &KeyBackupData) -> SessionRank {
        SessionRank {
            is_verified: data.is_verified,
            first_message_index: data.first_message_index,
            forwarded_count: data.forwarded_count,
        }
    }
}

/// Whether an uploaded key replaces the stored one, per the spec's rule:
/// keep the key with `is_verified` true; if equal, the lower
/// `first_message_index`; if equal too, the lower `forwarded_count`.
/// The spec is silent on a key equal on all three: as in Synapse, the stored
/// one stays (so uploading the same key again changes nothing, not even the
/// etag).
pub fn replaces(stored: SessionRank, uploaded: SessionRank) -> bool {
    if stored.is_verified != uploaded.is_verified {
        return uploaded.is_verified;
    }
    if stored.first_message_index != uploaded.first_message_index {
        return uploaded.first_message_index < stored.first_message_index;
    }
    uploaded.forwarded_count < stored.forwarded_count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(is_verified: bool, first_message_index: u64, forwarded_count: u64) -> SessionRank {
        SessionRank { is_verified, first_message_index, forwarded_count }
    }

    #[test]
    fn verified_wins_over_everything_else() {
        assert!(replaces(rank(false, 0, 0), rank(true, 9, 9)));
        assert!(!replaces(rank(true, 9, 9), rank(false, 0, 0)));
    }

    #[test]
    fn then_the_lower_first_message_index() {
        assert!(replaces(rank(true, 5, 0), rank(true, 2, 7)));
        assert!(!replaces(rank(true, 2, 7), rank(true, 5, 0)));
    }

    #[test]
    fn then_the_lower_forwarded_count_and_a_tie_keeps_the_stored_key() {
        assert!(replaces(rank(false, 3, 2), rank(false, 3, 1)));
        assert!(!replaces(rank(false, 3, 1), rank(false, 3, 2)));
        assert!(!replaces(rank(false, 3, 1), rank(false, 3, 1)));
    }

    #[test]
    fn key_backup_data_needs_every_field() {
        let good = serde_json::json!({
            "first_message_index": 1, "forwarded_count": 0, "is_verified": false,
            "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"},
        });
        assert!(serde_json::from_value::<KeyBackupData>(good).is_ok());
        let missing = serde_json::json!({"first_message_index": 1, "session_data": {}});
        assert!(serde_json::from_value::<KeyBackupData>(missing).is_err());
    }
}
