//! Issue #14 item 6, the measurement behind docs/scaling.md (`bench/run.sh
//! shardtraffic`; ignored in the normal suite): N gateways on a 3-master
//! Redis Cluster, U websocket sessions each (one per user, each in its room
//! `user:<id>`), and a steady rate of per-user events; per gateway, the
//! messages and payload bytes Redis sent it and the CPU it spent, in
//! classic, sharded-static and sharded-dynamic modes.
//!
//! The sessions are held by `sb-shardhold` processes (bench crate, one per
//! gateway: a lean client, so 18,000 sessions fit one process's 20,000
//! open files), which also count the events every session received, so
//! each event is checked delivered exactly once. The events are published
//! from this process with the broadcaster crate (PUBLISH in classic mode,
//! SPUBLISH in the sharded modes, as a Node server on the same adapter
//! would), so no gateway does publishing work and all N are alike.
//!
//! Each mode: connect, an idle window (heartbeats only: the baseline CPU
//! subtracted from the publishing window), then `events_per_user` events to
//! every user at `rate` events/s, interleaved over the gateways so each
//! gets a steady share.
//!
//! Sizes (environment): `SHARD_GATEWAYS` (3), `SHARD_USERS_PER_GATEWAY`
//! (1000), `SHARD_EVENTS_PER_USER` (2), `SHARD_RATE` (events/s, 2000),
//! `SHARD_IDLE_SECS` (5), `SHARD_MODES` (`classic sharded-static
//! sharded-dynamic`). `SB_SHARDHOLD_BIN` names the holder binary
//! (`cargo build --release -p switchboard-bench`).

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;
use switchboard_broadcaster::{
    Broadcaster, BroadcasterConfig, Encoded, Mode, RedisSettings, SubscriptionMode,
};
use switchboard_testkit::{GatewayProcess, cluster::RedisCluster, gateway::bin_path};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads a process's utime + stime in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Milliseconds per clock tick (USER_HZ is 100 on Linux).
const TICK_MS: f64 = 10.0;

/// Resident memory of a process in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// What Redis sent one gateway so far, all subscription kinds: (messages, payload bytes).
async fn bus_received(gw: &GatewayProcess) -> (f64, f64) {
    let text = metrics(gw).await;
    let sum = |name: &str| -> f64 {
        ["channel", "pattern", "shard"]
            .iter()
            .map(|k| metric_or_zero(&text, &format!("{name}{{subscription=\"{k}\"}}")))
            .sum()
    };
    (
        sum("switchboard_bus_received_total"),
        sum("switchboard_bus_received_bytes_total"),
    )
}

