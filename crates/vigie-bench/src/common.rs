//! What the scenarios share: their common options, the `vigie` binary they
//! run and the settings it reports, the record of the results, timing and
//! peak RSS, the `vigie consume` child processes, and the broker and topic
//! helpers.

use std::io::Write;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use vigie_kafka::{
    BatchConsumer, ConsumerConfig, EventProducer, KafkaMetrics, OutRecord, ProducerConfig, Record,
    TopicSpec,
};
use vigie_simulator::{case_generator, case_lines};

/// The broker `scripts/bench` starts, for the record.
pub(crate) const BROKER: &str = "Apache Kafka 4.4.0, one KRaft node, 127.0.0.1";

/// Seed of the sample events of [`Events`].
pub(crate) const EVENTS_SEED: u64 = 42;

/// Options of every scenario.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// Runs of each side; the median is kept.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Where `benchmarks.md` and `benchmarks/latest.json` live.
    #[arg(long, default_value = "docs")]
    pub(crate) docs: PathBuf,
}

/// Options of every scenario that goes through the broker: [`Common`] and
/// the size of the load.
#[derive(Debug, clap::Args)]
pub(crate) struct Load {
    /// Events per run (of a backlog scenario: events in the backlog).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) events: u64,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 12)]
    pub(crate) partitions: i32,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// Options of the producer scenarios: [`Load`] and the broker's label.
#[derive(Debug, clap::Args)]
pub(crate) struct ProducerLoad {
    #[command(flatten)]
    pub(crate) load: Load,
    /// Text of the broker used, for the record.
    #[arg(long, default_value = BROKER)]
    pub(crate) broker_label: String,
}

/// The `vigie` binary the scenarios run, as a user would.
#[derive(Debug)]
pub(crate) struct Vigie {
    exe: PathBuf,
    config: Option<PathBuf>,
}

impl Vigie {
    /// `exe`, or `vigie` beside this binary (`target/release/`), with the
    /// configuration file whose settings the scenarios' own clients use.
    pub(crate) fn new(exe: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<Self> {
        let exe = match exe {
            Some(exe) => exe,
            None => std::env::current_exe()?.with_file_name("vigie"),
        };
        Ok(Self { exe, config })
    }

    /// A command that runs the binary.
    pub(crate) fn command(&self) -> Command {
        Command::new(&self.exe)
    }

    /// `vigie produce` of the `key<TAB>value` lines of `input` into
    /// `topic`, with `env` (such as `[kafka.security]`), timed (see
    /// [`run_timed`]; no RSS sampling).
    pub(crate) fn timed_produce(
        &self,
        (brokers, env): (&str, &[(&str, String)]),
        topic: &str,
        input: &Path,
        stderr_file: &Path,
    ) -> anyhow::Result<Timed> {
        let mut c = self.command();
        c.args(["produce", "--topic", topic, "--input"])
            .arg(input)
            .env("VIGIE__KAFKA__BROKERS", brokers)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        run_timed(c, Some(input), stderr_file, false)
    }

    /// The binary's path.
    pub(crate) fn exe(&self) -> &Path {
        &self.exe
    }

    /// The effective settings, as `vigie config check` prints them.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let mut c = self.command();
        if let Some(f) = &self.config {
            c.arg("--config").arg(f);
        }
        let out = c
            .args(["config", "check"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} (cargo build --release --bin vigie)",
                    self.exe.display()
                )
            })?;
        if !out.status.success() {
            bail!(
                "vigie config check failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let s: Settings = toml::from_str(&String::from_utf8(out.stdout)?)
            .context("cannot read the output of vigie config check")?;
        ensure!(
            s.kafka.security.protocol == "plaintext",
            "the benchmarks talk to a plaintext broker (scripts/bench starts one); kafka.security.protocol is {}",
            s.kafka.security.protocol
        );
        Ok(s)
    }
}

/// The part of `vigie`'s settings the scenarios' own Kafka clients use.
#[derive(Debug, Deserialize)]
pub(crate) struct Settings {
    /// The `[kafka]` section.
    pub(crate) kafka: KafkaSettings,
}

/// The `[kafka]` section.
#[derive(Debug, Deserialize)]
pub(crate) struct KafkaSettings {
    /// Bootstrap servers.
    pub(crate) brokers: String,
    security: SecuritySettings,
    /// Producer settings.
    pub(crate) producer: ProducerConfig,
    /// Consumer settings.
    pub(crate) consumer: ConsumerConfig,
}

impl Settings {
    /// A producer of the bench itself (backlogs, steady streams) with the
    /// settings `vigie` reports.
    pub(crate) fn producer(&self) -> anyhow::Result<EventProducer> {
        Ok(EventProducer::new(
            &vigie_kafka::Cluster::new(&self.kafka.brokers),
            &self.kafka.producer,
            KafkaMetrics::unregistered(),
        )?)
    }

