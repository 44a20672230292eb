//! `cdc-cases`: the CDC "COVID-19 Case Surveillance Public Use Data with
//! Geography" data set through its Socrata SODA 2.1 API
//! (`/resource/n8mc-b4w4.json`): JSON array pages, every value a string,
//! null fields left out.
//!
//! Options (`[producers.sources.cdc-cases.options]`):
//! - `pagination`: `watermark` (default; the name is kept for existing
//!   configurations, the paging is by keyset now: `$order=:updated_at,:id`
//!   and `$where=:updated_at > 'W' OR (:updated_at = 'W' AND :id > 'I')`
//!   after the last row taken, (`W`, `I`); a row updated upstream comes
//!   again, with a later `:updated_at`, and is produced again) or `offset`
//!   (`$order=:id` and `$offset`);
//! - `page_size`: rows per request (default 10000; SODA allows up to 50000,
//!   but larger pages only cost memory, for no more throughput: while a
//!   backlog drains, the page being mapped and the next one, prefetched,
//!   are held at once; the figures are in `docs/benchmarks.md`,
//!   `producer_http_peak_rss`);
//! - `app_token_env`: the environment variable holding an `X-App-Token`.
//!
//! The SODA page parser is in `page`, the mapping of a row to a [`Case`]
//! in `row`; here, the source and its poll: pages fetched (the next one
//! prefetched while a backlog drains), mapped to events, checkpointed.
//!
//! [`Case`]: vigie_core::health::Case

mod page;
mod row;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::Deserialize;
use vigie_core::health::SmolStr;

pub use self::page::{Page, Row, parse_page, parse_page_one_pass};
use self::page::{page_text, parse_page_typed, parse_rows};
use super::versioned_outgoing;
use crate::checkpoint::Checkpoint;
use crate::http::{FetchError, Fetched};
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
    /// Keyset paging on (`:updated_at`, `:id`), after the last row taken
    /// (named `watermark` in the configuration, as before).
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
            page_size: 10_000,
            app_token_env: None,
        }
    }
}

struct CdcCases {
    url: String,
    options: Options,
    app_token: Option<String>,
    /// Offset pagination only: row ids of the last pages, since an
    /// upstream whose pages shift (rows inserted while paging) serves some
    /// rows twice. Shared with the blocking thread that maps a page.
    /// Keyset pagination needs none: a row served again is behind the
    /// checkpoint, or an update upstream to produce again.
    recent: Arc<Mutex<RecentIds>>,
    /// While a backlog drains, the page that most likely comes next,
    /// fetched while the last one was mapped; used only if its URL is the
    /// one the next poll asks for.
    prefetched: Option<(String, Result<Fetched, FetchError>)>,
}

/// A bounded set of the most recent row ids (kept inline: row ids are
/// short, so no allocation per id; hashed with foldhash, seeded per process).
#[derive(Default)]
struct RecentIds {
    set: HashSet<SmolStr, foldhash::fast::RandomState>,
    order: VecDeque<SmolStr>,
    capacity: usize,
}

impl RecentIds {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: &str) -> bool {
        let id = SmolStr::new(id);
        if !self.set.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
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
        recent: Arc::new(Mutex::new(RecentIds {
            capacity: 2 * options.page_size as usize,
            ..RecentIds::default()
        })),
        options,
        app_token,
        prefetched: None,
    }))
}

impl CdcCases {
    fn page_url(&self, at: &Checkpoint) -> String {
        let limit = self.options.page_size;
        match self.options.pagination {
            Pagination::Offset => format!(
                "{}?$select=:*,*&$order=:id&$limit={limit}&$offset={}",
                self.url, at.position
            ),
            Pagination::Watermark => {
                let mut url = format!(
                    "{}?$select={}&$order={}",
                    self.url,
                    query_value(":*,*"),
                    query_value(":updated_at,:id")
                );
                if let Some(after) = keyset_where(at) {
                    url.push_str("&$where=");
                    url.push_str(&query_value(&after));
                }
                url.push_str(&format!("&$limit={limit}"));
                url
            }
        }
    }
}

