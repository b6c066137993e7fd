//! A small stub DNS resolver on the event loop: A, AAAA and SRV queries over
//! UDP to the nameservers of `/etc/resolv.conf`, with `simple-dns` for the
//! message format.
//!
//! It exists because the system resolver (`getaddrinfo`, which std's
//! `ToSocketAddrs` and `smol::net::resolve` call) blocks, and smol runs it on
//! a thread pool; hearth keeps one thread. Knows nothing of Matrix.
//!
//! Limits, deliberately: no TCP fallback for truncated answers (A, AAAA and
//! SRV answers for a homeserver fit in 512 bytes), no `/etc/hosts`, no search
//! domains (server names are fully qualified), no DNSSEC.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use smol::Async;
use smol::future::FutureExt;

/// Where the nameservers are listed.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// `/etc/resolv.conf` is read again after this long (DHCP may change it).
const RESOLV_CONF_TTL: Duration = Duration::from_secs(60);
/// resolv.conf(5): at most three nameservers are used.
const MAX_NAMESERVERS: usize = 3;
/// One query to one nameserver gets this long (resolv.conf's default `timeout:5`, shortened).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// RFC 1035: a UDP answer without EDNS is at most 512 bytes; we read up to this.
const MAX_UDP_ANSWER: usize = 4096;
/// CNAME chains longer than this are refused (loops, or abuse).
const MAX_CNAME_CHAIN: usize = 8;

/// A resolved record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An A or AAAA record.
    Ip(IpAddr),
    /// An SRV record.
    Srv { priority: u16, weight: u16, port: u16, target: String },
}

/// What can be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Srv,
}

impl Kind {
    fn record_type(self) -> TYPE {
        match self {
            Kind::A => TYPE::A,
            Kind::Aaaa => TYPE::AAAA,
            Kind::Srv => TYPE::SRV,
        }
    }
}

/// Why a lookup failed. "No such name" is not an error: it is an empty answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// No nameserver is configured.
    NoNameservers,
    /// The name cannot be put in a query.
    BadName(String),
    /// The answer does not parse, or does not answer our question.
    BadAnswer(String),
    /// The answer was truncated (we do not retry over TCP).
    Truncated,
    /// The nameserver failed (SERVFAIL, REFUSED, ...).
    ServerFailure(String),
    /// No nameserver answered in time.
    Timeout,
    /// A socket error.
    Io(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NoNameservers => write!(f, "no nameserver in {RESOLV_CONF}"),
            DnsError::BadName(name) => write!(f, "{name:?} is not a DNS name"),
            DnsError::BadAnswer(why) => write!(f, "bad DNS answer: {why}"),
            DnsError::Truncated => f.write_str("truncated DNS answer"),
            DnsError::ServerFailure(code) => write!(f, "DNS server failure: {code}"),
            DnsError::Timeout => f.write_str("no DNS answer in time"),
            DnsError::Io(error) => write!(f, "DNS socket error: {error}"),
        }
    }
}

/// The resolver: its nameservers (read lazily, refreshed now and then).
#[derive(Default)]
pub struct Resolver {
    /// Fixed nameservers (tests); when empty, `/etc/resolv.conf` is read.
    fixed: Vec<SocketAddr>,
    cached: RefCell<Option<(Instant, Vec<SocketAddr>)>>,
}

impl Resolver {
    /// A resolver asking these nameservers instead of `/etc/resolv.conf`.
    #[cfg(test)]
    pub fn with_nameservers(nameservers: Vec<SocketAddr>) -> Resolver {
        Resolver { fixed: nameservers, cached: RefCell::new(None) }
    }

    fn nameservers(&self) -> Vec<SocketAddr> {
        if !self.fixed.is_empty() {
            return self.fixed.clone();
        }
        if let Some((read_at, servers)) = &*self.cached.borrow() {
            if read_at.elapsed() < RESOLV_CONF_TTL {
                return servers.clone();
            }
        }
        // A small local file: reading it is as quick as any syscall.
        let servers =
            std::fs::read_to_string(RESOLV_CONF).map(|text| parse_resolv_conf(&text)).unwrap_or_default();
        *self.cached.borrow_mut() = Some((Instant::now(), servers.clone()));
        servers
    }

