//! `vigie bench producer-http`: the `cdc-cases` source end to end — HTTP
//! fetch of SODA pages from the simulator, parsing, mapping, envelopes,
//! producing, checkpoints — as `vigie ingest --source cdc-cases
//! --until-caught-up`, against `kcat -P` of the very same envelopes
//! pre-serialized in a file, into two fresh topics of the same layout on the
//! same broker. Also records the producer's peak RSS at full rate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use vigie_kafka::{TopicSpec, ensure_topics};
use vigie_producers::source::PollContext;
use vigie_producers::{Checkpoint, HttpConfig, HttpFetcher, SourceConfig, SourceMetrics};
use vigie_simulator::server::{CASES_PATH, CasesSim, SimConfig, Simulator};
use vigie_simulator::{CDC_CASES_SOURCE, case_envelope};

use crate::bench::{case_generator, kcat_producer, median, record, uuid_like};

/// Seed of the simulator and of the pre-serialized baseline input.
const SEED: u64 = 42;

/// What `vigie bench producer-http` was asked for.
#[derive(Debug)]
pub(crate) struct Params {
    pub(crate) events: u64,
    pub(crate) partitions: i32,
    pub(crate) runs: usize,
    pub(crate) page_size: u32,
    pub(crate) kcat: PathBuf,
    pub(crate) docs: PathBuf,
    pub(crate) broker_label: String,
}

/// One timed process.
struct Timed {
    secs: f64,
    /// Peak resident memory (`VmHWM`), MiB, sampled every few milliseconds.
    peak_rss_mib: f64,
    stderr: String,
}

