//! `scorer`: the Rust scorer against Python onnxruntime on the same
//! envelopes, batch for batch, JSON decoding and score events included on
//! both sides, the broker excluded.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use vigie_consumers::sinks::scorer::{FeatureSource, Model};
use vigie_core::{CaseScore, Envelope, Event, SchemaRegistry};
use vigie_simulator::case_generator;

use crate::common::{Bar, Common, median, ort_dylib, record};

/// Options of `scorer`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Rows scored per run.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) rows: u64,
    /// Batch size on both sides.
    #[arg(long, default_value_t = 512)]
    pub(crate) batch: usize,
    /// The model version directory.
    #[arg(long, default_value = "models/hosp_risk/1.0.0")]
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// One pass of the Rust scorer over `lines`; returns seconds.
fn rust_pass(
    model: &mut Model,
    schemas: &SchemaRegistry,
    lines: &[&[u8]],
    batch: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut bytes = 0usize;
    for chunk in lines.chunks(batch) {
        let events: Vec<Event> = chunk
            .iter()
            .map(|l| schemas.parse(l))
            .collect::<Result<_, _>>()?;
        let cases: Vec<&Envelope<vigie_core::Case>> = events
            .iter()
            .filter_map(|e| {
                if let Event::Case(c) = e {
                    Some(c)
                } else {
                    None
                }
            })
            .collect();
        let rows: Vec<&dyn FeatureSource> = cases
            .iter()
            .map(|c| &c.data as &dyn FeatureSource)
            .collect();
        let scores = model.score(&rows)?;
        let now = chrono::Utc::now();
        for (case, score) in cases.iter().zip(scores) {
            let env = Envelope::new(
                "scorer",
                CaseScore {
                    case_event_id: case.id,
                    model_name: model.meta.name.clone(),
                    model_version: model.meta.version.clone(),
                    score: f64::from(score),
                    scored_at: now,
                },
                now,
            );
            bytes += env.to_json_bytes()?.len();
        }
    }
    std::hint::black_box(bytes);
    Ok(start.elapsed().as_secs_f64())
}

pub(crate) fn run(a: &Args) -> anyhow::Result<()> {
    let (rows, batch, runs, model_dir) = (a.rows, a.batch, a.common.runs, &a.model);
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("events.ndjson");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        let g = case_generator(11);
        let now = chrono::Utc::now();
        for i in 0..rows {
            f.write_all(&vigie_simulator::case_envelope(&g, i, now).to_json_bytes()?)?;
            f.write_all(b"\n")?;
        }
    }
    let text = std::fs::read(&input)?;
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let dylib = ort_dylib()?;
    let mut model = Model::load(model_dir, Some(&dylib))?;
    let schemas = SchemaRegistry::embedded()?;
    let (mut rust, mut python) = (Vec::new(), Vec::new());
    for r in 0..runs {
        rust.push(rust_pass(&mut model, &schemas, &lines, batch)?);
        let out = Command::new("python3")
            .arg("ml/bench_score.py")
            .arg("--model")
            .arg(model_dir)
            .arg("--input")
            .arg(&input)
            .args(["--batch", &batch.to_string()])
            .output()
            .context("cannot run ml/bench_score.py")?;
        if !out.status.success() {
            bail!(
                "ml/bench_score.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        python.push(String::from_utf8(out.stdout)?.trim().parse::<f64>()?);
        eprintln!(
            "run {}: vigie {:.3} s, python onnxruntime {:.3} s",
            r + 1,
            rust[r],
            python[r]
        );
    }
    let vigie = rows as f64 / median(&mut rust.clone());
    let baseline = rows as f64 / median(&mut python.clone());
    record(
        &a.common.docs,
        Bar::rate(
            "scorer_vs_python_onnxruntime",
            "score events from case envelopes (JSON decoding, feature encoding, ONNX Runtime run, score event JSON), broker excluded: Rust scorer vs Python onnxruntime, same rows, same batch size, same model and libonnxruntime",
            (vigie, baseline),
            "rows/s",
            &format!("scripts/bench scorer --rows {rows} --batch {batch} --runs {runs}"),
            json!({"rows": rows, "batch": batch, "runs": runs, "vigie_seconds": rust, "python_seconds": python}),
        ),
    )?;
    println!(
        "vigie {vigie:.0} rows/s, python onnxruntime {baseline:.0} rows/s, ratio {:.2}",
        vigie / baseline
    );
    Ok(())
}
