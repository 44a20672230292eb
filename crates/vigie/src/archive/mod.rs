//! Topic archives: a folder per topic holding one file per partition
//! ([`mod@format`]) and a manifest of partitions, offset ranges, counts,
//! checksums and the consumer groups' committed offsets; and the map from
//! archived offsets to restored ones.

pub(crate) mod format;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, FixedOffset, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use vigie_kafka::Cluster;

/// The manifest's file name in a topic's archive folder.
pub(crate) const MANIFEST: &str = "manifest.json";
/// The format a manifest names.
pub(crate) const FORMAT: &str = "vigie-archive/1";

/// What an archive folder holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// [`FORMAT`].
    pub(crate) format: String,
    /// The Vigie version that wrote it.
    pub(crate) vigie: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) topic: String,
    /// The topic's partition count when archived.
    pub(crate) partitions: i32,
    /// The time range asked, if any.
    pub(crate) from: Option<DateTime<FixedOffset>>,
    pub(crate) to: Option<DateTime<FixedOffset>>,
    pub(crate) files: Vec<FileEntry>,
    /// Each archived group's committed offsets on the topic (the next
    /// offset to read), by partition: a restore translates them.
    pub(crate) groups: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// One partition's file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEntry {
    /// Relative to the manifest.
    pub(crate) path: String,
    pub(crate) partition: i32,
    /// The offsets read: from `start` up to, not including, `end`.
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// Committed records in the file (fewer than `end - start` where the
    /// range holds transaction markers or aborted records).
    pub(crate) records: u64,
    pub(crate) first_offset: Option<i64>,
    pub(crate) last_offset: Option<i64>,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

impl Manifest {
    /// Reads `dir`'s manifest.
    pub(crate) fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a Vigie archive manifest", path.display()))?;
        if m.format != FORMAT {
            bail!(
                "{}: format {:?}, this Vigie reads {FORMAT:?}",
                path.display(),
                m.format
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &m.files {
            let inside = |o: Option<i64>| o.is_none_or(|o| (f.start..f.end).contains(&o));
            if f.partition < 0
                || f.partition >= m.partitions
                || f.start < 0
                || !seen.insert(f.partition)
                || f.start > f.end
                || !inside(f.first_offset)
                || !inside(f.last_offset)
                || f.records > (f.end - f.start) as u64
                || f.path.contains('/')
                || f.path.contains("..")
            {
                bail!(
                    "{}: the entry of {} is inconsistent (partition {} of {}, offsets {} to {}, \
                     {} records): the manifest was changed",
                    path.display(),
                    f.path,
                    f.partition,
                    m.partitions,
                    f.start,
                    f.end,
                    f.records
                );
            }
        }
        Ok(m)
    }

    /// Writes it to `dir`, whole or not at all (a temporary file renamed).
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(MANIFEST))
            .with_context(|| format!("cannot write {}", dir.join(MANIFEST).display()))
    }

    /// Every file's size and SHA-256 against the manifest: the first that
    /// differs (or is missing) is named with its partition and offsets.
    pub(crate) fn verify(&self, dir: &Path) -> anyhow::Result<()> {
        for f in &self.files {
            let path = dir.join(&f.path);
            let (sha, bytes) = format::file_sha256(&path)?;
            if sha != f.sha256 || bytes != f.bytes {
                bail!(
                    "{}: corrupt archive file (partition {}, {} records at offsets {} to {}): its \
                     SHA-256 is {sha} ({bytes} bytes), the manifest says {} ({} bytes); nothing \
                     was restored",
                    path.display(),
                    f.partition,
                    f.records,
                    f.first_offset.map_or("-".into(), |o| o.to_string()),
                    f.last_offset.map_or("-".into(), |o| o.to_string()),
                    f.sha256,
                    f.bytes
                );
            }
        }
        Ok(())
    }
}

/// A consumer outside any group reading committed records only, with the
/// end of each partition signalled.
pub(crate) fn reader(cluster: &Cluster) -> anyhow::Result<BaseConsumer> {
    cluster
        .client_config()
        .set("group.id", "vigie-archive")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "error")
        .create()
        .context("cannot create the Kafka reader")
}

