//! `who-covid`: the WHO COVID-19 global daily CSV
//! (`Date_reported,Country_code,Country,WHO_region,New_cases,
//! Cumulative_cases,New_deaths,Cumulative_deaths`). The file is published
//! whole, grows by a day at a time, and WHO revises days already published
//! (late reports, blank cells filled in, corrections). Each poll reads the
//! whole file and produces:
//! - every row dated after the watermark (the newest date produced);
//! - every row of the correction window (the last `correction_window_days`
//!   days up to the watermark) whose content differs from what was produced
//!   for it, or that was not there before: same event id, newer version.
//!
//! A row dated more than `future_tolerance_days` after today (UTC) is
//! dead-lettered (`future_date`) and moves nothing; it is produced once its
//! date is no longer in the future. A line that does not map is
//! dead-lettered once per content: the checkpoint keeps the hash of each
//! line dead-lettered while the file still holds it, and the hash of each
//! row of the window. The state is bounded by the window and the file's bad
//! lines.
//!
//! A checkpoint written before the correction window (a watermark, no
//! hashes) produces the window's rows once more on its first poll, with
//! their same event ids.
//!
//! Options (`[producers.sources.who-covid.options]`):
//! - `correction_window_days` (default 28, at most 3660): days, up to and
//!   including the newest, whose corrections are produced; 0 produces each
//!   day once and never again;
//! - `future_tolerance_days` (default 1): how far past today a date may be.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;
use vigie_core::health::CountryDay;

use super::{REFUSED, digest, outgoing};
use crate::checkpoint::Checkpoint;
use crate::source::{Poll, PollContext, Reject, Source, SourceConfig, SourceError, SourceSpec};

/// Registry entry.
pub const SPEC: SourceSpec = SourceSpec {
    name: NAME,
    about: "WHO COVID-19 daily counts per country from the global CSV",
    build,
};

const NAME: &str = "who-covid";

/// The header the file must start with.
pub const HEADER: [&str; 8] = [
    "Date_reported",
    "Country_code",
    "Country",
    "WHO_region",
    "New_cases",
    "Cumulative_cases",
    "New_deaths",
    "Cumulative_deaths",
];

/// The longest correction window: about ten years of the file's rows.
pub const MAX_CORRECTION_WINDOW_DAYS: u32 = 3660;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    correction_window_days: u32,
    future_tolerance_days: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            correction_window_days: 28,
            future_tolerance_days: 1,
        }
    }
}

struct WhoCovid {
    url: String,
    options: Options,
}

fn build(config: &SourceConfig) -> Result<Box<dyn Source>, SourceError> {
    let options: Options = config.options(NAME)?;
    if options.correction_window_days > MAX_CORRECTION_WINDOW_DAYS {
        return Err(SourceError::Config(format!(
            "producers.sources.{NAME}.options.correction_window_days: at most \
             {MAX_CORRECTION_WINDOW_DAYS}, not {}",
            options.correction_window_days
        )));
    }
    Ok(Box::new(WhoCovid {
        url: config.url.clone(),
        options,
    }))
}

/// The checkpoint key of a row: its natural key.
fn row_key(day: &CountryDay) -> String {
    format!(
        "{}/{}",
        day.date_reported.format("%Y-%m-%d"),
        day.country_code
    )
}

fn row_digest(day: &CountryDay) -> String {
    digest(&serde_json::to_vec(day).expect("a row serializes"))
}

#[async_trait::async_trait]
impl Source for WhoCovid {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn poll(&mut self, at: &Checkpoint, cx: &PollContext<'_>) -> Result<Poll, SourceError> {
        let fetched = cx.http.get(&self.url, &[], cx.shutdown).await?;
        let rows = parse_csv(&fetched.body, &self.url)?;
        let plan = plan(
            rows,
            &fetched.body,
            at,
            &self.options,
            Utc::now().date_naive(),
        )?;
        let now = Utc::now();
        Ok(Poll {
            events: plan
                .produce
                .into_iter()
                .map(|day| outgoing(NAME, day, now))
                .collect(),
            rejects: plan
                .refuse
                .into_iter()
                .map(|(bytes, reason, error)| Reject {
                    raw: fetched.body[bytes].to_vec(),
                    reason,
                    error,
                    url: self.url.clone(),
                })
                .collect(),
            next: plan.next,
            more: false,
        })
    }
}

