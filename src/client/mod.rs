//! The client-server API: one file per spec area, and the route table.
//!
//! Handlers are thin: they parse the request, call storage and the protocol
//! core, and shape the JSON answer. Spec: <https://spec.matrix.org/latest/client-server-api/>.

mod account;
pub mod admin;
mod appservice;
mod devices;
mod directory;
mod ephemeral;
pub mod filter;
mod key_backup;
mod keys;
mod legacy;
mod login;
pub mod media;
mod membership;
mod messages;
mod notifications;
mod openid;
mod presence;
mod profile;
mod push;
mod register;
mod relations;
mod report;
mod room_summary;
mod rooms;
mod search;
mod sliding_sync;
mod spaces;
pub mod sync;
mod thirdparty;
mod to_device;
mod uia;
mod upgrade;
mod user_directory;
mod versions;
mod voip;
pub mod well_known;

use std::rc::Rc;

use http_types::Method;

use crate::app::App;
use crate::error::{Error, Result};
use crate::request::{Request, Response};

/// Which version prefix a path used: `r0`/`v3` endpoints and `v1` endpoints are
/// distinct families in the spec.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V3,
    V1,
}

/// Endpoints still called under `/_matrix/client/unstable/` by clients that
/// predate their stable paths; they answer as the `v3` endpoint does.
const UNSTABLE_AS_V3: &[&[&str]] =
    &[&["keys", "device_signing", "upload"], &["keys", "signatures", "upload"]];

