//! The analytical queries of `docs/queries.sql` against the health model:
//! every query of the file runs on a freshly migrated database, and each
//! named one returns the values computed by hand from a small data set
//! inserted here. Also: applying the migration twice is a no-op.

use chrono::NaiveDate;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};
use vigie_consumers::sinks::postgres::migrate::migrate;
use vigie_testkit::TestDb;

/// The hand-made data set. Expected values in the checks below are
/// computed from it; see the comments next to each block.
const DATA: &str = r#"
INSERT INTO dim_county (county_fips, state_code, name) VALUES
    ('36061', 'NY', 'New York County'),
    ('36047', 'NY', 'Kings County'),
    ('36005', 'NY', 'Bronx County'),       -- no case
    ('06037', 'CA', 'Los Angeles County'),
    ('48201', 'TX', 'Harris County');

-- 12 cases. Per state and month (hosp_yn):
--   NY 2021-03: Yes, No, Unknown, Missing -> 4 cases, 2 known, 1 yes, rate 0.5
--   NY 2021-04: Yes, Yes                  -> 2 cases, rate 1.0
--   CA 2021-03: No, No, Yes               -> 3 cases, rate 1/3
--   CA 2021-04: Missing                   -> 1 case, rate null
--   TX 2021-04: No, Unknown               -> 2 cases, rate 0.0
-- Per age group (death_yn):
--   65+ years:      Yes, Yes, No, NA       -> 3 known, 2 deaths
--   50 to 64 years: Yes, No, No            -> 3 known, 1 death
--   18 to 49 years: No, No, Missing, No    -> 3 known, 0 deaths
--   0 - 17 years:   Missing                -> no known answer, left out
-- Per county: 06037 -> 4, 36061 -> 3, 36047 -> 2, 48201 -> 1, two without.
INSERT INTO health_case (event_id, row_id, case_month, res_state, county_fips,
    age_group, sex, race, ethnicity, case_positive_specimen_interval,
    case_onset_interval, process, exposure_yn, current_status, symptom_status,
    hosp_yn, icu_yn, death_yn, underlying_conditions_yn, source, occurred_at,
    ingested_at)
SELECT v.id::uuid, v.row_id, v.month::date, v.state, v.county, v.age, 'Female',
    'White', 'Non-Hispanic/Latino', NULL, 0, 'Missing', 'Missing',
    'Laboratory-confirmed case', 'Symptomatic', v.hosp, 'Missing', v.death,
    'Missing', 'cdc-cases', v.month::timestamptz, '2026-01-01T00:00:00Z'
FROM (VALUES
    ('00000000-0000-0000-0000-000000000001', 'r01', '2021-03-01', 'NY', '36061', '65+ years',      'Yes',     'Yes'),
    ('00000000-0000-0000-0000-000000000002', 'r02', '2021-03-01', 'NY', '36061', '18 to 49 years', 'No',      'No'),
    ('00000000-0000-0000-0000-000000000003', 'r03', '2021-03-01', 'NY', '36047', '50 to 64 years', 'Unknown', 'Yes'),
    ('00000000-0000-0000-0000-000000000004', 'r04', '2021-03-01', 'NY', NULL,    '0 - 17 years',   'Missing', 'Missing'),
    ('00000000-0000-0000-0000-000000000005', 'r05', '2021-04-01', 'NY', '36061', '65+ years',      'Yes',     'Yes'),
    ('00000000-0000-0000-0000-000000000006', 'r06', '2021-04-01', 'NY', '36047', '50 to 64 years', 'Yes',     'No'),
    ('00000000-0000-0000-0000-000000000007', 'r07', '2021-03-01', 'CA', '06037', '18 to 49 years', 'No',      'No'),
    ('00000000-0000-0000-0000-000000000008', 'r08', '2021-03-01', 'CA', '06037', '18 to 49 years', 'No',      'Missing'),
    ('00000000-0000-0000-0000-000000000009', 'r09', '2021-03-01', 'CA', '06037', '65+ years',      'Yes',     'No'),
    ('00000000-0000-0000-0000-000000000010', 'r10', '2021-04-01', 'CA', '06037', '65+ years',      'Missing', 'NA'),
    ('00000000-0000-0000-0000-000000000011', 'r11', '2021-04-01', 'TX', '48201', '18 to 49 years', 'No',      'No'),
    ('00000000-0000-0000-0000-000000000012', 'r12', '2021-04-01', 'TX', NULL,    '50 to 64 years', 'Unknown', 'No')
) AS v (id, row_id, month, state, county, age, hosp, death);