/// How long a read may see nothing before it gives up.
const STALL: Duration = Duration::from_secs(60);

/// What the handler of a record wants next from its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The partition's next record.
    More,
    /// Nothing more from this partition: it stops after this record.
    Stop,
}

/// Reads the committed records of `topic`'s partitions, each from its
/// start up to its end (exclusive), handing every record to `each`; stops
/// a partition early at its end of log (its last stable offset: a
/// transaction still open there is not read), or when `each` says so.
/// Returns where each partition stopped: the offset after the last record
/// handed over (its start if none was), or its end once a record at or
/// past it came.
pub(crate) fn read_committed(
    cluster: &Cluster,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<Next>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    use rdkafka::Message;
    let mut stopped: BTreeMap<i32, i64> = BTreeMap::new();
    // The offset after the last record handed over, per partition.
    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (&p, &(start, end)) in ranges {
        reached.insert(p, start);
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
        } else {
            stopped.insert(p, start);
        }
    }
    if stopped.len() == ranges.len() {
        return Ok(stopped);
    }
    let consumer = reader(cluster)?;
    consumer.assign(&tpl)?;
    let mut quiet_since = Instant::now();
    while stopped.len() < ranges.len() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                if quiet_since.elapsed() > STALL {
                    let waiting: Vec<i32> = ranges
                        .keys()
                        .filter(|p| !stopped.contains_key(p))
                        .copied()
                        .collect();
                    bail!(
                        "{topic}: nothing read for {} s from partition(s) {waiting:?}",
                        STALL.as_secs()
                    );
                }
            }
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let p = m.partition();
                if stopped.contains_key(&p) {
                    continue;
                }
                let end = ranges[&p].1;
                let mut next = Next::More;
                if m.offset() < end {
                    next = each(&m)?;
                    reached.insert(p, m.offset() + 1);
                }
                let stop = match next {
                    Next::Stop => Some(reached[&p]),
                    Next::More => (m.offset() + 1 >= end).then_some(end),
                };
                if let Some(at) = stop {
                    stopped.insert(p, at);
                    consumer.incremental_unassign(&one(topic, p)?)?;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                quiet_since = Instant::now();
                if stopped.contains_key(&p) {
                    continue;
                }
                stopped.insert(p, reached[&p]);
                consumer.incremental_unassign(&one(topic, p)?)?;
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
        }
    }
    Ok(stopped)
}

/// The producer of a restore or a copy: the configured one (idempotent),
/// with `enable.gapless.guarantee`: a batch that fails for good stops the
/// producer, instead of later batches landing after the gap. What lands
/// in each partition is then always a prefix of what was sent, which the
/// next run finds and resumes after.
pub(crate) fn gapless_producer(
    cluster: &Cluster,
    config: &vigie_kafka::ProducerConfig,
) -> anyhow::Result<vigie_kafka::EventProducer> {
    let mut config = config.clone();
    config
        .extra
        .insert("enable.gapless.guarantee".into(), "true".into());
    Ok(vigie_kafka::EventProducer::new(
        cluster,
        &config,
        vigie_kafka::KafkaMetrics::unregistered(),
    )?)
}

/// Creates `topic` with `partitions` if it is missing, keeping its records
/// forever (`retention.ms=-1`): restored or copied records keep their old
/// timestamps, which a time retention would delete at once.
pub(crate) async fn ensure_target(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let mut spec = vigie_kafka::TopicSpec::new(topic, partitions);
    spec.dlq = false;
    spec.retention_ms = Some(-1);
    vigie_kafka::ensure_topics(cluster, &[spec]).await?;
    Ok(())
}

/// `--from-datetime` and `--to-datetime`: a range of a topic by record
/// timestamp, as offsets (Kafka's `ListOffsets` by time).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub(crate) struct TimeRange {
    /// From each partition's first record with a timestamp at or after
    /// this time (RFC 3339; with timestamps out of order, later records
    /// older than it are included too).
    #[arg(long, value_name = "RFC3339")]
    pub(crate) from_datetime: Option<DateTime<FixedOffset>>,
    /// Up to each partition's first record at or after this time, excluded.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) to_datetime: Option<DateTime<FixedOffset>>,
}

