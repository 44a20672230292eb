//! The row mapping: a row as SODA serves it (every value a string,
//! borrowed from the page), mapped to a typed [`Case`] or refused with a
//! reason code and a message.

use std::borrow::Cow;
use std::str::FromStr;

use serde::Deserialize;
use vigie_core::health::{Case, InvalidValue};

/// A string value of a row, borrowed from the page unless it holds escapes.
/// serde borrows a `Cow<str>` field, but not one inside an `Option`: that
/// would copy every value of every row.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a str>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// The text of a value that may be absent.
fn text<'t>(v: &'t Option<Text<'_>>) -> Option<&'t str> {
    v.as_ref().map(|t| &*t.0)
}

/// A row as SODA serves it: every value a string, nulls left out, system
/// fields (`:id`, `:updated_at`, ...) when `$select=:*,*` asks for them.
/// Other fields are ignored: the data set may gain columns.
#[derive(Deserialize)]
pub(super) struct SodaRow<'a> {
    #[serde(rename = ":id", borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(rename = ":updated_at", borrow)]
    pub(super) updated_at: Option<Text<'a>>,
    #[serde(borrow)]
    case_month: Option<Text<'a>>,
    #[serde(borrow)]
    res_state: Option<Text<'a>>,
    #[serde(borrow)]
    state_fips_code: Option<Text<'a>>,
    #[serde(borrow)]
    res_county: Option<Text<'a>>,
    #[serde(borrow)]
    county_fips_code: Option<Text<'a>>,
    #[serde(borrow)]
    age_group: Option<Text<'a>>,
    #[serde(borrow)]
    sex: Option<Text<'a>>,
    #[serde(borrow)]
    race: Option<Text<'a>>,
    #[serde(borrow)]
    ethnicity: Option<Text<'a>>,
    #[serde(borrow)]
    case_positive_specimen_interval: Option<Text<'a>>,
    #[serde(borrow)]
    case_onset_interval: Option<Text<'a>>,
    #[serde(borrow)]
    process: Option<Text<'a>>,
    #[serde(borrow)]
    exposure_yn: Option<Text<'a>>,
    #[serde(borrow)]
    current_status: Option<Text<'a>>,
    #[serde(borrow)]
    symptom_status: Option<Text<'a>>,
    #[serde(borrow)]
    hosp_yn: Option<Text<'a>>,
    #[serde(borrow)]
    icu_yn: Option<Text<'a>>,
    #[serde(borrow)]
    death_yn: Option<Text<'a>>,
    #[serde(borrow)]
    underlying_conditions_yn: Option<Text<'a>>,
}

type Refusal = (&'static str, String);

fn required<T: FromStr<Err = InvalidValue>>(
    field: &str,
    v: &Option<Text<'_>>,
) -> Result<T, Refusal> {
    let v = text(v).ok_or_else(|| ("missing_field", format!("{field}: missing")))?;
    v.parse()
        .map_err(|e: InvalidValue| ("invalid_value", format!("{field}: {e}")))
}

/// Absent and `NA` (suppressed) are both `None`.
fn optional<T: FromStr<Err = InvalidValue>>(
    field: &str,
    v: &Option<Text<'_>>,
) -> Result<Option<T>, Refusal> {
    match text(v) {
        None | Some("NA") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e: InvalidValue| ("invalid_value", format!("{field}: {e}"))),
    }
}

fn interval(field: &str, v: &Option<Text<'_>>) -> Result<Option<i32>, Refusal> {
    match text(v) {
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
    pub(super) fn into_case(self) -> Result<Case, Refusal> {
        Ok(Case {
            row_id: required(":id", &self.id)?,
            case_month: required("case_month", &self.case_month)?,
            res_state: required("res_state", &self.res_state)?,
            state_fips_code: optional("state_fips_code", &self.state_fips_code)?,
            res_county: match text(&self.res_county) {
                None | Some("NA") => None,
                Some(s) => Some(s.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_borrowed_unless_escaped() {
        let row: SodaRow<'_> =
            serde_json::from_str(r#"{"res_state":"CA","res_county":"O'BRIEN \"X\""}"#).unwrap();
        assert!(matches!(row.res_state, Some(Text(Cow::Borrowed("CA")))));
        assert!(matches!(&row.res_county, Some(Text(Cow::Owned(c))) if c == "O'BRIEN \"X\""));
        assert!(row.sex.is_none());
        assert!(serde_json::from_str::<SodaRow<'_>>(r#"{"sex":1}"#).is_err());
    }
}