INSERT INTO dim_country (country_code, name, who_region) VALUES
    ('FR', 'France', 'EURO'),
    ('BR', 'Brazil', 'AMRO'),
    ('NG', 'Nigeria', 'AFRO');             -- no country_day

-- 10 days per country, 2024-12-26 to 2025-01-04. ISO week 2024-W52 runs
-- from Monday 2024-12-23 to 2024-12-29; 2025-W01 starts on Monday
-- 2024-12-30, in the previous calendar year.
--   FR new_deaths: 10, 20, NULL, 30 | 0, 5, 5, 15, 15, NULL      -> 60 | 40
--   BR new_deaths: 100, 100, 100, NULL | 100, 100, 100, 50, 50, 50 -> 300 | 450
INSERT INTO country_day (event_id, country_code, date_reported, new_cases,
    cumulative_cases, new_deaths, cumulative_deaths, source, ingested_at) VALUES
    ('10000000-0000-0000-0000-000000000001', 'FR', '2024-12-26', 1000, 2501000, 10,    63010, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000002', 'FR', '2024-12-27', 1000, 2502000, 20,    63030, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000003', 'FR', '2024-12-28', NULL, 2503000, NULL,  63030, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000004', 'FR', '2024-12-29', 1000, 2504000, 30,    63060, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000005', 'FR', '2024-12-30', 1000, 2505000, 0,     63060, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000006', 'FR', '2024-12-31', 1000, 2506000, 5,     63065, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000007', 'FR', '2025-01-01', 1000, 2507000, 5,     63070, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000008', 'FR', '2025-01-02', 1000, 2508000, 15,    63085, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000009', 'FR', '2025-01-03', 1000, 2509000, 15,    63100, 'who-daily', '2026-01-01T00:00:00Z'),
    ('10000000-0000-0000-0000-000000000010', 'FR', '2025-01-04', NULL, 2510000, NULL,  63100, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000001', 'BR', '2024-12-26', 5000, 7400000, 100,  190100, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000002', 'BR', '2024-12-27', 5000, 7405000, 100,  190200, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000003', 'BR', '2024-12-28', 5000, 7410000, 100,  190300, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000004', 'BR', '2024-12-29', NULL, 7415000, NULL, 190300, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000005', 'BR', '2024-12-30', 5000, 7420000, 100,  190400, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000006', 'BR', '2024-12-31', 5000, 7425000, 100,  190500, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000007', 'BR', '2025-01-01', 5000, 7430000, 100,  190600, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000008', 'BR', '2025-01-02', 5000, 7435000, 50,   190650, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000009', 'BR', '2025-01-03', 5000, 7440000, 50,   190700, 'who-daily', '2026-01-01T00:00:00Z'),
    ('20000000-0000-0000-0000-000000000010', 'BR', '2025-01-04', 5000, 7445000, 50,   190750, 'who-daily', '2026-01-01T00:00:00Z');

-- Cholera: 2 articles, countries Nigeria and Niger; Ebola: 1 article,
-- 2 countries; avian influenza: 1 article naming no country.
INSERT INTO outbreak_news (event_id, url, title, published_on, disease,
    countries, summary, content_hash, source, ingested_at) VALUES
    ('30000000-0000-0000-0000-000000000001', 'https://example.org/don/1', 'Cholera - Nigeria and Niger',
     '2021-01-10', 'Cholera', '{Nigeria,Niger}', 'Cases of cholera.', repeat('b', 64), 'who-don', '2026-01-02T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000002', 'https://example.org/don/2', 'Cholera - Nigeria',
     '2021-02-15', 'Cholera', '{Nigeria}', 'More cases of cholera.', repeat('c', 64), 'who-don', '2026-01-01T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000003', 'https://example.org/don/3', 'Avian influenza - global',
     '2021-01-20', 'Avian influenza', '{}', 'Global risk assessment.', repeat('d', 64), 'who-don', '2026-01-01T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000004', 'https://example.org/don/4', 'Ebola virus disease - Guinea',
     '2021-02-20', 'Ebola virus disease', '{Guinea,Liberia}', 'Ebola cases.', repeat('e', 64), 'who-don', '2026-01-01T00:00:00Z');

-- Article 1 was revised once (2 versions); the others have one version.
INSERT INTO outbreak_news_version (event_id, content_hash, title, summary, first_seen_at) VALUES
    ('30000000-0000-0000-0000-000000000001', repeat('a', 64), 'Cholera - Nigeria', 'Cases.', '2026-01-01T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000001', repeat('b', 64), 'Cholera - Nigeria and Niger', 'Cases of cholera.', '2026-01-02T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000002', repeat('c', 64), 'Cholera - Nigeria', 'More cases of cholera.', '2026-01-01T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000003', repeat('d', 64), 'Avian influenza - global', 'Global risk assessment.', '2026-01-01T00:00:00Z'),
    ('30000000-0000-0000-0000-000000000004', repeat('e', 64), 'Ebola virus disease - Guinea', 'Ebola cases.', '2026-01-01T00:00:00Z');

-- Latest score per case and model, then mean per state:
--   severity 1.0: NY cases 1 (0.2, an older 0.9 is superseded) and 2 (0.6) -> 0.4
--                 CA cases 7 (0.5) and 9 (0.7) -> 0.6; TX case 11 (0.1) -> 0.1
--   baseline 0:   CA case 7 (0.3) -> 0.3
--   a score of an unknown case (0.99) is left out.
INSERT INTO case_score (event_id, case_event_id, model_name, model_version, score,
    scored_at, ingested_at) VALUES
    ('40000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000001', 'severity', '1.0', 0.9,  '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'severity', '1.0', 0.2,  '2026-01-02T00:00:00Z', '2026-01-02T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000002', 'severity', '1.0', 0.6,  '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000004', '00000000-0000-0000-0000-000000000007', 'severity', '1.0', 0.5,  '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000005', '00000000-0000-0000-0000-000000000009', 'severity', '1.0', 0.7,  '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000006', '00000000-0000-0000-0000-000000000011', 'severity', '1.0', 0.1,  '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000007', '00000000-0000-0000-0000-000000000007', 'baseline', '0',   0.3,  '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('40000000-0000-0000-0000-000000000008', '0fffffff-0000-0000-0000-000000000000', 'severity', '1.0', 0.99, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
"#;

/// The named queries that must be in the file and whose results are checked.
const CHECKED: &[&str] = &[
    "cases_by_state_month",
    "deaths_per_country_week",
    "outbreaks_by_disease",
    "case_fatality_by_age",
    "top_counties_by_cases",
    "score_by_state",
    "news_revisions",
    "country_latest_totals",
];

/// One query of `docs/queries.sql`.
#[derive(Debug)]
struct NamedQuery {
    name: String,
    description: String,
    sql: String,
}

/// Splits the file at its `-- name:` lines. Before the first one, only
/// comments and blank lines are allowed.
fn parse_queries(text: &str) -> Vec<NamedQuery> {
    let mut queries: Vec<NamedQuery> = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix("-- name:") {
            queries.push(NamedQuery {
                name: name.trim().to_owned(),
                description: String::new(),
                sql: String::new(),
            });
            continue;
        }
        let Some(q) = queries.last_mut() else {
            assert!(
                line.trim().is_empty() || line.trim_start().starts_with("--"),
                "line {}: SQL before the first `-- name:` marker: {line}",
                no + 1
            );
            continue;
        };
        if q.description.is_empty() && q.sql.is_empty() {
            let description = line.strip_prefix("--").map(str::trim).unwrap_or_default();
            assert!(
                !description.is_empty(),
                "query {}: the line after `-- name:` must be a `--` description, got {line:?}",
                q.name
            );
            q.description = description.to_owned();
            continue;
        }
        q.sql.push_str(line);
        q.sql.push('\n');
    }
    for q in &mut queries {
        let sql = q.sql.trim_end();
        q.sql = sql.strip_suffix(';').unwrap_or(sql).to_owned();
    }
    queries
}

fn is_snake_case(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

async fn migrated_db() -> (TestDb, PgPool) {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    migrate(&pool).await.expect("migrate");
    (db, pool)
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-9
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> T
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .unwrap_or_else(|e| panic!("column {column}: {e}"))
}

fn check_cases_by_state_month(rows: &[PgRow]) {
    // (state, name, month, cases, hosp_known, hospitalised, rate)
    let expected = [
        ("CA", "California", "2021-03-01", 3, 3, 1, Some(1.0 / 3.0)),
        ("CA", "California", "2021-04-01", 1, 0, 0, None),
        ("NY", "New York", "2021-03-01", 4, 2, 1, Some(0.5)),
        ("NY", "New York", "2021-04-01", 2, 2, 2, Some(1.0)),
        ("TX", "Texas", "2021-04-01", 2, 1, 0, Some(0.0)),
    ];
    assert_eq!(rows.len(), expected.len(), "one row per state and month");
    for (row, (state, name, month, cases, known, hosp, rate)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "state_code"), state);
        assert_eq!(get::<String>(row, "state_name"), name);
        assert_eq!(get::<NaiveDate>(row, "case_month"), date(month));
        assert_eq!(get::<i64>(row, "cases"), cases, "{state} {month} cases");
        assert_eq!(get::<i64>(row, "hosp_known"), known, "{state} {month}");
        assert_eq!(get::<i64>(row, "hospitalised"), hosp, "{state} {month}");
        let actual = get::<Option<f64>>(row, "hosp_rate");
        match (actual, rate) {
            (None, None) => {}
            (Some(a), Some(e)) => assert!(close(a, e), "{state} {month} rate {a}, want {e}"),
            (a, e) => panic!("{state} {month} rate {a:?}, want {e:?}"),
        }
    }
}

fn check_deaths_per_country_week(rows: &[PgRow]) {
    // (country, name, region, iso week, week start, days, deaths)
    let expected = [
        ("BR", "Brazil", "AMRO", "2024-W52", "2024-12-23", 4, 300),
        ("BR", "Brazil", "AMRO", "2025-W01", "2024-12-30", 6, 450),
        ("FR", "France", "EURO", "2024-W52", "2024-12-23", 4, 60),
        ("FR", "France", "EURO", "2025-W01", "2024-12-30", 6, 40),
    ];
    assert_eq!(rows.len(), expected.len(), "one row per country and week");
    for (row, (code, name, region, week, start, days, deaths)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "country_code"), code);
        assert_eq!(get::<String>(row, "country_name"), name);
        assert_eq!(get::<String>(row, "who_region"), region);
        assert_eq!(get::<String>(row, "iso_week"), week, "{code}");
        assert_eq!(get::<NaiveDate>(row, "week_start"), date(start), "{code}");
        assert_eq!(get::<i64>(row, "days_reported"), days, "{code} {week}");
        assert_eq!(
            get::<Option<i64>>(row, "deaths"),
            Some(deaths),
            "{code} {week}"
        );
    }
}

