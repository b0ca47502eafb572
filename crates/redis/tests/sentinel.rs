//! Sentinel: the publisher and subscriber find the master through the
//! sentinels and follow a failover (the master SIGKILLed) under a steady
//! publish rate, without a restart.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use switchboard_redis::{Mode, Redis, RedisSettings};
use switchboard_testkit::sentinel::{MASTER_NAME, SentinelSet};

/// One publish every this often, each on its own task (open loop), so that
/// publishes keep starting while the master is gone.
const CADENCE: Duration = Duration::from_millis(10);

struct Outcome {
    seq: u64,
    started: Instant,
    finished: Instant,
    result: Result<u64, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_a_steady_publish_rate() {
    let mut set = SentinelSet::start().expect("sentinel set");
    let settings = RedisSettings {
        mode: Mode::Sentinel,
        sentinels: set.sentinel_addrs(),
        master_name: Some(MASTER_NAME.into()),
        // Longer than a failover: a publish started while there is no
        // master waits for the new one instead of failing.
        timeout_ms: 10_000,
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..RedisSettings::default()
    };
    let redis = Redis::new(&settings).unwrap();
    assert!(
        redis.describe().contains("via sentinels"),
        "{}",
        redis.describe()
    );
    let publisher = redis.publisher().unwrap();
    let (subscriber, mut messages) = redis.subscriber().unwrap();
    subscriber.subscribe(&["events"]).await.unwrap();

    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let collector = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(m) = messages.recv().await {
                let seq: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap();
                received.lock().unwrap().push(seq);
            }
        })
    };

    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (outcomes, stop, publisher) = (outcomes.clone(), stop.clone(), publisher.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CADENCE);
            let mut tasks = Vec::new();
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticker.tick().await;
                seq += 1;
                let (outcomes, publisher) = (outcomes.clone(), publisher.clone());
                tasks.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let result = publisher
                        .publish("events", seq.to_string())
                        .await
                        .map_err(|e| e.to_string());
                    outcomes.lock().unwrap().push(Outcome {
                        seq,
                        started,
                        finished: Instant::now(),
                        result,
                    });
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_master = set.master_port().unwrap();
    let killed_at = Instant::now();
    set.kill_master().unwrap();
    let new_master =
        tokio::task::block_in_place(|| set.wait_for_failover(old_master, Duration::from_secs(60)))
            .expect("failover");
    let failover_took = killed_at.elapsed();
    assert_ne!(new_master, old_master);

    // Keep publishing until publishes have succeeded for two seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resumed = outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.started > killed_at && o.result.is_ok())
            .map(|o| o.finished)
            .min();
        if resumed.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not resume within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.await.unwrap();

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    // Only what was in flight when the master died failed: publishes started
    // before the kill, or in the instant before the client saw the
    // connection drop.
    for o in &failed {
        assert!(
            o.started < killed_at + Duration::from_millis(100),
            "publish #{} started {:?} after the kill and failed: {:?}",
            o.seq,
            o.started - killed_at,
            o.result
        );
    }
    let resumed_at = outcomes
        .iter()
        .filter(|o| o.started > killed_at && o.result.is_ok())
        .map(|o| o.finished)
        .min()
        .unwrap();
    let resumed_after = resumed_at - killed_at;
    let slowest = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.finished - o.started)
        .max()
        .unwrap();
    assert!(
        resumed_after < Duration::from_secs(30),
        "resumed after {resumed_after:?}"
    );

    // Delivery resumed too: the subscriber followed the failover, and every
    // publish Redis counted one receiver for reached it, once.
    let counted: BTreeSet<u64> = outcomes
        .iter()
        .filter(|o| o.result == Ok(1))
        .map(|o| o.seq)
        .collect();
    let last_counted = *counted.iter().max().unwrap();
    let wait = Instant::now() + Duration::from_secs(10);
    while !received.lock().unwrap().contains(&last_counted) && Instant::now() < wait {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().unwrap().clone();
    let got_set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(got.len(), got_set.len(), "duplicates delivered");
    // A message Redis accepted in the instant the master died may still have
    // been in its output buffer, or unread in the subscriber's socket, when
    // both went away: lost like anything in flight. Only those may be missing.
    let in_flight = |o: &Outcome| {
        o.finished + Duration::from_millis(100) >= killed_at
            && o.finished <= killed_at + Duration::from_millis(100)
    };
    let missing: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| counted.contains(&o.seq) && !got_set.contains(&o.seq))
        .collect();
    for o in &missing {
        assert!(
            in_flight(o),
            "publish #{} counted by Redis but never received, finished {:?} after the kill",
            o.seq,
            o.finished.checked_duration_since(killed_at)
        );
    }
    let delivered_after = outcomes
        .iter()
        .filter(|o| o.started > killed_at && o.result == Ok(1))
        .map(|o| o.finished - killed_at)
        .min()
        .expect("a publish after the failover reached the subscriber");
    let lost_for_subscriber = outcomes.iter().filter(|o| o.result == Ok(0)).count();

    eprintln!(
        "FIGURES sentinel failover: {} publishes at one per {:?}; master killed, sentinels named the new master after {:.2} s; \
         publishing resumed after {:.2} s (first success of a publish started after the kill); \
         {} publishes failed (all in flight at the kill); slowest successful publish {:.2} s; \
         subscriber receiving again after {:.2} s; {} publishes reached no subscriber (published before it resubscribed); \
         {} counted by Redis but lost in flight at the kill",
        outcomes.len(),
        CADENCE,
        failover_took.as_secs_f64(),
        resumed_after.as_secs_f64(),
        failed.len(),
        slowest.as_secs_f64(),
        delivered_after.as_secs_f64(),
        lost_for_subscriber,
        missing.len(),
    );
    drop(subscriber);
    collector.abort();
}
