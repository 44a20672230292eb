//! `vigie ingest`: run the upstream sources (HTTP pollers, scraper) of the
//! registry, each with its checkpoint, until SIGTERM / SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use vigie_kafka::{EventProducer, KafkaMetrics};
use vigie_producers::{CheckpointStore, REGISTRY, SourceMetrics, SourceRunner};
use vigie_telemetry::{Readiness, TelemetryServer, init_logging, shutdown_on_signals};

/// Arguments of `vigie ingest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Sources to run, by registry name (repeatable); default: every source
    /// configured under `[producers.sources]`.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Stop each source once it has caught up with its upstream instead of
    /// polling forever (backfills, tests, benchmarks).
    #[arg(long)]
    until_caught_up: bool,
    /// List the registry and exit.
    #[arg(long)]
    list: bool,
}

pub(crate) async fn run(config: Option<&Path>, a: Args) -> anyhow::Result<ExitCode> {
    if a.list {
        for s in REGISTRY {
            println!("{:<10} {}", s.name, s.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let s = super::load(config)?;
    init_logging(&s.log);
    let p = &s.producers;
    // Every configured source must be known, whichever run.
    let configured: Vec<&str> = p
        .sources
        .keys()
        .map(|k| {
            vigie_producers::spec(k)
                .map(|s| s.name)
                .with_context(|| format!("producers.sources.{k}"))
        })
        .collect::<Result<_, _>>()?;
    let names: Vec<&str> = if a.sources.is_empty() {
        configured
    } else {
        a.sources.iter().map(String::as_str).collect()
    };
    anyhow::ensure!(
        !names.is_empty(),
        "no source to run: configure [producers.sources.<name>] or pass --source"
    );
    let mut runs = Vec::new();
    for name in &names {
        let spec = vigie_producers::spec(name)?;
        let section = vigie_producers::section(&p.sources, name)
            .with_context(|| format!("source {name} has no [producers.sources.{name}] section"))?;
        let source = (spec.build)(section)?;
        runs.push((section.clone(), source));
    }

    let registry = Registry::new();
    let kafka_metrics = KafkaMetrics::register(&registry)?;
    let metrics = SourceMetrics::register(&registry)?;
    let shutdown = shutdown_on_signals();
    let cluster = s.connect().await?;
    let producer = EventProducer::new(&cluster, &s.kafka.producer, kafka_metrics)?;
    let readiness = Readiness::default().with("kafka", move || {
        let cluster = cluster.clone();
        async move {
            vigie_kafka::ping(&cluster, Duration::from_secs(3))
                .await
                .map_err(|e| e.to_string())
        }
    });
    let server = TelemetryServer::start(&s.telemetry, registry, readiness, shutdown.child_token())
        .await
        .with_context(|| format!("cannot serve telemetry on {}", s.telemetry.listen))?;
    let checkpoints = CheckpointStore::open(&p.checkpoint_dir)?;

    let tasks = runs.into_iter().map(|(config, source)| {
        let runner = SourceRunner {
            config,
            http: p.http.clone(),
            checkpoints: checkpoints.clone(),
            quarantine_dir: p.quarantine_dir.clone(),
            metrics: metrics.clone(),
            until_caught_up: a.until_caught_up,
        };
        let producer = &producer;
        let shutdown = shutdown.clone();
        async move {
            let name = source.name();
            let r = runner.run(source, producer, &shutdown).await;
            if r.is_err() {
                // One source failing stops the others: the process exits
                // non-zero and its supervisor restarts it from checkpoints.
                shutdown.cancel();
            }
            (name, r)
        }
    });
    let results = futures::future::join_all(tasks).await;
    shutdown.cancel();
    server.join().await;
    let mut failed = false;
    for (name, r) in results {
        match r {
            Ok(stats) => eprintln!(
                "{name}: {} events, {} rejected to the DLQ, {} polls",
                stats.events, stats.rejects, stats.polls
            ),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
