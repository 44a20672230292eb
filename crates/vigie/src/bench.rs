//! `vigie bench`: each scenario runs Vigie and its baseline side by side,
//! on the same input and the same broker, in alternating order, and records
//! the ratio in `docs/benchmarks/latest.json` and `docs/benchmarks.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use vigie_core::{Envelope, Payload};
use vigie_kafka::{TopicSpec, ensure_topics};
use vigie_simulator::{CaseGenConfig, CaseGenerator};

// Declared here rather than in `main.rs`, next to the scenarios it joins.
#[path = "bench_ingest.rs"]
mod bench_ingest;
#[path = "bench_scorer_e2e.rs"]
mod bench_scorer_e2e;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Raw envelope producer (`vigie produce`) vs `kcat -P`: the same
    /// serialized events into the same broker and topic layout.
    Producer {
        /// Events per run.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Runs of each side; the median is kept.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The kcat to run (one that loads a current librdkafka).
        #[arg(long, default_value = "scripts/kcat")]
        kcat: PathBuf,
        /// Where `benchmarks.md` and `benchmarks/latest.json` live.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Text of the broker used, for the record.
        #[arg(long, default_value = "Apache Kafka 4.4.0, one KRaft node, 127.0.0.1")]
        broker_label: String,
    },
    /// Raw envelope producer (`vigie produce`) vs Apache Kafka's own
    /// `kafka-producer-perf-test`: records drawn from the same serialized
    /// envelopes, the same acks, idempotence, compression, linger and batch
    /// size, into the same broker and topic layout.
    ProducerPerfTest {
        /// Events per run.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Runs of each side; the median is kept.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The wrapper that runs Kafka's tools.
        #[arg(long, default_value = "scripts/kafka-cli")]
        kafka_cli: PathBuf,
        /// Where `benchmarks.md` and `benchmarks/latest.json` live.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Text of the broker used, for the record.
        #[arg(long, default_value = "Apache Kafka 4.4.0, one KRaft node, 127.0.0.1")]
        broker_label: String,
    },
    /// `vigie ingest --source cdc-cases` from the HTTP simulator (fetch,
    /// parse, envelope, produce, checkpoint) vs `kcat -P` of the same
    /// envelopes pre-serialized in a file; with the producer's peak RSS.
    ProducerHttp {
        /// Events per run (rows served by the simulator).
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Runs of each side; the median is kept.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Rows per SODA page asked by the source (`options.page_size`).
        #[arg(long, default_value_t = 10_000)]
        page_size: u32,
        /// The kcat to run.
        #[arg(long, default_value = "scripts/kcat")]
        kcat: PathBuf,
        /// Where `benchmarks.md` and `benchmarks/latest.json` live.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Text of the broker used, for the record.
        #[arg(long, default_value = "Apache Kafka 4.4.0, one KRaft node, 127.0.0.1")]
        broker_label: String,
    },
    /// `vigie consume --sink postgres` (exactly-once) vs `kcat -C | psql
    /// \copy` + the same upsert, and vs `psql \copy` of the final rows from
    /// a file; with the sink's peak RSS.
    SinkPostgres {
        /// Events in the backlog.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Runs of each side; the median is kept.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The kcat to run.
        #[arg(long, default_value = "scripts/kcat")]
        kcat: PathBuf,
        /// Where `benchmarks.md` and `benchmarks/latest.json` live.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// PostgreSQL admin URL (databases are created and dropped here).
        #[arg(long, default_value = "postgres://postgres@localhost:5432/postgres")]
        pg: String,
        /// Record only the peak-RSS bar (for a large backlog).
        #[arg(long)]
        rss_only: bool,
    },
    /// The scorer (JSON in, score out, broker excluded) vs Python
    /// onnxruntime on the same rows in batches of the same size.
    Scorer {
        /// Rows scored per run.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Batch size on both sides.
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Runs of each side; the median is kept.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The model version directory.
        #[arg(long, default_value = "models/hosp_risk/1.0.0")]
        model: PathBuf,
        /// Where `benchmarks.md` and `benchmarks/latest.json` live.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
    },
    /// `vigie consume --sink scorer` on the broker (consume, score, publish,
    /// commit) vs `--sink blackhole` on the same backlog; then the p99
    /// latency case -> score at a steady rate.
    ScorerE2e {
        /// Events in the backlog (throughput part).
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Partitions of every topic.
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Runs of each side; the median is kept.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Cases per second produced for the latency part.
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        /// Length of the latency part, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The scorer's model directory (`scorer.model_dir`: versions inside).
        #[arg(long, default_value = "models/hosp_risk")]
        model: PathBuf,
        /// Where `benchmarks.md` and `benchmarks/latest.json` live.
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
    },
}

