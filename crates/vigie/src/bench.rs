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
        #[arg(long, default_value = "Tansu 0.6, memory storage, 127.0.0.1")]
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
        #[arg(long, default_value = "Tansu 0.6, memory storage, 127.0.0.1")]
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
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        let generator = case_generator(42);
        let mut start = 0;
        while start < events {
            let end = (start + 50_000).min(events);
            for (k, v) in case_lines(&generator, start..end) {
                f.write_all(k.as_bytes())?;
                f.write_all(b"\t")?;
                f.write_all(&v)?;
                f.write_all(b"\n")?;
            }
            start = end;
        }
        f.flush()?;
    }
    let bytes = std::fs::metadata(&input)?.len();
    eprintln!("{events} events, {bytes} bytes, {partitions} partitions, {runs} runs each");
    let exe = std::env::current_exe()?;
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
        let vigie_cmd = || {
            let mut c = Command::new(&exe);
            c.args(["produce", "--topic", &vt, "--input"])
                .arg(&input)
                .env("VIGIE__KAFKA__BROKERS", &brokers)
                .env("RUST_LOG", "warn");
            c
        };
        // Alternate which side runs first, so neither always gets a warm broker.
        if r % 2 == 0 {
            kcat_secs.push(timed(kcat_cmd(), &input)?);
            vigie_secs.push(timed(vigie_cmd(), &input)?);
        } else {
            vigie_secs.push(timed(vigie_cmd(), &input)?);
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
