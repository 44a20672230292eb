//! `drift`: the drift component's work on a stream (JSON decoding of the
//! case and score envelopes, event-time windows, every statistic of every
//! window judged into a report) against Evidently's `Report.run` on the
//! same windows (`ml/drift_evidently.py bench`: the same psi,
//! jensenshannon and ks stat tests per feature and for the score, over the
//! same values, DataFrames made beforehand, no rendering), the broker
//! excluded.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use vigie_consumers::drift::{Input, ReferenceProfile, Tracker, Window};
use vigie_consumers::sinks::drift::DriftConfig;
use vigie_consumers::sinks::scorer::{FeatureSource, Model};
use vigie_core::{CaseScore, Envelope, Event, SchemaRegistry};
use vigie_simulator::case_generator;

use crate::common::{Bar, Common, evidently_python, median, now_ms, ort_dylib, record};

/// Options of `drift`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events per run: half cases, half their scores.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Cases per window (each window is the default 900 s long).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) window_cases: u64,
    /// The model version directory.
    #[arg(long, default_value = "models/hosp_risk/1.0.0")]
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// The stream: case envelopes and their score envelopes, as JSON lines, in
/// windows of `per_window` cases each, event times spread evenly over the
/// window; then one more case and score a window and the allowed lateness
/// later, which closes the last window.
struct Stream {
    cases: Vec<Vec<u8>>,
    scores: Vec<Vec<u8>>,
}

fn stream(
    model: &mut Model,
    (cases, per_window): (u64, u64),
    config: &DriftConfig,
) -> anyhow::Result<Stream> {
    let g = case_generator(11);
    let spec = config.spec();
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let at = |i: u64| -> DateTime<Utc> {
        let (w, k) = (i / per_window, i % per_window);
        let ms = i64::try_from(w).unwrap() * spec.size_ms
            + i64::try_from(k).unwrap() * spec.size_ms / i64::try_from(per_window).unwrap();
        t0 + chrono::Duration::milliseconds(ms)
    };
    let closing = t0
        + chrono::Duration::milliseconds(
            i64::try_from(cases.div_ceil(per_window) + 1).unwrap() * spec.size_ms
                + spec.lateness_ms,
        );
    let mut s = Stream {
        cases: Vec::new(),
        scores: Vec::new(),
    };
    let envelopes: Vec<_> = (0..=cases)
        .map(|i| {
            let when = if i == cases { closing } else { at(i) };
            vigie_simulator::case_envelope(&g, i, when)
        })
        .collect();
    for chunk in envelopes.chunks(512) {
        let rows: Vec<&dyn FeatureSource> = chunk
            .iter()
            .map(|c| &c.data as &dyn FeatureSource)
            .collect();
        for (case, score) in chunk.iter().zip(model.score(&rows)?) {
            let env = Envelope::new(
                "scorer",
                CaseScore {
                    case_event_id: case.id,
                    model_name: model.meta.name.clone(),
                    model_version: model.meta.version.clone(),
                    score: f64::from(score),
                    scored_at: case.ingested_at,
                },
                case.ingested_at,
            );
            s.cases.push(case.to_json_bytes()?);
            s.scores.push(env.to_json_bytes()?);
        }
    }
    Ok(s)
}

/// One pass of the drift component's work over the stream, in batches of
/// 500 cases and their scores, as the consumer reads them; returns the
/// seconds and the reports.
fn vigie_pass(
    tracker: &mut Tracker,
    schemas: &SchemaRegistry,
    s: &Stream,
) -> anyhow::Result<(f64, Vec<vigie_core::health::DriftReport>)> {
    let start = Instant::now();
    let now = now_ms();
    tracker.assigned(2, now);
    let mut reports = Vec::new();
    for (cases, scores) in s.cases.chunks(500).zip(s.scores.chunks(500)) {
        for line in cases {
            let Event::Case(c) = schemas.parse(line)? else {
                bail!("not a case")
            };
            tracker.add_case(Input::Cases(0), c.ingested_at, now, &c.data);
        }
        for line in scores {
            let Event::CaseScore(sc) = schemas.parse(line)? else {
                bail!("not a score")
            };
            tracker.add_score(Input::Scores(0), sc.ingested_at, now, sc.data.score);
        }
        reports.extend(tracker.close_due(now));
    }
    Ok((start.elapsed().as_secs_f64(), reports))
}

