//! The machine-wide egress policy: which addresses the pages of sandboxed browsers (and the
//! proxies their clients name) may connect to.
//!
//! Closed by default to everything that is not the public internet: this machine, private
//! networks, link-local (where every cloud's metadata service answers, handing out the
//! machine's credentials), CGNAT, ULA, multicast, documentation and reserved ranges, and the
//! IPv6 forms that carry an IPv4 address inside (mapped, NAT64, 6to4). A browser server that
//! lets any page fetch `http://169.254.169.254/` or a VPC's internal services is the classic
//! server-side request forgery of the field. The operator opens what they need with
//! `--egress-allow` and closes more with `--egress-deny`.
//!
//! The check is made on the address browserd is about to connect to, after resolving: a
//! name that resolves (or rebinds) to a private address is refused like the address itself.

use crate::fault::Failure;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

/// browserd's own listening ports (API, connectUrl websockets, metrics), whatever server of
/// this process listens on them: never reachable from a page on a local address. A std
/// mutex: held to copy or push a port.
static OWN_PORTS: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Closes `port` to every page: browserd serves on it.
pub fn protect_own_port(port: u16) {
    OWN_PORTS.lock().unwrap().push(port);
}

/// A network an operator names (`--egress-allow`, `--egress-deny`): `10.1.0.0/16`,
/// `fd00::/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl std::str::FromStr for Cidr {
    /// The operator's: `--egress-allow`, `--egress-deny`.
    type Err = Failure;
    fn from_str(s: &str) -> Result<Self, Failure> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            // 10.1.2.3/8 means 10.0.0.0/8: say the network as it is.
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(IpNet::from(ip)))
            .map_err(|_| {
                Failure::operator(format!(
                    "{s:?} is not a network (give an address or CIDR, e.g. 10.20.0.0/16)"
                ))
            })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What pages may connect to.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Pages may reach services on this machine: loopback and the machine's own addresses
    /// (people test their local apps). browserd's own ports stay closed either way.
    pub allow_local: bool,
    /// `--egress-allow`: networks opened although the range table closes them.
    pub allow: Vec<Cidr>,
    /// `--egress-deny`: networks closed although public (checked before `allow`).
    pub deny: Vec<Cidr>,
    /// Ports closed besides [`protect_own_port`]'s (tests).
    pub own_ports: Vec<u16>,
}

/// Why a destination is refused: a rule of the policy. Its [`Refusal::rule`] is the label of
/// the refusals metric and of the session log's `browserd.egressRefused` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A port a server of browserd's listens on, on this machine.
    OwnPort,
    /// This machine (loopback, unspecified, an address of its interfaces) while
    /// `--allow-local-egress` is off.
    ThisMachine,
    /// Inside a network of `--egress-deny`.
    Denied(Cidr),
    /// Inside a range closed by default.
    Range(&'static Range),
}

impl Refusal {
    /// A short, stable name: `own_port`, `this_machine`, `egress_deny`, or the range's kind
    /// (`private`, `link_local`, `cgnat`, …).
    pub fn rule(&self) -> &'static str {
        match self {
            Self::OwnPort => "own_port",
            Self::ThisMachine => "this_machine",
            Self::Denied(_) => "egress_deny",
            Self::Range(range) => range.kind,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OwnPort => f.write_str("browserd's own port"),
            Self::ThisMachine => {
                f.write_str("this machine (browserd's --allow-local-egress is off)")
            }
            Self::Denied(net) => write!(f, "{net} is closed by --egress-deny"),
            Self::Range(range) => write!(
                f,
                "{} {} (closed by default; the operator opens it with --egress-allow)",
                range.what, range.net
            ),
        }
    }
}

/// A range closed by default.
#[derive(Debug, PartialEq, Eq)]
pub struct Range {
    pub net: IpNet,
    /// The metric label.
    pub kind: &'static str,
    /// What it is, for people.
    pub what: &'static str,
}