/// Routes `/_matrix/client/...`.
pub async fn route(app: &Rc<App>, request: &Request) -> Result<Response> {
    let path = request.path();
    let (family, rest) = match path.as_slice() {
        ["_matrix", "client", "versions"] => {
            return match request.method {
                Method::Get => Ok(versions::versions()),
                _ => Err(Error::Unrecognized { method_not_allowed: true }),
            };
        }
        // The room summary's unstable paths (MSC3266), still called by Nheko and others.
        ["_matrix", "client", "unstable", "im.nheko.summary", "summary", room]
        | ["_matrix", "client", "unstable", "im.nheko.summary", "rooms", room, "summary"] => {
            return match request.method {
                Method::Get => room_summary::room_summary(app, request, room).await,
                _ => Err(Error::Unrecognized { method_not_allowed: true }),
            };
        }
        // Simplified Sliding Sync (MSC4186) at its unstable path, as Synapse serves it.
        ["_matrix", "client", "unstable", "org.matrix.simplified_msc3575", "sync"] => {
            // Open to guests as /sync is.
            request.guests_allowed.set(true);
            return match request.method {
                Method::Post => sliding_sync::sync(app, request).await,
                _ => Err(Error::Unrecognized { method_not_allowed: true }),
            };
        }
        ["_matrix", "client", "r0" | "v3", rest @ ..] => (Family::V3, rest),
        ["_matrix", "client", "v1", rest @ ..] => (Family::V1, rest),
        // Older clients (Cinny among them) still upload cross-signing keys here.
        ["_matrix", "client", "unstable", rest @ ..] if UNSTABLE_AS_V3.contains(&rest) => (Family::V3, rest),
        _ => {
            return Err(Error::Unrecognized { method_not_allowed: false });
        }
    };
    let method = &request.method;
    request.guests_allowed.set(guests_may(family, method, rest));
    use Family::*;
    use Method::{Delete, Get, Post, Put};
    match (family, rest) {
        (V3, ["login"]) => match method {
            Get => Ok(login::flows(app)),
            Post => login::login(app, request).await,
            _ => not_allowed(),
        },
        (V3, ["logout"]) if *method == Post => login::logout(app, request),
        (V3, ["logout", "all"]) if *method == Post => login::logout_all(app, request),
        (V3, ["register"]) if *method == Post => register::register(app, request).await,
        (V3, ["register", "available"]) if *method == Get => register::available(app, request),
        (V1, ["register", "m.login.registration_token", "validity"]) if *method == Get => {
            register::token_validity(app, request)
        }
        (V3, ["account", "whoami"]) if *method == Get => account::whoami(app, request),
        (V1, ["appservice", appservice_id, "ping"]) if *method == Post => {
            appservice::ping(app, request, appservice_id).await
        }
        (V3, ["account", "password"]) if *method == Post => account::change_password(app, request).await,
        (V3, ["account", "deactivate"]) if *method == Post => account::deactivate(app, request).await,
        (V3, ["capabilities"]) if *method == Get => versions::capabilities(app, request),
        (V3, ["devices"]) if *method == Get => devices::list(app, request),
        (V3, ["devices", device_id]) => match method {
            Get => devices::get(app, request, device_id),
            Put => devices::update(app, request, device_id),
            Delete => devices::delete(app, request, device_id).await,
            _ => not_allowed(),
        },
        (V3, ["delete_devices"]) if *method == Post => devices::delete_many(app, request).await,
        (V3, ["presence", user_id, "status"]) => match method {
            Get => presence::get(app, request, user_id),
            Put => presence::set(app, request, user_id),
            _ => not_allowed(),
        },
        (V3, ["admin", "whois", user_id]) if *method == Get => admin::whois(app, request, user_id),
        (V3, ["account", "3pid"]) if *method == Get => account::threepids(app, request),
        (V3, ["thirdparty", "protocols"]) if *method == Get => thirdparty::protocols(app, request).await,
        (V3, ["thirdparty", "protocol", protocol]) if *method == Get => {
            thirdparty::protocol(app, request, protocol).await
        }
        (V3, ["thirdparty", kind @ ("location" | "user"), protocol]) if *method == Get => {
            thirdparty::lookup(app, request, kind, Some(protocol)).await
        }
        (V3, ["thirdparty", kind @ ("location" | "user")]) if *method == Get => {
            thirdparty::lookup(app, request, kind, None).await
        }
        (V3, ["voip", "turnServer"]) if *method == Get => voip::turn_server(app, request),
        (V3, ["notifications"]) if *method == Get => notifications::notifications(app, request),
        (V3, ["profile", user_id]) if *method == Get => profile::get(app, user_id).await,
        (V3, ["profile", user_id, field]) => match method {
            Get => profile::get_field(app, user_id, field).await,
            Put => profile::set_field(app, request, user_id, field),
            _ => not_allowed(),
        },
        (V3, ["createRoom"]) if *method == Post => rooms::create_room(app, request).await,
        (V3, ["sync"]) if *method == Get => sync::sync(app, request).await,
        (V3, ["events"]) if *method == Get => legacy::events(app, request).await,
        (V3, ["events", event_id]) if *method == Get => legacy::event(app, request, event_id),
        (V3, ["initialSync"]) if *method == Get => legacy::initial_sync(app, request),
        (V3, ["rooms", room_id, "initialSync"]) if *method == Get => {
            legacy::room_initial_sync(app, request, room_id)
        }
        (V3, ["keys", "upload"]) if *method == Post => keys::upload(app, request),
        (V3, ["keys", "query"]) if *method == Post => keys::query(app, request).await,
        (V3, ["keys", "claim"]) if *method == Post => keys::claim(app, request).await,
        (V3, ["keys", "changes"]) if *method == Get => keys::changes(app, request),
        (V3, ["keys", "device_signing", "upload"]) if *method == Post => {
            keys::upload_signing_keys(app, request).await
        }
        (V3, ["keys", "signatures", "upload"]) if *method == Post => keys::upload_signatures(app, request),
        (V3, ["room_keys", "version"]) if matches!(*method, Get | Post) => key_backup::versions(app, request),
        (V3, ["room_keys", "version", version]) if matches!(*method, Get | Put | Delete) => {
            key_backup::version(app, request, version)
        }
        (V3, ["room_keys", "keys", scope @ ..])
            if scope.len() <= 2 && matches!(*method, Get | Put | Delete) =>
        {
            key_backup::keys(app, request, scope)
        }
        (V3, ["sendToDevice", kind, txn_id]) if *method == Put => {
            app.in_transaction(|| to_device::send(app, request, kind, txn_id))
        }
        (V3, ["user", user_id, "filter"]) if *method == Post => filter::create(app, request, user_id),
        (V3, ["user", user_id, "filter", filter_id]) if *method == Get => {
            filter::get(app, request, user_id, filter_id)
        }
        (V3, ["joined_rooms"]) if *method == Get => membership::joined_rooms(app, request),
        (V3, ["join", room]) if *method == Post => membership::join(app, request, room).await,
        (V3, ["knock", room]) if *method == Post => membership::knock(app, request, room).await,
        (V3, ["rooms", room_id, "messages"]) if *method == Get => {
            messages::messages(app, request, room_id).await
        }
        (V3, ["rooms", room_id, "join"]) if *method == Post => membership::join(app, request, room_id).await,
        (V3, ["rooms", room_id, "invite"]) if *method == Post => {
            membership::invite(app, request, room_id).await
        }
        (V3, ["rooms", room_id, "leave"]) if *method == Post => {
            membership::leave(app, request, room_id).await
        }
        // Room requests are synchronous: each runs in one database transaction.
        (V3, ["rooms", room_id, rest @ ..]) => match method {
            Get => app.in_snapshot(|| room_route(app, request, room_id, rest)),
            _ => app.in_transaction(|| room_route(app, request, room_id, rest)),
        },
        (V1, ["media", rest @ ..]) => media::route_authenticated(app, request, rest).await,
        (V1, ["rooms", room_id, "hierarchy"]) if *method == Get => spaces::hierarchy(app, request, room_id),
        (V1, ["room_summary", room]) => match method {
            Get => room_summary::room_summary(app, request, room).await,
            _ => not_allowed(),
        },
        (V1, ["rooms", room_id, rest @ ..]) => app.in_snapshot(|| room_route_v1(app, request, room_id, rest)),
        (V3, ["search"]) if *method == Post => search::search(app, request),
        (V3, ["directory", "room", alias]) => match method {
            Get => directory::get_alias(app, alias).await,
            Put => directory::put_alias(app, request, alias),
            Delete => directory::delete_alias(app, request, alias),
            _ => not_allowed(),
        },
        (V3, ["directory", "list", "room", room_id]) => match method {
            Get => directory::get_visibility(app, room_id),
            Put => directory::set_visibility(app, request, room_id),
            _ => not_allowed(),
        },
        (V3, ["publicRooms"])
            if request.query("server").is_some_and(|server| server != app.config.server_name) =>
        {
            match method {
                Get | Post => crate::remote::queries::remote_public_rooms(app, request).await,
                _ => not_allowed(),
            }
        }
        (V3, ["publicRooms"]) => match method {
            Get => directory::get_public_rooms(app, request),
            Post => directory::post_public_rooms(app, request),
            _ => not_allowed(),
        },
        (V3, ["user_directory", "search"]) if *method == Post => user_directory::search(app, request),
        (V3, ["users", user_id, "report"]) if *method == Post => report::report_user(app, request, user_id),
        (V3, ["user", user_id, "openid", "request_token"]) if *method == Post => {
            openid::request_token(app, request, user_id)
        }
        (V3, ["user", user_id, "account_data", kind]) if matches!(*method, Get | Put) => {
            ephemeral::account_data(app, request, user_id, None, kind)
        }
        (V3, ["user", user_id, "rooms", room_id, "account_data", kind]) if matches!(*method, Get | Put) => {
            ephemeral::account_data(app, request, user_id, Some(room_id), kind)
        }
        (V3, ["user", user_id, "rooms", room_id, "tags"]) if *method == Get => {
            ephemeral::get_tags(app, request, user_id, room_id)
        }
        (V3, ["user", user_id, "rooms", room_id, "tags", tag]) if matches!(*method, Put | Delete) => {
            ephemeral::change_tag(app, request, user_id, room_id, tag)
        }
        (V3, ["pushrules", rest @ ..]) => push::route(app, request, rest),
        (V3, ["pushers"]) if *method == Get => push::get_pushers(app, request),
        (V3, ["pushers", "set"]) if *method == Post => push::set_pusher(app, request),
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// Routes `/_matrix/client/v3/rooms/{roomId}/...`.
fn room_route(app: &Rc<App>, request: &Request, room_id: &str, rest: &[&str]) -> Result<Response> {
    use Method::{Get, Post, Put};
    let method = &request.method;
    match rest {
        ["send", kind, txn_id] if *method == Put => {
            rooms::send_message(app, request, room_id, kind, Some(txn_id))
        }
        // Not in the spec, but Synapse serves it and clients written against it use it:
        // a send without a transaction ID (so without retry idempotency).
        ["send", kind] if *method == Post => rooms::send_message(app, request, room_id, kind, None),
        ["redact", event_id, txn_id] if *method == Put => {
            rooms::redact(app, request, room_id, event_id, txn_id)
        }
        ["state"] if *method == Get => rooms::get_all_state(app, request, room_id),
        ["state", kind] | ["state", kind, ""] => match method {
            Get => rooms::get_state(app, request, room_id, kind, ""),
            Put => rooms::put_state(app, request, room_id, kind, ""),
            _ => not_allowed(),
        },
        ["state", kind, state_key] => match method {
            Get => rooms::get_state(app, request, room_id, kind, state_key),
            Put => rooms::put_state(app, request, room_id, kind, state_key),
            _ => not_allowed(),
        },
        ["event", event_id] if *method == Get => rooms::get_event(app, request, room_id, event_id),
        ["context", event_id] if *method == Get => messages::context(app, request, room_id, event_id),
        ["forget"] if *method == Post => membership::forget(app, request, room_id),
        [action @ ("kick" | "ban" | "unban")] if *method == Post => {
            membership::moderate(app, request, room_id, action)
        }
        ["typing", user_id] if *method == Put => ephemeral::typing(app, request, room_id, user_id),
        ["receipt", receipt_type, event_id] if *method == Post => {
            ephemeral::receipt(app, request, room_id, receipt_type, event_id)
        }
        ["read_markers"] if *method == Post => ephemeral::read_markers(app, request, room_id),
        ["members"] if *method == Get => membership::members(app, request, room_id),
        ["joined_members"] if *method == Get => membership::joined_members(app, request, room_id),
        ["aliases"] if *method == Get => directory::room_aliases(app, request, room_id),
        ["upgrade"] if *method == Post => upgrade::upgrade(app, request, room_id),
        ["report"] if *method == Post => report::report_room(app, request, room_id),
        ["report", event_id] if *method == Post => report::report_event(app, request, room_id, event_id),
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// Routes `/_matrix/client/v1/rooms/{roomId}/...`.
fn room_route_v1(app: &Rc<App>, request: &Request, room_id: &str, rest: &[&str]) -> Result<Response> {
    if request.method != Method::Get {
        return Err(Error::Unrecognized { method_not_allowed: false });
    }
    match rest {
        ["relations", event_id] => relations::relations(app, request, room_id, event_id, None, None),
        ["relations", event_id, rel_type] => {
            relations::relations(app, request, room_id, event_id, Some(rel_type), None)
        }
        ["relations", event_id, rel_type, event_type] => {
            relations::relations(app, request, room_id, event_id, Some(rel_type), Some(event_type))
        }
        ["threads"] => relations::threads(app, request, room_id),
        ["timestamp_to_event"] => messages::timestamp_to_event(app, request, room_id),
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// Whether a guest may make this request: the endpoints the spec lists for
/// guests, and the few more Synapse opens to them (the public room
/// directory, joined rooms, relations, key changes, capabilities, the
/// avatar beside the display name). Every other endpoint answers guests
/// 403 `M_GUEST_ACCESS_FORBIDDEN` (`Engine::authenticate`).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#client-behaviour-14>.
fn guests_may(family: Family, method: &Method, rest: &[&str]) -> bool {
    use Method::{Get, Post, Put};
    match (family, method, rest) {
        (
            Family::V3,
            Get,
            ["sync" | "events" | "initialSync" | "joined_rooms" | "capabilities" | "publicRooms"],
        ) => true,
        (Family::V3, Post, ["publicRooms"]) => true,
        (Family::V3, Post, ["join", _]) => true,
        (Family::V3, Put, ["sendToDevice", _, _]) => true,
        (Family::V3, Put, ["profile", _, "displayname" | "avatar_url"]) => true,
        (Family::V3, Get, ["devices"] | ["devices", _] | ["account", "whoami"] | ["keys", "changes"]) => true,
        (Family::V3, Put, ["devices", _]) => true,
        (Family::V3, Post, ["keys", "upload" | "query" | "claim"]) => true,
        (Family::V3, Get, ["thirdparty", ..]) => true,
        (Family::V3, _, ["rooms", _, room @ ..]) => matches!(
            (method, room),
            (
                Get,
                ["state"]
                    | ["state", ..]
                    | ["event", _]
                    | ["context", _]
                    | ["messages"]
                    | ["members"]
                    | ["joined_members"]
                    | ["initialSync"]
            ) | (Put, ["send", _, _] | ["state", ..])
                | (Post, ["join"] | ["leave"] | ["send", _])
        ),
        (Family::V1, Get, ["media", "download" | "thumbnail", ..]) => true,
        (Family::V1, Get, ["rooms", _, "relations", ..] | ["rooms", _, "hierarchy"]) => true,
        _ => false,
    }
}

fn not_allowed() -> Result<Response> {
    Err(Error::Unrecognized { method_not_allowed: true })
}
