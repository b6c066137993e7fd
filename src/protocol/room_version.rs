//! Room versions 1 to 12: what each one changes, as a table of flags.
//!
//! Every rule that differs between room versions asks a [`RoomVersion`] instead of
//! comparing version strings. Spec: <https://spec.matrix.org/latest/rooms/>.

/// How event IDs are formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventIdFormat {
    /// v1, v2: `$opaque:server`, chosen by the origin and carried in the event.
    V1,
    /// v3: `$` + standard unpadded base64 of the reference hash.
    V2,
    /// v4+: `$` + URL-safe unpadded base64 of the reference hash.
    V3,
}

/// Which state resolution algorithm the room uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateResVersion {
    /// Room v1 only.
    V1,
    /// Rooms v2 to v11.
    V2,
    /// Room v12: v2 with the empty-set start and repeated auth-chain fixes.
    V2_1,
}

/// The properties of one room version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomVersion {
    /// The version string, as in `m.room.create`'s `room_version`.
    pub id: &'static str,
    /// Whether the spec marks it stable.
    pub stable: bool,
    pub event_id_format: EventIdFormat,
    pub state_res: StateResVersion,
    /// v5+: a signing key must be valid at the event's origin_server_ts.
    pub enforce_key_validity: bool,
    /// v1-v5: `m.room.aliases` has its own auth rule and redaction rule.
    pub special_case_aliases: bool,
    /// v6+: events with floats or integers out of canonical range are rejected.
    pub strict_canonical_json: bool,
    /// v6+: `notifications` in power levels is checked by the auth rules (the
    /// redaction algorithm does not keep it in any version).
    pub limit_notifications_power_levels: bool,
    /// v7+: the `knock` join rule and membership.
    pub knock_join_rule: bool,
    /// v8+: the `restricted` join rule.
    pub restricted_join_rule: bool,
    /// v9+: redaction keeps `join_authorised_via_users_server` in member events.
    pub restricted_join_rule_fix: bool,
    /// v10+: the `knock_restricted` join rule.
    pub knock_restricted_join_rule: bool,
    /// v10+: power level values must be integers, not strings.
    pub integer_power_levels: bool,
    /// v11+: the redaction algorithm of MSC2176/MSC3821/MSC3989.
    pub updated_redaction_rules: bool,
    /// v11+: `m.room.create` has no `creator`; the sender is the creator.
    pub implicit_room_creator: bool,
    /// v11+: `redacts` moves from the top level into `content`.
    pub redacts_in_content: bool,
    /// v12: the room ID is `!` + the create event's reference hash; the create
    /// event has no `room_id` and is not listed in `auth_events`.
    pub room_id_from_create_event: bool,
    /// v12: the creator(s) (sender + `additional_creators`) hold unlimited power
    /// and cannot appear in power level `users`.
    pub privileged_creators: bool,
}

const V1: RoomVersion = RoomVersion {
    id: "1",
    stable: true,
    event_id_format: EventIdFormat::V1,
    state_res: StateResVersion::V1,
    enforce_key_validity: false,
    special_case_aliases: true,
    strict_canonical_json: false,
    limit_notifications_power_levels: false,
    knock_join_rule: false,
    restricted_join_rule: false,
    restricted_join_rule_fix: false,
    knock_restricted_join_rule: false,
    integer_power_levels: false,
    updated_redaction_rules: false,
    implicit_room_creator: false,
    redacts_in_content: false,
    room_id_from_create_event: false,
    privileged_creators: false,
};
const V2: RoomVersion = RoomVersion {
    id: "2",
    state_res: StateResVersion::V2,
    ..V1
};
const V3: RoomVersion = RoomVersion {
    id: "3",
    event_id_format: EventIdFormat::V2,
    ..V2
};
const V4: RoomVersion = RoomVersion {
    id: "4",
    event_id_format: EventIdFormat::V3,
    ..V3
};
const V5: RoomVersion = RoomVersion {
    id: "5",
    enforce_key_validity: true,
    ..V4
};
const V6: RoomVersion = RoomVersion {
    id: "6",
    special_case_aliases: false,
    strict_canonical_json: true,
    limit_notifications_power_levels: true,
    ..V5
};
const V7: RoomVersion = RoomVersion {
    id: "7",
    knock_join_rule: true,
    ..V6
};
const V8: RoomVersion = RoomVersion {
    id: "8",
    restricted_join_rule: true,
    ..V7
};
const V9: RoomVersion = RoomVersion {
    id: "9",
    restricted_join_rule_fix: true,
    ..V8
};
const V10: RoomVersion = RoomVersion {
    id: "10",
    knock_restricted_join_rule: true,
    integer_power_levels: true,
    ..V9
};
const V11: RoomVersion = RoomVersion {
    id: "11",
    updated_redaction_rules: true,
    implicit_room_creator: true,
    redacts_in_content: true,
    ..V10
};
const V12: RoomVersion = RoomVersion {
    id: "12",
    state_res: StateResVersion::V2_1,
    room_id_from_create_event: true,
    privileged_creators: true,
    ..V11
};

/// Every room version this server understands, oldest first.
pub const ALL: [RoomVersion; 12] = [V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12];

/// The version new rooms get unless the operator or the request says otherwise
/// (the spec's current recommendation).
pub const DEFAULT: &str = "12";

impl RoomVersion {
    /// Looks up a version by its string; `None` for versions we do not know.
    pub fn from_id(id: &str) -> Option<RoomVersion> {
        ALL.iter().find(|version| version.id == id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_is_found_by_its_id() {
        for (index, version) in ALL.iter().enumerate() {
            assert_eq!(version.id, (index + 1).to_string());
            assert_eq!(RoomVersion::from_id(version.id), Some(*version));
        }
        assert_eq!(RoomVersion::from_id("13"), None);
        assert_eq!(RoomVersion::from_id("org.example.custom"), None);
    }

    #[test]
    fn flags_follow_the_spec_table() {
        let v = |id| RoomVersion::from_id(id).unwrap();
        assert_eq!(v("2").state_res, StateResVersion::V2);
        assert_eq!(v("3").event_id_format, EventIdFormat::V2);
        assert_eq!(v("4").event_id_format, EventIdFormat::V3);
        assert!(!v("6").special_case_aliases && v("5").special_case_aliases);
        assert!(v("7").knock_join_rule && !v("6").knock_join_rule);
        assert!(v("10").integer_power_levels && !v("9").integer_power_levels);
        assert!(v("11").redacts_in_content && !v("10").redacts_in_content);
        assert!(v("12").privileged_creators && v("12").state_res == StateResVersion::V2_1);
        assert!(RoomVersion::from_id(DEFAULT).is_some());
    }
}
