//! Against a real `redis-server` started on a free port (never the shared one on 6379).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, PublishError};
use switchboard_testkit::{net::free_port, redis::RedisServer};

#[tokio::test]
async fn publish_reaches_a_subscriber_then_fails_fast_when_redis_dies() {
    let mut server = RedisServer::start().expect("redis-server");
    let client = redis::Client::open(server.url()).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe("socket.io#/#role:admin#").await.unwrap();
    sub.psubscribe("socket.io#/#*").await.unwrap();

    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: server.url(),
        publish_timeout: Duration::from_millis(1500),
        ..Default::default()
    })
    .unwrap();
    b.ping().await.unwrap();

    let op = b.to_role("admin");
    let expected = op
        .encode("ticket_updated", &serde_json::json!({"id": 7}))
        .unwrap();
    let delivery = op
        .emit("ticket_updated", &serde_json::json!({"id": 7}))
        .await
        .unwrap();
    assert_eq!(delivery.channel, "socket.io#/#role:admin#");
    // One SUBSCRIBE and one matching PSUBSCRIBE on the same connection count twice in Redis.
    assert_eq!(delivery.subscribers, 2);
    assert!(delivery.reached_anyone());

    let mut messages = sub.on_message();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("message within 5 s")
            .expect("stream open");
        assert_eq!(msg.get_channel_name(), "socket.io#/#role:admin#");
        assert_eq!(msg.get_payload_bytes(), expected.payload.as_slice());
    }
    drop(messages);
    drop(sub);

    // Nobody listens on the request channel: delivered to 0, not an error.
    let d = b.to_user(42).disconnect_sockets(true).await.unwrap();
    assert_eq!(d.channel, "socket.io-request#/#");
    assert_eq!(d.subscribers, 0);

    // Batch: one round trip, one delivery per message.
    let mut batch = b.pipeline();
    batch.emit(&b.to_role("admin"), "a", &1).unwrap();
    batch.emit(&b.to_user(1), "b", &()).unwrap();
    assert_eq!(batch.len(), 2);
    let ds = batch.send().await.unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[1].channel, "socket.io#/#user:1#");

    server.kill();
    for _ in 0..2 {
        let started = Instant::now();
        let err = b.broadcast("after_death", &()).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains(&server.url()), "{err}");
    }

    // Back on the same port: the same broadcaster publishes again by itself.
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b.broadcast("after_restart", &()).await {
            Ok(d) => {
                assert_eq!(d.subscribers, 0);
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "no recovery 10 s after Redis came back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue #18: the only command a publish sends is its PUBLISH (no PING per
/// publish, nothing else), concurrent publishes sharing the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_sends_one_publish_and_nothing_else() {
    const TASKS: u64 = 32;
    const PER_TASK: u64 = 100;
    let server = RedisServer::start().expect("redis-server");
    let b = Broadcaster::connect(server.url()).unwrap();
    let before = server.command_calls().unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    b.to_user(t).emit("n", &i).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut batch = b.pipeline();
    for i in 0..10 {
        batch.emit(&b.to_role("admin"), "batch", &i).unwrap();
    }
    assert_eq!(batch.send().await.unwrap().len(), 10);
    let after = server.command_calls().unwrap();
    let calls =
        |v: &[(String, u64)], name: &str| v.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    for (name, total) in &after {
        let delta = total - calls(&before, name);
        match name.as_str() {
            "publish" => assert_eq!(delta, TASKS * PER_TASK + 10),
            // The connection's handshake, once; and this test's own INFO.
            "hello" | "client|setinfo" => assert!(delta <= 2, "{name} x{delta}"),
            "info" => assert_eq!(delta, 1),
            other => assert_eq!(delta, 0, "{other} x{delta} besides the publishes"),
        }
    }
}

#[tokio::test]
async fn exactly_one_subscriber_counts_one() {
    let server = RedisServer::start().expect("redis-server");
    let client = redis::Client::open(server.url()).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe("socket.io#/#").await.unwrap();
    let b = Broadcaster::connect(server.url()).unwrap();
    let d = b.broadcast("hello", &"world").await.unwrap();
    assert_eq!(d.subscribers, 1);
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let decoded = switchboard_wire::decode_broadcast(msg.get_payload_bytes()).unwrap();
    assert_eq!(decoded.uid, "emitter");
    assert_eq!(
        switchboard_wire::encode_event("/", &decoded.packet.data, None)
            .unwrap()
            .text,
        r#"2["hello","world"]"#
    );
}

#[tokio::test]
async fn unreachable_redis_is_an_error_not_a_hang() {
    // Nothing listens on this port.
    let port = free_port();
    let b = Broadcaster::connect(format!("redis://127.0.0.1:{port}")).unwrap();
    let started = Instant::now();
    let err = b.broadcast("x", &()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.to_string().contains("unreachable") || err.to_string().contains("timed out"));
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts TCP connections but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: format!("redis://127.0.0.1:{port}"),
        publish_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = b.broadcast("x", &()).await.unwrap_err();
    assert!(matches!(err, PublishError::Timeout { .. }), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(listener);
}
