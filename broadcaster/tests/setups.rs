//! The broadcaster and the `switchboard` CLI in the Redis setups teams run:
//! TLS with an ACL user (and mutual TLS), Sentinel with a failover, Cluster
//! with classic and sharded pub/sub. Real `redis-server` processes from the
//! testkit; the subscriber is `switchboard-redis`'s, as a gateway's will be.

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use switchboard_broadcaster::{Broadcaster, BroadcasterConfig, Mode, PublishError, RedisSettings};
use switchboard_redis::{Message, Messages, Redis};
use switchboard_testkit::{
    cluster::RedisCluster,
    redis::{RedisOptions, RedisServer},
    sentinel::{MASTER_NAME, SentinelSet},
    tls::TestPki,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(10);

/// The least-privilege publishing user the README suggests.
const PUBLISHER: &str =
    "publisher on >publisher-secret resetchannels &socket.io* -@all +publish +spublish";
const SUBSCRIBER: &str =
    "gateway on >gateway-secret resetchannels allchannels -@all +subscribe +psubscribe";

async fn next_message(messages: &mut Messages) -> Message {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("subscriber alive")
}

/// Runs the CLI with `args` and extra environment variables.
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("SWITCHBOARD_REDIS_URL")
        .env_remove("SWITCHBOARD_REDIS__PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run switchboard")
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

fn tls_settings(pki: &TestPki) -> RedisSettings {
    RedisSettings {
        tls_ca_file: Some(pki.ca_file()),
        tls_cert_file: Some(pki.client_cert_file()),
        tls_key_file: Some(pki.client_key_file()),
        username: Some("publisher".into()),
        password: Some("publisher-secret".into()),
        ..RedisSettings::default()
    }
}

/// The error of a broadcast to `server` with `redis`, which must fail.
async fn broadcast_error(server: &RedisServer, redis: RedisSettings) -> PublishError {
    Broadcaster::from_config(BroadcasterConfig {
        redis_url: server.url(),
        redis,
        ..Default::default()
    })
    .expect("valid settings")
    .broadcast("x", &())
    .await
    .expect_err("the broadcast must fail")
}

#[tokio::test]
async fn tls_with_an_acl_user_broadcaster_and_cli_deliver_and_refuse_clearly() {
    let pki = TestPki::generate().unwrap();
    let server = RedisServer::start_with(
        RedisOptions::default()
            .tls(&pki, true)
            .user(PUBLISHER)
            .user(SUBSCRIBER),
    )
    .unwrap();
    let gateway = Redis::new(&RedisSettings {
        url: Some(server.url()),
        username: Some("gateway".into()),
        password: Some("gateway-secret".into()),
        ..tls_settings(&pki)
    })
    .unwrap();
    let (sub, mut messages) = gateway.subscriber().unwrap();
    sub.psubscribe(&["socket.io#/#*"]).await.unwrap();

    // The library.
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: server.url(),
        redis: tls_settings(&pki),
        ..Default::default()
    })
    .unwrap();
    b.ping().await.expect_err("the publisher user may not PING");
    let expected = b.to_role("admin").encode("ticket_updated", &7).unwrap();
    let d = b.to_role("admin").emit("ticket_updated", &7).await.unwrap();
    assert_eq!(d.subscribers, 1);
    let m = next_message(&mut messages).await;
    assert_eq!(m.channel, b"socket.io#/#role:admin#");
    assert_eq!(m.payload, expected.payload);

    // The CLI: URL with the user, password from the environment, TLS files as flags.
    let url = server.url().replace("rediss://", "rediss://publisher@");
    let (ca, cert, key, other_ca) = (
        path(&pki.ca_file()),
        path(&pki.client_cert_file()),
        path(&pki.client_key_file()),
        path(&pki.other_ca_file()),
    );
    let mut args = vec!["--redis", url.as_str()];
    args.extend([
        "--tls-ca-file",
        &ca,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    args.extend(["publish", "--user", "42", "--event", "hello", "--data", "1"]);
    let out = cli(
        &args,
        &[("SWITCHBOARD_REDIS__PASSWORD", "publisher-secret")],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 subscriber"),
        "{out:?}"
    );
    assert_eq!(
        next_message(&mut messages).await.channel,
        b"socket.io#/#user:42#"
    );

    // Wrong password: the library and the CLI say so, without the password.
    let err = broadcast_error(
        &server,
        RedisSettings {
            password: Some("not-the-password".into()),
            ..tls_settings(&pki)
        },
    )
    .await;
    assert!(matches!(err, PublishError::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the credentials for user \"publisher\"")
            && text.contains("WRONGPASS"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    let out = cli(
        &args,
        &[("SWITCHBOARD_REDIS__PASSWORD", "not-the-password")],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WRONGPASS") && stderr.contains("--password-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // Wrong CA: the library and the CLI name the setting.
    let err = broadcast_error(
        &server,
        RedisSettings {
            tls_ca_file: Some(pki.other_ca_file()),
            ..tls_settings(&pki)
        },
    )
    .await;
    assert!(matches!(err, PublishError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the server's certificate is not signed by a CA in redis.tls_ca_file"),
        "{err}"
    );
    let mut wrong_ca = args.clone();
    wrong_ca[3] = &other_ca;
    let out = cli(
        &wrong_ca,
        &[("SWITCHBOARD_REDIS__PASSWORD", "publisher-secret")],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not signed by a CA") && stderr.contains("Check --tls-ca-file"),
        "{stderr}"
    );

    // An unreadable CA file is a usage error naming the flag, before any I/O.
    let mut missing = args.clone();
    missing[3] = "/nonexistent/ca.pem";
    let out = cli(
        &missing,
        &[("SWITCHBOARD_REDIS__PASSWORD", "publisher-secret")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid --tls-ca-file (redis.tls_ca_file): cannot read /nonexistent/ca.pem"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_broadcaster_and_cli_follow_a_failover() {
    let mut set = SentinelSet::start().unwrap();
    let sentinels = set.sentinel_addrs();
    let redis = RedisSettings {
        mode: Mode::Sentinel,
        sentinels: sentinels.clone(),
        master_name: Some(MASTER_NAME.into()),
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..RedisSettings::default()
    };
    let (sub, mut messages) = Redis::new(&redis).unwrap().subscriber().unwrap();
    sub.subscribe(&["socket.io#/#"]).await.unwrap();
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis: redis.clone(),
        // Longer than a failover: a publish waits for the new master.
        publish_timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(b.broadcast("before", &()).await.unwrap().subscribers, 1);
    next_message(&mut messages).await;

    let sentinel_args = |extra: &[&str]| {
        let mut args = vec![
            "--mode".to_string(),
            "sentinel".into(),
            "--master-name".into(),
            MASTER_NAME.into(),
        ];
        args.extend(
            sentinels
                .iter()
                .flat_map(|s| ["--sentinel".to_string(), s.clone()]),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = sentinel_args(&[
        "--timeout-ms",
        "20000",
        "publish",
        "--event",
        "cli",
        "--require-delivery",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&args, &[]);
    assert!(out.status.success(), "{out:?}");
    next_message(&mut messages).await;

    let old = set.kill_master().unwrap();
    let killed = Instant::now();
    // Started right after the kill: waits for the new master, then
    // succeeds. Unless it went out on the old master's connection before
    // the broadcaster saw that connection close: then it fails at once
    // with the connection lost, and is not retried (it may have run, and
    // pub/sub is at most once). The publish after that failure starts
    // with the loss known, and must wait for the new master.
    let d = match b.broadcast("during", &()).await {
        Ok(d) => d,
        Err(e @ PublishError::Unreachable { .. }) if killed.elapsed() < Duration::from_secs(1) => {
            eprintln!("the first publish was on the old connection: {e}");
            b.broadcast("during", &())
                .await
                .expect("published after the failover")
        }
        Err(e) => panic!("published after the failover: {e:?}"),
    };
    let took = killed.elapsed();
    let new = set.master_port().unwrap();
    assert_ne!(new, old);
    eprintln!("FIGURES broadcaster publish started at the kill completed after {took:?}");
    // The subscriber may still be resubscribing: keep publishing until it gets one.
    let deadline = Instant::now() + WAIT;
    let mut delivered = d.subscribers;
    while delivered == 0 {
        assert!(Instant::now() < deadline, "the subscriber never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
        delivered = b.broadcast("during", &()).await.unwrap().subscribers;
    }
    let m = next_message(&mut messages).await;
    assert_eq!(m.channel, b"socket.io#/#");
    let out = cli(&args, &[]);
    assert!(out.status.success(), "after the failover: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_broadcaster_and_cli_publish_and_spublish() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let redis = RedisSettings {
        mode: Mode::Cluster,
        nodes: cluster.addrs(),
        ..RedisSettings::default()
    };
    let (sub, mut messages) = Redis::new(&redis).unwrap().subscriber().unwrap();
    sub.subscribe(&["socket.io#/#"]).await.unwrap();
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis,
        ..Default::default()
    })
    .unwrap();
    let op = b.to_role("admin");
    let expected = op.encode("ticket_updated", &7).unwrap();
    sub.ssubscribe(&[expected.channel.as_str()]).await.unwrap();

    // Classic: the room's broadcast goes to the namespace channel everyone listens on.
    let d = b.broadcast("hello", &()).await.unwrap();
    assert_eq!(d.subscribers, 1);
    assert_eq!(next_message(&mut messages).await.channel, b"socket.io#/#");
    // Sharded: SPUBLISH on the room's channel reaches its shard's subscriber.
    let d = b.spublish(expected.clone()).await.unwrap();
    assert_eq!(d.subscribers, 1);
    let m = next_message(&mut messages).await;
    assert_eq!(
        (m.channel, m.payload),
        (expected.channel.into_bytes(), expected.payload)
    );
    // A batch over several slots.
    let ds = b
        .spublish_many([
            b.to_role("admin").encode("a", &1).unwrap(),
            b.to_user(1).encode("b", &2).unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(
        ds.iter().map(|d| d.subscribers).collect::<Vec<_>>(),
        vec![1, 0]
    );
    next_message(&mut messages).await;

    // The CLI, nodes from the environment.
    let nodes = cluster.addrs()[..1].join(",");
    let out = cli(
        &[
            "--mode",
            "cluster",
            "publish",
            "--event",
            "from_cli",
            "--require-delivery",
        ],
        &[("SWITCHBOARD_REDIS__NODES", &nodes)],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(next_message(&mut messages).await.channel, b"socket.io#/#");
}
