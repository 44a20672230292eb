//! `postgres`: writes events to the relational health model in
//! PostgreSQL, exactly once.
//!
//! A batch is split by partition into `parallelism` groups, each written in
//! its own transaction on its own connection: COPY each event type into its
//! staging table, move the staged rows into the model with `INSERT ... ON
//! CONFLICT` (idempotent by envelope id; the newer version wins: for
//! cases the later `upstream_updated_at`, then `ingested_at`), and
//! write the group's next offset per partition into `sink_offsets`. When
//! none of a group's ids is stored yet, cases are copied straight into
//! their table instead, in binary (the common case of fresh data); a row
//! refused rolls that `COPY` back and the staged path takes over. On
//! assignment the
//! runtime starts each partition from `sink_offsets`, so a crash at any
//! point leaves every event stored once. A row PostgreSQL refuses (a
//! constraint, or a value out of a column's range or encoding: SQLSTATE
//! classes 23 and 22) is isolated by splitting its range under savepoints
//! and sent to the DLQ before the commit; the rest of the batch commits.
//! A case naming a state or county the model lacks is refused before the
//! write, without a round of splitting (module `references`).

mod binary;
mod csv;
pub mod migrate;
mod outbox;
mod references;
mod tables;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};
use vigie_config::Secret;
use vigie_kafka::consumer::TopicPartition;

use crate::sink::{
    Accepted, BatchContext, HealthProbe, OutboxLetter, Rejected, Rejects, Sink, SinkError, SinkSpec,
};
use tables::{Target, stage_row};

/// The registry entry.
pub const SPEC: SinkSpec = SinkSpec {
    name: "postgres",
    about: "PostgreSQL, exactly-once: rows and offsets in one transaction",
    secrets: &["password"],
    check: crate::sink::check_section::<PostgresConfig>,
    build: |args| {
        Box::pin(async move {
            let config: PostgresConfig = args.config()?;
            Ok(Box::new(PostgresSink::connect(&config).await?) as Box<dyn Sink>)
        })
    },
};

/// The `[consumers.sinks.postgres]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Connection URL, without the password, e.g.
    /// `postgres://vigie@db:5432/vigie?sslmode=require`.
    pub url: String,
    /// Password: only from `VIGIE__CONSUMERS__SINKS__POSTGRES__PASSWORD` or
    /// `password_file`.
    pub password: Option<Secret>,
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long to wait for a connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// Apply the embedded migrations at start-up.
    pub migrate: bool,
    /// Transactions a batch is split into, by partition, written in
    /// parallel on separate connections (each with its partitions' offsets,
    /// so exactly-once holds per partition). At most `pool_size`.
    pub parallelism: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@localhost:5432/vigie".into(),
            password: None,
            pool_size: 4,
            acquire_timeout_ms: 10_000,
            migrate: true,
            parallelism: 2,
        }
    }
}

/// Reason code of a row refused by a database constraint (SQLSTATE class 23).
pub const REASON_CONSTRAINT: &str = "constraint_violation";
/// Reason code of a row whose value PostgreSQL refused (SQLSTATE class 22:
/// out of range, bad encoding), which edge validation did not foresee.
pub const REASON_DATA: &str = "data_exception";
/// Reason code of an event whose schema this sink does not store.
pub const REASON_UNSUPPORTED: &str = "unsupported_schema";

/// The rows of one target; `index[rn]` is the batch index of row `rn`.
#[derive(Debug, Default)]
struct Staged<'e> {
    events: Vec<&'e vigie_core::Event>,
    index: Vec<usize>,
    /// Envelope ids, for the direct path's probe.
    ids: Vec<uuid::Uuid>,
    /// Rows for a direct binary `COPY` into the target ([`binary::HEADER`],
    /// then tuples), when the target has one and the batch holds each id
    /// once.
    direct: Option<Vec<u8>>,
    /// Counties the direct rows refer to: `(fips, state, name)`.
    counties: BTreeMap<String, (String, String)>,
}

/// The PostgreSQL sink.
#[derive(Debug)]
pub struct PostgresSink {
    pool: PgPool,
    parallelism: usize,
    /// States and counties known to be in the model.
    references: references::References,
    /// The epoch of each partition's stored offset, as last read (absent:
    /// no row, epoch 0). A batch's offsets are stored only if the epoch is
    /// still that: a reset in between fences it.
    epochs: BTreeMap<TopicPartition, i64>,
}

