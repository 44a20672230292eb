//! `sink-scylla`: the ScyllaDB sink, `vigie consume --sink scylla`, draining
//! a backlog of cases into `health_case_by_state_month` on a CQL server
//! (Apache Cassandra here, `scripts/cassandra`), against two baselines
//! loading the same rows into the same server:
//! - `cqlsh COPY FROM` a CSV file (cqlsh from PyPI), the standard bulk
//!   loader;
//! - a Python script with the `cassandra-driver`'s
//!   `execute_concurrent_with_args` and the sink's own prepared insert,
//!   what a data engineer would write (`python/cql_load.py`).
//!
//! The rows are the sink's: the first run's table, exported with `cqlsh
//! COPY TO`. Each side writes a keyspace of its own, which must hold every
//! case; the baselines run with as many processes or requests in flight as
//! the topic has partitions, consistency `LOCAL_QUORUM` like the sink.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;

use super::sink_postgres::BACKLOG_SEED;
use crate::common::{
    BROKER, Bar, Consumer, Launch, Load, Vigie, committed, create_topics, median, produce_backlog,
    record,
};

/// Options of `sink-scylla`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) load: Load,
    /// The CQL server, `host:port` (scripts/bench starts one).
    #[arg(long, env = "VIGIE_BENCH_CQL")]
    pub(crate) cql: String,
    /// The Python with `cassandra-driver` and `cqlsh` installed
    /// (scripts/bench makes the environment).
    #[arg(long, env = "VIGIE_BENCH_CQL_PYTHON")]
    pub(crate) python: PathBuf,
}

/// The table the backlog's cases go to.
const TABLE: &str = "health_case_by_state_month";

/// The CQL side of a run: the server and the Python that talks to it.
struct Cql<'a> {
    host: &'a str,
    port: &'a str,
    python: &'a Path,
    script: PathBuf,
}