/// Every range closed by default, most specific first (a lookup takes the first that
/// contains the address). IANA's special-purpose registries (RFC 6890 and later), less
/// the few that are globally reachable by design. IPv6 outside 2000::/3 is closed as a
/// whole after these (see [`range_of`]).
static RANGES: LazyLock<Vec<Range>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "this_network", "\"this network\""),
        ("10.0.0.0/8", "private", "a private network (RFC 1918)"),
        (
            "100.64.0.0/10",
            "cgnat",
            "shared address space (CGNAT, RFC 6598; some clouds' metadata services)",
        ),
        ("127.0.0.0/8", "loopback", "loopback"),
        (
            "169.254.0.0/16",
            "link_local",
            "link-local (cloud metadata services, 169.254.169.254)",
        ),
        ("172.16.0.0/12", "private", "a private network (RFC 1918)"),
        ("192.0.0.0/24", "reserved", "IETF protocol assignments"),
        (
            "192.0.2.0/24",
            "documentation",
            "documentation (TEST-NET-1)",
        ),
        ("192.88.99.0/24", "reserved", "the 6to4 relay anycast"),
        ("192.168.0.0/16", "private", "a private network (RFC 1918)"),
        (
            "168.63.129.16/32",
            "metadata",
            "Azure's host endpoint (WireServer: goal state, extension settings)",
        ),
        ("198.18.0.0/15", "reserved", "benchmarking (RFC 2544)"),
        (
            "198.51.100.0/24",
            "documentation",
            "documentation (TEST-NET-2)",
        ),
        (
            "203.0.113.0/24",
            "documentation",
            "documentation (TEST-NET-3)",
        ),
        ("224.0.0.0/4", "multicast", "multicast"),
        ("240.0.0.0/4", "reserved", "reserved (and broadcast)"),
        ("::/128", "this_network", "the unspecified address"),
        ("::1/128", "loopback", "loopback"),
        ("::/96", "reserved", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "private", "local-use NAT64 (RFC 8215)"),
        ("100::/64", "reserved", "discard-only"),
        ("2001:db8::/32", "documentation", "documentation"),
        (
            "2001::/23",
            "reserved",
            "IETF protocol assignments (Teredo, ORCHID)",
        ),
        ("3fff::/20", "documentation", "documentation"),
        ("5f00::/16", "reserved", "SRv6 segment identifiers"),
        (
            "fc00::/7",
            "private",
            "unique local (ULA; some clouds' metadata services)",
        ),
        ("fe80::/10", "link_local", "link-local"),
        ("fec0::/10", "private", "site-local (deprecated)"),
        ("ff00::/8", "multicast", "multicast"),
    ]
    .into_iter()
    .map(|(net, kind, what)| Range {
        net: net.parse().expect("the range table holds valid networks"),
        kind,
        what,
    })
    .collect()
});

/// IPv6 outside global unicast (2000::/3): not assigned for use on the internet.
static OUTSIDE_GLOBAL_UNICAST: LazyLock<Range> = LazyLock::new(|| Range {
    net: "::/0".parse().unwrap(),
    kind: "reserved",
    what: "outside IPv6 global unicast (2000::/3)",
});

/// The range closed by default that holds `ip` (IPv4 inside IPv6 judged as the IPv4
/// address), or `None` for a public address.
pub(super) fn range_of(ip: IpAddr) -> Option<&'static Range> {
    let ip = embedded_v4(ip).map(IpAddr::V4).unwrap_or(ip);
    if let Some(range) = RANGES.iter().find(|r| r.net.contains(&ip)) {
        return Some(range);
    }
    match ip {
        IpAddr::V6(v6) if v6.segments()[0] & 0xe000 != 0x2000 => Some(&OUTSIDE_GLOBAL_UNICAST),
        _ => None,
    }
}

/// The IPv4 address an IPv6 address carries to an IPv4 host: IPv4-mapped (`::ffff:a.b.c.d`,
/// which Linux connects over IPv4), NAT64 (`64:ff9b::/96`, translated by a gateway), and
/// 6to4 (`2002:AABB:CCDD::/48`, relayed to a.b.c.d's network).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

impl EgressPolicy {
    /// Why a connection to `addr` is refused, or `None` if it is allowed. Order: browserd's
    /// own ports, `--egress-deny`, this machine (`--allow-local-egress`), `--egress-allow`,
    /// then the ranges closed by default.
    pub fn refusal(&self, addr: SocketAddr) -> Option<Refusal> {
        let ip = addr.ip().to_canonical();
        let inner = embedded_v4(addr.ip()).map(IpAddr::V4);
        // This machine in any form: the NAT64 or 6to4 form of its own address too.
        let local = is_local(ip) || inner.is_some_and(is_local);
        if local
            && (self.own_ports.contains(&addr.port())
                || OWN_PORTS.lock().unwrap().contains(&addr.port()))
        {
            return Some(Refusal::OwnPort);
        }
        let within = |nets: &[Cidr]| {
            nets.iter()
                .find(|n| n.0.contains(&ip) || inner.is_some_and(|i| n.0.contains(&i)))
                .copied()
        };
        if let Some(net) = within(&self.deny) {
            return Some(Refusal::Denied(net));
        }
        if local {
            return (!self.allow_local).then_some(Refusal::ThisMachine);
        }
        if within(&self.allow).is_some() {
            return None;
        }
        range_of(ip).map(Refusal::Range)
    }
}

/// Whether `ip` is this machine: loopback, unspecified (which Linux connects to loopback),
/// or an address of one of its interfaces.
fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || interface_addresses().contains(&ip)
}

