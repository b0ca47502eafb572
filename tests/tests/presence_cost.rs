//! What presence costs Redis (issue #12, "Cost measured"): commands and
//! request bytes per connect, per disconnect and per refresh, read from
//! `MONITOR` on the test's own redis-server, and the refresh traffic of
//! 200,000 connected users at the default TTL computed from them (the
//! model in docs/scaling.md). Bounds make the test fail if a change makes
//! presence chattier than the model says.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use switchboard_testkit::{GatewayProcess, jwt::Claims, node::ConnectOptions};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Users connected in the measurement.
const USERS: usize = 20;
/// Rooms with presence they join (USERS / ROOMS each).
const ROOMS: usize = 5;
const TTL_S: u64 = 3;

/// One command seen by MONITOR: issued by a client (not from inside a
/// script), its arguments unescaped.
#[derive(Debug, Clone)]
struct Seen {
    from_script: bool,
    args: Vec<Vec<u8>>,
}

impl Seen {
    /// The RESP size of the request: `*N\r\n` then `$len\r\n<arg>\r\n`.
    fn request_bytes(&self) -> usize {
        let mut n = format!("*{}\r\n", self.args.len()).len();
        for a in &self.args {
            n += format!("${}\r\n", a.len()).len() + a.len() + 2;
        }
        n
    }

    fn is_presence(&self) -> bool {
        self.args
            .iter()
            .any(|a| a.windows(10).any(|w| w == b"-presence#"))
    }

    /// `EVALSHA <sha>` (or the `EVAL` that loads it) of this script.
    fn is_script(&self, sha: &[u8]) -> bool {
        self.name() == "EVALSHA" && self.args.get(1).is_some_and(|a| a == sha)
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(self.args.first().map_or(&[][..], |a| a)).to_ascii_uppercase()
    }
}

/// Parses one MONITOR line: `<ts> [<db> <addr>|lua] "ARG" "ARG" ...`.
fn parse_monitor(line: &str) -> Option<Seen> {
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    let from_script = line[open..close].contains("lua");
    let mut args = Vec::new();
    let bytes = &line.as_bytes()[close + 1..];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                match bytes[i + 1] {
                    b'x' if i + 3 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).ok()?;
                        arg.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 4;
                        continue;
                    }
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    other => arg.push(other),
                }
                i += 2;
                continue;
            }
            arg.push(bytes[i]);
            i += 1;
        }
        args.push(arg);
        i += 1;
    }
    Some(Seen { from_script, args })
}

/// Everything MONITOR reports, from a connection of its own.
async fn monitor(port: u16) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to redis");
    stream.write_all(b"MONITOR\r\n").await.expect("MONITOR");
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(s) = line.strip_prefix('+').and_then(parse_monitor) {
                sink.lock().unwrap().push(s);
            }
        }
    });
    seen
}

/// Top-level presence commands and their request bytes since `from`.
fn tally(seen: &Arc<Mutex<Vec<Seen>>>, from: usize) -> (usize, Vec<Seen>) {
    let all = seen.lock().unwrap();
    let mine: Vec<Seen> = all[from..]
        .iter()
        .filter(|s| !s.from_script && s.is_presence())
        .cloned()
        .collect();
    (all.len(), mine)
}

fn summary(cmds: &[Seen]) -> (usize, usize, Vec<(String, usize)>) {
    let bytes = cmds.iter().map(Seen::request_bytes).sum();
    let mut by: Vec<(String, usize)> = Vec::new();
    for c in cmds {
        match by.iter_mut().find(|(n, _)| *n == c.name()) {
            Some((_, k)) => *k += 1,
            None => by.push((c.name(), 1)),
        }
    }
    (cmds.len(), bytes, by)
}

async fn online_sockets(gw: &GatewayProcess, user: &str) -> Value {
    api_get(gw, &format!("/api/v1/online?user={user}")).await.1["sockets"].clone()
}

async fn online_members(gw: &GatewayProcess, room: &str) -> u64 {
    api_get(gw, &format!("/api/v1/presence?room={room}"))
        .await
        .1["members"]
        .as_array()
        .map_or(0, |m| m.len() as u64)
}