    /// The consumer settings of a reader of `topic` in a fresh group named
    /// after `purpose`, committing nothing and exporting no lag.
    pub(crate) fn reader(&self, purpose: &str, topic: &str) -> ConsumerConfig {
        let mut config = self.kafka.consumer.clone();
        config.group_id = format!("bench-{purpose}-{}", uuid_like(0));
        config.topics = vec![topic.to_owned()];
        config.batch_max_records = 20_000;
        config.lag_interval_ms = 0;
        config
    }
}

/// What the scenarios check of `[kafka.security]`.
#[derive(Debug, Deserialize)]
struct SecuritySettings {
    protocol: String,
}

/// One bar of `docs/benchmarks/latest.json` and of the table of
/// `docs/benchmarks.md`.
#[derive(Debug)]
pub(crate) struct Bar {
    pub(crate) name: String,
    pub(crate) description: String,
    /// Vigie's figure, as recorded.
    pub(crate) vigie: Value,
    /// The baseline's figure, as recorded.
    pub(crate) baseline: Value,
    /// Vigie / baseline, recorded to three decimals.
    pub(crate) ratio: f64,
    pub(crate) unit: String,
    pub(crate) higher_is_better: bool,
    /// The `scripts/bench` command that measures it again.
    pub(crate) command: String,
    /// Raw figures and settings.
    pub(crate) details: Value,
}

impl Bar {
    /// A rate, higher is better: both figures rounded to a whole number.
    pub(crate) fn rate(
        name: &str,
        description: &str,
        (vigie, baseline): (f64, f64),
        unit: &str,
        command: &str,
        details: Value,
    ) -> Self {
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            vigie: json!(vigie.round()),
            baseline: json!(baseline.round()),
            ratio: vigie / baseline,
            unit: unit.to_owned(),
            higher_is_better: true,
            command: command.to_owned(),
            details,
        }
    }

    /// A peak RSS in MiB against the 200 MiB budget, lower is better.
    pub(crate) fn peak_rss(
        name: String,
        description: String,
        peak_mib: f64,
        command: &str,
        details: Value,
    ) -> Self {
        Self {
            name,
            description,
            vigie: json!((peak_mib * 10.0).round() / 10.0),
            baseline: json!(200.0),
            ratio: peak_mib / 200.0,
            unit: "MiB (budget as baseline; lower is better)".to_owned(),
            higher_is_better: false,
            command: command.to_owned(),
            details,
        }
    }
}