/// The `$where` of the page after `at` with keyset pagination: the rows
/// after (`:updated_at`, `:id`) = (`watermark`, `watermark_id`); `None`
/// for the first page. A checkpoint of the earlier paging (a watermark and
/// the rows taken at it, no id) reads the rows at its watermark again:
/// those taken already come again with the same event ids.
fn keyset_where(at: &Checkpoint) -> Option<String> {
    let watermark = soql_text(at.watermark.as_deref()?);
    Some(match at.watermark_id.as_deref() {
        Some(id) => format!(
            ":updated_at > {watermark} OR (:updated_at = {watermark} AND :id > {})",
            soql_text(id)
        ),
        None => format!(":updated_at >= {watermark}"),
    })
}

/// A SoQL string literal: in single quotes, a quote written twice.
fn soql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` as a query string value: every byte but the unreserved ones of
/// RFC 3986 (letters, digits, `-._~`) percent-encoded, a space as `%20`.
fn query_value(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
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
        let prefetches = |outcome| {
            cx.metrics
                .prefetches
                .with_label_values(&[NAME, outcome])
                .inc()
        };
        let fetched = match self.prefetched.take() {
            // This page, fetched early; or how that failed, its retries
            // spent: the runner polls again after its interval.
            Some((guessed, fetched)) if guessed == url => {
                prefetches("used");
                fetched?
            }
            wrong => {
                if wrong.is_some() {
                    prefetches("wrong_guess");
                }
                cx.http.get(&url, &headers, cx.shutdown).await?
            }
        };
        // Parsing, mapping and serializing a page is CPU work (50,000 rows:
        // a few hundred ms): on a blocking thread, so that the runner keeps
        // producing the previous page meanwhile instead of waiting on it.
        // A full page means a backlog: the next one, at the checkpoint this
        // one most likely ends at, is fetched meanwhile.
        let (page_size, pagination) = (self.options.page_size, self.options.pagination);
        let guess =
            guess_next(&fetched.body, at, page_size, pagination).map(|next| self.page_url(&next));
        let recent = self.recent.clone();
        let at = at.clone();
        let map = tokio::task::spawn_blocking(move || {
            let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
            map_page(fetched.body, url, &at, page_size, pagination, &mut recent)
        });
        let prefetch = async {
            match guess {
                Some(url) => {
                    let fetched = cx.http.get(&url, &headers, cx.shutdown).await;
                    Some((url, fetched))
                }
                None => None,
            }
        };
        let (mapped, prefetched) = tokio::join!(map, prefetch);
        let (poll, repeated) =
            mapped.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        self.prefetched = match prefetched {
            Some(_) if !poll.more => {
                prefetches("dropped");
                None
            }
            p => p,
        };
        if repeated > 0 {
            cx.metrics
                .errors
                .with_label_values(&[NAME, "repeated_row"])
                .inc_by(repeated);
        }
        Ok(poll)
    }
}

/// The checkpoint a full page most likely ends at, read off the end of its
/// body without parsing it: for keyset pagination, the last row's
/// `:updated_at` and `:id`. `None` for a page that is not full (the source
/// is caught up: nothing to prefetch) or whose end does not read as
/// expected. Only a guess: the poll after this one fetches its own page
/// unless the guess names the same URL.
fn guess_next(
    body: &[u8],
    at: &Checkpoint,
    page_size: u32,
    pagination: Pagination,
) -> Option<Checkpoint> {
    // A served row takes 400 to 600 bytes: far fewer bytes than a full
    // page would take means it is not one.
    if body.len() < page_size as usize * 200 {
        return None;
    }
    if pagination == Pagination::Offset {
        return Some(Checkpoint {
            position: at.position + u64::from(page_size),
            ..Checkpoint::default()
        });
    }
    const UPDATED_AT: &str = "\":updated_at\":\"";
    const ID: &str = "\":id\":\"";
    // The last 64 KiB, from a character boundary.
    let mut start = body.len().saturating_sub(1 << 16);
    while body.get(start).is_some_and(|b| b & 0xC0 == 0x80) {
        start += 1;
    }
    let text = std::str::from_utf8(&body[start..]).ok()?;
    // The last value of `key`, unless it holds an escape.
    let last = |key: &str| {
        let at = text.rfind(key)?;
        let value = &text[at + key.len()..];
        let value = &value[..value.find('"')?];
        (!value.contains('\\')).then_some((at, value))
    };
    let (ts_at, updated_at) = last(UPDATED_AT)?;
    let (id_at, id) = last(ID)?;
    // Both of the last row: no other key between them.
    let between = &text[ts_at.min(id_at) + 1..ts_at.max(id_at)];
    if between.contains(UPDATED_AT) || between.contains(ID) {
        return None;
    }
    Some(Checkpoint {
        watermark: Some(updated_at.to_owned()),
        watermark_id: Some(id.to_owned()),
        ..Checkpoint::default()
    })
}

/// Maps a fetched page to a poll: the rows' events and rejects, and the
/// checkpoint after them; also the number of rows skipped as repeated.
fn map_page(
    body: Bytes,
    url: String,
    at: &Checkpoint,
    page_size: u32,
    pagination: Pagination,
    recent: &mut RecentIds,
) -> Result<(Poll, u64), SourceError> {
    let workers = workers(body.len());
    let text = page_text(&body, &url)?;
    // One pass straight into typed rows when every row maps (the common
    // case); otherwise row by row, which keeps each refused row's bytes.
    let page = match parse_page_typed(text) {
        Some(page) => page,
        None => parse_rows(text, &url, workers)?,
    };
    let served = page.rows.len() as u64;
    let mut poll = Poll {
        // A shifted page may hold more than the limit.
        more: served >= u64::from(page_size),
        next: at.clone(),
        ..Poll::default()
    };
    let mut repeated = 0;
    let mut cases = Vec::with_capacity(page.rows.len());
    for row in page.rows {
        let is_repeat = match pagination {
            // Served again (an upstream that repeats rows): older than
            // the checkpoint, or its very row. Rows that tie with it are
            // left to the upstream's order: SODA's order of ids is its own.
            Pagination::Watermark => match (&row.updated_at, &at.watermark) {
                (Some(ts), Some(w)) => {
                    ts.as_ref() < w.as_str()
                        || (ts.as_ref() == w.as_str()
                            && row.id.is_some()
                            && row.id.as_deref() == at.watermark_id.as_deref())
                }
                _ => false,
            },
            // Seen a page ago.
            Pagination::Offset => match &row.case {
                Ok(case) => !recent.insert(case.row_id.as_str()),
                Err(_) => false,
            },
        };
        if is_repeat {
            repeated += 1;
            continue;
        }
        if pagination == Pagination::Watermark
            && let (Some(ts), Some(id)) = (&row.updated_at, &row.id)
        {
            // The next page starts after the last row served.
            poll.next.watermark = Some(ts.to_string());
            poll.next.watermark_id = Some(id.to_string());
            poll.next.position = 0;
        }
        match row.case {
            Ok(case) => cases.push((case, row.updated_at.as_deref().and_then(soda_timestamp))),
            Err((reason, error)) => poll.rejects.push(Reject {
                raw: row.raw.to_vec(),
                reason,
                error,
                url: url.clone(),
            }),
        }
    }
    match pagination {
        Pagination::Offset => {
            poll.next.watermark = None;
            poll.next.watermark_id = None;
            poll.next.position = at.position + served;
        }
        Pagination::Watermark if poll.more && poll.next == *at => {
            // Polling again would fetch this very page.
            return Err(SourceError::Format {
                url,
                error: "a full page that does not move the checkpoint: no row after it \
                        carries both :updated_at and :id"
                    .to_owned(),
            });
        }
        Pagination::Watermark => {}
    }
    // The rows are owned from here on: the page (27 MB for 50,000 rows)
    // need not stay while they are serialized.
    drop(body);
    let now = Utc::now();
    poll.events = par_map(cases, workers, |(case, version)| {
        versioned_outgoing(NAME, case, now, version)
    });
    Ok((poll, repeated))
}

/// A SODA floating timestamp (`2024-01-01T00:00:00.001`, no zone), read
/// as UTC: the version the envelope carries. `None` when it is not one.
/// The shape SODA writes (milliseconds) is read digit by digit, once per
/// row; any other goes through chrono's parser.
fn soda_timestamp(text: &str) -> Option<DateTime<Utc>> {
    millisecond_timestamp(text.as_bytes()).or_else(|| {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc())
    })
}

/// `YYYY-MM-DDTHH:MM:SS.fff`, digits only; `None` for anything else.
fn millisecond_timestamp(b: &[u8]) -> Option<DateTime<Utc>> {
    let shaped = b.len() == 23
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.';
    if !shaped {
        return None;
    }
    let n = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(n(0, 4)?).ok()?, n(5, 7)?, n(8, 10)?)?;
    let time = NaiveTime::from_hms_milli_opt(n(11, 13)?, n(14, 16)?, n(17, 19)?, n(20, 23)?)?;
    Some(date.and_time(time).and_utc())
}

/// Threads a page is mapped on: one per CPU for a large page (a full page
/// of 50,000 rows is about 27 MB), one for a small one.
fn workers(body_bytes: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cpus.min(body_bytes / (4 << 20) + 1)
}

/// `f` over `items`, in order, the items split into `workers` contiguous
/// chunks mapped at once (the first on this thread).
fn par_map<T: Send, U: Send>(
    mut items: Vec<T>,
    workers: usize,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let chunk = items.len().div_ceil(workers.max(1)).max(1);
    let mut rest = Vec::new();
    while items.len() > chunk {
        rest.push(items.split_off(items.len() - chunk));
    }
    rest.reverse();
    let f = &f;
    std::thread::scope(|s| {
        let others: Vec<_> = rest
            .into_iter()
            .map(|part| s.spawn(move || part.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        let mut out: Vec<U> = items.into_iter().map(f).collect();
        for h in others {
            out.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_the_order() {
        for n in [0, 1, 2, 3, 10, 1001] {
            for workers in [0, 1, 2, 3, 7] {
                let items: Vec<u64> = (0..n).collect();
                let out = par_map(items, workers, |i| i * 2);
                assert_eq!(
                    out,
                    (0..n).map(|i| i * 2).collect::<Vec<_>>(),
                    "{n} {workers}"
                );
            }
        }
    }

    /// A page of `n` rows; row `i` updated at `stamp(i)`.
    fn page(n: usize, stamp: impl Fn(usize) -> String) -> String {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{":id":"row-{i}",":updated_at":"{}","case_month":"2021-03","res_state":"CA","age_group":"18 to 49 years","sex":"Female","race":"White","ethnicity":"Unknown","process":"Missing","exposure_yn":"Missing","current_status":"Laboratory-confirmed case","symptom_status":"Symptomatic","hosp_yn":"No","icu_yn":"Missing","death_yn":"No","underlying_conditions_yn":"Missing","padding":"{}"}}"#,
                    stamp(i),
                    "x".repeat(150)
                )
            })
            .collect();
        format!("[{}]\n", rows.join("\n,"))
    }

    fn source(pagination: Pagination, page_size: u32) -> CdcCases {
        CdcCases {
            url: "http://x/resource/n8mc-b4w4.json".into(),
            options: Options {
                pagination,
                page_size,
                app_token_env: None,
            },
            app_token: None,
            recent: Arc::default(),
            prefetched: None,
        }
    }

    /// The decoded query parameters of `url`.
    fn query(url: &str) -> Vec<(String, String)> {
        reqwest::Url::parse(url)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn keyset(watermark: &str, id: &str) -> Checkpoint {
        Checkpoint {
            watermark: Some(watermark.into()),
            watermark_id: Some(id.into()),
            ..Checkpoint::default()
        }
    }

    #[test]
    fn keyset_urls_carry_the_last_key_encoded() {
        let s = source(Pagination::Watermark, 1000);
        let pairs = |q: &[(&str, &str)]| -> Vec<(String, String)> {
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // The first page: no $where, no $offset.
        let first = s.page_url(&Checkpoint::default());
        assert_eq!(
            first,
            "http://x/resource/n8mc-b4w4.json?$select=%3A%2A%2C%2A\
             &$order=%3Aupdated_at%2C%3Aid&$limit=1000"
        );
        assert_eq!(
            query(&first),
            pairs(&[
                ("$select", ":*,*"),
                ("$order", ":updated_at,:id"),
                ("$limit", "1000")
            ])
        );
        let next = s.page_url(&keyset("2024-01-01T00:00:00.007", "row-abcd.efgh_ijkm"));
        assert_eq!(
            query(&next),
            pairs(&[
                ("$select", ":*,*"),
                ("$order", ":updated_at,:id"),
                (
                    "$where",
                    ":updated_at > '2024-01-01T00:00:00.007' OR (:updated_at = \
                     '2024-01-01T00:00:00.007' AND :id > 'row-abcd.efgh_ijkm')"
                ),
                ("$limit", "1000")
            ])
        );
        assert!(
            next.contains(
                "&$where=%3Aupdated_at%20%3E%20%272024-01-01T00%3A00%3A00.007%27%20OR%20\
                 %28%3Aupdated_at%20%3D%20%272024-01-01T00%3A00%3A00.007%27%20AND%20\
                 %3Aid%20%3E%20%27row-abcd.efgh_ijkm%27%29&"
            ),
            "{next}"
        );
        // Quotes are doubled inside SoQL literals; every byte of the value
        // but the unreserved ones is encoded (`&`, `#`, `+` and `%` too).
        let odd = s.page_url(&keyset("it's", "a'b &#+%é"));
        let where_ = query(&odd)
            .into_iter()
            .find(|(k, _)| k == "$where")
            .unwrap()
            .1;
        assert_eq!(
            where_,
            ":updated_at > 'it''s' OR (:updated_at = 'it''s' AND :id > 'a''b &#+%é')"
        );
        let raw = odd.split_once("$where=").unwrap().1;
        assert!(
            raw.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%&$=".contains(&b)),
            "{raw}"
        );
        assert!(raw.contains("a%27%27b%20%26%23%2B%25%C3%A9"), "{raw}");
        // A checkpoint of the earlier paging (no id): the rows at its
        // watermark again, whatever its position.
        let old = Checkpoint {
            watermark: Some("2024-01-01T00:00:00.007".into()),
            position: 40,
            ..Checkpoint::default()
        };
        let url = s.page_url(&old);
        assert!(!url.contains("$offset"), "{url}");
        assert!(
            query(&url).contains(&(
                "$where".into(),
                ":updated_at >= '2024-01-01T00:00:00.007'".into()
            )),
            "{url}"
        );
        // Offset pagination, as before.
        let offset = source(Pagination::Offset, 500).page_url(&Checkpoint {
            position: 1500,
            ..Checkpoint::default()
        });
        assert_eq!(
            offset,
            "http://x/resource/n8mc-b4w4.json?$select=:*,*&$order=:id&$limit=500&$offset=1500"
        );
    }

    /// The poll of a page, mapped.
    fn mapped(body: &str, at: &Checkpoint, page_size: u32, pagination: Pagination) -> (Poll, u64) {
        let mut recent = RecentIds {
            capacity: 1000,
            ..RecentIds::default()
        };
        let body = Bytes::copy_from_slice(body.as_bytes());
        map_page(body, "u".into(), at, page_size, pagination, &mut recent).unwrap()
    }

    /// Row ids of the events of a poll.
    fn row_ids(poll: &Poll) -> Vec<String> {
        poll.events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                v["data"]["row_id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn soda_timestamps_read_alike_by_both_parsers() {
        let chrono_reads = |t: &str| {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        };
        for t in [
            "2024-01-01T00:00:00.001",
            "1999-12-31T23:59:59.999",
            "2024-02-29T12:34:56.789",
            "2023-02-29T12:34:56.789",
            "2024-13-01T00:00:00.000",
            "2024-01-01T24:00:00.000",
            "2024-01-01T00:00:00.1",
            "2024-01-01T00:00:00.123456",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00.000",
            "2024-01-01T00:00:00.00x",
            "+024-01-01T00:00:00.000",
        ] {
            assert_eq!(soda_timestamp(t), chrono_reads(t), "{t}");
        }
        assert!(soda_timestamp("2024-01-01T00:00:00.001").is_some());
    }

    /// Each event carries its row's `:updated_at` as the upstream's
    /// version, read as UTC; a row without one carries none.
    #[test]
    fn events_carry_the_rows_updated_at_as_their_version() {
        let body = page(3, |i| format!("2024-03-01T10:00:00.{i:03}")).replacen(
            r#"":updated_at":"2024-03-01T10:00:00.002","#,
            "",
            1,
        );
        let (poll, _) = mapped(&body, &Checkpoint::default(), 10, Pagination::Offset);
        let versions: Vec<serde_json::Value> = poll
            .events
            .iter()
            .map(|e| serde_json::from_slice::<serde_json::Value>(&e.payload).unwrap()["upstream_updated_at"].clone())
            .collect();
        assert_eq!(
            versions,
            [
                serde_json::json!("2024-03-01T10:00:00.000000Z"),
                serde_json::json!("2024-03-01T10:00:00.001000Z"),
                serde_json::Value::Null
            ]
        );
    }

    #[test]
    fn the_checkpoint_after_a_page_is_its_last_row() {
        let ms = |i: usize| format!("2024-01-01T00:00:00.{i:03}");
        // Ten rows, two per timestamp.
        let body = page(10, |i| ms(i / 2));
        let (poll, repeated) = mapped(&body, &Checkpoint::default(), 10, Pagination::Watermark);
        assert_eq!((poll.events.len(), repeated, poll.more), (10, 0, true));
        assert_eq!(poll.next, keyset(&ms(4), "row-9"));
        // A page short of full: caught up, at its last row.
        let (poll, _) = mapped(&body, &Checkpoint::default(), 11, Pagination::Watermark);
        assert!(!poll.more);
        assert_eq!(poll.next, keyset(&ms(4), "row-9"));
        // Rows served again (before the checkpoint, or its very row) are
        // skipped; a row that ties with it is the upstream's to order.
        let at = keyset(&ms(2), "row-5");
        let (poll, repeated) = mapped(&body, &at, 10, Pagination::Watermark);
        assert_eq!(repeated, 5, "rows 0 to 3 older, row 5 the checkpoint's");
        assert_eq!(
            row_ids(&poll),
            ["row-4", "row-6", "row-7", "row-8", "row-9"]
        );
        assert_eq!(poll.next, keyset(&ms(4), "row-9"));
        // An update of a row already produced comes back with a later
        // :updated_at: produced again, nothing remembers it as seen.
        let again = page(3, |_| ms(9)).replace("row-2", "row-9");
        let (poll, repeated) = mapped(&again, &poll.next, 3, Pagination::Watermark);
        assert_eq!(repeated, 0);
        assert_eq!(row_ids(&poll), ["row-0", "row-1", "row-9"]);
        assert_eq!(poll.next, keyset(&ms(9), "row-9"));
        // A checkpoint of the earlier paging: the rows at its watermark
        // come again, and the next checkpoint is a keyset one.
        let old = Checkpoint {
            watermark: Some(ms(2)),
            position: 1,
            ..Checkpoint::default()
        };
        let (poll, repeated) = mapped(&body, &old, 10, Pagination::Watermark);
        assert_eq!(repeated, 4);
        assert_eq!(row_ids(&poll)[..2], ["row-4", "row-5"]);
        assert_eq!(poll.next, keyset(&ms(4), "row-9"));
        // A refused row moves the checkpoint too.
        let bad = body.replace("\"sex\":\"Female\"", "\"sex\":\"Neither\"");
        let (poll, _) = mapped(&bad, &Checkpoint::default(), 10, Pagination::Watermark);
        assert_eq!((poll.events.len(), poll.rejects.len()), (0, 10));
        assert_eq!(poll.next, keyset(&ms(4), "row-9"));
        // Nothing after the checkpoint on a full page: an error, not the
        // same page again and again.
        let at = keyset(&ms(5), "row-0");
        let body = Bytes::copy_from_slice(body.as_bytes());
        let mut recent = RecentIds::default();
        let err = map_page(
            body,
            "u".into(),
            &at,
            10,
            Pagination::Watermark,
            &mut recent,
        );
        assert!(matches!(err, Err(SourceError::Format { .. })));
    }

    #[test]
    fn the_guessed_next_page_is_the_one_mapping_leads_to() {
        let ms = |i: usize| format!("2024-01-01T00:00:00.{i:03}");
        let start = Checkpoint::default();
        let cases: Vec<(String, Checkpoint)> = vec![
            // Every row its own time.
            (page(100, ms), start.clone()),
            // The last three rows at the same time.
            (page(100, |i| ms(i.min(97))), start.clone()),
            // The whole page at the timestamp it started from.
            (page(100, |_| ms(5)), keyset(&ms(5), "row-")),
            // From a checkpoint of the earlier paging.
            (
                page(100, |_| ms(5)),
                Checkpoint {
                    watermark: Some(ms(5)),
                    position: 40,
                    ..Checkpoint::default()
                },
            ),
        ];
        for (body, at) in &cases {
            let guess = guess_next(body.as_bytes(), at, 100, Pagination::Watermark);
            let next = mapped(body, at, 100, Pagination::Watermark).0.next;
            assert_eq!(guess.as_ref(), Some(&next));
            let s = source(Pagination::Watermark, 100);
            assert_eq!(s.page_url(guess.as_ref().unwrap()), s.page_url(&next));
        }
        let at = Checkpoint {
            position: 300,
            ..Checkpoint::default()
        };
        let body = page(100, ms);
        assert_eq!(
            guess_next(body.as_bytes(), &at, 100, Pagination::Offset),
            Some(mapped(&body, &at, 100, Pagination::Offset).0.next)
        );
        // The last 64 KiB start inside a character: read from the next one.
        let mut wide = page(200, |i| format!("{}Ñ", ms(i)));
        while wide.is_char_boundary(wide.len() - (1 << 16)) {
            wide.push(' ');
        }
        assert_eq!(
            guess_next(wide.as_bytes(), &start, 100, Pagination::Watermark),
            Some(keyset(&format!("{}Ñ", ms(199)), "row-199"))
        );
        // The last row without an id: no guess rather than a wrong one.
        let body = page(100, ms).replace("\":id\":\"row-99\",", "");
        assert_eq!(
            guess_next(body.as_bytes(), &start, 100, Pagination::Watermark),
            None
        );
        // A page well short of full: caught up, nothing to prefetch.
        assert_eq!(
            guess_next(page(10, ms).as_bytes(), &start, 100, Pagination::Watermark),
            None
        );
        assert_eq!(guess_next(b"[]", &start, 1, Pagination::Offset), None);
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut recent = RecentIds {
            capacity: 2,
            ..RecentIds::default()
        };
        assert!(recent.insert("a"));
        assert!(recent.insert("b"));
        assert!(!recent.insert("a"));
        assert!(recent.insert("c"));
        assert!(recent.insert("a"), "a was the oldest, forgotten");
        assert!(!recent.insert("c"));
        assert_eq!((recent.set.len(), recent.order.len()), (2, 2));
    }
}