/// The sample generator used by the demo and the benchmarks.
pub(crate) fn case_generator(seed: u64) -> CaseGenerator {
    CaseGenerator::new(CaseGenConfig {
        seed,
        ..CaseGenConfig::default()
    })
    .expect("the default generator settings are valid")
}

/// Serialized case envelopes `(key, value)` for a range of row indices.
pub(crate) fn case_lines(
    generator: &CaseGenerator,
    range: std::ops::Range<u64>,
) -> Vec<(String, Vec<u8>)> {
    let now = chrono::Utc::now();
    range
        .map(|i| {
            let row = generator.row(i);
            let key = row.partition_key();
            let env = Envelope::new("cdc-cases", row, now);
            (key, env.to_json_bytes().expect("an envelope serializes"))
        })
        .collect()
}

pub(crate) async fn run(config: Option<&Path>, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let (events, partitions, runs, kcat, docs, broker_label) = match cmd {
        Cmd::Scorer {
            rows,
            batch,
            runs,
            model,
            docs,
        } => return crate::bench_scorer::run(rows, batch, runs, &model, &docs),
        Cmd::ScorerE2e {
            events,
            partitions,
            runs,
            rate,
            seconds,
            model,
            docs,
        } => {
            return bench_scorer_e2e::run(
                config,
                &bench_scorer_e2e::Params {
                    events,
                    partitions,
                    runs,
                    rate,
                    seconds,
                    model,
                    docs,
                },
            )
            .await;
        }
        Cmd::Producer {
            events,
            partitions,
            runs,
            kcat,
            docs,
            broker_label,
        } => (events, partitions, runs, kcat, docs, broker_label),
        Cmd::ProducerPerfTest {
            events,
            partitions,
            runs,
            kafka_cli,
            docs,
            broker_label,
        } => {
            return producer_vs_perf_test(
                config,
                events,
                partitions,
                runs,
                &kafka_cli,
                &docs,
                &broker_label,
            )
            .await;
        }
        Cmd::ProducerHttp {
            events,
            partitions,
            runs,
            page_size,
            kcat,
            docs,
            broker_label,
        } => {
            return bench_ingest::run(
                config,
                &bench_ingest::Params {
                    events,
                    partitions,
                    runs,
                    page_size,
                    kcat,
                    docs,
                    broker_label,
                },
            )
            .await;
        }
        Cmd::SinkPostgres {
            events,
            partitions,
            runs,
            kcat,
            docs,
            pg,
            rss_only,
        } => {
            return crate::bench_sink::run(
                config, events, partitions, runs, &kcat, &docs, &pg, rss_only,
            )
            .await;
        }
    };
    let s = crate::commands::load(config)?;
    let brokers = s.kafka.brokers.clone();
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("events.tsv");
    write_events(&input, None, events)?;
    let bytes = std::fs::metadata(&input)?.len();
    eprintln!("{events} events, {bytes} bytes, {partitions} partitions, {runs} runs each");
    let mut vigie_secs = Vec::new();
    let mut kcat_secs = Vec::new();
    for r in 0..runs {
        let suffix = uuid_like(r);
        let kt = format!("bench.kcat.{suffix}");
        let vt = format!("bench.vigie.{suffix}");
        let mut specs = vec![
            TopicSpec::new(&kt, partitions),
            TopicSpec::new(&vt, partitions),
        ];
        for t in &mut specs {
            t.dlq = false;
        }
        ensure_topics(&brokers, &specs).await?;
        let kcat_cmd = || kcat_producer(&kcat, &brokers, &kt);
        let vigie_cmd = || vigie_producer(&brokers, &vt, &input);
        // Alternate which side runs first, so neither always gets a warm broker.
        if r % 2 == 0 {
            kcat_secs.push(timed(kcat_cmd(), &input)?);
            vigie_secs.push(timed(vigie_cmd()?, &input)?);
        } else {
            vigie_secs.push(timed(vigie_cmd()?, &input)?);
            kcat_secs.push(timed(kcat_cmd(), &input)?);
        }
        // Both topics, read back, must hold every event.
        for topic in [&vt, &kt] {
            let n = bench_ingest::count_records(&kcat, &brokers, topic)?;
            anyhow::ensure!(n == events, "{topic} holds {n} records, not {events}");
        }
        eprintln!(
            "run {}: kcat {:.3} s, vigie {:.3} s",
            r + 1,
            kcat_secs[r],
            vigie_secs[r]
        );
    }
    let vigie = events as f64 / median(&mut vigie_secs);
    let baseline = events as f64 / median(&mut kcat_secs);
    let entry = json!({
        "name": "producer_vs_kcat",
        "description": "raw envelope producer (vigie produce) vs kcat -P, same serialized events, same broker and topic layout, zstd, idempotent, acks=all, linger 20 ms",
        "vigie": vigie.round(),
        "baseline": baseline.round(),
        "ratio": (vigie / baseline * 1000.0).round() / 1000.0,
        "unit": "records/s",
        "higher_is_better": true,
        "command": format!("scripts/bench producer --events {events} --partitions {partitions} --runs {runs}"),
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "details": {
            "events": events,
            "bytes": bytes,
            "partitions": partitions,
            "runs": runs,
            "broker": broker_label,
            "vigie_seconds": vigie_secs,
            "baseline_seconds": kcat_secs,
        }
    });
    record(&docs, entry)?;
    println!(
        "vigie {vigie:.0} records/s, kcat {baseline:.0} records/s, ratio {:.3}",
        vigie / baseline
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `events` sample case envelopes (generator seed 42) as
/// `key<TAB>value` lines to `tsv`, and their values alone, one a line, to
/// `values` when given.
fn write_events(tsv: &Path, values: Option<&Path>, events: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(tsv)?);
    let mut v = values
        .map(|p| std::fs::File::create(p).map(std::io::BufWriter::new))
        .transpose()?;
    let generator = case_generator(42);
    let mut start = 0;
    while start < events {
        let end = (start + 50_000).min(events);
        for (key, value) in case_lines(&generator, start..end) {
            f.write_all(key.as_bytes())?;
            f.write_all(b"\t")?;
            f.write_all(&value)?;
            f.write_all(b"\n")?;
            if let Some(v) = v.as_mut() {
                v.write_all(&value)?;
                v.write_all(b"\n")?;
            }
        }
        start = end;
    }
    f.flush()?;
    if let Some(mut v) = v {
        v.flush()?;
    }
    Ok(())
}

/// `vigie produce` of `key<TAB>value` lines from stdin into `topic`.
fn vigie_producer(brokers: &str, topic: &str, input: &Path) -> anyhow::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args(["produce", "--topic", topic, "--input"])
        .arg(input)
        .env("VIGIE__KAFKA__BROKERS", brokers)
        .env("RUST_LOG", "warn");
    Ok(c)
}