fn check_outbreaks_by_disease(rows: &[PgRow]) {
    // (disease, articles, countries, first, latest)
    let expected = [
        ("Cholera", 2, 2, "2021-01-10", "2021-02-15"),
        ("Avian influenza", 1, 0, "2021-01-20", "2021-01-20"),
        ("Ebola virus disease", 1, 2, "2021-02-20", "2021-02-20"),
    ];
    assert_eq!(rows.len(), expected.len(), "one row per disease");
    for (row, (disease, articles, countries, first, latest)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "disease"), disease);
        assert_eq!(get::<i64>(row, "articles"), articles, "{disease}");
        assert_eq!(get::<i64>(row, "countries"), countries, "{disease}");
        assert_eq!(get::<NaiveDate>(row, "first_published"), date(first));
        assert_eq!(get::<NaiveDate>(row, "latest_published"), date(latest));
    }
}

fn check_case_fatality_by_age(rows: &[PgRow]) {
    // (age group, known, deaths, rate); '0 - 17 years' has no known answer.
    let expected = [
        ("18 to 49 years", 3, 0, 0.0),
        ("50 to 64 years", 3, 1, 1.0 / 3.0),
        ("65+ years", 3, 2, 2.0 / 3.0),
    ];
    assert_eq!(rows.len(), expected.len(), "age groups with a known answer");
    for (row, (age, known, deaths, rate)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "age_group"), age);
        assert_eq!(get::<i64>(row, "known_cases"), known, "{age}");
        assert_eq!(get::<i64>(row, "deaths"), deaths, "{age}");
        let actual = get::<f64>(row, "fatality_rate");
        assert!(close(actual, rate), "{age} rate {actual}, want {rate}");
    }
}