/// Replaces the entry of the same name in `latest.json` with `bar` and
/// rewrites the table of `benchmarks.md` between its markers.
pub(crate) fn record(docs: &Path, bar: Bar) -> anyhow::Result<()> {
    let entry = json!({
        "name": bar.name,
        "description": bar.description,
        "vigie": bar.vigie,
        "baseline": bar.baseline,
        "ratio": (bar.ratio * 1000.0).round() / 1000.0,
        "unit": bar.unit,
        "higher_is_better": bar.higher_is_better,
        "command": bar.command,
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "details": bar.details,
    });
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

/// The median of `v` (sorted in place).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs both sides of run `r`, alternating which goes first so that
/// neither always gets a warm broker: the baseline first on even runs.
pub(crate) async fn alternate<B, V>(
    r: usize,
    baseline: impl Future<Output = anyhow::Result<B>>,
    vigie: impl Future<Output = anyhow::Result<V>>,
) -> anyhow::Result<(B, V)> {
    if r.is_multiple_of(2) {
        let b = baseline.await?;
        Ok((b, vigie.await?))
    } else {
        let v = vigie.await?;
        Ok((baseline.await?, v))
    }
}

/// A suffix of topic and group names, unique to a run.
pub(crate) fn uuid_like(run: usize) -> String {
    format!("{}-{run}", chrono::Utc::now().format("%Y%m%d%H%M%S%f"))
}

/// Peak resident memory of a process, in MiB (`VmHWM`).
pub(crate) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// One timed process.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) secs: f64,
    /// Peak resident memory (`VmHWM`), MiB, sampled every few milliseconds
    /// (0 when not sampled).
    pub(crate) peak_rss_mib: f64,
    pub(crate) stderr: String,
}

/// Runs `cmd` to its end, its stdin from the file `stdin` (or none): wall
/// time from spawn to exit (taken by a thread blocked in `wait`, so
/// sampling adds nothing to it), with `sample_rss` the peak RSS sampled
/// every 5 ms meanwhile, and its stderr (kept in a file, read afterwards).
/// A non-zero exit fails the bench.
pub(crate) fn run_timed(
    mut cmd: Command,
    stdin: Option<&Path>,
    stderr_file: &Path,
    sample_rss: bool,
) -> anyhow::Result<Timed> {
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p)?),
        None => Stdio::null(),
    })
    .stdout(Stdio::null())
    .stderr(Stdio::from(std::fs::File::create(stderr_file)?));
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            let secs = started.elapsed().as_secs_f64();
            done.store(true, Ordering::Release);
            (status, secs)
        })
    };
    let mut peak = 0f64;
    while sample_rss && !done.load(Ordering::Acquire) {
        // A reaped or zombie process has no VmHWM line: nothing is lost,
        // the high-water mark only grows while it runs.
        peak = peak.max(peak_rss_mib(pid).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, secs) = waiter.join().expect("the waiter thread does not panic");
    let status = status?;
    let stderr = std::fs::read_to_string(stderr_file).unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {stderr}");
    }
    Ok(Timed {
        secs,
        peak_rss_mib: peak,
        stderr,
    })
}

/// The library of the installed onnxruntime wheel, unless `ORT_DYLIB_PATH` says.
pub(crate) fn ort_dylib() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(p.into());
    }
    let out = Command::new("python3")
        .args(["-c", "import onnxruntime, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])"])
        .output()?;
    if !out.status.success() {
        bail!("the onnxruntime wheel is not installed (scripts/setup installs it)");
    }
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

/// Where the scripts keep their state: `VIGIE_STATE`, else `.vigie/` here
/// (scripts/bench runs from the top of the source tree).
pub(crate) fn state_dir() -> anyhow::Result<PathBuf> {
    Ok(match std::env::var_os("VIGIE_STATE") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_dir()?.join(".vigie"),
    })
}

/// The Python of the virtualenv where scripts/setup installs Evidently.
pub(crate) fn evidently_python() -> anyhow::Result<PathBuf> {
    let python = state_dir()?.join("evidently-venv/bin/python");
    if !python.exists() {
        bail!(
            "no {} (scripts/setup installs Evidently there)",
            python.display()
        );
    }
    Ok(python)
}

