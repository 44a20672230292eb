//! The ONNX model of the scorer: its metadata, the feature encoding the
//! metadata prescribes, and inference with ONNX Runtime (`ort`, the
//! `libonnxruntime` shared library loaded at run time).
//!
//! The encoding reproduces `ml/hosp_features.py::encode` exactly (the
//! contract in `ml/README.md`): one-hot features set the column of a value
//! found in their category list and leave all zeros for an unknown or
//! missing value; a numeric feature takes its value as `f32`, or
//! `missing_value` with its indicator column at 1.0 when absent or not a
//! number. A test scores the same rows here and in Python onnxruntime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

/// What went wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    /// ONNX Runtime could not be loaded.
    #[error(
        "cannot load ONNX Runtime from {path}: {message} (set ORT_DYLIB_PATH to libonnxruntime.so, e.g. from the onnxruntime Python wheel; scripts/setup installs it)"
    )]
    Runtime {
        /// The library tried.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The model directory or one of its files is unusable.
    #[error("model {path}: {message}")]
    Model {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// One input feature, as `metadata.json` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureSpec {
    /// One column per known category.
    OneHot {
        /// Field of the case's `data`.
        name: String,
        /// Known categories, in column order.
        categories: Vec<String>,
        /// `[start, end)` of its columns.
        columns: [usize; 2],
    },
    /// A number, with a missing-value indicator column.
    Numeric {
        /// Field of the case's `data`.
        name: String,
        /// Its column.
        column: usize,
        /// The column set to 1.0 when the value is missing.
        missing_indicator_column: usize,
        /// The value used when missing.
        missing_value: f32,
    },
}

/// The part of `metadata.json` the scorer needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Name of the float input tensor `[N, n_features]`.
    pub input_name: String,
    /// Name of the probabilities output `[N, classes]`.
    pub output_name: String,
    /// Column of the probabilities holding the score.
    pub score_column: usize,
    /// Width of the input.
    pub n_features: usize,
    /// The features, in column order.
    pub features: Vec<FeatureSpec>,
}

/// Where a row's feature values come from.
pub trait FeatureSource {
    /// The field as a string, if it is one.
    fn category(&self, name: &str) -> Option<&str>;
    /// The field as a number, if it is one.
    fn number(&self, name: &str) -> Option<f64>;
}

impl FeatureSource for serde_json::Map<String, serde_json::Value> {
    fn category(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }

    fn number(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }
}

impl FeatureSource for vigie_core::Case {
    fn category(&self, name: &str) -> Option<&str> {
        Some(match name {
            "age_group" => self.age_group.as_str(),
            "sex" => self.sex.as_str(),
            "race" => self.race.as_str(),
            "ethnicity" => self.ethnicity.as_str(),
            "res_state" => self.res_state.as_str(),
            "underlying_conditions_yn" => self.underlying_conditions_yn.as_str(),
            "symptom_status" => self.symptom_status.as_str(),
            "exposure_yn" => self.exposure_yn.as_str(),
            "current_status" => self.current_status.as_str(),
            "process" => self.process.as_str(),
            "hosp_yn" => self.hosp_yn.as_str(),
            "icu_yn" => self.icu_yn.as_str(),
            "death_yn" => self.death_yn.as_str(),
            "res_county" => self.res_county.as_deref()?,
            _ => return None,
        })
    }

    fn number(&self, name: &str) -> Option<f64> {
        match name {
            "case_onset_interval" => self.case_onset_interval.map(f64::from),
            "case_positive_specimen_interval" => {
                self.case_positive_specimen_interval.map(f64::from)
            }
            _ => None,
        }
    }
}

/// The encoding of one model, with its category lookups built once.
#[derive(Debug, Clone)]
pub struct Encoder {
    width: usize,
    features: Vec<(FeatureSpec, HashMap<String, usize>)>,
}

