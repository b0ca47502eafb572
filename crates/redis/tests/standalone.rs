//! The publisher and subscriber against a real standalone `redis-server`.

use std::time::{Duration, Instant};

use switchboard_redis::{Error, Publication, PublishKind, Redis, RedisSettings, SubscriptionKind};
use switchboard_testkit::{net::free_port, redis::RedisServer};

const WAIT: Duration = Duration::from_secs(10);

fn redis(url: String, timeout_ms: u64) -> Redis {
    Redis::new(&RedisSettings {
        timeout_ms,
        reconnect_min_ms: 50,
        reconnect_max_ms: 200,
        ..RedisSettings::from_url(url)
    })
    .expect("valid settings")
}

async fn recv(messages: &mut switchboard_redis::Messages) -> switchboard_redis::Message {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("subscriber alive")
}

#[tokio::test]
async fn publish_and_subscribe_every_kind() {
    let server = RedisServer::start().unwrap();
    let r = redis(server.url(), 2000);
    let (sub, mut messages) = r.subscriber().unwrap();
    sub.subscribe(&["chan"]).await.unwrap();
    sub.psubscribe(&["pat*"]).await.unwrap();
    sub.ssubscribe(&["shard{1}", "shard{2}"]).await.unwrap();
    assert!(sub.is_connected());

    let p = r.publisher().unwrap();
    assert_eq!(p.publish("chan", b"one").await.unwrap(), 1);
    let m = recv(&mut messages).await;
    assert_eq!(
        (m.kind, m.channel.as_slice(), m.payload.as_slice()),
        (SubscriptionKind::Channel, &b"chan"[..], &b"one"[..])
    );
    assert_eq!(p.publish("pattern", b"two").await.unwrap(), 1);
    let m = recv(&mut messages).await;
    assert_eq!(m.kind, SubscriptionKind::Pattern);
    assert_eq!(m.pattern.as_deref(), Some(&b"pat*"[..]));
    assert_eq!(p.spublish("shard{2}", b"three").await.unwrap(), 1);
    let m = recv(&mut messages).await;
    assert_eq!(
        (m.kind, m.channel.as_slice()),
        (SubscriptionKind::Shard, &b"shard{2}"[..])
    );

    let counts = p
        .publish_batch(&[
            Publication {
                kind: PublishKind::Classic,
                channel: b"chan",
                payload: b"b1",
            },
            Publication {
                kind: PublishKind::Classic,
                channel: b"nobody",
                payload: b"b2",
            },
            Publication {
                kind: PublishKind::Sharded,
                channel: b"shard{1}",
                payload: b"b3",
            },
        ])
        .await
        .unwrap();
    assert_eq!(counts, vec![1, 0, 1]);
    assert_eq!(recv(&mut messages).await.payload, b"b1");
    assert_eq!(recv(&mut messages).await.payload, b"b3");

    sub.unsubscribe(&["chan"]).await.unwrap();
    assert_eq!(p.publish("chan", b"gone").await.unwrap(), 0);
}

#[tokio::test]
async fn redis_down_is_a_clear_error_within_the_timeout_then_it_recovers() {
    let mut server = RedisServer::start().unwrap();
    let r = redis(server.url(), 1000);
    let p = r.publisher().unwrap();
    let (sub, mut messages) = r.subscriber().unwrap();
    sub.subscribe(&["c"]).await.unwrap();
    assert_eq!(p.publish("c", b"before").await.unwrap(), 1);
    assert_eq!(recv(&mut messages).await.payload, b"before");

    server.kill();
    let mut errors = Vec::new();
    let mut took_first = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let err = p.publish("c", b"x").await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "took {took:?}: {err}");
        assert!(err.is_unavailable(), "{err:?}");
        errors.push(err.to_string());
        took_first.push(took);
    }
    // Once Redis has been down longer than the timeout, calls fail at once,
    // naming the cause.
    let started = Instant::now();
    let err = p.publish("c", b"x").await.unwrap_err();
    let took_later = started.elapsed();
    assert!(took_later < Duration::from_millis(200), "{took_later:?}");
    assert!(
        matches!(&err, Error::Unreachable { reason, .. } if reason.contains("refused")),
        "{err:?} (earlier: {errors:?})"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("Redis at {} is unreachable", server.url())),
        "{err}"
    );

    server.restart().unwrap();
    let back = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        match p.publish("c", b"after").await {
            Ok(1) => break,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("no recovery within {WAIT:?}: {other:?}"),
        }
    }
    let publishing_again = back.elapsed();
    // The subscriber subscribed again by itself.
    loop {
        let m = recv(&mut messages).await;
        if m.payload == b"after" {
            break;
        }
    }
    assert!(sub.is_connected());
    eprintln!(
        "FIGURES Redis down (timeout 1 s, backoff 50..200 ms): publishes failed after {took_first:?} \
         ({errors:?}); once down longer than the timeout: {took_later:?} ({err}); \
         publishing again {publishing_again:?} after Redis answered PING"
    );
}

#[tokio::test]
async fn nothing_listening_fails_at_once_and_a_silent_server_times_out() {
    let r = redis(format!("redis://127.0.0.1:{}", free_port()), 2000);
    let started = Instant::now();
    let err = r.publisher().unwrap().publish("c", b"x").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = redis(format!("redis://127.0.0.1:{port}"), 500);
    let started = Instant::now();
    let err = r.publisher().unwrap().publish("c", b"x").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_sends_nothing_but_the_publish() {
    const N: u64 = 2000;
    let server = RedisServer::start().unwrap();
    let r = redis(server.url(), 5000);
    let p = r.publisher().unwrap();
    let before = server.command_calls().unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                for _ in 0..N / 32 {
                    p.publish("socket.io#/#", b"payload").await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = server.command_calls().unwrap();
    let delta = |name: &str| {
        let get = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
        get(&after) - get(&before)
    };
    assert_eq!(delta("publish"), N / 32 * 32);
    assert_eq!(delta("ping"), 0);
    // Besides the publishes: the connection's handshake (HELLO, CLIENT
    // SETINFO) once, and the harness's own INFO.
    for (name, _) in &after {
        let n = delta(name);
        match name.as_str() {
            "publish" => {}
            "hello" | "client|setinfo" => assert!(n <= 2, "{name}: {n}"),
            "info" => assert_eq!(n, 1),
            _ => assert_eq!(n, 0, "unexpected command {name} x{n}"),
        }
    }
}