/// A free local TCP port (for a child's `/metrics`).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last lines of a child's stderr, for an error message.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The settings of one `vigie consume` child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Launch<'a> {
    pub(crate) vigie: &'a Vigie,
    pub(crate) brokers: &'a str,
    pub(crate) sink: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) group: &'a str,
    /// `/metrics` port (0: any).
    pub(crate) port: u16,
    /// Extra environment (the sink's).
    pub(crate) env: &'a [(&'a str, String)],
    /// Where its stderr goes, as `<group>.stderr`.
    pub(crate) logs: &'a Path,
}

/// A `vigie consume` child process and where its stderr goes.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) child: Child,
    stderr: PathBuf,
    pub(crate) what: String,
}

impl Consumer {
    /// Starts `vigie consume` as `l` says.
    pub(crate) fn spawn(l: &Launch<'_>) -> anyhow::Result<Self> {
        let stderr = l.logs.join(format!("{}.stderr", l.group));
        let child = l
            .vigie
            .command()
            .args([
                "consume", "--sink", l.sink, "--topic", l.topic, "--group", l.group,
            ])
            .env("VIGIE__KAFKA__BROKERS", l.brokers)
            .env("VIGIE__KAFKA__CONSUMER__LAG_INTERVAL_MS", "0")
            .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{}", l.port))
            .env("RUST_LOG", "warn")
            .envs(l.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stderr)?))
            .spawn()
            .with_context(|| format!("cannot run {} consume", l.vigie.exe().display()))?;
        Ok(Self {
            child,
            stderr,
            what: format!("vigie consume --sink {} --group {}", l.sink, l.group),
        })
    }

    /// Fails if the process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}):\n{}",
                self.what,
                tail(&self.stderr)
            );
        }
        Ok(())
    }

    /// Peak RSS so far, MiB (0 once it has exited).
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.child.id()).unwrap_or(0.0)
    }

    /// SIGTERM, then waits: the process must exit cleanly.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let status = terminate(&mut self.child)?;
        ensure!(
            status.success(),
            "{} did not stop cleanly ({status}):\n{}",
            self.what,
            tail(&self.stderr)
        );
        Ok(())
    }
}

/// SIGTERM to `child`, then waits for it to exit.
pub(crate) fn terminate(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    Ok(child.wait()?)
}

/// Creates `topics` with `partitions` each, with or without their DLQ.
pub(crate) async fn create_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    dlq: bool,
) -> anyhow::Result<()> {
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|t| {
            let mut spec = TopicSpec::new(*t, partitions);
            spec.dlq = dlq;
            spec
        })
        .collect();
    vigie_kafka::ensure_topics(&vigie_kafka::Cluster::new(brokers), &specs).await?;
    Ok(())
}

/// The sum of the high watermarks of `topic`: the records it holds.
pub(crate) async fn high_watermarks(brokers: &str, topic: &str) -> anyhow::Result<i64> {
    let lags = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(brokers),
        "vigie-bench-count",
        &[topic.to_owned()],
        Duration::from_secs(10),
    )
    .await?;
    Ok(lags.iter().map(|l| l.high_watermark).sum())
}

/// The sum of `group`'s committed offsets on `topic` (0 where none).
pub(crate) async fn committed(brokers: &str, group: &str, topic: &str) -> anyhow::Result<i64> {
    let lags = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(brokers),
        group,
        &[topic.to_owned()],
        Duration::from_secs(5),
    )
    .await?;
    Ok(lags.iter().filter_map(|l| l.committed).sum())
}

/// Records in `topic`, read back from the start with kcat: each one is
/// fetched, not just counted from the offsets.
pub(crate) fn count_records(kcat: &Path, brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let out = kcat_read(kcat, brokers, topic, "%p\\n")?;
    Ok(out.iter().filter(|b| **b == b'\n').count() as u64)
}

