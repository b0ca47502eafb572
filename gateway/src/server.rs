//! The gateway service: builds every part from the config, accepts HTTP
//! connections, routes requests, and shuts down gracefully.
//!
//! Routes: the Socket.IO path (`/socket.io/`) goes to the Engine.IO
//! transport; `/healthz`, `/readyz` and `/metrics` answer operators; the
//! publish API lives under `/api/v1/`.
//!
//! Shutdown story: on the token, stop accepting and report not-ready, close
//! every session so clients reconnect to another gateway, wait for them to
//! drain up to `server.shutdown_deadline_ms`, then return.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    actions::Actions,
    api::PublishApi,
    auth::Authenticator,
    bus::Bus,
    cluster::Cluster,
    config::Config,
    conn_slot::SlottedStream,
    engine::{Body, CloseReason, Engine, EngineQuery, EngineSettings, TokenBucket},
    http::json,
    log_throttle::LogThrottle,
    metrics::Metrics,
    socketio::SocketIo,
};

/// Everything one running gateway is made of, shared by all requests.
pub struct Gateway {
    config: Config,
    engine: Arc<Engine<SocketIo>>,
    io: Arc<SocketIo>,
    bus: Arc<Bus>,
    api: PublishApi,
    metrics: Metrics,
    draining: AtomicBool,
    /// Sids are forwarded between gateways (Redis configured and an
    /// advertise address known): readiness then waits for the peers.
    forwarding: bool,
    /// Places under `server.max_connections`, one per open TCP connection.
    slots: Arc<Semaphore>,
    /// How many places `slots` started with: `server.max_connections`, or
    /// less when the open-files limit would not hold that many
    /// ([`connection_limit`]).
    max_connections: usize,
}

/// A gateway bound to its port, not yet serving.
pub struct BoundGateway {
    gateway: Arc<Gateway>,
    listener: TcpListener,
}

impl Gateway {
    /// Builds the gateway from a validated config and binds its listener.
    pub async fn bind(config: Config) -> anyhow::Result<BoundGateway> {
        let metrics = Metrics::new();
        let mut auth = Authenticator::from_config(&config.auth)?;
        auth.keep_claims(crate::presence::Presence::claims_needed(&config.presence));
        let bus = Arc::new(Bus::connect(&config.redis, metrics.clone()).await?);
        let actions = Actions::from_config(&config, metrics.clone())?;
        let io = SocketIo::new_shared(&config, auth, metrics.clone(), bus.clone(), actions);
        let admission = (config.limits.connects_per_sec > 0).then(|| {
            TokenBucket::new(config.limits.connects_per_sec, config.limits.connects_burst)
        });
        let engine = Engine::new(
            EngineSettings::from(&config),
            admission,
            io.clone(),
            metrics.clone(),
        );
        let addr = config.listen_addr()?;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (server.listen / SWITCHBOARD_PORT): {e}")
        })?;
        let api = PublishApi::new(&config, bus.clone(), io.presence.clone(), metrics.clone());
        let max_connections = connection_limit(&config);
        Ok(BoundGateway {
            gateway: Arc::new(Gateway {
                engine,
                io,
                bus,
                api,
                draining: AtomicBool::new(false),
                forwarding: config.redis.enabled() && config.advertise_addr().is_ok(),
                slots: Arc::new(Semaphore::new(max_connections)),
                max_connections,
                config,
                metrics,
            }),
            listener,
        })
    }

    /// Routes one request.
    async fn route(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        let sio_path = self.config.server.path.as_str();
        if path == sio_path || Some(path) == sio_path.strip_suffix('/') {
            // While draining, refuse new sessions only: requests for open
            // sessions (ours, or forwarded to their owner) still go through.
            // The query is parsed here, once, and handed down.
            let query = EngineQuery::of(&req);
            if query.opens_session() && self.draining.load(Ordering::Acquire) {
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"code": 3, "message": "gateway is shutting down"}),
                );
            }
            return self.engine.handle(req, query, remote).await;
        }
        match (req.method(), path) {
            (&Method::GET, "/healthz") => {
                json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            (&Method::GET, "/readyz") => self.readyz().await,
            (&Method::GET, "/metrics") => {
                self.metrics.rooms.set(self.io.hub.room_count() as i64);
                let open = self.max_connections - self.slots.available_permits();
                self.metrics.http_connections.set(open as i64);
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(self.metrics.render())))
                    .unwrap_or_default()
            }
            (_, p) if p.starts_with("/api/") => self.api.handle(req, remote).await,
            (&Method::GET | &Method::HEAD, p) if crate::admin::ui::UiFiles::handles(p) => {
                match self.io.admin.as_ref().and_then(|a| a.ui.as_ref()) {
                    Some(ui) => ui.serve(p).await,
                    None => json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({"error": "not found", "path": path}),
                    ),
                }
            }
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not found", "path": path}),
            ),
        }
    }

    async fn readyz(&self) -> Response<Body> {
        // Subscribed is not enough: client events reach the other instances
        // only if publishing works too (an ACL without PUBLISH, a broken
        // publish connection). Probes only when no publish ended lately.
        self.bus.check_publishing().await;
        let bus = self.bus.status();
        let draining = self.draining.load(Ordering::Acquire);
        // A gateway whose registration its peers have not read yet is not
        // ready: a client's next polling request may land on any gateway.
        // One that cannot register at all (Redis refuses: an ACL without key
        // rights, say) stays as before, ready with untagged sids that need
        // sticky routing; its log says why.
        let peers = match (self.forwarding, self.engine.announced_to_peers()) {
            (false, _) => "off",
            (true, None) => "unregistered",
            (true, Some(false)) => "announcing",
            (true, Some(true)) => "announced",
        };
        let ready = bus.subscribed && bus.publishing && !draining && peers != "announcing";
        let body = serde_json::json!({
            "ready": ready,
            "draining": draining,
            "peers": peers,
            "bus": bus,
            "connections": self.engine.session_count(),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, &body)
    }
}

