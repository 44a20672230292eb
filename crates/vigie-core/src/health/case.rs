//! `health.case`: one CDC case row, with the hand-written JSON writer the
//! producers use for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use uuid::Uuid;

use super::start_of_day;
use super::text::{CaseMonth, CountyFips, RowId, StateCode, StateFips};
use super::vocab::{AgeGroup, CurrentStatus, Ethnicity, Process, Race, Sex, SymptomStatus, YesNo};
use crate::envelope::Payload;
use crate::wire;

/// One row of the CDC "COVID-19 Case Surveillance Public Use Data with
/// Geography" data set (`health.case` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Socrata row identifier; the natural key.
    pub row_id: RowId,
    /// Month of the earliest date related to the case.
    pub case_month: CaseMonth,
    /// State of residence.
    pub res_state: StateCode,
    /// State FIPS code, absent when not published.
    #[serde(
        default,
        deserialize_with = "wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub state_fips_code: Option<StateFips>,
    /// County of residence, absent when suppressed.
    #[serde(
        default,
        deserialize_with = "wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub res_county: Option<SmolStr>,
    /// County FIPS code, absent when suppressed.
    #[serde(
        default,
        deserialize_with = "wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub county_fips_code: Option<CountyFips>,
    /// Age group.
    pub age_group: AgeGroup,
    /// Sex.
    pub sex: Sex,
    /// Race.
    pub race: Race,
    /// Ethnicity.
    pub ethnicity: Ethnicity,
    /// Weeks between the earliest date and the first positive specimen.
    #[serde(default, deserialize_with = "wire::nullable_i32")]
    pub case_positive_specimen_interval: Option<i32>,
    /// Weeks between the earliest date and symptom onset.
    #[serde(default, deserialize_with = "wire::nullable_i32")]
    pub case_onset_interval: Option<i32>,
    /// How the case was first identified.
    pub process: Process,
    /// Known exposure in the 14 days before onset.
    pub exposure_yn: YesNo,
    /// Case classification.
    pub current_status: CurrentStatus,
    /// Whether the patient had symptoms.
    pub symptom_status: SymptomStatus,
    /// Hospitalised.
    pub hosp_yn: YesNo,
    /// Admitted to intensive care.
    pub icu_yn: YesNo,
    /// Died of the illness.
    pub death_yn: YesNo,
    /// Had underlying conditions.
    pub underlying_conditions_yn: YesNo,
}

impl Payload for Case {
    const SCHEMA: &'static str = "health.case";
    const VERSION: u32 = 1;

    fn natural_key(&self) -> Vec<String> {
        vec![self.row_id.to_string()]
    }

    fn event_id(&self, source: &str) -> Uuid {
        crate::event_id(source, &[self.row_id.as_str()])
    }

    /// The data set only gives the month, so the event is dated to its first
    /// day.
    fn occurred_at(&self) -> DateTime<Utc> {
        start_of_day(self.case_month.first_day())
    }

    /// Per state, so that one state's cases stay in order.
    fn partition_key(&self) -> String {
        self.res_state.to_string()
    }

