//! `sink-postgres-poison`: the PostgreSQL sink, `vigie consume --sink
//! postgres`, on a backlog with 10 % poison records against the same good
//! events without them. The poison covers each way the sink refuses a
//! record: at the edge (invalid JSON, a schema violation, an unknown
//! schema, a value no store keeps), and in PostgreSQL (a state its foreign
//! key refuses: the row-by-row isolation of the batch). Every refused
//! record goes through the dead-letter outbox (`dlq_outbox`) to the
//! `<topic>.dlq` topic, which is read back afterwards: it must hold each
//! poison record exactly once, with the reason its kind calls for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use vigie_kafka::EventProducer;
use vigie_simulator::{case_generator, case_lines};

use super::sink_postgres::{BACKLOG_SEED, Backlog, run_vigie};
use crate::common::{
    BROKER, Bar, Vigie, alternate, count_records, create_topics, kcat_read, median,
    produce_backlog, record, uuid_like,
};

/// Options of `sink-postgres-poison`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `--events`: the good events of each backlog; the poisoned one holds
    /// one poison record more per 9 of them.
    #[command(flatten)]
    pub(crate) backlog: Backlog,
}

/// Good records per poison record: poison is 10 % of the poisoned backlog.
const GOOD_PER_POISON: u64 = 9;

/// Seed of the generator of the cases the poison is made from (ids apart
/// from the good events').
const POISON_SEED: u64 = 999;

/// The kinds of poison, in turn: what each does to a good case envelope,
/// and the reason its dead letter must give.
const KINDS: [(&str, &str); 6] = [
    ("the envelope cut in half", "invalid_json"),
    (
        "age_group \"99 years\", not in the vocabulary",
        "schema_violation",
    ),
    ("schema \"health.nope\"", "unknown_schema"),
    ("a NUL character in res_county", "unstorable"),
    ("case_month \"0000-01\"", "unstorable"),
    (
        "res_state \"ZZ\", refused by PostgreSQL's foreign key",
        "constraint_violation",
    ),
];

/// Poison record `j`, made from the good case envelope `value`: its kind
/// (an index in [`KINDS`]) and its value.
fn spoil(j: u64, value: &[u8]) -> anyhow::Result<(usize, Vec<u8>)> {
    let kind = (j % KINDS.len() as u64) as usize;
    if kind == 0 {
        return Ok((kind, value[..value.len() / 2].to_vec()));
    }
    let mut v: Value = serde_json::from_slice(value)?;
    match kind {
        1 => v["data"]["age_group"] = json!("99 years"),
        2 => v["schema"] = json!("health.nope"),
        3 => v["data"]["res_county"] = json!("Nul\u{0}County"),
        4 => v["data"]["case_month"] = json!("0000-01"),
        _ => v["data"]["res_state"] = json!("ZZ"),
    }
    Ok((kind, serde_json::to_vec(&v)?))
}

/// The poisoned backlog in `topic`: the `events` good cases of the clean
/// one and, after every [`GOOD_PER_POISON`]th of them, a poison record
/// keyed like the case it was made from (so spread over the partitions
/// like the good ones). Returns the dead letters expected, by reason.
async fn produce_poisoned(
    producer: &EventProducer,
    topic: &str,
    events: u64,
) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let poison_generator = case_generator(POISON_SEED);
    let mut expected: BTreeMap<&'static str, u64> = BTreeMap::new();
    produce_backlog(producer, topic, BACKLOG_SEED, events, |range, lines| {
        // Poison record j goes after good record 9j + 8.
        let poison = case_lines(
            &poison_generator,
            range.start / GOOD_PER_POISON..range.end / GOOD_PER_POISON,
        );
        let mut poison = (range.start / GOOD_PER_POISON..).zip(poison);
        let good = std::mem::take(lines);
        for (i, line) in range.zip(good) {
            lines.push(line);
            if (i + 1) % GOOD_PER_POISON == 0 {
                let (j, (key, value)) = poison.next().context("a poison record per 9 cases")?;
                let (kind, bad) = spoil(j, &value)?;
                *expected.entry(KINDS[kind].1).or_default() += 1;
                lines.push((key, bad));
            }
        }
        Ok(())
    })
    .await?;
    Ok(expected)
}

/// The dead letters of `group` in `dlq`, read back: each poison record
/// exactly once (`poison` records, as many distinct origins), with the
/// reasons `expected`. Returns the reasons found.
fn check_dead_letters(
    kcat: &Path,
    brokers: &str,
    dlq: &str,
    group: &str,
    expected: &BTreeMap<&'static str, u64>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let poison: u64 = expected.values().sum();
    let letters = count_records(kcat, brokers, dlq)?;
    ensure!(
        letters == poison,
        "{dlq} holds {letters} dead letters for {poison} poison records"
    );
    let origins = vigie_kafka::dlq::published_by_group(
        &vigie_kafka::Cluster::new(brokers),
        group,
        &BTreeSet::from([dlq.to_owned()]),
        0,
        Duration::from_secs(60),
    )?;
    ensure!(
        origins.len() as u64 == poison,
        "{dlq} holds dead letters of {} distinct records of group {group} for {poison} poison records",
        origins.len()
    );
    // The headers of each letter (`key=value,...`); the reason has neither
    // a comma nor a new line in it.
    let out = kcat_read(kcat, brokers, dlq, "%h\\n")?;
    let headers = String::from_utf8_lossy(&out);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let key = format!("{}=", vigie_kafka::dlq::H_REASON);
    for (at, _) in headers.match_indices(&key) {
        let rest = &headers[at + key.len()..];
        let end = rest.find([',', '\n']).unwrap_or(rest.len());
        *reasons.entry(rest[..end].to_owned()).or_default() += 1;
    }
    let want: BTreeMap<String, u64> = expected
        .iter()
        .map(|(r, n)| ((*r).to_owned(), *n))
        .collect();
    ensure!(
        reasons == want,
        "the dead letters in {dlq} give the reasons {reasons:?}, the poison records call for {want:?}"
    );
    Ok(reasons)
}

