//! The sink contract and the registry of sinks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vigie_core::Event;
use vigie_kafka::GroupMetadata;
use vigie_kafka::consumer::TopicPartition;
use vigie_kafka::dlq::{Letter, Origin};

/// An event that passed validation, with its index in the batch.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Position of the record in the batch (for DLQ coordinates).
    pub index: usize,
    /// The partition it was read from: a sink may write partitions in
    /// parallel, each with its own offsets.
    pub partition: i32,
    /// The validated event, typed where Vigie has a type for its schema.
    pub event: Event,
}

/// An event the sink refused on its own merits (e.g. a constraint): it goes
/// to the DLQ and the rest of the batch is committed.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Position of the record in the batch.
    pub index: usize,
    /// Bounded reason code.
    pub reason: &'static str,
    /// What was wrong.
    pub error: String,
}

/// What the sink needs to know of the batch besides its events.
#[derive(Debug, Clone)]
pub struct BatchContext<'a> {
    /// The consumer group.
    pub group: &'a str,
    /// One past the last record of the batch, per partition: a sink that
    /// stores offsets writes these in the same transaction as the rows.
    pub next_offsets: &'a BTreeMap<TopicPartition, i64>,
    /// For a sink with an outbox ([`Sink::outbox`]): the letters of the
    /// batch's records refused at the edge, to store with the rows; for a
    /// sink that commits in a transaction
    /// ([`Sink::commits_in_transaction`]): to publish in it. Empty for
    /// other sinks (the runtime publishes those letters itself).
    pub dead_letters: &'a [OutboxLetter],
    /// The partitions the member held when the batch was collected (a
    /// sink that orders events across partitions waits for each).
    pub assigned: &'a BTreeSet<TopicPartition>,
    /// The member's group membership when the batch was collected, for a
    /// sink that commits the batch's offsets in its own Kafka transaction.
    pub group_metadata: Option<&'a GroupMetadata>,
}

/// A dead letter kept in a sink's outbox until it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxLetter {
    /// The refused record's topic, partition and offset: with the group,
    /// the letter's identity (a member refuses a record once).
    pub origin: Origin,
    /// The letter, ready to publish.
    pub letter: Letter,
    /// When it was stored, in milliseconds since the epoch (0 before).
    pub stored_ms: i64,
}

/// Hands a sink's refused events to the DLQ. A sink without an outbox
/// calls [`publish`](Self::publish) before committing, so that no refused
/// event can be lost between its commit and the DLQ (at-least-once: a
/// crash between the two publishes them again). A sink with an outbox
/// stores [`letters`](Self::letters) in the transaction of its rows and
/// offsets; the runtime publishes them after the commit, once each.
#[async_trait::async_trait]
pub trait Rejects: Send {
    /// Publishes and waits for the broker's acknowledgement.
    async fn publish(&mut self, rejected: &[Rejected]) -> Result<(), SinkError>;

    /// The letters of `rejected`, for a sink with an outbox to store.
    fn letters(&mut self, rejected: &[Rejected]) -> Vec<OutboxLetter>;
}

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: connection lost, timeout, serialization failure.
    #[error("retryable sink error: {0}")]
    Retryable(String),
    /// Retrying cannot help: the component stops without committing.
    #[error("fatal sink error: {0}")]
    Fatal(String),
    /// The store holds a later offset than the batch's for one of its
    /// partitions: another member took the partition over while this one
    /// was writing. Nothing of the batch was written; the runtime reads the
    /// stored offsets again instead of committing.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// The dead letters a sink stores with its batches, until the runtime has
/// published them. A handle of its own, so that the letters of one batch
/// go out while the next one is written.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// The letters of `group` stored and not yet published, for the
    /// records of `partitions`, in origin order.
    async fn pending(
        &self,
        group: &str,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<OutboxLetter>, SinkError>;

    /// Records that the letters of `group` from `origins` are published.
    async fn published(&self, group: &str, origins: &[Origin]) -> Result<(), SinkError>;
}

