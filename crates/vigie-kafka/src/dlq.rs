//! Dead-letter publishing: what cannot be processed goes, bytes unchanged
//! (up to [`DLQ_MAX_VALUE_BYTES`]), to the `<topic>.dlq` twin of its topic,
//! with why and where it came from in headers.

use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;
use crate::producer::{EventProducer, OutRecord};
use crate::record::Record;

/// Header: short, stable reason code (`invalid_json`, `schema_violation`, `oversized`, ...).
pub const H_REASON: &str = "vigie.dlq.reason";
/// Header: the full error message.
pub const H_ERROR: &str = "vigie.dlq.error";
/// Header: the processing stage that refused the record (`validate`, `sink_postgres`, ...).
pub const H_STAGE: &str = "vigie.dlq.stage";
/// Header: the topic the record was read from.
pub const H_TOPIC: &str = "vigie.dlq.origin.topic";
/// Header: its partition.
pub const H_PARTITION: &str = "vigie.dlq.origin.partition";
/// Header: its offset.
pub const H_OFFSET: &str = "vigie.dlq.origin.offset";
/// Header: the original record's timestamp, in milliseconds since the
/// epoch. The dead letter itself is timestamped when it is published, so
/// that the DLQ can be searched by the time letters were published.
pub const H_TIMESTAMP: &str = "vigie.dlq.origin.timestamp";
/// Header: the consumer group whose member refused the record.
pub const H_GROUP: &str = "vigie.dlq.group";
/// Header: the upstream URL, for a row a producer could not map (producer
/// dead letters carry it instead of topic, partition and offset).
pub const H_URL: &str = "vigie.dlq.origin.url";

/// Header, on a dead letter whose value was cut to [`DLQ_MAX_VALUE_BYTES`]:
/// the size of the whole original value, in bytes.
pub const H_ORIGINAL_SIZE: &str = "vigie.dlq.original.size";
/// Header, with [`H_ORIGINAL_SIZE`]: the SHA-256 of the whole original
/// value, in lower-case hex.
pub const H_ORIGINAL_SHA256: &str = "vigie.dlq.original.sha256";

/// The most of a refused value a dead letter carries. A longer value (a
/// record refused as oversized, a huge upstream page) is cut to its first
/// `DLQ_MAX_VALUE_BYTES`, so that its dead letter fits any broker's
/// message size limit; its size and digest go in headers, and its origin
/// headers still locate the original.
pub const DLQ_MAX_VALUE_BYTES: usize = 64 * 1024;

/// A refused value as a dead letter carries it: whole, or cut to
/// [`DLQ_MAX_VALUE_BYTES`] with [`H_ORIGINAL_SIZE`] and
/// [`H_ORIGINAL_SHA256`] headers.
#[derive(Debug)]
pub struct FittedValue<'a> {
    /// The value, or its first [`DLQ_MAX_VALUE_BYTES`].
    pub value: &'a [u8],
    /// For a cut value: the size and SHA-256 of the whole, as header values.
    pub original: Option<(String, String)>,
}

impl<'a> FittedValue<'a> {
    /// Fits `value` into a dead letter.
    pub fn new(value: &'a [u8]) -> Self {
        if value.len() <= DLQ_MAX_VALUE_BYTES {
            return Self {
                value,
                original: None,
            };
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(value);
        let hex = digest.iter().fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        });
        Self {
            value: &value[..DLQ_MAX_VALUE_BYTES],
            original: Some((value.len().to_string(), hex)),
        }
    }

    /// The headers telling a cut value's original size and digest, if cut.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.original.iter().flat_map(|(size, sha)| {
            [
                (H_ORIGINAL_SIZE, size.as_bytes()),
                (H_ORIGINAL_SHA256, sha.as_bytes()),
            ]
        })
    }
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A record refused by a stage, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The original record.
    pub record: &'a Record,
    /// Bounded reason code, also the metric label.
    pub reason: &'a str,
    /// Human-readable error naming what was wrong.
    pub error: String,
    /// The stage that refused it.
    pub stage: &'a str,
}

