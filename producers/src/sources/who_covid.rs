//! `who-covid`: the WHO COVID-19 global daily CSV
//! (`Date_reported,Country_code,Country,WHO_region,New_cases,
//! Cumulative_cases,New_deaths,Cumulative_deaths`). The file is published
//! whole and grows by a day at a time: each poll reads it and produces the
//! rows dated after the checkpoint's watermark, the last date produced.
//!
//! No options.

use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use vigie_core::health::CountryDay;

use super::outgoing;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

struct WhoCovid {
    url: String,
}

fn build(config: &SourceConfig) -> Result<Box<dyn Source>, SourceError> {
    let _: Options = config.options(NAME)?;
    Ok(Box::new(WhoCovid {
        url: config.url.clone(),
    }))
}

#[async_trait::async_trait]
impl Source for WhoCovid {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn poll(&mut self, at: &Checkpoint, cx: &PollContext<'_>) -> Result<Poll, SourceError> {
        let fetched = cx.http.get(&self.url, &[], cx.shutdown).await?;
        let after = match &at.watermark {
            Some(w) => Some(NaiveDate::parse_from_str(w, "%Y-%m-%d").map_err(|_| {
                SourceError::Config(format!(
                    "checkpoint of {NAME}: watermark `{w}` is not a date"
                ))
            })?),
            None => None,
        };
        let rows = parse_csv(&fetched.body, &self.url)?;
        let mut poll = Poll {
            next: at.clone(),
            ..Poll::default()
        };
        let now = Utc::now();
        let mut newest = after;
        for row in rows {
            match row {
                Ok(day) => {
                    if after.is_some_and(|a| day.date_reported <= a) {
                        continue;
                    }
                    newest = newest.max(Some(day.date_reported));
                    poll.events.push(outgoing(NAME, day, now));
                }
                Err((raw, error)) => poll.rejects.push(Reject {
                    raw,
                    reason: "invalid_value",
                    error,
                    url: self.url.clone(),
                }),
            }
        }
        poll.next.watermark = newest.map(|d| d.format("%Y-%m-%d").to_string());
        poll.next.position = at.position + poll.events.len() as u64;
        Ok(poll)
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

/// A parsed row, or the line's bytes and why it does not map.
pub type ParsedRow = Result<CountryDay, (Vec<u8>, String)>;

/// Parses the whole file. A wrong header fails the file; a bad line is
/// refused alone (its bytes kept for the DLQ).
pub fn parse_csv(body: &[u8], url: &str) -> Result<Vec<ParsedRow>, SourceError> {
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
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                rows.push(Err((Vec::new(), format!("unreadable CSV line: {e}"))));
                continue;
            }
        }
        let line_no = record.position().map_or(0, |p| p.line());
        let raw = || {
            let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
            let _ = w.write_byte_record(&record);
            w.into_inner().unwrap_or_default()
        };
        let row = record
            .deserialize::<Line<'_>>(Some(&header))
            .map_err(|e| e.to_string())
            .and_then(|l| to_country_day(&l));
        rows.push(row.map_err(|e| (raw(), format!("line {line_no}: {e}"))));
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