/// `vigie produce` vs `kafka-producer-perf-test` (see [`Cmd::ProducerPerfTest`]).
async fn producer_vs_perf_test(
    config: Option<&Path>,
    events: u64,
    partitions: i32,
    runs: usize,
    kafka_cli: &Path,
    docs: &Path,
    broker_label: &str,
) -> anyhow::Result<ExitCode> {
    let s = crate::commands::load(config)?;
    let brokers = s.kafka.brokers.clone();
    let p = &s.kafka.producer;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("events.tsv");
    let payloads = dir.path().join("values.ndjson");
    write_events(&input, Some(&payloads), events)?;
    let bytes = std::fs::metadata(&payloads)?.len();
    eprintln!(
        "{events} events, {bytes} bytes of values, {partitions} partitions, {runs} runs each"
    );
    // Vigie's producer settings, given to the Java producer as they are.
    let props = [
        format!("bootstrap.servers={brokers}"),
        "acks=all".to_owned(),
        "enable.idempotence=true".to_owned(),
        format!("compression.type={}", p.compression),
        format!("linger.ms={}", p.linger_ms),
        format!("batch.size={}", p.batch_size),
        format!("max.request.size={}", p.message_max_bytes),
    ];
    let mut vigie_secs = Vec::new();
    let mut perf_secs = Vec::new();
    let mut perf_reported = Vec::new();
    for r in 0..runs {
        let suffix = uuid_like(r);
        let pt = format!("bench.perf.{suffix}");
        let vt = format!("bench.vigie.{suffix}");
        let specs: Vec<TopicSpec> = [&pt, &vt]
            .into_iter()
            .map(|t| {
                let mut spec = TopicSpec::new(t, partitions);
                spec.dlq = false;
                spec
            })
            .collect();
        ensure_topics(&brokers, &specs).await?;
        let perf = || -> anyhow::Result<(f64, f64)> {
            let started = Instant::now();
            let out = Command::new(kafka_cli)
                .arg("kafka-producer-perf-test")
                .args(["--topic", &pt, "--num-records", &events.to_string()])
                .arg("--payload-file")
                .arg(&payloads)
                .args(["--throughput", "-1", "--producer-props"])
                .args(&props)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("cannot run {}", kafka_cli.display()))?;
            let secs = started.elapsed().as_secs_f64();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!(
                    "kafka-producer-perf-test failed: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok((secs, perf_test_rate(&stdout, events)?))
        };
        let vigie = || timed(vigie_producer(&brokers, &vt, &input)?, &input);
        // Alternate which side runs first, so neither always gets a warm broker.
        let ((ps, pr), vs) = if r % 2 == 0 {
            let p = perf()?;
            (p, vigie()?)
        } else {
            let v = vigie()?;
            (perf()?, v)
        };
        perf_secs.push(ps);
        perf_reported.push(pr);
        vigie_secs.push(vs);
        for topic in [&vt, &pt] {
            let n: i64 = vigie_kafka::group_lag(
                &brokers,
                "vigie-bench-count",
                std::slice::from_ref(topic),
                std::time::Duration::from_secs(10),
            )
            .await?
            .iter()
            .map(|l| l.high_watermark)
            .sum();
            anyhow::ensure!(
                n as u64 == events,
                "{topic} holds {n} records, not {events}"
            );
        }
        eprintln!(
            "run {}: kafka-producer-perf-test {ps:.3} s as a process ({pr:.0} records/s by its own count), vigie {vs:.3} s",
            r + 1
        );
    }
    let vigie = events as f64 / median(&mut vigie_secs);
    // The peer's own count leaves out the JVM's start; Vigie's time is the
    // whole process. The bar takes the peer's own, higher figure.
    let baseline = median(&mut perf_reported);
    let baseline_process = events as f64 / median(&mut perf_secs);
    let entry = json!({
        "name": "producer_vs_kafka_producer_perf_test",
        "description": "raw envelope producer (vigie produce, whole process) vs Apache Kafka's kafka-producer-perf-test (its own records/s, JVM start excluded), records from the same serialized envelopes, zstd, idempotent, acks=all, linger 20 ms, batch.size 1 MB, same broker and topic layout; perf-test sends no keys",
        "vigie": vigie.round(),
        "baseline": baseline.round(),
        "ratio": (vigie / baseline * 1000.0).round() / 1000.0,
        "unit": "records/s",
        "higher_is_better": true,
        "command": format!("scripts/bench producer-perf-test --events {events} --partitions {partitions} --runs {runs}"),
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "details": {
            "events": events,
            "value_bytes": bytes,
            "partitions": partitions,
            "runs": runs,
            "broker": broker_label,
            "vigie_seconds": vigie_secs,
            "baseline_seconds_as_a_process": perf_secs,
            "baseline_records_per_second_as_a_process": baseline_process.round(),
            "baseline_reported_records_per_second": perf_reported,
            "baseline_settings": props[1..],
        }
    });
    record(docs, entry)?;
    println!(
        "vigie {vigie:.0} records/s, kafka-producer-perf-test {baseline:.0} records/s ({baseline_process:.0} as a process), ratio {:.3}",
        vigie / baseline
    );
    Ok(ExitCode::SUCCESS)
}

