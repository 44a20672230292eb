//! The reference profile a model's `metadata.json` carries
//! (`reference_profile`, written by `ml/train.py`), and the binning of
//! current values into the same bins.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

/// The category of a case whose field is absent.
pub const MISSING: &str = "__missing__";
/// The category of a value the reference never saw.
pub const UNKNOWN: &str = "__unknown__";

/// Counts as the statistics take them.
pub(crate) fn histogram<'a>(counts: impl IntoIterator<Item = &'a u64>) -> Vec<f64> {
    counts.into_iter().map(|&c| c as f64).collect()
}

/// `reference_profile` of a model's `metadata.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceProfile {
    /// Per categorical feature.
    pub categorical: BTreeMap<String, CategoricalProfile>,
    /// Per numeric feature.
    pub numeric: BTreeMap<String, NumericProfile>,
    /// The score's histogram.
    pub score: ScoreProfile,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The metadata file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a metadata document with a valid reference profile.
    #[error("{path}: no valid reference_profile: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

impl ReferenceProfile {
    /// The `reference_profile` of the model metadata file `path`, checked.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or holds no valid profile.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_metadata(&text).map_err(|reason| ProfileError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// The `reference_profile` of the metadata document `json`, checked.
    ///
    /// # Errors
    ///
    /// What is wrong with it, in words.
    pub fn from_metadata(json: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Metadata {
            reference_profile: ReferenceProfile,
        }
        let m: Metadata = serde_json::from_str(json).map_err(|e| e.to_string())?;
        m.reference_profile.check()?;
        Ok(m.reference_profile)
    }

    fn check(&self) -> Result<(), String> {
        for (name, p) in &self.categorical {
            for key in [MISSING, UNKNOWN] {
                if !p.counts.contains_key(key) {
                    return Err(format!("categorical feature {name} has no {key} count"));
                }
            }
        }
        for (name, p) in &self.numeric {
            if p.edges.len() != p.counts.len() + 1 {
                return Err(format!(
                    "numeric feature {name}: {} edges for {} bins",
                    p.edges.len(),
                    p.counts.len()
                ));
            }
            if !p.edges.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!("numeric feature {name}: edges not increasing"));
            }
        }
        if self.score.bins == 0 || self.score.counts.len() != self.score.bins {
            return Err(format!(
                "score: {} counts for {} bins",
                self.score.counts.len(),
                self.score.bins
            ));
        }
        Ok(())
    }
}

/// A categorical feature's reference counts, by category (with
/// [`MISSING`] and [`UNKNOWN`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "CategoricalCounts")]
pub struct CategoricalProfile {
    /// Count per category.
    pub counts: BTreeMap<String, u64>,
    /// Each category's bin: its rank in `counts`.
    index: HashMap<String, usize>,
}

/// What the metadata holds of a categorical feature.
#[derive(Deserialize)]
struct CategoricalCounts {
    counts: BTreeMap<String, u64>,
}

impl From<CategoricalCounts> for CategoricalProfile {
    fn from(c: CategoricalCounts) -> Self {
        Self {
            index: c.counts.keys().cloned().zip(0..).collect(),
            counts: c.counts,
        }
    }
}

impl CategoricalProfile {
    /// The bin of `value` (`None`: the field is absent), in the order of
    /// [`Self::reference`].
    #[must_use]
    pub fn bin(&self, value: Option<&str>) -> usize {
        let key = value.unwrap_or(MISSING);
        *self
            .index
            .get(key)
            .or_else(|| self.index.get(UNKNOWN))
            .expect("checked: the profile has the missing and unknown categories")
    }

    /// The reference histogram, categories in their sorted order.
    #[must_use]
    pub fn reference(&self) -> Vec<f64> {
        histogram(self.counts.values())
    }
}

/// A numeric feature's reference histogram: bins `[edges[i], edges[i+1])`,
/// an underflow below `edges[0]`, an overflow from the last edge, and the
/// absent values apart.
#[derive(Debug, Clone, Deserialize)]
pub struct NumericProfile {
    /// The bins' edges.
    pub edges: Vec<f64>,
    /// Count per bin.
    pub counts: Vec<u64>,
    /// Values below the first edge.
    pub underflow: u64,
    /// Values from the last edge on.
    pub overflow: u64,
    /// Absent values.
    pub missing: u64,
}

