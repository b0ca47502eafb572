//! Forwarding a request whose sid another gateway owns, so a round-robin
//! load balancer needs no sticky sessions: the owner answers as if it had
//! been hit directly. Polling requests are relayed whole; a websocket
//! upgrade is relayed and then spliced byte for byte.
//!
//! Everything here is bounded, because the sid (and so the decision to
//! forward) comes from the client: the owner is looked up in memory (see
//! [`crate::peer_directory`]), one pooled HTTP client keeps a few
//! connections per peer, connecting and waiting for the response each have
//! a timeout, and at most `cluster.forward_max_in_flight` exchanges run at
//! once (more get 503). Hop-by-hop headers are not relayed.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use ipnet::IpNet;
use tokio::sync::Semaphore;

use super::{Body, EngineError};
use crate::{config::Config, log_throttle::LogThrottle, metrics::Metrics};

/// Marks a forwarded request; a gateway never forwards it again.
pub const FORWARDED_HEADER: &str = "x-switchboard-forwarded";
/// Largest polling response relayed back (a payload of queued packets).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Idle pooled connections kept per peer.
const IDLE_PER_PEER: usize = 32;
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one hop, not the request (RFC 9110 7.6.1), plus
/// the old `Proxy-Connection`. `Upgrade` and `Connection` are put back for
/// a websocket upgrade, which is the one hop-by-hop exchange relayed.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Drops hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Settings of the forwarder, copied out of `[cluster]`.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_in_flight: usize,
    pub peer_networks: Vec<IpNet>,
}

impl From<&Config> for ForwardSettings {
    fn from(config: &Config) -> Self {
        let c = &config.cluster;
        ForwardSettings {
            connect_timeout: Duration::from_millis(c.forward_connect_timeout_ms),
            response_timeout: Duration::from_millis(c.forward_timeout_ms),
            max_in_flight: c.forward_max_in_flight,
            peer_networks: c.peer_networks(),
        }
    }
}

/// The one HTTP client every forwarded request goes through, with its
/// limits; see the module documentation.
pub(super) struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: Arc<Semaphore>,
    settings: ForwardSettings,
    /// Refusals an outsider can cause at will are logged through this.
    refusal_log: LogThrottle,
}

impl Forwarder {
    pub fn new(settings: ForwardSettings) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_PEER)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Forwarder {
            client,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            refusal_log: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    /// Counts and logs (throttled) a request for a foreign sid that is not
    /// forwarded, and returns the error the caller answers with.
    pub fn refuse(
        &self,
        metrics: &Metrics,
        reason: &'static str,
        remote: SocketAddr,
        err: EngineError,
    ) -> EngineError {
        metrics.forward_refused.with_label_values(&[reason]).inc();
        if let Some(suppressed) = self.refusal_log.allow() {
            tracing::info!(reason, %remote, suppressed, "request for another gateway's sid not forwarded");
        }
        err
    }

    /// Whether a request carrying [`FORWARDED_HEADER`] from `remote` may be
    /// treated as forwarded by a peer: always when `cluster.peer_cidrs` is
    /// empty, else only from those networks.
    pub fn peer_allowed(&self, remote: SocketAddr) -> bool {
        let networks = &self.settings.peer_networks;
        networks.is_empty() || networks.iter().any(|n| n.contains(&remote.ip()))
    }

    /// Relays `req` to the gateway at `owner` (holding the sid with `tag`)
    /// and returns its answer.
    pub async fn forward(
        &self,
        own_tag: &str,
        owner: SocketAddr,
        req: Request<Incoming>,
        remote: SocketAddr,
        max_payload: u64,
        metrics: &Metrics,
    ) -> Result<Response<Body>, EngineError> {
        let kind = super::transport_label(&req);
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(self.refuse(
                metrics,
                "overloaded",
                remote,
                EngineError::ForwardOverloaded,
            ));
        };
        let result = self.relay(own_tag, owner, req, remote, max_payload).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(EngineError::OwnerTimeout) => "owner_timeout",
            Err(EngineError::PayloadTooLarge) => "payload_too_large",
            Err(_) => "owner_unreachable",
        };
        metrics.forwarded.with_label_values(&[kind, outcome]).inc();
        if let Err(err) = &result
            && let Some(suppressed) = self.refusal_log.allow()
        {
            tracing::info!(%owner, outcome, error = ?err, suppressed, "forwarding to the sid's owner failed");
        }
        result
    }

    async fn relay(
        &self,
        own_tag: &str,
        owner: SocketAddr,
        mut req: Request<Incoming>,
        remote: SocketAddr,
        max_payload: u64,
    ) -> Result<Response<Body>, EngineError> {
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let body = if upgrade {
            Full::default()
        } else {
            let limit = usize::try_from(max_payload).unwrap_or(usize::MAX);
            let bytes = Limited::new(incoming, limit)
                .collect()
                .await
                .map_err(|_| EngineError::PayloadTooLarge)?
                .to_bytes();
            Full::new(bytes)
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(format!("http://{owner}{path}"))
            .body(body)
            .map_err(|_| EngineError::BadRequest)?;
        let headers = out.headers_mut();
        *headers = parts.headers.clone();
        strip_hop_by_hop(headers);
        // The body is relayed whole (or, for an upgrade, not at all), so the
        // client HTTP library sets the length from it.
        headers.remove(header::CONTENT_LENGTH);
        if upgrade {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        headers.insert(
            FORWARDED_HEADER,
            HeaderValue::from_str(own_tag).unwrap_or(HeaderValue::from_static("1")),
        );
        // Keep the real client address visible to the owner.
        let forwarded_for = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(chain) => format!("{chain}, {}", remote.ip()),
            None => remote.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", v);
        }

        let timeout = self.settings.response_timeout;
        let mut resp = match tokio::time::timeout(timeout, self.client.request(out)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(err)) if err.is_connect() => {
                tracing::debug!(%owner, %err, "cannot connect to the sid's owner");
                return Err(EngineError::OwnerUnreachable);
            }
            Ok(Err(err)) => {
                tracing::debug!(%owner, %err, "the sid's owner failed the request");
                return Err(EngineError::OwnerUnreachable);
            }
            Err(_) => return Err(EngineError::OwnerTimeout),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let peer_upgrade = hyper::upgrade::on(&mut resp);
            let mut ours = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
            for (name, value) in resp.headers() {
                ours = ours.header(name, value);
            }
            if let Some(client_upgrade) = client_upgrade {
                // Per connection: the tunnel to the owner ends when either
                // side closes (the owner closes it when it shuts down; this
                // gateway's own shutdown ends it with the runtime).
                tokio::spawn(async move {
                    if let (Ok(client), Ok(peer)) = tokio::join!(client_upgrade, peer_upgrade) {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(client),
                            &mut TokioIo::new(peer),
                        )
                        .await;
                    }
                });
            }
            return ours
                .body(Body::default())
                .map_err(|_| EngineError::BadRequest);
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        let bytes = tokio::time::timeout(timeout, Limited::new(body, MAX_RESPONSE_BYTES).collect())
            .await
            .map_err(|_| EngineError::OwnerTimeout)?
            .map_err(|_| EngineError::OwnerUnreachable)?
            .to_bytes();
        Ok(Response::from_parts(parts, Full::new(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-hop", "1"),
            ("cookie", "a=b"),
            ("content-type", "text/plain"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "left: {left:?}");
        assert!(h.contains_key("cookie") && h.contains_key("content-type"));
    }
}
