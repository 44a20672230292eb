//! The Kafka plumbing against a real broker (Tansu, or the broker named by
//! `VIGIE_TEST_BROKER` / `VIGIE_TEST_DURABLE_BROKER`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigie_kafka::{
    BatchConsumer, ConsumerConfig, EventProducer, KafkaMetrics, OutRecord, ProducerConfig,
    TopicOutcome, TopicSpec, ensure_topics, group_lag,
};
use vigie_testkit::{broker, create_topic, durable_broker, unique_name, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

fn consumer_config(topic: &str, group: &str, batch: usize) -> ConsumerConfig {
    ConsumerConfig {
        group_id: group.to_owned(),
        topics: vec![topic.to_owned()],
        batch_max_records: batch,
        batch_max_wait_ms: 200,
        session_timeout_ms: 6_000,
        max_poll_interval_ms: 10_000,
        ..ConsumerConfig::default()
    }
}

/// Produces `n` records keyed `k<i % keys>` with a header; returns the
/// number of records per partition, from the delivery reports.
async fn produce(bootstrap: &str, topic: &str, from: usize, n: usize) -> BTreeMap<i32, i64> {
    let p = EventProducer::new(
        bootstrap,
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .expect("producer");
    let keys: Vec<String> = (from..from + n).map(|i| format!("k{}", i % 13)).collect();
    let values: Vec<String> = (from..from + n).map(|i| format!("{{\"n\":{i}}}")).collect();
    let hv: Vec<String> = (from..from + n).map(|i| format!("h{i}")).collect();
    let headers: Vec<[(&str, &[u8]); 1]> =
        hv.iter().map(|h| [("vigie-test", h.as_bytes())]).collect();
    let recs = (0..n).map(|i| OutRecord {
        topic,
        key: Some(keys[i].as_bytes()),
        payload: values[i].as_bytes(),
        headers: &headers[i],
        timestamp_ms: None,
    });
    let delivered = p.send_all(recs).await.expect("all delivered");
    assert_eq!(delivered.len(), n);
    let mut per = BTreeMap::new();
    for d in delivered {
        *per.entry(d.partition).or_default() += 1;
    }
    per
}

/// Consumes and commits until `total` records were committed by this
/// member, returning the committed records' values.
async fn drain(c: &BatchConsumer, total: usize) -> Vec<vigie_kafka::Record> {
    let stop = CancellationToken::new();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while got.len() < total {
            let b = c
                .next_batch(&stop)
                .await
                .expect("batch")
                .expect("not shut down");
            c.commit(&b).expect("commit");
            got.extend(b.records);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("consumed {} of {total} before the deadline", got.len()));
    got
}

#[tokio::test]
async fn records_round_trip_with_keys_and_headers() {
    let b = broker();
    let topic = unique_name("roundtrip");
    create_topic(&b.bootstrap, &topic, 3).await;
    produce(&b.bootstrap, &topic, 0, 300).await;

    let c = BatchConsumer::new(
        &b.bootstrap,
        consumer_config(&topic, &unique_name("g"), 100),
        KafkaMetrics::unregistered(),
    )
    .expect("consumer");
    let got = drain(&c, 300).await;
    c.close().await;

    let mut seen = BTreeSet::new();
    for r in &got {
        let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
        let i = v["n"].as_u64().unwrap() as usize;
        assert!(seen.insert(i), "record {i} delivered twice");
        assert_eq!(r.key.as_deref(), Some(format!("k{}", i % 13).as_bytes()));
        assert_eq!(r.header("vigie-test"), Some(format!("h{i}").as_bytes()));
    }
    assert_eq!(seen, (0..300).collect());
    // Same key, same partition: ordering per key holds.
    let mut by_key: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    for r in &got {
        by_key
            .entry(r.key.clone().unwrap())
            .or_default()
            .insert(r.partition);
    }
    assert!(
        by_key.values().all(|ps| ps.len() == 1),
        "a key spread over partitions"
    );
}

#[tokio::test]
async fn restart_resumes_at_the_committed_offset() {
    // Resuming mid-batch: see the memory-engine gap in docs/tansu.md.
    let b = durable_broker();
    let topic = unique_name("resume");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 1).await;
    produce(&b.bootstrap, &topic, 0, 250).await;

    // First run: one batch of 100, committed, then stop.
    let c = BatchConsumer::new(
        &b.bootstrap,
        consumer_config(&topic, &group, 100),
        KafkaMetrics::unregistered(),
    )
    .unwrap();
    let first = drain(&c, 100).await;
    c.close().await;
    assert_eq!(first.len(), 100);
    let last = first.iter().map(|r| r.offset).max().unwrap();

    // Second run: starts exactly after the last committed record.
    let c = BatchConsumer::new(
        &b.bootstrap,
        consumer_config(&topic, &group, 1000),
        KafkaMetrics::unregistered(),
    )
    .unwrap();
    let second = drain(&c, 150).await;
    c.close().await;
    assert_eq!(second.first().unwrap().offset, last + 1, "resume point");
    let all: BTreeSet<i64> = first.iter().chain(&second).map(|r| r.offset).collect();
    assert_eq!(all.len(), 250, "no record lost or repeated");
}

#[tokio::test]
async fn two_members_split_partitions_and_a_rebalance_loses_nothing() {
    // A new owner resumes from a committed offset inside a record batch,
    // which Tansu's memory engine cannot serve (docs/tansu.md).
    let b = durable_broker();
    let topic = unique_name("split");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 4).await;
    produce(&b.bootstrap, &topic, 0, 400).await;

    // Each member "applies" a batch by recording its coordinates, then commits.
    // (partition, offset, member) of every record applied.
    type Applied = Vec<(i32, i64, &'static str)>;
    let applied: Arc<Mutex<Applied>> = Arc::default();
    let stop = CancellationToken::new();
    let run = |name: &'static str| {
        let applied = applied.clone();
        let stop = stop.clone();
        let c = Arc::new(
            BatchConsumer::new(
                &b.bootstrap,
                consumer_config(&topic, &group, 50),
                KafkaMetrics::unregistered(),
            )
            .unwrap(),
        );
        let member = c.clone();
        let task = tokio::spawn(async move {
            while let Some(batch) = c.next_batch(&stop).await.unwrap() {
                {
                    let mut a = applied.lock().unwrap();
                    a.extend(batch.records.iter().map(|r| (r.partition, r.offset, name)));
                }
                c.commit(&batch).unwrap();
                if stop.is_cancelled() {
                    break;
                }
            }
            Arc::try_unwrap(c).expect("sole owner").close().await;
        });
        (member, task)
    };
    let (ma, a) = run("a");
    wait_for("member a to apply the first 400 records", DEADLINE, || {
        let n = applied.lock().unwrap().len();
        async move { (n >= 400).then_some(()) }
    })
    .await;
    let (mb, bm) = run("b");
    wait_for(
        "the group to give both members partitions",
        DEADLINE,
        || {
            let both = !ma.assigned().is_empty() && !mb.assigned().is_empty();
            async move { both.then_some(()) }
        },
    )
    .await;
    let (pa, pb) = (ma.assigned(), mb.assigned());
    assert!(
        pa.is_disjoint(&pb),
        "a partition owned twice: {pa:?} {pb:?}"
    );
    assert_eq!(pa.len() + pb.len(), 4, "every partition owned");
    drop((ma, mb));
    // Produce more after the rebalance, then wait for every record.
    produce(&b.bootstrap, &topic, 400, 400).await;
    wait_for("both members to apply all 800 records", DEADLINE, || {
        let n = applied.lock().unwrap().len();
        async move { (n >= 800).then_some(()) }
    })
    .await;
    stop.cancel();
    a.await.unwrap();
    bm.await.unwrap();

    let applied = applied.lock().unwrap().clone();
    let unique: BTreeSet<(i32, i64)> = applied.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(unique.len(), 800, "every record applied");
    assert_eq!(applied.len(), 800, "no record applied twice");
    assert!(
        applied.iter().any(|(_, _, n)| *n == "b"),
        "the second member applied records"
    );
}

