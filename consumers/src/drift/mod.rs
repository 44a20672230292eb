//! Drift of the cases and scores a model sees against the reference
//! profile it was trained with: the profile and its bins (`profile`), the
//! statistics of a window's histogram against the reference's (`stats`),
//! as Evidently defines them, and a window of cases and scores with every
//! statistic per feature (`window`).

pub mod profile;
pub mod stats;
pub mod window;

pub use profile::{
    CategoricalProfile, NumericProfile, ProfileError, ReferenceProfile, ScoreProfile,
};
pub use stats::{Ks, jensen_shannon, kolmogorov_sf, ks, psi};
pub use window::{FeatureStatistics, Kind, Window};
