//! Cluster: PUBLISH and SPUBLISH reach subscribers across a 3-master
//! cluster, batches are split by slot, and everything keeps working after
//! the slot of a channel migrates to another master, or after the master
//! owning it is killed and its replica takes over.

use std::time::{Duration, Instant};

use switchboard_redis::{
    Message, Messages, Mode, Publication, PublishKind, Redis, RedisSettings, SubscriptionKind,
    slot::slot,
};
use switchboard_testkit::cluster::RedisCluster;

const WAIT: Duration = Duration::from_secs(10);

async fn recv(messages: &mut Messages) -> Message {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("subscriber alive")
}

/// Publishes `payload` until one subscriber counts it (a subscription that
/// is being moved to a new node may miss the first attempts), and returns
/// the message received.
async fn publish_until_received(
    publish: impl AsyncFn() -> u64,
    messages: &mut Messages,
    payload: &[u8],
) -> Message {
    let deadline = Instant::now() + WAIT;
    loop {
        if publish().await == 1 {
            loop {
                let m = recv(messages).await;
                if m.payload == payload {
                    return m;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no subscriber counted {payload:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_spublish_reach_subscribers_across_a_slot_migration() {
    let cluster = RedisCluster::start(3, 0).expect("cluster");
    let redis = Redis::new(&RedisSettings {
        mode: Mode::Cluster,
        // One seed is enough: the rest is discovered.
        nodes: cluster.addrs()[..1].to_vec(),
        timeout_ms: 5000,
        ..RedisSettings::default()
    })
    .unwrap();
    let publisher = redis.publisher().unwrap();
    let (subscriber, mut messages) = redis.subscriber().unwrap();

    let room = "socket.io#/#{user:u1}#";
    let other = "socket.io#/#{role:admin}#";
    assert_eq!(slot(room.as_bytes()), cluster.key_slot(room).unwrap());
    subscriber.subscribe(&["socket.io#/#"]).await.unwrap();
    subscriber.ssubscribe(&[room, other]).await.unwrap();

    // Classic pub/sub: a PUBLISH on any node reaches a subscriber on any node.
    let m = publish_until_received(
        async || publisher.publish("socket.io#/#", b"classic").await.unwrap(),
        &mut messages,
        b"classic",
    )
    .await;
    assert_eq!(m.kind, SubscriptionKind::Channel);
    // Sharded: SPUBLISH is routed to the owner of the channel's slot.
    let m = publish_until_received(
        async || publisher.spublish(room, b"sharded").await.unwrap(),
        &mut messages,
        b"sharded",
    )
    .await;
    assert_eq!(
        (m.kind, m.channel.as_slice()),
        (SubscriptionKind::Shard, room.as_bytes())
    );

    // A batch over two slots (two nodes, probably) and a classic publish.
    let counts = publisher
        .publish_batch(&[
            Publication {
                kind: PublishKind::Sharded,
                channel: room.as_bytes(),
                payload: b"b1",
            },
            Publication {
                kind: PublishKind::Sharded,
                channel: other.as_bytes(),
                payload: b"b2",
            },
            Publication {
                kind: PublishKind::Classic,
                channel: b"socket.io#/#",
                payload: b"b3",
            },
            Publication {
                kind: PublishKind::Sharded,
                channel: b"nobody{x}",
                payload: b"b4",
            },
        ])
        .await
        .unwrap();
    assert_eq!(&counts[..2], &[1, 1]);
    assert_eq!(counts[3], 0);
    let mut got: Vec<Vec<u8>> = Vec::new();
    while got.len() < 3 {
        got.push(recv(&mut messages).await.payload);
    }
    got.sort();
    assert_eq!(got, vec![b"b1".to_vec(), b"b2".to_vec(), b"b3".to_vec()]);

    // Move the room's slot to another master.
    let s = slot(room.as_bytes());
    let owner = cluster.slot_owner(s).unwrap();
    let target = cluster.other_master(owner).unwrap();
    tokio::task::block_in_place(|| cluster.migrate_slot(s, target)).unwrap();
    assert_eq!(cluster.slot_owner(s).unwrap(), target);
    let migrated = Instant::now();

    // The publisher follows MOVED; the sharded subscription moved with the slot.
    let m = publish_until_received(
        async || publisher.spublish(room, b"after migration").await.unwrap(),
        &mut messages,
        b"after migration",
    )
    .await;
    assert_eq!(m.kind, SubscriptionKind::Shard);
    eprintln!(
        "FIGURES cluster: SPUBLISH reached the moved subscription {:?} after every node named the new owner",
        migrated.elapsed()
    );
    // It moved: subscribed on the new owner, not on the old one.
    let shard_subscribers = |port: u16| {
        cluster
            .node(port)
            .unwrap()
            .command(&["PUBSUB", "SHARDNUMSUB", room])
            .unwrap()
            .as_array()
            .unwrap()[1]
            .as_int()
            .unwrap()
    };
    assert_eq!(shard_subscribers(target), 1);
    assert_eq!(shard_subscribers(owner), 0);
    publish_until_received(
        async || {
            publisher
                .publish("socket.io#/#", b"classic after")
                .await
                .unwrap()
        },
        &mut messages,
        b"classic after",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_subscriptions_follow_a_master_failover() {
    let mut cluster = RedisCluster::start(3, 1).expect("cluster with replicas");
    let redis = Redis::new(&RedisSettings {
        mode: Mode::Cluster,
        nodes: cluster.addrs(),
        timeout_ms: 2000,
        ..RedisSettings::default()
    })
    .unwrap();
    let publisher = redis.publisher().unwrap();
    let (subscriber, mut messages) = redis.subscriber().unwrap();
    let room = "socket.io#/#role:admin#";
    subscriber.ssubscribe(&[room]).await.unwrap();
    publish_until_received(
        async || publisher.spublish(room, b"before").await.unwrap_or(0),
        &mut messages,
        b"before",
    )
    .await;

    // Kill the master owning the channel's slot; its replica takes over.
    let s = slot(room.as_bytes());
    let owner = cluster.slot_owner(s).unwrap();
    cluster.kill_node(owner).unwrap();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    loop {
        // Publishes fail or count nobody until the subscription is back on
        // the promoted replica.
        if publisher.spublish(room, b"after").await.unwrap_or(0) == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shard subscription never came back after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        if recv(&mut messages).await.payload == b"after" {
            break;
        }
    }
    eprintln!(
        "FIGURES cluster failover: SPUBLISH reached the shard subscriber again {:?} after its master was killed (cluster-node-timeout 3 s)",
        killed.elapsed()
    );
    assert_ne!(
        tokio::task::block_in_place(|| cluster.slot_owner(s)).unwrap(),
        owner,
        "the slot has a new owner"
    );
}
