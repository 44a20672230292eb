//! `vigie produce`: publish events to a topic, from NDJSON lines (a file or
//! stdin, each line `value` or `key<TAB>value`, as `kcat -K '\t'` reads them)
//! or from the built-in sample generator.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use vigie_core::SchemaRegistry;
use vigie_kafka::{EventProducer, KafkaMetrics, OutRecord};

use vigie_producers::raw::{CHUNK, produce_lines};

/// Built-in sample data sets.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Sample {
    /// CDC-style case rows (`health.case.v1`), keyed by state.
    Cases,
}

/// Arguments of `vigie produce`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Destination topic.
    #[arg(long)]
    topic: String,
    /// Read lines from this file (`-`: stdin, the default).
    #[arg(long, conflicts_with = "sample")]
    input: Option<PathBuf>,
    /// Check every value against its schema before sending; stop at the
    /// first invalid line (the lines before it are sent).
    #[arg(long)]
    validate: bool,
    /// Generate events instead of reading them.
    #[arg(long)]
    sample: Option<Sample>,
    /// How many sample events.
    #[arg(long, default_value_t = 10_000, requires = "sample")]
    count: u64,
    /// Seed of the sample generator (same seed, same events).
    #[arg(long, default_value_t = 42, requires = "sample")]
    seed: u64,
}

pub(crate) async fn run(config: Option<&Path>, a: Args) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    vigie_telemetry::init_logging(&s.log);
    let producer = EventProducer::new(
        &s.connect().await?,
        &s.kafka.producer,
        KafkaMetrics::unregistered(),
    )?;
    let started = Instant::now();
    let sent = match a.sample {
        Some(Sample::Cases) => produce_sample(&producer, &a.topic, a.count, a.seed).await?,
        None => {
            let input: Box<dyn Read> = match a.input.as_deref() {
                None => Box::new(std::io::stdin()),
                Some(p) if p == Path::new("-") => Box::new(std::io::stdin()),
                Some(p) => Box::new(
                    std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?,
                ),
            };
            let schemas = a.validate.then(SchemaRegistry::embedded).transpose()?;
            produce_lines(
                &producer,
                &a.topic,
                BufReader::with_capacity(1 << 20, input),
                schemas.as_ref(),
            )
            .await?
        }
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {sent} records to {} in {secs:.3} s ({:.0} records/s)",
        a.topic,
        sent as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

async fn produce_sample(
    producer: &EventProducer,
    topic: &str,
    count: u64,
    seed: u64,
) -> anyhow::Result<u64> {
    let generator = vigie_simulator::case_generator(seed);
    let mut sent = 0u64;
    let mut start = 0u64;
    while start < count {
        let end = (start + CHUNK as u64).min(count);
        let events = vigie_simulator::case_lines(&generator, start..end);
        let records: Vec<OutRecord<'_>> = events
            .iter()
            .map(|(key, value)| OutRecord {
                partition: None,
                topic,
                key: Some(key.as_bytes()),
                payload: Some(value),
                headers: &[],
                timestamp_ms: None,
            })
            .collect();
        sent += producer.send_all(records).await?.len() as u64;
        start = end;
    }
    Ok(sent)
}
