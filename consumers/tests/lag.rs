//! The runtime's own lag exporter against a real broker: the gauge it
//! exports per partition equals records produced minus records committed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vigie_consumers::{Accepted, BatchContext, ConsumerMetrics, Rejects, Runtime, Sink, SinkError};
use vigie_core::SchemaRegistry;
use vigie_kafka::{
    ConsumerConfig, EventProducer, KafkaMetrics, OutRecord, ProducerConfig, group_lag,
};
use vigie_testkit::{broker, create_topic_and_dlq, unique_name, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;

/// Records produced or written, per partition.
type PerPartition = BTreeMap<i32, i64>;

/// A sink that writes nothing while its gate is closed, holding the batch
/// (and so its commit) until the gate opens; counts what it wrote per partition.
struct GatedSink {
    open: watch::Receiver<bool>,
    written: Arc<Mutex<PerPartition>>,
}

#[async_trait::async_trait]
impl Sink for GatedSink {
    async fn write(
        &mut self,
        events: &[Accepted],
        _ctx: &BatchContext<'_>,
        _rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        self.open
            .wait_for(|open| *open)
            .await
            .map_err(|_| SinkError::Fatal("the test dropped the gate".into()))?;
        let mut w = self.written.lock().unwrap();
        for e in events {
            *w.entry(e.partition).or_default() += 1;
        }
        Ok(events.len())
    }
}

/// A valid `health.case` envelope; its key (the state) varies with `i`.
/// Produces envelopes `from..from + n`; returns how many landed in each
/// partition, from the delivery reports.
async fn produce(bootstrap: &str, topic: &str, from: usize, n: usize) -> PerPartition {
    let p = EventProducer::new(
        &vigie_kafka::Cluster::new(bootstrap),
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )
    .expect("producer");
    // Case envelopes of the simulator's seeded generator, as `(key, value)`.
    let generator =
        vigie_simulator::CaseGenerator::new(vigie_simulator::CaseGenConfig::default()).unwrap();
    let now = chrono::Utc::now();
    let records: Vec<(String, Vec<u8>)> = (from..from + n)
        .map(|i| {
            let env = vigie_simulator::case_envelope(&generator, i as u64, now);
            (env.partition_key(), env.to_json_bytes().unwrap())
        })
        .collect();
    let delivered = p
        .send_all(records.iter().map(|(key, value)| OutRecord {
            partition: None,
            topic,
            key: Some(key.as_bytes()),
            payload: Some(value),
            headers: &[],
            timestamp_ms: None,
        }))
        .await
        .expect("all delivered");
    let mut per = PerPartition::new();
    for d in delivered {
        *per.entry(d.partition).or_default() += 1;
    }
    per
}

/// The lag gauge as exported to `registry`, per partition of `topic`; only
/// the partitions the exporter has set appear.
fn exported_lag(registry: &Registry, group: &str, topic: &str) -> PerPartition {
    let mut out = PerPartition::new();
    for family in registry.gather() {
        if family.name() != "vigie_consumer_lag_records" {
            continue;
        }
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            if label("group") == group && label("topic") == topic {
                let partition = label("partition").parse().expect("partition label");
                out.insert(partition, m.get_gauge().get_value() as i64);
            }
        }
    }
    out
}

/// Produced minus written (committed, once the runtime is idle), for every partition.
fn expected_lag(produced: &PerPartition, written: &PerPartition) -> PerPartition {
    (0..PARTITIONS)
        .map(|p| {
            let n = produced.get(&p).copied().unwrap_or(0);
            (p, n - written.get(&p).copied().unwrap_or(0))
        })
        .collect()
}

fn add(total: &mut PerPartition, more: &PerPartition) {
    for (p, n) in more {
        *total.entry(*p).or_default() += n;
    }
}

/// A member of `group` consuming `topic` into a [`GatedSink`] (open), with
/// its own registry, exporting its lag every 100 ms.
struct Member {
    registry: Registry,
    kafka_metrics: KafkaMetrics,
    gate: watch::Sender<bool>,
    written: Arc<Mutex<PerPartition>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<vigie_consumers::RunSummary, vigie_consumers::RunError>>,
}

