//! Where deliveries may go. A subscriber chooses its webhook (or chat, or ntfy) URL, so without a
//! guard the service would POST to whatever that URL names: its own loopback ports, the private
//! network behind it, the cloud metadata address (SSRF). Subscription admission refuses literal
//! private addresses, but a hostname can resolve anywhere, and differently tomorrow, so the HTTP
//! clients check again at delivery time, on the addresses actually dialled.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Loopback, private (RFC 1918, IPv6 ULA), link-local (incl. 169.254.169.254), unspecified,
/// broadcast, shared (CGNAT) and IPv4-mapped forms of them.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Whether a URL names a private address literally (`http://127.0.0.1/`, `http://[::1]/`) or the
/// name `localhost`. Hostnames are left to [`PublicOnly`] at delivery time.
pub fn names_private_host(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else { return false };
    let Some(host) = url.host_str() else { return false };
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// The refusal, findable in a request error's source chain (see [`is_refusal`]).
#[derive(Debug, thiserror::Error)]
#[error("refused: {host} is a loopback, private or link-local destination, which this server does not deliver to")]
pub struct PrivateDestination {
    pub host: String,
}

/// Whether `error` (or anything it wraps) is a [`PrivateDestination`] refusal: permanent, as the
/// same URL would be refused again.
pub fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<PrivateDestination>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A resolver that drops private addresses from every answer and fails when none is left, so a
/// hostname pointed at an internal address is never dialled.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved.into_iter().filter(|addr| !is_private(addr.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(PrivateDestination { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Applies the guard to an HTTP client: unless `allow_private`, names resolve through
/// [`PublicOnly`]. Literal addresses never reach a resolver; [`check_literal`] covers them.
pub fn guard(builder: reqwest::ClientBuilder, allow_private: bool) -> reqwest::ClientBuilder {
    if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly))
    }
}

/// Refuses a URL whose host is a private literal address (or `localhost`), unless `allow_private`.
pub fn check_literal(url: &str, allow_private: bool) -> Result<(), PrivateDestination> {
    if allow_private || !names_private_host(url) {
        return Ok(());
    }
    let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    Err(PrivateDestination { host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_addresses() {
        for private in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1"] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "100.128.0.1", "2001:4860:4860::8888", "172.32.0.1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_hosts() {
        assert!(names_private_host("http://127.0.0.1:8080/x"));
        assert!(names_private_host("http://[::1]/x"));
        assert!(names_private_host("http://LOCALHOST/x"));
        assert!(!names_private_host("https://hooks.example.com/x"));
        assert!(check_literal("http://10.0.0.1/", true).is_ok());
        assert_eq!(check_literal("http://10.0.0.1/", false).unwrap_err().host, "10.0.0.1");
    }
}
