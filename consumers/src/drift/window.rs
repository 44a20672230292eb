//! One window of cases and scores binned as the reference profile bins
//! them, and its statistics against the reference.

use serde::{Deserialize, Serialize};

use crate::drift::profile::{ReferenceProfile, histogram};
use crate::drift::stats::{self, Ks};
use crate::sinks::scorer::FeatureSource;

/// What a window holds, feature by feature, in the bins of the profile it
/// was made for (which every method takes): counts only, so that a
/// window is stored and restored as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Per categorical feature of the profile (its order): count per bin.
    categorical: Vec<Vec<u64>>,
    /// Per numeric feature: count per bin of the present values
    /// (underflow, bins, overflow), and the absent ones.
    numeric: Vec<(Vec<u64>, u64)>,
    /// Count per score bin.
    score: Vec<u64>,
    cases: u64,
    scores: u64,
}

/// Which reference a statistic compares against: a categorical or a
/// numeric feature of the cases, or the score.
pub use vigie_core::health::FeatureKind as Kind;

/// The statistics of one feature (or of the score) in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStatistics {
    /// The feature's name; `score` for the score.
    pub feature: String,
    /// Its kind.
    pub kind: Kind,
    /// Values in the window.
    pub n: u64,
    /// Population stability index over every bin (a numeric feature's
    /// absent values in a bin of their own); `None` for an empty window.
    pub psi: Option<f64>,
    /// Jensen-Shannon distance over the same bins.
    pub jensen_shannon: Option<f64>,
    /// Kolmogorov-Smirnov over the ordered bins of the present values, for
    /// a numeric feature and the score.
    pub ks: Option<Ks>,
}

impl From<&Histograms> for FeatureStatistics {
    /// Every statistic of `h`: PSI and Jensen-Shannon over all its bins,
    /// KS over its ordered ones (none for a categorical feature).
    fn from(h: &Histograms) -> Self {
        let ordered = |v: &[f64]| v[..h.ordered].to_vec();
        Self {
            feature: h.feature.clone(),
            kind: h.kind,
            n: h.n,
            psi: stats::psi(&h.reference, &h.current),
            jensen_shannon: stats::jensen_shannon(&h.reference, &h.current),
            ks: (h.kind != Kind::Categorical)
                .then(|| stats::ks(&ordered(&h.reference), &ordered(&h.current)))
                .flatten(),
        }
    }
}

/// One feature's (or the score's) histograms in a window: the reference's
/// and the window's counts over the same bins, what every statistic is
/// computed from. The input of the comparison with Evidently
/// (`ml/drift_evidently.py`, docs/drift.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histograms {
    /// The feature's name; `score` for the score.
    pub feature: String,
    /// Its kind.
    pub kind: Kind,
    /// Values in the window (cases, or scores).
    pub n: u64,
    /// Each bin's name: a category; `[a, b)`, `< a`, `>= b` or `absent`
    /// for a numeric feature; `[a, b)` for the score.
    pub labels: Vec<String>,
    /// The reference's count per bin.
    pub reference: Vec<f64>,
    /// The window's count per bin.
    pub current: Vec<f64>,
    /// How many leading bins are ordered values, which KS runs over: a
    /// numeric feature's present values (its last bin holds the absent
    /// ones), every score bin; 0 for a categorical feature.
    pub ordered: usize,
}

impl Window {
    /// An empty window over the bins of `profile`.
    #[must_use]
    pub fn new(profile: &ReferenceProfile) -> Self {
        Self {
            categorical: profile
                .categorical
                .values()
                .map(|p| vec![0; p.counts.len()])
                .collect(),
            numeric: profile
                .numeric
                .values()
                .map(|p| (vec![0; p.counts.len() + 2], 0))
                .collect(),
            score: vec![0; profile.score.bins],
            cases: 0,
            scores: 0,
        }
    }

