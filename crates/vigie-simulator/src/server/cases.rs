//! The CDC case rows over Socrata's SODA 2.1 API
//! (`/resource/n8mc-b4w4.json`): the query parameters a producer pages with,
//! SODA-style errors, and the JSON of a page written by hand, since a page
//! can hold 50,000 rows.

use std::io::Write;
use std::ops::Range;

use chrono::{Days, NaiveDate, NaiveDateTime};
use vigie_core::health::Case;

use crate::CaseGenerator;

/// Path of the data set's SODA resource.
pub const CASES_PATH: &str = "/resource/n8mc-b4w4.json";

/// `$limit` when the query gives none.
pub const DEFAULT_LIMIT: u64 = 1_000;
/// Largest `$limit` accepted.
pub const MAX_LIMIT: u64 = 50_000;

/// `:created_at` and `:updated_at` of row 0; row `i` is `i` milliseconds
/// later.
pub const ROW_EPOCH: NaiveDateTime = match NaiveDate::from_ymd_opt(2024, 1, 1) {
    Some(date) => match date.and_hms_opt(0, 0, 0) {
        Some(at) => at,
        None => NaiveDateTime::MIN,
    },
    None => NaiveDateTime::MIN,
};

/// The floating-timestamp format of `:updated_at`.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f";

/// A request SODA refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SodaError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl SodaError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "query.compiler.malformed",
            message: message.into(),
        }
    }

    pub(crate) fn bad_token() -> Self {
        Self {
            status: 403,
            code: "permission_denied",
            message: "Invalid app_token specified".to_owned(),
        }
    }

    /// The JSON body, as Socrata writes its errors.
    pub(crate) fn body(&self) -> Vec<u8> {
        serde_json::json!({"code": self.code, "error": true, "message": self.message})
            .to_string()
            .into_bytes()
    }
}

/// A `$where` comparison on `:updated_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// `:updated_at > 'TS'`
    After(NaiveDateTime),
    /// `:updated_at >= 'TS'`
    AtOrAfter(NaiveDateTime),
}

impl Since {
    /// Index of the first row the comparison keeps, computed from the
    /// timestamp rather than by scanning.
    pub(crate) fn first_index(self) -> u64 {
        let (at, strict) = match self {
            Since::After(at) => (at, true),
            Since::AtOrAfter(at) => (at, false),
        };
        let delta = at - ROW_EPOCH;
        let nanos =
            i128::from(delta.num_seconds()) * 1_000_000_000 + i128::from(delta.subsec_nanos());
        // Row i is at i ms: the first row strictly after `nanos` is
        // floor(nanos / 1ms) + 1, the first at or after it ceil(nanos / 1ms).
        let first = if strict {
            nanos.div_euclid(1_000_000) + 1
        } else {
            -((-nanos).div_euclid(1_000_000))
        };
        u64::try_from(first.max(0)).unwrap_or(u64::MAX)
    }
}

/// A validated SODA query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub(crate) limit: u64,
    pub(crate) offset: u64,
    pub(crate) since: Option<Since>,
    /// `$select=:*,*`: the system fields too.
    pub(crate) system_fields: bool,
    /// `$$app_token`, which Socrata accepts instead of the header.
    pub(crate) app_token: Option<String>,
}

impl PageQuery {
    /// Parses the query parameters; anything this simulator does not
    /// implement is refused, naming the parameter.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<Self, SodaError> {
        let mut query = PageQuery {
            limit: DEFAULT_LIMIT,
            offset: 0,
            since: None,
            system_fields: false,
            app_token: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key.as_str()) {
                return Err(SodaError::malformed(format!(
                    "query parameter {key} is given more than once"
                )));
            }
            seen.push(key);
            match key.as_str() {
                "$limit" => {
                    query.limit = parse_count(key, value)?;
                    if query.limit > MAX_LIMIT {
                        return Err(SodaError::malformed(format!(
                            "$limit must be at most {MAX_LIMIT}, got {value}"
                        )));
                    }
                }
                "$offset" => query.offset = parse_count(key, value)?,
                "$order" => parse_order(value)?,
                "$where" => query.since = Some(parse_where(value)?),
                "$select" => query.system_fields = parse_select(value)?,
                "$$app_token" => query.app_token = Some(value.clone()),
                other => {
                    return Err(SodaError::malformed(format!(
                        "unsupported query parameter {other}: this simulator implements \
                         $limit, $offset, $order, $where and $select"
                    )));
                }
            }
        }
        Ok(query)
    }

    /// The rows of the page when `available` rows exist, starting
    /// `repeat` rows early when a `repeat_rows` fault is injected.
    pub(crate) fn rows(&self, available: u64, repeat: u64) -> Range<u64> {
        let first = self.since.map_or(0, Since::first_index);
        let start = first.saturating_add(self.offset);
        let end = start.saturating_add(self.limit).min(available);
        start.saturating_sub(repeat).min(end)..end
    }
}

