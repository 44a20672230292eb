//! Client settings for producers and consumers, as they appear in the
//! `[kafka]` section of the Vigie configuration.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Producer settings. The defaults are the safe ones: idempotent, `acks=all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Compression codec: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long to wait for more records before sending a batch.
    pub linger_ms: u64,
    /// Largest batch, in bytes, sent to one partition.
    pub batch_size: u64,
    /// Largest number of records in one batch.
    pub batch_num_messages: u64,
    /// Largest record the producer accepts, in bytes.
    pub message_max_bytes: u64,
    /// How long librdkafka keeps retrying a record before reporting it failed.
    pub delivery_timeout_ms: u64,
    /// Any other librdkafka property, passed through unchanged.
    pub extra: BTreeMap<String, String>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            compression: "zstd".into(),
            linger_ms: 20,
            batch_size: 1_000_000,
            batch_num_messages: 10_000,
            message_max_bytes: 1_000_000,
            delivery_timeout_ms: 120_000,
            extra: BTreeMap::new(),
        }
    }
}

impl ProducerConfig {
    /// The librdkafka configuration. Idempotence and `acks=all` are not
    /// options: without them a retry can duplicate or lose a record.
    pub fn client_config(&self, brokers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.codec", &self.compression)
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size.to_string())
            .set("batch.num.messages", self.batch_num_messages.to_string())
            .set("message.max.bytes", self.message_max_bytes.to_string())
            .set("delivery.timeout.ms", self.delivery_timeout_ms.to_string())
            // Connect to every broker at start: with sparse connections the
            // idempotent producer's id request waits for a retry timer, and
            // a short-lived producer (a backfill, a page of events) stalls
            // about 0.5 s before its first send.
            .set("enable.sparse.connections", "false");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// Consumer settings shared by every consumer-group component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Consumer group id. Each component has its own group.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// A batch closes when it holds this many records...
    pub batch_max_records: usize,
    /// ...or when this long has passed since its first record.
    pub batch_max_wait_ms: u64,
    /// Where a group with no committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Group session timeout.
    pub session_timeout_ms: u64,
    /// Longest time between two polls before the member is considered
    /// stuck; also how long a rebalance waits for members to rejoin.
    pub max_poll_interval_ms: u64,
    /// Records larger than this go to the DLQ as `oversized`.
    pub max_record_bytes: usize,
    /// How often the lag gauge is refreshed, in milliseconds (0: never).
    pub lag_interval_ms: u64,
    /// Any other librdkafka property, passed through unchanged.
    pub extra: BTreeMap<String, String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group_id: "vigie".into(),
            topics: Vec::new(),
            batch_max_records: 5_000,
            batch_max_wait_ms: 500,
            auto_offset_reset: "earliest".into(),
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            max_record_bytes: 1_000_000,
            lag_interval_ms: 5_000,
            extra: BTreeMap::new(),
        }
    }
}

impl ConsumerConfig {
    /// The librdkafka configuration. Auto-commit is off: offsets are
    /// committed only once a batch's effects are durable.
    pub fn client_config(&self, brokers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval_ms.to_string(),
            )
            .set("enable.partition.eof", "false")
            // Bounds the prefetched records held in memory (librdkafka's
            // default is 64 MiB); `extra` can raise it. With the bound hit,
            // librdkafka waits `fetch.queue.backoff.ms` (default 1 s) before
            // fetching the partition again: that stalled a fast consumer
            // for most of its time, so it resumes fetching after 10 ms.
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.queue.backoff.ms", "10")
            // Larger than any record we accept, so that an oversized record
            // reaches us and goes to the DLQ instead of stalling the fetcher.
            .set(
                "fetch.message.max.bytes",
                (self.max_record_bytes.max(1_048_576) * 2).to_string(),
            );
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}