/// The records/s of `kafka-producer-perf-test`'s summary line, `N records
/// sent, R records/sec (...)`, which must count `events` records.
fn perf_test_rate(stdout: &str, events: u64) -> anyhow::Result<f64> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" records sent, "))
        .with_context(|| {
            format!("no summary line in kafka-producer-perf-test's output: {stdout}")
        })?;
    let mut words = line.split_whitespace();
    let sent: u64 = words.next().unwrap_or_default().parse()?;
    anyhow::ensure!(
        sent == events,
        "kafka-producer-perf-test sent {sent} records, not {events}"
    );
    let rate = words.nth(2).unwrap_or_default();
    rate.parse()
        .with_context(|| format!("no rate in kafka-producer-perf-test's summary: {line}"))
}

/// `kcat -P` reading `key<TAB>value` lines from stdin into `topic`, with
/// the producer settings of Vigie's defaults (zstd, idempotent, acks=all,
/// linger 20 ms, batches of up to 10,000 records / 1 MB).
pub(crate) fn kcat_producer(kcat: &Path, brokers: &str, topic: &str) -> Command {
    let mut c = Command::new(kcat);
    c.args(["-P", "-b", brokers, "-t", topic, "-K", "\t", "-z", "zstd"])
        .args([
            "-X",
            "linger.ms=20",
            "-X",
            "enable.idempotence=true",
            "-X",
            "acks=all",
        ])
        .args(["-X", "batch.num.messages=10000", "-X", "batch.size=1000000"]);
    c
}

