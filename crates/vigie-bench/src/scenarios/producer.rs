//! `producer`: the raw envelope producer, `vigie produce`, against
//! `kcat -P`: the same serialized events into two fresh topics of the same
//! layout on the same broker.

use std::path::PathBuf;

use serde_json::json;

use crate::common::{
    Bar, Events, ProducerLoad, Vigie, alternate, count_records, create_topics, kcat_producer,
    median, record, run_timed, uuid_like,
};

/// Options of `producer`.
#[derive(Debug, clap::Args)]
#[command(mut_arg("runs", |a| a.default_value("5")))]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) producer: ProducerLoad,
    /// The kcat to run (one that loads a current librdkafka).
    #[arg(long, default_value = "scripts/kcat")]
    pub(crate) kcat: PathBuf,
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let load = &a.producer.load;
    let (events, partitions, runs) = (load.events, load.partitions, load.common.runs);
    let brokers = vigie.settings()?.kafka.brokers;
    let written = Events::write(events, false)?;
    let input = &written.tsv;
    let bytes = std::fs::metadata(input)?.len();
    eprintln!("{events} events, {bytes} bytes, {partitions} partitions, {runs} runs each");
    let (k_err, v_err) = (
        written.dir.path().join("kcat.stderr"),
        written.dir.path().join("vigie.stderr"),
    );
    let mut vigie_secs = Vec::new();
    let mut kcat_secs = Vec::new();
    for r in 0..runs {
        let suffix = uuid_like(r);
        let kt = format!("bench.kcat.{suffix}");
        let vt = format!("bench.vigie.{suffix}");
        create_topics(&brokers, &[&kt, &vt], partitions, false).await?;
        let kcat = kcat_producer(&a.kcat, &brokers, &kt);
        let (k, v) = alternate(
            r,
            async { run_timed(kcat, Some(input), &k_err, false) },
            async { vigie.timed_produce((&brokers, &[]), &vt, input, &v_err) },
        )
        .await?;
        kcat_secs.push(k.secs);
        vigie_secs.push(v.secs);
        // Both topics, read back, must hold every event.
        for topic in [&vt, &kt] {
            let n = count_records(&a.kcat, &brokers, topic)?;
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
    record(
        &load.common.docs,
        Bar::rate(
            "producer_vs_kcat",
            "raw envelope producer (vigie produce) vs kcat -P, same serialized events, same broker and topic layout, zstd, idempotent, acks=all, linger 20 ms",
            (vigie, baseline),
            "records/s",
            &format!(
                "scripts/bench producer --events {events} --partitions {partitions} --runs {runs}"
            ),
            json!({
                "events": events,
                "bytes": bytes,
                "partitions": partitions,
                "runs": runs,
                "broker": a.producer.broker_label,
                "vigie_seconds": vigie_secs,
                "baseline_seconds": kcat_secs,
            }),
        ),
    )?;
    println!(
        "vigie {vigie:.0} records/s, kcat {baseline:.0} records/s, ratio {:.3}",
        vigie / baseline
    );
    Ok(())
}