fn member(bootstrap: &str, topic: &str, group: &str) -> Member {
    let registry = Registry::new();
    let kafka_metrics = KafkaMetrics::register(&registry).unwrap();
    let runtime = Runtime {
        component: "lag-test",
        cluster: vigie_kafka::Cluster::new(bootstrap),
        consumer: ConsumerConfig {
            group_id: group.to_owned(),
            topics: vec![topic.to_owned()],
            batch_max_records: 20,
            batch_max_wait_ms: 100,
            session_timeout_ms: 6_000,
            lag_interval_ms: 100,
            ..ConsumerConfig::default()
        },
        producer: ProducerConfig::default(),
        schemas: Arc::new(SchemaRegistry::embedded().unwrap()),
        kafka_metrics: kafka_metrics.clone(),
        metrics: ConsumerMetrics::register(&registry).unwrap(),
    };
    let (gate, open) = watch::channel(true);
    let written: Arc<Mutex<PerPartition>> = Arc::default();
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        let mut sink = GatedSink {
            open,
            written: written.clone(),
        };
        tokio::spawn(async move { runtime.run(&mut sink, stop).await })
    };
    Member {
        registry,
        kafka_metrics,
        gate,
        written,
        stop,
        task,
    }
}

#[tokio::test]
async fn the_runtime_exports_lag_per_partition_as_produced_minus_committed() {
    let b = broker();
    let topic = unique_name("health.case.v1");
    let group = unique_name("g");
    create_topic_and_dlq(&b.bootstrap, &topic, PARTITIONS).await;

    let mut produced = produce(&b.bootstrap, &topic, 0, 90).await;
    assert!(
        produced.len() > 1,
        "keys spread over partitions: {produced:?}"
    );

    let Member {
        registry,
        kafka_metrics,
        gate,
        written,
        stop,
        task,
    } = member(&b.bootstrap, &topic, &group);
    let committed = || {
        kafka_metrics
            .consumed
            .with_label_values(&[&group, &topic])
            .get()
    };

    // 1. Everything consumed and committed: the exported lag drops to 0 on
    //    every partition.
    wait_for("the first 90 records committed", DEADLINE, || {
        let n = committed();
        async move { (n == 90).then_some(()) }
    })
    .await;
    let zero = expected_lag(&produced, &written.lock().unwrap());
    assert!(zero.values().all(|l| *l == 0), "{zero:?}");
    wait_for("an exported lag of 0 on every partition", DEADLINE, || {
        let now = exported_lag(&registry, &group, &topic);
        let want = zero.clone();
        async move { (now == want).then_some(()) }
    })
    .await;

    // 2. The sink holds its next batch, so nothing more is committed: the
    //    exported lag is what was produced since, per partition.
    gate.send_replace(false);
    let more = produce(&b.bootstrap, &topic, 90, 60).await;
    add(&mut produced, &more);
    let held = expected_lag(&produced, &written.lock().unwrap());
    assert_eq!(held.values().sum::<i64>(), 60, "{held:?}");
    wait_for(
        "the exported lag to equal produced minus committed",
        DEADLINE,
        || {
            let now = exported_lag(&registry, &group, &topic);
            let want = held.clone();
            async move { (now == want).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        committed(),
        90,
        "nothing committed while the sink held the batch"
    );

    // 3. The sink lets the batches through: lag back to 0.
    gate.send_replace(true);
    wait_for("all 150 records committed", DEADLINE, || {
        let n = committed();
        async move { (n == 150).then_some(()) }
    })
    .await;
    let zero = expected_lag(&produced, &written.lock().unwrap());
    assert!(zero.values().all(|l| *l == 0), "{zero:?}");
    wait_for("an exported lag of 0 again", DEADLINE, || {
        let now = exported_lag(&registry, &group, &topic);
        let want = zero.clone();
        async move { (now == want).then_some(()) }
    })
    .await;

    stop.cancel();
    let summary = task.await.unwrap().expect("run");
    assert_eq!(summary.consumed, 150);
    assert_eq!(summary.written, 150);

    // The group's committed offsets, read by the library, agree: each
    // partition committed exactly what was produced to it.
    let lags = group_lag(
        &vigie_kafka::Cluster::new(&b.bootstrap),
        &group,
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .await
    .expect("lag");
    assert_eq!(lags.len(), PARTITIONS as usize);
    for l in &lags {
        let n = produced.get(&l.partition).copied().unwrap_or(0);
        assert_eq!(l.lag, 0, "partition {}", l.partition);
        assert_eq!(
            l.high_watermark, n,
            "partition {} high watermark",
            l.partition
        );
        if n > 0 {
            assert_eq!(l.committed, Some(n), "partition {} committed", l.partition);
        }
    }
}

/// Two members of one group: each exports the lag of the partitions it owns
/// and only those, so every partition has exactly one series and their sum
/// is the group's lag. (Before, every member exported every partition and a
/// sum across members counted each partition twice.)
#[tokio::test]
async fn each_partition_lag_is_exported_by_its_owner_only() {
    let b = broker();
    let topic = unique_name("health.case.v1");
    let group = unique_name("g");
    create_topic_and_dlq(&b.bootstrap, &topic, PARTITIONS).await;
    let mut produced = produce(&b.bootstrap, &topic, 0, 90).await;
    assert_eq!(produced.len(), PARTITIONS as usize, "{produced:?}");

    // The first member alone owns, and exports, every partition.
    let first = member(&b.bootstrap, &topic, &group);
    wait_for("the first member exporting 3 partitions", DEADLINE, || {
        let n = exported_lag(&first.registry, &group, &topic).len();
        async move { (n == PARTITIONS as usize).then_some(()) }
    })
    .await;
    let second = member(&b.bootstrap, &topic, &group);
    let assigned = |m: &Member| m.kafka_metrics.assigned.with_label_values(&[&group]).get();
    wait_for("both members holding partitions", DEADLINE, || {
        let both = assigned(&first) > 0 && assigned(&second) > 0;
        let all = assigned(&first) + assigned(&second) == i64::from(PARTITIONS);
        async move { (both && all).then_some(()) }
    })
    .await;
    let committed = |m: &Member| {
        m.kafka_metrics
            .consumed
            .with_label_values(&[&group, &topic])
            .get()
    };
    wait_for("the first 90 records committed", DEADLINE, || {
        let n = committed(&first) + committed(&second);
        async move { (n == 90).then_some(()) }
    })
    .await;

    // Both sinks hold their next batch: the lag is what is produced since.
    first.gate.send_replace(false);
    second.gate.send_replace(false);
    let more = produce(&b.bootstrap, &topic, 90, 60).await;
    add(&mut produced, &more);
    let mut written = first.written.lock().unwrap().clone();
    add(&mut written, &second.written.lock().unwrap());
    let held = expected_lag(&produced, &written);
    assert_eq!(held.values().sum::<i64>(), 60, "{held:?}");
    wait_for(
        "one series per partition, across members, equal to produced minus committed",
        DEADLINE,
        || {
            let a = exported_lag(&first.registry, &group, &topic);
            let b = exported_lag(&second.registry, &group, &topic);
            let disjoint = a.keys().all(|p| !b.contains_key(p));
            let mut union = a.clone();
            union.extend(b.clone());
            let want = held.clone();
            async move { (disjoint && union == want && !a.is_empty() && !b.is_empty()).then_some(()) }
        },
    )
    .await;
    // Each member's series are its own partitions.
    for m in [&first, &second] {
        let exported = exported_lag(&m.registry, &group, &topic).len() as i64;
        assert_eq!(exported, assigned(m), "a member exports what it owns");
    }

    for m in [&first, &second] {
        m.gate.send_replace(true);
        m.stop.cancel();
    }
    for m in [first, second] {
        m.task.await.unwrap().expect("run");
    }
}