pub(crate) fn run(a: &Args) -> anyhow::Result<()> {
    let (cases, per_window, runs) = (a.events / 2, a.window_cases, a.common.runs);
    ensure!(
        cases >= per_window && per_window > 0,
        "--events must hold at least two windows of --window-cases cases"
    );
    let config = DriftConfig::default();
    let profile = Arc::new(ReferenceProfile::load(&a.model.join("metadata.json"))?);
    let mut model = Model::load(&a.model, Some(&ort_dylib()?))?;
    eprintln!("scoring {cases} cases for the stream");
    let s = stream(&mut model, (cases, per_window), &config)?;
    let windows = cases.div_ceil(per_window);

    // The same windows for Evidently: each window's histograms.
    let schemas = SchemaRegistry::embedded()?;
    let mut hists = Vec::new();
    for (cases, scores) in s.cases[..s.cases.len() - 1]
        .chunks(usize::try_from(per_window)?)
        .zip(s.scores.chunks(usize::try_from(per_window)?))
    {
        let mut w = Window::new(&profile);
        for (c, sc) in cases.iter().zip(scores) {
            let (Event::Case(c), Event::CaseScore(sc)) = (schemas.parse(c)?, schemas.parse(sc)?)
            else {
                bail!("not a case and its score")
            };
            w.add_case(&profile, &c.data);
            w.add_score(&profile, sc.data.score);
        }
        hists.push(w.histograms(&profile));
    }
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("windows.json");
    std::io::BufWriter::new(std::fs::File::create(&input)?)
        .write_all(json!({ "windows": hists }).to_string().as_bytes())?;

    let (mut vigie, mut evidently) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let mut tracker = Tracker::new(
            Arc::clone(&profile),
            (&model.meta.name, &model.meta.version),
            config.spec(),
            config.thresholds(),
        );
        let (secs, reports) = vigie_pass(&mut tracker, &schemas, &s)?;
        ensure!(
            reports.len() as u64 == windows
                && reports
                    .iter()
                    .zip(&hists)
                    .all(|(r, h)| r.cases == h[0].n && r.scores == h[0].n),
            "the drift component's windows are not the ones handed to Evidently"
        );
        vigie.push(secs);
        let out = Command::new(evidently_python()?)
            .arg("ml/drift_evidently.py")
            .arg("bench")
            .arg(&input)
            .output()
            .context("cannot run ml/drift_evidently.py")?;
        if !out.status.success() {
            bail!(
                "ml/drift_evidently.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        evidently.push(v["seconds"].as_f64().context("no seconds from Evidently")?);
        eprintln!(
            "run {}: vigie {:.3} s, evidently Report.run {:.3} s ({windows} windows)",
            r + 1,
            vigie[r],
            evidently[r]
        );
    }
    let events = (2 * cases) as f64;
    let (v, e) = (
        events / median(&mut vigie.clone()),
        events / median(&mut evidently.clone()),
    );
    record(
        &a.common.docs,
        Bar::rate(
            "drift_vs_evidently",
            "drift statistics of a stream of cases and scores, windows of the default 900 s: the drift component's work (JSON decoding, windows, PSI, Jensen-Shannon and KS of every feature and of the score, the reports) vs Evidently's Report.run with the same stat tests on the same windows, its DataFrames made beforehand, broker excluded",
            (v, e),
            "events/s",
            &format!(
                "scripts/bench drift --events {} --window-cases {per_window} --runs {runs}",
                a.events
            ),
            json!({"events": 2 * cases, "cases": cases, "window_cases": per_window, "windows": windows, "runs": runs, "vigie_seconds": vigie, "evidently_seconds": evidently}),
        ),
    )?;
    println!(
        "vigie {v:.0} events/s, evidently {e:.0} events/s, ratio {:.1}",
        v / e
    );
    Ok(())
}