/// Where a consumer writes its events.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Writes the batch's accepted events durably, publishing the events it
    /// refuses one by one through `rejects` before its own commit; returns
    /// how many it wrote. An `Err` means nothing of the batch was written.
    async fn write(
        &mut self,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError>;

    /// For a sink that stores consumed offsets with its data (exactly-once):
    /// the next offset to read for every partition it has seen for `group`.
    /// `None`: the sink keeps no offsets and Kafka's commits are the truth.
    async fn stored_offsets(
        &mut self,
        _group: &str,
    ) -> Result<Option<BTreeMap<TopicPartition, i64>>, SinkError> {
        Ok(None)
    }

    /// The sink's dead-letter outbox, for a sink that keeps dead letters
    /// in the same transaction as its rows and offsets: then every refused
    /// record reaches the DLQ exactly once, across crashes and restarts.
    /// The runtime publishes its letters beside the sink's writes.
    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        None
    }

    /// For a sink that publishes to Kafka in transactions: it commits each
    /// batch's offsets ([`BatchContext::next_offsets`], as the member of
    /// [`BatchContext::group_metadata`]) in the transaction of its output,
    /// with the batch's dead letters ([`BatchContext::dead_letters`] and
    /// its own refusals, from [`Rejects::letters`]). The runtime then
    /// neither commits offsets nor publishes letters for it. A sink whose
    /// commit the broker refuses because the group rebalanced returns
    /// [`SinkError::Fenced`].
    fn commits_in_transaction(&self) -> bool {
        false
    }

    /// A real round trip to the store, for `/readyz`; `None` when the sink
    /// has no store.
    fn health_probe(&self) -> Option<HealthProbe> {
        None
    }
}

/// A readiness check that can run beside the sink's own work.
pub type HealthProbe = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The `[consumers.sinks]` table: one section per sink, by registry name,
/// each read by its own sink with unknown keys refused
/// ([`SinksConfig::check`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct SinksConfig(pub BTreeMap<String, toml::Table>);

impl SinksConfig {
    /// Every section names a registered sink and reads as its
    /// configuration.
    pub fn check(&self) -> Result<(), SectionError> {
        for (name, section) in &self.0 {
            let error = |message| SectionError {
                section: format!("consumers.sinks.{name}"),
                message,
            };
            let spec = spec(name).map_err(error)?;
            (spec.check)(section).map_err(error)?;
        }
        Ok(())
    }

    /// The section of sink `name`; empty when the configuration has none.
    pub fn section(&self, name: &str) -> toml::Table {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

/// A `[consumers.sinks.<name>]` section that is not a sink's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{section}: {message}")]
pub struct SectionError {
    /// The dotted section, `consumers.sinks.<name>`.
    pub section: String,
    /// What was wrong: an unknown sink, an unknown key, a wrong value.
    pub message: String,
}

/// Printed with every sink's secrets as `***`, like [`vigie_config::Secret`].
impl serde::Serialize for SinksConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut redacted = self.0.clone();
        for (name, section) in &mut redacted {
            let secrets = REGISTRY
                .iter()
                .find(|s| s.name == name)
                .map_or(&[][..], |s| s.secrets);
            for key in secrets {
                if let Some(v) = section.get_mut(*key) {
                    *v = toml::Value::String("***".into());
                }
            }
        }
        redacted.serialize(serializer)
    }
}

/// The Kafka settings a sink that publishes creates its producer from.
#[derive(Debug, Clone)]
pub struct KafkaClients {
    /// The cluster and its connection settings.
    pub cluster: vigie_kafka::Cluster,
    /// `[kafka.producer]`.
    pub producer: vigie_kafka::ProducerConfig,
    /// Where the producer's metrics go.
    pub metrics: vigie_kafka::KafkaMetrics,
    /// The consumer group the sink's runtime joins.
    pub group: String,
}

impl KafkaClients {
    /// A producer that publishes and waits for acknowledgements.
    pub fn producer(&self) -> Result<vigie_kafka::EventProducer, SinkError> {
        vigie_kafka::EventProducer::new(&self.cluster, &self.producer, self.metrics.clone())
            .map_err(|e| SinkError::Fatal(e.to_string()))
    }

    /// A producer that publishes in transactions, registered with the
    /// broker under `txn.id` (an older process of the same id is fenced).
    pub async fn transactional(
        &self,
        txn: &vigie_kafka::Transactions,
    ) -> Result<vigie_kafka::EventProducer, SinkError> {
        vigie_kafka::EventProducer::transactional(
            &self.cluster,
            &self.producer,
            self.metrics.clone(),
            txn,
        )
        .await
        .map_err(|e| SinkError::Fatal(format!("transactional.id {}: {e}", txn.id)))
    }
}

/// What a sink's builder gets.
pub struct BuildArgs<'a> {
    /// Its `[consumers.sinks.<name>]` section (empty when absent).
    pub section: toml::Table,
    /// The sink's registry name, for messages.
    pub name: &'static str,
    /// For a sink that publishes to Kafka.
    pub kafka: &'a KafkaClients,
    /// Where its metrics go.
    pub registry: &'a prometheus::Registry,
}

impl BuildArgs<'_> {
    /// The section as the sink's own configuration type.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, SinkError> {
        parse(&self.section)
            .map_err(|e| SinkError::Fatal(format!("consumers.sinks.{}: {e}", self.name)))
    }
}

/// A section as `T`; the error says what was wrong.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(section: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(section.clone())).map_err(|e| e.to_string().trim().to_owned())
}

