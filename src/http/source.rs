//! The optional source allowlist (`server.allowed_source_cidrs`): which client a request
//! comes from (the connection's peer, or `X-Forwarded-For` behind a trusted proxy), and
//! whether it may call the apps' paths.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{ServerSettings, network};

/// The connection's peer address, put in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Allowed networks and trusted proxies.
#[derive(Debug, Clone)]
pub struct SourceFilter {
    allowed: Vec<IpNet>,
    trusted: Vec<IpNet>,
}

impl SourceFilter {
    /// The filter of validated settings; `None` when no allowlist is configured.
    pub fn new(server: &ServerSettings) -> Option<Self> {
        let networks = |texts: &[String]| texts.iter().filter_map(|text| network(text)).collect();
        (!server.allowed_source_cidrs.is_empty()).then(|| Self {
            allowed: networks(&server.allowed_source_cidrs),
            trusted: networks(&server.trusted_proxies),
        })
    }

    fn contains(networks: &[IpNet], ip: IpAddr) -> bool {
        let ip = canonical(ip);
        networks.iter().any(|network| network.contains(&ip))
    }

    /// Whether a connection from `peer` may be served at all: it is an allowed client,
    /// or a trusted proxy whose requests name their client.
    pub fn admits_connection(&self, peer: IpAddr) -> bool {
        Self::contains(&self.allowed, peer) || Self::contains(&self.trusted, peer)
    }

    /// The client of a request from `peer`: for a trusted proxy, the last address of
    /// `X-Forwarded-For` (all of its lines, in order) that is not itself a trusted proxy;
    /// else the peer. An entry that is not an address, or a line that is not text, ends
    /// the walk: nothing before it can be believed.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !Self::contains(&self.trusted, peer) {
            return peer;
        }
        let mut client = peer;
        for line in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for hop in line.rsplit(',') {
                match forwarded_address(hop.trim()) {
                    Some(ip) if Self::contains(&self.trusted, ip) => client = ip,
                    Some(ip) => return ip,
                    None => return client,
                }
            }
        }
        client
    }

    /// Whether `peer` is a trusted proxy (whose `traceparent` the gateway continues).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        Self::contains(&self.trusted, peer)
    }

    /// Whether `client` is in the allowlist.
    pub fn allows(&self, client: IpAddr) -> bool {
        Self::contains(&self.allowed, client)
    }
}

/// The address of one `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, and with the
/// client's port as some load balancers write it, `1.2.3.4:5678` or `[2001:db8::1]:5678`
/// (or in brackets without a port).
fn forwarded_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
}

/// An IPv4 address as itself, also when it arrives mapped into IPv6 (`::ffff:a.b.c.d`, on
/// a dual-stack listener).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allowed: &[&str], trusted: &[&str]) -> SourceFilter {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        SourceFilter::new(&ServerSettings {
            allowed_source_cidrs: owned(allowed),
            trusted_proxies: owned(trusted),
            ..ServerSettings::default()
        })
        .expect("an allowlist")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_last_untrusted_hop() {
        let filter = filter(&["173.252.64.0/18"], &["10.0.0.0/8"]);
        let headers = forwarded("1.2.3.4, 173.252.64.9, 10.0.0.2");
        assert_eq!(filter.client(ip("10.0.0.1"), &headers), ip("173.252.64.9"));
        assert!(filter.allows(filter.client(ip("10.0.0.1"), &headers)));
        // A peer that is not a trusted proxy cannot name another client.
        assert_eq!(filter.client(ip("5.6.7.8"), &headers), ip("5.6.7.8"));
        // Garbage before the trusted hops ends the walk at the last trusted one.
        let headers = forwarded("173.252.64.9, nonsense, 10.0.0.2");
        assert_eq!(filter.client(ip("10.0.0.1"), &headers), ip("10.0.0.2"));
        assert!(!filter.allows(ip("10.0.0.2")));
    }

    #[test]
    fn forwarded_entries_may_carry_the_client_port() {
        let filter = filter(&["173.252.64.0/18", "2a03:2880::/32"], &["10.0.0.0/8"]);
        for (entry, client) in [
            ("173.252.64.9:52311", "173.252.64.9"),
            ("[2a03:2880:f000::1]:443", "2a03:2880:f000::1"),
            ("[2a03:2880:f000::1]", "2a03:2880:f000::1"),
            ("2a03:2880:f000::1", "2a03:2880:f000::1"),
        ] {
            let headers = forwarded(&format!("{entry}, 10.0.0.2:8080"));
            assert_eq!(
                filter.client(ip("10.0.0.1"), &headers),
                ip(client),
                "{entry}"
            );
        }
        // Not an address, port or no port: the walk ends at the last trusted hop.
        for entry in ["173.252.64.9:port", "[173.252.64.9]:1", "[2a03:2880::1"] {
            let headers = forwarded(&format!("{entry}, 10.0.0.2"));
            assert_eq!(
                filter.client(ip("10.0.0.1"), &headers),
                ip("10.0.0.2"),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_forwarded_line_that_is_not_text_ends_the_walk() {
        let filter = filter(&["173.252.64.0/18"], &["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "173.252.64.9".parse().expect("a value"));
        headers.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"10.0.0.3, \xff").expect("a value"),
        );
        headers.append("x-forwarded-for", "10.0.0.2".parse().expect("a value"));
        // The allowed address before the line that is not text is not believed.
        assert_eq!(filter.client(ip("10.0.0.1"), &headers), ip("10.0.0.2"));
    }

    #[test]
    fn only_allowed_clients_and_trusted_proxies_may_connect() {
        let filter = filter(&["173.252.64.0/18"], &["10.0.0.0/8"]);
        assert!(filter.admits_connection(ip("173.252.64.9")));
        assert!(filter.admits_connection(ip("::ffff:10.1.2.3")));
        assert!(!filter.admits_connection(ip("127.0.0.2")));
    }

    #[test]
    fn networks_of_both_families_match_mapped_addresses_too() {
        let filter = filter(&["173.252.64.0/18", "2a03:2880::/32"], &["10.0.0.7"]);
        assert!(filter.allows(ip("173.252.100.1")));
        assert!(filter.allows(ip("::ffff:173.252.100.1")));
        assert!(filter.allows(ip("2a03:2880:f000::1")));
        assert!(!filter.allows(ip("10.0.0.7")), "a proxy is not a client");
        assert!(!filter.allows(ip("127.0.0.1")));
    }
}
