//! `scylla`: writes cases, country days and scores to ScyllaDB (or any
//! CQL server: Apache Cassandra 5 in the tests), in the tables of
//! `infra/scylla/schema.cql`, designed by query.
//!
//! Writes are prepared statements, marked idempotent, through the driver's
//! default policy (token- and shard-aware). The rows of a batch are grouped
//! by the replica (and shard) that stores their partition, a partition's
//! rows together, into unlogged batches of at most `batch_max_rows` rows
//! and `batch_max_bytes` bytes, the groups run `concurrency` at a time:
//! each batch is written by the node that stores all its rows. Each row
//! carries its version as its write timestamp (`USING TIMESTAMP`: the
//! upstream version, else the ingestion time, in microseconds), so a
//! replay or a late older version never overwrites a newer one. The
//! batch's offsets are committed only after every write of it is
//! acknowledged (rows at least once, idempotent, so replays converge);
//! with `exactly_once` they commit in one Kafka transaction with the
//! batch's dead letters, so each refused record reaches the DLQ once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;
use openssl::ssl::{SslConnector, SslMethod};
use prometheus::{HistogramVec, IntCounterVec, Registry};
use scylla::client::session::OpenSsl010Config;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use serde::{Deserialize, Serialize};
use vigie_config::Secret;
use vigie_core::Event;

use tracing::warn;
use vigie_kafka::EventProducer;

use crate::sink::{
    Accepted, BatchContext, HealthProbe, Rejected, Rejects, Sink, SinkError, SinkSpec,
};
use crate::transaction::TxnCommits;

/// The registry entry.
pub const SPEC: SinkSpec = SinkSpec {
    name: "scylla",
    about: "ScyllaDB (CQL): cases, country days and scores, idempotent by primary key",
    secrets: &["password"],
    check: |section| {
        let config: ScyllaConfig = crate::sink::parse(section)?;
        config.tls_context().map(drop).map_err(|e| e.to_string())
    },
    build: |args| {
        Box::pin(async move {
            let config: ScyllaConfig = args.config()?;
            let mut sink = ScyllaSink::connect(&config, args.registry).await?;
            if config.exactly_once {
                let txn = crate::transaction::member_transactions(
                    "scylla",
                    config.transactional_id.as_deref(),
                    &args.kafka.group,
                    config.transaction_timeout_ms,
                );
                let producer = args.kafka.transactional(&txn).await?;
                let commits = TxnCommits::register(
                    args.registry,
                    "vigie_scylla_transactions_aborted_total",
                    "Transactions of the ScyllaDB sink's dead letters and offsets aborted, by cause.",
                )?
                .renewing(args.kafka.clone(), txn);
                sink.txn = Some((producer, commits));
            }
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    },
};

/// The tables, as `infra/scylla/schema.cql` creates them.
pub const SCHEMA: &str = include_str!("../../../../infra/scylla/schema.cql");

/// Reason code of an event whose schema this sink does not store.
pub const REASON_UNSUPPORTED: &str = "unsupported_schema";

/// Buckets of a case's state-month partition, and of a score's model-day.
const CASE_BUCKETS: u8 = 32;
const SCORE_BUCKETS: u8 = 16;

/// The `[consumers.sinks.scylla]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port[,host:port]`.
    pub nodes: String,
    /// The keyspace of the tables.
    pub keyspace: String,
    /// Replicas per datacenter, for `NetworkTopologyStrategy` when the
    /// sink creates the keyspace.
    pub replication: BTreeMap<String, u32>,
    /// Create the keyspace and the tables at start-up when missing;
    /// `false`: check that the tables are there.
    pub create_schema: bool,
    /// Consistency of the writes: `one`, `local_one`, `quorum`,
    /// `local_quorum`, `each_quorum` or `all`.
    pub consistency: String,
    /// Time to live of the rows, in seconds; 0 keeps them.
    pub ttl_seconds: u32,
    /// Unlogged batches in flight at once.
    pub concurrency: usize,
    /// Rows per unlogged batch (one replica each), at most.
    pub batch_max_rows: usize,
    /// Bytes of bound values per unlogged batch, at most (a single larger
    /// row goes alone). The server refuses a batch whose mutations are
    /// over its `batch_size_fail_threshold` (50 KiB on Cassandra, 1 MiB on
    /// ScyllaDB); a mutation takes more than its values (on Cassandra 5,
    /// 32 KiB of case values were refused as over 50 KiB).
    pub batch_max_bytes: usize,
    /// User name, when the cluster authenticates.
    pub username: Option<String>,
    /// Password: only from `VIGIE__CONSUMERS__SINKS__SCYLLA__PASSWORD` or
    /// `password_file`.
    pub password: Option<Secret>,
    /// Connect over TLS, verifying each node's certificate against the
    /// node's IP address (the driver reaches nodes by address).
    pub tls: bool,
    /// PEM file of the CAs that sign the nodes' certificates, trusted
    /// instead of the system's; only with `tls`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Dead letters and consumed offsets of a batch commit in one Kafka
    /// transaction, after its rows are written: each refused record
    /// reaches the DLQ once, across crashes. `false`: letters published,
    /// then offsets committed (at least once).
    pub exactly_once: bool,
    /// The producer's `transactional.id`: stable across restarts of a
    /// member, distinct between members. Default `vigie-scylla-<group>-<host
    /// name>`.
    pub transactional_id: Option<String>,
    /// How long the broker keeps a transaction open before aborting it.
    pub transaction_timeout_ms: u64,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: "127.0.0.1:9042".into(),
            keyspace: "vigie".into(),
            replication: BTreeMap::from([("datacenter1".into(), 1)]),
            create_schema: true,
            consistency: "local_quorum".into(),
            ttl_seconds: 0,
            concurrency: 16,
            batch_max_rows: 50,
            batch_max_bytes: 16 * 1024,
            username: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            exactly_once: true,
            transactional_id: None,
            transaction_timeout_ms: 10_000,
        }
    }
}