async fn wait_sockets(gw: &GatewayProcess, user: &str, want: u64) {
    let deadline = Instant::now() + T;
    while online_sockets(gw, user).await != json!(want) {
        assert!(Instant::now() < deadline, "{user} never had {want} sockets");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_costs_per_connect_disconnect_and_refresh() {
    let redis = redis();
    let ttl = TTL_S.to_string();
    let gw = start(
        base_opts()
            .redis(redis.url())
            .config_toml(
                r#"
[presence]
online_rooms = ["company:{company_id}"]
claims = ["name"]

[[client.rooms]]
join_event = "join_chat"
room = "chat_{arg}"
presence = true
"#,
            )
            .env("SWITCHBOARD_AUTH__ROOMS", "user:{sub},company:{company_id}")
            .env("SWITCHBOARD_PRESENCE__TTL_S", &ttl),
    )
    .await;
    wait_ready(&gw, T).await;
    let node = node().await;
    let seen = monitor(redis.port()).await;
    // Let the first refresh (the lease) pass so connects are measured alone.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Connect: one socket per user.
    let (start, _) = tally(&seen, 0);
    for i in 0..USERS {
        let token = Claims::new()
            .sub(format!("user{i}"))
            .claim("company_id", "c1")
            .claim("name", format!("User number {i}"))
            .sign_hs256(SECRET);
        connect(
            &node,
            &format!("u{i}"),
            &gw,
            ConnectOptions::new().websocket_only().token(token),
        )
        .await;
    }
    for i in 0..USERS {
        wait_sockets(&gw, &format!("user{i}"), 1).await;
    }
    let (_, connects) = tally(&seen, start);
    // The refresh ticks that fell in the window write every entry too:
    // count only the first UPSERT of each scope and the SADDs.
    let upsert = script_sha(switchboard_wire::presence::UPSERT);
    let remove = script_sha(switchboard_wire::presence::REMOVE);
    let mut scopes_seen = std::collections::HashSet::new();
    let connect_cmds: Vec<Seen> = connects
        .iter()
        .filter(|s| {
            s.name() == "SADD"
                || (s.is_script(&upsert) && scopes_seen.insert(s.args.get(3).cloned()))
        })
        .cloned()
        .collect();

    // Refresh: idle for a few periods; everything presence sends is refresh
    // (lease, one UPSERT per user) and the reaper's look at the leases.
    // Join: each user joins one of ROOMS rooms with presence.
    let (join_from, _) = tally(&seen, 0);
    for i in 0..USERS {
        let ack = node
            .emit_with_ack(&format!("u{i}"), "join_chat", vec![json!(i % ROOMS)], T)
            .await
            .expect("join ack");
        assert_eq!(ack[0]["ok"], json!(true), "{ack}");
    }
    let per_room = (USERS / ROOMS) as u64;
    for r in 0..ROOMS {
        let deadline = Instant::now() + T;
        while online_members(&gw, &format!("chat_{r}")).await != per_room {
            assert!(
                Instant::now() < deadline,
                "chat_{r} never had {per_room} members"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (_, joins) = tally(&seen, join_from);
    let room_key = |s: &Seen| {
        s.args
            .get(3)
            .is_some_and(|k| k.windows(4).any(|w| w == b"{r:/"))
    };
    let join_cmds: Vec<Seen> = joins
        .iter()
        .filter(|s| s.name() == "SADD" || (s.is_script(&upsert) && room_key(s)))
        .cloned()
        .collect();

    // One period first, so the first refresh's script load (EVAL after
    // NOSCRIPT, once per Redis) stays out of the steady state measured.
    tokio::time::sleep(Duration::from_millis(TTL_S * 1000 / 3 + 100)).await;
    let (idle_from, _) = tally(&seen, 0);
    let periods = 3u32;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(TTL_S * 1000 / 3) * periods).await;
    let idle_for = t0.elapsed();
    let (mark, idle) = tally(&seen, idle_from);

    // Disconnect every user.
    for i in 0..USERS {
        node.disconnect(&format!("u{i}")).await.unwrap();
    }
    for i in 0..USERS {
        wait_sockets(&gw, &format!("user{i}"), 0).await;
    }
    let (_, disconnects) = tally(&seen, mark);
    let disconnect_cmds: Vec<Seen> = disconnects
        .iter()
        .filter(|s| s.name() == "SREM" || s.is_script(&remove))
        .cloned()
        .collect();

    let (c_n, c_bytes, c_by) = summary(&connect_cmds);
    let (j_n, j_bytes, j_by) = summary(&join_cmds);
    let per_join = (j_n as f64 / USERS as f64, j_bytes as f64 / USERS as f64);
    let (i_n, i_bytes, i_by) = summary(&idle);
    let (d_n, d_bytes, d_by) = summary(&disconnect_cmds);
    let ticks = idle_for.as_secs_f64() / (TTL_S as f64 / 3.0);
    let per_connect = (c_n as f64 / USERS as f64, c_bytes as f64 / USERS as f64);
    let per_disconnect = (d_n as f64 / USERS as f64, d_bytes as f64 / USERS as f64);
    let upserts_idle = idle.iter().filter(|s| s.name() == "EVALSHA").count();
    let upsert_bytes_idle: usize = idle
        .iter()
        .filter(|s| s.name() == "EVALSHA")
        .map(Seen::request_bytes)
        .sum();
    // Scopes refreshed: USERS online scopes and ROOMS room scopes.
    let scopes = (USERS + ROOMS) as f64;
    let per_scope_refresh = (
        upserts_idle as f64 / ticks / scopes,
        upsert_bytes_idle as f64 / ticks / scopes,
    );
    let per_gateway_tick = (
        (i_n - upserts_idle) as f64 / ticks,
        (i_bytes - upsert_bytes_idle) as f64 / ticks,
    );
    // 200,000 users at the default TTL (60 s, refreshed every 20 s), each
    // online (one scope per user); rooms add one call per room per period.
    let users = 200_000.0;
    let refresh_s = 20.0;
    let fleet_cmds = users * per_scope_refresh.0 / refresh_s;
    let fleet_bytes = users * per_scope_refresh.1 / refresh_s;
    eprintln!(
        "presence cost (online tracking, {USERS} users, one socket each, {ROOMS} rooms with presence, ttl_s = {TTL_S}):"
    );
    eprintln!(
        "  connect:    {:.2} commands, {:.0} request bytes per user  {c_by:?}",
        per_connect.0, per_connect.1
    );
    eprintln!(
        "  join:       {:.2} commands, {:.0} request bytes per first join of a user  {j_by:?}",
        per_join.0, per_join.1
    );
    eprintln!(
        "  disconnect: {:.2} commands, {:.0} request bytes per user (online + one room)  {d_by:?}",
        per_disconnect.0, per_disconnect.1
    );
    eprintln!(
        "  refresh:    {:.2} commands, {:.0} request bytes per scope per period (a user online, or a room with members here); {:.2} commands, {:.0} bytes per gateway per period ({i_by:?} over {ticks:.1} periods)",
        per_scope_refresh.0, per_scope_refresh.1, per_gateway_tick.0, per_gateway_tick.1
    );
    eprintln!(
        "  200,000 users, ttl_s = 60: {fleet_cmds:.0} commands/s, {:.2} MB/s of requests to Redis for refresh",
        fleet_bytes / 1e6
    );
    // The model: a connect is one UPSERT and one SADD; a disconnect one
    // REMOVE and one SREM; a refresh one UPSERT per entry.
    assert!(per_connect.0 <= 2.0 + 1e-9, "connect: {c_by:?}");
    // A disconnect leaves two scopes here (online, one room): a REMOVE
    // each and an SREM per scope this gateway no longer holds.
    assert!(per_disconnect.0 <= 4.0 + 1e-9, "disconnect: {d_by:?}");
    assert!(per_join.0 <= 2.0 + 1e-9, "join: {j_by:?}");
    assert!(
        (0.6..=1.4).contains(&per_scope_refresh.0),
        "refresh: {:.2} calls per scope per period",
        per_scope_refresh.0
    );
    assert!(per_gateway_tick.0 <= 2.5, "per gateway: {i_by:?}");
}

fn script_sha(code: &str) -> Vec<u8> {
    redis::Script::new(code).get_hash().as_bytes().to_vec()
}
