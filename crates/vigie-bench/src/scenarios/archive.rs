//! `archive`: `vigie archive` of a topic against `kcat -C -e -J | zstd -3`
//! of the same topic, and `vigie restore` of that archive into a new topic
//! against `zstd -dc | kcat -P` of the same records (keys and values; kcat
//! keeps neither headers, timestamps nor partitions, and checks no
//! checksum), on the same broker.

use std::path::PathBuf;
use std::process::Command;

use anyhow::ensure;
use serde_json::json;

use crate::common::{
    Bar, Load, Vigie, alternate, create_topics, high_watermarks, median, produce_backlog, record,
    run_timed, uuid_like,
};

/// Options of `archive`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) load: Load,
    /// The kcat to run.
    #[arg(long, default_value = "scripts/kcat")]
    pub(crate) kcat: PathBuf,
}

/// Seed of the generator of the topic's cases.
const SEED: u64 = 11;

fn sh(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-o", "pipefail", "-c", script]);
    c
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = (a.load.events, a.load.partitions, a.load.common.runs);
    let settings = vigie.settings()?;
    let brokers = settings.kafka.brokers.clone();
    let kcat = std::fs::canonicalize(&a.kcat)?;
    let kcat = kcat.display();
    let source = format!("bench.archive.{}", uuid_like(0));
    create_topics(&brokers, &[&source], partitions, false).await?;
    let mut value_bytes = 0u64;
    produce_backlog(&settings.producer()?, &source, SEED, events, |_, lines| {
        value_bytes += lines
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        Ok(())
    })
    .await?;
    let mb = value_bytes as f64 / 1e6;
    eprintln!(
        "{events} events ({mb:.1} MB of keys and values), {partitions} partitions, {runs} runs each"
    );
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (mut arch_v, mut arch_k, mut rest_v, mut rest_k) = (vec![], vec![], vec![], vec![]);
    let (mut vigie_file_bytes, mut kcat_file_bytes) = (0u64, 0u64);
    for r in 0..runs {
        let out_v = d.join(format!("vigie-{r}"));
        let out_k = d.join(format!("kcat-{r}.json.zst"));
        let mut archive = vigie.command();
        archive
            .args(["archive", "--json", "--topic", &source, "--out"])
            .arg(&out_v);
        let dump = sh(&format!(
            "{kcat} -C -b {brokers} -t {source} -e -q -J | zstd -3 -q -o {}",
            out_k.display()
        ));
        let (k, v) = alternate(
            r,
            async { run_timed(dump, None, &d.join("kcat.stderr"), false) },
            async { run_timed(archive, None, &d.join("vigie.stderr"), false) },
        )
        .await?;
        arch_k.push(k.secs);
        arch_v.push(v.secs);
        vigie_file_bytes = dir_bytes(&out_v)?;
        kcat_file_bytes = std::fs::metadata(&out_k)?.len();

        // The restore's baseline input: the same records as key<TAB>value
        // lines, zstd-compressed, written before any timing.
        let lines = d.join(format!("kcat-{r}.tsv.zst"));
        ensure!(
            sh(&format!(
                "{kcat} -C -b {brokers} -t {source} -e -q -f '%k\\t%s\\n' | zstd -3 -q -o {}",
                lines.display()
            ))
            .status()?
            .success(),
            "kcat dump of {source}"
        );
        let (vt, kt) = (
            format!("bench.restored.vigie.{}", uuid_like(r + 1)),
            format!("bench.restored.kcat.{}", uuid_like(r + 1)),
        );
        create_topics(&brokers, &[&kt], partitions, false).await?;
        let mut restore = vigie.command();
        restore
            .args(["restore", "--json", "--to-topic", &vt, "--from"])
            .arg(out_v.join(&source));
        let produce = sh(&format!(
            "zstd -dc -q {} | {kcat} -P -b {brokers} -t {kt} -K '\\t' -z zstd -X linger.ms=20 \
             -X enable.idempotence=true -X acks=all -X batch.num.messages=10000 -X \
             batch.size=1000000",
            lines.display()
        ));
        let (k, v) = alternate(
            r,
            async { run_timed(produce, None, &d.join("kcat-p.stderr"), false) },
            async { run_timed(restore, None, &d.join("vigie-r.stderr"), false) },
        )
        .await?;
        rest_k.push(k.secs);
        rest_v.push(v.secs);
        for t in [&vt, &kt] {
            let n = high_watermarks(&brokers, t).await?;
            ensure!(n == events as i64, "{t} holds {n} records, not {events}");
        }
        eprintln!(
            "run {}: archive vigie {:.3} s, kcat|zstd {:.3} s; restore vigie {:.3} s, zstd|kcat {:.3} s",
            r + 1,
            arch_v[r],
            arch_k[r],
            rest_v[r],
            rest_k[r]
        );
    }
    let (av, ak) = (median(&mut arch_v), median(&mut arch_k));
    let (rv, rk) = (median(&mut rest_v), median(&mut rest_k));
    let command =
        format!("scripts/bench archive --events {events} --partitions {partitions} --runs {runs}");
    let details = |v: &[f64], k: &[f64], extra: serde_json::Value| {
        json!({
            "events": events,
            "partitions": partitions,
            "runs": runs,
            "key_and_value_megabytes": (mb * 10.0).round() / 10.0,
            "vigie_seconds": v,
            "baseline_seconds": k,
            "vigie_mb_per_s": (mb / median(&mut v.to_vec()) * 10.0).round() / 10.0,
            "baseline_mb_per_s": (mb / median(&mut k.to_vec()) * 10.0).round() / 10.0,
            "more": extra,
        })
    };
    record(
        &a.load.common.docs,
        Bar::rate(
            "archive_vs_kcat_consume",
            "vigie archive (committed records, zstd-3 frames, per-partition files, SHA-256 manifest) vs kcat -C -e -J | zstd -3, same topic",
            (events as f64 / av, events as f64 / ak),
            "records/s",
            &command,
            details(
                &arch_v,
                &arch_k,
                json!({
                    "vigie_archive_bytes": vigie_file_bytes,
                    "baseline_file_bytes": kcat_file_bytes,
                }),
            ),
        ),
    )?;
    record(
        &a.load.common.docs,
        Bar::rate(
            "restore_vs_kcat_produce",
            "vigie restore (checksums verified, keys, headers, timestamps and partitions kept, idempotent producer, acknowledgements awaited every 1,000,000 records) vs zstd -dc | kcat -P -K of the same keys and values, zstd, idempotent, acks=all",
            (events as f64 / rv, events as f64 / rk),
            "records/s",
            &command,
            details(&rest_v, &rest_k, json!({})),
        ),
    )?;
    println!(
        "archive: vigie {:.0} records/s, kcat|zstd {:.0} records/s, ratio {:.3}; restore: vigie {:.0} records/s, zstd|kcat {:.0} records/s, ratio {:.3}",
        events as f64 / av,
        events as f64 / ak,
        ak / av,
        events as f64 / rv,
        events as f64 / rk,
        rk / rv
    );
    Ok(())
}

fn dir_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut n = 0;
    for e in walk(dir)? {
        n += std::fs::metadata(e)?.len();
    }
    Ok(n)
}

fn walk(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