    /// The bytes serde_json writes, field by field (the US stream carries
    /// millions of cases); `a_case_is_written_as_serde_writes_it` checks
    /// that they are the same.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        use wire::{write_key as key, write_str as text};
        fn interval(out: &mut Vec<u8>, weeks: Option<i32>) {
            match weeks {
                Some(w) => out.extend_from_slice(itoa::Buffer::new().format(w).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'{');
        key(out, "row_id", true);
        text(out, self.row_id.as_str());
        key(out, "case_month", false);
        out.push(b'"');
        out.extend_from_slice(&self.case_month.text());
        out.push(b'"');
        key(out, "res_state", false);
        text(out, self.res_state.as_str());
        if let Some(fips) = &self.state_fips_code {
            key(out, "state_fips_code", false);
            text(out, fips.as_str());
        }
        if let Some(county) = &self.res_county {
            key(out, "res_county", false);
            text(out, county);
        }
        if let Some(fips) = &self.county_fips_code {
            key(out, "county_fips_code", false);
            text(out, fips.as_str());
        }
        for (name, value) in [
            ("age_group", self.age_group.as_str()),
            ("sex", self.sex.as_str()),
            ("race", self.race.as_str()),
            ("ethnicity", self.ethnicity.as_str()),
        ] {
            key(out, name, false);
            text(out, value);
        }
        key(out, "case_positive_specimen_interval", false);
        interval(out, self.case_positive_specimen_interval);
        key(out, "case_onset_interval", false);
        interval(out, self.case_onset_interval);
        for (name, value) in [
            ("process", self.process.as_str()),
            ("exposure_yn", self.exposure_yn.as_str()),
            ("current_status", self.current_status.as_str()),
            ("symptom_status", self.symptom_status.as_str()),
            ("hosp_yn", self.hosp_yn.as_str()),
            ("icu_yn", self.icu_yn.as_str()),
            ("death_yn", self.death_yn.as_str()),
            (
                "underlying_conditions_yn",
                self.underlying_conditions_yn.as_str(),
            ),
        ] {
            key(out, name, false);
            text(out, value);
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    /// Cases over every vocabulary value, absent and present options,
    /// and county names that need escapes.
    fn varied_cases() -> Vec<Case> {
        let counties = [
            None,
            Some("LOS ANGELES"),
            Some("O'BRIEN \"X\"\\\n\u{1}"),
            Some("DOÑA ANA"),
        ];
        let n = 64;
        (0..n)
            .map(|i| {
                let pick = |len: usize, salt: usize| (i * 7 + salt * 13 + i / len) % len;
                Case {
                    row_id: format!("row-{i}").parse().unwrap(),
                    case_month: CaseMonth::new(2019 + (i % 5) as u16, 1 + (i % 12) as u8).unwrap(),
                    res_state: "CA".parse().unwrap(),
                    state_fips_code: (i % 3 != 0).then(|| "6".parse().unwrap()),
                    res_county: counties[i % counties.len()].map(SmolStr::new),
                    county_fips_code: (i % 5 != 0).then(|| "06037".parse().unwrap()),
                    age_group: AgeGroup::ALL[pick(AgeGroup::ALL.len(), 1)],
                    sex: Sex::ALL[pick(Sex::ALL.len(), 2)],
                    race: Race::ALL[pick(Race::ALL.len(), 3)],
                    ethnicity: Ethnicity::ALL[pick(Ethnicity::ALL.len(), 4)],
                    case_positive_specimen_interval: (i % 4 != 0).then_some(i as i32 - 20),
                    case_onset_interval: (i % 3 == 0).then_some(-(i as i32)),
                    process: Process::ALL[pick(Process::ALL.len(), 5)],
                    exposure_yn: YesNo::ALL[pick(YesNo::ALL.len(), 6)],
                    current_status: CurrentStatus::ALL[pick(CurrentStatus::ALL.len(), 7)],
                    symptom_status: SymptomStatus::ALL[pick(SymptomStatus::ALL.len(), 8)],
                    hosp_yn: YesNo::ALL[pick(YesNo::ALL.len(), 9)],
                    icu_yn: YesNo::ALL[pick(YesNo::ALL.len(), 10)],
                    death_yn: YesNo::ALL[pick(YesNo::ALL.len(), 11)],
                    underlying_conditions_yn: YesNo::ALL[pick(YesNo::ALL.len(), 12)],
                }
            })
            .collect()
    }

    /// The upstream's version is left out when absent, written like the
    /// other timestamps when present, by both writers alike, and read back
    /// by both paths of the registry.
    #[test]
    fn the_upstream_version_is_optional_and_written_alike_by_both_writers() {
        use chrono::TimeZone;
        let case = varied_cases().remove(1);
        let at =
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(7);
        let plain = crate::encode_event("cdc-cases", &case, at).unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("upstream_updated_at"));
        let envelope = Envelope::new("cdc-cases", case.clone(), at).with_upstream_updated_at(at);
        let bytes = envelope.to_json_bytes().unwrap();
        assert_eq!(envelope.encode().unwrap(), bytes);
        assert_eq!(
            crate::encode_versioned_event("cdc-cases", &case, at, Some(at)).unwrap(),
            bytes
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["upstream_updated_at"], "2024-01-01T00:00:00.007000Z");
        let registry = crate::SchemaRegistry::embedded().unwrap();
        let checked = registry.validate(&bytes).expect("the schema takes it");
        assert_eq!(checked.upstream_updated_at, Some(at));
        match registry.parse(&bytes).unwrap() {
            crate::Event::Case(e) => assert_eq!(e, envelope),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_case_is_written_as_serde_writes_it() {
        use chrono::TimeZone;
        let cases = varied_cases();
        for v in [AgeGroup::ALL.len(), Race::ALL.len(), Process::ALL.len()] {
            assert!(cases.len() >= 4 * v, "every value comes up");
        }
        let at = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        for (i, case) in cases.into_iter().enumerate() {
            let mut fast = Vec::new();
            case.write_json(&mut fast).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&case).unwrap()
            );
            // The producers' path (no envelope built, the id hashed from the
            // borrowed row id) gives the same bytes as the envelope's.
            assert_eq!(
                case.event_id("cdc-cases"),
                crate::event_id("cdc-cases", &case.natural_key())
            );
            let direct = crate::encode_event("cdc-cases", &case, at).unwrap();
            let mut env = Envelope::new("cdc-cases", case, at);
            assert_eq!(direct, env.encode().unwrap());
            if i % 2 == 1 {
                // The envelope's own strings escaped too.
                env.source = "a\"b\\c".into();
                env.schema = "health.\u{7}".into();
            }
            assert_eq!(
                String::from_utf8(env.encode().unwrap()).unwrap(),
                String::from_utf8(env.to_json_bytes().unwrap()).unwrap()
            );
        }
    }
}
