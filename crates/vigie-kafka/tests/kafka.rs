//! The Kafka plumbing against a real broker (Apache Kafka, or the broker
//! named by `VIGIE_TEST_BROKER`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use vigie_core::{Case, Envelope, Event, SchemaRegistry};
use vigie_kafka::{
    BatchConsumer, ConsumerConfig, EventProducer, KafkaError, KafkaMetrics, OutRecord,
    ProducerConfig, TopicOutcome, TopicSpec, ensure_topics, group_lag,
};
use vigie_testkit::{broker, create_topic, unique_name, wait_for};

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
        &vigie_kafka::Cluster::new(bootstrap),
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .expect("producer");
    let keys: Vec<String> = (from..from + n).map(|i| format!("k{}", i % 13)).collect();
    let values: Vec<String> = (from..from + n).map(|i| format!("{{\"n\":{i}}}")).collect();
    let hv: Vec<String> = (from..from + n).map(|i| format!("h{i}")).collect();
    type Header<'a> = (&'a str, Option<&'a [u8]>);
    let headers: Vec<[Header<'_>; 1]> = hv
        .iter()
        .map(|h| [("vigie-test", Some(h.as_bytes()))])
        .collect();
    let recs = (0..n).map(|i| OutRecord {
        partition: None,
        topic,
        key: Some(keys[i].as_bytes()),
        payload: Some(values[i].as_bytes()),
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
        &vigie_kafka::Cluster::new(&b.bootstrap),
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

/// On a live stream a batch closes once the records stop coming, not at
/// the end of its window: with a one-minute window, each of three bursts
/// is handed over, whole, well within the test's 30 s deadline.
#[tokio::test]
async fn a_batch_closes_when_the_stream_pauses_not_at_the_end_of_its_window() {
    let b = broker();
    let topic = unique_name("linger");
    create_topic(&b.bootstrap, &topic, 1).await;
    let c = BatchConsumer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        ConsumerConfig {
            batch_max_wait_ms: 60_000,
            batch_linger_ms: 50,
            ..consumer_config(&topic, &unique_name("g"), 1_000)
        },
        KafkaMetrics::unregistered(),
    )
    .expect("consumer");
    let stop = CancellationToken::new();
    for burst in 0..3 {
        produce(&b.bootstrap, &topic, burst * 40, 40).await;
        let mut got = Vec::new();
        while got.len() < 40 {
            let batch = tokio::time::timeout(Duration::from_secs(30), c.next_batch(&stop))
                .await
                .unwrap_or_else(|_| {
                    panic!("burst {burst}: no batch closed in 30 s with a one-minute window")
                })
                .expect("batch")
                .expect("not shut down");
            c.commit(&batch).expect("commit");
            got.extend(batch.records);
        }
        let values: BTreeSet<usize> = got.iter().map(split_value).collect();
        assert_eq!(
            values,
            (burst * 40..burst * 40 + 40).collect(),
            "burst {burst}: a batch held other records than the burst's"
        );
    }
    c.close().await;
}

#[tokio::test]
async fn restart_resumes_at_the_committed_offset() {
    let b = broker();
    let topic = unique_name("resume");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 1).await;
    produce(&b.bootstrap, &topic, 0, 250).await;

    // First run: one batch of 100, committed, then stop.
    let c = BatchConsumer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
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
        &vigie_kafka::Cluster::new(&b.bootstrap),
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
    // A new owner resumes from a committed offset inside a record batch.
    let b = broker();
    let topic = unique_name("split");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 4).await;
    // A backlog, then a steady stream that runs until member b has committed
    // records: records are produced, fetched, applied and committed while
    // the group rebalances.
    let producer = split_producer(&b.bootstrap);
    split_send(&producer, &topic, 0, SPLIT_BACKLOG).await;
    let produced = Arc::new(std::sync::atomic::AtomicUsize::new(SPLIT_BACKLOG));
    let producing = CancellationToken::new();
    let stream = tokio::spawn(split_keep_producing(
        producer,
        topic.clone(),
        produced.clone(),
        producing.clone(),
    ));
    let produced_now = || produced.load(std::sync::atomic::Ordering::SeqCst);

    // Each member "applies" a batch, commits it, and once the commit is
    // done records the batch's values as committed by it: (value, member).
    type Committed = Vec<(usize, &'static str)>;
    let committed: Arc<Mutex<Committed>> = Arc::default();
    // The partitions each member committed on: (partition, member).
    let partitions: Arc<Mutex<BTreeSet<(i32, &'static str)>>> = Arc::default();
    let stop = CancellationToken::new();
    let run = |name: &'static str| {
        let committed = committed.clone();
        let partitions = partitions.clone();
        let stop = stop.clone();
        let c = Arc::new(
            BatchConsumer::new(
                &vigie_kafka::Cluster::new(&b.bootstrap),
                consumer_config(&topic, &group, 50),
                KafkaMetrics::unregistered(),
            )
            .unwrap(),
        );
        let member = c.clone();
        let task = tokio::spawn(async move {
            while let Some(batch) = c.next_batch(&stop).await.unwrap() {
                let values: Vec<usize> = batch.records.iter().map(split_value).collect();
                c.commit(&batch)
                    .unwrap_or_else(|e| panic!("member {name} commit: {e}"));
                committed
                    .lock()
                    .unwrap()
                    .extend(values.into_iter().map(|v| (v, name)));
                partitions
                    .lock()
                    .unwrap()
                    .extend(batch.records.iter().map(|r| (r.partition, name)));
                if stop.is_cancelled() {
                    break;
                }
            }
            Arc::try_unwrap(c).expect("sole owner").close().await;
        });
        (member, task)
    };
    let by = |name: &'static str| {
        committed
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| *m == name)
            .count()
    };

    let (ma, a) = run("a");
    // Member b joins while a is mid-stream: a has committed some of the
    // records produced so far, not all.
    wait_for(
        "member a to commit some but not all records",
        SPLIT_DEADLINE,
        || {
            let (n, p) = (by("a"), produced_now());
            async move { (n > 0 && n < p).then_some(()) }
        },
    )
    .await;
    let (mb, bm) = run("b");
    wait_for(
        "the group to give both members partitions",
        SPLIT_DEADLINE,
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
    wait_for("member b to commit records", SPLIT_DEADLINE, || {
        let n = by("b");
        async move { (n > 0).then_some(()) }
    })
    .await;
    producing.cancel();
    let total = stream.await.unwrap();
    wait_for("every record to be committed", SPLIT_DEADLINE, || {
        let n = committed
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| *v)
            .collect::<BTreeSet<_>>()
            .len();
        async move { (n >= total).then_some(()) }
    })
    .await;
    stop.cancel();
    a.await.unwrap();
    bm.await.unwrap();

    // Reconcile: every produced value committed, by one member, once.
    let committed = committed.lock().unwrap().clone();
    let mut owner: BTreeMap<usize, &str> = BTreeMap::new();
    let mut twice = Vec::new();
    for (v, m) in &committed {
        if let Some(first) = owner.insert(*v, m) {
            twice.push((*v, first, *m));
        }
    }
    assert!(
        twice.is_empty(),
        "{} records committed twice, e.g. (value, first member, second member): {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let missing: Vec<usize> = (0..total).filter(|v| !owner.contains_key(v)).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} records never committed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(owner.len(), total, "only produced values committed");
    // Both members worked, and b took over a partition a had committed
    // records of: b resumed from a's committed offset, and the checks above
    // show it neither skipped nor repeated a record there.
    assert!(by_member(&committed, "a") > 0, "member a committed records");
    let of = |member: &str| -> BTreeSet<i32> {
        partitions
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| *m == member)
            .map(|(p, _)| *p)
            .collect()
    };
    let (of_a, of_b) = (of("a"), of("b"));
    assert!(
        !of_a.is_disjoint(&of_b),
        "member b took over none of a's partitions: a committed on {of_a:?}, b on {of_b:?}"
    );
}

