//! The SODA page parser: a body read as a JSON array of rows, in one pass
//! straight into typed rows when every row maps, otherwise row by row so
//! that a row that does not map is refused alone.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use vigie_core::health::Case;

use super::par_map;
use super::row::{SodaRow, Text};
use crate::source::SourceError;

/// A page, each row mapped or refused.
pub struct Page<'a> {
    /// Rows in order.
    pub rows: Vec<Row<'a>>,
}

/// One row of a page.
pub struct Row<'a> {
    /// The row's JSON, as served (for a refused row's dead letter).
    pub raw: &'a [u8],
    /// Its `:updated_at`, when present.
    pub updated_at: Option<Cow<'a, str>>,
    /// Its `:id`, when present (a refused row's too: keyset paging goes
    /// on after it).
    pub id: Option<Cow<'a, str>>,
    /// The typed row, or why it does not map (reason code, message).
    pub case: Result<Case, (&'static str, String)>,
}

/// Parses a SODA page. A body that is not a JSON array is an error for the
/// whole page; a row that does not map is refused alone.
pub fn parse_page<'a>(body: &'a [u8], url: &str) -> Result<Page<'a>, SourceError> {
    parse_rows(page_text(body, url)?, url, 1)
}

/// The one-pass parse a poll tries first (every row typed, or `None`), for
/// the fuzz target that holds it equal to [`parse_page`]: `None` exactly
/// when a row does not map or the body is no page.
#[doc(hidden)]
pub fn parse_page_one_pass(body: &[u8]) -> Option<Page<'_>> {
    parse_page_typed(std::str::from_utf8(body).ok()?)
}

fn not_a_page(url: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError::Format {
        url: url.to_owned(),
        error: format!("not a SODA page (a JSON array of rows): {error}"),
    }
}

/// The body as text, its UTF-8 checked once for the whole page (parsing
/// from `&str`, serde_json does not check each string again).
pub(super) fn page_text<'a>(body: &'a [u8], url: &str) -> Result<&'a str, SourceError> {
    std::str::from_utf8(body).map_err(|e| not_a_page(url, e))
}

/// The page in one pass, straight into typed rows; `None` if any row does
/// not map (or the body is no page at all): [`parse_rows`] then says which.
/// The rows' `raw` is left empty: it only serves refused rows.
pub(super) fn parse_page_typed(text: &str) -> Option<Page<'_>> {
    use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};

    /// Maps each row as soon as it is read: no page-sized vector of raw
    /// rows grows and moves meanwhile. Stops at the first row that does
    /// not map.
    struct TypedRows {
        capacity: usize,
    }
    impl<'de> DeserializeSeed<'de> for TypedRows {
        type Value = Vec<Row<'de>>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for TypedRows {
        type Value = Vec<Row<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of SODA rows")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut rows = Vec::with_capacity(self.capacity);
            while let Some(mut r) = seq.next_element::<SodaRow<'de>>()? {
                let updated_at = r.updated_at.take().map(|t| t.0);
                let id = r.id.as_ref().map(|t| t.0.clone());
                let case = r
                    .into_case()
                    .map_err(|_| A::Error::custom("a row does not map"))?;
                rows.push(Row {
                    raw: &[],
                    updated_at,
                    id,
                    case: Ok(case),
                });
            }
            Ok(rows)
        }
    }
    // A served row takes 400 to 600 bytes.
    let capacity = text.len() / 400 + 1;
    let mut de = serde_json::Deserializer::from_str(text);
    let rows = TypedRows { capacity }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(Page { rows })
}

/// The page row by row, the rows parsed on `workers` threads.
pub(super) fn parse_rows<'a>(
    text: &'a str,
    url: &str,
    workers: usize,
) -> Result<Page<'a>, SourceError> {
    let raws: Vec<&'a RawValue> = serde_json::from_str(text).map_err(|e| not_a_page(url, e))?;
    let rows = par_map(raws, workers, parse_row);
    Ok(Page { rows })
}

