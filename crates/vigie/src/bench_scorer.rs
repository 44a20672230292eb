//! `vigie bench scorer`: the Rust scorer against Python onnxruntime on the
//! same envelopes, batch for batch, JSON decoding and score events included
//! on both sides, the broker excluded.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use vigie_consumers::sinks::scorer::{FeatureSource, Model};
use vigie_core::{CaseScore, Envelope, Event, SchemaRegistry};

use crate::bench::{case_generator, median, record};

/// The library of the installed onnxruntime wheel, unless `ORT_DYLIB_PATH` says.
pub(crate) fn ort_dylib() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(p.into());
    }
    let out = Command::new("python3")
        .args(["-c", "import onnxruntime, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])"])
        .output()?;
    if !out.status.success() {
        bail!("the onnxruntime wheel is not installed (scripts/setup installs it)");
    }
    Ok(String::from_utf8(out.stdout)?.trim().into())
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

pub(crate) fn run(
    rows: u64,
    batch: usize,
    runs: usize,
    model_dir: &Path,
    docs: &Path,
) -> anyhow::Result<ExitCode> {
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
        docs,
        json!({
            "name": "scorer_vs_python_onnxruntime",
            "description": "score events from case envelopes (JSON decoding, feature encoding, ONNX Runtime run, score event JSON), broker excluded: Rust scorer vs Python onnxruntime, same rows, same batch size, same model and libonnxruntime",
            "vigie": vigie.round(), "baseline": baseline.round(),
            "ratio": (vigie / baseline * 1000.0).round() / 1000.0,
            "unit": "rows/s", "higher_is_better": true,
            "command": format!("scripts/bench scorer --rows {rows} --batch {batch} --runs {runs}"),
            "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
            "details": {"rows": rows, "batch": batch, "runs": runs, "vigie_seconds": rust, "python_seconds": python},
        }),
    )?;
    println!(
        "vigie {vigie:.0} rows/s, python onnxruntime {baseline:.0} rows/s, ratio {:.2}",
        vigie / baseline
    );
    Ok(ExitCode::SUCCESS)
}