    /// Whether the window has the bins of `profile` (a stored window of
    /// another model version has not).
    #[must_use]
    pub fn fits(&self, profile: &ReferenceProfile) -> bool {
        let empty = Self::new(profile);
        let shape = |w: &Self| {
            (
                w.categorical.iter().map(Vec::len).collect::<Vec<_>>(),
                w.numeric.iter().map(|(c, _)| c.len()).collect::<Vec<_>>(),
                w.score.len(),
            )
        };
        shape(self) == shape(&empty)
    }

    /// Counts a case's features.
    pub fn add_case(&mut self, profile: &ReferenceProfile, case: &(impl FeatureSource + ?Sized)) {
        for ((name, p), counts) in profile.categorical.iter().zip(&mut self.categorical) {
            counts[p.bin(case.category(name))] += 1;
        }
        for ((name, p), (counts, missing)) in profile.numeric.iter().zip(&mut self.numeric) {
            match case.number(name) {
                Some(v) => counts[p.bin(v)] += 1,
                None => *missing += 1,
            }
        }
        self.cases += 1;
    }

    /// Counts a score.
    pub fn add_score(&mut self, profile: &ReferenceProfile, score: f64) {
        self.score[profile.score.bin(score)] += 1;
        self.scores += 1;
    }

    /// Cases counted.
    #[must_use]
    pub fn cases(&self) -> u64 {
        self.cases
    }

    /// Scores counted.
    #[must_use]
    pub fn scores(&self) -> u64 {
        self.scores
    }

    /// Every feature's histograms and the score's: the categorical
    /// features, then the numeric ones, in the profile's order, then the
    /// score.
    #[must_use]
    pub fn histograms(&self, profile: &ReferenceProfile) -> Vec<Histograms> {
        let mut out = Vec::new();
        for ((name, p), counts) in profile.categorical.iter().zip(&self.categorical) {
            out.push(Histograms {
                feature: name.clone(),
                kind: Kind::Categorical,
                n: self.cases,
                labels: p.counts.keys().cloned().collect(),
                reference: p.reference(),
                current: histogram(counts),
                ordered: 0,
            });
        }
        for ((name, p), (counts, missing)) in profile.numeric.iter().zip(&self.numeric) {
            // The present values' bins in order, then the absent ones.
            let (mut reference, mut current) = (p.reference(), histogram(counts));
            reference.push(p.missing as f64);
            current.push(*missing as f64);
            let edges = &p.edges;
            let mut labels = vec![format!("< {}", edges[0])];
            labels.extend(edges.windows(2).map(|e| format!("[{}, {})", e[0], e[1])));
            labels.push(format!(">= {}", edges[edges.len() - 1]));
            labels.push("absent".to_owned());
            out.push(Histograms {
                feature: name.clone(),
                kind: Kind::Numeric,
                n: self.cases,
                ordered: labels.len() - 1,
                labels,
                reference,
                current,
            });
        }
        let bins = profile.score.bins;
        out.push(Histograms {
            feature: "score".to_owned(),
            kind: Kind::Score,
            n: self.scores,
            labels: (0..bins)
                .map(|b| {
                    format!(
                        "[{}, {})",
                        b as f64 / bins as f64,
                        (b + 1) as f64 / bins as f64
                    )
                })
                .collect(),
            reference: profile.score.reference(),
            current: histogram(&self.score),
            ordered: bins,
        });
        out
    }