impl NumericProfile {
    /// The bin of a present value in the order of [`Self::reference`]:
    /// 0 the underflow, then the bins, then the overflow.
    #[must_use]
    pub fn bin(&self, value: f64) -> usize {
        // Edges at or below the value: 0 is the underflow, k the bin
        // [edges[k-1], edges[k]), all of them the overflow.
        self.edges.partition_point(|&e| e <= value)
    }

    /// The reference histogram of the present values: underflow, bins,
    /// overflow.
    #[must_use]
    pub fn reference(&self) -> Vec<f64> {
        histogram(
            std::iter::once(&self.underflow)
                .chain(&self.counts)
                .chain(std::iter::once(&self.overflow)),
        )
    }
}

/// The score's reference histogram: `bins` equal bins of [0, 1], a score
/// in bin `min(floor(score · bins), bins − 1)`.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoreProfile {
    /// Number of bins.
    pub bins: usize,
    /// Count per bin.
    pub counts: Vec<u64>,
}

impl ScoreProfile {
    /// The bin of `score` (clamped to [0, 1]).
    #[must_use]
    pub fn bin(&self, score: f64) -> usize {
        let b = (score.clamp(0.0, 1.0) * self.bins as f64).floor() as usize;
        b.min(self.bins - 1)
    }

    /// The reference histogram.
    #[must_use]
    pub fn reference(&self) -> Vec<f64> {
        histogram(&self.counts)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The profile of the shipped model.
    pub(crate) fn shipped() -> ReferenceProfile {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/hosp_risk/1.0.0/metadata.json");
        ReferenceProfile::load(&path).unwrap()
    }

    #[test]
    fn the_shipped_models_profile_loads() {
        let p = shipped();
        assert!(p.categorical.contains_key("age_group"));
        assert!(p.numeric.contains_key("case_onset_interval"));
        assert_eq!(p.score.bins, 20);
    }

    #[test]
    fn categories_absent_and_unseen_have_their_bins() {
        let p = &shipped().categorical["age_group"];
        let keys: Vec<&String> = p.counts.keys().collect();
        assert_eq!(keys[p.bin(Some("65+ years"))], "65+ years");
        assert_eq!(keys[p.bin(None)], MISSING);
        assert_eq!(keys[p.bin(Some("120+ years"))], UNKNOWN);
    }

    #[test]
    fn numeric_bins_follow_the_edges() {
        let p = NumericProfile {
            edges: vec![-8.0, -4.0, 0.0, 4.0],
            counts: vec![1, 2, 3],
            underflow: 4,
            overflow: 5,
            missing: 6,
        };
        assert_eq!(p.bin(-9.0), 0);
        assert_eq!(p.bin(-8.0), 1);
        assert_eq!(p.bin(-4.5), 1);
        assert_eq!(p.bin(-4.0), 2);
        assert_eq!(p.bin(3.99), 3);
        assert_eq!(p.bin(4.0), 4);
        assert_eq!(p.bin(1e9), 4);
        assert_eq!(p.reference(), vec![4.0, 1.0, 2.0, 3.0, 5.0]);
    }

    #[test]
    fn a_score_of_one_is_in_the_last_bin() {
        let p = shipped().score;
        assert_eq!(p.bin(0.0), 0);
        assert_eq!(p.bin(0.049), 0);
        assert_eq!(p.bin(0.05), 1);
        assert_eq!(p.bin(1.0), 19);
        assert_eq!(p.bin(1.5), 19);
    }

    #[test]
    fn a_broken_profile_is_refused_with_its_reason() {
        let json = r#"{"reference_profile": {"categorical": {"sex": {"counts": {"Male": 3}}},
            "numeric": {}, "score": {"bins": 2, "counts": [1, 1]}}}"#;
        let e = ReferenceProfile::from_metadata(json).unwrap_err();
        assert!(e.contains("sex") && e.contains(MISSING), "{e}");
        let json = r#"{"reference_profile": {"categorical": {},
            "numeric": {"x": {"edges": [0, 1], "counts": [1, 2], "underflow": 0, "overflow": 0, "missing": 0}},
            "score": {"bins": 2, "counts": [1, 1]}}}"#;
        let e = ReferenceProfile::from_metadata(json).unwrap_err();
        assert!(e.contains("2 edges for 2 bins"), "{e}");
    }
}