/// A dead letter as published: its topic, key, value and headers, owned,
/// so that it can be kept (in a sink's outbox) and published later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The dead-letter topic.
    pub topic: String,
    /// The original record's key.
    pub key: Option<Vec<u8>>,
    /// The original value, fitted ([`FittedValue`]).
    pub value: Vec<u8>,
    /// Why, where from, and the original headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The letter's timestamp; `None`: when it is published.
    pub timestamp_ms: Option<i64>,
}

impl Letter {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl DeadLetter<'_> {
    /// The letter to publish, from a consumer of `group` (`None` outside
    /// a consumer group).
    pub fn to_letter(&self, group: Option<&str>) -> Letter {
        let r = self.record;
        let value = FittedValue::new(r.payload.as_deref().unwrap_or_default());
        let mut headers: Vec<(String, Vec<u8>)> = vec![
            (H_REASON.into(), self.reason.into()),
            (H_ERROR.into(), self.error.clone().into_bytes()),
            (H_STAGE.into(), self.stage.into()),
            (H_TOPIC.into(), r.topic.clone().into_bytes()),
            (H_PARTITION.into(), r.partition.to_string().into_bytes()),
            (H_OFFSET.into(), r.offset.to_string().into_bytes()),
        ];
        if let Some(t) = r.timestamp_ms {
            headers.push((H_TIMESTAMP.into(), t.to_string().into_bytes()));
        }
        if let Some(group) = group {
            headers.push((H_GROUP.into(), group.into()));
        }
        headers.extend(value.headers().map(|(k, v)| (k.to_owned(), v.to_vec())));
        // The original headers follow, unchanged.
        headers.extend(
            r.headers
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))),
        );
        Letter {
            topic: dlq_topic(&r.topic),
            key: r.key.clone(),
            value: value.value.to_vec(),
            headers,
            // Publish time: `published_by_group` looks letters up by it.
            timestamp_ms: None,
        }
    }
}

/// Publishes dead letters with the shared producer.
#[derive(Debug)]
pub struct DlqPublisher<'p> {
    producer: &'p EventProducer,
    metrics: KafkaMetrics,
    group: Option<String>,
}

impl<'p> DlqPublisher<'p> {
    /// A publisher over an existing producer.
    pub fn new(producer: &'p EventProducer, metrics: KafkaMetrics) -> Self {
        Self {
            producer,
            metrics,
            group: None,
        }
    }

    /// Its letters name consumer group `group` ([`H_GROUP`]).
    pub fn for_group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// The letter of `dead`, as this publisher would publish it.
    pub fn letter(&self, dead: &DeadLetter<'_>) -> Letter {
        dead.to_letter(self.group.as_deref())
    }