impl Cql<'_> {
    /// `python/cql_load.py COMMAND HOST PORT KEYSPACE ARGS...`; its stdout.
    fn script(&self, command: &str, keyspace: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(self.python)
            .arg(&self.script)
            .args([command, self.host, self.port, keyspace])
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.python.display()))?;
        if !out.status.success() {
            bail!(
                "cql_load.py {command} {keyspace} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Fails unless `keyspace` holds `events` cases; then drops it.
    /// Waits until the node runs no compaction (at most 5 minutes).
    fn idle(&self) -> anyhow::Result<()> {
        let idle = self.script("idle", "-", &[])?;
        ensure!(
            idle == "True",
            "the CQL node still compacts after 5 minutes"
        );
        Ok(())
    }

    fn check_and_drop(&self, keyspace: &str, events: u64, who: &str) -> anyhow::Result<()> {
        let n: u64 = self.script("count", keyspace, &[])?.parse()?;
        ensure!(n == events, "{who} stored {n} cases of {events}");
        self.script("drop", keyspace, &[])?;
        Ok(())
    }

    /// `cqlsh HOST PORT -e CQL`.
    fn cqlsh(&self, cql: &str) -> anyhow::Result<()> {
        let cqlsh = self.python.with_file_name("cqlsh");
        let out = Command::new(&cqlsh)
            .args([self.host, self.port, "--request-timeout=600", "-e", cql])
            .output()
            .with_context(|| format!("cannot run {}", cqlsh.display()))?;
        if !out.status.success() {
            bail!("cqlsh failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// Drains `topic` (`events` records) with `vigie consume --sink scylla`
/// into `keyspace`: the seconds until every offset is committed, and the
/// sink's peak RSS in MiB.
async fn run_vigie(
    vigie: &Vigie,
    (brokers, topic, events): (&str, &str, u64),
    (cql, keyspace): (&str, &str),
    logs: &Path,
) -> anyhow::Result<(f64, f64)> {
    let group = format!("bench-{keyspace}");
    let env = [
        ("VIGIE__CONSUMERS__SINKS__SCYLLA__NODES", cql.to_owned()),
        (
            "VIGIE__CONSUMERS__SINKS__SCYLLA__KEYSPACE",
            keyspace.to_owned(),
        ),
    ];
    let started = Instant::now();
    let mut c = Consumer::spawn(&Launch {
        vigie,
        brokers,
        sink: "scylla",
        topic,
        group: &group,
        port: 0,
        env: &env,
        logs,
    })?;
    let mut peak = 0f64;
    loop {
        peak = peak.max(c.peak_rss_mib());
        if committed(brokers, &group, topic).await.unwrap_or(0) as u64 >= events {
            break;
        }
        c.check_alive()?;
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the sink did not drain the backlog in an hour"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    peak = peak.max(c.peak_rss_mib());
    c.stop()?;
    Ok((secs, peak))
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = (a.load.events, a.load.partitions, a.load.common.runs);
    let docs = &a.load.common.docs;
    let (host, port) = a.cql.split_once(':').context("--cql is host:port")?;
    let cql = Cql {
        host,
        port,
        python: &a.python,
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("python/cql_load.py"),
    };
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/scylla/schema.cql");
    let schema = schema.display().to_string();
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers.clone();
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let topic = format!("bench.scylla.{stamp}");
    create_topics(&brokers, &[&topic], partitions, true).await?;
    let producer = s.producer()?;
    produce_backlog(&producer, &topic, BACKLOG_SEED, events, |_, _| Ok(())).await?;
    eprintln!("backlog: {events} events in {topic} ({partitions} partitions)");

    let dir = tempfile::tempdir()?;
    let rows_csv = dir.path().join("cases.csv");
    let p = partitions.to_string();
    // A run of the sink before any measured one: the node's JIT is warm
    // for every side (each run measures the sink first), and the rows it
    // stored are the baselines' input.
    let warm = format!("bench_warm_{stamp}");
    cql.script("schema", &warm, &[&schema])?;
    run_vigie(
        vigie,
        (&brokers, &topic, events),
        (&a.cql, &warm),
        dir.path(),
    )
    .await?;
    cql.cqlsh(&format!(
        "COPY {warm}.{TABLE} TO '{}' WITH HEADER = true",
        rows_csv.display()
    ))?;
    cql.check_and_drop(&warm, events, "vigie (warm-up)")?;
    let (mut v_secs, mut c_secs, mut d_secs, mut peaks) = (vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        let ks = |side: &str| format!("bench_{side}_{stamp}_{r}");
        // Every side finds its keyspace and tables made before its clock
        // starts (the sink only checks them).
        cql.script("schema", &ks("vigie"), &[&schema])?;
        cql.idle()?;
        let (secs, peak) = run_vigie(
            vigie,
            (&brokers, &topic, events),
            (&a.cql, &ks("vigie")),
            dir.path(),
        )
        .await?;
        cql.check_and_drop(&ks("vigie"), events, "vigie")?;
        v_secs.push(secs);
        peaks.push(peak);

        cql.script("schema", &ks("cqlsh"), &[&schema])?;
        cql.idle()?;
        let started = Instant::now();
        cql.cqlsh(&format!(
            "CONSISTENCY LOCAL_QUORUM; COPY {}.{TABLE} FROM '{}' WITH HEADER = true \
             AND NUMPROCESSES = {p} AND INGESTRATE = 10000000 AND MAXATTEMPTS = 20",
            ks("cqlsh"),
            rows_csv.display()
        ))?;
        c_secs.push(started.elapsed().as_secs_f64());
        cql.check_and_drop(&ks("cqlsh"), events, "cqlsh COPY FROM")?;

        cql.script("schema", &ks("driver"), &[&schema])?;
        cql.idle()?;
        let started = Instant::now();
        let written = cql.script(
            "load",
            &ks("driver"),
            &[&rows_csv.display().to_string(), &p],
        )?;
        d_secs.push(started.elapsed().as_secs_f64());
        ensure!(
            written == events.to_string(),
            "the Python driver wrote {written} rows of {events}"
        );
        cql.check_and_drop(&ks("driver"), events, "the Python driver")?;
        eprintln!(
            "run {}: vigie {:.2} s (peak RSS {peak:.0} MiB), cqlsh COPY FROM {:.2} s, Python driver {:.2} s",
            r + 1,
            v_secs[r],
            c_secs[r],
            d_secs[r]
        );
    }
    let vigie_eps = events as f64 / median(&mut v_secs.clone());
    let cqlsh_eps = events as f64 / median(&mut c_secs.clone());
    let driver_eps = events as f64 / median(&mut d_secs.clone());
    let cmd = format!(
        "scripts/bench sink-scylla --events {events} --partitions {partitions} --runs {runs}"
    );
    let details = json!({
        "events": events, "partitions": partitions, "runs": runs, "broker": BROKER,
        "cql_server": "Apache Cassandra 5.0.6, one node, 127.0.0.1, commitlog_sync periodic (its default)",
        "vigie_seconds": v_secs, "cqlsh_copy_seconds": c_secs, "python_driver_seconds": d_secs,
        "vigie_peak_rss_mib": peaks,
        "vigie_settings": "defaults: concurrency 16, batch_max_rows 50, batch_max_bytes 16384, consistency local_quorum, exactly_once (each batch's dead letters and offsets in one Kafka transaction)",
        "warm_up": "one unmeasured run of the sink first (its rows are the baselines' CSV), so that the node's JIT is warm for every side; each side starts once the node runs no compaction (system_views.sstable_tasks empty)",
        "cqlsh_settings": format!("cqlsh 6.2.2: COPY FROM ... WITH HEADER = true AND NUMPROCESSES = {p} AND INGESTRATE = 10000000 AND MAXATTEMPTS = 20 (its default, 5, gave up on write timeouts of the loaded node), CONSISTENCY LOCAL_QUORUM"),
        "python_driver_settings": format!("cassandra-driver 3.30.1: execute_concurrent_with_args, concurrency {p}, the sink's prepared insert (USING TTL ? AND TIMESTAMP ?), idempotent, LOCAL_QUORUM"),
    });
    record(
        docs,
        Bar::rate(
            "sink_scylla_vs_cqlsh_copy",
            "vigie consume --sink scylla (Kafka -> health_case_by_state_month, offsets committed after the writes are acknowledged) vs cqlsh COPY FROM a CSV file of the same rows",
            (vigie_eps, cqlsh_eps),
            "events/s",
            &cmd,
            details.clone(),
        ),
    )?;
    record(
        docs,
        Bar::rate(
            "sink_scylla_vs_python_driver",
            "vigie consume --sink scylla vs the Python cassandra-driver's execute_concurrent_with_args of the same prepared insert over the same rows from a CSV file",
            (vigie_eps, driver_eps),
            "events/s",
            &cmd,
            details.clone(),
        ),
    )?;
    let peak = peaks.iter().copied().fold(0f64, f64::max);
    record(
        docs,
        Bar::peak_rss(
            format!("sink_scylla_peak_rss_{}k", events / 1000),
            "peak RSS (VmHWM) of vigie consume --sink scylla while draining the backlog, the highest of the runs, against the 200 MiB budget".to_owned(),
            peak,
            &cmd,
            details,
        ),
    )?;
    println!(
        "vigie {vigie_eps:.0} events/s, cqlsh COPY FROM {cqlsh_eps:.0} events/s (ratio {:.3}), Python driver {driver_eps:.0} events/s (ratio {:.3}), peak RSS {peak:.0} MiB",
        vigie_eps / cqlsh_eps,
        vigie_eps / driver_eps
    );
    Ok(())
}
