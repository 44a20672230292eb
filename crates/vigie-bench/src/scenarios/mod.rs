//! One module per scenario, named after it.

pub(crate) mod archive;
pub(crate) mod drift;
pub(crate) mod producer;
pub(crate) mod producer_http;
pub(crate) mod producer_perf_test;
pub(crate) mod scorer;
pub(crate) mod scorer_e2e;
pub(crate) mod sink_postgres;
pub(crate) mod sink_postgres_connect;
pub(crate) mod sink_postgres_latency;
pub(crate) mod sink_postgres_poison;
pub(crate) mod sink_scylla;
pub(crate) mod tls;

use clap::Subcommand;

use crate::common::Vigie;

/// The scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// `vigie archive` of a topic vs `kcat -C -e -J | zstd -3`, then
    /// `vigie restore` of it into a new topic vs `zstd -dc | kcat -P` of
    /// the same keys and values.
    Archive(archive::Args),
    /// Raw envelope producer (`vigie produce`) vs `kcat -P`: the same
    /// serialized events into the same broker and topic layout.
    Producer(producer::Args),
    /// Raw envelope producer (`vigie produce`) vs Apache Kafka's own
    /// `kafka-producer-perf-test`: records drawn from the same serialized
    /// envelopes, the same acks, idempotence, compression, linger and batch
    /// size, into the same broker and topic layout.
    ProducerPerfTest(producer_perf_test::Args),
    /// `vigie ingest --source cdc-cases` from the HTTP simulator (fetch,
    /// parse, envelope, produce, checkpoint) vs `kcat -P` of the same
    /// envelopes pre-serialized in a file; with the producer's peak RSS.
    ProducerHttp(producer_http::Args),
    /// `vigie consume --sink postgres` (exactly-once) vs `kcat -C | psql
    /// \copy` + the same upsert, and vs `psql \copy` of the final rows from
    /// a file; with the sink's peak RSS.
    SinkPostgres(sink_postgres::Args),
    /// `vigie consume --sink postgres` vs Kafka Connect standalone running
    /// the Debezium JDBC sink connector (upsert on the record key) into the
    /// same table, on the same backlog (as JSON with its schema for
    /// Connect); with each one's peak RSS, then duplicate writes and losses
    /// of each after `kill -9`s at the same points.
    SinkPostgresConnect(sink_postgres_connect::Args),
    /// `vigie consume --sink postgres` on a backlog with 10 % poison
    /// records (every kind the sink refuses, at the edge and in PostgreSQL,
    /// dead-lettered through its outbox) vs the same good events without
    /// poison; events/s over every record read.
    SinkPostgresPoison(sink_postgres_poison::Args),
    /// `vigie consume --sink postgres` already consuming a topic into
    /// which cases are produced at a steady rate: the p99 time from a
    /// case's produce to its row visible, against the 250 ms bar.
    SinkPostgresLatency(sink_postgres_latency::Args),
    /// `vigie consume --sink scylla` vs `cqlsh COPY FROM` a CSV file of the
    /// same rows, and vs the Python `cassandra-driver`'s
    /// `execute_concurrent_with_args` of the same prepared insert, on the
    /// same CQL server; with the sink's peak RSS.
    SinkScylla(sink_scylla::Args),
    /// The scorer (JSON in, score out, broker excluded) vs Python
    /// onnxruntime on the same rows in batches of the same size.
    Scorer(scorer::Args),
    /// `vigie consume --sink scorer` on the broker (consume, score, publish,
    /// commit) vs `--sink blackhole` on the same backlog; then the p99
    /// latency from a case's produce to its score visible to a
    /// `read_committed` reader, at a steady rate.
    ScorerE2e(scorer_e2e::Args),
    /// The drift component's work on a stream of cases and scores (JSON
    /// decoding, event-time windows, every statistic judged into reports),
    /// broker excluded, vs Evidently's `Report.run` with the same stat
    /// tests on the same windows.
    Drift(drift::Args),
    /// `vigie produce` and `vigie consume --sink postgres` over TLS (Kafka
    /// SASL_SSL with SCRAM-SHA-512, PostgreSQL `sslmode=verify-full`) vs
    /// the same over plaintext, side by side.
    Tls(tls::Args),
}

impl Scenario {
    /// Runs the scenario and records its result.
    pub(crate) async fn run(self, vigie: &Vigie) -> anyhow::Result<()> {
        match self {
            Self::Archive(a) => archive::run(vigie, a).await,
            Self::Producer(a) => producer::run(vigie, a).await,
            Self::ProducerPerfTest(a) => producer_perf_test::run(vigie, a).await,
            Self::ProducerHttp(a) => producer_http::run(vigie, a).await,
            Self::SinkPostgres(a) => sink_postgres::run(vigie, a).await,
            Self::SinkPostgresConnect(a) => sink_postgres_connect::run(vigie, a).await,
            Self::SinkPostgresPoison(a) => sink_postgres_poison::run(vigie, a).await,
            Self::SinkPostgresLatency(a) => sink_postgres_latency::run(vigie, a).await,
            Self::SinkScylla(a) => sink_scylla::run(vigie, a).await,
            Self::Scorer(a) => scorer::run(&a),
            Self::ScorerE2e(a) => scorer_e2e::run(vigie, a).await,
            Self::Drift(a) => drift::run(&a),
            Self::Tls(a) => tls::run(vigie, a).await,
        }
    }
}