impl BoundGateway {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let BoundGateway { gateway, listener } = self;
        let bus_task = gateway
            .bus
            .start(gateway.io.clone(), shutdown.child_token());
        // Background tasks that shutdown awaits (bounded below): the
        // sweeper, the admin timers, the cluster registration and publishes
        // in flight. The bus's subscriber is its own task, stopped by its
        // token and aborted last.
        let tasks = gateway.io.tasks().clone();
        gateway.io.spawn_expiry_sweeper(shutdown.child_token());
        gateway.io.start_admin(shutdown.child_token());
        // Presence writes until shutdown, then removes the entries of the
        // sessions being closed (bounded, within the 2 s below).
        tasks.spawn(
            gateway
                .io
                .presence
                .clone()
                .run(shutdown.child_token(), Duration::from_millis(1500)),
        );
        let cluster_task = gateway
            .config
            .redis
            .enabled()
            .then(|| spawn_cluster_join(&gateway, &tasks, shutdown.child_token()));
        let http_connections = TaskTracker::new();
        let stop_http = CancellationToken::new();
        let slots = gateway.slots.clone();
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
        tracing::info!(
            addr = %listener.local_addr()?,
            path = %gateway.config.server.path,
            bus = gateway.bus.describe(),
            "switchboard gateway listening"
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => serve_connection(&gateway, &http_connections, &stop_http, stream, remote, slot),
                        Err(_) => refuse_connection(&gateway, &refusals, stream, remote),
                    },
                    Err(err) => {
                        // Out of file descriptors or similar: back off
                        // instead of spinning; existing clients keep working.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        gateway.draining.store(true, Ordering::Release);
        drop(listener);
        let deadline = gateway.config.shutdown_deadline();
        let sessions = gateway.engine.session_count();
        tracing::info!(
            sessions,
            deadline_ms = deadline.as_millis() as u64,
            "shutting down: closing sessions so clients reconnect elsewhere"
        );
        gateway.engine.close_all(CloseReason::ShuttingDown);
        let drained = tokio::time::timeout(deadline, async {
            gateway.engine.drained().await;
            stop_http.cancel();
            http_connections.close();
            http_connections.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = gateway.engine.session_count(),
                "shutdown deadline reached; dropping remaining connections"
            );
        }
        // The de-registration needs the bus, so it finishes before the bus
        // stops; bounded, so a Redis that is down does not hold shutdown.
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                cluster = cluster_task.is_some(),
                "background tasks (peer de-registration, publishes in flight) did not finish in 2 s"
            );
        }
        if let Some(task) = bus_task {
            task.abort();
        }
        tracing::info!("switchboard gateway stopped");
        Ok(())
    }
}