pub(crate) fn uuid_like(run: usize) -> String {
    format!("{}-{run}", chrono::Utc::now().format("%Y%m%d%H%M%S%f"))
}

fn timed(mut cmd: Command, stdin: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::from(std::fs::File::open(stdin)?))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Replaces the entry of the same name in `latest.json` and rewrites the
/// table of `benchmarks.md` between its markers.
pub(crate) fn record(docs: &Path, entry: Value) -> anyhow::Result<()> {
    let json_path = docs.join("benchmarks/latest.json");
    let mut all: Vec<Value> = match std::fs::read_to_string(&json_path) {
        Ok(s) => serde_json::from_str(&s)
            .with_context(|| format!("{} is not valid JSON", json_path.display()))?,
        Err(_) => Vec::new(),
    };
    all.retain(|e| e["name"] != entry["name"]);
    all.push(entry);
    all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    std::fs::create_dir_all(json_path.parent().expect("a parent"))?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&all)? + "\n")?;

    let md_path = docs.join("benchmarks.md");
    let md = std::fs::read_to_string(&md_path).unwrap_or_default();
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let mut table = String::from(
        "| bar | vigie | baseline | ratio | unit | date | command |\n|---|---:|---:|---:|---|---|---|\n",
    );
    for e in &all {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | `{}` |\n",
            e["name"].as_str().unwrap_or_default(),
            e["vigie"],
            e["baseline"],
            e["ratio"],
            e["unit"].as_str().unwrap_or_default(),
            e["date"].as_str().unwrap_or_default(),
            e["command"].as_str().unwrap_or_default(),
        ));
    }
    let new_md = match (md.find(begin), md.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{table}{}", &md[..b], &md[e..]),
        _ => format!("# Benchmarks\n\n{begin}\n{table}{end}\n"),
    };
    std::fs::write(&md_path, new_md)?;
    Ok(())
}