/// CPU seconds (user + sys) every node of the cluster has used so far.
fn redis_cpu_secs(cluster: &RedisCluster) -> f64 {
    cluster
        .nodes()
        .iter()
        .filter_map(|n| n.command(&["INFO", "cpu"]).ok()?.as_str())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| {
                    let (k, v) = l.trim().split_once(':')?;
                    matches!(k, "used_cpu_user" | "used_cpu_sys").then(|| v.parse::<f64>().ok())?
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `key=value` from a holder's line (`READY ...`, `REPORT ...`).
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// One `sb-shardhold` process and its command pipe (killed when dropped).
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    /// Starts a holder of `count` sessions of users `<prefix><i>` on `gw`,
    /// from the loopback block `127.<block>.0.1..` (its own block, so no
    /// two holders share a source address and port range).
    fn spawn(gw: &GatewayProcess, count: usize, prefix: &str, block: usize) -> Holder {
        let bin = bin_path("sb-shardhold").expect("sb-shardhold built");
        let mut child = Command::new(bin)
            .args(["--addr", &format!("127.0.0.1:{}", gw.port())])
            .args(["--count", &count.to_string()])
            .args(["--user-prefix", prefix])
            .args(["--src-base", &format!("127.{block}.0.1")])
            .args(["--src-count", "8"])
            .args(["--max-secs", "1800"])
            .env("SB_SECRET", SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sb-shardhold");
        let stdin = child.stdin.take().expect("holder stdin");
        let stdout = BufReader::new(child.stdout.take().expect("holder stdout")).lines();
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    async fn line(&mut self, timeout: Duration) -> String {
        tokio::time::timeout(timeout, self.stdout.next_line())
            .await
            .expect("holder answers in time")
            .expect("holder stdout")
            .expect("holder still running")
    }

    /// The `REPORT` line for `k` events expected per session.
    async fn report(&mut self, k: usize) -> String {
        self.stdin
            .write_all(format!("report {k}\n").as_bytes())
            .await
            .expect("holder stdin");
        self.line(T).await
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Gateway, Redis and holder CPU at one instant.
struct Sample {
    at: Instant,
    gw_ticks: Vec<u64>,
    holder_ticks: u64,
    redis_secs: f64,
    bus: Vec<(f64, f64)>,
}

async fn sample(gws: &[GatewayProcess], holders: &[Holder], cluster: &RedisCluster) -> Sample {
    let bus = futures_util::future::join_all(gws.iter().map(bus_received)).await;
    Sample {
        at: Instant::now(),
        gw_ticks: gws
            .iter()
            .map(|g| cpu_ticks(g.pid().unwrap_or(0)))
            .collect(),
        holder_ticks: holders.iter().map(|h| cpu_ticks(h.pid())).sum(),
        redis_secs: tokio::task::block_in_place(|| redis_cpu_secs(cluster)),
        bus,
    }
}

/// The per-user event of round `round` for user `user`, in `mode`'s encoding.
fn encode(
    bc: &Broadcaster,
    sharded: Option<SubscriptionMode>,
    user: &str,
    round: usize,
) -> Encoded {
    // ~100 bytes of data, a small notification.
    let data = json!({"kind": "ticket_updated", "id": 123456, "title": "a short notification title", "n": round});
    let op = bc.to_user(user);
    match sharded {
        None => op.encode("tick", &data),
        Some(mode) => op.encode_sharded("tick", &data, mode),
    }
    .expect("encode")
}

/// Per mode and gateway: (messages, net CPU ms) for the summary.
type ModeResult = (String, Vec<(f64, f64)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: bench/run.sh shardtraffic"]
async fn bus_traffic_per_gateway_by_pubsub_mode() {
    let gateways = env_usize("SHARD_GATEWAYS", 3);
    let users = env_usize("SHARD_USERS_PER_GATEWAY", 1000);
    let per_user = env_usize("SHARD_EVENTS_PER_USER", 2);
    let rate = env_usize("SHARD_RATE", 2000).max(1);
    let idle = Duration::from_secs(env_usize("SHARD_IDLE_SECS", 5) as u64);
    let modes = std::env::var("SHARD_MODES")
        .unwrap_or_else(|_| "classic sharded-static sharded-dynamic".into());
    let total = gateways * users * per_user;
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0)).unwrap();
    let seed = cluster.addrs()[0].clone();
    let mut results: Vec<ModeResult> = Vec::new();
    for (m, mode) in modes.split_whitespace().enumerate() {
        let (pubsub, subscription) = match mode {
            "classic" => ("classic", "dynamic"),
            "sharded-static" => ("sharded", "static"),
            "sharded-dynamic" => ("sharded", "dynamic"),
            other => panic!("SHARD_MODES: unknown mode {other}"),
        };
        let sharded = (pubsub == "sharded").then_some(if subscription == "static" {
            SubscriptionMode::Static
        } else {
            SubscriptionMode::Dynamic
        });
        let mut gws = Vec::new();
        for _ in 0..gateways {
            let gw = start(
                base_opts()
                    .env("SWITCHBOARD_LOG_LEVEL", "warn")
                    .env("SWITCHBOARD_REDIS__MODE", "cluster")
                    .env("SWITCHBOARD_REDIS__NODES", seed.as_str())
                    .env("SWITCHBOARD_REDIS__PUBSUB", pubsub)
                    .env("SWITCHBOARD_REDIS__SUBSCRIPTION", subscription)
                    // The bench's own limits: every session from a few
                    // loopback addresses, far more than the defaults allow.
                    .env("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "0")
                    .env("SWITCHBOARD_LIMITS__CONNECTS_PER_SEC", "0")
                    .env("SWITCHBOARD_LIMITS__MAX_SESSIONS", "0")
                    .env("SWITCHBOARD_SERVER__MAX_CONNECTIONS", "1000000"),
            )
            .await;
            wait_ready(&gw, T).await;
            gws.push(gw);
        }
        let t_connect = Instant::now();
        // Each mode its own loopback blocks: the previous mode's client
        // ports may still be in TIME_WAIT.
        let mut holders: Vec<Holder> = gws
            .iter()
            .enumerate()
            .map(|(g, gw)| Holder::spawn(gw, users, &format!("g{g}u"), 40 + m * 40 + g))
            .collect();
        let connect_timeout = Duration::from_secs(60 + (users as u64) / 50);
        for (g, h) in holders.iter_mut().enumerate() {
            let ready = h.line(connect_timeout).await;
            assert_eq!(
                field(&ready, "connected"),
                users as u64,
                "{mode}: holder {g}: {ready}"
            );
        }
        let connect_secs = t_connect.elapsed().as_secs_f64();
        if sharded == Some(SubscriptionMode::Dynamic) {
            for gw in &gws {
                wait_metric(
                    gw,
                    "switchboard_bus_shard_room_channels",
                    Duration::from_secs(120),
                    // Every user room, plus the holders' one role room.
                    |v| v == users as f64 + 1.0,
                )
                .await;
            }
        }
        let rss: Vec<f64> = gws.iter().map(|g| rss_mib(g.pid().unwrap_or(0))).collect();

        // Idle window: heartbeats only.
        let idle_start = sample(&gws, &holders, &cluster).await;
        tokio::time::sleep(idle).await;
        let idle_end = sample(&gws, &holders, &cluster).await;
        let idle_secs = (idle_end.at - idle_start.at).as_secs_f64();

        // Publishing window: `total` events at `rate`, user by user
        // interleaved over the gateways.
        let bc = Broadcaster::from_config(BroadcasterConfig {
            redis: RedisSettings {
                mode: Mode::Cluster,
                nodes: vec![seed.clone()],
                ..Default::default()
            },
            publish_timeout: Duration::from_secs(10),
            ..Default::default()
        })
        .expect("broadcaster");
        let event = |j: usize| {
            let round = j / (gateways * users);
            let k = j % (gateways * users);
            let user = format!("g{}u{}", k % gateways, k / gateways);
            encode(&bc, sharded, &user, round)
        };
        let start_sample = sample(&gws, &holders, &cluster).await;
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sent < total {
            tick.tick().await;
            let due = ((start_sample.at.elapsed().as_secs_f64() * rate as f64) as usize)
                .min(total)
                .min(sent + 5000);
            if due <= sent {
                continue;
            }
            let batch: Vec<Encoded> = (sent..due).map(event).collect();
            let published = match sharded {
                None => bc.emit_many(batch).await,
                Some(_) => bc.spublish_many(batch).await,
            };
            published.unwrap_or_else(|e| panic!("{mode}: publish failed: {e}"));
            sent = due;
        }
        let publish_secs = start_sample.at.elapsed().as_secs_f64();
        // Every event delivered, then each session checked for exactly `per_user`.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut got = 0u64;
            for h in holders.iter_mut() {
                got += field(&h.report(per_user).await, "events");
            }
            if got >= total as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: {got} of {total} delivered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let end = sample(&gws, &holders, &cluster).await;
        let window = (end.at - start_sample.at).as_secs_f64();
        let mut reports = Vec::new();
        for h in holders.iter_mut() {
            reports.push(h.report(per_user).await);
        }
        let exact: u64 = reports.iter().map(|r| field(r, "exact")).sum();
        let down: u64 = reports.iter().map(|r| field(r, "down")).sum();

        let redis_idle_ms_s = (idle_end.redis_secs - idle_start.redis_secs) * 1000.0 / idle_secs;
        let redis_ms = (end.redis_secs - start_sample.redis_secs) * 1000.0;
        let holders_ms = (end.holder_ticks - start_sample.holder_ticks) as f64 * TICK_MS;
        eprintln!(
            "TRAFFIC mode={mode} gateways={gateways} connections={} events={total} rate={rate} \
             connect_secs={connect_secs:.1} publish_secs={publish_secs:.1} window_secs={window:.1} \
             idle_secs={idle_secs:.1} sessions_exact={exact} sessions_down={down} \
             redis_cpu_ms={redis_ms:.0} redis_idle_cpu_ms_per_s={redis_idle_ms_s:.1} \
             redis_net_cpu_us_per_event={:.2} holders_cpu_ms={holders_ms:.0}",
            gateways * users,
            (redis_ms - redis_idle_ms_s * window) * 1000.0 / total as f64,
        );
        let mut per_gw = Vec::new();
        for (g, rss) in rss.iter().enumerate() {
            let msgs = end.bus[g].0 - start_sample.bus[g].0;
            let bytes = end.bus[g].1 - start_sample.bus[g].1;
            let idle_msgs = idle_end.bus[g].0 - idle_start.bus[g].0;
            let cpu_ms = (end.gw_ticks[g] - start_sample.gw_ticks[g]) as f64 * TICK_MS;
            let idle_ms_s =
                (idle_end.gw_ticks[g] - idle_start.gw_ticks[g]) as f64 * TICK_MS / idle_secs;
            let net_ms = cpu_ms - idle_ms_s * window;
            eprintln!(
                "TRAFFIC mode={mode} gateway={g} redis_msgs={msgs} redis_payload_bytes={bytes} \
                 msgs_per_event={:.3} bytes_per_msg={:.1} cpu_ms={cpu_ms:.0} \
                 idle_cpu_ms_per_s={idle_ms_s:.1} net_cpu_ms={net_ms:.0} idle_msgs={idle_msgs} \
                 rss_mib={:.0}",
                msgs / total as f64,
                if msgs > 0.0 { bytes / msgs } else { 0.0 },
                rss,
            );
            per_gw.push((msgs, net_ms));
        }
        results.push((mode.to_string(), per_gw));
        assert_eq!(
            exact,
            (gateways * users) as u64,
            "{mode}: sessions without exactly {per_user} events: {reports:?}"
        );
        assert_eq!(down, 0, "{mode}: sessions closed during the run");
        for h in holders.iter_mut() {
            let _ = h.stdin.write_all(b"quit\n").await;
        }
        drop(holders);
        drop(gws);
    }
    // The discarding estimate: the same users and deliveries in every mode,
    // so the net CPU above dynamic mode's is what the extra (discarded)
    // messages cost.
    let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
    };
    if let Some((_, dynamic)) = results.iter().find(|(m, _)| m == "sharded-dynamic") {
        for (mode, per_gw) in results.iter().filter(|(m, _)| m != "sharded-dynamic") {
            let extra_msgs = mean(per_gw, |r| r.0) - mean(dynamic, |r| r.0);
            let extra_ms = mean(per_gw, |r| r.1) - mean(dynamic, |r| r.1);
            eprintln!(
                "TRAFFIC summary mode={mode} discarded_msgs_per_gateway={extra_msgs:.0} \
                 extra_net_cpu_ms_per_gateway={extra_ms:.0} discard_us_per_msg={:.2}",
                if extra_msgs > 0.0 {
                    extra_ms * 1000.0 / extra_msgs
                } else {
                    0.0
                }
            );
        }
    }
}