/// Every record of `topic` from the start to its end, read with `kcat -C`
/// and printed as `format` says (kcat's `-f`).
pub(crate) fn kcat_read(
    kcat: &Path,
    brokers: &str,
    topic: &str,
    format: &str,
) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(kcat)
        .args(["-C", "-b", brokers, "-t", topic, "-e", "-q", "-f", format])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", kcat.display()))?;
    if !out.status.success() {
        bail!(
            "kcat -C {topic} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
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

/// Sample case envelopes in files of a temporary directory, written
/// before any timing.
#[derive(Debug)]
pub(crate) struct Events {
    /// The directory, removed on drop; the scenario's other files go there too.
    pub(crate) dir: tempfile::TempDir,
    /// `key<TAB>value` lines.
    pub(crate) tsv: PathBuf,
    /// The values alone, one a line, when asked for.
    pub(crate) values: Option<PathBuf>,
}

impl Events {
    /// Writes `events` sample case envelopes (generator seed
    /// [`EVENTS_SEED`]), and with `values` their values alone too.
    pub(crate) fn write(events: u64, values: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let tsv = dir.path().join("events.tsv");
        let values = values.then(|| dir.path().join("values.ndjson"));
        write_events(&tsv, values.as_deref(), events)?;
        Ok(Self { dir, tsv, values })
    }
}

/// Writes `events` sample case envelopes (generator seed [`EVENTS_SEED`])
/// as `key<TAB>value` lines to `tsv`, and their values alone, one a line,
/// to `values` when given.
fn write_events(tsv: &Path, values: Option<&Path>, events: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(tsv)?);
    let mut v = values
        .map(|p| std::fs::File::create(p).map(std::io::BufWriter::new))
        .transpose()?;
    let generator = case_generator(EVENTS_SEED);
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

/// A backlog of `events` sample cases of generator `seed` in `topic`,
/// produced 50,000 at a time as fast as the producer goes. Each chunk, the
/// `(key, value)` records of the generator's rows `range`, is handed to
/// `chunk` first, which may look at it or add records of its own to it.
pub(crate) async fn produce_backlog(
    producer: &EventProducer,
    topic: &str,
    seed: u64,
    events: u64,
    mut chunk: impl FnMut(Range<u64>, &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let generator = case_generator(seed);
    let mut start = 0;
    while start < events {
        let end = (start + 50_000).min(events);
        let mut lines = case_lines(&generator, start..end);
        chunk(start..end, &mut lines)?;
        producer
            .send_all(lines.iter().map(|(k, v)| OutRecord {
                partition: None,
                topic,
                key: Some(k.as_bytes()),
                payload: Some(v),
                headers: &[],
                timestamp_ms: None,
            }))
            .await?;
        start = end;
    }
    Ok(())
}

/// The sum of the samples of `name` on the `/metrics` of `127.0.0.1:port`.
pub(crate) async fn metric(port: u16, name: &str) -> Option<f64> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()?
        .ok()?;
    let samples: Vec<f64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// A consumer's batches so far, from its `/metrics`
/// (`vigie_consumer_batch_duration_seconds`): how many, and the seconds
/// spent inside them (validate, write, commit).
pub(crate) async fn batch_totals(port: u16) -> (u64, f64) {
    let count = metric(port, "vigie_consumer_batch_duration_seconds_count")
        .await
        .unwrap_or(0.0);
    let secs = metric(port, "vigie_consumer_batch_duration_seconds_sum")
        .await
        .unwrap_or(0.0);
    (count as u64, secs)
}

/// Milliseconds per batch on average, from [`batch_totals`].
pub(crate) fn mean_batch_ms((count, secs): (u64, f64)) -> f64 {
    1000.0 * secs / count.max(1) as f64
}

/// Reads `topic` from its start with a fresh group (never committing),
/// handing each record to `visit`, until at least `expected` records came
/// and then nothing more for a second: records that should not be there
/// are counted too.
pub(crate) async fn read_topic(
    s: &Settings,
    topic: &str,
    expected: u64,
    mut visit: impl FnMut(&Record) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut config = s.reader("reader", topic);
    config.batch_max_wait_ms = 100;
    let consumer = BatchConsumer::new(
        &vigie_kafka::Cluster::new(&s.kafka.brokers),
        config,
        KafkaMetrics::unregistered(),
    )?;
    let mut n = 0u64;
    loop {
        let quiet = if n >= expected {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(60)
        };
        let stop = CancellationToken::new();
        let timer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(quiet).await;
                stop.cancel();
            })
        };
        let batch = consumer.next_batch(&stop).await;
        timer.abort();
        match batch? {
            Some(b) if !b.is_empty() => {
                for r in &b.records {
                    visit(r)?;
                }
                n += b.len() as u64;
            }
            _ if n >= expected => break,
            _ => bail!(
                "read {n} of at least {expected} records of {topic}, then nothing for {quiet:?}"
            ),
        }
    }
    consumer.close().await;
    Ok(n)
}