/// Records on the split test's topic before its first member starts...
const SPLIT_BACKLOG: usize = 2_000;
/// ...then `SPLIT_CHUNK` more every `SPLIT_PACE`: a steady stream (about
/// 500 a second), which paces the load and synchronises nothing.
const SPLIT_CHUNK: usize = 10;
const SPLIT_PACE: Duration = Duration::from_millis(20);
/// Bound on each wait of the split test (generous: a loaded machine).
const SPLIT_DEADLINE: Duration = Duration::from_secs(180);

/// Records of `committed` that `member` committed.
fn by_member(committed: &[(usize, &str)], member: &str) -> usize {
    committed.iter().filter(|(_, m)| *m == member).count()
}

/// The number `n` of a record sent by [`split_send`] (`{"n":n}`).
fn split_value(r: &vigie_kafka::Record) -> usize {
    let v: serde_json::Value =
        serde_json::from_slice(r.payload.as_deref().expect("a payload")).expect("JSON");
    v["n"].as_u64().expect("a number") as usize
}

fn split_producer(bootstrap: &str) -> EventProducer {
    EventProducer::new(
        &vigie_kafka::Cluster::new(bootstrap),
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .expect("producer")
}

/// Sends records `from..from + n`, keyed `k<i % 13>`, valued `{"n":i}`,
/// without headers, and waits for every acknowledgement.
async fn split_send(p: &EventProducer, topic: &str, from: usize, n: usize) {
    let keys: Vec<String> = (from..from + n).map(|i| format!("k{}", i % 13)).collect();
    let values: Vec<String> = (from..from + n).map(|i| format!("{{\"n\":{i}}}")).collect();
    // Collected first: a lazy iterator held across the await makes the
    // future not `Send` for `tokio::spawn`.
    let recs: Vec<OutRecord<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| OutRecord {
            partition: None,
            topic,
            key: Some(k.as_bytes()),
            payload: Some(v.as_bytes()),
            headers: &[],
            timestamp_ms: None,
        })
        .collect();
    let delivered = p.send_all(recs).await.expect("all delivered");
    assert_eq!(delivered.len(), n);
}

