//! The WHO COVID-19 global daily CSV
//! (`/whdh/COVID/WHO-COVID-19-global-daily-data.csv`): the whole file, one
//! line per country per available day.

use std::io::Write;

use chrono::NaiveDate;
use vigie_core::health::CountryDay;

use crate::CountryDayGenerator;

/// Path of the CSV file.
pub const WHO_CSV_PATH: &str = "/whdh/COVID/WHO-COVID-19-global-daily-data.csv";

/// Header line of the file, without its line feed.
pub const WHO_CSV_HEADER: &str = "Date_reported,Country_code,Country,WHO_region,New_cases,Cumulative_cases,New_deaths,Cumulative_deaths";

/// Date of day 0, the first date of the real file.
pub const WHO_FIRST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2020, 1, 3) {
    Some(date) => date,
    None => NaiveDate::MIN,
};

/// The most days the file can hold: the last one must be written `YYYY`.
pub(crate) fn max_days() -> u32 {
    let last = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX);
    u32::try_from((last - WHO_FIRST_DATE).num_days() + 1).unwrap_or(u32::MAX)
}

/// The file with days `0..days` of `generator`, LF line endings.
pub(crate) fn render(generator: &CountryDayGenerator, days: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 * (days as usize * generator.countries() + 1));
    out.extend_from_slice(WHO_CSV_HEADER.as_bytes());
    out.push(b'\n');
    for day in generator.days(0..days) {
        for row in &day {
            write_row(&mut out, row);
        }
    }
    out
}

fn write_row(out: &mut Vec<u8>, row: &CountryDay) {
    // Writes to a Vec cannot fail.
    let _ = write!(
        out,
        "{},{},",
        row.date_reported.format("%Y-%m-%d"),
        row.country_code
    );
    write_field(out, &row.country);
    let _ = write!(out, ",{},", row.who_region);
    if let Some(n) = row.new_cases {
        let _ = write!(out, "{n}");
    }
    let _ = write!(out, ",{},", row.cumulative_cases);
    if let Some(n) = row.new_deaths {
        let _ = write!(out, "{n}");
    }
    let _ = writeln!(out, ",{}", row.cumulative_deaths);
}

/// A CSV field, quoted (with doubled quotes) when it holds a comma, a quote
/// or a line break.
fn write_field(out: &mut Vec<u8>, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        write_field(&mut out, "Bonaire, Sint Eustatius and Saba");
        out.push(b',');
        write_field(&mut out, "Côte d'Ivoire");
        out.push(b',');
        write_field(&mut out, "A \"B\"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""Bonaire, Sint Eustatius and Saba",Côte d'Ivoire,"A ""B""""#
        );
    }

    #[test]
    fn the_last_day_fits() {
        let generator = CountryDayGenerator::new(1, WHO_FIRST_DATE, 1).unwrap();
        assert_eq!(
            generator.date(max_days() - 1),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()
        );
    }
}
