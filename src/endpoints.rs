//! The endpoint table of README.md: every endpoint the Matrix spec defines
//! for the client-server and server-server APIs
//! (`tests/vectors/spec_endpoints.txt`, extracted from the spec's API
//! definitions) with what hearth answers to it. An endpoint is served
//! unless it is listed in [`NOT_SERVED`], with the `M_UNRECOGNIZED` status
//! the dispatcher answers and why; [`NOTES`] adds what a client should know
//! about a served one.
//!
//! Two tests keep the table true: the unit test below renders it and
//! compares it with README.md (printing the fresh text when they differ),
//! and `tests/endpoints.rs` asks a running node every endpoint of the
//! README table and checks that the served ones are routed (not
//! `M_UNRECOGNIZED`) and the others answer `M_UNRECOGNIZED` with the status
//! the table gives. Nothing else reads this module: it is test-only.

/// The spec's endpoints: `METHOD PATH API AREA [deprecated]` lines.
const SPEC_ENDPOINTS: &str = include_str!("../tests/vectors/spec_endpoints.txt");

/// Why no identity server or third-party identifier is involved anywhere.
const NO_3PID: &str = "no third-party identifiers (email, phone) and no identity server";

/// Spec endpoints hearth does not serve: `(method, path, status, why)`;
/// the dispatcher answers them `M_UNRECOGNIZED` with `status` (405 where
/// the path is served with other methods).
pub const NOT_SERVED: &[(&str, &str, u16, &str)] = &[
    (
        "GET",
        "/_matrix/client/v1/admin/suspend/{userId}",
        404,
        "no suspension: operators deactivate (`hearth user deactivate`)",
    ),
    (
        "PUT",
        "/_matrix/client/v1/admin/suspend/{userId}",
        404,
        "no suspension: operators deactivate (`hearth user deactivate`)",
    ),
    (
        "GET",
        "/_matrix/client/v1/admin/lock/{userId}",
        404,
        "no locking: operators deactivate (`hearth user deactivate`)",
    ),
    (
        "PUT",
        "/_matrix/client/v1/admin/lock/{userId}",
        404,
        "no locking: operators deactivate (`hearth user deactivate`)",
    ),
    ("POST", "/_matrix/client/v3/account/3pid", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/account/3pid/add", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/account/3pid/bind", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/account/3pid/delete", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/account/3pid/unbind", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/account/3pid/email/requestToken", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/account/3pid/msisdn/requestToken", 404, NO_3PID),
    (
        "POST",
        "/_matrix/client/v3/account/password/email/requestToken",
        404,
        "no password reset by email: operators reset passwords (`hearth user passwd`)",
    ),
    (
        "POST",
        "/_matrix/client/v3/account/password/msisdn/requestToken",
        404,
        "no password reset by phone: operators reset passwords (`hearth user passwd`)",
    ),
    ("POST", "/_matrix/client/v3/register/email/requestToken", 404, NO_3PID),
    ("POST", "/_matrix/client/v3/register/msisdn/requestToken", 404, NO_3PID),
    (
        "PUT",
        "/_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}",
        404,
        "no per-network room directories for application services",
    ),
    ("POST", "/_matrix/client/v1/login/get_token", 404, "no login tokens (sign-in by QR code)"),
    (
        "GET",
        "/_matrix/client/v1/auth_metadata",
        404,
        "no OAuth 2.0 authorization server: login is by password",
    ),
    ("GET", "/_matrix/client/v3/login/sso/redirect", 404, "no SSO or OpenID Connect login"),
    ("GET", "/_matrix/client/v3/login/sso/redirect/{idpId}", 404, "no SSO or OpenID Connect login"),
    ("POST", "/_matrix/client/v3/refresh", 404, "access tokens do not expire, so none is refreshed"),
    ("GET", "/_matrix/client/v1/mutual_rooms", 404, "not implemented"),
    (
        "DELETE",
        "/_matrix/client/v3/profile/{userId}/{keyName}",
        405,
        "custom profile fields (Matrix 1.16) are not implemented; `PUT` an empty string unsets a field",
    ),
    ("GET", "/.well-known/matrix/support", 404, "no support contact"),
    ("GET", "/.well-known/matrix/policy_server", 404, "no policy server"),
    ("POST", "/_matrix/policy/v1/sign", 404, "no policy server"),
    ("GET", "/_matrix/federation/v1/timestamp_to_event/{roomId}", 404, "not implemented"),
    ("PUT", "/_matrix/federation/v1/exchange_third_party_invite/{roomId}", 404, "no third-party invites"),
    ("PUT", "/_matrix/federation/v1/3pid/onbind", 404, "no third-party invites"),
];

