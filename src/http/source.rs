//! The optional source allowlist (`server.allowed_source_cidrs`): which client a request
//! comes from (the connection's peer, or `X-Forwarded-For` behind a trusted proxy), and
//! whether it may call the apps' paths.

use std::net::IpAddr;

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

    /// The client of a request from `peer`: for a trusted proxy, the last address of
    /// `X-Forwarded-For` (all of them, in order) that is not itself a trusted proxy; else
    /// the peer. An entry that is not an address ends the walk: nothing before it can be
    /// believed.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !Self::contains(&self.trusted, peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if Self::contains(&self.trusted, ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
        client
    }

    /// Whether `client` is in the allowlist.
    pub fn allows(&self, client: IpAddr) -> bool {
        Self::contains(&self.allowed, client)
    }
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
    fn networks_of_both_families_match_mapped_addresses_too() {
        let filter = filter(&["173.252.64.0/18", "2a03:2880::/32"], &["10.0.0.7"]);
        assert!(filter.allows(ip("173.252.100.1")));
        assert!(filter.allows(ip("::ffff:173.252.100.1")));
        assert!(filter.allows(ip("2a03:2880:f000::1")));
        assert!(!filter.allows(ip("10.0.0.7")), "a proxy is not a client");
        assert!(!filter.allows(ip("127.0.0.1")));
    }
}