/// A partition's stored offset before and after a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetReset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The stored next offset before, if the group had one.
    pub before: Option<i64>,
    /// The next offset the group reads from.
    pub after: i64,
    /// The epoch the stored offset is in after the reset.
    pub epoch: i64,
}

/// The DLQ hook, shared by the parallel transactions of one batch.
type SharedRejects<'a> = tokio::sync::Mutex<&'a mut dyn Rejects>;

/// True for errors worth retrying with a new connection.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        // The connection was cut while `BEGIN` was answered.
        | sqlx::Error::BeginFailed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // serialization failure, deadlock, connection exceptions,
            // shutdown, too many connections (common right after a restart).
            c == "40001"
                || c == "40P01"
                || c == "53300"
                || c.starts_with("08")
                || c.starts_with("57P")
        }),
        _ => false,
    }
}

/// True for an error that one row's values cause: data exceptions (class
/// 22: a value out of range, a bad encoding) and integrity constraint
/// violations (class 23). Such a row is isolated and dead-lettered, never
/// fatal to its batch.
fn is_row_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
}

/// The dead-letter reason of a row error ([`is_row_error`]).
fn row_reason(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => REASON_DATA,
        _ => REASON_CONSTRAINT,
    }
}

fn classify(e: sqlx::Error) -> SinkError {
    if is_transient(&e) {
        SinkError::Retryable(e.to_string())
    } else {
        SinkError::Fatal(e.to_string())
    }
}

impl PostgresSink {
    /// Connects (and migrates, if configured).
    pub async fn connect(config: &PostgresConfig) -> Result<Self, SinkError> {
        let mut opts: PgConnectOptions = config
            .url
            .parse()
            .map_err(|e| SinkError::Fatal(format!("consumers.sinks.postgres.url: {e}")))?;
        if let Some(p) = &config.password {
            opts = opts.password(p.expose());
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_with(opts)
            .await
            .map_err(|e| SinkError::Fatal(format!("cannot connect to PostgreSQL: {e}")))?;
        if config.migrate {
            migrate::migrate(&pool)
                .await
                .map_err(|e| SinkError::Fatal(format!("migrations failed: {e}")))?;
        }
        Ok(Self {
            pool,
            parallelism: config.parallelism.clamp(1, config.pool_size.max(1)) as usize,
            references: Default::default(),
            epochs: BTreeMap::new(),
        })
    }

    /// The pool (tests, tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The stored offsets of `group` on `topic`, with their epochs, by
    /// partition.
    pub async fn offsets_of(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<i32, (i64, i64)>, SinkError> {
        let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
            "SELECT partition, next_offset, epoch FROM sink_offsets
             WHERE consumer_group = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(p, o, e)| (p, (o, e))).collect())
    }