impl ScyllaConfig {
    /// The TLS context of the connections, `None` without `tls`.
    fn tls_context(&self) -> Result<Option<OpenSsl010Config>, SinkError> {
        let fatal = |what: String| SinkError::Fatal(format!("consumers.sinks.scylla.{what}"));
        if !self.tls {
            return match &self.tls_ca_file {
                Some(path) => Err(fatal(format!(
                    "tls_ca_file is set ({}) but tls is false: set tls = true to connect over TLS",
                    path.display()
                ))),
                None => Ok(None),
            };
        }
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| fatal(format!("tls: OpenSSL: {e}")))?;
        if let Some(path) = &self.tls_ca_file {
            // OpenSSL's own error names neither the file nor the cause.
            let pem = std::fs::read(path)
                .map_err(|e| fatal(format!("tls_ca_file {}: {e}", path.display())))?;
            let cas = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                fatal(format!(
                    "tls_ca_file {}: not PEM certificates: {e}",
                    path.display()
                ))
            })?;
            if cas.is_empty() {
                return Err(fatal(format!(
                    "tls_ca_file {}: holds no PEM certificate",
                    path.display()
                )));
            }
            // Only these CAs, not the system's.
            let mut store = openssl::x509::store::X509StoreBuilder::new()
                .map_err(|e| fatal(format!("tls: OpenSSL: {e}")))?;
            for ca in cas {
                store
                    .add_cert(ca)
                    .map_err(|e| fatal(format!("tls_ca_file {}: {e}", path.display())))?;
            }
            builder
                .set_verify_cert_store(store.build())
                .map_err(|e| fatal(format!("tls: OpenSSL: {e}")))?;
        }
        Ok(Some(OpenSsl010Config::new(builder)))
    }

    fn consistency(&self) -> Result<Consistency, SinkError> {
        Ok(match self.consistency.to_ascii_lowercase().as_str() {
            "one" => Consistency::One,
            "local_one" => Consistency::LocalOne,
            "quorum" => Consistency::Quorum,
            "local_quorum" => Consistency::LocalQuorum,
            "each_quorum" => Consistency::EachQuorum,
            "all" => Consistency::All,
            other => {
                return Err(SinkError::Fatal(format!(
                    "consumers.sinks.scylla.consistency: '{other}' is not one of one, local_one, \
                     quorum, local_quorum, each_quorum, all"
                )));
            }
        })
    }
}

/// The sink's metrics.
#[derive(Clone)]
struct Metrics {
    rows: IntCounterVec,
    batches: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    warnings: IntCounterVec,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, SinkError> {
        let fatal = |e: prometheus::Error| SinkError::Fatal(format!("scylla metrics: {e}"));
        let m = Self {
            rows: IntCounterVec::new(
                prometheus::Opts::new("vigie_scylla_rows_total", "Rows written, by table"),
                &["table"],
            )
            .map_err(fatal)?,
            batches: IntCounterVec::new(
                prometheus::Opts::new("vigie_scylla_batches_total", "Unlogged batches written"),
                &["table"],
            )
            .map_err(fatal)?,
            errors: IntCounterVec::new(
                prometheus::Opts::new("vigie_scylla_errors_total", "Failed writes, by kind"),
                &["kind"],
            )
            .map_err(fatal)?,
            warnings: IntCounterVec::new(
                prometheus::Opts::new(
                    "vigie_scylla_server_warnings_total",
                    "Warnings the CQL server attached to the sink's writes, by kind",
                ),
                &["kind"],
            )
            .map_err(fatal)?,
            latency: HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "vigie_scylla_write_seconds",
                    "Time to write one unlogged batch",
                ),
                &["table"],
            )
            .map_err(fatal)?,
        };
        for kind in WarningKind::ALL {
            m.warnings.with_label_values(&[kind.as_str()]);
        }
        for c in [&m.rows, &m.batches, &m.errors, &m.warnings] {
            registry.register(Box::new(c.clone())).map_err(fatal)?;
        }
        registry
            .register(Box::new(m.latency.clone()))
            .map_err(fatal)?;
        Ok(m)
    }
}

