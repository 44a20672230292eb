//! `vigie lag`: consumer lag per partition.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// Arguments of `vigie lag`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: super::GroupArgs,
}

pub(crate) async fn run(config: Option<&Path>, a: Args) -> anyhow::Result<ExitCode> {
    let s = super::load(config)?;
    let mut c = s.kafka.consumer.clone();
    a.target.apply(&mut c);
    let (group, topics) = (c.group_id, c.topics);
    let cluster = s.connect().await?;
    let lags = vigie_kafka::group_lag(&cluster, &group, &topics, Duration::from_secs(10))
        .await
        .with_context(|| {
            format!(
                "cannot read the lag of group {group} from {} ({})",
                s.kafka.brokers,
                cluster.describe()
            )
        })?;
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>10}",
        "topic", "partition", "committed", "high", "lag"
    );
    let mut total = 0;
    for l in &lags {
        let committed = l.committed.map_or("-".to_owned(), |c| c.to_string());
        println!(
            "{:<40} {:>9} {:>12} {:>12} {:>10}",
            l.topic, l.partition, committed, l.high_watermark, l.lag
        );
        total += l.lag;
    }
    println!("total lag of group {group}: {total}");
    Ok(ExitCode::SUCCESS)
}
