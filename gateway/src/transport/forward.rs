//! Forwarding a request whose sid another gateway owns, so a round-robin
//! load balancer needs no sticky sessions: the owner answers as if it had
//! been hit directly. Polling requests are relayed whole; a websocket
//! upgrade is relayed and then spliced byte for byte.

use std::{net::SocketAddr, time::Duration};

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Body, EngineError};
use crate::{cluster::Cluster, metrics::Metrics};

/// Marks a forwarded request; a gateway never forwards it again.
pub const FORWARDED_HEADER: &str = "x-switchboard-forwarded";
/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest polling response relayed back (a payload of queued packets).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Relays `req` to the gateway with `tag` and returns its answer. An owner
/// that is unknown or does not answer means the session is gone.
pub(super) async fn forward(
    cluster: &Cluster,
    tag: &str,
    req: Request<Incoming>,
    remote: SocketAddr,
    max_payload: u64,
    metrics: &Metrics,
) -> Result<Response<Body>, EngineError> {
    let kind = if req.headers().contains_key(header::UPGRADE) {
        "websocket"
    } else {
        "polling"
    };
    let result = relay(cluster, tag, req, remote, max_payload).await;
    let outcome = if result.is_ok() { "ok" } else { "owner_gone" };
    metrics.forwarded.with_label_values(&[kind, outcome]).inc();
    result
}

async fn relay(
    cluster: &Cluster,
    tag: &str,
    mut req: Request<Incoming>,
    remote: SocketAddr,
    max_payload: u64,
) -> Result<Response<Body>, EngineError> {
    let owner = cluster
        .lookup(tag)
        .await
        .ok_or(EngineError::SessionIdUnknown)?;
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(owner)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            cluster.forget(tag);
            tracing::info!(tag, %owner, "sid owner does not answer");
            return Err(EngineError::SessionIdUnknown);
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| EngineError::SessionIdUnknown)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

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
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .body(body)
        .map_err(|_| EngineError::BadRequest)?;
    *out.headers_mut() = parts.headers.clone();
    out.headers_mut().insert(
        FORWARDED_HEADER,
        HeaderValue::from_str(cluster.tag()).unwrap_or(HeaderValue::from_static("1")),
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
        out.headers_mut().insert("x-forwarded-for", v);
    }

    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|_| EngineError::SessionIdUnknown)?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let peer_upgrade = hyper::upgrade::on(&mut resp);
        let mut ours = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in resp.headers() {
            ours = ours.header(name, value);
        }
        if let Some(client_upgrade) = client_upgrade {
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
    let (parts, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|_| EngineError::SessionIdUnknown)?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}
