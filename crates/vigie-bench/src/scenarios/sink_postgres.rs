//! `sink-postgres`: the exactly-once PostgreSQL sink, `vigie consume --sink
//! postgres`, against two baselines on the same backlog and the same
//! PostgreSQL server: `kcat -C | psql \copy` into a JSON staging table
//! followed by the same upsert into `health_case` (what one would script by
//! hand), and `psql \copy` of the final rows from a local file (the
//! physical limit).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};

use crate::common::{
    BROKER, Bar, Consumer, Launch, Load, Vigie, create_topics, high_watermarks, median,
    produce_backlog, record,
};
use crate::scenarios::tls::Secure;

/// Options of `sink-postgres`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) backlog: Backlog,
    /// Record only the peak-RSS bar (for a large backlog).
    #[arg(long)]
    pub(crate) rss_only: bool,
}

/// Options of the scenarios that drain a backlog into PostgreSQL: its size
/// and the tools.
#[derive(Debug, clap::Args)]
pub(crate) struct Backlog {
    #[command(flatten)]
    pub(crate) load: Load,
    #[command(flatten)]
    pub(crate) tools: Tools,
}

impl Backlog {
    /// Events, partitions and runs.
    pub(crate) fn size(&self) -> (u64, i32, usize) {
        let l = &self.load;
        (l.events, l.partitions, l.common.runs)
    }
}

/// Options of the PostgreSQL sink scenarios besides the load: the kcat
/// they run and the PostgreSQL server.
#[derive(Debug, clap::Args)]
pub(crate) struct Tools {
    /// The kcat to run.
    #[arg(long, default_value = "scripts/kcat")]
    pub(crate) kcat: PathBuf,
    /// PostgreSQL admin URL (databases are created and dropped here).
    #[arg(long, default_value = "postgres://postgres@localhost:5432/postgres")]
    pub(crate) pg: String,
}

/// Seed of the generator of the backlog's cases.
pub(crate) const BACKLOG_SEED: u64 = 7;

/// The upsert the hand-made baseline runs after `\copy` (same target rows).
const BASELINE_UPSERT: &str = r#"
INSERT INTO dim_county (county_fips, state_code, name)
SELECT DISTINCT ON (d->>'county_fips_code') d->>'county_fips_code', d->>'res_state', d->>'res_county'
FROM (SELECT doc->'data' AS d FROM raw_events) x
WHERE d ? 'county_fips_code' AND d ? 'res_county'
ON CONFLICT DO NOTHING;
INSERT INTO health_case (event_id, row_id, case_month, res_state, county_fips, age_group, sex, race,
    ethnicity, case_positive_specimen_interval, case_onset_interval, process, exposure_yn,
    current_status, symptom_status, hosp_yn, icu_yn, death_yn, underlying_conditions_yn, source,
    occurred_at, ingested_at)
SELECT DISTINCT ON ((doc->>'id')::uuid) (doc->>'id')::uuid, d->>'row_id',
    (d->>'case_month' || '-01')::date, d->>'res_state', d->>'county_fips_code', d->>'age_group',
    d->>'sex', d->>'race', d->>'ethnicity', (d->>'case_positive_specimen_interval')::int,
    (d->>'case_onset_interval')::int, d->>'process', d->>'exposure_yn', d->>'current_status',
    d->>'symptom_status', d->>'hosp_yn', d->>'icu_yn', d->>'death_yn',
    d->>'underlying_conditions_yn', doc->>'source', (doc->>'occurred_at')::timestamptz,
    (doc->>'ingested_at')::timestamptz
FROM (SELECT doc, doc->'data' AS d FROM raw_events) x
ORDER BY (doc->>'id')::uuid
ON CONFLICT (event_id) DO NOTHING;
"#;

/// A database of its own for one side of one run.
pub(crate) struct Db {
    admin: String,
    pub(crate) name: String,
}

impl Db {
    pub(crate) async fn create(admin: &str, tag: &str) -> anyhow::Result<Self> {
        let name = format!(
            "vigie_bench_{tag}_{}",
            chrono::Utc::now().format("%H%M%S%f")
        );
        let mut c = PgConnection::connect(admin).await?;
        c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await?;
        Ok(Self {
            admin: admin.to_owned(),
            name,
        })
    }

    pub(crate) fn url(&self) -> String {
        let base = self
            .admin
            .rsplit_once('/')
            .map_or(self.admin.as_str(), |(b, _)| b);
        format!("{base}/{}", self.name)
    }

    pub(crate) async fn migrated(self) -> anyhow::Result<Self> {
        let pool = sqlx::PgPool::connect(&self.url()).await?;
        vigie_consumers::sinks::postgres::migrate::migrate(&pool).await?;
        pool.close().await;
        Ok(self)
    }