pub(crate) async fn run(vigie: &Vigie, a: Args) -> anyhow::Result<()> {
    let (events, partitions, runs) = a.backlog.size();
    let Backlog { load, tools } = &a.backlog;
    let (docs, kcat, admin) = (&load.common.docs, &tools.kcat, tools.pg.as_str());
    let poison = events / GOOD_PER_POISON;
    let records = events + poison;
    let s = vigie.settings()?;
    let brokers = s.kafka.brokers.clone();
    let producer = s.producer()?;

    // Every backlog first, each run on topics of its own (their DLQ twins
    // start empty), so that no run drains while the broker takes others.
    let (mut clean, mut poisoned, mut expected) = (vec![], vec![], BTreeMap::new());
    for r in 0..runs {
        let tag = uuid_like(r);
        let (c, p) = (
            format!("bench.sink-poison.clean.{tag}"),
            format!("bench.sink-poison.poison10.{tag}"),
        );
        create_topics(&brokers, &[&c, &p], partitions, true).await?;
        produce_backlog(&producer, &c, BACKLOG_SEED, events, |_, _| Ok(())).await?;
        expected = produce_poisoned(&producer, &p, events).await?;
        clean.push(c);
        poisoned.push(p);
    }
    eprintln!(
        "backlogs: {events} events clean, {events} + {poison} poison records ({expected:?}), {partitions} partitions, {runs} runs"
    );

    let (mut c_secs, mut p_secs, mut c_peaks, mut p_peaks) = (vec![], vec![], vec![], vec![]);
    let mut reasons = BTreeMap::new();
    for r in 0..runs {
        let clean_side = async {
            let d = run_vigie(vigie, &brokers, &clean[r], (events, events), admin).await?;
            d.db.drop_db().await?;
            anyhow::Ok((d.secs, d.peak_mib))
        };
        let poisoned_side = async {
            let d = run_vigie(vigie, &brokers, &poisoned[r], (records, events), admin).await?;
            d.db.drop_db().await?;
            let dlq = vigie_kafka::dlq_topic(&poisoned[r]);
            let found = tokio::task::block_in_place(|| {
                check_dead_letters(kcat, &brokers, &dlq, &d.group, &expected)
            })?;
            anyhow::Ok((d.secs, d.peak_mib, found))
        };
        let ((cs, cp), (ps, pp, found)) = alternate(r, clean_side, poisoned_side).await?;
        eprintln!(
            "run {}: clean {cs:.2} s ({:.0} events/s, peak RSS {cp:.0} MiB), poisoned {ps:.2} s ({:.0} records/s, peak RSS {pp:.0} MiB), {poison} dead letters checked",
            r + 1,
            events as f64 / cs,
            records as f64 / ps,
        );
        c_secs.push(cs);
        p_secs.push(ps);
        c_peaks.push(cp);
        p_peaks.push(pp);
        reasons = found;
    }
    let poisoned_eps = records as f64 / median(&mut p_secs.clone());
    let clean_eps = events as f64 / median(&mut c_secs.clone());
    let cmd = format!(
        "scripts/bench sink-postgres-poison --events {events} --partitions {partitions} --runs {runs}"
    );
    let kinds: Vec<String> = KINDS
        .iter()
        .map(|(what, reason)| format!("{what} -> {reason}"))
        .collect();
    let details = json!({
        "events": events, "poison": poison, "records_poisoned": records,
        "partitions": partitions, "runs": runs, "broker": BROKER,
        "throughput": "records read (good + poison) / seconds from the start of vigie consume to every record committed (sum of the stored next_offset = records produced, dlq_outbox empty)",
        "poison_kinds_in_turn": kinds, "dead_letters_by_reason": reasons,
        "clean_seconds": c_secs, "poisoned_seconds": p_secs,
        "clean_peak_rss_mib": c_peaks, "poisoned_peak_rss_mib": p_peaks,
    });
    record(
        docs,
        Bar::rate(
            "sink_postgres_poison10_vs_clean",
            "exactly-once PostgreSQL sink on a backlog with 10 % poison records (one per 9 good events: invalid JSON, schema violation, unknown schema, unstorable values, a state PostgreSQL's foreign key refuses), every one dead-lettered through dlq_outbox to <topic>.dlq, vs the same good events without poison; events/s over every record read (good + poison), to every record committed (rows stored and dead letters published)",
            (poisoned_eps, clean_eps),
            "events/s",
            &cmd,
            details,
        ),
    )?;
    println!(
        "poisoned {poisoned_eps:.0} events/s (good + poison), clean {clean_eps:.0} events/s (ratio {:.3})",
        poisoned_eps / clean_eps
    );
    Ok(())
}