#[tokio::test]
async fn lag_per_partition_equals_produced_minus_committed() {
    // The memory engine of Tansu 0.6 reports a wrong high watermark
    // (docs/tansu.md); the durable broker reports it right.
    let b = durable_broker();
    let topic = unique_name("lag");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 3).await;
    let produced = produce(&b.bootstrap, &topic, 0, 120).await;

    let metrics = KafkaMetrics::unregistered();
    let c = BatchConsumer::new(
        &b.bootstrap,
        consumer_config(&topic, &group, 25),
        metrics.clone(),
    )
    .unwrap();
    let got = drain(&c, 40).await;
    c.close().await;
    let mut consumed: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &got {
        *consumed.entry(r.partition).or_default() += 1;
    }

    let lags = group_lag(
        &b.bootstrap,
        &group,
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .await
    .expect("lag");
    assert_eq!(lags.len(), 3);
    for l in &lags {
        let expected = produced.get(&l.partition).copied().unwrap_or(0)
            - consumed.get(&l.partition).copied().unwrap_or(0);
        assert_eq!(l.lag, expected, "partition {} lag", l.partition);
    }
    vigie_kafka::lag::export(&metrics, &group, &lags);
    let total: i64 = lags.iter().map(|l| l.lag).sum();
    let gauge: i64 = (0..3)
        .map(|p| {
            metrics
                .lag
                .with_label_values(&[&group, &topic, &p.to_string()])
                .get()
        })
        .sum();
    assert_eq!(gauge, total);
    assert_eq!(total, 120 - got.len() as i64);
}

#[tokio::test]
async fn ensure_topics_is_idempotent_and_creates_dlq_twins() {
    let b = broker();
    let name = unique_name("health.case");
    let specs = vec![TopicSpec::new(&name, 2)];
    let first = ensure_topics(&b.bootstrap, &specs).await.expect("create");
    assert_eq!(
        first.into_iter().collect::<BTreeMap<_, _>>(),
        BTreeMap::from([
            (name.clone(), TopicOutcome::Created),
            (format!("{name}.dlq"), TopicOutcome::Created)
        ])
    );
    let again = ensure_topics(&b.bootstrap, &specs).await.expect("again");
    assert!(
        again.iter().all(|(_, o)| *o == TopicOutcome::Existed),
        "{again:?}"
    );

    let bad = ensure_topics(&b.bootstrap, &[TopicSpec::new(unique_name("x"), 0)]).await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("partitions must be at least 1")
    );
}