/// Sends records numbered from `produced`, `SPLIT_CHUNK` every
/// `SPLIT_PACE`, until `stop`; `produced` counts those acknowledged.
/// Returns the number of records the topic then holds.
async fn split_keep_producing(
    p: EventProducer,
    topic: String,
    produced: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
) -> usize {
    use std::sync::atomic::Ordering::SeqCst;
    let mut pace = tokio::time::interval(SPLIT_PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        pace.tick().await;
        let next = produced.load(SeqCst);
        split_send(&p, &topic, next, SPLIT_CHUNK).await;
        produced.store(next + SPLIT_CHUNK, SeqCst);
    }
    produced.load(SeqCst)
}

#[tokio::test]
async fn lag_per_partition_equals_produced_minus_committed() {
    let b = broker();
    let topic = unique_name("lag");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 3).await;
    let produced = produce(&b.bootstrap, &topic, 0, 120).await;

    let metrics = KafkaMetrics::unregistered();
    let c = BatchConsumer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
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
        &vigie_kafka::Cluster::new(&b.bootstrap),
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
    let all: BTreeSet<_> = (0..3).map(|p| (topic.clone(), p)).collect();
    let mut exported = BTreeSet::new();
    vigie_kafka::lag::export(&metrics, &group, &lags, &all, &mut exported);
    let series = || {
        let mut out = BTreeMap::new();
        for family in prometheus::core::Collector::collect(&metrics.lag) {
            for m in family.get_metric() {
                let label = m.get_label().iter().find(|l| l.name() == "partition");
                let p: i32 = label.expect("partition label").value().parse().unwrap();
                out.insert(p, m.get_gauge().get_value() as i64);
            }
        }
        out
    };
    let total: i64 = lags.iter().map(|l| l.lag).sum();
    assert_eq!(series().values().sum::<i64>(), total);
    assert_eq!(total, 120 - got.len() as i64);

    // Partitions 1 and 2 move to another member: their series go.
    let only_0 = BTreeSet::from([(topic.clone(), 0)]);
    vigie_kafka::lag::export(&metrics, &group, &lags, &only_0, &mut exported);
    let lag_0 = lags.iter().find(|l| l.partition == 0).unwrap().lag;
    assert_eq!(series(), BTreeMap::from([(0, lag_0)]));
    assert_eq!(exported, only_0);
}

#[tokio::test]
async fn ensure_topics_is_idempotent_and_creates_dlq_twins() {
    let b = broker();
    let name = unique_name("health.case");
    let specs = vec![TopicSpec::new(&name, 2)];
    let first = ensure_topics(&vigie_kafka::Cluster::new(&b.bootstrap), &specs)
        .await
        .expect("create");
    assert_eq!(
        first.into_iter().collect::<BTreeMap<_, _>>(),
        BTreeMap::from([
            (name.clone(), TopicOutcome::Created),
            (format!("{name}.dlq"), TopicOutcome::Created)
        ])
    );
    let again = ensure_topics(&vigie_kafka::Cluster::new(&b.bootstrap), &specs)
        .await
        .expect("again");
    assert!(
        again.iter().all(|(_, o)| *o == TopicOutcome::Existed),
        "{again:?}"
    );

    let bad = ensure_topics(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &[TopicSpec::new(unique_name("x"), 0)],
    )
    .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("partitions must be at least 1")
    );
}