/// Runs `cmd` to its end: wall time from spawn to exit (taken by a thread
/// blocked in `wait`, so sampling adds nothing to it), the peak RSS sampled
/// every 5 ms meanwhile, and its stderr (kept in a file, read afterwards).
/// A non-zero exit fails the bench.
fn run_timed(mut cmd: Command, stdin: Option<&Path>, stderr_file: &Path) -> anyhow::Result<Timed> {
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
    while !done.load(Ordering::Acquire) {
        // A reaped or zombie process has no VmHWM line: nothing is lost,
        // the high-water mark only grows while it runs.
        peak = peak.max(crate::bench_sink::peak_rss_mib(pid).unwrap_or(0.0));
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

/// The `events` and `rejects` of `cdc-cases: N events, R rejected to the
/// DLQ, P polls`, the summary `vigie ingest` prints on stderr.
fn ingest_counts(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{CDC_CASES_SOURCE}: ")))?;
    let mut words = line.split_whitespace();
    let events = words.next()?.parse().ok()?;
    let rejects = words.nth(1)?.parse().ok()?;
    Some((events, rejects))
}

/// Records in `topic`, read back from the start with kcat: each one is
/// fetched, not just counted from the offsets.
pub(crate) fn count_records(kcat: &Path, brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let out = Command::new(kcat)
        .args(["-C", "-b", brokers, "-t", topic, "-e", "-q", "-f", "%p\\n"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", kcat.display()))?;
    if !out.status.success() {
        bail!(
            "kcat -C {topic} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout.iter().filter(|b| **b == b'\n').count() as u64)
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Checks that the baseline's lines are byte for byte what the source
/// produces from the simulator's first page (with its own `ingested_at`).
async fn check_same_events(
    url: &str,
    generator: &vigie_simulator::CaseGenerator,
) -> anyhow::Result<()> {
    let config: SourceConfig = serde_json::from_value(json!({
        "url": url,
        "topic": "unused",
        "options": {"page_size": 1000},
    }))?;
    let mut source = (vigie_producers::spec(CDC_CASES_SOURCE)?.build)(&config)?;
    let metrics = SourceMetrics::unregistered();
    let http = HttpFetcher::new(&HttpConfig::default(), CDC_CASES_SOURCE, metrics.clone())?;
    let shutdown = CancellationToken::new();
    let quarantine = tempfile::tempdir()?;
    let cx = PollContext {
        http: &http,
        shutdown: &shutdown,
        metrics: &metrics,
        quarantine: quarantine.path(),
    };
    let poll = source.poll(&Checkpoint::default(), &cx).await?;
    ensure!(
        poll.rejects.is_empty() && !poll.events.is_empty(),
        "the simulator's first page gave {} events and {} rejects",
        poll.events.len(),
        poll.rejects.len()
    );
    for (i, e) in poll.events.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(&e.payload)?;
        let at = v["ingested_at"]
            .as_str()
            .context("an envelope has ingested_at")?
            .parse()?;
        let env = case_envelope(generator, i as u64, at);
        ensure!(
            e.key == env.partition_key() && e.payload == env.to_json_bytes()?,
            "event {i} of the source differs from the pre-serialized one:\n{}\n{}",
            String::from_utf8_lossy(&e.payload),
            String::from_utf8_lossy(&env.to_json_bytes()?)
        );
    }
    Ok(())
}

pub(crate) async fn run(config: Option<&Path>, p: &Params) -> anyhow::Result<ExitCode> {
    let events = p.events;
    let s = crate::commands::load(config)?;
    let brokers = s.kafka.brokers.clone();
    let dir = tempfile::tempdir()?;
    let generator = case_generator(SEED);

    // The baseline's input, written before any timing: the envelopes
    // exactly as the source builds them, `key<TAB>value` lines.
    let input = dir.path().join("events.tsv");
    {
        let now = chrono::Utc::now();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        for i in 0..events {
            let env = case_envelope(&generator, i, now);
            f.write_all(env.partition_key().as_bytes())?;
            f.write_all(b"\t")?;
            f.write_all(&env.to_json_bytes()?)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    let bytes = std::fs::metadata(&input)?.len();
    // kcat reports nothing: what it delivered is its input lines.
    let lines = std::fs::read(&input)?
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;

    // The simulator, in this process (same build), on a free port; the
    // ingest child is the only client.
    let sim = Simulator::start(
        SimConfig {
            seed: SEED,
            cases: CasesSim {
                rows: events,
                ..CasesSim::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let url = format!("{}{CASES_PATH}", sim.base_url());
    check_same_events(&url, &generator).await?;
    eprintln!(
        "{events} events, {bytes} bytes of envelopes, {} partitions, page size {}, {} runs each; simulator at {url}",
        p.partitions, p.page_size, p.runs
    );

    let exe = std::env::current_exe()?;
    let (mut v_secs, mut k_secs, mut v_rss, mut k_rss) = (vec![], vec![], vec![], vec![]);
    for r in 0..p.runs {
        let suffix = uuid_like(r);
        let kt = format!("bench.http.kcat.{suffix}");
        let vt = format!("bench.http.vigie.{suffix}");
        let mut specs = vec![
            TopicSpec::new(&kt, p.partitions),
            TopicSpec::new(&vt, p.partitions),
        ];
        for t in &mut specs {
            t.dlq = false;
        }
        ensure_topics(&brokers, &specs).await?;

        // A fresh checkpoint directory each run: the source starts from
        // row 0 and stops once caught up.
        let run_dir = dir.path().join(format!("run-{r}"));
        std::fs::create_dir_all(&run_dir)?;
        let ingest_toml = run_dir.join("ingest.toml");
        std::fs::write(
            &ingest_toml,
            format!(
                "[producers]\ncheckpoint_dir = {}\nquarantine_dir = {}\n\n\
                 [producers.sources.cdc-cases]\nurl = {}\ntopic = {}\n\n\
                 [producers.sources.cdc-cases.options]\npage_size = {}\n",
                toml_str(&run_dir.join("checkpoints").to_string_lossy()),
                toml_str(&run_dir.join("quarantine").to_string_lossy()),
                toml_str(&url),
                toml_str(&vt),
                p.page_size,
            ),
        )?;
        let vigie_cmd = || {
            let mut c = Command::new(&exe);
            c.arg("--config")
                .arg(&ingest_toml)
                .args(["ingest", "--source", CDC_CASES_SOURCE, "--until-caught-up"])
                .env("VIGIE__KAFKA__BROKERS", &brokers)
                .env("VIGIE__TELEMETRY__LISTEN", "127.0.0.1:0")
                .env("VIGIE__LOG__LEVEL", "warn")
                .env("RUST_LOG", "warn");
            c
        };
        let kcat_cmd = || kcat_producer(&p.kcat, &brokers, &kt);
        let v_err = run_dir.join("vigie.stderr");
        let k_err = run_dir.join("kcat.stderr");
        // Alternate which side runs first, so neither always gets a warm broker.
        let (v, k) = if r % 2 == 0 {
            let k = run_timed(kcat_cmd(), Some(&input), &k_err)?;
            (run_timed(vigie_cmd(), None, &v_err)?, k)
        } else {
            let v = run_timed(vigie_cmd(), None, &v_err)?;
            (v, run_timed(kcat_cmd(), Some(&input), &k_err)?)
        };

        // Both sides must have delivered exactly N records: vigie by its
        // own acknowledged count, kcat by its input lines; and both topics,
        // read back, must hold N records.
        match ingest_counts(&v.stderr) {
            Some((n, 0)) if n == events => {}
            Some((n, rejects)) => {
                bail!("vigie ingest acknowledged {n} events and {rejects} rejects, not {events}")
            }
            None => bail!("vigie ingest printed no summary: {}", v.stderr),
        }
        ensure!(
            lines == events,
            "kcat's input has {lines} lines, not {events}"
        );
        for topic in [&vt, &kt] {
            let n = count_records(&p.kcat, &brokers, topic)?;
            ensure!(n == events, "{topic} holds {n} records, not {events}");
        }

        eprintln!(
            "run {}: kcat {:.3} s (peak RSS {:.1} MiB), vigie {:.3} s (peak RSS {:.1} MiB)",
            r + 1,
            k.secs,
            k.peak_rss_mib,
            v.secs,
            v.peak_rss_mib
        );
        v_secs.push(v.secs);
        k_secs.push(k.secs);
        v_rss.push(v.peak_rss_mib);
        k_rss.push(k.peak_rss_mib);
    }
    sim.shutdown().await;

    let vigie = events as f64 / median(&mut v_secs.clone());
    let baseline = events as f64 / median(&mut k_secs.clone());
    let peak = v_rss.iter().copied().fold(0f64, f64::max);
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut command = format!(
        "scripts/bench producer-http --events {events} --partitions {} --runs {}",
        p.partitions, p.runs
    );
    if p.page_size != 10_000 {
        command.push_str(&format!(" --page-size {}", p.page_size));
    }
    let details = json!({
        "events": events,
        "bytes": bytes,
        "partitions": p.partitions,
        "page_size": p.page_size,
        "runs": p.runs,
        "broker": p.broker_label,
        "simulator": "in the bench process (same release build), 127.0.0.1",
        "vigie_seconds": v_secs,
        "baseline_seconds": k_secs,
        "vigie_peak_rss_mib": v_rss,
        "baseline_peak_rss_mib": k_rss,
    });
    record(
        &p.docs,
        json!({
            "name": "producer_http_vs_kcat",
            "description": "cdc-cases source end to end (vigie ingest --until-caught-up: HTTP fetch of SODA pages from the simulator, parsing, envelopes, produce, checkpoints) vs kcat -P of the same envelopes pre-serialized in a file; same broker and topic layout, zstd, idempotent, acks=all, linger 20 ms",
            "vigie": vigie.round(),
            "baseline": baseline.round(),
            "ratio": (vigie / baseline * 1000.0).round() / 1000.0,
            "unit": "events/s",
            "higher_is_better": true,
            "command": command,
            "date": date,
            "details": details,
        }),
    )?;
    record(
        &p.docs,
        json!({
            "name": format!("producer_http_peak_rss_{}k", events / 1000),
            "description": format!("peak RSS (VmHWM, highest of the runs) of vigie ingest --source cdc-cases at full rate (pages of {} rows), against the 200 MiB budget", p.page_size),
            "vigie": (peak * 10.0).round() / 10.0,
            "baseline": 200.0,
            "ratio": (peak / 200.0 * 1000.0).round() / 1000.0,
            "unit": "MiB (budget as baseline; lower is better)",
            "higher_is_better": false,
            "command": command,
            "date": date,
            "details": details,
        }),
    )?;
    println!(
        "vigie {vigie:.0} events/s, kcat {baseline:.0} events/s, ratio {:.3}; vigie peak RSS {peak:.1} MiB",
        vigie / baseline
    );
    Ok(ExitCode::SUCCESS)
}
