//! Client address resolution: `X-Forwarded-For` is believed only when the TCP peer is
//! one of the configured trusted proxies (e.g. the gateway), so per-IP limits and
//! session records see the real client without letting clients spoof it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::error::ApiError;

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(Arc::new(nets))
    }

    /// Parses CIDRs or bare addresses (`127.0.0.1`, `10.0.0.0/8`).
    pub fn parse(items: &[String]) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => IpNet::from(item.parse::<IpAddr>().map_err(|e| {
                    anyhow::anyhow!("trusted proxy {item:?} is not an address or CIDR: {e}")
                })?),
            };
            nets.push(net);
        }
        Ok(Self::new(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request from `peer` carrying `forwarded_for`: walk the
    /// X-Forwarded-For chain from the right, skipping trusted hops.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The real client address of a request (see [`TrustedProxies`]). Requires the router to
/// be served with `ConnectInfo<SocketAddr>` and a `TrustedProxies` extension.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| ApiError::internal("ConnectInfo missing: serve with connect info"))?;
        let trusted = parts
            .extensions
            .get::<TrustedProxies>()
            .cloned()
            .unwrap_or_default();
        let xff = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientIp(trusted.client_ip(peer, xff)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let t = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        // Untrusted peer: its header is ignored.
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(t.client_ip(peer, Some("1.2.3.4")), peer);
        // Trusted peer: the right-most untrusted hop is the client.
        let gw: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            t.client_ip(gw, Some("6.6.6.6, 203.0.113.9, 10.1.2.3")),
            client
        );
        assert_eq!(t.client_ip(gw, None), gw);
        assert_eq!(t.client_ip(gw, Some("garbage")), gw);
    }
}