fn parse_count(key: &str, value: &str) -> Result<u64, SodaError> {
    value.trim().parse().map_err(|_| {
        SodaError::malformed(format!(
            "{key} must be a non-negative integer, got {value:?}"
        ))
    })
}

/// `:id` or `:updated_at`, optionally ascending: both are row order here.
fn parse_order(value: &str) -> Result<(), SodaError> {
    let mut words = value.split_whitespace();
    let column = words.next().unwrap_or("");
    let direction = words.next();
    let ok = matches!(column, ":id" | ":updated_at")
        && direction.is_none_or(|d| d.eq_ignore_ascii_case("asc"))
        && words.next().is_none();
    if ok {
        Ok(())
    } else {
        Err(SodaError::malformed(format!(
            "unsupported $order {value:?}: this simulator orders by :id or :updated_at, ascending"
        )))
    }
}

/// `:updated_at > 'TS'` or `:updated_at >= 'TS'`.
fn parse_where(value: &str) -> Result<Since, SodaError> {
    let unsupported = || {
        SodaError::malformed(format!(
            "unsupported $where {value:?}: this simulator accepts :updated_at > 'TS' or \
             :updated_at >= 'TS' with TS like 2024-01-01T00:00:00.000"
        ))
    };
    let rest = value
        .trim()
        .strip_prefix(":updated_at")
        .ok_or_else(unsupported)?
        .trim_start();
    let (strict, rest) = match rest.strip_prefix(">=") {
        Some(rest) => (false, rest),
        None => (true, rest.strip_prefix('>').ok_or_else(unsupported)?),
    };
    let literal = rest
        .trim()
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or_else(unsupported)?;
    let at = NaiveDateTime::parse_from_str(literal, TIMESTAMP_FORMAT).map_err(|_| {
        SodaError::malformed(format!(
            "$where: {literal:?} is not a floating timestamp like 2024-01-01T00:00:00.000"
        ))
    })?;
    Ok(if strict {
        Since::After(at)
    } else {
        Since::AtOrAfter(at)
    })
}

/// Absent or `*`: the data set's columns; `:*,*`: the system fields too.
fn parse_select(value: &str) -> Result<bool, SodaError> {
    let compact: String = value.split_whitespace().collect();
    match compact.as_str() {
        "*" => Ok(false),
        ":*,*" | "*,:*" => Ok(true),
        _ => Err(SodaError::malformed(format!(
            "unsupported $select {value:?}: this simulator accepts * or :*,*"
        ))),
    }
}

/// Writes the JSON array of rows `range` of `generator`.
pub(crate) fn render_page(generator: &CaseGenerator, range: Range<u64>, system: bool) -> Vec<u8> {
    let rows = range.end.saturating_sub(range.start);
    let mut out = Vec::with_capacity(64 + (rows as usize).min(MAX_LIMIT as usize * 2) * 520);
    let mut clock = RowClock::default();
    out.push(b'[');
    for (n, index) in range.enumerate() {
        if n > 0 {
            out.extend_from_slice(b"\n,");
        }
        write_row(&mut out, &mut clock, index, &generator.row(index), system);
    }
    out.extend_from_slice(b"]\n");
    out
}

