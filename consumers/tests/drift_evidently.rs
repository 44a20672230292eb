//! Vigie's drift statistics against Evidently's own on the same windows:
//! the simulator's cases, stable and drifted, scored by the shipped model,
//! binned by its reference profile (`Window::histograms`) and handed to
//! `ml/drift_evidently.py`, which runs Evidently's `psi`, `jensenshannon`
//! and `ks` stat tests through a `Report` (Evidently from PyPI, in the
//! virtualenv scripts/setup makes). PSI and Jensen-Shannon must agree to
//! 1e-9; the KS p-values differ by the limiting distribution Vigie takes
//! where scipy takes the finite one (docs/drift.md), by less than 0.01 from
//! 1,000 values on.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use vigie_consumers::drift::{FeatureStatistics, Kind, ReferenceProfile, Window};
use vigie_consumers::sinks::scorer::{FeatureSource, Model};
use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};
use vigie_testkit::{ort_dylib, venv_python};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A window of `n` cases of the simulator (seed `seed`, with `drift`),
/// each scored by `model`.
fn window(
    profile: &ReferenceProfile,
    model: &mut Model,
    (seed, drift, n): &(u64, Option<Drift>, u64),
) -> Window {
    let g = CaseGenerator::new(CaseGenConfig {
        seed: *seed,
        drift: drift.clone(),
        ..CaseGenConfig::default()
    })
    .unwrap();
    let rows: Vec<_> = g.rows(0..*n).collect();
    let mut w = Window::new(profile);
    for chunk in rows.chunks(512) {
        let features: Vec<&dyn FeatureSource> =
            chunk.iter().map(|r| r as &dyn FeatureSource).collect();
        for (row, score) in chunk.iter().zip(model.score(&features).unwrap()) {
            w.add_case(profile, row);
            w.add_score(profile, f64::from(score));
        }
    }
    w
}

#[test]
fn psi_and_jensen_shannon_equal_evidentlys_and_ks_p_values_are_within_its_finite_n_correction() {
    let model_dir = repo().join("models/hosp_risk/1.0.0");
    let profile = ReferenceProfile::load(&model_dir.join("metadata.json")).unwrap();
    let mut model = Model::load(&model_dir, Some(&ort_dylib())).unwrap();
    let moderate = || Some(Drift::AgeShiftModerate { from_index: 0 });
    let older = Some(Drift::AgeShiftOlder { from_index: 0 });
    let shapes = [
        ("stable, 1,000 cases", (11, None, 1_000)),
        ("stable, 5,000 cases", (12, None, 5_000)),
        ("stable, 20,000 cases", (13, None, 20_000)),
        ("moderate age shift, 5,000 cases", (14, moderate(), 5_000)),
        ("moderate age shift, 20,000 cases", (15, moderate(), 20_000)),
        ("older population, 5,000 cases", (16, older, 5_000)),
        ("40 cases", (17, None, 40)),
    ];
    let windows: Vec<_> = shapes
        .iter()
        .map(|(_, shape)| window(&profile, &mut model, shape).histograms(&profile))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("windows.json");
    std::fs::write(&input, json!({ "windows": windows }).to_string()).unwrap();
    let out = Command::new(venv_python("evidently-venv"))
        .arg(repo().join("ml/drift_evidently.py"))
        .arg("compare")
        .arg(&input)
        .output()
        .expect("the Evidently virtualenv's python runs");
    assert!(
        out.status.success(),
        "ml/drift_evidently.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evidently: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut compared, mut worst_psi, mut worst_js, mut worst_ks) = (0, 0f64, 0f64, 0f64);
    for (((name, _), hists), theirs) in shapes
        .iter()
        .zip(&windows)
        .zip(evidently["windows"].as_array().unwrap())
    {
        for h in hists {
            let theirs = &theirs[&h.feature];
            let FeatureStatistics {
                psi,
                jensen_shannon: js,
                ks,
                ..
            } = FeatureStatistics::from(h);
            let get = |k: &str| {
                theirs[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name} {} {k}", h.feature))
            };
            let (dp, dj) = (
                (psi.unwrap() - get("psi")).abs(),
                (js.unwrap() - get("jensen_shannon")).abs(),
            );
            eprintln!(
                "{name:<34} {:<25} psi {:.6} ({dp:.1e})  js {:.6} ({dj:.1e})  ks p {}",
                h.feature,
                psi.unwrap(),
                js.unwrap(),
                ks.map_or("-".to_owned(), |k| format!(
                    "{:.4} against {:.4}",
                    k.p_value,
                    get("ks_p_value")
                )),
            );
            assert!(dp <= 1e-9 * get("psi").max(1.0), "{name} {} psi", h.feature);
            assert!(dj <= 1e-9, "{name} {} jensen_shannon", h.feature);
            worst_psi = worst_psi.max(dp);
            worst_js = worst_js.max(dj);
            match (h.kind, ks) {
                (Kind::Categorical, None) => {}
                (_, Some(ks)) => {
                    let dk = (ks.p_value - get("ks_p_value")).abs();
                    let present: f64 = h.current[..h.ordered].iter().sum();
                    if present >= 1_000.0 {
                        assert!(dk < 0.01, "{name} {} ks p-value", h.feature);
                        worst_ks = worst_ks.max(dk);
                    }
                }
                (kind, None) => panic!("{name} {}: no KS for a {kind:?}", h.feature),
            }
            compared += 1;
        }
    }
    eprintln!(
        "{compared} features compared with Evidently {}: largest gaps psi {worst_psi:.1e}, js {worst_js:.1e}, ks p-value {worst_ks:.4} (from 1,000 values)",
        evidently["evidently"]
    );
    assert_eq!(compared, shapes.len() * windows[0].len());
}
