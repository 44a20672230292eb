//! `health.drift_report`: the drift of one window of a model's inputs and
//! scores against its reference profile.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Payload;
use crate::wire;

/// The drift of one window against a model's reference profile
/// (`health.drift_report` v1): every statistic per feature, the thresholds
/// they were judged by, and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftReport {
    /// Model name, as in its metadata.
    #[serde(deserialize_with = "wire::non_empty")]
    pub model_name: String,
    /// Model version whose reference profile the window is compared with.
    #[serde(deserialize_with = "wire::non_empty")]
    pub model_version: String,
    /// Start of the window (inclusive), in event time.
    #[serde(with = "wire::timestamp")]
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    #[serde(with = "wire::timestamp")]
    pub window_end: DateTime<Utc>,
    /// Cases counted in the window.
    pub cases: u64,
    /// Scores counted in the window.
    pub scores: u64,
    /// The worst verdict of the window's features, or `insufficient` when
    /// it holds fewer cases than `thresholds.min_cases`.
    pub status: DriftStatus,
    /// What the verdicts were judged by.
    pub thresholds: DriftThresholds,
    /// One entry per feature of the profile, then the score.
    pub features: Vec<FeatureDrift>,
}

/// The thresholds of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftThresholds {
    /// A population stability index from this value on is `warn`.
    pub psi_warn: f64,
    /// A population stability index from this value on is `alert`.
    pub psi_alert: f64,
    /// A feature with fewer values than this is `insufficient`.
    pub min_cases: u64,
}

/// A verdict, from the best to the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// Too few values to judge.
    Insufficient,
    /// Under the warn threshold.
    Ok,
    /// From the warn threshold on.
    Warn,
    /// From the alert threshold on.
    Alert,
}

impl DriftStatus {
    /// The status as the schema spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insufficient => "insufficient",
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Alert => "alert",
        }
    }
}

/// What a statistic compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A categorical feature of the cases.
    Categorical,
    /// A numeric feature of the cases.
    Numeric,
    /// The model's score.
    Score,
}

/// The statistics of one feature (or of the score) in one window; a
/// statistic is absent when the window holds no value to compute it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDrift {
    /// The feature's name; `score` for the score.
    #[serde(deserialize_with = "wire::non_empty")]
    pub feature: String,
    /// Its kind.
    pub kind: FeatureKind,
    /// Values in the window.
    pub n: u64,
    /// Population stability index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    /// Jensen-Shannon distance (natural logarithm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jensen_shannon: Option<f64>,
    /// Kolmogorov-Smirnov statistic (numeric features and the score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks_statistic: Option<f64>,
    /// Its asymptotic p-value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks_p_value: Option<f64>,
    /// The feature's verdict.
    pub status: DriftStatus,
}

impl Payload for DriftReport {
    const SCHEMA: &'static str = "health.drift_report";
    const VERSION: u32 = 1;

    /// One report per model version and window: a replayed window gets
    /// the same id.
    fn natural_key(&self) -> Vec<String> {
        vec![
            self.model_name.clone(),
            self.model_version.clone(),
            self.window_start.timestamp_micros().to_string(),
            self.window_end.timestamp_micros().to_string(),
        ]
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        self.window_end
    }

    /// By model, so that a model's reports stay in order.
    fn partition_key(&self) -> String {
        self.model_name.clone()
    }
}
