//! How each mode opens the connection a [`Link`](crate::link::Link) keeps:
//! a multiplexed connection to the master (a fixed server, or the one the
//! sentinels name at that moment), or a cluster connection.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::{
    AsyncConnectionConfig, PushInfo, RedisResult, aio::MultiplexedConnection,
    cluster_async::ClusterConnection, sentinel::SentinelClient,
};
use tokio::sync::{Mutex, mpsc};

use crate::{
    link::Connector,
    target::{ClusterParams, Target, TargetKind},
};

/// Commands queued to a connection's writer before callers wait.
const PIPELINE_QUEUE: usize = 1024;

/// Runs on every new connection before callers get it (the subscriber
/// re-subscribes there).
pub(crate) type OnConnect =
    Box<dyn Fn(MultiplexedConnection) -> BoxFuture<'static, RedisResult<()>> + Send + Sync>;

/// Where the master is.
enum Locator {
    Fixed(redis::Client),
    /// Looked up through the sentinels on every connection, so that a
    /// reconnection after a failover reaches the new master.
    Sentinel(Mutex<SentinelClient>),
}

/// Connects to the master of a standalone or sentinel target.
pub(crate) struct MasterConnector {
    locator: Locator,
    timeout: Duration,
    on_connect: Option<OnConnect>,
}

impl MasterConnector {
    /// The connector of a standalone or sentinel target (a cluster has no
    /// single master: an error).
    pub fn new(target: &Target, on_connect: Option<OnConnect>) -> RedisResult<Self> {
        let locator = match &target.kind {
            TargetKind::Standalone(client) => Locator::Fixed(client.clone()),
            TargetKind::Sentinel(params) => {
                Locator::Sentinel(Mutex::new(params.client(target.timeout)?))
            }
            TargetKind::Cluster(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a cluster has no single master",
                )));
            }
        };
        Ok(MasterConnector {
            locator,
            timeout: target.timeout,
            on_connect,
        })
    }
}

impl Connector for MasterConnector {
    type Conn = MultiplexedConnection;
    const DISCONNECT_ENDS_CONNECTION: bool = true;

    fn connect(
        &self,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> BoxFuture<'_, RedisResult<MultiplexedConnection>> {
        Box::pin(async move {
            // No per-request timer inside redis-rs: every call is bounded by
            // one timeout around it (see `Publisher`). A queue to the writer
            // deep enough that hundreds of concurrent publishes do not wait
            // for room in it (redis-rs's default is 50).
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(None)
                .set_pipeline_buffer_size(PIPELINE_QUEUE)
                .set_push_sender(pushes);
            let conn = match &self.locator {
                Locator::Fixed(client) => {
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?
                }
                Locator::Sentinel(client) => {
                    client
                        .lock()
                        .await
                        .get_async_connection_with_config(&config)
                        .await?
                }
            };
            if let Some(hook) = &self.on_connect {
                hook(conn.clone()).await?;
            }
            Ok(conn)
        })
    }
}

/// Connects to a cluster: redis-rs routes by slot, follows MOVED/ASK,
/// refreshes the topology and reconnects to nodes by itself.
pub(crate) struct ClusterConnector {
    params: ClusterParams,
    timeout: Duration,
}

impl ClusterConnector {
    /// The connector of a cluster target.
    pub fn new(params: &ClusterParams, timeout: Duration) -> Self {
        ClusterConnector {
            params: params.clone(),
            timeout,
        }
    }
}

impl Connector for ClusterConnector {
    type Conn = ClusterConnection;
    const DISCONNECT_ENDS_CONNECTION: bool = false;

    fn connect(
        &self,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> BoxFuture<'_, RedisResult<ClusterConnection>> {
        Box::pin(async move {
            let client = self
                .params
                .builder(self.timeout)
                .push_sender(pushes)
                .build()?;
            client.get_async_connection().await
        })
    }
}