    /// Sets the stored offsets of `group` on `topic` to `to` (partition,
    /// next offset), each in a new epoch, in one transaction: the rows
    /// already stored there stay, and a member still holding a batch read
    /// before the reset is fenced when it stores its offsets.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: &BTreeMap<i32, i64>,
    ) -> Result<Vec<OffsetReset>, SinkError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let before: BTreeMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(
            "SELECT partition, next_offset FROM sink_offsets
             WHERE consumer_group = $1 AND topic = $2 FOR UPDATE",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?
        .into_iter()
        .collect();
        let (partitions, offsets): (Vec<i32>, Vec<i64>) = to.iter().map(|(p, o)| (*p, *o)).unzip();
        let after: Vec<(i32, i64, i64)> = sqlx::query_as(
            "INSERT INTO sink_offsets (consumer_group, topic, partition, next_offset, epoch, updated_at)
             SELECT $1, $2, p, o, 1, now() FROM unnest($3::int[], $4::bigint[]) AS x(p, o)
             ON CONFLICT (consumer_group, topic, partition)
             DO UPDATE SET next_offset = EXCLUDED.next_offset, epoch = sink_offsets.epoch + 1,
                updated_at = now()
             RETURNING partition, next_offset, epoch",
        )
        .bind(group)
        .bind(topic)
        .bind(&partitions)
        .bind(&offsets)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        let mut resets: Vec<OffsetReset> = after
            .into_iter()
            .map(|(partition, after, epoch)| OffsetReset {
                topic: topic.to_owned(),
                partition,
                before: before.get(&partition).copied(),
                after,
                epoch,
            })
            .collect();
        resets.sort_by_key(|r| r.partition);
        Ok(resets)
    }

    /// One attempt at one lane of the batch, with the lane's dead letters
    /// refused before the sink (`letters`); any error rolls it all back.
    ///
    /// A connection that failed transiently is closed, never handed out
    /// again: one cut mid-exchange can stay out of step with its server
    /// (`BEGIN` answered as if no transaction had opened, a query answered
    /// with no row), and every retry on it would fail the same way.
    async fn write_once(
        &self,
        staged: &BTreeMap<Target, Staged<'_>>,
        next_offsets: &BTreeMap<TopicPartition, i64>,
        letters: &[OutboxLetter],
        group: &str,
        rejects: &SharedRejects<'_>,
    ) -> Result<usize, SinkError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        let written: Result<usize, SinkError> = async {
            let mut tx = conn.begin().await.map_err(classify)?;
            let mut refused: Vec<Rejected> = Vec::new();
            for (target, st) in staged {
                if direct_load(&mut tx, *target, st).await? {
                    continue;
                }
                // Staged path: built only now, as most batches go direct.
                let index = &st.index;
                let mut csv = Vec::with_capacity(st.events.len() * 256);
                // `ends[rn]`: where row `rn`'s line ends in `csv`.
                let mut ends = Vec::with_capacity(st.events.len());
                for (rn, event) in st.events.iter().enumerate() {
                    stage_row(rn, event, &mut csv);
                    ends.push(csv.len());
                }
                sqlx::raw_sql(target.stage_ddl())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let mut bad = Vec::new();
                stage_rows(&mut tx, *target, &csv, &ends, &mut bad).await?;
                load_range(&mut tx, *target, 0, index.len() as i32 - 1, &mut bad).await?;
                for (rn, reason, error) in bad {
                    refused.push(Rejected {
                        index: index[rn as usize],
                        reason,
                        error,
                    });
                }
            }
            if !next_offsets.is_empty() {
                let (mut topics, mut partitions, mut offsets, mut epochs) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (tp, o) in next_offsets {
                    topics.push(tp.0.clone());
                    partitions.push(tp.1);
                    offsets.push(*o);
                    epochs.push(self.epochs.get(tp).copied().unwrap_or(0));
                }
                // Fencing: within an epoch a stored offset only moves forward,
                // and a batch writes records past it, so its next offset is
                // strictly greater. A member that lost a partition while it
                // wrote finds the new owner's offset (even one equal to its
                // own: those records are stored), or a reset's new epoch,
                // updates nothing there, and rolls its batch back.
                let stored = sqlx::query(
                    "INSERT INTO sink_offsets (consumer_group, topic, partition, next_offset, epoch, updated_at)
                     SELECT $1, t, p, o, e, now()
                     FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS x(t, p, o, e)
                     ON CONFLICT (consumer_group, topic, partition)
                     DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
                     WHERE sink_offsets.next_offset < EXCLUDED.next_offset
                       AND sink_offsets.epoch = EXCLUDED.epoch",
                )
                .bind(group)
                .bind(&topics)
                .bind(&partitions)
                .bind(&offsets)
                .bind(&epochs)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
                if stored < next_offsets.len() as u64 {
                    return Err(SinkError::Fenced(format!(
                        "group {group}: the store holds later offsets than this batch's \
                         {next_offsets:?}, or offsets of a newer epoch (a reset), for {} of its \
                         partitions",
                        next_offsets.len() as u64 - stored
                    )));
                }
            }
            // Dead letters go into the outbox with the rows and offsets: one
            // commit decides all three.
            outbox::store(&mut tx, group, letters).await?;
            if !refused.is_empty() {
                let own = rejects.lock().await.letters(&refused);
                outbox::store(&mut tx, group, &own).await?;
            }
            tx.commit().await.map_err(classify)?;
            let total: usize = staged.values().map(|s| s.index.len()).sum();
            Ok(total - refused.len())
        }
        .await;
        if matches!(written, Err(SinkError::Retryable(_))) {
            conn.close_on_drop();
        }
        written
    }
}

