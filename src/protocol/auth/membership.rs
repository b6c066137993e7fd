//! Rule 5 of the authorization rules (4 in rooms v6-v11): `m.room.member`
//! events: join, invite (with third-party invites), leave, ban and knock.
//!
//! Spec: <https://spec.matrix.org/latest/rooms/v12/#authorization-rules>,
//! join rules: <https://spec.matrix.org/latest/client-server-api/#mroomjoin_rules>.

use std::ops::Deref;

use serde_json::Value;

use super::{AuthError, SignatureCheck, reject};
use crate::protocol::pdu::Pdu;
use crate::protocol::power_levels::{RoomPower, creators, domain_of};
use crate::protocol::room_version::RoomVersion;

/// `user_id`'s membership in the state, `"leave"` when there is none.
pub(super) fn membership_of<P: Deref<Target = Pdu>>(
    auth_state: &impl Fn(&str, &str) -> Option<P>,
    user_id: &str,
) -> String {
    auth_state("m.room.member", user_id)
        .and_then(|event| event.content.get("membership").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "leave".to_owned())
}

/// The room's join rule; `invite` when there is no `m.room.join_rules` event,
/// as other servers assume.
fn join_rule<P: Deref<Target = Pdu>>(auth_state: &impl Fn(&str, &str) -> Option<P>) -> String {
    auth_state("m.room.join_rules", "")
        .and_then(|event| event.content.get("join_rule").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "invite".to_owned())
}

/// Rule 5: if type is m.room.member.
pub(super) fn check_member<P: Deref<Target = Pdu>>(
    version: &RoomVersion,
    event: &Pdu,
    create: &Pdu,
    power: &RoomPower,
    auth_state: &impl Fn(&str, &str) -> Option<P>,
    signatures: &dyn SignatureCheck,
) -> Result<(), AuthError> {
    // 1. If there is no state_key property, or no membership property in
    //    content, reject.
    let Some(target) = event.state_key.as_deref() else {
        reject!("m.room.member without state_key");
    };
    let Some(membership) = event.content.get("membership").and_then(Value::as_str) else {
        reject!("m.room.member without membership");
    };
    // 2 (since v8). If content has a join_authorised_via_users_server key:
    //   1. If the event is not validly signed by the homeserver of the user
    //      ID denoted by the key, reject.
    let authoriser = event.content.get("join_authorised_via_users_server");
    if version.restricted_join_rule {
        if let Some(authoriser) = authoriser {
            let server = authoriser.as_str().and_then(domain_of);
            if !server.is_some_and(|server| signatures.event_signed_by(event, server)) {
                reject!("not signed by the server of join_authorised_via_users_server");
            }
        }
    }

    let sender = event.sender.as_str();
    let sender_membership = membership_of(auth_state, sender);
    let target_membership = membership_of(auth_state, target);
    let sender_power = power.user_power(sender);
    let target_power = power.user_power(target);

    match membership {
        // 3. If membership is join:
        "join" => {
            // 1. If the only previous event is an m.room.create and the
            //    state_key is the creator (v11+: the sender of the create
            //    event; v12: not the additional creators), allow.
            let creator = if version.implicit_room_creator {
                Some(create.sender.clone())
            } else {
                creators(version, create).into_iter().next()
            };
            if event.prev_events == [create.event_id.clone()] && Some(target) == creator.as_deref() {
                return Ok(());
            }
            // 2. If the sender does not match state_key, reject.
            if sender != target {
                reject!("cannot join on behalf of another user");
            }
            // 3. If the sender is banned, reject.
            if sender_membership == "ban" {
                reject!("sender is banned");
            }
            let join_rule = join_rule(auth_state);
            let invited_or_joined = matches!(sender_membership.as_str(), "invite" | "join");
            // 4. If the join_rule is invite or (since v7) knock then allow if
            //    membership state is invite or join.
            let knock = version.knock_join_rule && join_rule == "knock";
            if (join_rule == "invite" || knock) && invited_or_joined {
                return Ok(());
            }
            // 5 (since v8). If the join_rule is restricted or (since v10)
            //    knock_restricted:
            let restricted = (version.restricted_join_rule && join_rule == "restricted")
                || (version.knock_restricted_join_rule && join_rule == "knock_restricted");
            if restricted {
                // 1. If membership state is join or invite, allow.
                if invited_or_joined {
                    return Ok(());
                }
                // 2. If the join_authorised_via_users_server key in content is
                //    not a user with sufficient permission to invite other
                //    users or is not a joined member of the room, reject.
                let Some(authoriser) = authoriser.and_then(Value::as_str) else {
                    reject!("restricted join without join_authorised_via_users_server");
                };
                if membership_of(auth_state, authoriser) != "join"
                    || !power.has_named_level(authoriser, "invite")
                {
                    reject!("{authoriser} may not authorise joins");
                }
                // 3. Otherwise, allow.
                return Ok(());
            }
            // 6. If the join_rule is public, allow.
            if join_rule == "public" {
                return Ok(());
            }
            // 7. Otherwise, reject.
            reject!("join rule {join_rule} does not let the sender join");
        }
        // 4. If membership is invite:
        "invite" => {
            // 1. If content has a third_party_invite property:
            if let Some(third_party_invite) = event.content.get("third_party_invite") {
                return check_third_party_invite(
                    event,
                    target,
                    &target_membership,
                    third_party_invite,
                    auth_state,
                    signatures,
                );
            }
            // 2. If the sender's current membership state is not join, reject.
            if sender_membership != "join" {
                reject!("sender is not joined to the room");
            }
            // 3. If target user's current membership state is join or ban, reject.
            if matches!(target_membership.as_str(), "join" | "ban") {
                reject!("target is {target_membership}");
            }
            // 4. If the sender's power level is >= the invite level, allow.
            if power.has_named_level(sender, "invite") {
                return Ok(());
            }
            // 5. Otherwise, reject.
            reject!("sender may not invite");
        }
        // 5. If membership is leave:
        "leave" => {
            // 1. If the sender matches state_key, allow if and only if that
            //    user's current membership state is invite, join, or (since
            //    v7) knock.
            if sender == target {
                let knocked = version.knock_join_rule && sender_membership == "knock";
                if matches!(sender_membership.as_str(), "invite" | "join") || knocked {
                    return Ok(());
                }
                reject!("cannot leave from membership {sender_membership}");
            }
            // 2. If the sender's current membership state is not join, reject.
            if sender_membership != "join" {
                reject!("sender is not joined to the room");
            }
            // 3. If the target user's current membership state is ban, and the
            //    sender's power level is less than the ban level, reject.
            if target_membership == "ban" && !power.has_named_level(sender, "ban") {
                reject!("sender may not unban");
            }
            // 4. If the sender's power level is >= the kick level, and the
            //    target user's power level is less than the sender's, allow.
            if power.has_named_level(sender, "kick") && target_power < sender_power {
                return Ok(());
            }
            // 5. Otherwise, reject.
            reject!("sender may not kick {target}");
        }
        // 6. If membership is ban:
        "ban" => {
            // 1. If the sender's current membership state is not join, reject.
            if sender_membership != "join" {
                reject!("sender is not joined to the room");
            }
            // 2. If the sender's power level is >= the ban level, and the
            //    target user's power level is less than the sender's, allow.
            if power.has_named_level(sender, "ban") && target_power < sender_power {
                return Ok(());
            }
            // 3. Otherwise, reject.
            reject!("sender may not ban {target}");
        }
        // 7 (since v7). If membership is knock:
        "knock" if version.knock_join_rule => {
            // 1. If the join_rule is anything other than knock or (since v10)
            //    knock_restricted, reject.
            let join_rule = join_rule(auth_state);
            let knock_restricted = version.knock_restricted_join_rule && join_rule == "knock_restricted";
            if join_rule != "knock" && !knock_restricted {
                reject!("join rule {join_rule} does not allow knocking");
            }
            // 2. If sender does not match state_key, reject.
            if sender != target {
                reject!("cannot knock on behalf of another user");
            }
            // 3. If the sender's current membership is not ban, invite, or
            //    join, allow.
            if !matches!(sender_membership.as_str(), "ban" | "invite" | "join") {
                return Ok(());
            }
            // 4. Otherwise, reject.
            reject!("cannot knock from membership {sender_membership}");
        }
        // 8. Otherwise, the membership is unknown. Reject.
        other => reject!("unknown membership {other}"),
    }
}

