//! Built-in ACME against Pebble, the ACME test CA, on loopback: the node gets
//! a certificate through TLS-ALPN-01 (and HTTP-01), serves it without a
//! restart, renews it two thirds into its (short) lifetime, keeps serving the
//! old one while the CA is down and retries until it is back.
//!
//! Pebble validates for real (`PEBBLE_VA_ALWAYS_VALID` unset): it looks the
//! domain up through `pebble-challtestsrv`, a DNS server on loopback that
//! answers 127.0.0.1 for every name, and connects to the node's ports.
//!
//! Spec: <https://www.rfc-editor.org/rfc/rfc8555>, TLS-ALPN-01:
//! <https://www.rfc-editor.org/rfc/rfc8737>.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tls::{accept_any, served_chain, trusting};
use common::{Node, TempDir, eventually, free_port, write_file};

/// The name the node asks a certificate for; challtestsrv resolves it.
const DOMAIN: &str = "node.hearth.test";
/// Pebble's certificates live this long, so renewal (at two thirds) comes
/// within the test.
const VALIDITY_SECS: u64 = 30;

/// A child process stopped (by its PID) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command, what: &str) -> Process {
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|error| {
        panic!("{what} is needed (apt-get install pebble; .ci/run installs it): {error}")
    });
    Process(child)
}

/// Pebble with its DNS server, on free loopback ports; validating against
/// the node's TLS port (`tlsPort`) and HTTP-01 port (`httpPort`).
struct Pebble {
    dir: TempDir,
    port: u16,
    management_port: u16,
    /// PEM of the certificate Pebble's own HTTPS listeners present (the
    /// node's `acme.ca_file`).
    ca_file: std::path::PathBuf,
    dns_port: u16,
    pebble: Option<Process>,
    _dns: Process,
}

impl Pebble {
    fn start(tls_port: u16, http_port: u16) -> Pebble {
        let dir = TempDir::new("pebble");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let ca_file = write_file(&dir.0, "cert.pem", certified.cert.pem().as_bytes());
        let key_file = write_file(&dir.0, "key.pem", certified.key_pair.serialize_pem().as_bytes());
        let (port, management_port, dns_port) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": ca_file,
            "privateKey": key_file,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": VALIDITY_SECS,
        }});
        write_file(&dir.0, "pebble.json", config.to_string().as_bytes());
        let dns = spawn(
            Command::new("pebble-challtestsrv")
                .arg("-dns01")
                .arg(format!("127.0.0.1:{dns_port}"))
                .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", ""])
                .arg("-management")
                .arg(format!("127.0.0.1:{}", free_port())),
            "pebble-challtestsrv",
        );
        let mut pebble = Pebble { dir, port, management_port, ca_file, dns_port, pebble: None, _dns: dns };
        pebble.run();
        pebble
    }

    /// Starts Pebble (again: a new Pebble knows no account and has new roots).
    fn run(&mut self) {
        let process = spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(self.dir.0.join("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{}", self.dns_port))
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env_remove("PEBBLE_VA_ALWAYS_VALID"),
            "pebble",
        );
        self.pebble = Some(process);
        eventually(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", self.management_port)).ok()?;
            TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
    }

    fn stop(&mut self) {
        self.pebble = None;
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The PEM of the root Pebble issues under now.
    fn root(&self) -> Vec<u8> {
        let address = format!("127.0.0.1:{}", self.management_port);
        let pem = std::fs::read(&self.ca_file).unwrap();
        common::tls::get(&address, "127.0.0.1", "/roots/0", trusting(&pem)).unwrap()
    }
}

/// The serial number (hex) of a DER certificate: the TBSCertificate's
/// second element, after the explicit version (RFC 5280 §4.1).
fn serial(der: &[u8]) -> String {
    fn element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (input[0], input[1]);
        let (length, start) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let count = (first & 0x7f) as usize;
            (input[2..2 + count].iter().fold(0, |length, &byte| (length << 8) | byte as usize), 2 + count)
        };
        (tag, &input[start..start + length], &input[start + length..])
    }
    let (_, certificate, _) = element(der);
    let (_, tbs, _) = element(certificate);
    let (_, _, rest) = element(tbs);
    let (tag, serial, _) = element(rest);
    assert_eq!(tag, 2, "the serial number is an INTEGER");
    serial.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The serial of the certificate the node serves, if it chains to `root`
/// and is valid for [`DOMAIN`] (the issuer being Pebble's intermediate).
fn issued_serial(address: &str, root: &[u8]) -> Option<String> {
    let chain = served_chain(address, DOMAIN, trusting(root)).ok()?;
    Some(serial(&chain[0]))
}

