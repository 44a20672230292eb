//! `vigie consume`: run a consumer-group component until SIGTERM / SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tracing::error;
use vigie_consumers::{ConsumerMetrics, KafkaClients, Runtime, SinkSpec};
use vigie_core::SchemaRegistry;
use vigie_kafka::KafkaMetrics;
use vigie_telemetry::{Readiness, TelemetryServer, init_logging, shutdown_on_signals};

/// How long the batch in flight may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Arguments of `vigie consume`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The sink to write to (`blackhole`, `drift`, `postgres`, `scorer`, `scylla`), configured
    /// by its `[consumers.sinks.<name>]` section.
    #[arg(long, default_value = "blackhole")]
    sink: &'static SinkSpec,
    #[command(flatten)]
    target: super::GroupArgs,
}

pub(crate) async fn run(config: Option<&Path>, a: Args) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    init_logging(&s.log);
    let mut consumer = s.kafka.consumer.clone();
    a.target.apply(&mut consumer);
    anyhow::ensure!(
        !consumer.topics.is_empty(),
        "no topic to consume: set kafka.consumer.topics or --topic"
    );

    let registry = Registry::new();
    let kafka_metrics = KafkaMetrics::register(&registry)?;
    let metrics = ConsumerMetrics::register(&registry)?;
    let shutdown = shutdown_on_signals();
    let cluster = s.connect().await?;
    let kafka = KafkaClients {
        cluster: cluster.clone(),
        producer: s.kafka.producer.clone(),
        metrics: kafka_metrics.clone(),
        group: consumer.group_id.clone(),
    };
    let mut sink = a
        .sink
        .build(&s.consumers.sinks, &kafka, &registry)
        .await
        .with_context(|| format!("cannot start sink {}", a.sink.name))?;
    let probed = cluster.clone();
    let mut readiness = Readiness::default().with("kafka", move || {
        let cluster = probed.clone();
        async move {
            vigie_kafka::ping(&cluster, Duration::from_secs(3))
                .await
                .map_err(|e| e.to_string())
        }
    });
    if let Some(probe) = sink.health_probe() {
        readiness = readiness.with(a.sink.name, move || probe());
    }
    let server = TelemetryServer::start(&s.telemetry, registry, readiness, shutdown.child_token())
        .await
        .with_context(|| format!("cannot serve telemetry on {}", s.telemetry.listen))?;

    let component = a.sink.name;
    let runtime = Runtime {
        component,
        cluster,
        consumer,
        producer: s.kafka.producer.clone(),
        schemas: Arc::new(SchemaRegistry::embedded()?),
        kafka_metrics,
        metrics,
    };
    let run = runtime.run(sink.as_mut(), shutdown.clone());
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = run => r,
        _ = grace => {
            error!(grace = ?SHUTDOWN_GRACE, "Batch in flight did not finish in time; exiting without committing it");
            return Ok(ExitCode::FAILURE);
        }
    };
    shutdown.cancel();
    server.join().await;
    result?;
    Ok(ExitCode::SUCCESS)
}
