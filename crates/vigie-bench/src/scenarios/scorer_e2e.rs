//! `scorer-e2e`: the scorer as it runs in production, a
//! `vigie consume --sink scorer` process between two topics of the broker.
//!
//! - **Throughput**: a backlog of case envelopes drained by the scorer
//!   (consume, validate, score, publish one score per case, commit) against
//!   `vigie consume --sink blackhole` (consume, validate, commit) on the same
//!   backlog with another fresh group: the ratio is what scoring and
//!   publishing cost on top of consuming. Each process is timed from its
//!   start until its `/metrics` counts the whole backlog written (counted
//!   after each batch's commit); the group's summed committed offsets must
//!   then equal the backlog.
//! - **Latency**: cases produced at a steady rate into an empty topic the
//!   scorer already consumes; the time each score reaches a
//!   `read_committed` reader of the score topic minus its case's
//!   `CreateTime` (set by librdkafka when the case is produced): produce to
//!   visible, transaction commit included.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use vigie_kafka::{BatchConsumer, KafkaMetrics};
use vigie_simulator::{case_generator, case_lines};

use crate::common::{
    BROKER, Bar, Consumer, Latency, Launch, Load, Settings, Vigie, alternate, batch_totals,
    committed, create_topics, free_port, mean_batch_ms, median, metric, now_ms, ort_dylib,
    produce_backlog, produce_steady, read_topic, record, spawn_joined, uuid_like,
};

/// How often a group's committed offsets are read, when waiting on them.
const POLL: Duration = Duration::from_millis(100);
/// How often a timed consumer's `/metrics` is read.
const FAST_POLL: Duration = Duration::from_millis(20);
/// The bar of `scorer_e2e_latency_p99`, its baseline.
const LATENCY_BAR_MS: i64 = 250;
/// Longest a drain or a read-back may take before the bench fails.
const DEADLINE: Duration = Duration::from_secs(1800);

/// Options of `scorer-e2e`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) load: Load,
    /// Cases per second produced for the latency part.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) rate: u64,
    /// Length of the latency part, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// The scorer's model directory (`scorer.model_dir`: versions inside).
    #[arg(long, default_value = "models/hosp_risk")]
    pub(crate) model: PathBuf,
}

/// The id of an envelope.
#[derive(Deserialize)]
struct EnvelopeId {
    id: String,
}

/// The case a score event is about.
#[derive(Deserialize)]
struct ScoreOf {
    data: ScoreData,
}

#[derive(Deserialize)]
struct ScoreData {
    case_event_id: String,
    model_version: String,
}

