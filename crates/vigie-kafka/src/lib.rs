//! Kafka plumbing shared by every Vigie producer and consumer.
//!
//! Everything here is standard Kafka through librdkafka (rdkafka), tested
//! against Apache Kafka; nothing is specific to one broker.

pub mod admin;
pub mod changelog;
pub mod cluster;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod error;
pub mod lag;
pub mod metrics;
pub mod producer;
pub mod record;
pub mod transaction;

pub use admin::{TopicOutcome, TopicSpec, ensure_topics, ping};
pub use cluster::Cluster;
pub use config::{ConsumerConfig, ProducerConfig};
pub use consumer::{Batch, BatchConsumer};
pub use dlq::{DeadLetter, DlqPublisher, dlq_topic};
pub use error::KafkaError;
pub use lag::{PartitionLag, commit_group_offsets, group_lag, group_members, offsets_for_time};
pub use metrics::KafkaMetrics;
pub use producer::{Delivered, EventProducer, OutRecord, Pipeline};
pub use record::Record;
pub use transaction::{GroupMetadata, Transactions, TxnFailure};