impl Encoder {
    /// Builds the lookups; checks that every column fits the width.
    pub fn new(meta: &ModelMetadata) -> Result<Self, String> {
        let mut features = Vec::new();
        for f in &meta.features {
            let (lookup, last) = match f {
                FeatureSpec::OneHot {
                    name,
                    categories,
                    columns,
                } => {
                    if columns[1] - columns[0] != categories.len() {
                        return Err(format!(
                            "feature {name}: {} categories for columns {columns:?}",
                            categories.len()
                        ));
                    }
                    let lookup = categories
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.clone(), columns[0] + i))
                        .collect();
                    (lookup, columns[1])
                }
                FeatureSpec::Numeric {
                    column,
                    missing_indicator_column,
                    ..
                } => (HashMap::new(), (*column).max(*missing_indicator_column) + 1),
            };
            if last > meta.n_features {
                return Err(format!(
                    "feature columns go past n_features = {}",
                    meta.n_features
                ));
            }
            features.push((f.clone(), lookup));
        }
        Ok(Self {
            width: meta.n_features,
            features,
        })
    }

    /// Input width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Appends the encoded row to `out`.
    pub fn encode(&self, row: &dyn FeatureSource, out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + self.width, 0.0);
        let x = &mut out[start..];
        for (spec, lookup) in &self.features {
            match spec {
                FeatureSpec::OneHot { name, .. } => {
                    // Unknown or missing: all zeros.
                    if let Some(col) = row.category(name).and_then(|c| lookup.get(c)) {
                        x[*col] = 1.0;
                    }
                }
                FeatureSpec::Numeric {
                    name,
                    column,
                    missing_indicator_column,
                    missing_value,
                } => match row.number(name) {
                    Some(v) => x[*column] = v as f32,
                    None => {
                        x[*column] = *missing_value;
                        x[*missing_indicator_column] = 1.0;
                    }
                },
            }
        }
    }
}

/// The process-wide ONNX Runtime environment, loaded once.
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `dylib` (or `ORT_DYLIB_PATH`) once per process.
pub fn runtime(
    dylib: Option<&Path>,
) -> Result<&'static ort::environment::Environment, ScorerError> {
    let path = dylib
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"));
    RUNTIME
        .get_or_init(|| {
            ort::init_from(&path)
                .map_err(|e| e.to_string())?
                .with_name("vigie")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| ScorerError::Runtime {
            path,
            message: message.clone(),
        })
}

/// A loaded model: metadata, encoder and an ONNX Runtime session.
pub struct Model {
    /// The metadata.
    pub meta: ModelMetadata,
    encoder: Encoder,
    session: Session,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.meta.name)
            .field("version", &self.meta.version)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `dir/model.onnx` and `dir/metadata.json`.
    pub fn load(dir: &Path, dylib: Option<&Path>) -> Result<Self, ScorerError> {
        let env = runtime(dylib)?;
        let meta_path = dir.join("metadata.json");
        let bad = |path: &Path, message: String| ScorerError::Model {
            path: path.to_path_buf(),
            message,
        };
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| bad(&meta_path, e.to_string()))?;
        let meta: ModelMetadata =
            serde_json::from_str(&text).map_err(|e| bad(&meta_path, e.to_string()))?;
        let encoder = Encoder::new(&meta).map_err(|e| bad(&meta_path, e))?;
        let model_path = dir.join("model.onnx");
        let session = Session::builder(env)
            .and_then(|mut b| b.commit_from_file(&model_path))
            .map_err(|e| bad(&model_path, e.to_string()))?;
        Ok(Self {
            meta,
            encoder,
            session,
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Scores rows in one run: the probability in `score_column` per row.
    pub fn score(&mut self, rows: &[&dyn FeatureSource]) -> Result<Vec<f32>, ScorerError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let width = self.encoder.width();
        let mut x = Vec::with_capacity(rows.len() * width);
        for r in rows {
            self.encoder.encode(*r, &mut x);
        }
        let input = Tensor::from_array(([rows.len(), width], x))
            .map_err(|e| ScorerError::Inference(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.meta.input_name.as_str() => input])
            .map_err(|e| ScorerError::Inference(e.to_string()))?;
        let (shape, probs) = outputs[self.meta.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| ScorerError::Inference(e.to_string()))?;
        let classes = shape.get(1).copied().unwrap_or(1) as usize;
        if classes <= self.meta.score_column || probs.len() != rows.len() * classes {
            return Err(ScorerError::Inference(format!(
                "output {} has shape {shape:?}, expected [{}, >{}]",
                self.meta.output_name,
                rows.len(),
                self.meta.score_column
            )));
        }
        Ok(probs
            .chunks(classes)
            .map(|p| p[self.meta.score_column])
            .collect())
    }
}