/// How long the interface addresses read are used before they are read again.
const INTERFACES_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The machine's interface addresses (`getifaddrs`), read at most once per
/// [`INTERFACES_FRESH`]: a check per connection must not cost a netlink dump, and addresses
/// change rarely. Read from the interfaces rather than by trying to bind an address, which
/// `ip_nonlocal_bind` (common beside keepalived) makes succeed for every address. If they
/// cannot be read, the last list read is kept.
fn interface_addresses() -> std::sync::Arc<Vec<IpAddr>> {
    use std::sync::{Arc, Mutex};
    // A std mutex: held to copy an Arc or store a fresh list, never across an await.
    static CACHE: Mutex<Option<(std::time::Instant, Arc<Vec<IpAddr>>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap();
    if let Some((read, addrs)) = cache.as_ref()
        && read.elapsed() < INTERFACES_FRESH
    {
        return Arc::clone(addrs);
    }
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(ifaces) => Arc::new(
            ifaces
                .filter_map(|i| i.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not read this machine's addresses; the last ones read stay in force");
            cache
                .as_ref()
                .map(|(_, a)| Arc::clone(a))
                .unwrap_or_default()
        }
    };
    *cache = Some((std::time::Instant::now(), Arc::clone(&addrs)));
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 80)
    }

    fn kind(ip: &str) -> Option<&'static str> {
        EgressPolicy::default().refusal(at(ip)).map(|r| r.rule())
    }

    #[test]
    fn every_range_is_closed_at_both_edges_and_open_just_outside() {
        // Each IPv4 range: its first and last address refused for that range; the address
        // just below and just above is public unless it starts or ends another range.
        for range in RANGES.iter() {
            let (first, last) = (range.net.network(), range.net.broadcast());
            for edge in [first, last] {
                let got = range_of(edge).unwrap_or_else(|| panic!("{edge} open"));
                assert!(got.net.contains(&edge), "{edge} judged by {}", got.net);
            }
            if let (IpAddr::V4(first), IpAddr::V4(last)) = (first, last) {
                for outside in [
                    u32::from(first).checked_sub(1),
                    u32::from(last).checked_add(1),
                ]
                .into_iter()
                .flatten()
                {
                    let outside = IpAddr::V4(Ipv4Addr::from(outside));
                    if let Some(other) = range_of(outside) {
                        assert!(
                            !range.net.contains(&outside) && other.net != range.net,
                            "{outside} is not outside {}",
                            range.net
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_ipv4_ranges_closed_by_default() {
        for (ip, want) in [
            ("0.0.0.1", "this_network"),
            ("10.0.0.0", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.0", "cgnat"),
            ("100.100.100.200", "cgnat"), // Alibaba Cloud's metadata service
            ("168.63.129.16", "metadata"), // Azure's WireServer
            ("100.127.255.255", "cgnat"),
            ("169.254.169.254", "link_local"), // AWS, GCP, Azure, OCI…
            ("169.254.0.0", "link_local"),
            ("169.254.255.255", "link_local"),
            ("172.16.0.0", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.192", "reserved"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "reserved"),
            ("192.168.0.1", "private"),
            ("198.18.0.1", "reserved"),
            ("198.19.255.255", "reserved"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.255", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
        ] {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn the_ipv6_ranges_and_ipv4_inside_ipv6() {
        for (ip, want) in [
            ("fe80::1", "link_local"),
            ("febf:ffff::1", "link_local"),
            ("fd00:ec2::254", "private"), // AWS's IPv6 metadata service
            ("fc00::1", "private"),
            ("fdff:ffff::1", "private"),
            ("fec0::1", "private"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001::1", "reserved"), // Teredo
            ("100::1", "reserved"),
            ("5f00::1", "reserved"),
            ("64:ff9b:1::a00:1", "private"),
            ("4000::1", "reserved"), // outside 2000::/3
            ("1234::1", "reserved"),
            ("::10.0.0.1", "reserved"), // IPv4-compatible
            // IPv4 inside IPv6 is judged as the IPv4 address.
            ("::ffff:169.254.169.254", "link_local"),
            ("::ffff:10.1.2.3", "private"),
            ("64:ff9b::a9fe:a9fe", "link_local"), // NAT64 of 169.254.169.254
            ("64:ff9b::c0a8:0101", "private"),    // NAT64 of 192.168.1.1
            ("2002:a9fe:a9fe::1", "link_local"),  // 6to4 of 169.254.169.254
            ("2002:0a00:0001::", "private"),      // 6to4 of 10.0.0.1
        ] {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "64:ff9b::808:808",  // NAT64 of 8.8.8.8
            "2002:0808:0808::1", // 6to4 of 8.8.8.8
            "::ffff:1.1.1.1",    // mapped 1.1.1.1
            "2001:200::1",       // just past 2001::/23
            "3ffe:ffff::1",      // just below 3fff::/20
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn local_destinations_follow_the_flag_and_own_ports_are_always_closed() {
        let deny = EgressPolicy {
            own_ports: vec![3000],
            ..Default::default()
        };
        let allow = EgressPolicy {
            allow_local: true,
            own_ports: vec![3000],
            ..Default::default()
        };
        for local in [
            "127.0.0.1:8080",
            "0.0.0.0:8080",
            "[::1]:8080",
            "[::]:8080",
            "[::ffff:127.0.0.1]:8080",
            "127.1.2.3:8080",
        ] {
            let addr: SocketAddr = local.parse().unwrap();
            assert_eq!(deny.refusal(addr), Some(Refusal::ThisMachine), "{local}");
            assert_eq!(allow.refusal(addr), None, "{local}");
            let own = SocketAddr::new(addr.ip(), 3000);
            assert_eq!(allow.refusal(own), Some(Refusal::OwnPort), "{own}");
        }
        // The machine's own interface addresses, and the NAT64 form of an IPv4 one.
        for ip in interface_addresses().iter().filter(|ip| !ip.is_loopback()) {
            let addr = SocketAddr::new(*ip, 8080);
            assert_eq!(deny.refusal(addr), Some(Refusal::ThisMachine), "{addr}");
            if let IpAddr::V4(v4) = ip {
                let [a, b, c, d] = v4.octets();
                let nat64 = std::net::Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    0,
                    0,
                    0,
                    0,
                    u16::from_be_bytes([a, b]),
                    u16::from_be_bytes([c, d]),
                );
                let addr = SocketAddr::new(nat64.into(), 3000);
                assert_eq!(allow.refusal(addr), Some(Refusal::OwnPort), "{addr}");
            }
        }
        // A remote address on the same port as browserd's is someone else's server.
        let remote: SocketAddr = "93.184.215.14:3000".parse().unwrap();
        assert_eq!(deny.refusal(remote), None);
    }

    #[test]
    fn the_operator_opens_and_closes_networks() {
        let policy = EgressPolicy {
            allow: vec![
                "10.20.0.0/16".parse().unwrap(),
                "fd12::/16".parse().unwrap(),
            ],
            deny: vec![
                "10.20.30.0/24".parse().unwrap(),
                "93.184.0.0/16".parse().unwrap(),
            ],
            ..Default::default()
        };
        assert_eq!(policy.refusal(at("10.20.1.1")), None);
        assert_eq!(policy.refusal(at("fd12::1")), None);
        assert_eq!(policy.refusal(at("::ffff:10.20.1.1")), None);
        // Deny wins over allow, and closes public networks too.
        assert_eq!(
            policy.refusal(at("10.20.30.4")).map(|r| r.rule()),
            Some("egress_deny")
        );
        assert_eq!(
            policy.refusal(at("93.184.215.14")).map(|r| r.rule()),
            Some("egress_deny")
        );
        assert_eq!(
            policy.refusal(at("64:ff9b::5db8:d70e")).map(|r| r.rule()),
            Some("egress_deny"),
            "NAT64 form of a denied address"
        );
        // What the allow list does not name stays closed.
        assert_eq!(
            policy.refusal(at("10.21.0.1")).map(|r| r.rule()),
            Some("private")
        );
        // The allow list does not open this machine: that is --allow-local-egress.
        assert_eq!(
            policy.refusal(at("127.0.0.1")),
            Some(Refusal::ThisMachine),
            "loopback"
        );
        let everything = EgressPolicy {
            allow: vec!["0.0.0.0/0".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(everything.refusal(at("169.254.169.254")), None);
    }

    #[test]
    fn networks_parse_as_cidrs_or_single_addresses() {
        let net = |s: &str| s.parse::<Cidr>().map(|c| c.to_string());
        assert_eq!(net("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(net(" 10.1.2.3 ").unwrap(), "10.1.2.3/32");
        assert_eq!(net("fd00::1").unwrap(), "fd00::1/128");
        assert_eq!(net("fd00::/8").unwrap(), "fd00::/8");
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8", "::/129"] {
            assert!(net(bad).is_err(), "{bad:?}");
        }
        let why = "nope".parse::<Cidr>().unwrap_err();
        assert!(why.message().contains("10.20.0.0/16"), "{why}");
    }

    #[test]
    fn refusals_say_the_rule_and_how_to_open_it() {
        let why = EgressPolicy::default()
            .refusal(at("169.254.169.254"))
            .unwrap()
            .to_string();
        assert!(why.contains("169.254.0.0/16"), "{why}");
        assert!(why.contains("metadata"), "{why}");
        assert!(why.contains("--egress-allow"), "{why}");
    }
}