/// `health.case` v1 envelopes from the simulator's generator (rows differ in
/// state, so in key and partition), ingested at a time with whole
/// microseconds, which is what the envelope's timestamps keep.
fn case_envelopes(n: u64) -> Vec<Envelope<Case>> {
    let generator =
        vigie_simulator::CaseGenerator::new(vigie_simulator::CaseGenConfig::default()).unwrap();
    let at = "2026-11-28T10:00:00.123456Z".parse().unwrap();
    (0..n)
        .map(|i| vigie_simulator::case_envelope(&generator, i, at))
        .collect()
}

#[tokio::test]
async fn envelopes_round_trip_through_a_group_with_keys_headers_and_bytes_unchanged() {
    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic(&b.bootstrap, &topic, 3).await;
    let schemas = SchemaRegistry::embedded().expect("embedded schemas");

    let n = 120;
    let envelopes = case_envelopes(n as u64);
    let bytes: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| e.to_json_bytes().expect("serialise"))
        .collect();
    let keys: Vec<String> = envelopes.iter().map(Envelope::partition_key).collect();
    // Headers in a deliberate order, with a repeated name and non-UTF-8 bytes.
    let headers: Vec<Vec<(String, Vec<u8>)>> = envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                ("vigie.schema".to_owned(), b"health.case/1".to_vec()),
                ("vigie.event_id".to_owned(), e.id.to_string().into_bytes()),
                ("hop".to_owned(), b"first".to_vec()),
                ("hop".to_owned(), b"second".to_vec()),
                ("raw".to_owned(), vec![0, 0xff, 0xfe, i as u8]),
            ]
        })
        .collect();
    type Header<'a> = (&'a str, Option<&'a [u8]>);
    let borrowed: Vec<Vec<Header<'_>>> = headers
        .iter()
        .map(|hs| {
            hs.iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                .collect()
        })
        .collect();
    let p = EventProducer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .expect("producer");
    let delivered = p
        .send_all((0..n).map(|i| OutRecord {
            partition: None,
            topic: &topic,
            key: Some(keys[i].as_bytes()),
            payload: Some(&bytes[i]),
            headers: &borrowed[i],
            timestamp_ms: Some(envelopes[i].occurred_at.timestamp_millis()),
        }))
        .await
        .expect("all delivered");
    let sent_at: BTreeMap<(i32, i64), usize> = delivered
        .iter()
        .enumerate()
        .map(|(i, d)| ((d.partition, d.offset), i))
        .collect();
    assert_eq!(sent_at.len(), n, "one distinct position per record");
    let partitions: BTreeSet<i32> = delivered.iter().map(|d| d.partition).collect();
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );

    let c = BatchConsumer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        consumer_config(&topic, &unique_name("g"), 50),
        KafkaMetrics::unregistered(),
    )
    .expect("consumer");
    let got = drain(&c, n).await;
    c.close().await;

    assert_eq!(got.len(), n);
    let mut seen = BTreeSet::new();
    for r in &got {
        let i = *sent_at
            .get(&(r.partition, r.offset))
            .unwrap_or_else(|| panic!("no record sent to {}/{}", r.partition, r.offset));
        assert!(seen.insert(i), "record {i} delivered twice");
        assert_eq!(r.topic, topic);
        assert_eq!(r.key.as_deref(), Some(keys[i].as_bytes()), "record {i} key");
        let want: Vec<(String, Option<Vec<u8>>)> = headers[i]
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        assert_eq!(r.headers, want, "record {i} headers, in order");
        assert_eq!(
            r.timestamp_ms,
            Some(envelopes[i].occurred_at.timestamp_millis()),
            "record {i} timestamp"
        );
        let payload = r.payload.as_deref().expect("a value");
        assert_eq!(payload, bytes[i].as_slice(), "record {i} bytes");
        let back: Envelope<Case> = serde_json::from_slice(payload).expect("an envelope");
        assert_eq!(back, envelopes[i], "record {i} envelope");
        match schemas.parse(payload) {
            Ok(Event::Case(e)) => assert_eq!(e, envelopes[i], "record {i} validated event"),
            other => panic!("record {i} did not validate as a case: {other:?}"),
        }
    }
    assert_eq!(seen.len(), n, "every envelope came back");
}