    /// The A and AAAA addresses of `name` (IPv6 first, as RFC 6724 prefers);
    /// names in `/etc/hosts` (such as `localhost`) are answered from there.
    pub async fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if self.fixed.is_empty() {
            let from_hosts =
                std::fs::read_to_string(HOSTS_FILE).map(|text| parse_hosts(&text, name)).unwrap_or_default();
            if !from_hosts.is_empty() {
                return Ok(from_hosts);
            }
        }
        let aaaa = self.query(name, Kind::Aaaa).await;
        let a = self.query(name, Kind::A).await;
        let mut addresses = Vec::new();
        let mut first_error = None;
        for answer in [aaaa, a] {
            match answer {
                Ok(records) => addresses.extend(records.into_iter().filter_map(|record| match record {
                    Record::Ip(ip) => Some(ip),
                    Record::Srv { .. } => None,
                })),
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        match first_error {
            Some(error) if addresses.is_empty() => Err(error),
            _ => Ok(addresses),
        }
    }

    /// The SRV records of `name`, ordered by priority (then by weight, heaviest first).
    pub async fn lookup_srv(&self, name: &str) -> Result<Vec<Record>, DnsError> {
        let mut records = self.query(name, Kind::Srv).await?;
        records.retain(|record| matches!(record, Record::Srv { .. }));
        records.sort_by_key(|record| match record {
            Record::Srv { priority, weight, .. } => (*priority, u16::MAX - weight),
            Record::Ip(_) => (u16::MAX, u16::MAX),
        });
        Ok(records)
    }

    /// Asks each nameserver in turn until one answers.
    pub async fn query(&self, name: &str, kind: Kind) -> Result<Vec<Record>, DnsError> {
        let nameservers = self.nameservers();
        if nameservers.is_empty() {
            return Err(DnsError::NoNameservers);
        }
        let mut last_error = DnsError::Timeout;
        for nameserver in nameservers {
            let attempt = query_one(nameserver, name, kind)
                .or(async {
                    smol::Timer::after(QUERY_TIMEOUT).await;
                    Err(DnsError::Timeout)
                })
                .await;
            match attempt {
                Ok(records) => return Ok(records),
                Err(error @ DnsError::BadName(_)) => return Err(error),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

async fn query_one(nameserver: SocketAddr, name: &str, kind: Kind) -> Result<Vec<Record>, DnsError> {
    let io = |error: std::io::Error| DnsError::Io(error.to_string());
    let mut id_bytes = [0u8; 2];
    getrandom::getrandom(&mut id_bytes).map_err(|error| DnsError::Io(error.to_string()))?;
    let id = u16::from_be_bytes(id_bytes);
    let query = build_query(id, name, kind)?;
    let local: SocketAddr = if nameserver.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = Async::<std::net::UdpSocket>::bind(local).map_err(io)?;
    // `connect` makes the kernel drop datagrams from any other address.
    socket.get_ref().connect(nameserver).map_err(io)?;
    socket.send(&query).await.map_err(io)?;
    let mut buffer = vec![0u8; MAX_UDP_ANSWER];
    loop {
        let length = socket.recv(&mut buffer).await.map_err(io)?;
        match parse_answer(&buffer[..length], id, name, kind) {
            // A stray datagram with another ID (a late answer to an earlier
            // query, or a spoofing attempt): keep waiting for ours.
            Err(DnsError::BadAnswer(why)) if why == WRONG_ID => continue,
            result => return result,
        }
    }
}

const WRONG_ID: &str = "the answer's ID does not match";

/// The system's static host table, consulted before DNS as the C library does.
const HOSTS_FILE: &str = "/etc/hosts";

/// The addresses `/etc/hosts` text gives `name` (IPv6 first).
pub fn parse_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let wanted = normalize(name);
    let mut addresses: Vec<IpAddr> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address: IpAddr = fields.next()?.parse().ok()?;
            fields.any(|alias| normalize(alias) == wanted).then_some(address)
        })
        .collect();
    addresses.sort_by_key(|address| !address.is_ipv6());
    addresses.dedup();
    addresses
}

/// Lower-case, without the trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The query message for `name` (recursion desired).
pub fn build_query(id: u16, name: &str, kind: Kind) -> Result<Vec<u8>, DnsError> {
    let normalized = normalize(name);
    let qname = Name::new(&normalized).map_err(|_| DnsError::BadName(name.to_string()))?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        qname,
        QTYPE::TYPE(kind.record_type()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().map_err(|error| DnsError::BadName(format!("{name}: {error}")))
}

/// Reads the answer to our query: the records of `kind` for `name`, following
/// CNAMEs within the answer. NXDOMAIN and NODATA are an empty list.
pub fn parse_answer(bytes: &[u8], id: u16, name: &str, kind: Kind) -> Result<Vec<Record>, DnsError> {
    let packet = Packet::parse(bytes).map_err(|error| DnsError::BadAnswer(error.to_string()))?;
    if packet.id() != id {
        return Err(DnsError::BadAnswer(WRONG_ID.into()));
    }
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(DnsError::BadAnswer("not a response".into()));
    }
    let asked = normalize(name);
    let echoed = packet.questions.first().map(|question| normalize(&question.qname.to_string()));
    if echoed.as_deref() != Some(asked.as_str()) {
        return Err(DnsError::BadAnswer("the answer is for another question".into()));
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Err(DnsError::Truncated);
    }
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Ok(Vec::new()),
        other => return Err(DnsError::ServerFailure(format!("{other:?}"))),
    }
    // The names that stand for the asked one: itself and its CNAME targets.
    let mut aliases = vec![asked];
    for _ in 0..MAX_CNAME_CHAIN {
        let before = aliases.len();
        for record in &packet.answers {
            if let RData::CNAME(target) = &record.rdata {
                let (owner, target) = (normalize(&record.name.to_string()), normalize(&target.0.to_string()));
                if aliases.contains(&owner) && !aliases.contains(&target) {
                    aliases.push(target);
                }
            }
        }
        if aliases.len() == before {
            break;
        }
    }
    let mut records = Vec::new();
    for record in &packet.answers {
        if !aliases.contains(&normalize(&record.name.to_string())) {
            continue;
        }
        match (&record.rdata, kind) {
            (RData::A(a), Kind::A) => records.push(Record::Ip(IpAddr::V4(Ipv4Addr::from(a.address)))),
            (RData::AAAA(aaaa), Kind::Aaaa) => {
                records.push(Record::Ip(IpAddr::V6(Ipv6Addr::from(aaaa.address))))
            }
            (RData::SRV(srv), Kind::Srv) => records.push(Record::Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: normalize(&srv.target.to_string()),
            }),
            _ => {}
        }
    }
    Ok(records)
}

