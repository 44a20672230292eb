//! `sink-postgres-latency`: how long a case takes from its produce to its
//! row being visible in PostgreSQL, with `vigie consume --sink postgres`
//! already consuming the topic and cases produced at a steady rate.
//!
//! The sink stores each batch's next offsets (`sink_offsets`) in the
//! transaction of its rows, so a record's row is visible exactly when its
//! partition's stored offset first passes it. A reader polls `sink_offsets`
//! every [`POLL`] and notes when each partition's offset moves; a record's
//! latency is that time minus its `CreateTime` (set by librdkafka when it
//! is produced, on the same machine's clock). The poll rounds each latency
//! up by at most [`POLL`] plus one query.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use vigie_simulator::{case_generator, case_lines};

use crate::common::{
    BROKER, Bar, Common, Latency, Launch, Vigie, batch_totals, create_topics, free_port,
    mean_batch_ms, median, now_ms, produce_steady, read_topic, record, spawn_joined,
};
use crate::scenarios::sink_postgres::{BACKLOG_SEED, Db, Tools};

/// How often `sink_offsets` is read.
const POLL: Duration = Duration::from_millis(5);
/// The bar of `sink_postgres_latency_p99`, its baseline.
const BAR_MS: i64 = 250;

/// Options of `sink-postgres-latency`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) tools: Tools,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 12)]
    pub(crate) partitions: i32,
    /// Cases per second produced.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) rate: u64,
    /// Length of each run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
}

/// Each partition's stored offsets over time: `(next_offset, first seen
/// at, ms since the epoch)`, in the order seen.
type Advances = BTreeMap<i32, Vec<(i64, i64)>>;

/// Polls a group's rows of `sink_offsets` until stopped.
struct StoredOffsets {
    /// The sum of the group's stored offsets at the last poll.
    sum: Arc<AtomicI64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<Advances>>,
}