/// The fast path: when none of the batch's ids is stored yet, a binary
/// `COPY` of the rows straight into the target table (no staging copy, no
/// upsert). Any row PostgreSQL refuses rolls it back and the staged path
/// takes over, with its row-by-row isolation. Returns whether the rows
/// were loaded.
async fn direct_load(
    tx: &mut Transaction<'_, Postgres>,
    target: Target,
    st: &Staged<'_>,
) -> Result<bool, SinkError> {
    let (Some((probe, copy_sql)), Some(rows)) = (target.direct(), st.direct.as_ref()) else {
        return Ok(false);
    };
    // `EXISTS` always answers one row: none means the connection was cut
    // while the answer came (sqlx then ends the stream without an error).
    let stored: Option<bool> = sqlx::query_scalar(probe)
        .bind(&st.ids)
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?;
    let Some(stored) = stored else {
        return Err(SinkError::Retryable(
            "PostgreSQL closed the connection before answering the probe for stored ids".into(),
        ));
    };
    if stored {
        return Ok(false);
    }
    sqlx::raw_sql("SAVEPOINT direct_load")
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    let attempt = async {
        if !st.counties.is_empty() {
            let (mut fips, mut states, mut names) = (Vec::new(), Vec::new(), Vec::new());
            for (f, (s, n)) in &st.counties {
                fips.push(f.as_str());
                states.push(s.as_str());
                names.push(n.as_str());
            }
            sqlx::query(
                "INSERT INTO dim_county (county_fips, state_code, name)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (county_fips) DO NOTHING",
            )
            .bind(&fips)
            .bind(&states)
            .bind(&names)
            .execute(&mut **tx)
            .await?;
        }
        let mut copy = tx.copy_in_raw(copy_sql).await?;
        copy.send(rows.as_slice()).await?;
        copy.send(binary::TRAILER).await?;
        copy.finish().await
    };
    match attempt.await {
        Ok(_) => {
            sqlx::raw_sql("RELEASE SAVEPOINT direct_load")
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(true)
        }
        Err(e) if is_row_error(&e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT direct_load")
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Ok(false)
        }
        Err(e) => Err(classify(e)),
    }
}

/// `COPY`s the staged rows (`csv`, row `rn` ending at `ends[rn]`) into
/// the staging table. A row PostgreSQL refuses ([`is_row_error`]: a value
/// out of a column's range, a bad encoding) is isolated by splitting the
/// rows under savepoints until it is alone, and reported in `bad` as
/// `(rn, reason, error)`; the other rows are staged.
async fn stage_rows(
    tx: &mut Transaction<'_, Postgres>,
    target: Target,
    csv: &[u8],
    ends: &[usize],
    bad: &mut Vec<(i32, &'static str, String)>,
) -> Result<(), SinkError> {
    let start = |rn: usize| if rn == 0 { 0 } else { ends[rn - 1] };
    // Half-open row ranges; an explicit stack, as in `load_range`.
    let mut ranges = vec![(0, ends.len())];
    while let Some((lo, hi)) = ranges.pop() {
        if lo >= hi {
            continue;
        }
        sqlx::raw_sql("SAVEPOINT stage_rows")
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        let attempt = async {
            let mut copy = tx.copy_in_raw(target.copy_sql()).await?;
            copy.send(&csv[start(lo)..ends[hi - 1]]).await?;
            copy.finish().await
        };
        match attempt.await {
            Ok(_) => {
                sqlx::raw_sql("RELEASE SAVEPOINT stage_rows")
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
            }
            Err(e) if is_row_error(&e) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT stage_rows")
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
                if hi - lo == 1 {
                    bad.push((lo as i32, row_reason(&e), e.to_string()));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    ranges.push((mid, hi));
                    ranges.push((lo, mid));
                }
            }
            Err(e) => return Err(classify(e)),
        }
    }
    Ok(())
}

