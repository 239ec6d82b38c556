//! The allow-list of callback receivers: a sandbox service must not become a way into its
//! operator's network, so a callback goes only where the operator said it may.
//!
//! Entries (`sandpit serve --callback-allow ENTRY`, repeatable; nothing is allowed without
//! one) are `HOST[:PORT]`:
//!
//! | HOST | matches a callback URL whose host is |
//! |---|---|
//! | `hooks.example.com` | that name |
//! | `*.example.com` | any name below `example.com` (per-tenant receivers) |
//! | `*` | any name |
//! | `192.0.2.7`, `[2001:db8::7]` | that address, written as an address |
//! | `10.1.0.0/16`, `[fd00::/8]` | an address in that network, written as an address |
//!
//! PORT is a number or `*` (any port); without one, only port 80 (plain HTTP's) is allowed.
//!
//! A name is only half the check: at every attempt the name is resolved and only addresses
//! the list allows are connected to. A name entry allows the name's *public* addresses;
//! an internal one (loopback, private, link-local, shared, multicast, documentation, …) only
//! when an address entry lists it too. So `*` lets callers reach the internet but not the
//! operator's networks, and a name that resolves to `127.0.0.1` or `169.254.169.254` (DNS
//! rebinding) is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The host of a callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    /// An address written in the URL.
    Ip(IpAddr),
}