impl StoredOffsets {
    async fn start(url: &str, group: &str) -> anyhow::Result<Self> {
        let mut db = PgConnection::connect(url).await?;
        let (sum, stop) = (Arc::new(AtomicI64::new(0)), CancellationToken::new());
        let group = group.to_owned();
        let task = {
            let (sum, stop) = (sum.clone(), stop.clone());
            tokio::spawn(async move {
                let mut advances = Advances::new();
                while !stop.is_cancelled() {
                    let rows: Vec<(i32, i64)> = sqlx::query_as(
                        "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = $1",
                    )
                    .bind(&group)
                    .fetch_all(&mut db)
                    .await?;
                    let at = now_ms();
                    for (partition, next) in &rows {
                        let seen = advances.entry(*partition).or_default();
                        if seen.last().is_none_or(|(last, _)| last < next) {
                            seen.push((*next, at));
                        }
                    }
                    sum.store(rows.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
                    tokio::time::sleep(POLL).await;
                }
                Ok(advances)
            })
        };
        Ok(Self { sum, stop, task })
    }

    async fn finish(self) -> anyhow::Result<Advances> {
        self.stop.cancel();
        self.task.await?
    }
}

/// When the row of the record at `offset` of `partition` became visible:
/// the first poll that saw the partition's stored offset past it.
fn visible_at(advances: &Advances, partition: i32, offset: i64) -> Option<i64> {
    let seen = advances.get(&partition)?;
    let i = seen.partition_point(|(next, _)| *next <= offset);
    seen.get(i).map(|(_, at)| *at)
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (partitions, runs, rate, seconds) = (a.partitions, a.common.runs, a.rate, a.seconds);
    ensure!(
        runs > 0 && rate > 0 && seconds > 0,
        "runs, rate and seconds must be positive"
    );
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers.clone();
    let producer = s.producer()?;
    let logs = tempfile::tempdir()?;
    let total = rate * seconds;
    let (mut p99s, mut runs_ms) = (vec![], vec![]);
    for r in 0..runs {
        let topic = format!(
            "bench.sink-lat.{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S%f")
        );
        create_topics(&brokers, &[&topic], partitions, true).await?;
        let db = Db::create(a.tools.pg.as_str(), "lat")
            .await?
            .migrated()
            .await?;
        let group = format!("bench-{}", db.name);
        let env = [("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", db.url())];
        let port = free_port()?;
        let mut c = spawn_joined(&Launch {
            vigie,
            brokers: &brokers,
            sink: "postgres",
            topic: &topic,
            group: &group,
            port,
            env: &env,
            logs: logs.path(),
        })
        .await?;
        let stored = StoredOffsets::start(&db.url(), &group).await?;
        // Its first fetches (offset look-ups) are under way: let them land.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lines = case_lines(&case_generator(BACKLOG_SEED + r as u64), 0..total);
        let produce_secs = produce_steady(&producer, &topic, &lines, rate).await?;
        let started = Instant::now();
        while stored.sum.load(Ordering::Relaxed) < total as i64 {
            c.check_alive()?;
            if started.elapsed() > Duration::from_secs(300) {
                let _ = c.child.kill();
                bail!(
                    "the sink stored the offsets of {} of {total} records in 5 minutes",
                    stored.sum.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let totals = batch_totals(port).await;
        c.stop()?;
        let advances = stored.finish().await?;
        let mut samples = Vec::with_capacity(total as usize);
        let read = read_topic(&s, &topic, total, |rec| {
            let ts = rec.timestamp_ms.context("a case record has no timestamp")?;
            let at = visible_at(&advances, rec.partition, rec.offset).with_context(|| {
                format!("no stored offset passed {}:{}", rec.partition, rec.offset)
            })?;
            samples.push(at - ts);
            Ok(())
        })
        .await?;
        ensure!(
            read == total,
            "{topic} holds {read} records, {total} were produced"
        );
        let rows = db.scalar("SELECT count(*) FROM health_case").await?;
        ensure!(
            rows as u64 == total,
            "the sink stored {rows} rows of {total}"
        );
        db.drop_db().await?;
        let latency = Latency::of(samples).context("no record")?;
        let (batches, per_batch_ms) = (totals.0, mean_batch_ms(totals));
        eprintln!(
            "run {}: {total} cases at {:.0}/s, produce to row visible: {latency}; {batches} batches, {per_batch_ms:.1} ms each on average",
            r + 1,
            total as f64 / produce_secs
        );
        p99s.push(latency.p99 as f64);
        runs_ms.push(json!({"latency_ms": latency.json(), "batches": batches, "mean_batch_ms": (per_batch_ms * 10.0).round() / 10.0}));
    }
    let p99 = median(&mut p99s.clone()).round() as i64;
    let command = format!(
        "scripts/bench sink-postgres-latency --partitions {partitions} --runs {runs} --rate {rate} --seconds {seconds}"
    );
    record(
        &a.common.docs,
        Bar {
            name: "sink_postgres_latency_p99".to_owned(),
            description: format!(
                "median over runs of the p99 time from a case's produce (its CreateTime) to its row being visible in PostgreSQL (its partition's offset stored in sink_offsets, committed with the rows; polled every {} ms), while cases are produced at a steady rate into a topic that vigie consume --sink postgres already consumes, with the shipped defaults; baseline = the 250 ms bar, so ratio = p99 / bar; lower is better",
                POLL.as_millis()
            ),
            vigie: json!(p99),
            baseline: json!(BAR_MS),
            ratio: p99 as f64 / BAR_MS as f64,
            unit: "ms (p99 latency, produce to row visible; baseline = the bar; lower is better)"
                .to_owned(),
            higher_is_better: false,
            command,
            details: json!({
                "rate": rate, "seconds": seconds, "cases_per_run": total, "partitions": partitions,
                "runs": runs, "per_run": runs_ms,
                "batch_max_records": s.kafka.consumer.batch_max_records,
                "batch_max_wait_ms": s.kafka.consumer.batch_max_wait_ms,
                "batch_linger_ms": s.kafka.consumer.batch_linger_ms,
                "broker": BROKER,
            }),
        },
    )?;
    println!(
        "produce to row visible at {rate} cases/s: p99 {p99} ms (median of {runs} runs; bar {BAR_MS} ms)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_visible_at_the_first_poll_past_its_offset() {
        let advances = Advances::from([(0, vec![(10, 100), (25, 130), (40, 170)])]);
        assert_eq!(visible_at(&advances, 0, 0), Some(100));
        assert_eq!(visible_at(&advances, 0, 9), Some(100));
        assert_eq!(visible_at(&advances, 0, 10), Some(130));
        assert_eq!(visible_at(&advances, 0, 39), Some(170));
        assert_eq!(visible_at(&advances, 0, 40), None);
        assert_eq!(visible_at(&advances, 1, 0), None);
    }
}