/// Reads a section as `T`, for [`SinkSpec::check`].
pub fn check_section<T: serde::de::DeserializeOwned>(section: &toml::Table) -> Result<(), String> {
    parse::<T>(section).map(drop)
}

/// The future a sink's builder returns.
pub type BuildFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Box<dyn Sink>, SinkError>> + Send + 'a>,
>;

/// A registry entry: one per sink, in [`REGISTRY`].
#[derive(Clone, Copy)]
pub struct SinkSpec {
    /// The one name of the sink: `--sink`, `[consumers.sinks.<name>]`, the
    /// folder under `sinks/`, the `component` metric label.
    pub name: &'static str,
    /// One line for `--help` and the docs.
    pub about: &'static str,
    /// Keys of its section that hold secrets: refused in a config file,
    /// taken from the environment or `<key>_file`, printed as `***`.
    pub secrets: &'static [&'static str],
    /// Reads a section without building anything (`vigie config check`).
    pub check: fn(&toml::Table) -> Result<(), String>,
    /// Builds the sink (connecting to its store, loading its model).
    pub build: for<'a> fn(BuildArgs<'a>) -> BuildFuture<'a>,
}

impl std::fmt::Debug for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSpec")
            .field("name", &self.name)
            .finish()
    }
}

/// Every sink Vigie ships. Adding one is a folder under `sinks/` and a line
/// here.
pub const REGISTRY: &[SinkSpec] = &[
    crate::sinks::blackhole::SPEC,
    crate::sinks::drift::SPEC,
    crate::sinks::postgres::SPEC,
    crate::sinks::scorer::SPEC,
    crate::sinks::scylla::SPEC,
];

/// The registry's names, for messages.
fn names() -> String {
    REGISTRY
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registry entry named `name`, or an error listing the known names.
pub fn spec(name: &str) -> Result<&'static SinkSpec, String> {
    REGISTRY
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("unknown sink `{name}` (expected one of: {})", names()))
}

/// `--sink NAME` on the command line: a registered sink.
impl std::str::FromStr for &'static SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        spec(s)
    }
}

impl SinkSpec {
    /// Builds this sink from its section of `config`.
    pub async fn build(
        &'static self,
        config: &SinksConfig,
        kafka: &KafkaClients,
        registry: &prometheus::Registry,
    ) -> Result<Box<dyn Sink>, SinkError> {
        (self.build)(BuildArgs {
            section: config.section(self.name),
            name: self.name,
            kafka,
            registry,
        })
        .await
    }

    /// The keys of every sink's secrets, as dotted configuration paths
    /// (`consumers.sinks.postgres.password`).
    pub fn secret_keys() -> impl Iterator<Item = String> {
        REGISTRY.iter().flat_map(|s| {
            s.secrets
                .iter()
                .map(move |k| format!("consumers.sinks.{}.{k}", s.name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sinks(text: &str) -> SinksConfig {
        SinksConfig(toml::from_str(text).expect("TOML"))
    }

    #[test]
    fn every_sink_has_one_name_and_reads_an_empty_section() {
        let mut names: Vec<_> = REGISTRY.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "a name used twice");
        for spec in REGISTRY {
            (spec.check)(&toml::Table::new()).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        }
    }

    #[test]
    fn an_unknown_sink_or_key_is_named_with_its_section() {
        let e = sinks("[postgress]\nurl = \"x\"").check().unwrap_err();
        assert_eq!(e.section, "consumers.sinks.postgress");
        assert!(e.message.contains("unknown sink `postgress`"), "{e}");
        assert!(
            e.message.contains("blackhole, drift, postgres, scorer"),
            "{e}"
        );
        let e = sinks("[postgres]\nurll = \"x\"").check().unwrap_err();
        assert_eq!(e.section, "consumers.sinks.postgres");
        assert!(e.message.contains("unknown field `urll`"), "{e}");
        let e = sinks("[postgres]\npool_size = \"four\"")
            .check()
            .unwrap_err();
        assert!(e.message.contains("invalid type"), "{e}");
        sinks("[postgres]\npool_size = 8\n[blackhole]")
            .check()
            .unwrap();
    }

    #[test]
    fn secrets_are_printed_as_stars_and_named_for_the_loader() {
        let config = sinks("[postgres]\nurl = \"postgres://db/vigie\"\npassword = \"hunter2\"");
        let printed = toml::to_string(&config).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("password = \"***\""), "{printed}");
        assert!(printed.contains("postgres://db/vigie"), "{printed}");
        assert!(
            SinkSpec::secret_keys().any(|k| k == "consumers.sinks.postgres.password"),
            "the loader refuses the password in a config file only if it knows the key"
        );
    }
}