/// What a poll of the file decides.
#[derive(Debug, Default)]
struct Plan {
    /// Rows to produce, in file order.
    produce: Vec<CountryDay>,
    /// Lines to dead-letter: their bytes, reason and error.
    refuse: Vec<(Range<usize>, &'static str, String)>,
    /// The checkpoint once all of the above is acknowledged.
    next: Checkpoint,
}

/// Decides which lines of the file to produce and dead-letter, and the
/// next checkpoint, from the file's rows (parsed from `body`), the
/// checkpoint `at` and the date `today`.
fn plan(
    rows: Vec<Row>,
    body: &[u8],
    at: &Checkpoint,
    options: &Options,
    today: NaiveDate,
) -> Result<Plan, SourceError> {
    let after = match &at.watermark {
        Some(w) => Some(NaiveDate::parse_from_str(w, "%Y-%m-%d").map_err(|_| {
            SourceError::Config(format!(
                "checkpoint of {NAME}: watermark `{w}` is not a date"
            ))
        })?),
        None => None,
    };
    let latest_allowed = today
        .checked_add_days(Days::new(options.future_tolerance_days.into()))
        .unwrap_or(NaiveDate::MAX);
    let newest = rows
        .iter()
        .filter_map(|r| r.row.as_ref().ok())
        .map(|d| d.date_reported)
        .filter(|d| *d <= latest_allowed)
        .chain(after)
        .max();
    // The window: `correction_window_days` days up to and including the
    // newest date; none when the window is 0.
    let window_start = newest.and_then(|n| {
        let days = options.correction_window_days;
        (days > 0).then(|| {
            n.checked_sub_days(Days::new(u64::from(days) - 1))
                .unwrap_or(NaiveDate::MIN)
        })
    });
    let in_window = |d: NaiveDate| window_start.is_some_and(|s| d >= s);
    let mut plan = Plan {
        next: Checkpoint {
            seen: BTreeMap::new(),
            ..at.clone()
        },
        ..Plan::default()
    };
    for Row { bytes, row } in rows {
        let day = match row {
            Ok(day) if day.date_reported > latest_allowed => {
                let error = format!(
                    "Date_reported: {} is more than {} day(s) after today ({today})",
                    day.date_reported, options.future_tolerance_days
                );
                plan.refuse_once(at, body, bytes, "future_date", error);
                continue;
            }
            Ok(day) => day,
            Err(error) => {
                plan.refuse_once(at, body, bytes, "invalid_value", error);
                continue;
            }
        };
        let new = after.is_none_or(|a| day.date_reported > a);
        let windowed = in_window(day.date_reported);
        if !new && !windowed {
            continue;
        }
        let key = row_key(&day);
        let hash = row_digest(&day);
        let changed = at.seen.get(&key) != Some(&hash);
        if windowed {
            plan.next.seen.insert(key, hash);
        }
        if new || changed {
            plan.produce.push(day);
        }
    }
    plan.next.watermark = newest.map(|d| d.format("%Y-%m-%d").to_string());
    plan.next.position = at.position + plan.produce.len() as u64;
    Ok(plan)
}

impl Plan {
    /// Dead-letters a line unless `at` shows it was already (same bytes),
    /// and keeps it marked while the file holds it.
    fn refuse_once(
        &mut self,
        at: &Checkpoint,
        body: &[u8],
        bytes: Range<usize>,
        reason: &'static str,
        error: String,
    ) {
        let key = format!("{REFUSED}{}", digest(&body[bytes.clone()]));
        if !at.seen.contains_key(&key) {
            self.refuse.push((bytes, reason, error));
        }
        self.next.seen.insert(key, String::new());
    }
}

/// One CSV line as written.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "Date_reported")]
    date_reported: &'a str,
    #[serde(rename = "Country_code")]
    country_code: &'a str,
    #[serde(rename = "Country")]
    country: &'a str,
    #[serde(rename = "WHO_region")]
    who_region: &'a str,
    #[serde(rename = "New_cases")]
    new_cases: &'a str,
    #[serde(rename = "Cumulative_cases")]
    cumulative_cases: &'a str,
    #[serde(rename = "New_deaths")]
    new_deaths: &'a str,
    #[serde(rename = "Cumulative_deaths")]
    cumulative_deaths: &'a str,
}