/// Rule 5.4.1: an invite carrying `third_party_invite`.
fn check_third_party_invite<P: Deref<Target = Pdu>>(
    event: &Pdu,
    target: &str,
    target_membership: &str,
    third_party_invite: &Value,
    auth_state: &impl Fn(&str, &str) -> Option<P>,
    signatures: &dyn SignatureCheck,
) -> Result<(), AuthError> {
    // 1. If target user is banned, reject.
    if target_membership == "ban" {
        reject!("target is banned");
    }
    // 2. If content.third_party_invite does not have a signed property, reject.
    let Some(signed) = third_party_invite.get("signed") else {
        reject!("third_party_invite without signed");
    };
    // 3. If signed does not have mxid and token properties, reject.
    let mxid = signed.get("mxid").and_then(Value::as_str);
    let token = signed.get("token").and_then(Value::as_str);
    let (Some(mxid), Some(token)) = (mxid, token) else {
        reject!("third_party_invite.signed without mxid or token");
    };
    // 4. If mxid does not match state_key, reject.
    if mxid != target {
        reject!("third_party_invite mxid does not match the state_key");
    }
    // 5. If there is no m.room.third_party_invite event in the current room
    //    state with state_key matching token, reject.
    let Some(invite) = auth_state("m.room.third_party_invite", token) else {
        reject!("no m.room.third_party_invite for the token");
    };
    // 6. If sender does not match sender of the m.room.third_party_invite, reject.
    if invite.sender != event.sender {
        reject!("third party invite was sent by someone else");
    }
    // 7. If any signature in signed matches any public key in the
    //    m.room.third_party_invite event, allow. The public keys are in
    //    content as: 1. a single key in public_key; 2. a list in public_keys.
    let single = invite.content.get("public_key").and_then(Value::as_str);
    let listed = invite
        .content
        .get("public_keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("public_key").and_then(Value::as_str));
    if single.into_iter().chain(listed).any(|key| signatures.signed_by_public_key(signed, key)) {
        return Ok(());
    }
    // 8. Otherwise, reject.
    reject!("third_party_invite is not signed by a key of the invite")
}
