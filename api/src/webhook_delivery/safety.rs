//! Where webhooks may not go: hosts that are, or resolve to, loopback, private, link-local,
//! shared (carrier-grade NAT), multicast, reserved or unspecified addresses, unless the operator
//! allows them (`COLLOQUY_WEBHOOK_ALLOW_PRIVATE`). Checked when a URL is set, and again for
//! every connection (the resolver below), since a name may resolve elsewhere later (DNS
//! rebinding); redirects are followed only to the same scheme, host and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is internal: not to be called unless the operator allows it.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, which reaches IPv4 inside
        || ip.segments()[..6] == [0; 6] // IPv4-compatible (deprecated)
}

/// Why `url` may not be called, or nothing: its host must not be, or resolve to, an internal
/// address (every address it resolves to is checked), unless `allow_private`.
pub async fn refusal(url: &str, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    let parsed = url::Url::parse(url).ok()?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match parsed.host()? {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(name) => match tokio::net::lookup_host((name, port)).await {
            Ok(found) => found.map(|address| address.ip()).collect(),
            Err(error) => return Some(format!("its host {name} does not resolve: {error}")),
        },
    };
    if addresses.is_empty() {
        return Some("its host resolves to no address".into());
    }
    addresses.into_iter().find(|ip| is_internal(*ip)).map(|ip| {
        format!(
            "its host is or resolves to {ip}, an internal address (loopback, private, link-local or reserved); the operator may allow such addresses (COLLOQUY_WEBHOOK_ALLOW_PRIVATE)"
        )
    })
}

/// The resolver webhook requests connect through: it drops internal addresses (unless allowed),
/// and fails a name that resolves to nothing else.
#[derive(Debug, Clone, Copy)]
pub struct Guarded {
    /// Whether internal addresses are allowed.
    pub allow_private: bool,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> =
                found.into_iter().filter(|address| allow_private || !is_internal(address.ip())).collect();
            if kept.is_empty() {
                return Err(format!(
                    "{host} resolves only to internal addresses, which webhooks may not reach"
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The redirect rule: at most 5, each to the scheme, host and port of the subscription's URL.
pub fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else { return attempt.stop() };
        let same = attempt.url().scheme() == first.scheme()
            && attempt.url().host_str() == first.host_str()
            && attempt.url().port_or_known_default() == first.port_or_known_default();
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if same {
            attempt.follow()
        } else {
            let host = attempt.url().host_str().unwrap_or_default().to_owned();
            attempt.error(format!("a redirect to another host ({host}) is not followed"))
        }
    })
}

/// The guarded resolver, shared.
pub fn resolver(allow_private: bool) -> Arc<Guarded> {
    Arc::new(Guarded { allow_private })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "240.0.0.1",
        ] {
            assert!(is_internal(internal.parse().expect(internal)), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "100.128.0.1"] {
            assert!(!is_internal(public.parse().expect(public)), "{public}");
        }
    }

    #[tokio::test]
    async fn literal_and_named_internal_hosts_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
            "http://10.0.0.7/",
        ] {
            assert!(refusal(url, false).await.is_some(), "{url}");
            assert!(refusal(url, true).await.is_none(), "{url}");
        }
        assert!(refusal("http://93.184.216.34/hook", false).await.is_none());
    }
}