/// One table's prepared insert.
struct Table {
    name: &'static str,
    insert: PreparedStatement,
}

/// A row bound for one table, with its partition key (for grouping).
struct Row {
    table: usize,
    partition: Vec<u8>,
    values: Values,
}

/// The bound values of a row, per table.
enum Values {
    Case(Box<CaseRow>),
    CountryDay(CountryDayRow),
    Score(ScoreRow),
}

/// Serialized as the row of its table, so that one batch call writes a
/// partition's rows whatever their table.
impl scylla::serialize::row::SerializeRow for Values {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter<'_>,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            Values::Case(v) => v.serialize(ctx, writer),
            Values::CountryDay(v) => v.serialize(ctx, writer),
            Values::Score(v) => v.serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Values::Case(v) => v.is_empty(),
            Values::CountryDay(v) => v.is_empty(),
            Values::Score(v) => v.is_empty(),
        }
    }
}

/// A row of `health_case_by_state_month`, in the order of the insert.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct CaseRow {
    res_state: String,
    case_month: chrono::NaiveDate,
    bucket: i8,
    event_id: uuid::Uuid,
    row_id: String,
    state_fips_code: Option<String>,
    res_county: Option<String>,
    county_fips_code: Option<String>,
    age_group: String,
    sex: String,
    race: String,
    ethnicity: String,
    case_positive_specimen_interval: Option<i32>,
    case_onset_interval: Option<i32>,
    process: String,
    exposure_yn: String,
    current_status: String,
    symptom_status: String,
    hosp_yn: String,
    icu_yn: String,
    death_yn: String,
    underlying_conditions_yn: String,
    source: String,
    occurred_at: CqlTimestamp,
    ingested_at: CqlTimestamp,
    upstream_updated_at: Option<CqlTimestamp>,
    ttl: i32,
    version: i64,
}

/// A row of `country_day_by_country`, in the order of the insert.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct CountryDayRow {
    country_code: String,
    year: i16,
    date_reported: chrono::NaiveDate,
    country: String,
    who_region: String,
    new_cases: Option<i64>,
    cumulative_cases: i64,
    new_deaths: Option<i64>,
    cumulative_deaths: i64,
    event_id: uuid::Uuid,
    ingested_at: CqlTimestamp,
    ttl: i32,
    version: i64,
}

/// A row of `case_score_by_model_day`, in the order of the insert.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct ScoreRow {
    model_name: String,
    model_version: String,
    day: chrono::NaiveDate,
    bucket: i8,
    case_event_id: uuid::Uuid,
    score: f64,
    scored_at: CqlTimestamp,
    event_id: uuid::Uuid,
    ttl: i32,
    version: i64,
}

