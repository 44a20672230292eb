//! The Rust scorer against Python onnxruntime on the same 10,000 rows,
//! unknown categories and missing values included: the scores must agree
//! within 1e-5. Both load the same `libonnxruntime` (the onnxruntime
//! wheel's, installed by scripts/setup).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};
use vigie_consumers::sinks::scorer::{FeatureSource, Model, ScorerError};
use vigie_simulator::{CaseGenConfig, CaseGenerator};
use vigie_testkit::ort_dylib;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 10,000 case rows; every 7th has an unknown category, every 11th a
/// missing field, every 13th a non-numeric or null onset interval.
fn rows() -> Vec<Map<String, Value>> {
    let g = CaseGenerator::new(CaseGenConfig {
        seed: 99,
        ..CaseGenConfig::default()
    })
    .unwrap();
    (0..10_000u64)
        .map(|i| {
            let Value::Object(mut m) = serde_json::to_value(g.row(i)).unwrap() else {
                unreachable!()
            };
            if i % 7 == 0 {
                let (field, value) = [
                    ("sex", "Nonbinary"),
                    ("res_state", "ZZ"),
                    ("age_group", "99+ years"),
                    ("race", ""),
                ][(i / 7 % 4) as usize];
                m.insert(field.into(), value.into());
            }
            if i % 11 == 0 {
                let field = [
                    "ethnicity",
                    "symptom_status",
                    "underlying_conditions_yn",
                    "case_onset_interval",
                ][(i / 11 % 4) as usize];
                m.remove(field);
            }
            if i % 13 == 0 {
                m.insert(
                    "case_onset_interval".into(),
                    if i % 2 == 0 { Value::Null } else { "3".into() },
                );
            }
            if i % 17 == 0 {
                m.insert("case_onset_interval".into(), (-(i as i64 % 9)).into());
            }
            m
        })
        .collect()
}

#[test]
fn rust_and_python_onnxruntime_agree_on_10000_rows() {
    let model_dir = repo().join("models/hosp_risk/1.0.0");
    let dylib = ort_dylib();
    let mut model = Model::load(&model_dir, Some(&dylib)).expect("model loads");
    let rows = rows();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.ndjson");
    let mut text = String::new();
    for r in &rows {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let output = dir.path().join("scores.json");
    let py = Command::new("python3")
        .arg(repo().join("ml/score.py"))
        .arg("--model")
        .arg(&model_dir)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "ml/score.py: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let python: Vec<f64> =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();

    let mut rust = Vec::new();
    for chunk in rows.chunks(512) {
        let refs: Vec<&dyn FeatureSource> = chunk.iter().map(|r| r as &dyn FeatureSource).collect();
        rust.extend(model.score(&refs).unwrap());
    }
    assert_eq!(rust.len(), python.len());
    let max_diff = rust
        .iter()
        .zip(&python)
        .map(|(r, p)| (f64::from(*r) - p).abs())
        .fold(0.0, f64::max);
    assert!(max_diff <= 1e-5, "max |rust - python| = {max_diff}");
    // The scores are not degenerate: the model separates the rows.
    let (lo, hi) = rust
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    assert!(hi - lo > 0.2, "scores span [{lo}, {hi}]");
}

#[test]
fn typed_cases_encode_like_their_json() {
    let model_dir = repo().join("models/hosp_risk/1.0.0");
    let model = Model::load(&model_dir, Some(&ort_dylib())).expect("model loads");
    let g = CaseGenerator::new(CaseGenConfig::default()).unwrap();
    for i in 0..500 {
        let case = g.row(i);
        let Value::Object(json) = serde_json::to_value(&case).unwrap() else {
            unreachable!()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        model.encoder().encode(&case, &mut a);
        model.encoder().encode(&json, &mut b);
        assert_eq!(a, b, "row {i}");
    }
}

#[test]
fn a_missing_or_corrupt_model_is_a_clear_error() {
    let dylib = ort_dylib();
    let dir = tempfile::tempdir().unwrap();
    let err = Model::load(dir.path(), Some(&dylib)).unwrap_err();
    assert!(
        matches!(err, ScorerError::Model { .. }) && err.to_string().contains("metadata.json"),
        "{err}"
    );

    std::fs::copy(
        repo().join("models/hosp_risk/1.0.0/metadata.json"),
        dir.path().join("metadata.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"not a model").unwrap();
    let err = Model::load(dir.path(), Some(&dylib)).unwrap_err();
    assert!(err.to_string().contains("model.onnx"), "{err}");
}
