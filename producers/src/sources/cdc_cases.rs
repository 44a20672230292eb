//! `cdc-cases`: the CDC "COVID-19 Case Surveillance Public Use Data with
//! Geography" data set through its Socrata SODA 2.1 API
//! (`/resource/n8mc-b4w4.json`): JSON array pages, every value a string,
//! null fields left out.
//!
//! Options (`[producers.sources.cdc-cases.options]`):
//! - `pagination`: `watermark` (default: `$where=:updated_at >= 'W'`, with
//!   the rows already taken at `W` skipped by `$offset`, so a re-published
//!   row comes again) or `offset` (`$order=:id` and `$offset`);
//! - `page_size`: rows per request (default 50000, SODA's maximum);
//! - `app_token_env`: the environment variable holding an `X-App-Token`.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::str::FromStr;

use chrono::Utc;
use serde::Deserialize;
use serde_json::value::RawValue;
use vigie_core::health::{Case, InvalidValue};

use super::outgoing;
use crate::checkpoint::Checkpoint;
use crate::source::{Poll, PollContext, Reject, Source, SourceConfig, SourceError, SourceSpec};

/// Registry entry.
pub const SPEC: SourceSpec = SourceSpec {
    name: NAME,
    about: "CDC case rows from a Socrata SODA endpoint",
    build,
};

const NAME: &str = "cdc-cases";

/// How pages follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pagination {
    /// `:updated_at` watermark plus the rows taken at it.
    Watermark,
    /// `$offset` over `$order=:id`.
    Offset,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    pagination: Pagination,
    page_size: u32,
    app_token_env: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pagination: Pagination::Watermark,
            page_size: 50_000,
            app_token_env: None,
        }
    }
}

struct CdcCases {
    url: String,
    options: Options,
    app_token: Option<String>,
    /// Row ids of the last pages: an upstream whose pages shift (rows
    /// inserted or re-published while paging) serves some rows twice.
    recent: RecentIds,
}

/// A bounded set of the most recent row ids.
#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

fn build(config: &SourceConfig) -> Result<Box<dyn Source>, SourceError> {
    let options: Options = config.options(NAME)?;
    if !(1..=50_000).contains(&options.page_size) {
        return Err(SourceError::Config(format!(
            "producers.sources.{NAME}.options.page_size: {} is not between 1 and 50000",
            options.page_size
        )));
    }
    let app_token = match &options.app_token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            SourceError::Config(format!(
                "producers.sources.{NAME}.options.app_token_env: the variable {var} is not set"
            ))
        })?),
        None => None,
    };
    Ok(Box::new(CdcCases {
        url: config.url.clone(),
        recent: RecentIds {
            capacity: 2 * options.page_size as usize,
            ..RecentIds::default()
        },
        options,
        app_token,
    }))
}

impl CdcCases {
    fn page_url(&self, at: &Checkpoint) -> String {
        let limit = self.options.page_size;
        match (self.options.pagination, &at.watermark) {
            (Pagination::Offset, _) => format!(
                "{}?$select=:*,*&$order=:id&$limit={limit}&$offset={}",
                self.url, at.position
            ),
            (Pagination::Watermark, None) => format!(
                "{}?$select=:*,*&$order=:updated_at&$limit={limit}&$offset={}",
                self.url, at.position
            ),
            (Pagination::Watermark, Some(w)) => format!(
                "{}?$select=:*,*&$order=:updated_at&$where=:updated_at%20%3E%3D%20%27{w}%27&$limit={limit}&$offset={}",
                self.url, at.position
            ),
        }
    }
}

#[async_trait::async_trait]
impl Source for CdcCases {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn poll(&mut self, at: &Checkpoint, cx: &PollContext<'_>) -> Result<Poll, SourceError> {
        let url = self.page_url(at);
        let headers: Vec<(&str, &str)> = match &self.app_token {
            Some(t) => vec![("X-App-Token", t.as_str())],
            None => vec![],
        };
        let fetched = cx.http.get(&url, &headers, cx.shutdown).await?;
        let page = parse_page(&fetched.body, &url)?;
        let mut poll = Poll {
            // A shifted page may hold more than the limit.
            more: page.rows.len() as u64 >= u64::from(self.options.page_size),
            next: at.clone(),
            ..Poll::default()
        };
        poll.events.reserve(page.rows.len());
        let now = Utc::now();
        for row in page.rows {
            // Served again: older than the watermark, or seen a page ago.
            let behind = matches!(
                (&row.updated_at, &at.watermark),
                (Some(ts), Some(w)) if ts.as_ref() < w.as_str()
            );
            let repeated = match &row.case {
                Ok(case) => !self.recent.insert(case.row_id.as_str()),
                Err(_) => false,
            };
            if behind || repeated {
                cx.metrics.error(NAME, "repeated_row");
                continue;
            }
            if let Some(ts) = row.updated_at {
                if poll.next.watermark.as_deref() == Some(&*ts) {
                    poll.next.position += 1;
                } else {
                    poll.next.watermark = Some(ts.into_owned());
                    poll.next.position = 1;
                }
            } else if self.options.pagination == Pagination::Watermark {
                poll.next.position += 1;
            }
            match row.case {
                Ok(case) => poll.events.push(outgoing(NAME, case, now)),
                Err((reason, error)) => poll.rejects.push(Reject {
                    raw: row.raw.to_vec(),
                    reason,
                    error,
                    url: url.clone(),
                }),
            }
        }
        if self.options.pagination == Pagination::Offset {
            poll.next.watermark = None;
            poll.next.position = at.position + page.len;
        }
        Ok(poll)
    }
}