/// One line of the file: where its bytes are in the body (terminator
/// included), and the row it maps to or why it does not map.
#[derive(Debug)]
pub struct Row {
    /// The line's bytes in the body, for a dead letter.
    pub bytes: Range<usize>,
    /// The row, or what is wrong with the line (naming its number).
    pub row: Result<CountryDay, String>,
}

/// Parses the whole file. A wrong header fails the file; a bad line is
/// refused alone.
pub fn parse_csv(body: &[u8], url: &str) -> Result<Vec<Row>, SourceError> {
    let mut reader = csv::ReaderBuilder::new().from_reader(body);
    let header = reader.byte_headers().map_err(|e| SourceError::Format {
        url: url.to_owned(),
        error: format!("unreadable CSV header: {e}"),
    })?;
    if header.iter().ne(HEADER.iter().map(|h| h.as_bytes())) {
        return Err(SourceError::Format {
            url: url.to_owned(),
            error: format!(
                "unexpected CSV header `{}`; expected `{}`",
                header
                    .iter()
                    .map(String::from_utf8_lossy)
                    .collect::<Vec<_>>()
                    .join(","),
                HEADER.join(",")
            ),
        });
    }
    let header = header.clone();
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let start = reader.position().clone();
        let read = reader.read_byte_record(&mut record);
        let end = usize::try_from(reader.position().byte()).unwrap_or(body.len());
        let bytes = usize::try_from(start.byte()).unwrap_or(end)..end;
        let row = match read {
            Ok(false) => break,
            Ok(true) => record
                .deserialize::<Line<'_>>(Some(&header))
                .map_err(|e| e.to_string())
                .and_then(|l| to_country_day(&l)),
            Err(e) => Err(format!("unreadable CSV line: {e}")),
        };
        let row = row.map_err(|e| format!("line {}: {e}", start.line()));
        rows.push(Row { bytes, row });
    }
    Ok(rows)
}