    /// Publishes every dead letter and waits for the broker's acknowledgement:
    /// a batch's offsets may be committed only after its dead letters are safe.
    pub async fn publish(&self, letters: &[DeadLetter<'_>]) -> Result<(), KafkaError> {
        let letters: Vec<Letter> = letters.iter().map(|l| self.letter(l)).collect();
        self.publish_letters(&letters).await
    }

    /// Publishes letters built earlier and waits for every acknowledgement.
    pub async fn publish_letters(&self, letters: &[Letter]) -> Result<(), KafkaError> {
        send_letters(self.producer, letters).await?;
        self.count(letters);
        Ok(())
    }

    /// Counts letters published (`vigie_dlq_records_total`), for letters a
    /// sink published in its own transaction.
    pub fn count(&self, letters: &[Letter]) {
        for l in letters {
            let origin = l.header(H_TOPIC).map(String::from_utf8_lossy);
            let reason = l.header(H_REASON).map(String::from_utf8_lossy);
            self.metrics
                .dead_letters
                .with_label_values(&[
                    origin.as_deref().unwrap_or_default(),
                    reason.as_deref().unwrap_or_default(),
                ])
                .inc();
        }
    }
}

/// Sends `letters` with `producer` (a transactional one: within its open
/// transaction) and waits for every acknowledgement.
pub async fn send_letters(producer: &EventProducer, letters: &[Letter]) -> Result<(), KafkaError> {
    if letters.is_empty() {
        return Ok(());
    }
    type Headers<'a> = Vec<(&'a str, Option<&'a [u8]>)>;
    let headers: Vec<Headers<'_>> = letters
        .iter()
        .map(|l| {
            l.headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                .collect()
        })
        .collect();
    // Built with a loop, not a lazy `map`: a closure held across the
    // await below would make this future not `Send` for every lifetime.
    let mut records: Vec<OutRecord<'_>> = Vec::with_capacity(letters.len());
    for (l, h) in letters.iter().zip(&headers) {
        records.push(OutRecord {
            partition: None,
            topic: &l.topic,
            key: l.key.as_deref(),
            payload: Some(&l.value),
            headers: h,
            timestamp_ms: l.timestamp_ms,
        });
    }
    producer.send_all(records).await?;
    Ok(())
}

/// Where a dead letter came from: origin topic, partition and offset. With
/// the group, it names a letter: a member refuses a record at most once.
pub type Origin = (String, i32, i64);

/// The origins of the letters that members of `group` published on the
/// dead-letter `topics` at or after `since_ms` (broker time): what a
/// consumer that stopped between publishing letters and recording them as
/// published finds already there. Reads each partition from the offset of
/// `since_ms` to its end, then stops; blocking, bounded by `timeout`.
pub fn published_by_group(
    cluster: &crate::Cluster,
    group: &str,
    topics: &std::collections::BTreeSet<String>,
    since_ms: i64,
    timeout: std::time::Duration,
) -> Result<std::collections::HashSet<Origin>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let deadline = std::time::Instant::now() + timeout;
    let c: BaseConsumer = cluster
        .client_config()
        // Required by the client even for assigned partitions; it never
        // joins nor commits.
        .set("group.id", format!("{group}.dlq-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(KafkaError::creation)?;
    let mut at_time = TopicPartitionList::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), timeout)?;
        for mt in md.topics() {
            for p in mt.partitions() {
                at_time.add_partition_offset(t, p.id(), Offset::Offset(since_ms))?;
            }
        }
    }
    // Per partition: read from the first offset at `since_ms` up to `high`.
    let starts = c.offsets_for_times(at_time, timeout)?;
    let mut assign = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for e in starts.elements() {
        let Offset::Offset(start) = e.offset() else {
            continue; // nothing at or after `since_ms`
        };
        let (_, high) = c.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        if start < high {
            assign.add_partition_offset(e.topic(), e.partition(), Offset::Offset(start))?;
            ends.insert((e.topic().to_owned(), e.partition()), high);
        }
    }
    let mut found = std::collections::HashSet::new();
    if ends.is_empty() {
        return Ok(found);
    }
    c.assign(&assign)?;
    while !ends.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(KafkaError::Admin {
                what: format!("reading dead-letter topics {topics:?}"),
                message: format!("not read to their end within {timeout:?}"),
            });
        }
        let Some(m) = c.poll(left.min(std::time::Duration::from_millis(500))) else {
            continue;
        };
        let m = m?;
        let key = (m.topic().to_owned(), m.partition());
        if ends.get(&key).is_some_and(|high| m.offset() + 1 >= *high) {
            ends.remove(&key);
        }
        let Some(headers) = m.headers() else { continue };
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        if get(H_GROUP) != Some(group) {
            continue;
        }
        if let (Some(t), Some(Ok(p)), Some(Ok(o))) = (
            get(H_TOPIC),
            get(H_PARTITION).map(str::parse),
            get(H_OFFSET).map(str::parse),
        ) {
            found.insert((t.to_owned(), p, o));
        }
    }
    Ok(found)
}
