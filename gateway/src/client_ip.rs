//! The client address behind trusted proxies, for per-address limits and
//! logs.
//!
//! `X-Forwarded-For` is a list each proxy appends to, so only its right end
//! is written by proxies we know; anything to the left may come from the
//! client. Starting from the TCP peer and walking the list right to left,
//! each hop is believed only while the address that handed it over is one
//! of `server.trusted_proxies`: the first address that is not a trusted
//! proxy is the client. A client can therefore prepend whatever it likes
//! and still be counted under the address our proxy saw.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` the gateway believes.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut current = peer.to_canonical();
        if self.nets.is_empty() || !self.trusts(current) {
            return current;
        }
        // Several X-Forwarded-For headers form one list, in order.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            if !self.trusts(current) {
                break;
            }
            match parse_hop(hop) {
                Some(ip) => current = ip,
                // Garbage from a trusted proxy: stop at that proxy rather
                // than guess (its clients then share its address).
                None => break,
            }
        }
        current
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Parses one `server.trusted_proxies` entry: a CIDR (`10.0.0.0/8`) or a
/// single address (`127.0.0.1`).
pub fn parse_proxy(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|p| parse_proxy(p).unwrap()).collect())
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_sends() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(p.client_ip(peer, &xff(&["1.2.3.4"])), peer);
        assert_eq!(
            TrustedProxies::default().client_ip(peer, &xff(&["1.2.3.4"])),
            peer
        );
    }

    #[test]
    fn right_most_untrusted_entry_wins_over_a_spoofed_left_one() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // The client sent "6.6.6.6"; the edge proxy appended what it saw.
        let h = xff(&["6.6.6.6, 198.51.100.9", "10.1.2.3"]);
        assert_eq!(
            p.client_ip(peer, &h),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        // Only trusted hops: the left-most one.
        assert_eq!(
            p.client_ip(peer, &xff(&["127.0.0.1"])),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(p.client_ip(peer, &HeaderMap::new()), peer);
        // Garbage stops at the trusted proxy.
        assert_eq!(p.client_ip(peer, &xff(&["1.2.3.4, junk"])), peer);
        // Ports and mapped IPv4 are understood.
        assert_eq!(
            p.client_ip(
                "::ffff:10.0.0.2".parse().unwrap(),
                &xff(&["[2001:db8::1]:443"])
            ),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn proxies_parse_as_cidr_or_address() {
        assert!(parse_proxy("10.0.0.0/8").is_some());
        assert!(parse_proxy("::1").is_some());
        assert!(parse_proxy("10.0.0.0/33").is_none());
        assert!(parse_proxy("proxy.local").is_none());
    }
}
