//! Kafka transactions: a producer whose records and the consumer offsets
//! of the batch they came from are committed together, or not at all
//! (consume-transform-produce, as Kafka Streams does it).
//!
//! Fencing follows KIP-447: a batch carries the group metadata (member id
//! and generation) of the moment it was collected, and the broker refuses
//! its offsets once the group has rebalanced since, so a member paused
//! while its partitions moved on cannot commit. The `transactional.id`
//! fences an older process of the same member: the newer one's start
//! aborts whatever the older one left open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;

use crate::cluster::Cluster;
use crate::config::ProducerConfig;
use crate::consumer::TopicPartition;
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;
use crate::producer::EventProducer;

/// How long a transaction step (start, offsets, commit, abort) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long past [`STEP_TIMEOUT`] a step may go on before its producer is
/// deemed stuck ([`KafkaError::Stuck`]): librdkafka's own timeout does not
/// always fire (confluentinc/librdkafka#5456: `send_offsets_to_transaction`
/// waiting forever on a group coordinator after a broker restart).
const STUCK_AFTER: Duration = Duration::from_secs(40);

/// The transactional settings of a producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transactions {
    /// `transactional.id`: stable across restarts of one member, distinct
    /// between members.
    pub id: String,
    /// `transaction.timeout.ms`: how long the broker lets a transaction stay
    /// open before aborting it, so how long a crashed member's open
    /// transaction holds `read_committed` readers back if it never restarts.
    pub timeout: Duration,
}

/// A consumer's group membership when a batch was collected: member id and
/// generation, for [`EventProducer::commit_transaction`].
#[derive(Clone)]
pub struct GroupMetadata(pub(crate) Arc<ConsumerGroupMetadata>);

impl std::fmt::Debug for GroupMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupMetadata")
    }
}

/// What a failed transaction step leaves the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFailure {
    /// The group rebalanced since the batch was collected: this member no
    /// longer owns (all of) its partitions. Abort; the batch is the new
    /// owner's to read again.
    GroupFenced,
    /// The transaction can be aborted and the batch tried again.
    Abortable,
    /// The producer is unusable: another process took its
    /// `transactional.id`, or the broker aborted its transaction after
    /// its timeout. Nothing of the open transaction commits.
    Fatal,
    /// Worth retrying the same step.
    Retriable,
}

impl TxnFailure {
    /// Every failure, for metric labels.
    pub const ALL: [Self; 4] = [
        Self::GroupFenced,
        Self::Abortable,
        Self::Fatal,
        Self::Retriable,
    ];

    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GroupFenced => "group_fenced",
            Self::Abortable => "abortable",
            Self::Fatal => "fatal",
            Self::Retriable => "retriable",
        }
    }
}

impl KafkaError {
    /// For an error of a transaction step: what the caller may do next.
    pub fn txn_failure(&self) -> TxnFailure {
        let err = match self {
            Self::Transaction { source, .. } | Self::Delivery { source, .. } => source,
            Self::Client(e) => e,
            // Only a new registration of the id gets a usable producer.
            Self::Stuck { .. } => return TxnFailure::Fatal,
            _ => return TxnFailure::Abortable,
        };
        let group_fenced = matches!(
            err.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::FencedInstanceId
                    | RDKafkaErrorCode::RebalanceInProgress
            )
        );
        let rd = match err {
            rdkafka::error::KafkaError::Transaction(rd) => Some(rd),
            _ => None,
        };
        if rd.is_some_and(|r| r.is_fatal()) {
            TxnFailure::Fatal
        } else if group_fenced {
            TxnFailure::GroupFenced
        } else if rd.is_some_and(|r| r.is_retriable()) {
            TxnFailure::Retriable
        } else {
            TxnFailure::Abortable
        }
    }
}

/// Longest linger of a transactional producer, in milliseconds.
const TXN_LINGER_MS: u64 = 2;

impl EventProducer {
    /// A producer with `transactional.id` set, registered with the broker:
    /// an older process of the same id is fenced and its open transaction
    /// aborted.
    pub async fn transactional(
        cluster: &Cluster,
        config: &ProducerConfig,
        metrics: KafkaMetrics,
        txn: &Transactions,
    ) -> Result<Self, KafkaError> {
        config.validate()?;
        let mut client = config.client_config(cluster);
        let timeout_ms = txn.timeout.as_millis() as u64;
        client
            .set("transactional.id", &txn.id)
            .set("transaction.timeout.ms", timeout_ms.to_string())
            // A record cannot outlive its transaction (librdkafka refuses
            // a longer delivery timeout).
            .set(
                "delivery.timeout.ms",
                config.delivery_timeout_ms.min(timeout_ms).to_string(),
            )
            // A transaction's records are handed over at once, and their
            // acknowledgements awaited before the commit: a longer linger
            // only delays the commit. (Waiting on librdkafka's own flush
            // instead was slower: about 120 ms per batch against 45.)
            .set("linger.ms", config.linger_ms.min(TXN_LINGER_MS).to_string());
        // A transaction begun right after the previous one committed is
        // refused (CONCURRENT_TRANSACTIONS) until the broker has written the
        // previous one's markers, a few milliseconds; librdkafka retries
        // after `retry.backoff.ms`, 100 ms by default, which held a batch
        // back that long. Apache Kafka's Java producer retries this case
        // after 20 ms; so does Vigie, unless `extra` says otherwise (the
        // backoff still grows, up to `retry.backoff.max.ms`, while a
        // broker is down).
        if !config.extra.contains_key("retry.backoff.ms") {
            client.set("retry.backoff.ms", "20");
        }
        let mut producer = Self::from_client_config(client, metrics)?;
        producer.transactional = true;
        producer
            .blocking("initialising transactions", |p| {
                p.init_transactions(STEP_TIMEOUT)
            })
            .await?;
        Ok(producer)
    }