/// The `nameserver` lines of resolv.conf(5), on port 53 (at most three).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        // A scoped IPv6 address (`fe80::1%eth0`) cannot be parsed into an IpAddr: skip it.
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_NAMESERVERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::ResourceRecord;
    use simple_dns::rdata::{A, AAAA, CNAME, SRV};

    /// A reply to `query` with the given answers.
    fn reply(query: &[u8], rcode: RCODE, answers: Vec<ResourceRecord<'static>>) -> Vec<u8> {
        let question = Packet::parse(query).unwrap().questions[0].clone().into_owned();
        let mut packet = Packet::new_reply(Packet::parse(query).unwrap().id());
        *packet.rcode_mut() = rcode;
        packet.questions.push(question);
        packet.answers = answers;
        packet.build_bytes_vec().unwrap()
    }

    fn record(name: &'static str, rdata: RData<'static>) -> ResourceRecord<'static> {
        ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, 300, rdata)
    }

    #[test]
    fn hosts_file_names_resolve_without_dns() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost # loopback\n# 10.0.0.1 localhost\n192.0.2.7 Box.Example box\n";
        assert_eq!(
            parse_hosts(text, "localhost"),
            vec!["::1".parse::<IpAddr>().unwrap(), "127.0.0.1".parse().unwrap()]
        );
        assert_eq!(parse_hosts(text, "box.example."), vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert!(parse_hosts(text, "elsewhere").is_empty());
    }

    #[test]
    fn queries_round_trip_and_answers_parse() {
        let query = build_query(7, "Example.ORG.", Kind::A).unwrap();
        let parsed = Packet::parse(&query).unwrap();
        assert_eq!(parsed.id(), 7);
        assert!(parsed.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(parsed.questions[0].qname.to_string(), "example.org");
        let answer = reply(
            &query,
            RCODE::NoError,
            vec![
                record("example.org", RData::CNAME(CNAME(Name::new_unchecked("host.example.net")))),
                record("host.example.net", RData::A(A { address: u32::from(Ipv4Addr::new(192, 0, 2, 1)) })),
                record("other.example", RData::A(A { address: u32::from(Ipv4Addr::new(192, 0, 2, 9)) })),
                record("example.org", RData::AAAA(AAAA { address: 1 })),
            ],
        );
        assert_eq!(
            parse_answer(&answer, 7, "example.org", Kind::A),
            Ok(vec![Record::Ip("192.0.2.1".parse().unwrap())])
        );
        assert_eq!(
            parse_answer(&answer, 7, "example.org", Kind::Aaaa),
            Ok(vec![Record::Ip("::1".parse().unwrap())])
        );
        assert_eq!(
            parse_answer(&answer, 8, "example.org", Kind::A),
            Err(DnsError::BadAnswer(WRONG_ID.into()))
        );
        assert!(matches!(parse_answer(&answer, 7, "example.com", Kind::A), Err(DnsError::BadAnswer(_))));
        assert!(matches!(parse_answer(&query, 7, "example.org", Kind::A), Err(DnsError::BadAnswer(_))));
        assert!(matches!(
            parse_answer(b"\x00\x07junk", 7, "example.org", Kind::A),
            Err(DnsError::BadAnswer(_))
        ));
    }

    #[test]
    fn srv_nxdomain_and_failures() {
        let query = build_query(1, "_matrix-fed._tcp.example.org", Kind::Srv).unwrap();
        let srv = reply(
            &query,
            RCODE::NoError,
            vec![record(
                "_matrix-fed._tcp.example.org",
                RData::SRV(SRV {
                    priority: 10,
                    weight: 5,
                    port: 8443,
                    target: Name::new_unchecked("m.example.org"),
                }),
            )],
        );
        assert_eq!(
            parse_answer(&srv, 1, "_matrix-fed._tcp.example.org", Kind::Srv),
            Ok(vec![Record::Srv { priority: 10, weight: 5, port: 8443, target: "m.example.org".into() }])
        );
        let nxdomain = reply(&query, RCODE::NameError, vec![]);
        assert_eq!(parse_answer(&nxdomain, 1, "_matrix-fed._tcp.example.org", Kind::Srv), Ok(vec![]));
        let failure = reply(&query, RCODE::ServerFailure, vec![]);
        assert!(matches!(
            parse_answer(&failure, 1, "_matrix-fed._tcp.example.org", Kind::Srv),
            Err(DnsError::ServerFailure(_))
        ));
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(matches!(build_query(1, &long_label, Kind::A), Err(DnsError::BadName(_))));
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.org\nnameserver 10.0.0.1\nnameserver ::1\n\
                    nameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        let expected: Vec<SocketAddr> =
            vec!["10.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap(), "10.0.0.2:53".parse().unwrap()];
        assert_eq!(parse_resolv_conf(text), expected);
    }

    #[test]
    fn a_lookup_against_a_loopback_nameserver() {
        // A one-shot fake nameserver on loopback answers A and AAAA queries.
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            for _ in 0..2 {
                let mut buffer = [0u8; 512];
                let (length, from) = server.recv_from(&mut buffer).unwrap();
                let query = Packet::parse(&buffer[..length]).unwrap();
                let answers = match query.questions[0].qtype {
                    QTYPE::TYPE(TYPE::A) => {
                        vec![record("node.test", RData::A(A { address: u32::from(Ipv4Addr::LOCALHOST) }))]
                    }
                    _ => vec![],
                };
                server.send_to(&reply(&buffer[..length], RCODE::NoError, answers), from).unwrap();
            }
        });
        let resolver = Resolver::with_nameservers(vec![address]);
        let addresses = smol::block_on(resolver.lookup_ip("node.test")).unwrap();
        assert_eq!(addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        thread.join().unwrap();
    }
}
