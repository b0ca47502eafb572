//! Sid forwarding between gateways, tried as an attacker would: junk and
//! made-up sids cost no Redis command and no memory, a peer that accepts
//! TCP but never answers fails the request within the configured timeout,
//! excess forwarded requests are refused, hop-by-hop headers and an
//! upgrade's `Content-Length` are not relayed, and the forwarding header
//! is refused from outside `cluster.peer_cidrs`. Real redis-server, real
//! gateways; the fake peers are plain TCP listeners registered in the peer
//! directory's hash.

mod common;
mod hardening_support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::*;
use hardening_support::*;
use serde_json::Value;
use switchboard_testkit::{GatewayProcess, redis::RedisServer};

/// The peer directory's hash with the default `redis.key`.
const PEERS_KEY: &str = "socket.io-switchboard#peers";

/// Registers a fake peer `tag` at `port` for ten minutes.
fn register_peer(redis: &RedisServer, tag: &str, port: u16) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    let value = format!("127.0.0.1:{port} {expiry}");
    redis
        .command(&["HSET", PEERS_KEY, tag, &value])
        .expect("HSET peer");
}

/// Waits until `gw`'s directory holds `n` live peers.
async fn wait_peers(gw: &GatewayProcess, n: f64) {
    wait_metric(gw, "switchboard_peer_directory_entries", T, |v| v == n).await;
}

/// The tag (first four characters) of a sid `gw` hands out.
async fn tag_of(gw: &GatewayProcess) -> String {
    polling_open(gw.port()).await.unwrap()[..4].to_string()
}