    /// Opens a transaction: what is sent until it commits is invisible to
    /// `read_committed` readers.
    pub fn begin_transaction(&self) -> Result<(), KafkaError> {
        self.inner
            .begin_transaction()
            .map_err(|source| KafkaError::Transaction {
                step: "beginning a transaction",
                source,
            })
    }

    /// Adds `offsets` (the next offset to read per partition) of the member
    /// described by `group` to the open transaction, then commits it. A
    /// step that fails with a retriable error (a timeout) is called again,
    /// as librdkafka prescribes: it resumes where it stopped.
    pub async fn commit_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, i64>,
        group: &GroupMetadata,
    ) -> Result<(), KafkaError> {
        if !offsets.is_empty() {
            let tpl = crate::consumer::offset_list(offsets)?;
            let group = Arc::clone(&group.0);
            self.retrying("adding the consumed offsets to the transaction", move |p| {
                p.send_offsets_to_transaction(&tpl, &group, STEP_TIMEOUT)
            })
            .await?;
        }
        self.retrying("committing the transaction", |p| {
            p.commit_transaction(STEP_TIMEOUT)
        })
        .await
    }

    /// Runs a transaction step, again while it fails with a retriable
    /// error, up to three times in all.
    async fn retrying<F>(&self, step: &'static str, call: F) -> Result<(), KafkaError>
    where
        F: Fn(&crate::producer::Client) -> rdkafka::error::KafkaResult<()> + Send + Sync + 'static,
    {
        let call = Arc::new(call);
        let mut attempts = 1;
        loop {
            let once = Arc::clone(&call);
            match self.blocking(step, move |p| once(p)).await {
                Err(e) if attempts < 3 && e.txn_failure() == TxnFailure::Retriable => {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// Aborts the open transaction: nothing sent in it becomes visible to
    /// `read_committed` readers.
    pub async fn abort_transaction(&self) -> Result<(), KafkaError> {
        self.blocking("aborting the transaction", |p| {
            p.abort_transaction(STEP_TIMEOUT)
        })
        .await
    }

    /// Runs a blocking librdkafka call off the async workers, for at most
    /// [`STUCK_AFTER`].
    async fn blocking<F>(&self, step: &'static str, call: F) -> Result<(), KafkaError>
    where
        F: FnOnce(&crate::producer::Client) -> rdkafka::error::KafkaResult<()> + Send + 'static,
    {
        within(STUCK_AFTER, step, Arc::clone(&self.inner), call).await
    }
}

/// Runs `call` on `client` in a blocking thread; a call still running
/// after `limit` is left to finish on its own, and is [`KafkaError::Stuck`]:
/// the caller replaces the producer (a new registration of its
/// `transactional.id` fences the stuck one).
async fn within<C, F>(
    limit: Duration,
    step: &'static str,
    client: Arc<C>,
    call: F,
) -> Result<(), KafkaError>
where
    C: Send + Sync + 'static,
    F: FnOnce(&C) -> rdkafka::error::KafkaResult<()> + Send + 'static,
{
    let running = tokio::task::spawn_blocking(move || call(&client));
    match tokio::time::timeout(limit, running).await {
        Ok(joined) => joined
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(|source| KafkaError::Transaction { step, source }),
        Err(_) => {
            tracing::error!(step, after = ?limit, "Transaction step stuck past its timeout; the producer will be replaced (confluentinc/librdkafka#5456)");
            Err(KafkaError::Stuck { step, after: limit })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_stuck_past_its_limit_is_fatal_and_a_prompt_one_is_not() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stuck = within(
            Duration::from_millis(50),
            "adding the consumed offsets to the transaction",
            Arc::new(std::sync::Mutex::new(rx)),
            |rx| {
                // Returns once the test lets it, after the verdict (or
                // after 10 s, when no verdict came in time).
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                Ok(())
            },
        )
        .await
        .unwrap_err();
        tx.send(()).unwrap();
        assert!(matches!(stuck, KafkaError::Stuck { .. }), "{stuck}");
        assert_eq!(stuck.txn_failure(), TxnFailure::Fatal);
        assert!(
            stuck.to_string().contains("adding the consumed offsets"),
            "{stuck}"
        );

        // A call that returns in time keeps its own error, and its verdict.
        let refused = within(Duration::from_secs(60), "committing", Arc::new(()), |_| {
            Err(rdkafka::error::KafkaError::Canceled)
        })
        .await
        .unwrap_err();
        assert!(matches!(
            refused,
            KafkaError::Transaction {
                step: "committing",
                ..
            }
        ));
        assert_eq!(refused.txn_failure(), TxnFailure::Abortable);
        within(Duration::from_secs(60), "committing", Arc::new(()), |_| {
            Ok(())
        })
        .await
        .unwrap();
    }
}
