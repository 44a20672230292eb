//! Client settings for producers and consumers, as they appear in the
//! `[kafka]` section of the Vigie configuration.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer, Serialize};

use crate::cluster::Cluster;
use crate::error::KafkaError;

/// A librdkafka property Vigie always sets itself because a guarantee rests
/// on it: `extra` may not set it (nor an alias of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The librdkafka property.
    pub key: &'static str,
    /// The value Vigie sets.
    pub value: &'static str,
    /// What would break with another value.
    pub why: &'static str,
}

const IDEMPOTENCE_WHY: &str =
    "without idempotence a retried send can write a record twice or out of order";
const ACKS_WHY: &str = "with fewer acknowledgements than `all` a record acknowledged to Vigie \
     can be lost when the partition leader fails (`acks=all` is also required by idempotence)";
const AUTO_COMMIT_WHY: &str = "offsets are committed only once a batch's effects are durable; \
     auto-commit would commit records that were never written, and a crash would lose them";
const AUTO_STORE_WHY: &str = "offsets are committed explicitly for a whole processed batch; \
     storing them as records are read would let any commit cover records not yet written";

/// Properties of the producer that `extra` may not set.
pub const PRODUCER_RESERVED: &[Reserved] = &[
    Reserved {
        key: "enable.idempotence",
        value: "true",
        why: IDEMPOTENCE_WHY,
    },
    Reserved {
        key: "acks",
        value: "all",
        why: ACKS_WHY,
    },
    // librdkafka's alias of `acks`.
    Reserved {
        key: "request.required.acks",
        value: "all",
        why: ACKS_WHY,
    },
];

/// Properties of the consumer that `extra` may not set.
pub const CONSUMER_RESERVED: &[Reserved] = &[
    Reserved {
        key: "enable.auto.commit",
        value: "false",
        why: AUTO_COMMIT_WHY,
    },
    Reserved {
        key: "enable.auto.offset.store",
        value: "false",
        why: AUTO_STORE_WHY,
    },
];

/// The first reserved property `extra` sets, as an error message naming it.
fn refuse_reserved(extra: &BTreeMap<String, String>, reserved: &[Reserved]) -> Result<(), String> {
    for k in extra.keys() {
        let key = k.trim().to_ascii_lowercase();
        if let Some(r) = reserved.iter().find(|r| r.key == key) {
            return Err(format!(
                "`{k}` cannot be set here: Vigie always sets {}={}, because {}",
                r.key, r.value, r.why
            ));
        }
    }
    Ok(())
}

fn is_reserved(key: &str, reserved: &[Reserved]) -> bool {
    let key = key.trim().to_ascii_lowercase();
    reserved.iter().any(|r| r.key == key)
}

/// `extra` of `[kafka.producer]`, refusing reserved properties at load time.
fn producer_extra<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let extra = BTreeMap::<String, String>::deserialize(d)?;
    refuse_reserved(&extra, PRODUCER_RESERVED).map_err(serde::de::Error::custom)?;
    Ok(extra)
}

