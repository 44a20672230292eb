//! One Kafka transaction per batch, for the sinks that commit in one
//! ([`Sink::commits_in_transaction`](crate::Sink::commits_in_transaction)):
//! the batch's output records, its dead letters and its consumed offsets
//! become visible to `read_committed` readers together, or not at all. The
//! scorer publishes its scores this way; the ScyllaDB sink its dead letters.

use prometheus::{IntCounterVec, Opts, Registry};
use tracing::error;
use vigie_kafka::dlq::Letter;
use vigie_kafka::{EventProducer, OutRecord, TxnFailure};

use crate::sink::{BatchContext, KafkaClients, Rejected, Rejects, SinkError};

/// The transactional settings of a member of `group` of `component`:
/// `id`, else `vigie-<component>-<group>-<host name>` (stable across
/// restarts of a member, as a StatefulSet's pod names are; distinct
/// between members).
pub fn member_transactions(
    component: &str,
    id: Option<&str>,
    group: &str,
    timeout_ms: u64,
) -> vigie_kafka::Transactions {
    let id = id.map(str::to_owned).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("vigie-{component}-{group}-{host}")
    });
    vigie_kafka::Transactions {
        id,
        timeout: std::time::Duration::from_millis(timeout_ms),
    }
}

/// Commits batches in transactions of a transactional producer, and
/// counts the aborted ones.
pub struct TxnCommits {
    /// `<metric>{cause}`: aborted transactions.
    aborted: IntCounterVec,
    /// How to register the producer again once it is fenced or stuck.
    renew: Option<(KafkaClients, vigie_kafka::Transactions)>,
}

impl TxnCommits {
    /// Registers `metric` (`vigie_<component>_transactions_aborted_total`),
    /// its `cause` labels at zero. Without [`renewing`](Self::renewing), a
    /// fenced producer stops the sink.
    pub fn register(registry: &Registry, metric: &str, help: &str) -> Result<Self, SinkError> {
        let fatal = |e: prometheus::Error| SinkError::Fatal(format!("{metric}: {e}"));
        let aborted = IntCounterVec::new(Opts::new(metric, help), &["cause"]).map_err(fatal)?;
        for cause in TxnFailure::ALL {
            aborted.with_label_values(&[cause.as_str()]);
        }
        registry
            .register(Box::new(aborted.clone()))
            .map_err(fatal)?;
        Ok(Self {
            aborted,
            renew: None,
        })
    }

    /// A fenced or stuck producer is replaced by a new registration of
    /// `txn` with `clients`.
    pub fn renewing(mut self, clients: KafkaClients, txn: vigie_kafka::Transactions) -> Self {
        self.renew = Some((clients, txn));
        self
    }

    /// In one transaction of `producer`: `records`, the batch's dead
    /// letters (the runtime's, in `ctx`, and the sink's own `refused`,
    /// addressed by `rejects`) and the batch's offsets (`ctx`). A failed step aborts it: the broker
    /// refusing the offsets because the group rebalanced is
    /// [`SinkError::Fenced`]; a fenced producer is registered again (and
    /// replaces `producer`); the batch is tried again after any other
    /// failure.
    pub async fn commit(
        &self,
        producer: &mut EventProducer,
        records: Vec<OutRecord<'_>>,
        refused: &[Rejected],
        rejects: &mut dyn Rejects,
        ctx: &BatchContext<'_>,
    ) -> Result<(), SinkError> {
        let Some(group) = ctx.group_metadata else {
            return Err(SinkError::Fatal(
                "a transaction needs the batch's group membership; the consumer has none".into(),
            ));
        };
        let mut letters: Vec<Letter> = ctx.dead_letters.iter().map(|l| l.letter.clone()).collect();
        letters.extend(rejects.letters(refused).into_iter().map(|l| l.letter));
        let attempt = async {
            producer.begin_transaction()?;
            if !records.is_empty() {
                producer.send_all(records).await?;
            }
            vigie_kafka::dlq::send_letters(producer, &letters).await?;
            producer.commit_transaction(ctx.next_offsets, group).await
        };
        let Err(e) = attempt.await else {
            return Ok(());
        };
        let failure = e.txn_failure();
        self.aborted.with_label_values(&[failure.as_str()]).inc();
        if failure == TxnFailure::Fatal {
            return Err(self.renew(producer, &e).await);
        }
        if let Err(abort) = producer.abort_transaction().await {
            if abort.txn_failure() == TxnFailure::Fatal {
                return Err(self.renew(producer, &abort).await);
            }
            // The broker unreachable, say: the next attempt aborts first.
            return Err(SinkError::Retryable(format!(
                "transaction: {e}; then aborting it failed: {abort}"
            )));
        }
        match failure {
            TxnFailure::GroupFenced => Err(SinkError::Fenced(format!(
                "the group rebalanced since the batch was read; its transaction is aborted: {e}"
            ))),
            _ => Err(SinkError::Retryable(format!("transaction aborted: {e}"))),
        }
    }

    /// After the producer was fenced (`e`): the broker timed its
    /// transaction out (this member was paused or cut off longer than its
    /// transaction timeout), or another process registered its
    /// `transactional.id`; or after it got stuck in a step (a librdkafka
    /// bug after a broker restart), which a new registration fences.
    /// Nothing of the batch is committed. A new registration gets a new
    /// epoch, and the batch is tried again with the group membership it
    /// was read under, so a member whose partitions moved on is then
    /// refused as group-fenced.
    async fn renew(&self, producer: &mut EventProducer, e: &vigie_kafka::KafkaError) -> SinkError {
        let Some((clients, txn)) = &self.renew else {
            return SinkError::Fatal(format!("transaction: {e}"));
        };
        error!(transactional_id = %txn.id, error = %e, "Producer fenced or stuck; registering it again (if fencing repeats, two members share this transactional.id)");
        match clients.transactional(txn).await {
            Ok(renewed) => {
                *producer = renewed;
                SinkError::Retryable(format!("producer fenced, registered again: {e}"))
            }
            // The broker unreachable, say: the next attempt finds the old
            // producer fenced again and tries once more.
            Err(again) => SinkError::Retryable(format!(
                "producer fenced ({e}); registering it again failed: {again}"
            )),
        }
    }
}