/// A producer that reports a record as failed 2 s after it was queued.
fn gives_up_after_2s(bootstrap: &str, metrics: &KafkaMetrics) -> EventProducer {
    EventProducer::new(
        &vigie_kafka::Cluster::new(bootstrap),
        &ProducerConfig {
            delivery_timeout_ms: 2_000,
            ..ProducerConfig::default()
        },
        metrics.clone(),
    )
    .expect("producer")
}

/// A small keyed record for `topic`.
fn record(topic: &str) -> OutRecord<'_> {
    OutRecord {
        partition: None,
        topic,
        key: Some(b"k"),
        payload: Some(b"{}"),
        headers: &[],
        timestamp_ms: None,
    }
}

#[tokio::test]
async fn a_failed_delivery_is_an_error_naming_the_topic() {
    let b = broker();
    let existing = unique_name("delivered");
    create_topic(&b.bootstrap, &existing, 1).await;
    // Never created, and the broker does not create topics on demand.
    let missing = unique_name("missing");
    let metrics = KafkaMetrics::unregistered();
    let p = gives_up_after_2s(&b.bootstrap, &metrics);

    // The same producer delivers to a topic that exists...
    p.send(record(&existing)).await.expect("delivered");
    // ...and reports the record it could not deliver as an error.
    let err = tokio::time::timeout(DEADLINE, p.send(record(&missing)))
        .await
        .expect("the delivery report before the deadline")
        .expect_err("a record for a missing topic is not delivered");
    match &err {
        KafkaError::Delivery { topic, source } => {
            assert_eq!(topic, &missing);
            assert!(
                matches!(
                    source.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::MessageTimedOut
                            | RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::UnknownTopicOrPartition
                    )
                ),
                "cause: {source:?}"
            );
        }
        other => panic!("expected a delivery error, got {other:?}"),
    }
    assert!(err.to_string().contains(&missing), "{err}");
    assert_eq!(err.error_type(), "delivery");
    assert_eq!(
        metrics
            .errors
            .with_label_values(&["delivery", "produce"])
            .get(),
        1
    );
    assert_eq!(metrics.produced.with_label_values(&[&missing]).get(), 0);
    assert_eq!(metrics.produced.with_label_values(&[&existing]).get(), 1);

    // A record the client refuses locally is an error too, naming the topic.
    let big = vec![b'x'; 1_100_000];
    let err = p
        .send(OutRecord {
            partition: None,
            payload: Some(&big),
            ..record(&existing)
        })
        .await
        .expect_err("a record above message_max_bytes is refused");
    match &err {
        KafkaError::Delivery { topic, source } => {
            assert_eq!(topic, &existing);
            assert_eq!(
                source.rdkafka_error_code(),
                Some(RDKafkaErrorCode::MessageSizeTooLarge),
                "cause: {source:?}"
            );
        }
        other => panic!("expected a delivery error, got {other:?}"),
    }
}

#[tokio::test]
async fn pipelines_sharing_a_producer_each_get_their_own_deliveries() {
    let b = broker();
    let (a, c) = (unique_name("pipe-a"), unique_name("pipe-b"));
    create_topic(&b.bootstrap, &a, 1).await;
    create_topic(&b.bootstrap, &c, 1).await;
    let metrics = KafkaMetrics::unregistered();
    let p = EventProducer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &ProducerConfig::default(),
        metrics.clone(),
    )
    .expect("producer");
    let (na, nc) = (700, 300);

    // Two pipelines open at once, their records interleaved in one queue.
    let mut pa = p.pipeline(true);
    let mut pc = p.pipeline(true);
    for i in 0..na.max(nc) {
        for (pipe, topic, n) in [(&mut pa, &a, na), (&mut pc, &c, nc)] {
            if i < n {
                let payload = format!("{{\"n\":{i}}}");
                pipe.push(OutRecord {
                    partition: None,
                    topic,
                    key: None,
                    payload: Some(payload.as_bytes()),
                    headers: &[],
                    timestamp_ms: None,
                })
                .await
                .expect("queued");
            }
        }
    }
    let (acked_c, delivered_c) = pc.finish().await.expect("b delivered");
    let (acked_a, delivered_a) = pa.finish().await.expect("a delivered");

    // Each topic has one partition and one writer, so a pipeline's records
    // sit at offsets 0, 1, 2... in push order: each report reached the
    // pipeline that sent the record, at the record's position.
    assert_eq!((acked_a, acked_c), (na as u64, nc as u64));
    let offsets = |d: &[vigie_kafka::Delivered]| d.iter().map(|d| d.offset).collect::<Vec<_>>();
    assert_eq!(offsets(&delivered_a), (0..na as i64).collect::<Vec<_>>());
    assert_eq!(offsets(&delivered_c), (0..nc as i64).collect::<Vec<_>>());
    assert_eq!(metrics.produced.with_label_values(&[&a]).get(), na as u64);
    assert_eq!(metrics.produced.with_label_values(&[&c]).get(), nc as u64);
}

