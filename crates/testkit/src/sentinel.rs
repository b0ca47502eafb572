//! Redis Sentinel for failover tests: a master, a replica and three
//! sentinels, all `redis-server` processes on free loopback ports.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::redis::{RedisOptions, RedisServer, Resp};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// How long [`SentinelSet::start`] waits for the sentinels to know the
/// replica and each other.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A monitored master with one replica and three sentinels (quorum 2,
/// `down-after-milliseconds` 1000), ready to fail over. Dropping it kills
/// every process.
pub struct SentinelSet {
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts the master, the replica and the sentinels, and waits (up to
    /// 30 s) until every sentinel sees the replica linked to the master and
    /// the two other sentinels, so that a failover can happen.
    pub fn start() -> anyhow::Result<Self> {
        let master = RedisServer::start().context("start the master")?;
        let replica = RedisServer::start_with(RedisOptions::default().args([
            "--replicaof".to_string(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ]))
        .context("start the replica")?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let conf = format!(
                "sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                port = master.port()
            );
            let s = RedisServer::start_with(
                RedisOptions::default()
                    .config_file(conf)
                    .args(["--sentinel"]),
            )
            .with_context(|| format!("start sentinel {i}"))?;
            sentinels.push(s);
        }
        let set = Self {
            data: vec![master, replica],
            sentinels,
        };
        set.wait_ready(READY_TIMEOUT)?;
        Ok(set)
    }

    /// The sentinels' addresses, `127.0.0.1:PORT`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect()
    }

    /// The data servers (master and replica, in start order).
    pub fn servers(&self) -> &[RedisServer] {
        &self.data
    }

    /// The data server listening on `port`.
    pub fn server(&self, port: u16) -> Option<&RedisServer> {
        self.data.iter().find(|s| s.port() == port)
    }

    /// The master's port according to the first sentinel that answers.
    pub fn master_port(&self) -> anyhow::Result<u16> {
        let mut last = None;
        for s in &self.sentinels {
            match s.command(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) {
                Ok(Resp::Array(Some(items))) if items.len() == 2 => {
                    let port = items[1].as_str().context("master port")?;
                    return port.parse().context("master port");
                }
                Ok(other) => last = Some(anyhow::anyhow!("unexpected answer {other:?}")),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no sentinel")))
    }

    /// SIGKILLs the current master and returns its port.
    pub fn kill_master(&mut self) -> anyhow::Result<u16> {
        let port = self.master_port()?;
        let server = self
            .data
            .iter_mut()
            .find(|s| s.port() == port)
            .context("the master is none of our servers")?;
        server.kill();
        Ok(port)
    }

    /// Waits until the sentinels name a master other than `old_port` and
    /// that server answers `ROLE` as master; returns the new master's port.
    pub fn wait_for_failover(&self, old_port: u16, timeout: Duration) -> anyhow::Result<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(port) = self.master_port()
                && port != old_port
                && let Some(server) = self.server(port)
                && let Ok(Resp::Array(Some(role))) = server.command(&["ROLE"])
                && role.first().and_then(Resp::as_str).as_deref() == Some("master")
            {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no failover away from port {old_port} within {timeout:?}; sentinel log:\n{}",
                    self.sentinels[0].logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let replica_port = self.data[1].port().to_string();
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let replica_ok = s
                    .command(&["SENTINEL", "replicas", MASTER_NAME])
                    .ok()
                    .and_then(|r| r.as_array().map(<[Resp]>::to_vec))
                    .is_some_and(|replicas| {
                        replicas.iter().any(|r| {
                            let fields = flat_map(r);
                            field(&fields, "port") == Some(replica_port.as_str())
                                && field(&fields, "master-link-status") == Some("ok")
                                && field(&fields, "flags") == Some("slave")
                        })
                    });
                let peers = s
                    .command(&["SENTINEL", "sentinels", MASTER_NAME])
                    .ok()
                    .and_then(|r| r.as_array().map(<[Resp]>::len))
                    .unwrap_or(0);
                replica_ok && peers >= 2
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "sentinels not ready within {timeout:?}; sentinel log:\n{}",
                    self.sentinels[0].logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A flat `[k1, v1, k2, v2, ...]` reply as string pairs.
fn flat_map(reply: &Resp) -> Vec<(String, String)> {
    let items = reply.as_array().unwrap_or_default();
    items
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.as_str()?, kv.get(1)?.as_str()?)))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