/// `extra` of `[kafka.consumer]`, refusing reserved properties at load time.
fn consumer_extra<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let extra = BTreeMap::<String, String>::deserialize(d)?;
    refuse_reserved(&extra, CONSUMER_RESERVED).map_err(serde::de::Error::custom)?;
    Ok(extra)
}

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
    /// Any other librdkafka property, passed through unchanged. The
    /// properties of [`PRODUCER_RESERVED`] are refused.
    #[serde(deserialize_with = "producer_extra")]
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
    /// Refuses an `extra` that sets a property of [`PRODUCER_RESERVED`].
    /// Loading the configuration checks it too; this covers settings built
    /// in code.
    pub fn validate(&self) -> Result<(), KafkaError> {
        refuse_reserved(&self.extra, PRODUCER_RESERVED)
            .map_err(|m| KafkaError::Config(format!("`kafka.producer.extra`: {m}")))
    }

    /// The librdkafka configuration. Idempotence and `acks=all` are not
    /// options: without them a retry can duplicate or lose a record. A
    /// reserved property in `extra` (see [`validate`](Self::validate)) is
    /// never passed on.
    pub fn client_config(&self, cluster: &Cluster) -> ClientConfig {
        let mut c = cluster.client_config();
        c.set("enable.idempotence", "true")
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
            if !is_reserved(k, PRODUCER_RESERVED) {
                c.set(k, v);
            }
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
    /// ...or when this long has passed since its first record...
    pub batch_max_wait_ms: u64,
    /// ...or when no further record has arrived for this long: on a live
    /// stream a batch closes on what is there instead of waiting out
    /// `batch_max_wait_ms`, and grows by itself with the load (records
    /// arriving while one batch is written make the next one). A value
    /// of `batch_max_wait_ms` or more gives fixed windows.
    pub batch_linger_ms: u64,
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
    /// Any other librdkafka property, passed through unchanged. The
    /// properties of [`CONSUMER_RESERVED`] are refused.
    #[serde(deserialize_with = "consumer_extra")]
    pub extra: BTreeMap<String, String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group_id: "vigie".into(),
            topics: Vec::new(),
            batch_max_records: 5_000,
            batch_max_wait_ms: 500,
            batch_linger_ms: 5,
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
    /// Refuses an `extra` that sets a property of [`CONSUMER_RESERVED`].
    /// Loading the configuration checks it too; this covers settings built
    /// in code.
    pub fn validate(&self) -> Result<(), KafkaError> {
        refuse_reserved(&self.extra, CONSUMER_RESERVED)
            .map_err(|m| KafkaError::Config(format!("`kafka.consumer.extra`: {m}")))
    }

    /// The librdkafka configuration. Auto-commit is off: offsets are
    /// committed only once a batch's effects are durable. A reserved
    /// property in `extra` (see [`validate`](Self::validate)) is never
    /// passed on.
    pub fn client_config(&self, cluster: &Cluster) -> ClientConfig {
        let mut c = cluster.client_config();
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval_ms.to_string(),
            )
            .set("enable.partition.eof", "false")
            // librdkafka's default, said out loud: records of a transaction
            // (the scorer's) are read once it commits, never if it aborts.
            .set("isolation.level", "read_committed")
            // Bounds the prefetched records held in memory (librdkafka's
            // default is 64 MiB; the runtime holds one more batch while a
            // backlog drains). With the bound hit, librdkafka waits
            // `fetch.queue.backoff.ms` (default 1 s) before fetching the
            // partition again: that stalled a fast consumer for most of its
            // time, so it resumes fetching after 10 ms.
            .set("queued.max.messages.kbytes", "8192")
            .set("fetch.queue.backoff.ms", "10")
            // A fetch response is held whole while it is parsed and its
            // record batches decompressed, and Apache Kafka fills one up to
            // `fetch.max.bytes` (50 MiB by default) from every assigned
            // partition at once: that, not the queue above, set the sink's
            // peak memory. 1 MiB costs no throughput here
            // (`scripts/bench sink-postgres`, docs/benchmarks.md). A record
            // larger than this still comes whole (a broker always returns
            // the first record batch of a fetch).
            .set("fetch.max.bytes", "1048576")
            // Larger than any record we accept, so that an oversized record
            // reaches us and goes to the DLQ instead of stalling the fetcher.
            .set(
                "fetch.message.max.bytes",
                (self.max_record_bytes.max(1_048_576) * 2).to_string(),
            );
        for (k, v) in &self.extra {
            if !is_reserved(k, CONSUMER_RESERVED) {
                c.set(k, v);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_owned(), v.to_owned())])
    }

    fn config_error(r: Result<(), KafkaError>) -> String {
        match r {
            Err(KafkaError::Config(m)) => m,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn producer_extra_cannot_switch_off_idempotence_or_acks() {
        for (key, value, reserved) in [
            ("enable.idempotence", "false", "enable.idempotence"),
            ("acks", "1", "acks"),
            ("request.required.acks", "0", "request.required.acks"),
            (" ACKS ", "0", "acks"),
        ] {
            let p = ProducerConfig {
                extra: extra(key, value),
                ..ProducerConfig::default()
            };
            let m = config_error(p.validate());
            assert!(m.contains(&format!("`{key}`")), "{m}");
            assert!(m.contains("kafka.producer.extra"), "{m}");
            assert!(m.contains(&format!("Vigie always sets {reserved}=")), "{m}");
            let why = PRODUCER_RESERVED
                .iter()
                .find(|r| r.key == reserved)
                .unwrap();
            assert!(m.contains(why.why), "{m}");

            // Refused when the settings are loaded...
            let err = serde_json::from_value::<ProducerConfig>(serde_json::json!({
                "extra": { key: value }
            }))
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");

            // ...and never reaches librdkafka from settings built in code.
            let c = p.client_config(&Cluster::new("localhost:9092"));
            assert_eq!(c.get("enable.idempotence"), Some("true"));
            assert_eq!(c.get("acks"), Some("all"));
            assert_ne!(c.get(key), Some(value), "{key} passed on");
        }
    }

    #[test]
    fn consumer_extra_cannot_switch_on_auto_commit_or_auto_offset_store() {
        for key in ["enable.auto.commit", "enable.auto.offset.store"] {
            let c = ConsumerConfig {
                extra: extra(key, "true"),
                ..ConsumerConfig::default()
            };
            let m = config_error(c.validate());
            assert!(m.contains(&format!("`{key}`")), "{m}");
            assert!(m.contains("kafka.consumer.extra"), "{m}");
            assert!(m.contains("committed"), "{m}");

            let err = serde_json::from_value::<ConsumerConfig>(serde_json::json!({
                "group_id": "g",
                "extra": { key: "true" }
            }))
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");

            let cc = c.client_config(&Cluster::new("localhost:9092"));
            assert_eq!(cc.get("enable.auto.commit"), Some("false"));
            assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        }
    }

    #[test]
    fn other_extra_properties_pass_through_and_override_defaults() {
        let p: ProducerConfig = serde_json::from_value(serde_json::json!({
            "extra": { "linger.ms": "5", "security.protocol": "ssl" }
        }))
        .unwrap();
        p.validate().unwrap();
        let c = p.client_config(&Cluster::new("b:9092"));
        assert_eq!(c.get("linger.ms"), Some("5"));
        assert_eq!(c.get("security.protocol"), Some("ssl"));

        let k: ConsumerConfig = serde_json::from_value(serde_json::json!({
            "extra": { "queued.max.messages.kbytes": "65536" }
        }))
        .unwrap();
        k.validate().unwrap();
        let c = k.client_config(&Cluster::new("b:9092"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("65536"));

        ProducerConfig::default().validate().unwrap();
        ConsumerConfig::default().validate().unwrap();
    }
}