fn parse_row(raw: &RawValue) -> Row<'_> {
    let text = raw.get();
    match serde_json::from_str::<SodaRow<'_>>(text) {
        Ok(mut r) => Row {
            raw: text.as_bytes(),
            updated_at: r.updated_at.take().map(|t| t.0),
            id: r.id.as_ref().map(|t| t.0.clone()),
            case: r.into_case(),
        },
        Err(e) => {
            let key = serde_json::from_str::<Key<'_>>(text).ok();
            let (updated_at, id) = key.map_or((None, None), |k| (k.updated_at, k.id));
            Row {
                raw: text.as_bytes(),
                updated_at: updated_at.map(|t| t.0),
                id: id.map(|t| t.0),
                case: Err(("bad_row", format!("row is not a SODA case row: {e}"))),
            }
        }
    }
}

/// Just the paging key of a row that does not otherwise parse.
#[derive(Deserialize)]
struct Key<'a> {
    #[serde(rename = ":updated_at", borrow)]
    updated_at: Option<Text<'a>>,
    #[serde(rename = ":id", borrow)]
    id: Option<Text<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_parse_equals_the_row_by_row_parse() {
        let text = r#"[{":id":"row-a",":updated_at":"2024-01-01T00:00:00.000","case_month":"2021-03","res_state":"CA","state_fips_code":"6","res_county":"LOS ANGELES","county_fips_code":"6037","age_group":"18 to 49 years","sex":"Female","race":"White","ethnicity":"Unknown","case_positive_specimen_interval":"0","process":"Missing","exposure_yn":"Missing","current_status":"Laboratory-confirmed case","symptom_status":"Symptomatic","hosp_yn":"No","icu_yn":"Missing","death_yn":"No","underlying_conditions_yn":"Missing"}
,{":id":"row-b",":updated_at":"2024-01-01T00:00:00.001","case_month":"2021-04","res_state":"TX","res_county":"NA","county_fips_code":"NA","age_group":"65+ years","sex":"Male","race":"NA","ethnicity":"Missing","case_onset_interval":"-1","process":"Missing","exposure_yn":"Yes","current_status":"Probable Case","symptom_status":"Unknown","hosp_yn":"Yes","icu_yn":"Unknown","death_yn":"Yes","underlying_conditions_yn":"Missing","new_column":"ignored"}]"#;
        let fast = parse_page_typed(text).expect("every row maps");
        let slow = parse_rows(text, "u", 2).unwrap();
        assert_eq!(fast.rows.len(), 2);
        // Values are borrowed from the page, not copied.
        assert!(matches!(fast.rows[0].updated_at, Some(Cow::Borrowed(_))));
        for (f, s) in fast.rows.iter().zip(&slow.rows) {
            assert_eq!(f.case.as_ref().unwrap(), s.case.as_ref().unwrap());
            assert_eq!(f.updated_at, s.updated_at);
            assert_eq!(f.id, s.id);
        }
        // One row that does not map: no one-pass page, the row-by-row
        // parse refuses that row alone.
        let bad = text.replacen("2021-04", "2021-13", 1);
        assert!(parse_page_typed(&bad).is_none());
        let rows = parse_rows(&bad, "u", 1).unwrap().rows;
        assert!(rows[0].case.is_ok() && rows[1].case.is_err());
        assert!(rows[1].raw.starts_with(b"{\":id\":\"row-b"));
        assert_eq!(rows[1].id.as_deref(), Some("row-b"));
        // A row that is not a case row still gives its paging key.
        let odd = r#"[{":id":"row-c",":updated_at":"2024-01-01T00:00:00.002","sex":1}]"#;
        let rows = parse_rows(odd, "u", 1).unwrap().rows;
        assert_eq!(rows[0].case.as_ref().unwrap_err().0, "bad_row");
        assert_eq!(rows[0].id.as_deref(), Some("row-c"));
        assert_eq!(
            rows[0].updated_at.as_deref(),
            Some("2024-01-01T00:00:00.002")
        );
    }
}
