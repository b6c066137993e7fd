//! Third-party networks reachable through application-service bridges: the
//! protocols the services declare (`protocols` in their registration), and
//! lookups of users and locations, each asked of the services that bridge
//! the protocol and merged. A service that does not answer is left out.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#third-party-networks>.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::appservice::AppService;
use crate::remote::appservice::thirdparty;
use crate::remote::pdus::encode;
use crate::request::{Request, Response};

/// Most entries one lookup answers, across services.
const MAX_LOOKUP_RESULTS: usize = 1000;

/// `GET /thirdparty/protocols`: every protocol a service declares, with the
/// metadata its service answers.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3thirdpartyprotocols>.
pub async fn protocols(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    let mut protocols = Map::new();
    let services = app.app_services();
    for service in services.iter().map(|registered| &registered.service) {
        for protocol in &service.protocols {
            if let Some(answer) = thirdparty(app, service, &format!("protocol/{}", encode(protocol))).await {
                merge_protocol(&mut protocols, protocol, answer, service);
            }
        }
    }
    Ok(Response::ok(Value::Object(protocols)))
}

/// `GET /thirdparty/protocol/{protocol}`: one protocol's metadata, or 404.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3thirdpartyprotocolprotocol>.
pub async fn protocol(app: &App, request: &Request, protocol: &str) -> Result<Response> {
    app.authenticate(request)?;
    let mut protocols = Map::new();
    let services = app.app_services();
    for service in services.iter().map(|registered| &registered.service) {
        if service.protocols.iter().any(|declared| declared == protocol) {
            if let Some(answer) = thirdparty(app, service, &format!("protocol/{}", encode(protocol))).await {
                merge_protocol(&mut protocols, protocol, answer, service);
            }
        }
    }
    let found =
        protocols.remove(protocol).ok_or_else(|| Error::NotFound(format!("unknown protocol {protocol}")))?;
    Ok(Response::ok(found))
}

/// Adds one service's metadata of `protocol`: the first answer is kept and
/// the instances of later ones join it. Each instance gets the
/// `instance_id` Synapse gives it, `{appservice_id}|{network_id}`.
fn merge_protocol(protocols: &mut Map<String, Value>, protocol: &str, answer: Value, service: &AppService) {
    let Value::Object(mut answer) = answer else { return };
    let mut instances = match answer.remove("instances") {
        Some(Value::Array(instances)) => instances,
        _ => Vec::new(),
    };
    for instance in instances.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(network_id) = instance.get("network_id").and_then(Value::as_str) {
            let instance_id = format!("{}|{network_id}", service.id);
            instance.insert("instance_id".into(), json!(instance_id));
        }
    }
    let entry = protocols.entry(protocol.to_owned()).or_insert_with(|| {
        answer.insert("instances".into(), json!([]));
        Value::Object(answer)
    });
    if let Some(Value::Array(kept)) = entry.get_mut("instances") {
        kept.extend(instances);
    }
}

/// `GET /thirdparty/{kind}/{protocol}` (`kind` is `location` or `user`):
/// the query asked of each service bridging the protocol, the answers
/// joined. `GET /thirdparty/{kind}` (by `alias` or `userid`): asked of
/// every service.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3thirdpartylocationprotocol>.
pub async fn lookup(app: &App, request: &Request, kind: &str, protocol: Option<&str>) -> Result<Response> {
    app.authenticate(request)?;
    let query = request.target.split_once('?').map_or("", |(_, query)| query);
    let path = match protocol {
        Some(protocol) => format!("{kind}/{}", encode(protocol)),
        None => kind.to_owned(),
    };
    let path_and_query = if query.is_empty() { path } else { format!("{path}?{query}") };
    let mut found = Vec::new();
    let services = app.app_services();
    for service in services.iter().map(|registered| &registered.service) {
        if protocol.is_some_and(|protocol| !service.protocols.iter().any(|declared| declared == protocol)) {
            continue;
        }
        if let Some(Value::Array(answers)) = thirdparty(app, service, &path_and_query).await {
            let room = MAX_LOOKUP_RESULTS.saturating_sub(found.len());
            found.extend(answers.into_iter().take(room));
        }
    }
    Ok(Response::ok(Value::Array(found)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str) -> AppService {
        let text = format!(
            "id: {id}\nurl: null\nas_token: a_{id}\nhs_token: h_{id}\nsender_localpart: bot_{id}\nprotocols: [irc]\n"
        );
        AppService::parse(&text, "example.org").unwrap()
    }

    #[test]
    fn instances_of_services_bridging_one_protocol_are_merged() {
        let mut protocols = Map::new();
        let first =
            json!({"user_fields": ["nick"], "instances": [{"network_id": "libera", "desc": "Libera"}]});
        merge_protocol(&mut protocols, "irc", first, &service("one"));
        let second = json!({"user_fields": ["other"], "instances": [{"network_id": "oftc", "desc": "OFTC"}, {"desc": "no id"}]});
        merge_protocol(&mut protocols, "irc", second, &service("two"));
        merge_protocol(&mut protocols, "irc", json!("not an object"), &service("three"));
        let irc = &protocols["irc"];
        assert_eq!(irc["user_fields"], json!(["nick"]));
        let ids: Vec<&Value> =
            irc["instances"].as_array().unwrap().iter().map(|i| &i["instance_id"]).collect();
        assert_eq!(ids, [&json!("one|libera"), &json!("two|oftc"), &Value::Null]);
    }
}