fn check_top_counties_by_cases(rows: &[PgRow]) {
    // (fips, county, state, state name, cases); Bronx has no case.
    let expected = [
        ("06037", "Los Angeles County", "CA", "California", 4),
        ("36061", "New York County", "NY", "New York", 3),
        ("36047", "Kings County", "NY", "New York", 2),
        ("48201", "Harris County", "TX", "Texas", 1),
    ];
    assert_eq!(rows.len(), expected.len(), "counties with cases");
    for (row, (fips, county, state, state_name, cases)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "county_fips"), fips);
        assert_eq!(get::<String>(row, "county_name"), county);
        assert_eq!(get::<String>(row, "state_code"), state);
        assert_eq!(get::<String>(row, "state_name"), state_name);
        assert_eq!(get::<i64>(row, "cases"), cases, "{fips}");
    }
}

fn check_score_by_state(rows: &[PgRow]) {
    // (state, name, model, version, scored cases, mean)
    let expected = [
        ("CA", "California", "baseline", "0", 1, 0.3),
        ("CA", "California", "severity", "1.0", 2, 0.6),
        ("NY", "New York", "severity", "1.0", 2, 0.4),
        ("TX", "Texas", "severity", "1.0", 1, 0.1),
    ];
    assert_eq!(rows.len(), expected.len(), "one row per state and model");
    for (row, (state, name, model, version, n, mean)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "state_code"), state);
        assert_eq!(get::<String>(row, "state_name"), name);
        assert_eq!(get::<String>(row, "model_name"), model);
        assert_eq!(get::<String>(row, "model_version"), version);
        assert_eq!(get::<i64>(row, "scored_cases"), n, "{state} {model}");
        let actual = get::<f64>(row, "mean_score");
        assert!(
            close(actual, mean),
            "{state} {model} mean {actual}, want {mean}"
        );
    }
}

