//! The README's endpoint table (generated from `src/endpoints.rs`) says
//! what the node answers: every endpoint of the spec is asked of a running
//! node, with placeholder path parameters. A served endpoint must be routed
//! to a handler (whatever it then answers: 401 without a token, 400 for the
//! empty body, 404 for the placeholder room, never `M_UNRECOGNIZED`); one the
//! table says is not served must answer `M_UNRECOGNIZED` with the status the
//! table gives. Client-server endpoints are asked without a token (routing
//! comes before authentication there); server-server endpoints with signed
//! requests from a second node (there authentication comes first).
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#common-error-codes>
//! (`M_UNRECOGNIZED`: "The server did not understand the request. This is
//! expected to be returned with a 404 HTTP status code if the endpoint is
//! not implemented or a 405 HTTP status code if the endpoint is implemented,
//! but the incorrect HTTP method is used").

mod common;

use common::TempDir;
use common::federation::{TestCa, signed_request, start_federating};
use common::rooms::enc;
use serde_json::{Value, json};

/// One row of the README table.
struct Row {
    method: String,
    path: String,
    /// `None` if served, else the status of its `M_UNRECOGNIZED`.
    refused_with: Option<u16>,
}

/// The rows of the README's endpoint table, by API.
fn rows() -> Vec<(String, Row)> {
    let readme = include_str!("../README.md");
    let start = readme.find("<!-- endpoints:begin -->").expect("no table in README.md");
    let end = readme.find("<!-- endpoints:end -->").expect("no table end in README.md");
    let mut api = String::new();
    let mut rows = Vec::new();
    for line in readme[start..end].lines() {
        if let Some(title) = line.strip_prefix("### ") {
            api = title.to_string();
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(endpoint) = cells.get(1).and_then(|cell| cell.strip_prefix('`')) else { continue };
        let Some((endpoint, _)) = endpoint.split_once('`') else { continue };
        let (method, path) = endpoint.split_once(' ').unwrap();
        let answer = cells.get(2).unwrap();
        let refused_with = if answer.starts_with("served") {
            None
        } else {
            let status = answer.split(' ').next().unwrap().parse().unwrap();
            assert!(answer.contains("`M_UNRECOGNIZED`"), "{line}");
            Some(status)
        };
        rows.push((api.clone(), Row { method: method.to_string(), path: path.to_string(), refused_with }));
    }
    rows
}

/// The path with each `{parameter}` replaced by a value of the right shape
/// on `server` (so nothing is asked of another server).
fn fill(path: &str, server: &str, user_server: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        let value = match &rest[open + 1..close] {
            "roomId" | "roomIdOrAlias" => format!("!probe:{server}"),
            "roomAlias" => format!("#probe:{server}"),
            "userId" => format!("@probe:{user_server}"),
            "eventId" => "$probe".to_string(),
            "serverName" => server.to_string(),
            "keyName" => "displayname".to_string(),
            "queryType" => "profile".to_string(),
            "stateKey" => String::new(),
            _ => "probe".to_string(),
        };
        out.push_str(&enc(&value));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Checks one answer against its row.
fn check(row: &Row, status: u16, answer: &Value, failures: &mut Vec<String>) {
    let unrecognized = answer["errcode"] == "M_UNRECOGNIZED";
    let wrong = match row.refused_with {
        None => unrecognized,
        Some(expected) => !unrecognized || status != expected,
    };
    if wrong {
        let said = row.refused_with.map_or("served".to_string(), |status| format!("{status} M_UNRECOGNIZED"));
        failures.push(format!(
            "{} {}: the table says {said}, the node answered {status} {answer}",
            row.method, row.path
        ));
    }
}

#[test]
fn every_spec_endpoint_answers_as_the_readme_table_says() {
    let rows = rows();
    assert!(rows.len() >= 200, "the README table has {} rows", rows.len());
    let ca = TestCa::new();
    let a = start_federating(&ca, &[]);
    // Link previews are opt-in; the table describes a node with them on.
    let config_dir = TempDir::new("endpoints-config");
    let config = config_dir.0.join("hearth.toml");
    std::fs::write(&config, "url_preview_enabled = true\n").unwrap();
    let b = start_federating(&ca, &["--config", config.to_str().unwrap()]);
    let client = b.client();
    let mut failures = Vec::new();
    for (api, row) in &rows {
        let body = matches!(row.method.as_str(), "POST" | "PUT").then(|| json!({}));
        let (status, answer) = if api.starts_with("Server-server") {
            let path = fill(&row.path, &b.server_name, &a.server_name);
            signed_request(&ca, &a, &b, &row.method, &path, body.as_ref())
        } else {
            let path = fill(&row.path, &b.server_name, &b.server_name);
            let body = body.map(|body| body.to_string());
            client.request(&row.method, &path, body.as_deref().map(str::as_bytes))
        };
        check(row, status, &answer, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} endpoints disagree with README.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