/// Writes to ScyllaDB.
pub struct ScyllaSink {
    session: std::sync::Arc<Session>,
    keyspace: String,
    tables: Vec<Table>,
    ttl: i32,
    concurrency: usize,
    batch_max_rows: usize,
    batch_max_bytes: usize,
    consistency: Consistency,
    metrics: Metrics,
    /// With `exactly_once`: the transactional producer of the dead letters
    /// and the offsets.
    txn: Option<(EventProducer, TxnCommits)>,
    /// The kinds of server warnings logged already.
    warned: std::sync::Mutex<std::collections::BTreeSet<WarningKind>>,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ts(t: DateTime<Utc>) -> CqlTimestamp {
    CqlTimestamp(t.timestamp_millis())
}

/// How long a schema statement waits for the nodes to agree on the new
/// schema.
const SCHEMA_AGREEMENT: Duration = Duration::from_secs(30);

/// Runs a schema statement (each is idempotent: `IF NOT EXISTS`). The
/// driver then waits until the nodes agree on the schema; right after
/// connecting, a node may not be in the connection pool yet, and that
/// wait fails (`RequiredHostAbsent`) although the statement ran. The wait
/// is then tried again, for up to [`SCHEMA_AGREEMENT`].
async fn schema_statement(session: &Session, cql: String, what: &str) -> Result<(), SinkError> {
    let first = match session.query_unpaged(cql, &[]).await {
        Ok(_) => return Ok(()),
        Err(scylla::errors::ExecutionError::SchemaAgreementError(e)) => e,
        Err(e) => return Err(SinkError::Fatal(format!("{what}: {e}"))),
    };
    warn!(error = %first, "{what}: waiting again for the nodes to agree on the schema");
    let deadline = Instant::now() + SCHEMA_AGREEMENT;
    let mut last = first.to_string();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match session.await_schema_agreement().await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(SinkError::Fatal(format!(
        "{what}: the nodes did not agree on the schema within {} s: {last}",
        SCHEMA_AGREEMENT.as_secs()
    )))
}

impl ScyllaSink {
    /// Connects, creates or checks the schema, prepares the inserts.
    pub async fn connect(config: &ScyllaConfig, registry: &Registry) -> Result<Self, SinkError> {
        let consistency = config.consistency()?;
        if !config
            .keyspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || config.keyspace.is_empty()
        {
            return Err(SinkError::Fatal(format!(
                "consumers.sinks.scylla.keyspace: '{}' is not a CQL name (letters, digits, _)",
                config.keyspace
            )));
        }
        let nodes: Vec<&str> = config.nodes.split(',').map(str::trim).collect();
        let mut builder = SessionBuilder::new()
            .known_nodes(&nodes)
            .tls_context(config.tls_context()?);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.user(user, password.expose());
        }
        let session = builder.build().await.map_err(|e| {
            SinkError::Fatal(format!(
                "cannot connect to ScyllaDB at {}: {e}",
                config.nodes
            ))
        })?;
        if config.create_schema {
            let replication: Vec<String> = config
                .replication
                .iter()
                .map(|(dc, n)| format!("'{}': {n}", dc.replace('\'', "''")))
                .collect();
            let ks = &config.keyspace;
            schema_statement(
                &session,
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
                     {{'class': 'NetworkTopologyStrategy', {}}}",
                    replication.join(", ")
                ),
                &format!("creating keyspace {ks}"),
            )
            .await?;
        }
        session
            .use_keyspace(&config.keyspace, false)
            .await
            .map_err(|e| SinkError::Fatal(format!("keyspace {}: {e}", config.keyspace)))?;
        if config.create_schema {
            for statement in statements(SCHEMA) {
                schema_statement(
                    &session,
                    statement.clone(),
                    "creating the tables of infra/scylla/schema.cql",
                )
                .await?;
            }
        }
        let mut tables = Vec::new();
        for (name, columns) in [
            (
                "health_case_by_state_month",
                "res_state, case_month, bucket, event_id, row_id, state_fips_code, res_county, \
                 county_fips_code, age_group, sex, race, ethnicity, \
                 case_positive_specimen_interval, case_onset_interval, process, exposure_yn, \
                 current_status, symptom_status, hosp_yn, icu_yn, death_yn, \
                 underlying_conditions_yn, source, occurred_at, ingested_at, upstream_updated_at",
            ),
            (
                "country_day_by_country",
                "country_code, year, date_reported, country, who_region, new_cases, \
                 cumulative_cases, new_deaths, cumulative_deaths, event_id, ingested_at",
            ),
            (
                "case_score_by_model_day",
                "model_name, model_version, day, bucket, case_event_id, score, scored_at, event_id",
            ),
        ] {
            let marks = vec!["?"; columns.split(',').count()].join(", ");
            let mut insert = session
                .prepare(format!(
                    "INSERT INTO {ks}.{name} ({columns}) VALUES ({marks}) USING TTL ? AND TIMESTAMP ?",
                    ks = config.keyspace
                ))
                .await
                .map_err(|e| {
                    SinkError::Fatal(format!(
                        "table {}.{name} (missing? create_schema = false expects \
                         infra/scylla/schema.cql applied): {e}",
                        config.keyspace
                    ))
                })?;
            insert.set_is_idempotent(true);
            insert.set_consistency(consistency);
            tables.push(Table { name, insert });
        }
        Ok(Self {
            session: std::sync::Arc::new(session),
            keyspace: config.keyspace.clone(),
            tables,
            ttl: i32::try_from(config.ttl_seconds).map_err(|_| {
                SinkError::Fatal("consumers.sinks.scylla.ttl_seconds is too large".into())
            })?,
            concurrency: config.concurrency.max(1),
            batch_max_rows: config.batch_max_rows.max(1),
            batch_max_bytes: config.batch_max_bytes.max(1),
            consistency,
            metrics: Metrics::register(registry)?,
            txn: None,
            warned: Default::default(),
        })
    }

    /// Writes the rows of one group of [`grouped`] (one table, one
    /// replica), in unlogged batches of at most `batch_max_rows` rows and
    /// `batch_max_bytes` bytes of values.
    async fn write_group(&self, rows: Vec<Row>) -> Result<(), SinkError> {
        let table = &self.tables[rows[0].table];
        let specs = table.insert.get_variable_col_specs();
        let ctx = RowSerializationContext::from_specs(specs.as_slice());
        let mut buf = Vec::new();
        let size = |r: &Row| {
            buf.clear();
            // A row that cannot be serialized fails its batch, below.
            let _ = r.values.serialize(&ctx, &mut RowWriter::new(&mut buf));
            buf.len()
        };
        for range in batches(&rows, self.batch_max_rows, self.batch_max_bytes, size) {
            let chunk = &rows[range];
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            batch.set_consistency(self.consistency);
            for _ in chunk {
                batch.append_statement(table.insert.clone());
            }
            let started = Instant::now();
            let values: Vec<&Values> = chunk.iter().map(|r| &r.values).collect();
            let result = self.session.batch(&batch, values).await;
            if let Ok(r) = &result {
                self.server_warned(r.warnings());
            }
            if let Err(e) = result {
                let what = format!("writing {} rows to {}: {e}", chunk.len(), table.name);
                return Err(if can_succeed_later(&e) {
                    self.metrics.errors.with_label_values(&["transient"]).inc();
                    SinkError::Retryable(what)
                } else {
                    self.metrics.errors.with_label_values(&["refused"]).inc();
                    SinkError::Fatal(format!(
                        "{what} (the server refuses the statement itself: retrying cannot help)"
                    ))
                });
            }
            self.metrics
                .latency
                .with_label_values(&[table.name])
                .observe(started.elapsed().as_secs_f64());
            self.metrics.batches.with_label_values(&[table.name]).inc();
            self.metrics
                .rows
                .with_label_values(&[table.name])
                .inc_by(chunk.len() as u64);
        }
        Ok(())
    }
}