/// `n` pseudo-random base64url characters (xorshift over a shared state;
/// the point is variety, not unpredictability).
fn random_sid_chars(n: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..n)
        .map(|_| {
            let mut x = STATE.load(Ordering::Relaxed);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            STATE.store(x, Ordering::Relaxed);
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// Commands counted by `INFO commandstats`, by name.
fn calls(redis: &RedisServer) -> HashMap<String, u64> {
    redis.command_calls().unwrap().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_sids_cost_no_redis_command_and_no_directory_growth() {
    let redis = redis();
    let a = redis_gateway(&redis, &[]).await;
    let b = redis_gateway(&redis, &[]).await;
    wait_peers(&a, 2.0).await;
    let b_tag = tag_of(&b).await;
    let port = a.port();

    let before = calls(&redis);
    let started = Instant::now();
    // 10,000 sids: unparsable ones, well-formed ones with random tags, and
    // a few with a real peer's tag (forwarded to that peer, not to Redis).
    let sids: Vec<String> = (0..10_000)
        .map(|i| match i % 4 {
            0 => random_sid_chars(1 + i % 40),
            1 => format!("{}%2F%00{}", random_sid_chars(4), random_sid_chars(9)),
            2 => random_sid_chars(16),
            _ if i % 100 == 3 => format!("{b_tag}{}", random_sid_chars(12)),
            _ => random_sid_chars(16),
        })
        .collect();
    let statuses = tokio::task::spawn_blocking(move || {
        let mut wrong = Vec::new();
        for sid in sids {
            let url =
                format!("http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling&sid={sid}");
            let r = switchboard_testkit::net::http_request("GET", &url, &[], None, T)
                .expect("request answered");
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if r.status != 400 || v["message"] != "Session ID unknown" {
                wrong.push((sid, r.status, r.text()));
            }
        }
        wrong
    })
    .await
    .unwrap();
    assert!(
        statuses.is_empty(),
        "not 'Session ID unknown': {:?}",
        &statuses[..statuses.len().min(5)]
    );
    let elapsed = started.elapsed().as_secs() + 2;

    // The only commands in that time are the two gateways' periodic
    // directory refreshes (one HSET and one HGETALL each per second, each
    // preceded by the pool's connection check).
    let after = calls(&redis);
    let mut grown: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    grown.sort();
    for (command, delta) in &grown {
        match command.as_str() {
            "hset" | "hgetall" => assert!(
                *delta <= 2 * elapsed,
                "{delta} {command} in {elapsed} s is more than the refreshes: {grown:?}"
            ),
            // The connection pool checks a connection before each refresh
            // command.
            "ping" | "unwatch" => assert!(
                *delta <= 4 * elapsed,
                "{delta} {command} in {elapsed} s is more than the refreshes: {grown:?}"
            ),
            // `INFO commandstats` itself.
            "info" => {}
            _ => panic!("junk sids caused Redis commands: {grown:?}"),
        }
    }

    let text = metrics(&a).await;
    assert_eq!(
        metric(&text, "switchboard_peer_directory_entries"),
        Some(2.0),
        "directory grew: {text}"
    );
    assert!(
        metric_or_zero(
            &text,
            r#"switchboard_forward_refused_total{reason="bad_sid"}"#
        ) >= 5_000.0
    );
    assert!(
        metric_or_zero(
            &text,
            r#"switchboard_forward_refused_total{reason="unknown_owner"}"#
        ) >= 4_000.0
    );
    assert!(
        metric_or_zero(
            &text,
            r#"switchboard_forwarded_requests_total{outcome="ok",transport="polling"}"#
        ) >= 20.0
    );
    // Refusals are logged, but not once per request.
    let lines = a.logs().matches("not forwarded").count();
    assert!((1..100).contains(&lines), "{lines} refusal log lines");
}

/// A fake peer that records the head of every request and answers `answer`.
fn recording_peer(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = stream.read_exact(&mut body);
                seen.lock().unwrap().push(head);
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    (port, heads)
}

/// A fake peer that accepts connections and never answers.
fn silent_peer() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

/// Sends `request` as is to 127.0.0.1:`port`; returns the response text.
fn raw_request(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out_excess_is_refused_and_hop_by_hop_headers_stay() {
    let redis = redis();
    let a = redis_gateway(
        &redis,
        &[
            ("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "1000"),
            ("SWITCHBOARD_CLUSTER__FORWARD_TIMEOUT_MS", "1500"),
            ("SWITCHBOARD_CLUSTER__FORWARD_MAX_IN_FLIGHT", "1"),
        ],
    )
    .await;
    let (silent, silent_accepted) = silent_peer();
    let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\nok";
    let (echo, heads) = recording_peer(answer);
    register_peer(&redis, "SLNT", silent);
    register_peer(&redis, "ECHO", echo);
    wait_peers(&a, 3.0).await;
    let port = a.port();

    // A peer that never answers: the request fails after the timeout with a
    // reason, and a second one meanwhile is refused (one in flight at most).
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let r = polling_get(port, "SLNTabcdefghijkl").await.unwrap();
        (r, started.elapsed())
    });
    // In flight once the gateway has connected to the silent peer.
    let deadline = Instant::now() + T;
    while silent_accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never connected to the silent peer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = polling_get(port, "SLNTmnopqrstuvwx").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Too many forwarded requests"), "{body}");
    let ((status, body), took) = slow.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer in time"), "{body}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(5000),
        "failed after {took:?}, timeout 1.5 s"
    );

    // Hop-by-hop headers, and those `Connection` names, are not relayed.
    let response = tokio::task::spawn_blocking(move || {
        raw_request(
            port,
            "GET /socket.io/?EIO=4&transport=polling&sid=ECHOabcdefghijkl HTTP/1.1\r\n\
             Host: gateway\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\n\
             Proxy-Authorization: Basic eDp5\r\nTE: trailers\r\nTrailer: x-t\r\n\
             Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    assert!(
        !response.to_lowercase().contains("keep-alive: timeout=5"),
        "{response}"
    );
    // An upgrade is relayed without the client's Content-Length.
    let response = tokio::task::spawn_blocking(move || {
        raw_request(
            port,
            "GET /socket.io/?EIO=4&transport=websocket&sid=ECHOmnopqrstuvwx HTTP/1.1\r\n\
             Host: gateway\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Content-Length: 0\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for name in [
        "x-hop:",
        "keep-alive:",
        "proxy-authorization:",
        "te:",
        "trailer:",
        "proxy-connection:",
    ] {
        assert!(
            !heads[0].lines().any(|l| l.starts_with(name)),
            "{name} relayed: {}",
            heads[0]
        );
    }
    assert!(heads[0].contains("x-end-to-end: kept"), "{}", heads[0]);
    assert!(
        heads[0].contains("x-switchboard-forwarded:"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains("x-forwarded-for: 127.0.0.1"),
        "{}",
        heads[0]
    );
    assert!(heads[1].contains("upgrade: websocket"), "{}", heads[1]);
    assert!(!heads[1].contains("content-length"), "{}", heads[1]);

    let text = metrics(&a).await;
    for series in [
        r#"switchboard_forwarded_requests_total{outcome="owner_timeout",transport="polling"}"#,
        r#"switchboard_forward_refused_total{reason="overloaded"}"#,
    ] {
        assert_eq!(metric(&text, series), Some(1.0), "{series}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_header_from_outside_peer_cidrs_is_refused() {
    let gw = embedded_gateway(&[("SWITCHBOARD_CLUSTER__PEER_CIDRS", "10.99.0.0/16")]).await;
    let r = http(
        "GET",
        &polling_url(gw.port(), Some("AAAAabcdefghijkl")),
        &[("x-switchboard-forwarded", "EVIL")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("cluster.peer_cidrs"), "{}", r.text());
    wait_metric(
        &gw,
        r#"switchboard_forward_refused_total{reason="peer_not_allowed"}"#,
        T,
        |v| v == 1.0,
    )
    .await;
    gw.wait_for_log("peer_not_allowed", T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_has_removed_its_directory_entry() {
    let redis = redis();
    let mut gw = redis_gateway(&redis, &[]).await;
    wait_peers(&gw, 1.0).await;
    let tag = tag_of(&gw).await;
    let registered = redis.command(&["HEXISTS", PEERS_KEY, &tag]).unwrap();
    assert_eq!(registered.as_int(), Some(1));
    // The de-registration is awaited before the process exits, so the entry
    // is gone the moment it has exited (not after the 10 s expiry).
    let gw = tokio::task::spawn_blocking(move || {
        gw.terminate().expect("gateway exits");
        gw
    })
    .await
    .unwrap();
    assert!(
        gw.logs().contains("de-registered from peers"),
        "{}",
        gw.logs()
    );
    let left = redis.command(&["HEXISTS", PEERS_KEY, &tag]).unwrap();
    assert_eq!(left.as_int(), Some(0), "{tag} still registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_and_upgrade_through_a_peer_reach_the_owner() {
    let redis = redis();
    let fast = [
        ("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "300"),
        ("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "200"),
    ];
    let owner = redis_gateway(&redis, &fast).await;
    let relay = redis_gateway(&redis, &fast).await;
    wait_peers(&relay, 2.0).await;

    // A session opened on the owner, polled and upgraded through the relay.
    let sid = polling_open(owner.port()).await.unwrap();
    let (status, body) = polling_get(relay.port(), &sid).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "2"),
        "ping through the relay"
    );
    assert_eq!(
        polling_post(relay.port(), &sid, b"3").await.unwrap().status,
        200
    );
    let mut ws = RawWs::connect(relay.port(), &format!("sid={sid}"))
        .await
        .unwrap();
    ws.send_text("2probe").await.unwrap();
    assert_eq!(ws.next_text(T).await.unwrap(), "3probe");
    ws.send_text("5").await.unwrap();
    assert_eq!(
        ws.next_text(T).await.unwrap(),
        "2",
        "ping over the spliced websocket"
    );
    ws.send_text("3").await.unwrap();
    assert_eq!(ws.next_text(T).await.unwrap(), "2");

    let text = metrics(&relay).await;
    for transport in ["polling", "websocket"] {
        let series = format!(
            r#"switchboard_forwarded_requests_total{{outcome="ok",transport="{transport}"}}"#
        );
        assert!(metric_or_zero(&text, &series) >= 1.0, "{series}\n{text}");
    }
    wait_metric(&owner, "switchboard_upgrades_total", T, |v| v == 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_joining_a_fleet_is_ready_only_once_peers_can_forward_its_sids() {
    let redis = redis();
    let fast = [
        ("SWITCHBOARD_ENGINE__PING_INTERVAL_MS", "300"),
        ("SWITCHBOARD_ENGINE__PING_TIMEOUT_MS", "200"),
    ];
    let older = redis_gateway(&redis, &fast).await;
    // `redis_gateway` returns as soon as `/readyz` says ready: from then on a
    // load balancer may send the newcomer clients whose next request lands
    // on the older gateway, which must already know the newcomer's tag
    // (it reads the directory once a second).
    let newcomer = redis_gateway(&redis, &fast).await;
    let ready = get_json(format!("{}/readyz", newcomer.url()))
        .await
        .unwrap();
    assert_eq!(ready.1["peers"], "announced", "{ready:?}");
    let sid = polling_open(newcomer.port()).await.unwrap();
    let (status, body) = polling_get(older.port(), &sid).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "2"),
        "the newcomer's session polled through the older gateway"
    );
}
