//! What a running simulator has served so far: how much data is available
//! now, what was edited, how many requests each endpoint got and how many
//! faults of each kind were injected. Tests compare what a pipeline ingested
//! with this.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The state of a running simulator (`GET /_sim/manifest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Seed of every generator.
    pub seed: u64,
    /// The CDC case rows.
    pub cases: CasesManifest,
    /// The WHO daily CSV.
    pub who: WhoManifest,
    /// The Disease Outbreak News site.
    pub news: NewsManifest,
    /// Requests received per endpoint name (`cases`, `who`,
    /// `news_listing`, `news_article`, `robots_txt`, `not_found`), every
    /// name present. The `/_sim` routes are not counted.
    pub requests: BTreeMap<String, u64>,
    /// Faults injected per kind name (see
    /// [`FaultKind::NAMES`](super::FaultKind::NAMES)), every kind present.
    pub faults_injected: BTreeMap<String, u64>,
}

/// The case rows in a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasesManifest {
    /// Rows visible now: indices `0..rows_available`.
    pub rows_available: u64,
    /// Rows the data set grows to.
    pub rows_total: u64,
}

/// The WHO CSV in a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoManifest {
    /// Days in the file now.
    pub days_available: u32,
    /// Rows in the file now (days × countries), header excluded.
    pub rows_available: u64,
    /// Countries, i.e. rows per day.
    pub countries: usize,
    /// Date of the first day, `YYYY-MM-DD`.
    pub first_date: String,
}

/// The news site in a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsManifest {
    /// Articles published: indices `0..articles`, 0 the newest.
    pub articles: u64,
    /// Current revision of each edited article, by index; articles not
    /// listed are at revision 0.
    pub revisions: BTreeMap<u64, u32>,
    /// Whether the pages use the changed layout.
    pub layout_changed: bool,
}

/// One request received by a data endpoint, `robots.txt` or an unknown
/// path (`GET /_sim/requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Path and query string as received, e.g. `/resource/n8mc-b4w4.json?$limit=10`.
    pub path_and_query: String,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// When the request arrived, since the simulator started.
    pub at: Duration,
    /// Status of the response (200 for the `reset` and `truncated` faults,
    /// whose status line may not reach the client).
    pub status: u16,
    /// Name of the fault injected into the response, if any.
    pub fault: Option<String>,
}