    /// Every statistic of the window, in the order of [`Self::histograms`]:
    /// PSI and Jensen-Shannon over every bin (a numeric feature's absent
    /// values in a bin of their own), KS over the present values of a
    /// numeric feature and over the scores.
    #[must_use]
    pub fn statistics(&self, profile: &ReferenceProfile) -> Vec<FeatureStatistics> {
        self.histograms(profile)
            .iter()
            .map(FeatureStatistics::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};

    use super::*;
    use crate::drift::profile::tests::shipped;

    /// The statistics of `n` cases of the simulator with `drift`.
    fn window(profile: &ReferenceProfile, drift: Option<Drift>, n: u64) -> Vec<FeatureStatistics> {
        let g = CaseGenerator::new(CaseGenConfig {
            seed: 11,
            drift,
            ..CaseGenConfig::default()
        })
        .unwrap();
        let mut w = Window::new(profile);
        for case in g.rows(0..n) {
            w.add_case(profile, &case);
        }
        assert_eq!(w.cases(), n);
        w.statistics(profile)
    }

    fn psi_of(stats: &[FeatureStatistics], feature: &str) -> f64 {
        stats
            .iter()
            .find(|s| s.feature == feature)
            .and_then(|s| s.psi)
            .unwrap()
    }

    /// The simulator's stable stream against the profile trained on it,
    /// and the same stream with its population older
    /// (`Drift::AgeShiftOlder`). The figures of docs/drift.md: `cargo test
    /// -p vigie-consumers --lib drift::window -- --nocapture`.
    #[test]
    fn a_stable_stream_stays_near_zero_and_an_older_one_drifts_in_age() {
        let p = shipped();
        for n in [1_000, 5_000, 20_000] {
            let stable = window(&p, None, n);
            let older = window(&p, Some(Drift::AgeShiftOlder { from_index: 0 }), n);
            for (s, o) in stable.iter().zip(&older) {
                eprintln!(
                    "{n:>6} {:<25} psi {:.5} (older {:.5})  js {:.5}  ks p {}",
                    s.feature,
                    s.psi.unwrap_or(f64::NAN),
                    o.psi.unwrap_or(f64::NAN),
                    s.jensen_shannon.unwrap_or(f64::NAN),
                    s.ks.map_or("-".to_owned(), |k| format!("{:.4}", k.p_value)),
                );
            }
            if n < 5_000 {
                continue;
            }
            for s in stable.iter().filter(|s| s.kind != Kind::Score) {
                assert!(s.psi.unwrap() < 0.02, "{n} stable {s:?}");
                assert!(s.jensen_shannon.unwrap() < 0.05, "{n} stable {s:?}");
                if let Some(ks) = s.ks {
                    assert!(ks.p_value > 0.05, "{n} stable {s:?}");
                }
            }
            assert!(psi_of(&older, "age_group") > 0.1, "{n} {older:?}");
            for f in ["sex", "race", "res_state", "ethnicity"] {
                assert!(psi_of(&older, f) < 0.02, "{n} {f}");
            }
        }
    }

    #[test]
    fn a_window_without_scores_has_no_score_statistic_and_scores_are_binned() {
        let p = shipped();
        let mut w = Window::new(&p);
        let score = |w: &Window| w.statistics(&p).pop().unwrap();
        let empty = score(&w);
        assert_eq!((empty.feature.as_str(), empty.n), ("score", 0));
        assert_eq!(
            (empty.psi, empty.jensen_shannon, empty.ks),
            (None, None, None)
        );
        // Every score in the top bin, which the reference holds none of.
        for _ in 0..100 {
            w.add_score(&p, 0.99);
        }
        let s = score(&w);
        assert_eq!((s.n, w.scores()), (100, 100));
        assert!(
            s.psi.unwrap() > 1.0 && s.ks.unwrap().statistic > 0.99,
            "{s:?}"
        );
    }

    #[test]
    fn absent_and_unseen_values_have_their_bins() {
        let p = shipped();
        let mut w = Window::new(&p);
        let mut case = serde_json::Map::new();
        case.insert("age_group".into(), "120+ years".into());
        w.add_case(&p, &case);
        let (age, onset) = {
            let s = w.statistics(&p);
            (
                s.iter().find(|s| s.feature == "age_group").unwrap().clone(),
                s.iter()
                    .find(|s| s.feature == "case_onset_interval")
                    .unwrap()
                    .clone(),
            )
        };
        // One unknown age and one absent onset: every statistic defined.
        assert_eq!(age.n, 1);
        assert!(age.psi.unwrap() > 0.0);
        assert!(onset.psi.unwrap() > 0.0);
        // No present onset: no KS.
        assert_eq!(onset.ks, None);
    }
}