/// What a CQL server warns about in its answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum WarningKind {
    /// A batch over the server's `batch_size_warn_threshold` (Cassandra:
    /// 5 KiB; ScyllaDB: 128 KiB).
    BatchSize,
    /// An unlogged batch over `unlogged_batch_across_partitions_warn_threshold`
    /// partitions (Cassandra: 10).
    BatchPartitions,
    /// Anything else.
    Other,
}

impl WarningKind {
    const ALL: [Self; 3] = [Self::BatchSize, Self::BatchPartitions, Self::Other];

    fn of(warning: &str) -> Self {
        if warning.starts_with("Batch for ") && warning.contains("exceeding specified threshold") {
            Self::BatchSize
        } else if warning.starts_with("Unlogged batch covering ") {
            Self::BatchPartitions
        } else {
            Self::Other
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::BatchSize => "batch_size",
            Self::BatchPartitions => "batch_partitions",
            Self::Other => "other",
        }
    }
}

impl ScyllaSink {
    /// Counts the server's `warnings` about a write, and logs the first of
    /// each kind: Cassandra warns about nearly every batch of a bulk
    /// writer, which the driver's own log line per answer would flood the
    /// log with (it is left out, see `vigie_telemetry`).
    fn server_warned<'a>(&self, warnings: impl Iterator<Item = &'a str>) {
        for warning in warnings {
            let kind = WarningKind::of(warning);
            self.metrics
                .warnings
                .with_label_values(&[kind.as_str()])
                .inc();
            let first = self
                .warned
                .lock()
                .map(|mut seen| seen.insert(kind))
                .unwrap_or(false);
            if !first {
                continue;
            }
            match kind {
                WarningKind::Other => {
                    warn!(
                        warning,
                        "The CQL server warns about a write (logged once; counted in vigie_scylla_server_warnings_total{{kind=\"other\"}})"
                    );
                }
                _ => {
                    warn!(
                        warning,
                        kind = kind.as_str(),
                        "The CQL server warns about the sink's batches, which group a replica's rows as bulk loaders do (logged once; counted in vigie_scylla_server_warnings_total): raise batch_size_warn_threshold and unlogged_batch_across_partitions_warn_threshold on the server, or lower batch_max_rows and batch_max_bytes"
                    );
                }
            }
        }
    }
}

/// Whether a failed write may succeed when tried again: a node down,
/// starting, overloaded or timing out, a connection lost. A statement the
/// server refuses (invalid, its table gone, not authorized), values the
/// driver cannot serialize, or a load-balancing plan with no node (a
/// datacenter that does not exist) fail the same way every time: retrying
/// them would hold the stream forever.
fn can_succeed_later(e: &scylla::errors::ExecutionError) -> bool {
    use scylla::errors::{DbError, ExecutionError as E, RequestAttemptError as A};
    let refused = |db: &DbError| {
        matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::AlreadyExists { .. }
                | DbError::FunctionFailure { .. }
                | DbError::AuthenticationError
                | DbError::Unauthorized
                | DbError::ConfigError
                | DbError::ProtocolError
        )
    };
    match e {
        E::BadQuery(_) | E::UseKeyspaceError(_) | E::EmptyPlan => false,
        E::LastAttemptError(A::DbError(db, _)) => !refused(db),
        E::LastAttemptError(A::SerializationError(_) | A::CqlRequestSerialization(_)) => false,
        _ => true,
    }
}