impl Host {
    /// A host as written in a URL or an entry: a name, an IPv4 address, or `[IPv6]`.
    pub fn parse(text: &str) -> Result<Host, String> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Host::Ip(IpAddr::V6(a)))
                .map_err(|_| format!("'{text}' is not an IPv6 address"));
        }
        if let Ok(a) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(a)));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if valid_name(&name) {
            Ok(Host::Name(name))
        } else {
            Err(format!("'{text}' is not a host name or an address"))
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, 1-63 bytes each (not
/// starting or ending with `-`), at most 253 bytes, not all digits and dots (that would be a
/// mistyped address).
fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`
    AnyName,
    /// `*.example.com`, kept as `.example.com`.
    Below(String),
    Name(String),
    Net(Net),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    Any,
    Is(u16),
}

impl Ports {
    fn allows(self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Is(p) => p == port,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: HostPattern,
    ports: Ports,
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, String> {
        let bad = |why: &str| format!("--callback-allow '{text}': {why}");
        // Split HOST from :PORT; an IPv6 host is bracketed.
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("a '[' without its ']'"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':PORT' after ']'"))?,
                ),
            };
            (format!("[{inner}]"), port)
        } else {
            match text.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h.to_string(), Some(p)),
                Some(_) => return Err(bad("an IPv6 address goes in brackets: [2001:db8::1]:8080")),
                None => (text.to_string(), None),
            }
        };
        let ports = match port {
            None => Ports::Is(80),
            Some("*") => Ports::Any,
            Some(p) => Ports::Is(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be 1-65535 or '*'"))?,
            ),
        };
        Ok(Entry {
            host: parse_host_pattern(&host).map_err(|e| bad(&e))?,
            ports,
        })
    }

    fn allows_host(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostPattern::AnyName, Host::Name(_)) => true,
            (HostPattern::Below(suffix), Host::Name(n)) => n.ends_with(suffix.as_str()),
            (HostPattern::Name(want), Host::Name(n)) => want == n,
            (HostPattern::Net(net), Host::Ip(ip)) => net.contains(*ip),
            _ => false,
        }
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::AnyName);
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        return match Host::parse(suffix)? {
            Host::Name(n) => Ok(HostPattern::Below(format!(".{n}"))),
            Host::Ip(_) => Err("'*.' goes before a name, not an address".into()),
        };
    }
    let (addr, prefix) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => match inner.split_once('/') {
            Some((a, p)) => (format!("[{a}]"), Some(p)),
            None => (host.to_string(), None),
        },
        None => match host.split_once('/') {
            Some((a, p)) => (a.to_string(), Some(p)),
            None => (host.to_string(), None),
        },
    };
    match (Host::parse(&addr)?, prefix) {
        (Host::Name(n), None) => Ok(HostPattern::Name(n)),
        (Host::Name(_), Some(_)) => Err("a network is written as an address: 10.0.0.0/8".into()),
        (Host::Ip(ip), prefix) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("the prefix length must be 0-{max}"))?,
            };
            Ok(HostPattern::Net(Net {
                addr: canonical(ip),
                prefix,
            }))
        }
    }
}

/// The operator's allow-list. Empty (the default) allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses `--callback-allow` values; the error names the bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        Ok(AllowList {
            entries: entries
                .iter()
                .map(|e| Entry::parse(e.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// May a callback URL name this host and port? (Checked at creation and at every
    /// attempt, before anything is resolved.)
    pub fn allows_host(&self, host: &Host, port: u16) -> bool {
        self.entries
            .iter()
            .any(|e| e.ports.allows(port) && e.allows_host(host))
    }

    /// May an attempt connect to this address, which a name on the list resolved to? Its
    /// public addresses, and internal ones that an address entry lists.
    pub fn allows_resolved(&self, addr: SocketAddr) -> bool {
        is_public(addr.ip())
            || self.entries.iter().any(|e| {
                e.ports.allows(addr.port())
                    && matches!(&e.host, HostPattern::Net(n) if n.contains(addr.ip()))
            })
    }
}

/// Whether an address is on the public internet: not loopback, private, shared (CGNAT),
/// link-local, multicast, broadcast, documentation, benchmarking or reserved. IPv6: only
/// global unicast (2000::/3) outside its special blocks; mapped and NAT64 addresses are
/// judged by the IPv4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let within = |net: u128, prefix: u32| (bits ^ net) >> (128 - prefix) == 0;
            if within(0x0064_ff9b << 96, 96) {
                // NAT64 (64:ff9b::/96): the IPv4 address in the last 32 bits.
                return public_v4(Ipv4Addr::from(bits as u32));
            }
            within(0x2000 << 112, 3)
                && !within(0x2001 << 112, 23) // IETF protocol assignments, Teredo
                && !within(0x2001_0db8 << 96, 32) // documentation
                && !within(0x2002 << 112, 16) // 6to4: carries an IPv4 address
                && !within(0x3fff << 112, 20) // documentation
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    let bits = u32::from(ip);
    !BLOCKED
        .iter()
        .any(|(net, prefix)| (bits ^ u32::from(Ipv4Addr::from(*net))) >> (32 - prefix) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn host(text: &str) -> Host {
        Host::parse(text).unwrap()
    }

    #[test]
    fn entries_parse_and_bad_ones_say_why() {
        for ok in [
            "hooks.example.com",
            "hooks.example.com:8080",
            "*.example.com:*",
            "*",
            "*:443",
            "127.0.0.1:9000",
            "10.0.0.0/8",
            "10.0.0.0/8:*",
            "[::1]:9000",
            "[fd00::/8]",
            "[::1]",
        ] {
            assert!(AllowList::parse(&[ok]).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("::1", "brackets"),
            ("host:0", "port"),
            ("host:99999", "port"),
            ("host:x", "port"),
            ("*.10.0.0.1", "before a name"),
            ("name/8", "network"),
            ("10.0.0.0/33", "prefix"),
            ("[::1", "']'"),
            ("bad host", "not a host"),
            ("-x.com", "not a host"),
            ("", "not a host"),
        ] {
            let e = AllowList::parse(&[bad]).unwrap_err();
            assert!(
                e.contains(why) && e.contains("--callback-allow"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn hosts_and_ports() {
        let l = list(&[
            "hooks.example.com",
            "*.tenants.example.org:*",
            "127.0.0.1:9000",
            "10.1.0.0/16:8080",
            "[::1]:9000",
        ]);
        assert!(l.allows_host(&host("hooks.example.com"), 80));
        assert!(l.allows_host(&host("HOOKS.Example.com."), 80));
        assert!(
            !l.allows_host(&host("hooks.example.com"), 8080),
            "no port: 80 only"
        );
        assert!(!l.allows_host(&host("evil-hooks.example.com"), 80));
        assert!(l.allows_host(&host("a.tenants.example.org"), 1234));
        assert!(l.allows_host(&host("a.b.tenants.example.org"), 1));
        assert!(
            !l.allows_host(&host("tenants.example.org"), 80),
            "below, not the name"
        );
        assert!(!l.allows_host(&host("xtenants.example.org"), 80));
        assert!(l.allows_host(&host("127.0.0.1"), 9000));
        assert!(!l.allows_host(&host("127.0.0.1"), 9001));
        assert!(!l.allows_host(&host("127.0.0.2"), 9000));
        assert!(
            !l.allows_host(&host("localhost"), 9000),
            "a name is not its address"
        );
        assert!(l.allows_host(&host("10.1.200.3"), 8080));
        assert!(!l.allows_host(&host("10.2.0.1"), 8080));
        assert!(l.allows_host(&host("[::1]"), 9000));
        assert!(!l.allows_host(&host("[::2]"), 9000));
        assert!(!AllowList::default().allows_host(&host("example.com"), 80));
        // `*` is any name, never an address.
        let any = list(&["*:*"]);
        assert!(any.allows_host(&host("example.com"), 443));
        assert!(!any.allows_host(&host("8.8.8.8"), 443));
    }

    #[test]
    fn resolved_addresses_must_be_public_or_listed() {
        let l = list(&["*:*", "127.0.0.1:9000", "10.0.0.0/8:*"]);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(l.allows_resolved(addr("93.184.216.34:80")));
        assert!(l.allows_resolved(addr("[2606:2800:220:1::]:80")));
        assert!(l.allows_resolved(addr("127.0.0.1:9000")));
        assert!(
            l.allows_resolved(addr("[::ffff:127.0.0.1]:9000")),
            "mapped = IPv4"
        );
        assert!(!l.allows_resolved(addr("127.0.0.1:9001")));
        assert!(!l.allows_resolved(addr("127.0.0.2:9000")));
        assert!(l.allows_resolved(addr("10.9.9.9:22")));
        for internal in [
            "0.0.0.0:80",
            "127.0.0.53:80",
            "169.254.169.254:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "192.0.2.1:80",
            "198.18.0.1:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::]:80",
            "[::1]:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[fec0::1]:80",
            "[ff02::1]:80",
            "[2001:db8::1]:80",
            "[2002:7f00:1::]:80",
            "[2001::1]:80",
            "[::ffff:169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
        ] {
            assert!(!l.allows_resolved(addr(internal)), "{internal}");
        }
        assert!(
            l.allows_resolved(addr("[64:ff9b::808:808]:80")),
            "NAT64 of 8.8.8.8"
        );
        assert!(l.allows_resolved(addr("172.32.0.1:80")));
    }
}