/// Moves staged rows `lo..=hi` into the model; on a constraint violation,
/// splits the range under savepoints until the offending rows are alone,
/// and reports them in `bad` as `(rn, reason, error)`.
async fn load_range(
    tx: &mut Transaction<'_, Postgres>,
    target: Target,
    lo: i32,
    hi: i32,
    bad: &mut Vec<(i32, &'static str, String)>,
) -> Result<(), SinkError> {
    // An explicit stack instead of recursion: async recursion needs boxing.
    let mut ranges = vec![(lo, hi)];
    while let Some((lo, hi)) = ranges.pop() {
        if lo > hi {
            continue;
        }
        sqlx::raw_sql("SAVEPOINT load_range")
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        let mut failed = None;
        for sql in target.upsert_sql() {
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(*sql))
                .bind(lo)
                .bind(hi)
                .execute(&mut **tx)
                .await
            {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => {
                sqlx::raw_sql("RELEASE SAVEPOINT load_range")
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
            }
            Some(e) if is_row_error(&e) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT load_range")
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
                if lo == hi {
                    bad.push((lo, row_reason(&e), e.to_string()));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    ranges.push((mid + 1, hi));
                    ranges.push((lo, mid));
                }
            }
            Some(e) => return Err(classify(e)),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    async fn write(
        &mut self,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        // Stage rows per target; `row_index[rn]` maps a staged row back to
        // its record in the batch.
        // One group of partitions per parallel transaction.
        let lanes = self.parallelism;
        let lane = |partition: i32| partition.rem_euclid(lanes as i32) as usize;
        let mut staged: Vec<BTreeMap<Target, Staged<'_>>> =
            (0..lanes).map(|_| BTreeMap::new()).collect();
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        // Cases referring to a state or county the model lacks are refused
        // before the write, so that they don't send the batch down the
        // staged path (see `references`).
        let mut refused = self.references.missing(&self.pool, events).await?;
        let dangling: std::collections::HashSet<usize> = refused.iter().map(|r| r.index).collect();
        for ev in events {
            if dangling.contains(&ev.index) {
                continue;
            }
            let Some(target) = Target::of(&ev.event) else {
                refused.push(Rejected {
                    index: ev.index,
                    reason: REASON_UNSUPPORTED,
                    error: format!(
                        "the postgres sink does not store schema {} v{}",
                        ev.event.schema(),
                        ev.event.schema_version()
                    ),
                });
                continue;
            };
            let st = staged[lane(ev.partition)]
                .entry(target)
                .or_insert_with(|| Staged {
                    direct: target.direct().map(|_| binary::HEADER.to_vec()),
                    ..Staged::default()
                });
            st.events.push(&ev.event);
            st.index.push(ev.index);
            st.ids.push(ev.event.id());
            if !seen.insert(ev.event.id()) {
                // An id twice in one batch: only the staged upsert picks the newest.
                // (Two lanes never share an id: an id's records share a key,
                // hence a partition.)
                st.direct = None;
            }
            if let (Some(direct), vigie_core::Event::Case(env)) = (st.direct.as_mut(), &ev.event) {
                if !tables::direct_row(env, direct) {
                    st.direct = None;
                } else if let (Some(fips), Some(name)) =
                    (&env.data.county_fips_code, &env.data.res_county)
                {
                    st.counties
                        .entry(fips.as_str().to_owned())
                        .or_insert_with(|| {
                            (env.data.res_state.as_str().to_owned(), name.to_string())
                        });
                }
            }
        }
        let mut offsets: Vec<BTreeMap<TopicPartition, i64>> =
            (0..lanes).map(|_| BTreeMap::new()).collect();
        for (tp, o) in ctx.next_offsets {
            offsets[lane(tp.1)].insert(tp.clone(), *o);
        }
        // Each lane's dead letters: refused at the edge, or here because
        // this sink does not store their schema.
        let mut letters: Vec<Vec<OutboxLetter>> = (0..lanes).map(|_| Vec::new()).collect();
        for l in ctx
            .dead_letters
            .iter()
            .cloned()
            .chain(rejects.letters(&refused))
        {
            letters[lane(l.origin.1)].push(l);
        }
        let shared: SharedRejects<'_> = tokio::sync::Mutex::new(rejects);
        let writes = staged
            .iter()
            .zip(&offsets)
            .zip(&letters)
            .filter(|((st, off), l)| !st.is_empty() || !off.is_empty() || !l.is_empty())
            .map(|((st, off), l)| self.write_once(st, off, l, ctx.group, &shared));
        let written = futures::future::try_join_all(writes).await?;
        Ok(written.into_iter().sum())
    }

    async fn stored_offsets(
        &mut self,
        group: &str,
    ) -> Result<Option<BTreeMap<TopicPartition, i64>>, SinkError> {
        let rows: Vec<(String, i32, i64, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset, epoch FROM sink_offsets WHERE consumer_group = $1",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut offsets = BTreeMap::new();
        self.epochs.clear();
        for (t, p, o, e) in rows {
            self.epochs.insert((t.clone(), p), e);
            offsets.insert((t, p), o);
        }
        Ok(Some(offsets))
    }

    fn outbox(&self) -> Option<std::sync::Arc<dyn crate::sink::Outbox>> {
        Some(std::sync::Arc::new(outbox::PgOutbox(self.pool.clone())))
    }

    fn health_probe(&self) -> Option<HealthProbe> {
        let pool = self.pool.clone();
        Some(std::sync::Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let mut c = pool.acquire().await.map_err(|e| e.to_string())?;
                c.ping().await.map_err(|e| e.to_string())
            })
        }))
    }
}