/// The `:updated_at` text of row `index`.
pub fn row_timestamp(index: u64) -> String {
    let mut out = Vec::new();
    RowClock::default().write(&mut out, index);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes row timestamps, formatting each day's date only once.
#[derive(Default)]
struct RowClock {
    day: Option<(u64, String)>,
}

impl RowClock {
    fn write(&mut self, out: &mut Vec<u8>, index: u64) {
        let seconds = index / 1000;
        let day = seconds / 86_400;
        if self.day.as_ref().is_none_or(|(d, _)| *d != day) {
            let date = ROW_EPOCH
                .date()
                .checked_add_days(Days::new(day))
                .unwrap_or(NaiveDate::MAX);
            self.day = Some((day, date.format("%Y-%m-%d").to_string()));
        }
        if let Some((_, date)) = &self.day {
            out.extend_from_slice(date.as_bytes());
        }
        let in_day = seconds % 86_400;
        out.push(b'T');
        two_digits(out, in_day / 3600);
        out.push(b':');
        two_digits(out, in_day / 60 % 60);
        out.push(b':');
        two_digits(out, in_day % 60);
        out.push(b'.');
        let millis = index % 1000;
        out.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ]);
    }
}

fn two_digits(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
}

/// `,"key":"value"` for a value that needs no JSON escaping (vocabulary
/// strings, codes, digits).
fn plain(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

fn write_row(out: &mut Vec<u8>, clock: &mut RowClock, index: u64, row: &Case, system: bool) {
    out.push(b'{');
    if system {
        // Row ids use a 32-symbol alphabet and `-._`: nothing to escape.
        out.extend_from_slice(b"\":id\":\"");
        out.extend_from_slice(row.row_id.as_str().as_bytes());
        out.extend_from_slice(b"\",\":created_at\":\"");
        clock.write(out, index);
        out.extend_from_slice(b"\",\":updated_at\":\"");
        clock.write(out, index);
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"case_month\":\"");
    // `YYYY-MM`; the writes to a Vec cannot fail.
    let _ = write!(out, "{}", row.case_month);
    out.push(b'"');
    plain(out, "res_state", row.res_state.as_str());
    if let Some(fips) = &row.state_fips_code {
        plain(out, "state_fips_code", fips.as_str());
    }
    match &row.res_county {
        Some(county) => {
            out.extend_from_slice(b",\"res_county\":");
            let _ = serde_json::to_writer(&mut *out, county);
        }
        None => plain(out, "res_county", "NA"),
    }
    plain(
        out,
        "county_fips_code",
        row.county_fips_code.as_ref().map_or("NA", |f| f.as_str()),
    );
    plain(out, "age_group", row.age_group.as_str());
    plain(out, "sex", row.sex.as_str());
    plain(out, "race", row.race.as_str());
    plain(out, "ethnicity", row.ethnicity.as_str());
    for (key, weeks) in [
        (
            "case_positive_specimen_interval",
            row.case_positive_specimen_interval,
        ),
        ("case_onset_interval", row.case_onset_interval),
    ] {
        if let Some(weeks) = weeks {
            let _ = write!(out, ",\"{key}\":\"{weeks}\"");
        }
    }
    plain(out, "process", row.process.as_str());
    plain(out, "exposure_yn", row.exposure_yn.as_str());
    plain(out, "current_status", row.current_status.as_str());
    plain(out, "symptom_status", row.symptom_status.as_str());
    plain(out, "hosp_yn", row.hosp_yn.as_str());
    plain(out, "icu_yn", row.icu_yn.as_str());
    plain(out, "death_yn", row.death_yn.as_str());
    plain(
        out,
        "underlying_conditions_yn",
        row.underlying_conditions_yn.as_str(),
    );
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use vigie_core::health::{
        AgeGroup, CurrentStatus, Ethnicity, Process, Race, Sex, SymptomStatus, YesNo,
    };

    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT).unwrap()
    }

    #[test]
    fn timestamps_are_row_milliseconds() {
        assert_eq!(row_timestamp(0), "2024-01-01T00:00:00.000");
        assert_eq!(row_timestamp(1), "2024-01-01T00:00:00.001");
        assert_eq!(
            row_timestamp(86_400_000 + 3_723_045),
            "2024-01-02T01:02:03.045"
        );
        let mut clock = RowClock::default();
        for index in [5, 86_399_999, 86_400_000, 7, 1 << 40] {
            let mut out = Vec::new();
            clock.write(&mut out, index);
            let expected = ROW_EPOCH + chrono::TimeDelta::milliseconds(index as i64);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
            );
        }
    }

    #[test]
    fn first_index_from_the_timestamp() {
        let after = |ts: &str| Since::After(at(ts)).first_index();
        let from = |ts: &str| Since::AtOrAfter(at(ts)).first_index();
        assert_eq!(after("2024-01-01T00:00:00.000"), 1);
        assert_eq!(from("2024-01-01T00:00:00.000"), 0);
        assert_eq!(after("2024-01-01T00:00:01.234"), 1235);
        assert_eq!(from("2024-01-01T00:00:01.234"), 1234);
        assert_eq!(after("2024-01-01T00:00:01.2345"), 1235);
        assert_eq!(from("2024-01-01T00:00:01.2345"), 1235);
        assert_eq!(after("2024-01-01T00:00:01"), 1001);
        assert_eq!(after("2023-12-31T23:59:59.999"), 0);
        assert_eq!(from("2023-06-01T00:00:00"), 0);
        for index in [0, 1, 999, 86_400_001] {
            assert_eq!(after(&row_timestamp(index)), index + 1);
            assert_eq!(from(&row_timestamp(index)), index);
        }
    }

    #[test]
    fn queries_parse_or_name_the_parameter() {
        let q = PageQuery::parse(&pairs(&[
            ("$limit", "50000"),
            ("$offset", "10"),
            ("$order", ":updated_at ASC"),
            ("$where", ":updated_at >= '2024-01-01T00:00:00.010'"),
            ("$select", ":*,*"),
        ]))
        .unwrap();
        assert_eq!((q.limit, q.offset, q.system_fields), (50_000, 10, true));
        assert_eq!(q.rows(1_000_000, 0), 20..50_020);
        assert_eq!(q.rows(30, 0), 20..30);
        assert_eq!(q.rows(15, 0), 15..15);
        assert_eq!(q.rows(1_000_000, 5), 15..50_020);
        assert_eq!(q.rows(22, 5), 15..22);
        assert_eq!(q.rows(12, 50), 0..12);
        for (key, value) in [
            ("$limit", "50001"),
            ("$limit", "-1"),
            ("$offset", "x"),
            ("$order", ":id DESC"),
            ("$order", "case_month"),
            ("$where", "res_state = 'CA'"),
            ("$where", ":updated_at > 2024-01-01"),
            ("$where", ":updated_at > 'yesterday'"),
            ("$select", "res_state"),
            ("res_state", "CA"),
            ("$q", "x"),
        ] {
            let err = PageQuery::parse(&pairs(&[(key, value)])).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.contains(key), "{key}: {}", err.message);
        }
        let twice = PageQuery::parse(&pairs(&[("$limit", "1"), ("$limit", "2")]));
        assert!(twice.unwrap_err().message.contains("$limit"));
    }

    #[test]
    fn rows_are_written_as_socrata_does() {
        let row = Case {
            row_id: "row-abcd.efgh_ijkm".parse().unwrap(),
            case_month: "2021-03".parse().unwrap(),
            res_state: "CA".parse().unwrap(),
            state_fips_code: None,
            res_county: Some("O'BRIEN \"X\"".into()),
            county_fips_code: None,
            age_group: AgeGroup::Age18To49,
            sex: Sex::Female,
            race: Race::NativeHawaiianPacificIslander,
            ethnicity: Ethnicity::Unknown,
            case_positive_specimen_interval: Some(-2),
            case_onset_interval: None,
            process: Process::Missing,
            exposure_yn: YesNo::Yes,
            current_status: CurrentStatus::Probable,
            symptom_status: SymptomStatus::NA,
            hosp_yn: YesNo::No,
            icu_yn: YesNo::Unknown,
            death_yn: YesNo::Missing,
            underlying_conditions_yn: YesNo::NA,
        };
        let mut out = Vec::new();
        write_row(&mut out, &mut RowClock::default(), 3, &row, true);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let object = value.as_object().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{":id":"row-abcd.efgh_ijkm",":created_at":"#));
        assert!(text.find(r#"":updated_at""#) < text.find(r#""case_month""#));
        assert!(text.ends_with(r#""underlying_conditions_yn":"NA"}"#));
        assert!(!object.contains_key("state_fips_code"));
        assert!(!object.contains_key("case_onset_interval"));
        assert_eq!(value["res_county"], "O'BRIEN \"X\"");
        assert_eq!(value["county_fips_code"], "NA");
        assert_eq!(value["case_positive_specimen_interval"], "-2");
        assert_eq!(value[":updated_at"], "2024-01-01T00:00:00.003");
        assert!(object.values().all(serde_json::Value::is_string));
    }
}
