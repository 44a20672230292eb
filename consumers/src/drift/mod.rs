//! Drift of the cases and scores a model sees against the reference
//! profile it was trained with: the profile and its bins (`profile`), the
//! statistics of a window's histogram against the reference's (`stats`),
//! as Evidently defines them, and a window of cases and scores with every
//! statistic per feature (`window`), and the event-time windows of a
//! stream, closed by a watermark and judged into reports (`tracker`).

pub mod profile;
pub mod stats;
pub mod tracker;
pub mod window;

pub use profile::{
    CategoricalProfile, NumericProfile, ProfileError, ReferenceProfile, ScoreProfile,
};
pub use stats::{Ks, jensen_shannon, kolmogorov_sf, ks, psi};
pub use tracker::{Input, Tracker, TrackerState, WindowSpec};
pub use window::{FeatureStatistics, Histograms, Kind, Window};