/// What a client should know about some served endpoints: `(method, path, note)`.
pub const NOTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/_matrix/client/v1/media/preview_url",
        "only with `url_preview_enabled = true`; otherwise 404 `M_UNRECOGNIZED`",
    ),
    (
        "GET",
        "/_matrix/media/v3/preview_url",
        "only with `url_preview_enabled = true`; otherwise 404 `M_UNRECOGNIZED`",
    ),
    ("GET", "/_matrix/client/v3/account/3pid", "always empty: no third-party identifiers"),
    ("POST", "/_matrix/client/v3/createRoom", "`invite_3pid` is refused: 403 `M_FORBIDDEN`"),
    (
        "POST",
        "/_matrix/client/v3/rooms/{roomId}/invite",
        "third-party (3PID) invites are refused: 403 `M_FORBIDDEN`",
    ),
    (
        "GET",
        "/_matrix/client/v3/profile/{userId}/{keyName}",
        "`displayname` and `avatar_url`; other keys 404 `M_UNRECOGNIZED`",
    ),
    (
        "PUT",
        "/_matrix/client/v3/profile/{userId}/{keyName}",
        "`displayname` and `avatar_url`; other keys 404 `M_UNRECOGNIZED`",
    ),
    (
        "GET",
        "/_matrix/client/v3/thirdparty/protocols",
        "the protocols the application services' registration files declare",
    ),
    ("GET", "/.well-known/matrix/client", "from the configuration; 404 `M_NOT_FOUND` when it has none"),
    ("GET", "/.well-known/matrix/server", "from the configuration; 404 `M_NOT_FOUND` when it has none"),
    ("GET", "/_matrix/client/v3/voip/turnServer", "from the configuration"),
    (
        "GET",
        "/_matrix/federation/v1/query/{queryType}",
        "`directory` and `profile`; other types 404 `M_UNRECOGNIZED`",
    ),
];

/// One spec endpoint.
struct SpecEndpoint<'a> {
    method: &'a str,
    path: &'a str,
    api: &'a str,
    area: &'a str,
    deprecated: bool,
}

/// The endpoints of [`SPEC_ENDPOINTS`], in its order.
fn spec_endpoints() -> Vec<SpecEndpoint<'static>> {
    let lines = SPEC_ENDPOINTS.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty());
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(matches!(fields.len(), 4 | 5), "malformed line {line:?}");
            SpecEndpoint {
                method: fields[0],
                path: fields[1],
                api: fields[2],
                area: fields[3],
                deprecated: fields.get(4) == Some(&"deprecated"),
            }
        })
        .collect()
}

/// What hearth answers to one endpoint, as the table says it.
fn answer(method: &str, path: &str) -> String {
    if let Some((_, _, status, why)) = NOT_SERVED.iter().find(|(m, p, _, _)| *m == method && *p == path) {
        return format!("{status} `M_UNRECOGNIZED`: {why}");
    }
    match NOTES.iter().find(|(m, p, _)| *m == method && *p == path) {
        Some((_, _, note)) => format!("served; {note}"),
        None => "served".to_string(),
    }
}

/// The markdown tables, one per API, as they stand in README.md between
/// the markers.
fn render() -> String {
    let mut out = String::new();
    for (api, title) in [("client-server", "Client-server API"), ("server-server", "Server-server API")] {
        out.push_str(&format!("\n### {title}\n\n| Area | Endpoint | hearth answers |\n|---|---|---|\n"));
        for endpoint in spec_endpoints().iter().filter(|endpoint| endpoint.api == api) {
            let deprecated = if endpoint.deprecated { " (deprecated)" } else { "" };
            out.push_str(&format!(
                "| {} | `{} {}`{deprecated} | {} |\n",
                endpoint.area,
                endpoint.method,
                endpoint.path,
                answer(endpoint.method, endpoint.path)
            ));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- endpoints:begin -->";
    const END: &str = "<!-- endpoints:end -->";

    /// README.md's endpoint table is this module rendered: edit the lists
    /// here, run this test, and paste the text it prints.
    #[test]
    fn the_readme_endpoint_table_is_current() {
        let readme = include_str!("../README.md");
        let start = readme.find(BEGIN).expect("README.md has no endpoint table begin marker") + BEGIN.len();
        let end = readme.find(END).expect("README.md has no endpoint table end marker");
        let fresh = render();
        assert!(
            readme[start..end] == fresh,
            "README.md's endpoint table is stale; put this between the markers:\n{BEGIN}{fresh}{END}"
        );
    }

    /// Every listed endpoint is one of the spec's, so no entry outlives its endpoint.
    #[test]
    fn listed_endpoints_are_spec_endpoints() {
        let spec = spec_endpoints();
        let listed =
            NOT_SERVED.iter().map(|(m, p, _, _)| (*m, *p)).chain(NOTES.iter().map(|(m, p, _)| (*m, *p)));
        for (method, path) in listed {
            assert!(
                spec.iter().any(|endpoint| endpoint.method == method && endpoint.path == path),
                "{method} {path} is not a spec endpoint"
            );
        }
    }
}
