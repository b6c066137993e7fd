//! The client-server API: one file per spec area, and the route table.
//!
//! Handlers are thin: they parse the request, call storage and the protocol
//! core, and shape the JSON answer. Spec: <https://spec.matrix.org/latest/client-server-api/>.

mod account;
mod devices;
mod login;
mod profile;
mod register;
mod uia;
mod versions;
pub mod well_known;

use std::rc::Rc;

use http_types::Method;

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{Request, Response};

/// Which version prefix a path used: `r0`/`v3` endpoints and `v1` endpoints are
/// distinct families in the spec.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V3,
    V1,
}

/// Routes `/_matrix/client/...`.
pub async fn route(app: &Rc<App>, request: &Request) -> Result<Response> {
    let path = request.path();
    let (family, rest) = match path.as_slice() {
        ["_matrix", "client", "versions"] => {
            return match request.method {
                Method::Get => Ok(versions::versions()),
                _ => Err(Error::Unrecognized {
                    method_not_allowed: true,
                }),
            };
        }
        ["_matrix", "client", "r0" | "v3", rest @ ..] => (Family::V3, rest),
        ["_matrix", "client", "v1", rest @ ..] => (Family::V1, rest),
        _ => {
            return Err(Error::Unrecognized {
                method_not_allowed: false,
            });
        }
    };
    let method = &request.method;
    use Family::*;
    use Method::{Delete, Get, Post, Put};
    match (family, rest) {
        (V3, ["login"]) => match method {
            Get => Ok(login::flows()),
            Post => login::login(app, request),
            _ => not_allowed(),
        },
        (V3, ["logout"]) if *method == Post => login::logout(app, request),
        (V3, ["logout", "all"]) if *method == Post => login::logout_all(app, request),
        (V3, ["register"]) if *method == Post => register::register(app, request),
        (V3, ["register", "available"]) if *method == Get => register::available(app, request),
        (V1, ["register", "m.login.registration_token", "validity"]) if *method == Get => {
            register::token_validity(app, request)
        }
        (V3, ["account", "whoami"]) if *method == Get => account::whoami(app, request),
        (V3, ["account", "password"]) if *method == Post => account::change_password(app, request),
        (V3, ["account", "deactivate"]) if *method == Post => account::deactivate(app, request),
        (V3, ["capabilities"]) if *method == Get => versions::capabilities(app, request),
        (V3, ["devices"]) if *method == Get => devices::list(app, request),
        (V3, ["devices", device_id]) => match method {
            Get => devices::get(app, request, device_id),
            Put => devices::update(app, request, device_id),
            Delete => devices::delete(app, request, device_id),
            _ => not_allowed(),
        },
        (V3, ["delete_devices"]) if *method == Post => devices::delete_many(app, request),
        (V3, ["profile", user_id]) if *method == Get => profile::get(app, user_id),
        (V3, ["profile", user_id, field]) => match method {
            Get => profile::get_field(app, user_id, field),
            Put => profile::set_field(app, request, user_id, field),
            _ => not_allowed(),
        },
        _ => Err(Error::Unrecognized {
            method_not_allowed: false,
        }),
    }
}

fn not_allowed() -> Result<Response> {
    Err(Error::Unrecognized {
        method_not_allowed: true,
    })
}
