//! Who the client is, for rate limits: the TCP peer, or behind a trusted proxy the rightmost
//! hop of `X-Forwarded-For` that is not itself a trusted proxy. IPv6 clients count by /64.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The client's address as far as it can be trusted, grouped as limits count it (see
/// [`bucket`]); `None` only when the connection has no peer address (not TCP).
pub fn address(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    Some(bucket(from_forwarded(req, peer, trusted_proxies)))
}

/// Walks `X-Forwarded-For` from the right while each hop is a trusted proxy: every trusted
/// proxy appends the address it saw, so the first untrusted one is the client. Anything left
/// of it was written by the client and proves nothing. A hop that does not parse ends the
/// walk at the last address known.
fn from_forwarded(req: &HttpRequest, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// How limits group addresses: IPv4 as it is; IPv6 by its /64, since one subscriber usually
/// holds a whole /64 and could otherwise take a new address per request.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn client(peer: &str, forwarded: Option<&str>, trusted: &[&str]) -> IpAddr {
        let mut req =
            TestRequest::default().peer_addr(format!("{peer}:4000").parse().expect("addr"));
        if let Some(xff) = forwarded {
            req = req.insert_header(("x-forwarded-for", xff));
        }
        let trusted: Vec<IpNet> = trusted
            .iter()
            .map(|t| t.parse::<IpNet>().expect("net"))
            .collect();
        address(&req.to_http_request(), &trusted).expect("peer")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        assert_eq!(
            client("203.0.113.9", Some("198.51.100.1"), &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = ["127.0.0.1/32", "10.0.0.0/8"];
        assert_eq!(
            client("127.0.0.1", Some("198.51.100.1"), &proxies),
            ip("198.51.100.1")
        );
        // The client wrote the first entry itself; the proxies appended the rest.
        assert_eq!(
            client(
                "127.0.0.1",
                Some("1.1.1.1, 198.51.100.1, 10.1.2.3"),
                &proxies
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("127.0.0.1", Some("garbage, 198.51.100.1"), &proxies),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("127.0.0.1", Some("198.51.100.1, garbage"), &proxies),
            ip("127.0.0.1")
        );
        assert_eq!(client("127.0.0.1", None, &proxies), ip("127.0.0.1"));
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        assert_eq!(
            client("203.0.113.9", Some("198.51.100.1"), &["127.0.0.1/32"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(bucket(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("2001:db8:1:2:ffff::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(bucket(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
