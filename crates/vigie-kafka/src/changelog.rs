//! A compacted topic read as a table: the last committed value of a key.
//! A component that keeps its state in a changelog topic (written in the
//! transaction of its offsets) rebuilds it from there on start.

use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::{Cluster, KafkaError};

/// The last value of `key` committed to `topic` (every partition read
/// from its start to its last stable offset, `read_committed`: aborted
/// and open transactions are skipped), `None` when the key has none or
/// its last record is a tombstone. Bounded by `timeout`.
pub async fn latest_committed(
    cluster: &Cluster,
    topic: &str,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, KafkaError> {
    let (cluster, topic, key) = (cluster.clone(), topic.to_owned(), key.to_vec());
    tokio::task::spawn_blocking(move || latest_blocking(&cluster, &topic, &key, timeout))
        .await
        .map_err(|e| KafkaError::Admin {
            what: "changelog".into(),
            message: e.to_string(),
        })?
}

/// Logs the client's errors but the end of a partition, which is what
/// the reader waits for.
struct EndIsNoError;

impl ClientContext for EndIsNoError {
    fn error(&self, error: RdKafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(error = %error, reason, "librdkafka error reading a changelog");
        }
    }
}

impl ConsumerContext for EndIsNoError {}

fn latest_blocking(
    cluster: &Cluster,
    topic: &str,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, KafkaError> {
    let deadline = Instant::now() + timeout;
    let c: BaseConsumer<EndIsNoError> = cluster
        .client_config()
        // Required by the client even for assigned partitions; it never
        // joins nor commits.
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(EndIsNoError)
        .map_err(KafkaError::creation)?;
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let mut assign = TopicPartitionList::new();
    for mt in md.topics() {
        if let Some(err) = mt.error() {
            return Err(KafkaError::Admin {
                what: topic.to_owned(),
                message: format!("{err:?}"),
            });
        }
        for p in mt.partitions() {
            assign.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    let mut open = assign.count();
    c.assign(&assign)?;
    let mut last = None;
    while open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::Admin {
                what: format!("reading {topic}"),
                message: format!("not read to its end within {timeout:?}"),
            });
        }
        match c.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Err(RdKafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                open -= 1;
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) if m.key() == Some(key) => {
                last = Some(m.payload().map(<[u8]>::to_vec));
            }
            Some(Ok(_)) => {}
        }
    }
    Ok(last.flatten())
}