/// Registers with peers for sid forwarding, retrying while Redis is down
/// (until then this gateway's sids carry no owner tag and sticky sessions
/// are needed for them).
/// The task returned ends after the de-registration that follows `shutdown`.
fn spawn_cluster_join(
    gateway: &Arc<Gateway>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let gateway = gateway.clone();
    tasks.spawn(async move {
        let advertise = match gateway.config.advertise_addr() {
            Ok(addr) => addr,
            Err(err) => {
                tracing::error!(%err, "no advertise address; polling requests will not be forwarded");
                return;
            }
        };
        let mut retry = Duration::from_millis(gateway.config.redis.reconnect_min_ms);
        loop {
            let joined = tokio::select! {
                _ = shutdown.cancelled() => return,
                joined = Cluster::join(gateway.bus.clone(), &gateway.config.redis.key, advertise, &gateway.metrics) => joined,
            };
            match joined {
                Ok(cluster) => {
                    let cluster = Arc::new(cluster);
                    gateway.engine.set_cluster(cluster.clone());
                    cluster.run(shutdown).await;
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in_ms = retry.as_millis() as u64, "cannot register with peers yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2)
                        .min(Duration::from_millis(gateway.config.redis.reconnect_max_ms));
                }
            }
        }
    })
}

/// `server.max_connections`, capped below the open-files limit (raised to
/// its hard limit first): over it `accept(2)` would fail with `EMFILE`
/// and leave clients waiting in the backlog instead of refusing them with a
/// reason (see [`crate::fd_limit`]).
fn connection_limit(config: &Config) -> usize {
    let configured = config.server.max_connections;
    let nofile = crate::fd_limit::raise_nofile_limit();
    let cap = crate::fd_limit::connection_cap(configured, nofile);
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            open_files_limit = nofile,
            reserved = crate::fd_limit::RESERVED_FDS,
            "server.max_connections is above what the open-files limit (ulimit -n) allows; admitting at most `cap` connections"
        );
    }
    cap
}

/// Refused connections being answered at once; beyond it a refused
/// connection is closed without an answer, so a flood over the cap costs
/// no more than this many small tasks.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

static CAP_LOG: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));
static HTTP_ERROR_LOG: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));

/// Answers a connection over `server.max_connections` with a 503 and
/// closes it: written, then the client's request drained briefly so the
/// close does not turn into a reset that hides the answer.
fn refuse_connection(
    gateway: &Arc<Gateway>,
    refusals: &Arc<Semaphore>,
    mut stream: TcpStream,
    remote: SocketAddr,
) {
    gateway
        .metrics
        .http_rejected
        .with_label_values(&["max_connections"])
        .inc();
    if let Some(suppressed) = CAP_LOG.allow() {
        tracing::warn!(
            %remote,
            max_connections = gateway.max_connections,
            suppressed,
            "connection refused: server.max_connections reached"
        );
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    // Per connection: one refused connection's answer, bounded in time and
    // in number (`MAX_REFUSALS_IN_FLIGHT`).
    tokio::spawn(async move {
        let _permit = permit;
        let body = r#"{"code":3,"message":"Too many connections to this gateway; retry later"}"#;
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

fn serve_connection(
    gateway: &Arc<Gateway>,
    http_connections: &TaskTracker,
    stop: &CancellationToken,
    stream: TcpStream,
    remote: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let metrics = gateway.metrics.clone();
    let server = &gateway.config.server;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config.header_read_timeout())
        .max_buf_size(server.max_header_bytes);
    let gateway = gateway.clone();
    let service = service_fn(move |req| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.route(req, remote).await) }
    });
    let io = TokioIo::new(SlottedStream::new(stream, slot));
    let conn = builder.serve_connection(io, service).with_upgrades();
    // On shutdown, in-flight requests finish (pending polls are answered
    // by the engine's close) and keep-alive connections close. Upgraded
    // websockets have left hyper by then; the engine closes those.
    let stop = stop.clone();
    http_connections.spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(err) = result {
            let reason = if err.is_timeout() {
                Some("header_read_timeout")
            } else if err.is_parse_too_large() {
                Some("header_too_large")
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    metrics.http_rejected.with_label_values(&[reason]).inc();
                    if let Some(suppressed) = HTTP_ERROR_LOG.allow() {
                        tracing::info!(%remote, reason, suppressed, "http connection closed: {err}");
                    }
                }
                None => tracing::debug!(%err, %remote, "http connection ended with an error"),
            }
        }
    });
}

/// Builds, binds and serves a gateway until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Gateway::bind(config).await?.serve(shutdown).await
}