/// The row of `event`, written with time to live `ttl`, or why it has
/// none (a reason code and what was wrong).
fn row_of(event: &Event, ttl: i32) -> Result<Row, (&'static str, String)> {
    match event {
        Event::Case(e) => {
            let d = &e.data;
            let bucket = (e.id.as_bytes()[0] % CASE_BUCKETS) as i8;
            let month = d.case_month.first_day();
            let version = e.upstream_updated_at.unwrap_or(e.ingested_at);
            let mut partition = d.res_state.as_str().as_bytes().to_vec();
            partition.extend(month.to_string().as_bytes());
            partition.push(bucket as u8);
            Ok(Row {
                table: 0,
                partition,
                values: Values::Case(Box::new(CaseRow {
                    res_state: d.res_state.as_str().to_owned(),
                    case_month: month,
                    bucket,
                    event_id: e.id,
                    row_id: d.row_id.to_string(),
                    state_fips_code: d.state_fips_code.as_ref().map(ToString::to_string),
                    res_county: d.res_county.as_ref().map(ToString::to_string),
                    county_fips_code: d.county_fips_code.as_ref().map(ToString::to_string),
                    age_group: d.age_group.to_string(),
                    sex: d.sex.to_string(),
                    race: d.race.to_string(),
                    ethnicity: d.ethnicity.to_string(),
                    case_positive_specimen_interval: d.case_positive_specimen_interval,
                    case_onset_interval: d.case_onset_interval,
                    process: d.process.to_string(),
                    exposure_yn: d.exposure_yn.to_string(),
                    current_status: d.current_status.to_string(),
                    symptom_status: d.symptom_status.to_string(),
                    hosp_yn: d.hosp_yn.to_string(),
                    icu_yn: d.icu_yn.to_string(),
                    death_yn: d.death_yn.to_string(),
                    underlying_conditions_yn: d.underlying_conditions_yn.to_string(),
                    source: e.source.clone(),
                    occurred_at: ts(e.occurred_at),
                    ingested_at: ts(e.ingested_at),
                    upstream_updated_at: e.upstream_updated_at.map(ts),
                    ttl,
                    version: micros(version),
                })),
            })
        }
        Event::CountryDay(e) => {
            let d = &e.data;
            let year = i16::try_from(d.date_reported.year())
                .map_err(|_| ("out_of_range", format!("year {}", d.date_reported.year())))?;
            let big = |v: u64, what: &str| {
                i64::try_from(v).map_err(|_| ("out_of_range", format!("{what} {v}")))
            };
            let mut partition = d.country_code.as_str().as_bytes().to_vec();
            partition.extend(year.to_be_bytes());
            Ok(Row {
                table: 1,
                partition,
                values: Values::CountryDay(CountryDayRow {
                    country_code: d.country_code.as_str().to_owned(),
                    year,
                    date_reported: d.date_reported,
                    country: d.country.clone(),
                    who_region: d.who_region.to_string(),
                    new_cases: d.new_cases,
                    cumulative_cases: big(d.cumulative_cases, "cumulative_cases")?,
                    new_deaths: d.new_deaths,
                    cumulative_deaths: big(d.cumulative_deaths, "cumulative_deaths")?,
                    event_id: e.id,
                    ingested_at: ts(e.ingested_at),
                    ttl,
                    version: micros(e.upstream_updated_at.unwrap_or(e.ingested_at)),
                }),
            })
        }
        Event::CaseScore(e) => {
            let d = &e.data;
            let bucket = (d.case_event_id.as_bytes()[0] % SCORE_BUCKETS) as i8;
            let day = d.scored_at.date_naive();
            let mut partition =
                format!("{}\0{}\0{day}", d.model_name, d.model_version).into_bytes();
            partition.push(bucket as u8);
            Ok(Row {
                table: 2,
                partition,
                values: Values::Score(ScoreRow {
                    model_name: d.model_name.clone(),
                    model_version: d.model_version.clone(),
                    day,
                    bucket,
                    case_event_id: d.case_event_id,
                    score: d.score,
                    scored_at: ts(d.scored_at),
                    event_id: e.id,
                    ttl,
                    version: micros(e.upstream_updated_at.unwrap_or(e.ingested_at)),
                }),
            })
        }
        other => Err((
            REASON_UNSUPPORTED,
            format!("the scylla sink stores no {} events", other.schema()),
        )),
    }
}