/// The serial of the certificate the node serves, checked against nothing.
fn served_serial(address: &str) -> String {
    serial(&served_chain(address, DOMAIN, accept_any()).unwrap()[0])
}

/// The renewal failures the node recorded, as `failures|last_error`,
/// read beside it with the sqlite3 shell.
fn renewal_failures(node: &Node) -> String {
    let output = Command::new("sqlite3")
        .arg(node.data_dir.0.join("hearth.db"))
        .arg("SELECT failures, last_error FROM acme_renewal")
        .output()
        .expect("the sqlite3 shell is needed (apt-get install sqlite3; .ci/run installs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn acme_node(pebble: &Pebble, tls_port: u16, extra: &str) -> Node {
    let data_dir = TempDir::new("node");
    let config = format!(
        "server_name = \"localhost\"\n[acme]\ndirectory = \"{}\"\ndomains = [\"{DOMAIN}\"]\nca_file = \"{}\"\n{extra}\n",
        pebble.directory(),
        pebble.ca_file.display()
    );
    let path = write_file(&data_dir.0, "hearth.toml", config.as_bytes());
    let args = ["--config", path.to_str().unwrap()];
    Node::start_on(data_dir, &args, "127.0.0.1:0", &format!("127.0.0.1:{tls_port}"))
}

/// RFC 8555 §7 (account, order, finalize, download) with RFC 8737's
/// TLS-ALPN-01 on the TLS listener; the certificate is served from the next
/// handshake on, renewed before it expires, kept while the CA is down
/// (RFC 8555 does not promise a CA is always up; a client retries).
#[test]
fn tls_alpn_01_issues_renews_and_survives_the_ca_being_down() {
    let tls_port = free_port();
    let mut pebble = Pebble::start(tls_port, free_port());
    let node = acme_node(&pebble, tls_port, "");
    let address = format!("127.0.0.1:{tls_port}");
    let root = pebble.root();

    // Issued: the served chain leads to Pebble's root, for the domain.
    let first = eventually(Duration::from_secs(60), || issued_serial(&address, &root));
    assert!(node.log_text().contains("validated (tls-alpn-01)"), "{}", node.log_text());
    // RFC 8737 §3: a validation handshake (ALPN acme-tls/1) while no
    // challenge is pending gets no certificate at all.
    let mut validation = (*accept_any()).clone();
    validation.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    assert!(served_chain(&address, DOMAIN, std::sync::Arc::new(validation)).is_err());

    // Renewed two thirds into the 30 s lifetime, without a restart.
    let second = eventually(Duration::from_secs(60), || {
        issued_serial(&address, &root).filter(|serial| *serial != first)
    });

    // The CA down: the renewal fails, is logged, and the old certificate stays.
    let failures = || node.log_text().matches("renewal failed").count();
    let failed_before = failures();
    pebble.stop();
    eventually(Duration::from_secs(60), || (failed_before < failures()).then_some(()));
    assert_eq!(served_serial(&address), second);
    let recorded = renewal_failures(&node);
    let failures: u32 = recorded.split('|').next().unwrap().parse().unwrap_or(0);
    assert!(1 <= failures, "recorded: {recorded}");
    assert!(recorded.contains("cannot reach"), "recorded: {recorded}");

    // The CA back (a new Pebble: new roots, the account made again): renewed.
    pebble.run();
    let new_root = pebble.root();
    let third = eventually(Duration::from_secs(90), || issued_serial(&address, &new_root));
    assert_ne!(third, second);
    assert!(issued_serial(&address, &root).is_none(), "still the first Pebble's certificate");
}

/// RFC 8555 §8.3: HTTP-01, answered on `acme.http_listen`; the certificate
/// survives a restart.
#[test]
fn http_01_issues_a_certificate() {
    let (tls_port, http_port) = (free_port(), free_port());
    let mut pebble = Pebble::start(tls_port, http_port);
    let extra = format!("challenge = \"http-01\"\nhttp_listen = \"127.0.0.1:{http_port}\"");
    let mut node = acme_node(&pebble, tls_port, &extra);
    let address = format!("127.0.0.1:{tls_port}");
    let root = pebble.root();
    let issued = eventually(Duration::from_secs(60), || issued_serial(&address, &root));
    assert!(node.log_text().contains("validated (http-01)"), "{}", node.log_text());
    // Nothing pending: the challenge listener answers 404.
    let mut connection = common::RawConnection::connect(&format!("http://127.0.0.1:{http_port}"));
    connection.send(b"GET /.well-known/acme-challenge/aaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(connection.read_response().status, 404);

    // The certificate is kept in the database: a restarted node serves it
    // from its first handshake (Pebble stopped, so it cannot be renewed).
    pebble.stop();
    node.restart();
    assert_eq!(served_serial(&address), issued);
}