/// How long an admin request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `topic`'s partition count and each partition's offsets to read, `(start,
/// end)`: from its low watermark, or its first record at or after
/// `from_datetime`, up to its high watermark, or its first record at or
/// after `to_datetime`.
pub(crate) async fn ranges(
    cluster: &Cluster,
    topic: &str,
    range: TimeRange,
) -> anyhow::Result<(i32, BTreeMap<i32, (i64, i64)>)> {
    let topics = [topic.to_owned()];
    let watermarks = vigie_kafka::group_lag(cluster, "vigie-archive", &topics, TIMEOUT)
        .await
        .with_context(|| format!("topic {topic}: no such topic, or the cluster did not answer"))?;
    let keys: Vec<_> = watermarks
        .iter()
        .map(|p| (topic.to_owned(), p.partition))
        .collect();
    let mut at = Vec::new();
    for when in [range.from_datetime, range.to_datetime] {
        at.push(match when {
            Some(t) => Some(
                vigie_kafka::offsets_for_time(cluster, &keys, t.timestamp_millis(), TIMEOUT)
                    .await?,
            ),
            None => None,
        });
    }
    let mut ranges = BTreeMap::new();
    for p in &watermarks {
        let key = (topic.to_owned(), p.partition);
        let pick = |m: &Option<BTreeMap<_, Option<i64>>>, default: i64| {
            m.as_ref().map_or(default, |m| {
                m.get(&key).copied().flatten().unwrap_or(p.high_watermark)
            })
        };
        let start = pick(&at[0], p.low_watermark);
        let end = pick(&at[1], p.high_watermark).max(start);
        ranges.insert(p.partition, (start, end));
    }
    Ok((watermarks.len() as i32, ranges))
}

fn one(topic: &str, p: i32) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    Ok(tpl)
}

/// Where each archived record went: runs of consecutive offsets,
/// `[old, new, count]`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OffsetMap {
    pub(crate) runs: Vec<[i64; 3]>,
    /// The restored partition's next offset after the last record.
    pub(crate) end: i64,
}

impl OffsetMap {
    /// Adds `old` restored at `new` (both after every one added before).
    pub(crate) fn push(&mut self, old: i64, new: i64) {
        match self.runs.last_mut() {
            Some([o, n, c]) if *o + *c == old && *n + *c == new => *c += 1,
            _ => self.runs.push([old, new, 1]),
        }
        self.end = new + 1;
    }

    /// The restored offset to resume from for `old`, the next offset to
    /// read in the archived topic: the new place of the first archived
    /// record at or after it, or the end.
    pub(crate) fn translate(&self, old: i64) -> i64 {
        for &[o, n, c] in &self.runs {
            if old < o + c {
                return n + (old - o).max(0);
            }
        }
        self.end
    }

    /// Records mapped.
    pub(crate) fn len(&self) -> u64 {
        self.runs.iter().map(|r| r[2] as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_translate_to_the_next_restored_record() {
        let mut m = OffsetMap::default();
        // Archived 10, 11, 12, then 15, 16 (a marker at 13-14), restored
        // at 0, 1, 2 then 4, 5 (a marker at 3).
        for (old, new) in [(10, 0), (11, 1), (12, 2), (15, 4), (16, 5)] {
            m.push(old, new);
        }
        assert_eq!(m.runs, vec![[10, 0, 3], [15, 4, 2]]);
        assert_eq!(m.len(), 5);
        assert_eq!(m.translate(0), 0, "before the archive: its first record");
        assert_eq!(m.translate(10), 0);
        assert_eq!(m.translate(12), 2);
        assert_eq!(m.translate(13), 4, "a marker: the next record");
        assert_eq!(m.translate(16), 5);
        assert_eq!(m.translate(17), 6, "past the last: the end");
        assert_eq!(m.translate(100), 6);
    }
}
