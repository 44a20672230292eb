//! `cdc-cases`: the CDC "COVID-19 Case Surveillance Public Use Data with
//! Geography" data set through its Socrata SODA 2.1 API
//! (`/resource/n8mc-b4w4.json`): JSON array pages, every value a string,
//! null fields left out.
//!
//! Options (`[producers.sources.cdc-cases.options]`):
//! - `pagination`: `watermark` (default: `$where=:updated_at >= 'W'`, with
//!   the rows already taken at `W` skipped by `$offset`, so a re-published
//!   row comes again) or `offset` (`$order=:id` and `$offset`);
//! - `page_size`: rows per request (default 10000; SODA allows up to 50000,
//!   but larger pages only cost memory: about 100 MiB of peak RSS at
//!   10000, 270 MiB at 50000, for no more throughput; while a backlog
//!   drains, the page being mapped and the next one, prefetched, are held
//!   at once);
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
use chrono::Utc;
use serde::Deserialize;
use vigie_core::health::SmolStr;

pub use self::page::{Page, Row, parse_page};
use self::page::{page_text, parse_page_typed, parse_rows};
use super::outgoing;
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
            page_size: 10_000,
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
    /// Shared with the blocking thread that maps a page.
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
/// body without parsing it: for watermark pagination, the last row's
/// `:updated_at` and the rows at the end of the page that carry it (plus
/// those taken before the page, if the whole page carries it). `None` for
/// a page that is not full (the source is caught up: nothing to prefetch)
/// or whose end does not read as expected. Only a guess: the poll after
/// this one fetches its own page unless the guess names the same URL.
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
    const KEY: &str = "\":updated_at\":\"";
    // The last 64 KiB, from a character boundary.
    let mut start = body.len().saturating_sub(1 << 16);
    while body.get(start).is_some_and(|b| b & 0xC0 == 0x80) {
        start += 1;
    }
    let text = std::str::from_utf8(&body[start..]).ok()?;
    let mut end = text.len();
    let mut last: Option<&str> = None;
    let mut rows = 0;
    while let Some(at_key) = text[..end].rfind(KEY) {
        let value = &text[at_key + KEY.len()..];
        let value = &value[..value.find('"')?];
        match last {
            None => last = Some(value),
            Some(l) if l != value => break,
            Some(_) => {}
        }
        rows += 1;
        end = at_key;
    }
    let watermark = last?.to_owned();
    let position = if text[..end].contains(KEY) || at.watermark.as_deref() != Some(&watermark) {
        rows
    } else {
        at.position + rows
    };
    Some(Checkpoint {
        watermark: Some(watermark),
        position,
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
        // Served again: older than the watermark, or seen a page ago.
        let behind = matches!(
            (&row.updated_at, &at.watermark),
            (Some(ts), Some(w)) if ts.as_ref() < w.as_str()
        );
        let is_repeat = match &row.case {
            Ok(case) => !recent.insert(case.row_id.as_str()),
            Err(_) => false,
        };
        if behind || is_repeat {
            repeated += 1;
            continue;
        }
        if let Some(ts) = row.updated_at {
            if poll.next.watermark.as_deref() == Some(&*ts) {
                poll.next.position += 1;
            } else {
                poll.next.watermark = Some(ts.into_owned());
                poll.next.position = 1;
            }
        } else if pagination == Pagination::Watermark {
            poll.next.position += 1;
        }
        match row.case {
            Ok(case) => cases.push(case),
            Err((reason, error)) => poll.rejects.push(Reject {
                raw: row.raw.to_vec(),
                reason,
                error,
                url: url.clone(),
            }),
        }
    }
    if pagination == Pagination::Offset {
        poll.next.watermark = None;
        poll.next.position = at.position + served;
    }
    // The rows are owned from here on: the page (27 MB for 50,000 rows)
    // need not stay while they are serialized.
    drop(body);
    let now = Utc::now();
    poll.events = par_map(cases, workers, |case| outgoing(NAME, case, now));
    Ok((poll, repeated))
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

    /// What mapping the page gives as its end checkpoint.
    fn mapped_next(
        body: &str,
        at: &Checkpoint,
        page_size: u32,
        pagination: Pagination,
    ) -> Checkpoint {
        let mut recent = RecentIds {
            capacity: 1000,
            ..RecentIds::default()
        };
        let body = Bytes::copy_from_slice(body.as_bytes());
        map_page(body, "u".into(), at, page_size, pagination, &mut recent)
            .unwrap()
            .0
            .next
    }

    #[test]
    fn the_guessed_next_page_is_the_one_mapping_leads_to() {
        let ms = |i: usize| format!("2024-01-01T00:00:00.{i:03}");
        let start = Checkpoint::default();
        let cases: Vec<(String, Checkpoint)> = vec![
            // Every row its own time: the last one, once.
            (page(100, ms), start.clone()),
            // The last three rows at the same time.
            (page(100, |i| ms(i.min(97))), start.clone()),
            // The whole page at the watermark it started from.
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
            assert_eq!(
                guess.as_ref(),
                Some(&mapped_next(body, at, 100, Pagination::Watermark))
            );
        }
        let at = Checkpoint {
            position: 300,
            ..Checkpoint::default()
        };
        let body = page(100, ms);
        assert_eq!(
            guess_next(body.as_bytes(), &at, 100, Pagination::Offset),
            Some(mapped_next(&body, &at, 100, Pagination::Offset))
        );
        // The last 64 KiB start inside a character: read from the next one.
        let mut wide = page(200, |i| format!("{}Ñ", ms(i)));
        while wide.is_char_boundary(wide.len() - (1 << 16)) {
            wide.push(' ');
        }
        assert_eq!(
            guess_next(wide.as_bytes(), &start, 100, Pagination::Watermark),
            Some(Checkpoint {
                watermark: Some(format!("{}Ñ", ms(199))),
                position: 1,
                ..Checkpoint::default()
            })
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