/// `rows` grouped for unlogged batches: by table and by the replica that
/// stores their partition (`replica_of`: its first replica and, on
/// ScyllaDB, shard), the rows of one partition kept together. A batch then
/// goes to the node that stores every row in it, whatever their partitions,
/// as bulk loaders batch (cqlsh COPY FROM groups rows by replica): on a
/// table spread over many small partitions, one request carries many rows
/// instead of one. A row whose replica is not known (no token metadata)
/// is grouped with its own partition only.
fn grouped(
    rows: Vec<Row>,
    replica_of: impl Fn(&Row) -> Option<(uuid::Uuid, u32)>,
) -> Vec<Vec<Row>> {
    type Target = Result<(uuid::Uuid, u32), Vec<u8>>;
    let mut groups: BTreeMap<(usize, Target), BTreeMap<Vec<u8>, Vec<Row>>> = BTreeMap::new();
    for mut r in rows {
        let partition = std::mem::take(&mut r.partition);
        let target = replica_of(&r).ok_or_else(|| partition.clone());
        groups
            .entry((r.table, target))
            .or_default()
            .entry(partition)
            .or_default()
            .push(r);
    }
    groups
        .into_values()
        .map(|partitions| partitions.into_values().flatten().collect())
        .collect()
}

/// `rows` cut, in order, into the ranges of unlogged batches: each holds
/// at most `max_rows` rows and `max_bytes` bytes (by `size`), except a
/// single row larger than `max_bytes`, which goes alone.
fn batches<T>(
    rows: &[T],
    max_rows: usize,
    max_bytes: usize,
    mut size: impl FnMut(&T) -> usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        let b = size(r);
        if i > start && (i - start == max_rows || bytes + b > max_bytes) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// The statements of a CQL file: comments dropped, split at `;`.
pub fn statements(cql: &str) -> Vec<String> {
    let code: Vec<&str> = cql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[async_trait::async_trait]
impl Sink for ScyllaSink {
    async fn write(
        &mut self,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        let mut rows = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for a in events {
            match row_of(&a.event, self.ttl) {
                Ok(r) => rows.push(r),
                Err((reason, error)) => rejected.push(Rejected {
                    index: a.index,
                    reason,
                    error,
                }),
            }
        }
        let written = rows.len();
        let this = &*self;
        let state = self.session.get_cluster_state();
        let groups = grouped(rows, |r| {
            let table = &this.tables[r.table];
            let token = table.insert.calculate_token(&r.values).ok()??;
            let (node, shard) = state
                .get_token_endpoints(&this.keyspace, table.name, token)
                .into_iter()
                .next()?;
            Some((node.host_id, shard))
        });
        let mut writes = futures::stream::iter(groups)
            .map(|rows| this.write_group(rows))
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        drop(writes);
        if let Some((producer, commits)) = &mut self.txn {
            // The rows are written: the letters and the offsets, together.
            commits
                .commit(producer, Vec::new(), &rejected, rejects, ctx)
                .await?;
            return Ok(written);
        }
        // The refused events reach the DLQ before the runtime commits.
        rejects.publish(&rejected).await?;
        Ok(written)
    }

    fn commits_in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    fn health_probe(&self) -> Option<HealthProbe> {
        let session = self.session.clone();
        Some(std::sync::Arc::new(move || {
            let session = session.clone();
            Box::pin(async move {
                session
                    .query_unpaged("SELECT release_version FROM system.local", &[])
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_holds_the_three_tables() {
        let s = statements(SCHEMA);
        assert_eq!(s.len(), 3, "{s:?}");
        for (statement, table) in s.iter().zip([
            "health_case_by_state_month",
            "country_day_by_country",
            "case_score_by_model_day",
        ]) {
            assert!(statement.contains(table), "{statement}");
        }
    }

    #[test]
    fn rows_group_by_table_and_partition_and_unsupported_events_are_refused() {
        let registry = vigie_core::SchemaRegistry::embedded().unwrap();
        let parse = |json: Vec<u8>| registry.parse(&json).unwrap();
        let g = vigie_simulator::CaseGenerator::new(Default::default()).unwrap();
        let now = Utc::now();
        // Cases 0..200: their state, month and bucket decide their partition.
        let cases: Vec<Event> = (0..200)
            .map(|i| {
                parse(
                    vigie_simulator::case_envelope(&g, i, now)
                        .to_json_bytes()
                        .unwrap(),
                )
            })
            .collect();
        let expected: std::collections::BTreeSet<(String, String, u8)> = cases
            .iter()
            .map(|e| match e {
                Event::Case(e) => (
                    e.data.res_state.as_str().to_owned(),
                    e.data.case_month.first_day().to_string(),
                    e.id.as_bytes()[0] % CASE_BUCKETS,
                ),
                _ => unreachable!(),
            })
            .collect();
        let rows: Vec<Row> = cases.iter().map(|e| row_of(e, 0).unwrap()).collect();
        // Replicas unknown: one group per partition.
        let groups = grouped(rows, |_| None);
        assert_eq!(groups.len(), expected.len());
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 200);
        for group in &groups {
            let keys: std::collections::BTreeSet<_> = group
                .iter()
                .map(|r| match &r.values {
                    Values::Case(c) => (c.res_state.clone(), c.case_month, c.bucket),
                    _ => unreachable!(),
                })
                .collect();
            assert_eq!(keys.len(), 1, "one partition per group");
        }

        // Replicas known (two, by bucket here): one group per table and
        // replica whatever the partitions, each partition's rows together.
        let rows: Vec<Row> = cases.iter().map(|e| row_of(e, 0).unwrap()).collect();
        let groups = grouped(rows, |r| match &r.values {
            Values::Case(c) => Some((uuid::Uuid::nil(), u32::from(c.bucket as u8 % 2))),
            _ => None,
        });
        assert_eq!(groups.len(), 2);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 200);
        for group in &groups {
            let mut done = std::collections::BTreeSet::new();
            let mut current = None;
            for r in group {
                let Values::Case(c) = &r.values else {
                    unreachable!()
                };
                let key = (c.res_state.clone(), c.case_month, c.bucket);
                if current.as_ref() != Some(&key) {
                    assert!(done.insert(key.clone()), "a partition's rows together");
                    current = Some(key);
                }
            }
        }

        let news =
            vigie_simulator::NewsGenerator::new(1, vigie_simulator::DEFAULT_BASE_URL).unwrap();
        let article = parse(
            vigie_simulator::news_envelope(&news, 0, 0, now)
                .to_json_bytes()
                .unwrap(),
        );
        let Err((reason, error)) = row_of(&article, 0) else {
            panic!("news is not stored");
        };
        assert_eq!(reason, REASON_UNSUPPORTED);
        assert!(error.contains("health.outbreak_news"), "{error}");
    }

    #[test]
    fn batches_hold_at_most_their_rows_and_bytes_and_a_big_row_goes_alone() {
        let cut = |sizes: &[usize], rows, bytes| batches(sizes, rows, bytes, |b| *b);
        assert_eq!(cut(&[], 3, 100), Vec::<std::ops::Range<usize>>::new());
        // By rows: 7 rows, 3 at most.
        assert_eq!(cut(&[1; 7], 3, 100), vec![0..3, 3..6, 6..7]);
        // By bytes: 40 + 40 fit in 100, a third does not.
        assert_eq!(cut(&[40, 40, 40, 40, 40], 10, 100), vec![0..2, 2..4, 4..5]);
        // Exactly the limit fits.
        assert_eq!(cut(&[50, 50, 50], 10, 100), vec![0..2, 2..3]);
        // A row over the limit goes alone, its neighbours around it.
        assert_eq!(cut(&[10, 500, 10, 10], 10, 100), vec![0..1, 1..2, 2..4]);
        // Whatever the sizes: every row once, in order, within both limits.
        let sizes: Vec<usize> = (0..1000).map(|i| (i * 7919) % 230 + 1).collect();
        let ranges = cut(&sizes, 16, 1000);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, sizes.len());
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &ranges {
            let bytes: usize = sizes[r.clone()].iter().sum();
            assert!(
                r.len() <= 16 && (bytes <= 1000 || r.len() == 1),
                "{r:?}: {bytes}"
            );
            // Not cut early: the next row would not have fitted.
            if r.end < sizes.len() {
                assert!(r.len() == 16 || bytes + sizes[r.end] > 1000, "{r:?}");
            }
        }
    }

    #[test]
    fn an_unknown_consistency_is_refused_naming_the_choices() {
        let c = ScyllaConfig {
            consistency: "most".into(),
            ..ScyllaConfig::default()
        };
        let err = c.consistency().unwrap_err().to_string();
        assert!(
            err.contains("'most'") && err.contains("local_quorum"),
            "{err}"
        );
    }

    #[test]
    fn only_failures_that_can_pass_are_retried() {
        use scylla::errors::{DbError, ExecutionError as E, RequestAttemptError as A};
        let server = |db: DbError| E::LastAttemptError(A::DbError(db, "said the node".into()));
        for (e, retried) in [
            (server(DbError::Overloaded), true),
            (server(DbError::IsBootstrapping), true),
            (server(DbError::ServerError), true),
            (E::RequestTimeout(std::time::Duration::from_secs(2)), true),
            (E::EmptyPlan, false),
            (server(DbError::Invalid), false),
            (server(DbError::SyntaxError), false),
            (server(DbError::Unauthorized), false),
            (server(DbError::ConfigError), false),
        ] {
            assert_eq!(can_succeed_later(&e), retried, "{e}");
        }
    }
}
