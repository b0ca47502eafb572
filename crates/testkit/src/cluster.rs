//! Redis Cluster for tests: masters (and optionally replicas), each a
//! `redis-server` on free loopback ports, joined with
//! `redis-cli --cluster create`, plus a helper to migrate a slot.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    net::free_port,
    redis::{RedisOptions, RedisServer, Resp},
};

/// How long [`RedisCluster::start`] waits for every node to report the
/// cluster as `ok`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Redis Cluster. Dropping it kills every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each, assigns the
    /// 16384 slots evenly (`redis-cli --cluster create`) and waits until
    /// every node agrees the cluster is `ok` and knows every slot's owner.
    pub fn start(masters: usize, replicas: usize) -> anyhow::Result<Self> {
        if masters < 3 {
            bail!("redis-cli --cluster create needs at least 3 masters");
        }
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let node = RedisServer::start_with(RedisOptions::default().args([
                "--cluster-enabled".to_string(),
                "yes".into(),
                "--cluster-port".into(),
                free_port().to_string(),
                "--cluster-node-timeout".into(),
                "3000".into(),
                "--cluster-config-file".into(),
                "nodes.conf".into(),
                // Replicas sync at once (not after the default 5 s), so a
                // master can be killed and failed over soon after start.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ]))
            .context("start a cluster node")?;
            nodes.push(node);
        }
        let cluster = Self { nodes };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.addrs())
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .context("run redis-cli --cluster create (apt-get install redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_consistent(READY_TIMEOUT)?;
        if replicas > 0 {
            cluster.wait_replicas_synced(READY_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// Every node, masters first (as `redis-cli` assigned them).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `127.0.0.1:PORT` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect()
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|n| n.port() == port)
    }

    /// The hash slot of `key` (or channel), asked of the first node.
    pub fn key_slot(&self, key: &str) -> anyhow::Result<u16> {
        let slot = self.nodes[0]
            .command(&["CLUSTER", "KEYSLOT", key])?
            .as_int()
            .context("CLUSTER KEYSLOT")?;
        Ok(u16::try_from(slot)?)
    }

    /// The port of the master owning `slot`, according to the first node
    /// that answers.
    pub fn slot_owner(&self, slot: u16) -> anyhow::Result<u16> {
        let mut last = None;
        for node in &self.nodes {
            match owner_according_to(node, slot) {
                Ok(port) => return Ok(port),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no nodes")))
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to the cluster); its
    /// replica is promoted after `cluster-node-timeout` (3 s).
    pub fn kill_node(&mut self, port: u16) -> anyhow::Result<()> {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .context("no such node")?
            .kill();
        Ok(())
    }

    /// Ports of the masters.
    pub fn master_ports(&self) -> anyhow::Result<Vec<u16>> {
        let mut ports = Vec::new();
        for n in &self.nodes {
            if let Resp::Array(Some(role)) = n.command(&["ROLE"])?
                && role.first().and_then(Resp::as_str).as_deref() == Some("master")
            {
                ports.push(n.port());
            }
        }
        Ok(ports)
    }

    /// A master other than the one on `port` (a target for [`Self::migrate_slot`]).
    pub fn other_master(&self, port: u16) -> anyhow::Result<u16> {
        self.master_ports()?
            .into_iter()
            .find(|p| *p != port)
            .context("the cluster has a single master")
    }

    /// Moves `slot` (and its keys) to the master on `to_port`, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE of
    /// every key, then `SETSLOT NODE` on every master. Waits until every
    /// node names the new owner.
    pub fn migrate_slot(&self, slot: u16, to_port: u16) -> anyhow::Result<()> {
        let from_port = self.slot_owner(slot)?;
        if from_port == to_port {
            return Ok(());
        }
        let from = self.node(from_port).context("slot owner is not ours")?;
        let to = self.node(to_port).context("target is not ours")?;
        let from_id = node_id(from)?;
        let to_id = node_id(to)?;
        let slot_s = slot.to_string();
        expect_ok(to.command(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])?)?;
        expect_ok(from.command(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])?)?;
        loop {
            let keys = from.command(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"])?;
            let keys: Vec<String> = keys
                .as_array()
                .unwrap_or_default()
                .iter()
                .filter_map(Resp::as_str)
                .collect();
            if keys.is_empty() {
                break;
            }
            let port = to_port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            expect_ok(from.command(&args)?)?;
        }
        // The new owner first, so that it bumps its epoch and wins.
        expect_ok(to.command(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id])?)?;
        expect_ok(from.command(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id])?)?;
        for port in self.master_ports()? {
            if port != from_port && port != to_port {
                let node = self.node(port).context("master")?;
                expect_ok(node.command(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id])?)?;
            }
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self
            .nodes
            .iter()
            .all(|n| owner_according_to(n, slot).ok() == Some(to_port))
        {
            if Instant::now() >= deadline {
                bail!("the nodes did not agree on the new owner of slot {slot}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until every replica has synced with its master (a replica that
    /// never did refuses to fail over: its data counts as too old).
    fn wait_replicas_synced(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let synced = self.nodes.iter().all(|n| {
                n.command(&["INFO", "replication"])
                    .ok()
                    .and_then(|r| r.as_str())
                    .is_some_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
            });
            if synced {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("replicas not synced within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_consistent(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|r| r.as_str())
                    .is_some_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains("cluster_slots_assigned:16384")
                            && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                    })
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "cluster not consistent within {timeout:?}:\n{}",
                    self.nodes[0].logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn node_id(node: &RedisServer) -> anyhow::Result<String> {
    node.command(&["CLUSTER", "MYID"])?
        .as_str()
        .context("CLUSTER MYID")
}

fn expect_ok(reply: Resp) -> anyhow::Result<()> {
    match reply {
        Resp::Simple(s) if s == "OK" || s == "NOKEY" => Ok(()),
        other => bail!("expected OK, got {other:?}"),
    }
}

/// The port of the master owning `slot` according to `node`'s `CLUSTER SLOTS`.
fn owner_according_to(node: &RedisServer, slot: u16) -> anyhow::Result<u16> {
    let slots = node.command(&["CLUSTER", "SLOTS"])?;
    for range in slots.as_array().unwrap_or_default() {
        let Some(items) = range.as_array() else {
            continue;
        };
        let (Some(start), Some(end)) = (
            items.first().and_then(Resp::as_int),
            items.get(1).and_then(Resp::as_int),
        ) else {
            continue;
        };
        if (start..=end).contains(&i64::from(slot)) {
            let port = items
                .get(2)
                .and_then(Resp::as_array)
                .and_then(|m| m.get(1))
                .and_then(Resp::as_int)
                .context("owner port")?;
            return Ok(u16::try_from(port)?);
        }
    }
    bail!("slot {slot} has no owner")
}