/// A page, each row mapped or refused.
pub struct Page<'a> {
    /// Rows in order.
    pub rows: Vec<Row<'a>>,
    len: u64,
}

/// One row of a page.
pub struct Row<'a> {
    /// The row's JSON, as served.
    pub raw: &'a [u8],
    /// Its `:updated_at`, when present.
    pub updated_at: Option<Cow<'a, str>>,
    /// The typed row, or why it does not map (reason code, message).
    pub case: Result<Case, (&'static str, String)>,
}

/// Parses a SODA page. A body that is not a JSON array is an error for the
/// whole page; a row that does not map is refused alone.
pub fn parse_page<'a>(body: &'a [u8], url: &str) -> Result<Page<'a>, SourceError> {
    let raws: Vec<&'a RawValue> =
        serde_json::from_slice(body).map_err(|e| SourceError::Format {
            url: url.to_owned(),
            error: format!("not a SODA page (a JSON array of rows): {e}"),
        })?;
    let rows: Vec<Row<'a>> = raws
        .into_iter()
        .map(|raw| {
            let bytes: &'a [u8] = raw.get().as_bytes();
            match serde_json::from_slice::<SodaRow<'a>>(bytes) {
                Ok(mut r) => Row {
                    raw: bytes,
                    updated_at: r.updated_at.take(),
                    case: r.into_case(),
                },
                Err(e) => Row {
                    raw: bytes,
                    updated_at: serde_json::from_slice::<Ts<'a>>(bytes)
                        .ok()
                        .and_then(|t| t.updated_at),
                    case: Err(("bad_row", format!("row is not a SODA case row: {e}"))),
                },
            }
        })
        .collect();
    let len = rows.len() as u64;
    Ok(Page { rows, len })
}

/// Just the watermark of a row that does not otherwise parse.
#[derive(Deserialize)]
struct Ts<'a> {
    #[serde(rename = ":updated_at", borrow)]
    updated_at: Option<Cow<'a, str>>,
}

/// A row as SODA serves it: every value a string, nulls left out, system
/// fields (`:id`, `:updated_at`, ...) when `$select=:*,*` asks for them.
/// Other fields are ignored: the data set may gain columns.
#[derive(Deserialize)]
struct SodaRow<'a> {
    #[serde(rename = ":id", borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = ":updated_at", borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    case_month: Option<Cow<'a, str>>,
    #[serde(borrow)]
    res_state: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state_fips_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    res_county: Option<Cow<'a, str>>,
    #[serde(borrow)]
    county_fips_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    age_group: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sex: Option<Cow<'a, str>>,
    #[serde(borrow)]
    race: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ethnicity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    case_positive_specimen_interval: Option<Cow<'a, str>>,
    #[serde(borrow)]
    case_onset_interval: Option<Cow<'a, str>>,
    #[serde(borrow)]
    process: Option<Cow<'a, str>>,
    #[serde(borrow)]
    exposure_yn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    current_status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    symptom_status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    hosp_yn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    icu_yn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    death_yn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    underlying_conditions_yn: Option<Cow<'a, str>>,
}

type Refusal = (&'static str, String);

fn required<T: FromStr<Err = InvalidValue>>(
    field: &str,
    v: &Option<Cow<'_, str>>,
) -> Result<T, Refusal> {
    let v = v
        .as_deref()
        .ok_or_else(|| ("missing_field", format!("{field}: missing")))?;
    v.parse()
        .map_err(|e: InvalidValue| ("invalid_value", format!("{field}: {e}")))
}

/// Absent and `NA` (suppressed) are both `None`.
fn optional<T: FromStr<Err = InvalidValue>>(
    field: &str,
    v: &Option<Cow<'_, str>>,
) -> Result<Option<T>, Refusal> {
    match v.as_deref() {
        None | Some("NA") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e: InvalidValue| ("invalid_value", format!("{field}: {e}"))),
    }
}

fn interval(field: &str, v: &Option<Cow<'_, str>>) -> Result<Option<i32>, Refusal> {
    match v.as_deref() {
        None | Some("NA") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            (
                "invalid_value",
                format!("{field}: `{s}` is not a whole number of weeks"),
            )
        }),
    }
}

impl SodaRow<'_> {
    fn into_case(self) -> Result<Case, Refusal> {
        Ok(Case {
            row_id: required(":id", &self.id)?,
            case_month: required("case_month", &self.case_month)?,
            res_state: required("res_state", &self.res_state)?,
            state_fips_code: optional("state_fips_code", &self.state_fips_code)?,
            res_county: match self.res_county.as_deref() {
                None | Some("NA") => None,
                Some(s) => Some(s.to_owned()),
            },
            county_fips_code: optional("county_fips_code", &self.county_fips_code)?,
            age_group: required("age_group", &self.age_group)?,
            sex: required("sex", &self.sex)?,
            race: required("race", &self.race)?,
            ethnicity: required("ethnicity", &self.ethnicity)?,
            case_positive_specimen_interval: interval(
                "case_positive_specimen_interval",
                &self.case_positive_specimen_interval,
            )?,
            case_onset_interval: interval("case_onset_interval", &self.case_onset_interval)?,
            process: required("process", &self.process)?,
            exposure_yn: required("exposure_yn", &self.exposure_yn)?,
            current_status: required("current_status", &self.current_status)?,
            symptom_status: required("symptom_status", &self.symptom_status)?,
            hosp_yn: required("hosp_yn", &self.hosp_yn)?,
            icu_yn: required("icu_yn", &self.icu_yn)?,
            death_yn: required("death_yn", &self.death_yn)?,
            underlying_conditions_yn: required(
                "underlying_conditions_yn",
                &self.underlying_conditions_yn,
            )?,
        })
    }
}
