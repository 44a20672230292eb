//! `health.outbreak_news`: one WHO Disease Outbreak News article.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::start_of_day;
use super::text::{ContentHash, HttpUrl};
use crate::envelope::Payload;
use crate::wire;

/// One WHO Disease Outbreak News article (`health.outbreak_news` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutbreakNews {
    /// Canonical address of the article; the natural key.
    pub url: HttpUrl,
    /// Headline.
    #[serde(deserialize_with = "wire::non_empty")]
    pub title: String,
    /// Publication date.
    #[serde(with = "wire::date")]
    pub published_on: NaiveDate,
    /// Disease or pathogen.
    #[serde(deserialize_with = "wire::non_empty")]
    pub disease: String,
    /// Countries, territories or areas concerned.
    #[serde(deserialize_with = "wire::non_empty_strings")]
    pub countries: Vec<String>,
    /// Situation summary.
    pub summary: String,
    /// SHA-256 of the normalised article text, to detect revisions.
    pub content_hash: ContentHash,
}

impl Payload for OutbreakNews {
    const SCHEMA: &'static str = "health.outbreak_news";
    const VERSION: u32 = 1;

    fn natural_key(&self) -> Vec<String> {
        vec![self.url.to_string()]
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        start_of_day(self.published_on)
    }

    /// Per article, so that revisions of one article stay in order.
    fn partition_key(&self) -> String {
        self.url.to_string()
    }
}
