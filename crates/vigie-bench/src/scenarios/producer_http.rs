//! `producer-http`: the `cdc-cases` source end to end — HTTP fetch of SODA
//! pages from the simulator, parsing, mapping, envelopes, producing,
//! checkpoints — as `vigie ingest --source cdc-cases --until-caught-up`,
//! against `kcat -P` of the very same envelopes pre-serialized in a file,
//! into two fresh topics of the same layout on the same broker. Also
//! records the producer's peak RSS at full rate.

use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use vigie_producers::source::PollContext;
use vigie_producers::{Checkpoint, HttpConfig, HttpFetcher, SourceConfig, SourceMetrics};
use vigie_simulator::server::{CASES_PATH, CasesSim, SimConfig, Simulator};
use vigie_simulator::{CDC_CASES_SOURCE, case_envelope, case_generator};

use crate::common::{
    Bar, EVENTS_SEED, Events, ProducerLoad, Vigie, alternate, count_records, create_topics,
    kcat_producer, median, record, run_timed, uuid_like,
};

/// Options of `producer-http`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) producer: ProducerLoad,
    /// Rows per SODA page asked by the source (`options.page_size`).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) page_size: u32,
    /// The kcat to run.
    #[arg(long, default_value = "scripts/kcat")]
    pub(crate) kcat: PathBuf,
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

pub(crate) async fn run(vigie: &Vigie, p: Args) -> anyhow::Result<()> {
    let load = &p.producer.load;
    let (events, partitions, runs) = (load.events, load.partitions, load.common.runs);
    let brokers = vigie.settings()?.kafka.brokers;

    // The baseline's input, written before any timing: the envelopes
    // exactly as the source builds them, `key<TAB>value` lines.
    let written = Events::write(events, false)?;
    let (dir, input) = (&written.dir, &written.tsv);
    let bytes = std::fs::metadata(input)?.len();
    // kcat reports nothing: what it delivered is its input lines.
    let lines = std::fs::read(input)?
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;

    // The simulator, in this process (same build), on a free port; the
    // ingest child is the only client. Its seed is the baseline input's.
    let sim = Simulator::start(
        SimConfig {
            seed: EVENTS_SEED,
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
    check_same_events(&url, &case_generator(EVENTS_SEED)).await?;
    eprintln!(
        "{events} events, {bytes} bytes of envelopes, {partitions} partitions, page size {}, {runs} runs each; simulator at {url}",
        p.page_size
    );

    let (mut v_secs, mut k_secs, mut v_rss, mut k_rss) = (vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        let suffix = uuid_like(r);
        let kt = format!("bench.http.kcat.{suffix}");
        let vt = format!("bench.http.vigie.{suffix}");
        create_topics(&brokers, &[&kt, &vt], partitions, false).await?;

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
        let mut vigie_cmd = vigie.command();
        vigie_cmd
            .arg("--config")
            .arg(&ingest_toml)
            .args(["ingest", "--source", CDC_CASES_SOURCE, "--until-caught-up"])
            .env("VIGIE__KAFKA__BROKERS", &brokers)
            .env("VIGIE__TELEMETRY__LISTEN", "127.0.0.1:0")
            .env("VIGIE__LOG__LEVEL", "warn")
            .env("RUST_LOG", "warn");
        let kcat = kcat_producer(&p.kcat, &brokers, &kt);
        let v_err = run_dir.join("vigie.stderr");
        let k_err = run_dir.join("kcat.stderr");
        let (k, v) = alternate(
            r,
            async { run_timed(kcat, Some(input), &k_err, true) },
            async { run_timed(vigie_cmd, None, &v_err, true) },
        )
        .await?;

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
    let mut command = format!(
        "scripts/bench producer-http --events {events} --partitions {partitions} --runs {runs}"
    );
    if p.page_size != 10_000 {
        command.push_str(&format!(" --page-size {}", p.page_size));
    }
    let details = json!({
        "events": events,
        "bytes": bytes,
        "partitions": partitions,
        "page_size": p.page_size,
        "runs": runs,
        "broker": p.producer.broker_label,
        "simulator": "in the bench process (same release build), 127.0.0.1",
        "vigie_seconds": v_secs,
        "baseline_seconds": k_secs,
        "vigie_peak_rss_mib": v_rss,
        "baseline_peak_rss_mib": k_rss,
    });
    record(
        &load.common.docs,
        Bar::rate(
            "producer_http_vs_kcat",
            "cdc-cases source end to end (vigie ingest --until-caught-up: HTTP fetch of SODA pages from the simulator, parsing, envelopes, produce, checkpoints) vs kcat -P of the same envelopes pre-serialized in a file; same broker and topic layout, zstd, idempotent, acks=all, linger 20 ms",
            (vigie, baseline),
            "events/s",
            &command,
            details.clone(),
        ),
    )?;
    record(
        &load.common.docs,
        Bar::peak_rss(
            format!("producer_http_peak_rss_{}k", events / 1000),
            format!(
                "peak RSS (VmHWM, highest of the runs) of vigie ingest --source cdc-cases at full rate (pages of {} rows), against the 200 MiB budget",
                p.page_size
            ),
            peak,
            &command,
            details,
        ),
    )?;
    println!(
        "vigie {vigie:.0} events/s, kcat {baseline:.0} events/s, ratio {:.3}; vigie peak RSS {peak:.1} MiB",
        vigie / baseline
    );
    Ok(())
}