#[tokio::test]
async fn a_pipeline_reports_its_earliest_failure_after_every_record_settled() {
    let b = broker();
    let existing = unique_name("settled");
    create_topic(&b.bootstrap, &existing, 1).await;
    let missing = unique_name("missing");
    let metrics = KafkaMetrics::unregistered();
    let p = gives_up_after_2s(&b.bootstrap, &metrics);

    // 10 good records, 2 for a topic that does not exist, 10 good ones.
    let mut pipe = p.pipeline(false);
    for topic in [[&existing; 10].as_slice(), &[&missing; 2], &[&existing; 10]].concat() {
        pipe.push(record(topic)).await.expect("queued");
    }
    let err = tokio::time::timeout(DEADLINE, pipe.finish())
        .await
        .expect("every report before the deadline")
        .expect_err("two records were not delivered");
    assert!(
        matches!(&err, KafkaError::Delivery { topic, .. } if topic == &missing),
        "{err:?}"
    );
    // The good records on both sides of the failures were acknowledged
    // and counted; each failure was counted once.
    assert_eq!(metrics.produced.with_label_values(&[&existing]).get(), 20);
    assert_eq!(metrics.produced.with_label_values(&[&missing]).get(), 0);
    assert_eq!(
        metrics
            .errors
            .with_label_values(&["delivery", "produce"])
            .get(),
        2
    );

    // A pipeline dropped before `finish` still has its records delivered
    // and counted when their reports come: a later record to the same
    // partition is reported after them.
    let mut dropped = p.pipeline(false);
    for _ in 0..25 {
        dropped.push(record(&existing)).await.expect("queued");
    }
    drop(dropped);
    p.send(record(&existing)).await.expect("delivered");
    assert_eq!(metrics.produced.with_label_values(&[&existing]).get(), 46);
}

#[test]
fn the_producer_refuses_extra_that_would_switch_off_a_guarantee() {
    for key in ["enable.idempotence", "acks"] {
        let err = EventProducer::new(
            &vigie_kafka::Cluster::new("127.0.0.1:9"),
            &ProducerConfig {
                extra: BTreeMap::from([(key.to_owned(), "0".to_owned())]),
                ..ProducerConfig::default()
            },
            KafkaMetrics::unregistered(),
        )
        .expect_err("refused");
        match err {
            KafkaError::Config(m) => assert!(m.contains(&format!("`{key}`")), "{m}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn consumer_extra_cannot_turn_auto_commit_back_on() {
    let b = broker();
    let topic = unique_name("autocommit");
    let group = unique_name("g");
    create_topic(&b.bootstrap, &topic, 1).await;
    produce(&b.bootstrap, &topic, 0, 30).await;

    // With these, librdkafka would store each offset as it is read and
    // commit them on close.
    let mut config = consumer_config(&topic, &group, 100);
    config.extra = BTreeMap::from([
        ("enable.auto.commit".to_owned(), "true".to_owned()),
        ("enable.auto.offset.store".to_owned(), "true".to_owned()),
        ("auto.commit.interval.ms".to_owned(), "50".to_owned()),
    ]);
    assert!(matches!(config.validate(), Err(KafkaError::Config(_))));
    let c = match BatchConsumer::new(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        config,
        KafkaMetrics::unregistered(),
    ) {
        Ok(c) => c,
        // Refusing the settings outright keeps the guarantee too.
        Err(KafkaError::Config(_)) => return,
        Err(e) => panic!("consumer: {e}"),
    };
    let stop = CancellationToken::new();
    let mut read = 0;
    tokio::time::timeout(DEADLINE, async {
        while read < 30 {
            // Read, never committed.
            read += c.next_batch(&stop).await.unwrap().unwrap().len();
        }
    })
    .await
    .expect("all 30 records read");
    c.close().await;

    let lags = group_lag(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &group,
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .await
    .expect("lag");
    assert_eq!(lags.len(), 1);
    assert_eq!(lags[0].committed, None, "nothing committed: {lags:?}");
    assert_eq!(lags[0].lag, 30);
}