/// Waits until `group`'s committed offsets on `topic` add up to `events`.
async fn wait_committed(
    c: &mut Consumer,
    brokers: &str,
    group: &str,
    topic: &str,
    events: u64,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let done = committed(brokers, group, topic).await.unwrap_or(0);
        if done as u64 >= events {
            ensure!(
                done as u64 == events,
                "{} committed {done} offsets for {events} records",
                c.what
            );
            return Ok(());
        }
        c.check_alive()?;
        if started.elapsed() > deadline {
            let _ = c.child.kill();
            bail!(
                "{} committed {done} of {events} records in {deadline:?}",
                c.what
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One timed drain of the backlog.
struct Drain {
    /// From spawn until the sink counted the whole backlog written.
    secs: f64,
    /// From spawn until its first batch was committed (start-up, model
    /// load, group join, first batch).
    first_batch_secs: f64,
    /// Peak RSS meanwhile, MiB.
    peak_rss_mib: f64,
    /// Time spent inside batches (validate, write, commit), from its
    /// `vigie_consumer_batch_duration_seconds`; the rest is start-up and
    /// waiting for records.
    in_batches_secs: f64,
    /// Batches.
    batches: u64,
}

/// Runs one consumer over the backlog. The end is seen on its `/metrics`
/// (`vigie_sink_events_total`, counted once a batch is committed), read
/// every [`FAST_POLL`], which is cheaper and finer than asking the broker;
/// the group's committed offsets are then checked to cover the backlog.
async fn drain(l: &Launch<'_>, events: u64) -> anyhow::Result<Drain> {
    let port = free_port()?;
    let l = Launch { port, ..*l };
    let started = Instant::now();
    let mut c = Consumer::spawn(&l)?;
    let (mut peak, mut first) = (0f64, None);
    let mut polls = 0u64;
    let secs = loop {
        peak = peak.max(c.peak_rss_mib());
        let written = metric(port, "vigie_sink_events_total").await.unwrap_or(0.0) as u64;
        if written > 0 && first.is_none() {
            first = Some(started.elapsed().as_secs_f64());
        }
        if written >= events {
            break started.elapsed().as_secs_f64();
        }
        c.check_alive()?;
        polls += 1;
        // Now and then, the broker's view: all committed, yet not all
        // written (asked again after the offsets, as the count follows the
        // commit), means some records were refused (dead-lettered).
        if polls.is_multiple_of(50)
            && committed(l.brokers, l.group, l.topic).await.unwrap_or(0) as u64 >= events
        {
            let written = metric(port, "vigie_sink_events_total").await.unwrap_or(0.0) as u64;
            ensure!(
                written >= events,
                "{} committed the backlog but wrote {written} of {events} events",
                c.what
            );
        }
        if started.elapsed() > DEADLINE {
            let _ = c.child.kill();
            bail!(
                "{} wrote {written} of {events} events in {DEADLINE:?}",
                c.what
            );
        }
        tokio::time::sleep(FAST_POLL).await;
    };
    peak = peak.max(c.peak_rss_mib());
    let (batches, in_batches_secs) = batch_totals(port).await;
    wait_committed(
        &mut c,
        l.brokers,
        l.group,
        l.topic,
        events,
        Duration::from_secs(30),
    )
    .await?;
    c.stop()?;
    Ok(Drain {
        secs,
        first_batch_secs: first.unwrap_or(secs),
        peak_rss_mib: peak,
        in_batches_secs,
        batches,
    })
}

/// The ids of serialized envelopes.
fn ids(lines: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<String>> {
    lines
        .iter()
        .map(|(_, v)| Ok(serde_json::from_slice::<EnvelopeId>(v)?.id))
        .collect()
}

/// Reads a score topic: `(records, first score timestamp per case id,
/// model versions seen)`.
async fn read_scores(
    s: &Settings,
    topic: &str,
    expected: u64,
) -> anyhow::Result<(u64, HashMap<String, i64>, HashSet<String>)> {
    let mut first: HashMap<String, i64> = HashMap::with_capacity(expected as usize);
    let mut versions = HashSet::new();
    let n = read_topic(s, topic, expected, |r| {
        let payload = r
            .payload
            .as_deref()
            .context("a score record has no value")?;
        let score: ScoreOf = serde_json::from_slice(payload)
            .with_context(|| format!("not a score event: {}", String::from_utf8_lossy(payload)))?;
        let ts = r.timestamp_ms.context("a score record has no timestamp")?;
        versions.insert(score.data.model_version);
        first
            .entry(score.data.case_event_id)
            .and_modify(|t| *t = (*t).min(ts))
            .or_insert(ts);
        Ok(())
    })
    .await?;
    Ok((n, first, versions))
}

/// The environment of a scorer child: its output topic, its model
/// directory and the onnxruntime library.
fn scorer_env(output: &str, model_dir: &Path, dylib: &Path) -> [(&'static str, String); 3] {
    [
        (
            "VIGIE__CONSUMERS__SINKS__SCORER__OUTPUT_TOPIC",
            output.to_owned(),
        ),
        (
            "VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR",
            model_dir.display().to_string(),
        ),
        ("ORT_DYLIB_PATH", dylib.display().to_string()),
    ]
}

/// Nearest-rank percentile of sorted values.
pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = (a.load.events, a.load.partitions, a.load.common.runs);
    let (rate, seconds) = (a.rate, a.seconds);
    let docs = &a.load.common.docs;
    ensure!(
        events > 0 && runs > 0 && rate > 0 && seconds > 0,
        "events, runs, rate and seconds must be positive"
    );
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers.clone();
    let model_dir = std::fs::canonicalize(&a.model)
        .with_context(|| format!("no model directory {}", a.model.display()))?;
    let dylib = ort_dylib()?;
    let logs = tempfile::tempdir()?;
    let producer = s.producer()?;
    let tag = uuid_like(0);
    let batch_max_records = s.kafka.consumer.batch_max_records;
    let batch_max_wait_ms = s.kafka.consumer.batch_max_wait_ms;
    let batch_linger_ms = s.kafka.consumer.batch_linger_ms;

    // Throughput: one backlog, drained by fresh groups.
    let input = format!("bench.scorer-e2e.in.{tag}");
    create_topics(&brokers, &[&input], partitions, true).await?;
    let mut input_ids = HashSet::with_capacity(events as usize);
    produce_backlog(&producer, &input, 13, events, |_, lines| {
        input_ids.extend(ids(lines)?);
        Ok(())
    })
    .await?;
    ensure!(
        input_ids.len() as u64 == events,
        "the generator gave {} distinct ids for {} cases",
        input_ids.len(),
        events
    );
    eprintln!(
        "backlog: {} events in {input} ({} partitions), {} runs each",
        events, partitions, runs
    );

    let (mut sc_secs, mut bh_secs, mut sc_rss, mut bh_rss) = (vec![], vec![], vec![], vec![]);
    let (mut sc_first, mut bh_first, mut published) = (vec![], vec![], vec![]);
    let (mut sc_in_batches, mut bh_in_batches, mut sc_batches, mut bh_batches) =
        (vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        let output = format!("bench.scorer-e2e.out.{}", uuid_like(r));
        create_topics(&brokers, &[&output], partitions, false).await?;
        let env = scorer_env(&output, &model_dir, &dylib);
        let (sc_group, bh_group) = (
            format!("bench-scorer-{}", uuid_like(r)),
            format!("bench-blackhole-{}", uuid_like(r)),
        );
        let scorer = Launch {
            vigie,
            brokers: &brokers,
            sink: "scorer",
            topic: &input,
            group: &sc_group,
            port: 0,
            env: &env,
            logs: logs.path(),
        };
        let blackhole = Launch {
            sink: "blackhole",
            group: &bh_group,
            env: &[],
            ..scorer
        };
        let (bh, sc) = alternate(r, drain(&blackhole, events), drain(&scorer, events)).await?;
        let (n, first, versions) = read_scores(&s, &output, events).await?;
        ensure!(
            first.len() as u64 == events && first.keys().all(|id| input_ids.contains(id)),
            "{output} holds scores for {} distinct cases, expected the {} cases of {input}",
            first.len(),
            events
        );
        eprintln!(
            "run {}: scorer {:.2} s (first batch at {:.2} s, {:.2} s in {} batches, peak RSS {:.0} MiB), blackhole {:.2} s (first batch at {:.2} s, {:.2} s in {} batches, peak RSS {:.0} MiB); {n} scores published (model {versions:?})",
            r + 1,
            sc.secs,
            sc.first_batch_secs,
            sc.in_batches_secs,
            sc.batches,
            sc.peak_rss_mib,
            bh.secs,
            bh.first_batch_secs,
            bh.in_batches_secs,
            bh.batches,
            bh.peak_rss_mib
        );
        sc_secs.push(sc.secs);
        sc_first.push(sc.first_batch_secs);
        sc_rss.push(sc.peak_rss_mib);
        bh_secs.push(bh.secs);
        bh_first.push(bh.first_batch_secs);
        bh_rss.push(bh.peak_rss_mib);
        sc_in_batches.push(sc.in_batches_secs);
        bh_in_batches.push(bh.in_batches_secs);
        sc_batches.push(sc.batches);
        bh_batches.push(bh.batches);
        published.push(n);
    }
    let scorer = events as f64 / median(&mut sc_secs.clone());
    let baseline = events as f64 / median(&mut bh_secs.clone());
    let throughput_cmd = format!(
        "scripts/bench scorer-e2e --events {} --partitions {} --runs {} --rate {} --seconds {}",
        events, partitions, runs, rate, seconds
    );
    record(
        docs,
        Bar::rate(
            "scorer_e2e_vs_blackhole",
            "vigie consume --sink scorer (consume, validate, score with ONNX Runtime, publish one health.case_score.v1 per case, commit) vs vigie consume --sink blackhole (consume, validate, commit) draining the same backlog with fresh groups; each process timed from its start until it has committed the whole backlog (its /metrics, read every 20 ms; committed offsets checked after). The ratio is what scoring and publishing cost on top of consuming",
            (scorer, baseline),
            "events/s",
            &throughput_cmd,
            json!({
                "events": events, "partitions": partitions, "runs": runs,
                "scorer_seconds": sc_secs, "blackhole_seconds": bh_secs,
                "scorer_first_batch_seconds": sc_first, "blackhole_first_batch_seconds": bh_first,
                "scorer_in_batches_seconds": sc_in_batches, "blackhole_in_batches_seconds": bh_in_batches,
                "scorer_batches": sc_batches, "blackhole_batches": bh_batches,
                "scorer_peak_rss_mib": sc_rss, "blackhole_peak_rss_mib": bh_rss,
                "scores_published": published,
                "batch_max_records": batch_max_records, "batch_max_wait_ms": batch_max_wait_ms,
                "broker": BROKER,
            }),
        ),
    )?;
    println!(
        "throughput: scorer {scorer:.0} events/s, blackhole {baseline:.0} events/s, ratio {:.3}",
        scorer / baseline
    );

    // Latency: a steady stream into a topic the scorer already consumes,
    // its scores watched by a read_committed reader.
    let (lat_in, lat_out) = (
        format!("bench.scorer-e2e.lat-in.{tag}"),
        format!("bench.scorer-e2e.lat-out.{tag}"),
    );
    create_topics(&brokers, &[&lat_in], partitions, true).await?;
    create_topics(&brokers, &[&lat_out], partitions, false).await?;
    let total = rate * seconds;
    let lines = case_lines(&case_generator(17), 0..total);
    let group = format!("bench-scorer-lat-{tag}");
    let env = scorer_env(&lat_out, &model_dir, &dylib);
    let joined = Instant::now();
    let port = free_port()?;
    let mut c = spawn_joined(&Launch {
        vigie,
        brokers: &brokers,
        sink: "scorer",
        topic: &lat_in,
        group: &group,
        port,
        env: &env,
        logs: logs.path(),
    })
    .await?;
    let watcher = Visibility::start(&s, &lat_out, partitions).await?;
    eprintln!(
        "latency: scorer joined in {:.1} s; producing {} cases/s for {} s",
        joined.elapsed().as_secs_f64(),
        rate,
        seconds
    );
    // Its first fetches (offset look-ups) are under way: let them land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let produce_secs = produce_steady(&producer, &lat_in, &lines, rate).await?;
    wait_committed(
        &mut c,
        &brokers,
        &group,
        &lat_in,
        total,
        Duration::from_secs(300),
    )
    .await?;
    let totals = batch_totals(port).await;
    let (batches, per_batch_ms) = (totals.0, mean_batch_ms(totals));
    c.stop()?;
    let visible = watcher.finish(total).await?;

    let mut case_ts: HashMap<String, i64> = HashMap::with_capacity(total as usize);
    let n_in = read_topic(&s, &lat_in, total, |r| {
        let payload = r.payload.as_deref().context("a case record has no value")?;
        let id = serde_json::from_slice::<EnvelopeId>(payload)?.id;
        let ts = r.timestamp_ms.context("a case record has no timestamp")?;
        ensure!(
            case_ts.insert(id, ts).is_none(),
            "a case appears twice in {lat_in}"
        );
        Ok(())
    })
    .await?;
    ensure!(
        n_in == total,
        "{lat_in} holds {n_in} records, {total} were produced"
    );
    let (n_out, first, _) = read_scores(&s, &lat_out, total).await?;
    ensure!(
        first.len() == case_ts.len() && visible.len() == case_ts.len(),
        "{lat_out} holds scores for {} cases and the reader saw {}, {} were produced",
        first.len(),
        visible.len(),
        case_ts.len()
    );
    let (mut to_visible, mut to_stamped) = (Vec::new(), Vec::new());
    for (id, t_in) in &case_ts {
        let seen = visible
            .get(id)
            .with_context(|| format!("case {id} has no score a read_committed reader saw"))?;
        let stamped = first
            .get(id)
            .with_context(|| format!("case {id} has no score in {lat_out}"))?;
        to_visible.push(seen - t_in);
        to_stamped.push(stamped - t_in);
    }
    let visible_ms = Latency::of(to_visible).context("no case")?;
    let stamped_ms = Latency::of(to_stamped).context("no case")?;
    let (first_score, last_score) = (
        first.values().min().copied().unwrap_or(0),
        first.values().max().copied().unwrap_or(0),
    );
    let span = (last_score - first_score).max(1) as f64 / 1000.0;
    let scored_rate = first.len() as f64 / span;
    let produced_rate = total as f64 / produce_secs;
    record(
        docs,
        Bar {
            name: "scorer_e2e_latency_p99".to_owned(),
            description: "p99 of the time from a case's produce (its CreateTime) to its score being read by a read_committed consumer of the score topic (the reader's clock, on the same machine), while cases are produced at a steady rate into a topic that vigie consume --sink scorer (transactional) already consumes, with the shipped defaults; baseline = the 250 ms bar, so ratio = p99 / bar; lower is better".to_owned(),
            vigie: json!(visible_ms.p99),
            baseline: json!(LATENCY_BAR_MS),
            ratio: visible_ms.p99 as f64 / LATENCY_BAR_MS as f64,
            unit: "ms (p99 latency, produce to visible; baseline = the bar; lower is better)".to_owned(),
            higher_is_better: false,
            command: throughput_cmd,
            details: json!({
                "rate": rate, "seconds": seconds, "cases": total, "partitions": partitions,
                "latency_ms": visible_ms.json(),
                "score_create_time_latency_ms": stamped_ms.json(),
                "produced_per_s": produced_rate.round(),
                "scored_per_s": scored_rate.round(),
                "scores_published": n_out,
                "batches": batches, "mean_batch_ms": (per_batch_ms * 10.0).round() / 10.0,
                "batch_max_records": batch_max_records, "batch_max_wait_ms": batch_max_wait_ms,
                "batch_linger_ms": batch_linger_ms,
                "broker": BROKER,
            }),
        },
    )?;
    println!(
        "latency at {rate} cases/s, produce to visible to a read_committed reader: {visible_ms} (score CreateTime: {stamped_ms}); {batches} batches of {per_batch_ms:.1} ms on average; produced {produced_rate:.0}/s, scored {scored_rate:.0}/s, {n_out} scores for {total} cases"
    );
    Ok(())
}

/// When each score became visible to a `read_committed` reader: a member
/// of a fresh group on the score topic, joined before any case is
/// produced, noting the time each score reaches it (batches closed as soon
/// as nothing more is there).
struct Visibility {
    consumer: Arc<BatchConsumer>,
    seen: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<HashMap<String, i64>>>,
}

impl Visibility {
    async fn start(s: &Settings, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let mut config = s.reader("visibility", topic);
        config.batch_linger_ms = 0;
        let consumer = Arc::new(BatchConsumer::new(
            &vigie_kafka::Cluster::new(&s.kafka.brokers),
            config,
            KafkaMetrics::unregistered(),
        )?);
        let (seen, stop) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        let task = {
            let (consumer, seen, stop) = (consumer.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut at = HashMap::new();
                while let Some(batch) = consumer.next_batch(&stop).await? {
                    let now = now_ms();
                    for r in &batch.records {
                        let payload = r
                            .payload
                            .as_deref()
                            .context("a score record has no value")?;
                        let score: ScoreOf = serde_json::from_slice(payload)?;
                        at.entry(score.data.case_event_id).or_insert(now);
                    }
                    seen.store(at.len() as u64, Ordering::Relaxed);
                }
                Ok(at)
            })
        };
        let started = Instant::now();
        while consumer.assigned().len() < partitions as usize {
            ensure!(
                !task.is_finished() && started.elapsed() < Duration::from_secs(60),
                "the read_committed reader of {topic} was not assigned its partitions in a minute"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            consumer,
            seen,
            stop,
            task,
        })
    }

    /// Once the reader has seen a score for `cases` cases (or a minute
    /// passed), the time each case's first score was seen.
    async fn finish(self, cases: u64) -> anyhow::Result<HashMap<String, i64>> {
        let started = Instant::now();
        while self.seen.load(Ordering::Relaxed) < cases
            && started.elapsed() < Duration::from_secs(60)
            && !self.task.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.cancel();
        let at = self.task.await??;
        if let Ok(c) = Arc::try_unwrap(self.consumer) {
            c.close().await;
        }
        Ok(at)
    }
}
