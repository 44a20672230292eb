//! Topic helpers for tests: unique names, creation, raw produce and read.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// A name no other test uses: `<prefix>-<uuid>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates `topic` with `partitions` partitions (error if it exists).
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, &[]).await;
}

/// Creates `topic` with `partitions` partitions and topic `configs`, such
/// as `("max.message.bytes", "4194304")` (error if it exists).
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    let res = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Creates `topic` and its `.dlq` twin, each with `partitions` partitions.
pub async fn create_topic_and_dlq(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic(bootstrap, topic, partitions).await;
    create_topic(bootstrap, &format!("{topic}.dlq"), partitions).await;
}

/// A record to inject: `(key, value, headers)`.
pub type RawInput = (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Produces `(key, value, headers)` records with a plain client and waits
/// for every acknowledgement. Used to inject input, including invalid input.
pub async fn produce_raw(bootstrap: &str, topic: &str, records: &[RawInput]) {
    produce_raw_at(bootstrap, topic, records, None).await;
}

/// [`produce_raw`], the records timestamped `timestamp_ms` (the time of
/// producing when `None`): a backlog produced long ago.
pub async fn produce_raw_at(
    bootstrap: &str,
    topic: &str,
    records: &[RawInput],
    timestamp_ms: Option<i64>,
) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    // Every record enqueued at once (`send` would wait for each delivery
    // before enqueuing the next), the oldest awaited when the queue is full.
    let mut futs = std::collections::VecDeque::new();
    for (k, v, hs) in records {
        let mut h = OwnedHeaders::new();
        for (hk, hv) in hs {
            h = h.insert(Header {
                key: hk,
                value: Some(hv),
            });
        }
        let mut rec = FutureRecord::to(topic).key(k).payload(v).headers(h);
        if let Some(t) = timestamp_ms {
            rec = rec.timestamp(t);
        }
        loop {
            match p.send_result(rec) {
                Ok(f) => {
                    futs.push_back(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    let oldest = futs.pop_front().expect("a full queue holds a record");
                    oldest
                        .await
                        .expect("delivery")
                        .map_err(|(e, _)| e)
                        .expect("delivery");
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    for f in futs {
        f.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("delivery");
    }
}

/// A record read back by [`read_topic`].
pub type RawRecord = (i32, i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Where a dead letter's record came from: its `vigie.dlq.origin.partition`
/// and `vigie.dlq.origin.offset` headers (empty when missing).
pub fn dlq_origin(letter: &RawRecord) -> (String, String) {
    let header = |k: &str| {
        letter
            .4
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    (
        header("vigie.dlq.origin.partition"),
        header("vigie.dlq.origin.offset"),
    )
}

/// Reads exactly `expected` records from every partition of `topic`, from
/// the beginning, without a consumer group: `(partition, offset, key, value,
/// headers)`. Panics if they do not arrive within `deadline`.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    deadline: Duration,
) -> Vec<RawRecord> {
    let (c, _) = reader(bootstrap, topic, "read_committed");
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < expected {
        assert!(
            start.elapsed() < deadline,
            "read {} of {expected} records from {topic} before the deadline",
            out.len()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(raw(&m)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("fetch: {e}"),
        }
    }
    out
}

/// Reads every record of `topic` as a reader of `isolation`
/// (`read_committed` or `read_uncommitted`) sees it, from the beginning to
/// the end of each partition (for `read_committed`, its last stable
/// offset). Panics if that takes longer than `deadline`.
pub fn read_to_end(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    deadline: Duration,
) -> Vec<RawRecord> {
    let (c, partitions) = reader(bootstrap, topic, isolation);
    let mut open: std::collections::BTreeSet<i32> = partitions.into_iter().collect();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    while !open.is_empty() {
        assert!(
            start.elapsed() < deadline,
            "{isolation}: partitions {open:?} of {topic} not read to their end before the deadline"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(raw(&m)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("fetch: {e}"),
            None => {}
        }
    }
    out
}

/// A consumer outside any group, assigned every partition of `topic` from
/// the beginning, reporting each partition's end; and the partitions.
fn reader(bootstrap: &str, topic: &str, isolation: &str) -> (BaseConsumer, Vec<i32>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .set("fetch.message.max.bytes", "10000000")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut partitions = Vec::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition offset");
            partitions.push(p.id());
        }
    }
    c.assign(&tpl).expect("assign");
    (c, partitions)
}

fn raw(m: &rdkafka::message::BorrowedMessage<'_>) -> RawRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    (
        m.partition(),
        m.offset(),
        m.key().map(<[u8]>::to_vec),
        m.payload().unwrap_or_default().to_vec(),
        headers,
    )
}

/// Records in `topic`: the sum of its partitions' high watermarks.
pub fn topic_len(bootstrap: &str, topic: &str) -> i64 {
    end_offsets(bootstrap, topic).iter().map(|(_, o)| o).sum()
}

/// `(partition, high watermark)` of each partition of `topic`, in order.
pub fn end_offsets(bootstrap: &str, topic: &str) -> Vec<(i32, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut ends: Vec<(i32, i64)> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            (p.id(), high)
        })
        .collect();
    ends.sort_unstable();
    ends
}