    pub(crate) async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        let mut c = PgConnection::connect(&self.url()).await?;
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut c)
            .await?)
    }

    /// The first column of the first row of `sql`, a `float8`.
    pub(crate) async fn scalar_f64(&self, sql: &str) -> anyhow::Result<f64> {
        let mut c = PgConnection::connect(&self.url()).await?;
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut c)
            .await?)
    }

    /// Runs the statements of `sql`.
    pub(crate) async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let mut c = PgConnection::connect(&self.url()).await?;
        c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())))
            .await?;
        Ok(())
    }

    pub(crate) async fn drop_db(self) -> anyhow::Result<()> {
        let mut c = PgConnection::connect(&self.admin).await?;
        c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))))
        .await?;
        Ok(())
    }
}

fn psql(url: &str, command: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", command])
        .output()
        .context("cannot run psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The sink's progress for `group`: the sum of the offsets it stored,
/// -1 while dead letters wait in its outbox. One statement, one snapshot:
/// the offsets and the outbox as of the same commit.
pub(crate) fn progress_sql(group: &str) -> String {
    format!(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM dlq_outbox) THEN -1 ELSE \
         (SELECT coalesce(sum(next_offset), 0)::bigint FROM sink_offsets \
          WHERE consumer_group = '{group}') END"
    )
}

/// One drain of a backlog by the sink.
pub(crate) struct Drained {
    /// From the start of `vigie consume` to every record committed.
    pub(crate) secs: f64,
    /// Peak RSS of the sink, MiB.
    pub(crate) peak_mib: f64,
    /// The database it wrote (drop it).
    pub(crate) db: Db,
    /// Its consumer group.
    pub(crate) group: String,
}

/// Runs the sink over the backlog of `topic`, `records` records, in a
/// database of its own, until every record is committed: the offsets it
/// stored with its rows add up to `records` (one past the last of each
/// partition) and its dead-letter outbox (`dlq_outbox`: letters committed
/// but not yet published to the DLQ topic) is empty. It must have stored
/// `rows` cases.
pub(crate) async fn run_vigie(
    vigie: &Vigie,
    brokers: &str,
    topic: &str,
    (records, rows): (u64, u64),
    admin: &str,
) -> anyhow::Result<Drained> {
    run_vigie_over(vigie, brokers, topic, (records, rows), admin, None).await
}

/// [`run_vigie`], the sink reaching Kafka and PostgreSQL over TLS when
/// `tls` is given.
pub(crate) async fn run_vigie_over(
    vigie: &Vigie,
    brokers: &str,
    topic: &str,
    (records, rows): (u64, u64),
    admin: &str,
    tls: Option<&Secure>,
) -> anyhow::Result<Drained> {
    // The backlog is all there; asking for it through a group also has the
    // broker create `__consumer_offsets` (on its first group) before the
    // clock starts, not in the first timed run.
    let held = high_watermarks(brokers, topic).await?;
    if held as u64 != records {
        bail!("{topic} holds {held} records, not {records}");
    }
    // Migrated before the clock starts, as the baselines' databases are:
    // the sink only finds its schema there.
    let db = Db::create(admin, "vigie").await?.migrated().await?;
    let logs = tempfile::tempdir()?;
    let group = format!("bench-{}", db.name);
    let progress = progress_sql(&group);
    let mut env = vec![("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", db.url())];
    let mut sink_brokers = brokers;
    if let Some(tls) = tls {
        env[0].1.push_str(&tls.pg_params);
        env.extend(tls.kafka.iter().cloned());
        sink_brokers = &tls.brokers;
    }
    let started = Instant::now();
    let mut c = Consumer::spawn(&Launch {
        vigie,
        brokers: sink_brokers,
        sink: "postgres",
        topic,
        group: &group,
        port: 0,
        env: &env,
        logs: logs.path(),
    })?;
    let mut peak = 0f64;
    loop {
        peak = peak.max(c.peak_rss_mib());
        let done = db.scalar(&progress).await.unwrap_or(-1);
        if done >= 0 && done as u64 >= records {
            break;
        }
        c.check_alive()?;
        if started.elapsed() > Duration::from_secs(1800) {
            let _ = c.child.kill();
            bail!("the sink did not drain the backlog in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    peak = peak.max(c.peak_rss_mib());
    c.stop()?;
    let offsets = db.scalar(&progress).await?;
    if offsets as u64 != records {
        bail!("the sink stored offsets adding up to {offsets} for {records} records in {topic}");
    }
    let stored = db.scalar("SELECT count(*) FROM health_case").await?;
    if stored as u64 != rows {
        bail!("the sink stored {stored} rows of {rows}");
    }
    Ok(Drained {
        secs,
        peak_mib: peak,
        db,
        group,
    })
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = a.backlog.size();
    let Backlog { load, tools } = &a.backlog;
    let (docs, kcat, admin) = (&load.common.docs, &tools.kcat, tools.pg.as_str());
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers.clone();
    let topic = format!("bench.sink.{}", chrono::Utc::now().format("%Y%m%d%H%M%S%f"));
    create_topics(&brokers, &[&topic], partitions, true).await?;
    let producer = s.producer()?;
    produce_backlog(&producer, &topic, BACKLOG_SEED, events, |_, _| Ok(())).await?;
    eprintln!("backlog: {events} events in {topic} ({partitions} partitions)");

    if a.rss_only {
        let d = run_vigie(vigie, &brokers, &topic, (events, events), admin).await?;
        let (secs, peak) = (d.secs, d.peak_mib);
        d.db.drop_db().await?;
        eprintln!("drained {events} in {secs:.1} s, peak RSS {peak:.1} MiB");
        record(
            docs,
            Bar::peak_rss(
                format!("sink_postgres_peak_rss_{}k", events / 1000),
                "peak RSS (VmHWM) of vigie consume --sink postgres while draining the backlog, against the 200 MiB budget".to_owned(),
                peak,
                &format!("scripts/bench sink-postgres --rss-only --events {events}"),
                json!({"events": events, "partitions": partitions, "drain_seconds": secs, "broker": BROKER}),
            ),
        )?;
        return Ok(());
    }

    let dir = tempfile::tempdir()?;
    let rows_csv = dir.path().join("health_case.csv");
    let (mut v_secs, mut k_secs, mut f_secs, mut peaks) = (vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        let d = run_vigie(vigie, &brokers, &topic, (events, events), admin).await?;
        let (secs, peak, vdb) = (d.secs, d.peak_mib, d.db);
        if r == 0 {
            // The exact rows the sink stored: the file baseline copies them.
            psql(
                &vdb.url(),
                &format!("\\copy health_case TO '{}' CSV", rows_csv.display()),
            )?;
        }
        vdb.drop_db().await?;
        v_secs.push(secs);
        peaks.push(peak);

        let kdb = Db::create(admin, "kcat").await?.migrated().await?;
        psql(&kdb.url(), "CREATE TABLE raw_events (doc jsonb)")?;
        let started = Instant::now();
        let pipeline = format!(
            "{} -C -b {brokers} -t {topic} -e -q -f '%s\\n' | psql '{}' -v ON_ERROR_STOP=1 -q -c \"\\copy raw_events (doc) FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')\" && psql '{}' -v ON_ERROR_STOP=1 -q -c \"$UPSERT\"",
            kcat.display(),
            kdb.url(),
            kdb.url()
        );
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", &pipeline])
            .env("UPSERT", BASELINE_UPSERT)
            .output()?;
        if !out.status.success() {
            bail!(
                "kcat | psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        k_secs.push(started.elapsed().as_secs_f64());
        let rows = kdb.scalar("SELECT count(*) FROM health_case").await?;
        if rows as u64 != events {
            bail!("the kcat | psql baseline stored {rows} rows of {events}");
        }
        kdb.drop_db().await?;

        let fdb = Db::create(admin, "file").await?.migrated().await?;
        let started = Instant::now();
        psql(
            &fdb.url(),
            &format!("\\copy health_case FROM '{}' CSV", rows_csv.display()),
        )?;
        f_secs.push(started.elapsed().as_secs_f64());
        fdb.drop_db().await?;
        eprintln!(
            "run {}: vigie {:.2} s (peak RSS {peak:.0} MiB), kcat|psql {:.2} s, psql \\copy file {:.2} s",
            r + 1,
            v_secs[r],
            k_secs[r],
            f_secs[r]
        );
    }
    let vigie = events as f64 / median(&mut v_secs.clone());
    let kcat_eps = events as f64 / median(&mut k_secs.clone());
    let file_eps = events as f64 / median(&mut f_secs.clone());
    let cmd = format!(
        "scripts/bench sink-postgres --events {events} --partitions {partitions} --runs {runs}"
    );
    let details = json!({
        "events": events, "partitions": partitions, "runs": runs, "broker": BROKER,
        "vigie_seconds": v_secs, "kcat_psql_seconds": k_secs, "psql_copy_file_seconds": f_secs,
        "vigie_peak_rss_mib": peaks,
    });
    record(
        docs,
        Bar::rate(
            "sink_postgres_vs_kcat_psql",
            "exactly-once sink (Kafka -> health_case, offsets in the same transaction) vs kcat -C | psql \\copy into a jsonb staging table + the same upsert",
            (vigie, kcat_eps),
            "events/s",
            &cmd,
            details.clone(),
        ),
    )?;
    record(
        docs,
        Bar::rate(
            "sink_postgres_vs_psql_copy_file",
            "exactly-once sink vs psql \\copy of the same final rows from a local CSV file into health_case (no Kafka, no JSON, no upsert, no offsets: the physical limit)",
            (vigie, file_eps),
            "events/s",
            &cmd,
            details,
        ),
    )?;
    println!(
        "vigie {vigie:.0} events/s, kcat|psql {kcat_eps:.0} events/s (ratio {:.3}), psql \\copy file {file_eps:.0} events/s (ratio {:.3})",
        vigie / kcat_eps,
        vigie / file_eps
    );
    Ok(())
}