fn check_news_revisions(rows: &[PgRow]) {
    assert_eq!(rows.len(), 1, "only article 1 was revised");
    let row = &rows[0];
    assert_eq!(
        get::<uuid::Uuid>(row, "event_id").to_string(),
        "30000000-0000-0000-0000-000000000001"
    );
    assert_eq!(get::<String>(row, "url"), "https://example.org/don/1");
    assert_eq!(get::<String>(row, "title"), "Cholera - Nigeria and Niger");
    assert_eq!(get::<String>(row, "disease"), "Cholera");
    assert_eq!(get::<i64>(row, "versions"), 2);
    let first: chrono::DateTime<chrono::Utc> = get(row, "first_seen_at");
    let last: chrono::DateTime<chrono::Utc> = get(row, "last_changed_at");
    assert_eq!(first.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    assert_eq!(last.to_rfc3339(), "2026-01-02T00:00:00+00:00");
}

fn check_country_latest_totals(rows: &[PgRow]) {
    // Nigeria has no country_day: not listed.
    let expected = [
        ("BR", "Brazil", "AMRO", 7_445_000, 190_750),
        ("FR", "France", "EURO", 2_510_000, 63_100),
    ];
    assert_eq!(rows.len(), expected.len(), "countries with indicators");
    for (row, (code, name, region, cases, deaths)) in rows.iter().zip(expected) {
        assert_eq!(get::<String>(row, "country_code"), code);
        assert_eq!(get::<String>(row, "country_name"), name);
        assert_eq!(get::<String>(row, "who_region"), region);
        assert_eq!(get::<NaiveDate>(row, "date_reported"), date("2025-01-04"));
        assert_eq!(get::<i64>(row, "cumulative_cases"), cases, "{code}");
        assert_eq!(get::<i64>(row, "cumulative_deaths"), deaths, "{code}");
    }
}

/// Every query of `docs/queries.sql` runs; the named ones return the
/// values computed by hand from `DATA`.
#[tokio::test]
async fn every_query_runs_and_returns_the_expected_values() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/queries.sql");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let queries = parse_queries(&text);

    let mut names: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
    for q in &queries {
        assert!(
            is_snake_case(&q.name),
            "query name {:?} is not snake_case",
            q.name
        );
        assert!(!q.sql.trim().is_empty(), "query {} has no SQL", q.name);
    }
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "query names must be unique");
    for name in CHECKED {
        assert!(
            names.contains(name),
            "docs/queries.sql has no query named {name}"
        );
    }

    let (_db, pool) = migrated_db().await;
    sqlx::raw_sql(DATA)
        .execute(&pool)
        .await
        .expect("insert the data set");

    let mut checked = 0;
    for q in &queries {
        // Prepared (extended protocol): one statement per name, no more.
        let rows = sqlx::query(AssertSqlSafe(q.sql.clone()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("query {} ({}) failed: {e}", q.name, q.description));
        match q.name.as_str() {
            "cases_by_state_month" => check_cases_by_state_month(&rows),
            "deaths_per_country_week" => check_deaths_per_country_week(&rows),
            "outbreaks_by_disease" => check_outbreaks_by_disease(&rows),
            "case_fatality_by_age" => check_case_fatality_by_age(&rows),
            "top_counties_by_cases" => check_top_counties_by_cases(&rows),
            "score_by_state" => check_score_by_state(&rows),
            "news_revisions" => check_news_revisions(&rows),
            "country_latest_totals" => check_country_latest_totals(&rows),
            // A query without a check only has to run.
            _ => continue,
        }
        checked += 1;
    }
    assert_eq!(checked, CHECKED.len(), "every checked query was checked");
}