fn to_country_day(l: &Line<'_>) -> Result<CountryDay, String> {
    let count = |field: &str, v: &str| -> Result<Option<i64>, String> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("{field}: `{v}` is not a whole number"))
    };
    let cumulative = |field: &str, v: &str| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("{field}: `{v}` is not a non-negative whole number"))
    };
    Ok(CountryDay {
        date_reported: NaiveDate::parse_from_str(l.date_reported, "%Y-%m-%d")
            .map_err(|_| format!("Date_reported: `{}` is not YYYY-MM-DD", l.date_reported))?,
        country_code: l
            .country_code
            .parse()
            .map_err(|e| format!("Country_code: {e}"))?,
        country: if l.country.is_empty() {
            return Err("Country: empty".into());
        } else {
            l.country.to_owned()
        },
        who_region: l
            .who_region
            .parse()
            .map_err(|e| format!("WHO_region: {e}"))?,
        new_cases: count("New_cases", l.new_cases)?,
        cumulative_cases: cumulative("Cumulative_cases", l.cumulative_cases)?,
        new_deaths: count("New_deaths", l.new_deaths)?,
        cumulative_deaths: cumulative("Cumulative_deaths", l.cumulative_deaths)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "Date_reported,Country_code,Country,WHO_region,New_cases,Cumulative_cases,New_deaths,Cumulative_deaths\n";

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// A file of `lines` (without the header).
    fn file(lines: &[String]) -> Vec<u8> {
        let mut body = HEAD.to_owned();
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        body.into_bytes()
    }

    /// Lines for `days` days from 2020-01-01, countries FR and DE, each with
    /// `new_cases` = the day's number.
    fn days(days: u32) -> Vec<String> {
        (0..days)
            .flat_map(|d| {
                let day = date("2020-01-01") + Days::new(d.into());
                ["FR,France", "DE,Germany"].map(|c| format!("{day},{c},EURO,{d},{d},0,0"))
            })
            .collect()
    }

    struct Polled {
        produced: Vec<String>,
        refused: Vec<(String, &'static str)>,
        next: Checkpoint,
    }

    fn poll(body: &[u8], at: &Checkpoint, window: u32, today: &str) -> Polled {
        let options = Options {
            correction_window_days: window,
            ..Options::default()
        };
        let rows = parse_csv(body, "http://x/who.csv").unwrap();
        let plan = plan(rows, body, at, &options, date(today)).unwrap();
        Polled {
            produced: plan
                .produce
                .iter()
                .map(|d| format!("{}/{}/{:?}", d.date_reported, d.country_code, d.new_cases))
                .collect(),
            refused: plan
                .refuse
                .into_iter()
                .map(|(b, reason, _)| (String::from_utf8_lossy(&body[b]).into_owned(), reason))
                .collect(),
            next: plan.next,
        }
    }

    #[test]
    fn new_days_once_and_corrections_inside_the_window_again() {
        let today = "2026-01-01";
        let first = poll(&file(&days(10)), &Checkpoint::default(), 3, today);
        assert_eq!(first.produced.len(), 20);
        assert_eq!(first.next.watermark.as_deref(), Some("2020-01-10"));
        // The window holds the last 3 days' rows, nothing else.
        assert_eq!(first.next.seen.len(), 6, "{:?}", first.next.seen);
        assert!(first.next.seen.contains_key("2020-01-08/FR"));
        assert!(!first.next.seen.contains_key("2020-01-07/FR"));
        // The same file again: nothing.
        let again = poll(&file(&days(10)), &first.next, 3, today);
        assert!(again.produced.is_empty(), "{:?}", again.produced);
        assert_eq!(again.next, first.next);
        // A day later, with corrections: a blank filled in on day 9 (in
        // the window), a figure changed on day 3 (outside it), and a row
        // added late for day 10.
        let mut lines = days(11);
        lines[16] = "2020-01-09,FR,France,EURO,,8,0,0".into();
        let blank = poll(&file(&lines), &first.next, 3, today);
        assert_eq!(
            blank.produced,
            [
                "2020-01-09/FR/None",
                "2020-01-11/FR/Some(10)",
                "2020-01-11/DE/Some(10)"
            ]
        );
        lines[16] = "2020-01-09,FR,France,EURO,42,8,0,0".into();
        lines[4] = "2020-01-03,FR,France,EURO,99,2,0,0".into();
        lines.push("2020-01-10,XXX,International commercial vessel,OTHER,1,1,0,0".into());
        let corrected = poll(&file(&lines), &blank.next, 3, today);
        assert_eq!(
            corrected.produced,
            ["2020-01-09/FR/Some(42)", "2020-01-10/XXX/Some(1)"]
        );
        assert_eq!(corrected.next.watermark.as_deref(), Some("2020-01-11"));
        assert_eq!(corrected.next.seen.len(), 7);
        assert_eq!(corrected.next.position, 20 + 3 + 2);
        // A window of 0: each day once, no state, no corrections.
        let none = poll(&file(&lines), &blank.next, 0, today);
        assert!(none.produced.is_empty() && none.next.seen.is_empty());
    }

    #[test]
    fn a_checkpoint_without_hashes_produces_its_window_once_more() {
        let old = Checkpoint {
            watermark: Some("2020-01-10".into()),
            position: 20,
            ..Checkpoint::default()
        };
        let p = poll(&file(&days(10)), &old, 2, "2026-01-01");
        assert_eq!(
            p.produced,
            [
                "2020-01-09/FR/Some(8)",
                "2020-01-09/DE/Some(8)",
                "2020-01-10/FR/Some(9)",
                "2020-01-10/DE/Some(9)"
            ]
        );
        assert!(
            poll(&file(&days(10)), &p.next, 2, "2026-01-01")
                .produced
                .is_empty()
        );
    }

    #[test]
    fn a_future_row_is_dead_lettered_once_and_moves_nothing_until_its_day() {
        let mut lines = days(2);
        let future = "2031-05-01,FR,France,EURO,1,1,0,0".to_owned();
        lines.push(future.clone());
        let body = file(&lines);
        let first = poll(&body, &Checkpoint::default(), 28, "2026-01-01");
        assert_eq!(first.produced.len(), 4);
        assert_eq!(first.refused, [(format!("{future}\n"), "future_date")]);
        assert_eq!(first.next.watermark.as_deref(), Some("2020-01-02"));
        // Polled again: not dead-lettered twice.
        let again = poll(&body, &first.next, 28, "2026-01-01");
        assert!(again.refused.is_empty() && again.produced.is_empty());
        // Its day comes (within the tolerance of a day): produced.
        let due = poll(&body, &again.next, 28, "2031-04-30");
        assert_eq!(due.produced, ["2031-05-01/FR/Some(1)"]);
        assert!(due.refused.is_empty());
        assert_eq!(due.next.watermark.as_deref(), Some("2031-05-01"));
        // The window moved with the watermark: the 2020 rows left the state.
        assert_eq!(due.next.seen.len(), 1, "{:?}", due.next.seen);
    }

    #[test]
    fn a_bad_line_is_dead_lettered_once_per_content_and_forgotten_when_gone() {
        let mut lines = days(2);
        lines.insert(1, "2020-01-01,FR,France,MOON,1,1,0,0".into());
        let first = poll(&file(&lines), &Checkpoint::default(), 28, "2026-01-01");
        assert_eq!(first.refused.len(), 1);
        assert_eq!(first.refused[0].1, "invalid_value");
        // Moved by a line inserted before it: still the same line.
        lines.insert(0, "2020-01-01,BE,Belgium,EURO,1,1,0,0".into());
        let moved = poll(&file(&lines), &first.next, 28, "2026-01-01");
        assert!(moved.refused.is_empty());
        assert_eq!(moved.produced, ["2020-01-01/BE/Some(1)"]);
        // Edited, still bad: a new version, dead-lettered once.
        lines[2] = "2020-01-01,FR,France,MARS,1,1,0,0".into();
        let edited = poll(&file(&lines), &moved.next, 28, "2026-01-01");
        assert_eq!(edited.refused.len(), 1);
        let refused = |c: &Checkpoint| c.seen.keys().filter(|k| k.starts_with(REFUSED)).count();
        assert_eq!(refused(&edited.next), 1, "the old version is forgotten");
        lines.remove(2);
        let gone = poll(&file(&lines), &edited.next, 28, "2026-01-01");
        assert_eq!(refused(&gone.next), 0);
    }

    #[test]
    fn the_window_is_bounded() {
        let config = |options: &str| SourceConfig {
            url: "http://x/who.csv".into(),
            topic: "t".into(),
            poll_interval_ms: 1,
            options: toml::from_str(options).unwrap(),
        };
        assert!(build(&config("correction_window_days = 3660")).is_ok());
        let err = build(&config("correction_window_days = 3661"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("correction_window_days: at most 3660"),
            "{err}"
        );
        let err = build(&config("window = 3")).err().unwrap();
        assert!(err.to_string().contains("unknown field `window`"), "{err}");
    }
}
