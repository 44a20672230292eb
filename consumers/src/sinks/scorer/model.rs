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
//!
//! [`Model::load`] checks a version before anything is scored with it: the
//! model's input and output names, types and widths against
//! `metadata.json`, then a probe batch (rows built from the metadata) that
//! must give finite scores in `[0, 1]`. A version that fails is a
//! [`ScorerError::Model`] with its [`Refusal`] reason; nothing on this path
//! panics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::{Outlet, Tensor, TensorElementType, ValueType};
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
    /// The model directory or one of its files is unusable: the version
    /// is refused.
    #[error("model {path}: {message} (refused: {reason})")]
    Model {
        /// The file at fault.
        path: PathBuf,
        /// Why, as a bounded code (the metric's label).
        reason: Refusal,
        /// What is wrong with it.
        message: String,
    },
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl ScorerError {
    /// Why the version was refused, for a [`ScorerError::Model`].
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Model { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The file at fault, for a [`ScorerError::Model`].
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Model { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Why a model version is refused: the `reason` label of
/// `vigie_scorer_model_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `model.onnx` or `metadata.json` is missing or unreadable (a copy
    /// still under way, usually).
    MissingFile,
    /// `metadata.json` does not parse (maybe still being written) or is
    /// inconsistent (columns past `n_features`, ...).
    Metadata,
    /// ONNX Runtime cannot load `model.onnx` (truncated or corrupt).
    ModelFile,
    /// The model has no input named as `metadata.json` says, or more than
    /// that one.
    InputName,
    /// The input is not a float32 `[N, n_features]` tensor with a free
    /// batch dimension.
    InputType,
    /// The input's width is not `metadata.json`'s `n_features`.
    FeatureCount,
    /// The model has no output named as `metadata.json` says.
    OutputName,
    /// The output is not a float32 tensor with a `score_column`.
    OutputType,
    /// The probe batch could not be scored.
    ProbeFailed,
    /// The probe batch gave a NaN or infinite score.
    ProbeNonFinite,
    /// The probe batch gave a score outside `[0, 1]`.
    ProbeOutOfRange,
}

impl Refusal {
    /// Every reason, for a metric initialised at 0.
    pub const ALL: [Self; 11] = [
        Self::MissingFile,
        Self::Metadata,
        Self::ModelFile,
        Self::InputName,
        Self::InputType,
        Self::FeatureCount,
        Self::OutputName,
        Self::OutputType,
        Self::ProbeFailed,
        Self::ProbeNonFinite,
        Self::ProbeOutOfRange,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingFile => "missing_file",
            Self::Metadata => "metadata",
            Self::ModelFile => "model_file",
            Self::InputName => "input_name",
            Self::InputType => "input_type",
            Self::FeatureCount => "feature_count",
            Self::OutputName => "output_name",
            Self::OutputType => "output_type",
            Self::ProbeFailed => "probe_failed",
            Self::ProbeNonFinite => "probe_non_finite",
            Self::ProbeOutOfRange => "probe_out_of_range",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// The widest input accepted: a larger `n_features` is a broken
/// `metadata.json`, not a model to allocate rows for.
const MAX_FEATURES: usize = 1 << 20;

/// The encoding of one model, with its category lookups built once.
#[derive(Debug, Clone)]
pub struct Encoder {
    width: usize,
    features: Vec<(FeatureSpec, HashMap<String, usize>)>,
}

impl Encoder {
    /// Builds the lookups; checks that every column fits the width.
    pub fn new(meta: &ModelMetadata) -> Result<Self, String> {
        if meta.n_features == 0 || meta.n_features > MAX_FEATURES {
            return Err(format!(
                "n_features = {} (expected 1 to {MAX_FEATURES})",
                meta.n_features
            ));
        }
        let mut features = Vec::new();
        for f in &meta.features {
            let (lookup, last) = match f {
                FeatureSpec::OneHot {
                    name,
                    categories,
                    columns,
                } => {
                    if columns[1].checked_sub(columns[0]) != Some(categories.len()) {
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
                } => (
                    HashMap::new(),
                    (*column).max(*missing_indicator_column).saturating_add(1),
                ),
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
    /// Loads `dir/model.onnx` and `dir/metadata.json` and checks that they
    /// fit together and score: see [`Refusal`] for what is checked.
    pub fn load(dir: &Path, dylib: Option<&Path>) -> Result<Self, ScorerError> {
        let env = runtime(dylib)?;
        let meta_path = dir.join("metadata.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            let reason = match e.kind() {
                // Not UTF-8: cut in the middle of a character, say.
                std::io::ErrorKind::InvalidData => Refusal::Metadata,
                _ => Refusal::MissingFile,
            };
            refuse(&meta_path, reason, e.to_string())
        })?;
        let meta: ModelMetadata = serde_json::from_str(&text)
            .map_err(|e| refuse(&meta_path, Refusal::Metadata, e.to_string()))?;
        let encoder = Encoder::new(&meta).map_err(|e| refuse(&meta_path, Refusal::Metadata, e))?;
        let model_path = dir.join("model.onnx");
        if let Err(e) = std::fs::metadata(&model_path) {
            return Err(refuse(&model_path, Refusal::MissingFile, e.to_string()));
        }
        let session = Session::builder(env)
            .and_then(|mut b| b.commit_from_file(&model_path))
            .map_err(|e| refuse(&model_path, Refusal::ModelFile, e.to_string()))?;
        check_signature(&session, &meta).map_err(|(r, m)| refuse(&model_path, r, m))?;
        let mut model = Self {
            meta,
            encoder,
            session,
        };
        model.probe().map_err(|(r, m)| refuse(&model_path, r, m))?;
        Ok(model)
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Scores the probe batch: rows built from the metadata (every feature
    /// missing, then each category of every one-hot feature and a few
    /// numbers in the range of weeks); each score must be finite and in
    /// `[0, 1]`. [`Model::load`] runs it; the scorer runs it again to tell
    /// a broken model from a record the model cannot score.
    pub fn probe(&mut self) -> Result<(), (Refusal, String)> {
        let n = 1 + self
            .meta
            .features
            .iter()
            .map(|f| match f {
                FeatureSpec::OneHot { categories, .. } => categories.len(),
                FeatureSpec::Numeric { .. } => PROBE_NUMBERS.len(),
            })
            .max()
            .unwrap_or(0)
            .min(MAX_PROBE_ROWS);
        let rows: Vec<ProbeRow<'_>> = (0..n)
            .map(|k| ProbeRow {
                features: &self.meta.features,
                k,
            })
            .collect();
        let rows: Vec<&dyn FeatureSource> = rows.iter().map(|r| r as &dyn FeatureSource).collect();
        // `rows` borrows the metadata: score through the other fields.
        let scores = score_rows(
            &mut self.session,
            &self.encoder,
            &self.meta.input_name,
            &self.meta.output_name,
            self.meta.score_column,
            &rows,
        )
        .map_err(|e| {
            (
                Refusal::ProbeFailed,
                format!("probe batch of {n} rows: {e}"),
            )
        })?;
        let column = format!(
            "column {} of output `{}`",
            self.meta.score_column, self.meta.output_name
        );
        if let Some((k, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err((
                Refusal::ProbeNonFinite,
                format!("probe row {k} of {n} scored {s} ({column}); scores must be finite"),
            ));
        }
        if let Some((k, s)) = scores
            .iter()
            .enumerate()
            .find(|(_, s)| !(0.0..=1.0).contains(*s))
        {
            return Err((
                Refusal::ProbeOutOfRange,
                format!("probe row {k} of {n} scored {s} ({column}); scores must be in [0, 1]"),
            ));
        }
        Ok(())
    }

    /// Scores rows in one run: the probability in `score_column` per row.
    /// A score may be NaN, infinite or outside `[0, 1]` if the model says
    /// so: the caller checks.
    pub fn score(&mut self, rows: &[&dyn FeatureSource]) -> Result<Vec<f32>, ScorerError> {
        score_rows(
            &mut self.session,
            &self.encoder,
            &self.meta.input_name,
            &self.meta.output_name,
            self.meta.score_column,
            rows,
        )
    }
}

fn refuse(path: &Path, reason: Refusal, message: String) -> ScorerError {
    ScorerError::Model {
        path: path.to_path_buf(),
        reason,
        message,
    }
}

/// Numbers the probe gives numeric features, cycled: weeks, as in the data.
const PROBE_NUMBERS: [f64; 8] = [0.0, 1.0, -1.0, 2.0, -4.0, 8.0, 16.0, 32.0];

/// At most this many probe rows, whatever the category lists.
const MAX_PROBE_ROWS: usize = 256;

/// Probe row `k`: row 0 has every feature missing; row `k > 0` has the
/// `(k - 1)`-th category of every one-hot feature (cycled) and the
/// `(k - 1)`-th of [`PROBE_NUMBERS`] for every numeric one.
struct ProbeRow<'a> {
    features: &'a [FeatureSpec],
    k: usize,
}

impl FeatureSource for ProbeRow<'_> {
    fn category(&self, name: &str) -> Option<&str> {
        let i = self.k.checked_sub(1)?;
        self.features.iter().find_map(|f| match f {
            FeatureSpec::OneHot {
                name: n,
                categories,
                ..
            } if n == name && !categories.is_empty() => {
                Some(categories[i % categories.len()].as_str())
            }
            _ => None,
        })
    }

    fn number(&self, _name: &str) -> Option<f64> {
        let i = self.k.checked_sub(1)?;
        Some(PROBE_NUMBERS[i % PROBE_NUMBERS.len()])
    }
}

/// The names of some inputs or outputs, for messages.
fn names(outlets: &[Outlet]) -> String {
    let names: Vec<String> = outlets.iter().map(|o| format!("`{}`", o.name())).collect();
    format!("[{}]", names.join(", "))
}

/// The model's input and output against the metadata.
fn check_signature(session: &Session, meta: &ModelMetadata) -> Result<(), (Refusal, String)> {
    let inputs = session.inputs();
    let Some(input) = inputs.iter().find(|i| i.name() == meta.input_name) else {
        return Err((
            Refusal::InputName,
            format!(
                "metadata.json names input `{}`; the model's inputs are {}",
                meta.input_name,
                names(inputs)
            ),
        ));
    };
    if inputs.len() > 1 {
        return Err((
            Refusal::InputName,
            format!(
                "the model's inputs are {}; the scorer feeds one, `{}`",
                names(inputs),
                meta.input_name
            ),
        ));
    }
    match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 2 && shape[0] < 0 => {
            if shape[1] >= 0 && usize::try_from(shape[1]).ok() != Some(meta.n_features) {
                return Err((
                    Refusal::FeatureCount,
                    format!(
                        "input `{}` takes {} features; metadata.json says n_features = {}",
                        meta.input_name, shape[1], meta.n_features
                    ),
                ));
            }
        }
        other => {
            return Err((
                Refusal::InputType,
                format!(
                    "input `{}` is {other}; the scorer feeds float32 [N, {}] with N free",
                    meta.input_name, meta.n_features
                ),
            ));
        }
    }
    let outputs = session.outputs();
    let Some(output) = outputs.iter().find(|o| o.name() == meta.output_name) else {
        return Err((
            Refusal::OutputName,
            format!(
                "metadata.json names output `{}`; the model's outputs are {}",
                meta.output_name,
                names(outputs)
            ),
        ));
    };
    let columns_ok = |shape: &[i64]| match shape {
        [_] => meta.score_column == 0,
        [_, c] => *c < 0 || usize::try_from(*c).is_ok_and(|c| c > meta.score_column),
        _ => false,
    };
    match output.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if columns_ok(shape) => Ok(()),
        other => Err((
            Refusal::OutputType,
            format!(
                "output `{}` is {other}; the scorer reads float32 [N, C] with score_column {} < C",
                meta.output_name, meta.score_column
            ),
        )),
    }
}

/// One run over `rows`: the probability in `score_column` per row. Every
/// mismatch is an error, never a panic.
fn score_rows(
    session: &mut Session,
    encoder: &Encoder,
    input_name: &str,
    output_name: &str,
    score_column: usize,
    rows: &[&dyn FeatureSource],
) -> Result<Vec<f32>, ScorerError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let width = encoder.width();
    let mut x = Vec::with_capacity(rows.len() * width);
    for r in rows {
        encoder.encode(*r, &mut x);
    }
    let input = Tensor::from_array(([rows.len(), width], x))
        .map_err(|e| ScorerError::Inference(e.to_string()))?;
    let outputs = session
        .run(ort::inputs![input_name => input])
        .map_err(|e| ScorerError::Inference(e.to_string()))?;
    let output = outputs.get(output_name).ok_or_else(|| {
        ScorerError::Inference(format!("the model has no output named `{output_name}`"))
    })?;
    let (shape, probs) = output
        .try_extract_tensor::<f32>()
        .map_err(|e| ScorerError::Inference(format!("output `{output_name}`: {e}")))?;
    let classes = match &shape[..] {
        [_] => 1,
        [_, c] => usize::try_from(*c).unwrap_or(0),
        _ => 0,
    };
    if classes <= score_column || probs.len() != rows.len() * classes {
        return Err(ScorerError::Inference(format!(
            "output {output_name} has shape {shape:?}, expected [{}, >{score_column}]",
            rows.len(),
        )));
    }
    Ok(probs.chunks(classes).map(|p| p[score_column]).collect())
}