/// The splitter itself: header comments, descriptions, trailing semicolons.
#[test]
fn queries_file_is_split_at_name_markers() {
    let text = "-- header\n\n-- name: a_query\n-- Does a.\nSELECT 1;\n\n-- name: b\n-- Does b.\nSELECT\n  2 AS two;\n";
    let queries = parse_queries(text);
    assert_eq!(queries.len(), 2);
    assert_eq!(queries[0].name, "a_query");
    assert_eq!(queries[0].description, "Does a.");
    assert_eq!(queries[0].sql, "SELECT 1");
    assert_eq!(queries[1].name, "b");
    assert_eq!(queries[1].sql, "SELECT\n  2 AS two");
    assert!(is_snake_case("top_counties_by_cases"));
    assert!(!is_snake_case("TopCounties"));
    assert!(!is_snake_case("top-counties"));
}

/// The tables of the model (`infra/postgres/migrations/0001_health.sql`).
const MODEL_TABLES: &[&str] = &[
    "dim_state",
    "dim_county",
    "dim_country",
    "health_case",
    "country_day",
    "outbreak_news",
    "outbreak_news_version",
    "case_score",
    "sink_offsets",
];

async fn table_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_one(pool)
    .await
    .expect("count tables")
}

/// Applying the migration a second time changes nothing.
#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let (_db, pool) = migrated_db().await;
    let tables = table_count(&pool).await;
    for table in MODEL_TABLES {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("public.{table}"))
            .fetch_one(&pool)
            .await
            .expect("look up table");
        assert!(exists, "table {table} after the first migration");
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count migrations");
    let states: i64 = sqlx::query_scalar("SELECT count(*) FROM dim_state")
        .fetch_one(&pool)
        .await
        .expect("count states");
    assert_eq!(states, 56, "50 states, DC and 5 territories are seeded");

    migrate(&pool).await.expect("second migrate");

    assert_eq!(
        table_count(&pool).await,
        tables,
        "tables after the second migration"
    );
    let applied_again: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count migrations");
    assert_eq!(applied_again, applied, "no migration applied twice");
    let states_again: i64 = sqlx::query_scalar("SELECT count(*) FROM dim_state")
        .fetch_one(&pool)
        .await
        .expect("count states");
    assert_eq!(states_again, states, "the seed is not inserted again");
}
