//! `producer-perf-test`: the raw envelope producer, `vigie produce`,
//! against Apache Kafka's own `kafka-producer-perf-test`: records drawn from
//! the same serialized envelopes, the same acks, idempotence, compression,
//! linger and batch size, into the same broker and topic layout.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use crate::common::{
    Bar, Events, ProducerLoad, Vigie, alternate, create_topics, high_watermarks, median, record,
    uuid_like,
};

/// Options of `producer-perf-test`.
#[derive(Debug, clap::Args)]
#[command(mut_arg("runs", |a| a.default_value("5")))]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) producer: ProducerLoad,
    /// The wrapper that runs Kafka's tools.
    #[arg(long, default_value = "scripts/kafka-cli")]
    pub(crate) kafka_cli: PathBuf,
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

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let load = &a.producer.load;
    let (events, partitions, runs) = (load.events, load.partitions, load.common.runs);
    let kafka_cli = &a.kafka_cli;
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers;
    let p = &s.kafka.producer;
    let written = Events::write(events, true)?;
    let input = &written.tsv;
    let payloads = written.values.as_deref().expect("values asked for");
    let bytes = std::fs::metadata(payloads)?.len();
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
    let v_err = written.dir.path().join("vigie.stderr");
    let mut vigie_secs = Vec::new();
    let mut perf_secs = Vec::new();
    let mut perf_reported = Vec::new();
    for r in 0..runs {
        let suffix = uuid_like(r);
        let pt = format!("bench.perf.{suffix}");
        let vt = format!("bench.vigie.{suffix}");
        create_topics(&brokers, &[&pt, &vt], partitions, false).await?;
        let perf = || -> anyhow::Result<(f64, f64)> {
            let started = Instant::now();
            let out = Command::new(kafka_cli)
                .arg("kafka-producer-perf-test")
                .args(["--topic", &pt, "--num-records", &events.to_string()])
                .arg("--payload-file")
                .arg(payloads)
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
        let ((ps, pr), v) = alternate(r, async { perf() }, async {
            vigie.timed_produce((&brokers, &[]), &vt, input, &v_err)
        })
        .await?;
        let vs = v.secs;
        perf_secs.push(ps);
        perf_reported.push(pr);
        vigie_secs.push(vs);
        for topic in [&vt, &pt] {
            let n = high_watermarks(&brokers, topic).await?;
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
    record(
        &load.common.docs,
        Bar::rate(
            "producer_vs_kafka_producer_perf_test",
            "raw envelope producer (vigie produce, whole process) vs Apache Kafka's kafka-producer-perf-test (its own records/s, JVM start excluded), records from the same serialized envelopes, zstd, idempotent, acks=all, linger 20 ms, batch.size 1 MB, same broker and topic layout; perf-test sends no keys",
            (vigie, baseline),
            "records/s",
            &format!(
                "scripts/bench producer-perf-test --events {events} --partitions {partitions} --runs {runs}"
            ),
            json!({
                "events": events,
                "value_bytes": bytes,
                "partitions": partitions,
                "runs": runs,
                "broker": a.producer.broker_label,
                "vigie_seconds": vigie_secs,
                "baseline_seconds_as_a_process": perf_secs,
                "baseline_records_per_second_as_a_process": baseline_process.round(),
                "baseline_reported_records_per_second": perf_reported,
                "baseline_settings": props[1..],
            }),
        ),
    )?;
    println!(
        "vigie {vigie:.0} records/s, kafka-producer-perf-test {baseline:.0} records/s ({baseline_process:.0} as a process), ratio {:.3}",
        vigie / baseline
    );
    Ok(())
}
