//! Consumer lag: the group's committed offset against the partition's high
//! watermark, per partition.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::cluster::{Cluster, explain};
use crate::consumer::TopicPartition;
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;

/// Lag of one partition for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset the group will read, if it committed one.
    pub committed: Option<i64>,
    /// Offset the next produced record will get.
    pub high_watermark: i64,
    /// Low watermark (earliest retained offset).
    pub low_watermark: i64,
    /// Records produced and not yet committed: high watermark minus the
    /// committed offset, or minus the low watermark when nothing is committed.
    pub lag: i64,
}

/// Lag of `group` on every partition of `topics`.
///
/// Runs on a blocking thread: these are synchronous metadata requests. The
/// client used does not join the group, so asking does not rebalance it.
pub async fn group_lag(
    cluster: &Cluster,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let cluster = cluster.clone();
    let group = group.to_owned();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || group_lag_blocking(&cluster, &group, &topics, timeout))
        .await
        .map_err(|e| KafkaError::Admin {
            what: "lag".into(),
            message: e.to_string(),
        })?
}

fn group_lag_blocking(
    cluster: &Cluster,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let c = cluster.short_lived(&[("group.id", group), ("enable.auto.commit", "false")])?;
    lag_of(&c, topics, timeout).map_err(|e| explain(cluster, &c, e))
}

fn lag_of<C: rdkafka::consumer::ConsumerContext>(
    c: &BaseConsumer<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), timeout)?;
        for mt in md.topics() {
            if let Some(err) = mt.error() {
                return Err(KafkaError::Admin {
                    what: t.clone(),
                    message: format!("{err:?}"),
                });
            }
            for p in mt.partitions() {
                tpl.add_partition(t, p.id());
            }
        }
    }
    let committed = committed_offsets(c, &tpl, timeout)?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let (low, high) = c.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let committed = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        out.push(PartitionLag {
            topic: e.topic().to_owned(),
            partition: e.partition(),
            committed,
            high_watermark: high,
            low_watermark: low,
            lag: (high - committed.unwrap_or(low)).max(0),
        });
    }
    Ok(out)
}

/// The group's committed offsets. A group coordinator that is still being
/// elected or loaded (a broker just started, `__consumer_offsets` just
/// created) answers with an error that passes: asked again until `timeout`.
fn committed_offsets<C: rdkafka::consumer::ConsumerContext>(
    c: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    timeout: Duration,
) -> Result<TopicPartitionList, KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        match c.committed_offsets(tpl.clone(), timeout) {
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotCoordinator
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

/// For each partition, the offset of its first record whose timestamp is at
/// or after `timestamp_ms` (Kafka's `ListOffsets` by time, what
/// `kafka-consumer-groups --reset-offsets --to-datetime` asks); `None` where
/// every record is older.
pub async fn offsets_for_time(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    timestamp_ms: i64,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, KafkaError> {
    let (cluster, partitions) = (cluster.clone(), partitions.to_vec());
    tokio::task::spawn_blocking(move || {
        let c = cluster.short_lived(&[])?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &partitions {
            tpl.add_partition_offset(t, *p, Offset::Offset(timestamp_ms))?;
        }
        let found = c
            .offsets_for_times(tpl, timeout)
            .map_err(|e| explain(&cluster, &c, e.into()))?;
        let mut out = BTreeMap::new();
        for e in found.elements() {
            // A partition's own error (its leader unknown...) must not pass
            // for "every record is older": a reset would skip its records.
            e.error().map_err(|err| KafkaError::Admin {
                what: format!("offsets for time of {}/{}", e.topic(), e.partition()),
                message: err.to_string(),
            })?;
            let offset = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                Offset::End => None,
                other => {
                    return Err(KafkaError::Admin {
                        what: format!("offsets for time of {}/{}", e.topic(), e.partition()),
                        message: format!("unexpected answer {other:?}"),
                    });
                }
            };
            out.insert((e.topic().to_owned(), e.partition()), offset);
        }
        Ok(out)
    })
    .await
    .map_err(|e| KafkaError::Admin {
        what: "offsets for time".into(),
        message: e.to_string(),
    })?
}

/// The members of `group` the broker knows, as `client_id@host`: empty when
/// no consumer of the group is running.
pub async fn group_members(
    cluster: &Cluster,
    group: &str,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let (cluster, group) = (cluster.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = cluster.short_lived(&[])?;
        let list = c
            .fetch_group_list(Some(&group), timeout)
            .map_err(|e| explain(&cluster, &c, e.into()))?;
        Ok(list
            .groups()
            .iter()
            .flat_map(|g| g.members())
            .map(|m| format!("{}@{}", m.client_id(), m.client_host()))
            .collect())
    })
    .await
    .map_err(|e| KafkaError::Admin {
        what: "group members".into(),
        message: e.to_string(),
    })?
}

/// Commits `offsets` (the next offset to read, per partition) for `group`
/// from outside it, as `kafka-consumer-groups --reset-offsets` does: the
/// broker accepts it only while the group has no running member.
pub async fn commit_group_offsets(
    cluster: &Cluster,
    group: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), KafkaError> {
    let tpl = crate::consumer::offset_list(offsets)?;
    let (cluster, group) = (cluster.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = cluster.short_lived(&[("group.id", &group), ("enable.auto.commit", "false")])?;
        c.commit(&tpl, CommitMode::Sync)
            .map_err(|e| explain(&cluster, &c, e.into()))
    })
    .await
    .map_err(|e| KafkaError::Admin {
        what: "commit".into(),
        message: e.to_string(),
    })?
}

/// Sets the lag gauge from a fresh reading, for the partitions this member
/// `owned` only, and removes the series of the partitions it `exported`
/// before and no longer owns. Each partition is then reported by one member
/// of the group, so a sum across members is the group's lag; a partition
/// whose owner died has no series until a new owner takes it.
pub fn export(
    metrics: &KafkaMetrics,
    group: &str,
    lags: &[PartitionLag],
    owned: &BTreeSet<TopicPartition>,
    exported: &mut BTreeSet<TopicPartition>,
) {
    for tp in exported.iter().filter(|tp| !owned.contains(*tp)) {
        // (Err: the series was never set; nothing to remove.)
        let _ = metrics
            .lag
            .remove_label_values(&[group, &tp.0, &tp.1.to_string()]);
    }
    exported.retain(|tp| owned.contains(tp));
    for l in lags {
        let tp = (l.topic.clone(), l.partition);
        if owned.contains(&tp) {
            metrics
                .lag
                .with_label_values(&[group, &l.topic, &l.partition.to_string()])
                .set(l.lag);
            exported.insert(tp);
        }
    }
}
