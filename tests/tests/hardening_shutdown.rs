//! SIGTERM under load: two gateways on one Redis behind a tiny round-robin
//! TCP proxy (the test's stand-in for a load balancer), official
//! `socket.io-client` sockets with reconnection on connected through it, and
//! a steady stream of emitter publishes. Gateway A gets SIGTERM: it must
//! exit 0 within its shutdown deadline, and every client must reconnect
//! (through the proxy, to B) and receive the next broadcasts.

mod common;
mod hardening_support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use hardening_support::*;
use serde_json::json;
use switchboard_testkit::node::{ConnectOptions, Note};
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 16;
const DEADLINE_MS: u64 = 3000;

/// A round-robin TCP proxy on 127.0.0.1: each new connection goes to the
/// next backend, or to the one after it if that refuses. Stops when the
/// returned handle is aborted (or dropped with the test's runtime).
async fn round_robin_proxy(backends: Vec<u16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let next = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let start = next.fetch_add(1, Ordering::Relaxed);
            let backends = backends.clone();
            conns.spawn(async move {
                for k in 0..backends.len() {
                    let port = backends[(start + k) % backends.len()];
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_clients_move_to_the_other_gateway() {
    let redis = redis();
    let env = [(
        "SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS",
        DEADLINE_MS.to_string(),
    )];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut gw_a = redis_gateway(&redis, &env).await;
    let gw_b = redis_gateway(&redis, &env).await;
    let (proxy_port, proxy) = round_robin_proxy(vec![gw_a.port(), gw_b.port()]).await;
    let url = format!("http://127.0.0.1:{proxy_port}");

    let node = node().await;
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("c{i}")).collect();
    for name in &names {
        let opts = ConnectOptions::new()
            .websocket_only()
            .token(token_role(name, "all"))
            .reconnection(true)
            .opt("reconnectionDelay", json!(100))
            .opt("reconnectionDelayMax", json!(500))
            .timeout(Duration::from_secs(8));
        node.connect(name, &url, opts)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    let on_a = metric_or_zero(&metrics(&gw_a).await, "switchboard_sockets");
    let on_b = metric_or_zero(&metrics(&gw_b).await, "switchboard_sockets");
    assert_eq!(on_a + on_b, CLIENTS as f64);
    assert!(
        on_a >= 1.0,
        "the proxy spread clients over both gateways ({on_a} on A)"
    );

    // The steady stream: one broadcast every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let last_seq = Arc::new(AtomicI64::new(-1));
    let publisher = {
        let (stop, last_seq, port) = (stop.clone(), last_seq.clone(), redis.port());
        std::thread::spawn(move || {
            let mut seq = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let (channel, payload) =
                    emitter_message("role:all", "seq", vec![rmpv::Value::from(seq)]);
                if redis_publish(port, &channel, &payload).is_ok() {
                    last_seq.store(seq, Ordering::Relaxed);
                }
                seq += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Under way: a few publishes out before the SIGTERM.
    let deadline = Instant::now() + STEP;
    while last_seq.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline, "the publisher never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let term = tokio::task::spawn_blocking(move || {
        let status = gw_a.terminate_timeout(Duration::from_secs(20));
        (status, gw_a)
    });
    let (status, gw_a) = term.await.unwrap();
    let exited_in = started.elapsed();
    let status = status.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "gateway A exit status {status}:\n{}",
        gw_a.logs()
    );
    assert!(
        exited_in < Duration::from_millis(DEADLINE_MS + 2000),
        "gateway A took {exited_in:?} to exit (deadline {DEADLINE_MS} ms)"
    );

    // Every client ends up on B.
    wait_metric(&gw_b, "switchboard_sockets", T, |v| v == CLIENTS as f64).await;
    let moved_in = started.elapsed();

    // ... and receives the next broadcasts.
    let after = last_seq.load(Ordering::Relaxed);
    for name in &names {
        node.take_note(name, T, |n| {
            matches!(n, Note::Event { name, args } if name == "seq"
                && args.first().and_then(|v| v.as_i64()).is_some_and(|s| s > after))
        })
        .await
        .unwrap_or_else(|e| panic!("{name} got no broadcast after the move: {e:#}"));
        let refused: Vec<Note> = node
            .queued(name)
            .into_iter()
            .filter(|n| matches!(n, Note::ConnectError { .. }))
            .collect();
        assert!(refused.is_empty(), "{name}: {refused:?}");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    proxy.abort();
    println!(
        "SIGTERM: gateway A ({on_a} of {CLIENTS} clients) exited 0 in {exited_in:?} (deadline {DEADLINE_MS} ms); \
         all clients on gateway B {moved_in:?} after SIGTERM and receiving broadcasts"
    );
}
