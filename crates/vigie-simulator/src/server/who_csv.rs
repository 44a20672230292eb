//! The WHO COVID-19 global daily CSV
//! (`/whdh/COVID/WHO-COVID-19-global-daily-data.csv`): the whole file, one
//! line per country per available day; optionally the last days as first
//! published (revised as the file grows) and a row dated in the future.

use std::io::Write;

use chrono::{Datelike, Days, NaiveDate};
use vigie_core::health::CountryDay;

use super::config::WhoSim;
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

/// How far past the file's last day the row of [`WhoSim::future_row`] is
/// dated: a century, as a mistyped year would put it.
pub const FUTURE_ROW_DAYS: u64 = 36_525;

/// The rows of the file when it holds days `0..days` of `generator`, in
/// file order: day by day, the last [`WhoSim::preliminary_days`] days as
/// first published (`New_cases` blank, `New_deaths` one more than the final
/// figure), then the row of [`WhoSim::future_row`] when set and its date
/// can be written.
pub fn served_rows(generator: &CountryDayGenerator, days: u32, who: &WhoSim) -> Vec<CountryDay> {
    let final_days = days.saturating_sub(who.preliminary_days);
    let mut rows = Vec::with_capacity(days as usize * generator.countries() + 1);
    // The future row: the last day's first row as generated, re-dated.
    let mut future = None;
    for (index, day) in (0..days).zip(generator.days(0..days)) {
        if who.future_row && index + 1 == days {
            future = day.first().cloned();
        }
        for mut row in day {
            if index >= final_days {
                row.new_cases = None;
                row.new_deaths = Some(row.new_deaths.unwrap_or(0) + 1);
            }
            rows.push(row);
        }
    }
    if let Some(mut row) = future
        && let Some(date) = row
            .date_reported
            .checked_add_days(Days::new(FUTURE_ROW_DAYS))
            .filter(|d| d.year() <= 9999)
    {
        row.date_reported = date;
        rows.push(row);
    }
    rows
}

/// The file with days `0..days` of `generator`, as `who` serves it, LF
/// line endings.
pub(crate) fn render(generator: &CountryDayGenerator, days: u32, who: &WhoSim) -> Vec<u8> {
    let rows = served_rows(generator, days, who);
    let mut out = Vec::with_capacity(96 * (rows.len() + 1));
    out.extend_from_slice(WHO_CSV_HEADER.as_bytes());
    out.push(b'\n');
    for row in &rows {
        write_row(&mut out, row);
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
    fn preliminary_days_are_revised_as_the_file_grows() {
        let generator = CountryDayGenerator::new(3, WHO_FIRST_DATE, 2).unwrap();
        let who = WhoSim {
            preliminary_days: 2,
            future_row: true,
            ..WhoSim::default()
        };
        let plain: Vec<_> = generator.days(0..5).flatten().collect();
        let rows = served_rows(&generator, 5, &who);
        assert_eq!(rows.len(), 11);
        assert_eq!(rows[..6], plain[..6], "days 0 to 2 are final");
        for (served, last) in rows[6..10].iter().zip(&plain[6..10]) {
            assert_eq!(served.new_cases, None);
            assert_eq!(served.new_deaths, Some(last.new_deaths.unwrap_or(0) + 1));
        }
        let future = &rows[10];
        assert_eq!(future.country_code, plain[8].country_code);
        assert_eq!(
            future.date_reported,
            plain[8].date_reported + Days::new(FUTURE_ROW_DAYS)
        );
        // A day later, day 3 is final.
        let grown = served_rows(&generator, 6, &who);
        let plain: Vec<_> = generator.days(0..6).flatten().collect();
        assert_eq!(grown[..8], plain[..8]);
        assert_ne!(grown[6], rows[6]);
        // Off, the file is the generator's.
        assert_eq!(served_rows(&generator, 6, &WhoSim::default()), plain);
        let text = String::from_utf8(render(&generator, 1, &who)).unwrap();
        assert_eq!(text.lines().count(), 1 + 2 + 1, "{text}");
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
