//! `health.case_score`: the score a model gave one case.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Payload;
use crate::wire;

/// The score a model gave one case (`health.case_score` v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseScore {
    /// Envelope id of the scored case.
    #[serde(deserialize_with = "crate::envelope::uuid_text")]
    pub case_event_id: uuid::Uuid,
    /// Model name, as in its metadata.
    #[serde(deserialize_with = "wire::non_empty")]
    pub model_name: String,
    /// Model version, as in its metadata.
    #[serde(deserialize_with = "wire::non_empty")]
    pub model_version: String,
    /// Probability of the model's target, in `[0, 1]`.
    #[serde(deserialize_with = "probability")]
    pub score: f64,
    /// When the score was computed.
    #[serde(with = "wire::timestamp")]
    pub scored_at: DateTime<Utc>,
}

fn probability<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let p = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Float(p),
            &"a probability between 0 and 1",
        ))
    }
}

impl Payload for CaseScore {
    const SCHEMA: &'static str = "health.case_score";
    const VERSION: u32 = 1;

    /// Same case, same model version: same score id, so a replay converges.
    fn natural_key(&self) -> Vec<String> {
        vec![
            self.case_event_id.to_string(),
            self.model_name.clone(),
            self.model_version.clone(),
        ]
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        self.scored_at
    }

    /// By case. The scorer itself keys each score like its case (by state),
    /// so a case and its score share a partition number.
    fn partition_key(&self) -> String {
        self.case_event_id.to_string()
    }
}