/// Produces `lines` into `topic` at `rate` records per second, in a burst
/// every 10 ms, and waits for every acknowledgement. Returns the seconds
/// the sending took.
pub(crate) async fn produce_steady(
    producer: &EventProducer,
    topic: &str,
    lines: &[(String, Vec<u8>)],
    rate: u64,
) -> anyhow::Result<f64> {
    let tick = Duration::from_millis(10);
    let started = tokio::time::Instant::now();
    let mut pipeline = producer.pipeline(false);
    let (mut sent, mut k) = (0usize, 0u32);
    while sent < lines.len() {
        k += 1;
        tokio::time::sleep_until(started + tick * k).await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(lines.len());
        for (key, v) in &lines[sent..due.max(sent)] {
            pipeline
                .push(OutRecord {
                    partition: None,
                    topic,
                    key: Some(key.as_bytes()),
                    payload: Some(v),
                    headers: &[],
                    timestamp_ms: None,
                })
                .await?;
        }
        sent = sent.max(due);
    }
    let secs = started.elapsed().as_secs_f64();
    let (acked, _) = pipeline.finish().await?;
    ensure!(
        acked == lines.len() as u64,
        "{acked} of {} records acknowledged by the broker",
        lines.len()
    );
    Ok(secs)
}

/// Starts `vigie consume` as `l` says (`l.port` must be set) and waits
/// until it has been assigned partitions, as its `/metrics` tell.
pub(crate) async fn spawn_joined(l: &Launch<'_>) -> anyhow::Result<Consumer> {
    ensure!(l.port != 0, "a joined consumer needs a known /metrics port");
    let mut c = Consumer::spawn(l)?;
    let started = Instant::now();
    while !metric(l.port, "vigie_consumer_assigned_partitions")
        .await
        .is_some_and(|n| n > 0.0)
    {
        c.check_alive()?;
        if started.elapsed() > Duration::from_secs(120) {
            let _ = c.child.kill();
            bail!(
                "{} was assigned no partition of {} in 2 minutes",
                c.what,
                l.topic
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(c)
}

/// Milliseconds since the epoch, on the clock librdkafka stamps
/// `CreateTime` with.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A distribution of latencies, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) min: i64,
    pub(crate) p50: i64,
    pub(crate) p90: i64,
    pub(crate) p99: i64,
    pub(crate) max: i64,
    pub(crate) mean: f64,
}

impl Latency {
    /// The distribution of `samples`; `None` when there are none.
    pub(crate) fn of(mut samples: Vec<i64>) -> Option<Self> {
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Some(Self {
            min: *samples.first()?,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: *samples.last()?,
            mean: samples.iter().sum::<i64>() as f64 / samples.len() as f64,
        })
    }

    /// For a bar's details.
    pub(crate) fn json(&self) -> Value {
        json!({
            "min": self.min, "p50": self.p50, "p90": self.p90, "p99": self.p99,
            "max": self.max, "mean": (self.mean * 10.0).round() / 10.0,
        })
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }
}
