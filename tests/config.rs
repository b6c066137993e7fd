//! Configuration: `hearth init` writes a file `serve --config` accepts,
//! unknown keys are refused with a clear error, `[well_known]` is served with
//! CORS headers, and CORS preflights are answered.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#well-known-uri>,
//! <https://spec.matrix.org/latest/client-server-api/#web-browser-clients>.

mod common;

use common::{Node, TempDir, assert_error, run, write_file};

#[test]
fn init_writes_a_config_that_serve_accepts() {
    let dir = TempDir::new("init");
    let path = dir.0.join("hearth.toml");
    let path_text = path.to_str().unwrap();
    let (code, output) = run(&["init", "--server-name", "example.org", "--config", path_text], None);
    assert_eq!(code, Some(0), "{output}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("server_name = \"example.org\""), "{text}");

    // An existing file is not overwritten.
    let (code, output) = run(&["init", "--server-name", "other.org", "--config", path_text], None);
    assert_ne!(code, Some(0), "{output}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // A bad server name is refused and writes nothing.
    let bad = dir.0.join("bad.toml");
    let (code, output) = run(&["init", "--server-name", "bad name", "--config", bad.to_str().unwrap()], None);
    assert_ne!(code, Some(0), "{output}");
    assert!(!bad.exists());

    // The node runs with it (listeners from the harness's flags).
    let node = Node::start_with(&["--config", path_text]);
    assert_eq!(node.server_name, "example.org");
    let alice_available = node.client().get("/_matrix/client/v3/register/available?username=alice");
    assert_eq!(alice_available.0, 200, "{}", alice_available.1);
}

#[test]
fn unknown_keys_stop_the_node_with_a_clear_error() {
    let dir = TempDir::new("badconfig");
    let data_dir = dir.0.join("data");
    let data_dir = data_dir.to_str().unwrap();
    // (file text, what the error must mention, whether it is a parse error
    // and so names the file)
    for (text, mentions, names_file) in [
        ("server_name = \"example.org\"\ncolour = \"blue\"\n", "colour", true),
        ("[well_known]\nserverr = \"x\"\n", "serverr", true),
        ("registration = \"sometimes\"\n", "sometimes", true),
        ("server_name = \"bad name\"\n", "server_name", false),
    ] {
        let path = write_file(&dir.0, "hearth.toml", text.as_bytes());
        let (code, output) = run(
            &["serve", "--config", path.to_str().unwrap(), "--data-dir", data_dir, "--http", "127.0.0.1:0"],
            None,
        );
        assert_eq!(code, Some(1), "{text}: {output}");
        assert!(output.contains(mentions), "{text}: {output}");
        if names_file {
            assert!(output.contains("hearth.toml"), "names the file: {output}");
        }
    }
    let missing = dir.0.join("missing.toml");
    let (code, output) = run(&["serve", "--config", missing.to_str().unwrap(), "--data-dir", data_dir], None);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot read"), "{output}");
}

#[test]
fn well_known_is_served_from_the_config_with_cors() {
    let dir = TempDir::new("wellknown");
    let path = write_file(
        &dir.0,
        "hearth.toml",
        b"server_name = \"example.org\"\n\
          [well_known]\n\
          server = \"matrix.example.org:443\"\n\
          client = \"https://matrix.example.org\"\n",
    );
    let node = Node::start_with(&["--config", path.to_str().unwrap()]);
    let client = node.client();

    let (status, headers, body) = client.get_with_headers("/.well-known/matrix/server");
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, serde_json::json!({"m.server": "matrix.example.org:443"}));

    let (status, headers, body) = client.get_with_headers("/.well-known/matrix/client");
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, serde_json::json!({"m.homeserver": {"base_url": "https://matrix.example.org"}}));
}

#[test]
fn well_known_without_delegation_is_not_found() {
    let node = Node::start();
    let client = node.client();
    assert_error(&client.get("/.well-known/matrix/server"), 404, "M_NOT_FOUND");
    assert_error(&client.get("/.well-known/matrix/client"), 404, "M_NOT_FOUND");
    // Errors carry CORS headers too, so browsers can read them.
    let (status, headers, _) = client.get_with_headers("/.well-known/matrix/client");
    assert_eq!(status, 404);
    assert_eq!(headers["access-control-allow-origin"], "*");
}

#[test]
fn cors_preflight_is_answered() {
    let node = Node::start();
    let mut connection = common::RawConnection::connect(&node.http);
    for path in ["/_matrix/client/v3/login", "/.well-known/matrix/client"] {
        connection.send(
            format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization, content-type\r\n\r\n"
            )
            .as_bytes(),
        );
        let response = connection.read_response();
        assert!(response.status == 200 || response.status == 204, "{response:?}");
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
        let methods = response.header("access-control-allow-methods").unwrap();
        for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
            assert!(methods.contains(method), "{methods}");
        }
        let allowed = response.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
        for header in ["authorization", "content-type", "x-requested-with"] {
            assert!(allowed.contains(header), "{allowed}");
        }
    }
}
