//! How each event type lands in its tables: the staging table it is copied
//! into, and the statements that move a range of staged rows into the model.
//!
//! Every statement takes the staged row range as `$1` and `$2`, so that a
//! batch whose range violates a constraint can be split until the offending
//! rows are isolated.

use chrono::SecondsFormat;
use vigie_core::{Case, Envelope, Event, Payload};

use super::binary::Tuple;
use super::csv::Line;

/// The schema and version of the drift reports.
const DRIFT_REPORT: (&str, u32) = (
    vigie_core::DriftReport::SCHEMA,
    vigie_core::DriftReport::VERSION,
);

/// One target of the sink: a family of event types and its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    /// `health.case` -> `dim_county`, `health_case`.
    Case,
    /// `health.country_day` -> `dim_country`, `country_day`.
    CountryDay,
    /// `health.outbreak_news` -> `outbreak_news`, `outbreak_news_version`.
    OutbreakNews,
    /// `health.case_score` -> `case_score`.
    CaseScore,
    /// `health.drift_report` -> `drift_report`.
    DriftReport,
}

impl Target {
    /// The target of an event, if the sink stores its schema.
    pub(crate) fn of(event: &Event) -> Option<Self> {
        match event {
            Event::Case(_) => Some(Target::Case),
            Event::CountryDay(_) => Some(Target::CountryDay),
            Event::OutbreakNews(_) => Some(Target::OutbreakNews),
            Event::CaseScore(_) => Some(Target::CaseScore),
            // Validated by its schema, without a type on the read side.
            Event::Other(e) if (e.schema.as_str(), e.schema_version) == DRIFT_REPORT => {
                Some(Target::DriftReport)
            }
            Event::Other(_) => None,
        }
    }

    /// The staging table: a per-session temporary table emptied at commit.
    pub(crate) fn stage_ddl(self) -> &'static str {
        match self {
            Target::Case => {
                "CREATE TEMP TABLE IF NOT EXISTS stage_case (
                    rn integer NOT NULL, event_id uuid, row_id text, case_month date,
                    res_state text, county_fips text, age_group text, sex text,
                    race text, ethnicity text, case_positive_specimen_interval integer,
                    case_onset_interval integer, process text, exposure_yn text,
                    current_status text, symptom_status text, hosp_yn text, icu_yn text,
                    death_yn text, underlying_conditions_yn text, source text,
                    occurred_at timestamptz, ingested_at timestamptz,
                    upstream_updated_at timestamptz, res_county text
                ) ON COMMIT DELETE ROWS"
            }
            Target::CountryDay => {
                "CREATE TEMP TABLE IF NOT EXISTS stage_country_day (
                    rn integer NOT NULL, event_id uuid, country_code text, country text,
                    who_region text, date_reported date, new_cases bigint,
                    cumulative_cases bigint, new_deaths bigint, cumulative_deaths bigint,
                    source text, ingested_at timestamptz
                ) ON COMMIT DELETE ROWS"
            }
            Target::OutbreakNews => {
                "CREATE TEMP TABLE IF NOT EXISTS stage_outbreak_news (
                    rn integer NOT NULL, event_id uuid, url text, title text, published_on date,
                    disease text, countries text[], summary text, content_hash text,
                    source text, ingested_at timestamptz
                ) ON COMMIT DELETE ROWS"
            }
            Target::CaseScore => {
                "CREATE TEMP TABLE IF NOT EXISTS stage_case_score (
                    rn integer NOT NULL, event_id uuid, case_event_id uuid, model_name text,
                    model_version text, score double precision, scored_at timestamptz,
                    ingested_at timestamptz, upstream_updated_at timestamptz
                ) ON COMMIT DELETE ROWS"
            }
            Target::DriftReport => {
                "CREATE TEMP TABLE IF NOT EXISTS stage_drift_report (
                    rn integer NOT NULL, event_id uuid, model_name text, model_version text,
                    window_start timestamptz, window_end timestamptz, cases bigint,
                    scores bigint, status text, thresholds jsonb, features jsonb,
                    source text, ingested_at timestamptz
                ) ON COMMIT DELETE ROWS"
            }
        }
    }

    /// The `COPY` statement filling the staging table.
    pub(crate) fn copy_sql(self) -> &'static str {
        match self {
            Target::Case => "COPY stage_case FROM STDIN (FORMAT csv)",
            Target::CountryDay => "COPY stage_country_day FROM STDIN (FORMAT csv)",
            Target::OutbreakNews => "COPY stage_outbreak_news FROM STDIN (FORMAT csv)",
            Target::CaseScore => "COPY stage_case_score FROM STDIN (FORMAT csv)",
            Target::DriftReport => "COPY stage_drift_report FROM STDIN (FORMAT csv)",
        }
    }

    /// For targets that can skip staging: the probe telling whether any of
    /// the batch's ids (`$1`) is stored already, and the binary `COPY`
    /// straight into the target table, in the column order of [`direct_row`].
    pub(crate) fn direct(self) -> Option<(&'static str, &'static str)> {
        match self {
            Target::Case => Some((
                "SELECT EXISTS (SELECT 1 FROM health_case WHERE event_id = ANY($1))",
                "COPY health_case (event_id, row_id, case_month, res_state, county_fips, age_group,
                    sex, race, ethnicity, case_positive_specimen_interval, case_onset_interval,
                    process, exposure_yn, current_status, symptom_status, hosp_yn, icu_yn,
                    death_yn, underlying_conditions_yn, source, occurred_at, ingested_at,
                    upstream_updated_at)
                 FROM STDIN (FORMAT binary)",
            )),
            Target::CountryDay | Target::OutbreakNews | Target::CaseScore | Target::DriftReport => {
                None
            }
        }
    }

    /// Statements moving staged rows `$1..=$2` into the model. Within a
    /// batch the newest version of an id wins; against the table, a stored
    /// row is replaced only by a newer one. For cases and their scores,
    /// newer means a later `upstream_updated_at` (none sorts first), then a
    /// later `ingested_at`; for the rest, whose upstreams keep no version, a
    /// later `ingested_at`.
    pub(crate) fn upsert_sql(self) -> &'static [&'static str] {
        match self {
            Target::Case => &[
                "INSERT INTO dim_county (county_fips, state_code, name)
                 SELECT DISTINCT ON (county_fips) county_fips, res_state, res_county
                 FROM stage_case
                 WHERE rn BETWEEN $1 AND $2 AND county_fips IS NOT NULL AND res_county IS NOT NULL
                 ORDER BY county_fips, ingested_at DESC
                 ON CONFLICT (county_fips) DO NOTHING",
                concat!(
                "INSERT INTO health_case (event_id, row_id, case_month, res_state, county_fips,
                    age_group, sex, race, ethnicity, case_positive_specimen_interval,
                    case_onset_interval, process, exposure_yn, current_status, symptom_status,
                    hosp_yn, icu_yn, death_yn, underlying_conditions_yn, source, occurred_at,
                    ingested_at, upstream_updated_at)
                 SELECT DISTINCT ON (event_id) event_id, row_id, case_month, res_state,
                    county_fips, age_group, sex, race, ethnicity, case_positive_specimen_interval,
                    case_onset_interval, process, exposure_yn, current_status, symptom_status,
                    hosp_yn, icu_yn, death_yn, underlying_conditions_yn, source, occurred_at,
                    ingested_at, upstream_updated_at
                 FROM stage_case WHERE rn BETWEEN $1 AND $2
                 ORDER BY event_id, upstream_updated_at DESC NULLS LAST, ingested_at DESC
                 ON CONFLICT (event_id) DO UPDATE SET
                    row_id = EXCLUDED.row_id, case_month = EXCLUDED.case_month,
                    res_state = EXCLUDED.res_state, county_fips = EXCLUDED.county_fips,
                    age_group = EXCLUDED.age_group, sex = EXCLUDED.sex, race = EXCLUDED.race,
                    ethnicity = EXCLUDED.ethnicity,
                    case_positive_specimen_interval = EXCLUDED.case_positive_specimen_interval,
                    case_onset_interval = EXCLUDED.case_onset_interval,
                    process = EXCLUDED.process, exposure_yn = EXCLUDED.exposure_yn,
                    current_status = EXCLUDED.current_status,
                    symptom_status = EXCLUDED.symptom_status, hosp_yn = EXCLUDED.hosp_yn,
                    icu_yn = EXCLUDED.icu_yn, death_yn = EXCLUDED.death_yn,
                    underlying_conditions_yn = EXCLUDED.underlying_conditions_yn,
                    source = EXCLUDED.source, occurred_at = EXCLUDED.occurred_at,
                    ingested_at = EXCLUDED.ingested_at",
                newer_version!("health_case")
            ),
            ],
            Target::CountryDay => &[
                "INSERT INTO dim_country (country_code, name, who_region)
                 SELECT DISTINCT ON (country_code) country_code, country, who_region
                 FROM stage_country_day WHERE rn BETWEEN $1 AND $2
                 ORDER BY country_code, ingested_at DESC
                 ON CONFLICT (country_code) DO UPDATE SET
                    name = EXCLUDED.name, who_region = EXCLUDED.who_region",
                "INSERT INTO country_day (event_id, country_code, date_reported, new_cases,
                    cumulative_cases, new_deaths, cumulative_deaths, source, ingested_at)
                 SELECT DISTINCT ON (event_id) event_id, country_code, date_reported, new_cases,
                    cumulative_cases, new_deaths, cumulative_deaths, source, ingested_at
                 FROM stage_country_day WHERE rn BETWEEN $1 AND $2
                 ORDER BY event_id, ingested_at DESC
                 ON CONFLICT (event_id) DO UPDATE SET
                    new_cases = EXCLUDED.new_cases, cumulative_cases = EXCLUDED.cumulative_cases,
                    new_deaths = EXCLUDED.new_deaths,
                    cumulative_deaths = EXCLUDED.cumulative_deaths,
                    source = EXCLUDED.source, ingested_at = EXCLUDED.ingested_at
                 WHERE country_day.ingested_at < EXCLUDED.ingested_at",
            ],
            Target::OutbreakNews => &[
                "INSERT INTO outbreak_news_version (event_id, content_hash, title, summary, first_seen_at)
                 SELECT DISTINCT ON (event_id, content_hash) event_id, content_hash, title, summary, ingested_at
                 FROM stage_outbreak_news WHERE rn BETWEEN $1 AND $2
                 ORDER BY event_id, content_hash, ingested_at
                 ON CONFLICT (event_id, content_hash) DO NOTHING",
                "INSERT INTO outbreak_news (event_id, url, title, published_on, disease, countries,
                    summary, content_hash, source, ingested_at)
                 SELECT DISTINCT ON (event_id) event_id, url, title, published_on, disease,
                    countries, summary, content_hash, source, ingested_at
                 FROM stage_outbreak_news WHERE rn BETWEEN $1 AND $2
                 ORDER BY event_id, ingested_at DESC
                 ON CONFLICT (event_id) DO UPDATE SET
                    title = EXCLUDED.title, published_on = EXCLUDED.published_on,
                    disease = EXCLUDED.disease, countries = EXCLUDED.countries,
                    summary = EXCLUDED.summary, content_hash = EXCLUDED.content_hash,
                    source = EXCLUDED.source, ingested_at = EXCLUDED.ingested_at
                 WHERE outbreak_news.ingested_at < EXCLUDED.ingested_at",
            ],
            Target::CaseScore => &[
                concat!(
                "INSERT INTO case_score (event_id, case_event_id, model_name, model_version, score,
                    scored_at, ingested_at, upstream_updated_at)
                 SELECT DISTINCT ON (event_id) event_id, case_event_id, model_name, model_version,
                    score, scored_at, ingested_at, upstream_updated_at
                 FROM stage_case_score WHERE rn BETWEEN $1 AND $2
                 ORDER BY event_id, upstream_updated_at DESC NULLS LAST, ingested_at DESC
                 ON CONFLICT (event_id) DO UPDATE SET
                    score = EXCLUDED.score, scored_at = EXCLUDED.scored_at,
                    ingested_at = EXCLUDED.ingested_at",
                newer_version!("case_score")
            ),
            ],
            Target::DriftReport => &[
                "INSERT INTO drift_report (event_id, model_name, model_version, window_start,
                    window_end, cases, scores, status, thresholds, features, source, ingested_at)
                 SELECT DISTINCT ON (event_id) event_id, model_name, model_version, window_start,
                    window_end, cases, scores, status, thresholds, features, source, ingested_at
                 FROM stage_drift_report WHERE rn BETWEEN $1 AND $2
                 ORDER BY event_id, ingested_at DESC
                 ON CONFLICT (event_id) DO UPDATE SET
                    cases = EXCLUDED.cases, scores = EXCLUDED.scores, status = EXCLUDED.status,
                    thresholds = EXCLUDED.thresholds, features = EXCLUDED.features,
                    source = EXCLUDED.source, ingested_at = EXCLUDED.ingested_at
                 WHERE drift_report.ingested_at < EXCLUDED.ingested_at",
            ],
        }
    }
}

/// The end of an upsert of a versioned table: the stored row is replaced
/// only by a newer version, by `upstream_updated_at` (none sorts first),
/// then `ingested_at`; it sets `upstream_updated_at` too.
macro_rules! newer_version {
    ($table:literal) => {
        concat!(
            ", upstream_updated_at = EXCLUDED.upstream_updated_at
                 WHERE (COALESCE(",
            $table,
            ".upstream_updated_at, '-infinity'), ",
            $table,
            ".ingested_at)
                     < (COALESCE(EXCLUDED.upstream_updated_at, '-infinity'), EXCLUDED.ingested_at)"
        )
    };
}
use newer_version;

fn ts(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The field writers a case's columns need, in either `COPY` format.
trait CaseFields {
    fn uuid(&mut self, id: uuid::Uuid) -> &mut Self;
    fn text(&mut self, s: &str) -> &mut Self;
    fn opt_text(&mut self, s: Option<&str>) -> &mut Self;
    fn opt_int4(&mut self, v: Option<i32>) -> &mut Self;
    fn date(&mut self, d: chrono::NaiveDate) -> &mut Self;
    fn timestamptz(&mut self, t: &chrono::DateTime<chrono::Utc>) -> &mut Self;
    fn opt_timestamptz(&mut self, t: Option<&chrono::DateTime<chrono::Utc>>) -> &mut Self;
}

impl CaseFields for Line<'_> {
    fn uuid(&mut self, id: uuid::Uuid) -> &mut Self {
        self.plain(id)
    }
    fn text(&mut self, s: &str) -> &mut Self {
        Line::text(self, s)
    }
    fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        Line::opt_text(self, s)
    }
    fn opt_int4(&mut self, v: Option<i32>) -> &mut Self {
        self.opt_plain(v)
    }
    fn date(&mut self, d: chrono::NaiveDate) -> &mut Self {
        self.plain(d)
    }
    fn timestamptz(&mut self, t: &chrono::DateTime<chrono::Utc>) -> &mut Self {
        Line::text(self, &ts(t))
    }
    fn opt_timestamptz(&mut self, t: Option<&chrono::DateTime<chrono::Utc>>) -> &mut Self {
        Line::opt_text(self, t.map(ts).as_deref())
    }
}

impl CaseFields for Tuple<'_> {
    fn uuid(&mut self, id: uuid::Uuid) -> &mut Self {
        Tuple::uuid(self, id)
    }
    fn text(&mut self, s: &str) -> &mut Self {
        Tuple::text(self, s)
    }
    fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        Tuple::opt_text(self, s)
    }
    fn opt_int4(&mut self, v: Option<i32>) -> &mut Self {
        Tuple::opt_int4(self, v)
    }
    fn date(&mut self, d: chrono::NaiveDate) -> &mut Self {
        Tuple::date(self, d)
    }
    fn timestamptz(&mut self, t: &chrono::DateTime<chrono::Utc>) -> &mut Self {
        Tuple::timestamptz(self, t)
    }
    fn opt_timestamptz(&mut self, t: Option<&chrono::DateTime<chrono::Utc>>) -> &mut Self {
        match t {
            Some(t) => Tuple::timestamptz(self, t),
            None => self.null(),
        }
    }
}

/// Appends the tuple of a case for the direct binary `COPY` into
/// `health_case`. Returns `false`, writing nothing, for a date or time
/// outside years 1 to 9999: the server's binary input takes some (year 0
/// is 1 BC to it) that its text input refuses, and the staged path's text
/// decides.
pub(crate) fn direct_row(env: &Envelope<Case>, out: &mut Vec<u8>) -> bool {
    use chrono::Datelike;
    let in_range = |year: i32| (1..=9999).contains(&year);
    if !(in_range(env.data.case_month.first_day().year())
        && in_range(env.occurred_at.year())
        && in_range(env.ingested_at.year())
        && env.upstream_updated_at.is_none_or(|t| in_range(t.year())))
    {
        return false;
    }
    case_columns(&mut Tuple::new(out, 23), env);
    true
}

/// The 23 columns of `health_case`, in table order (that of the direct
/// `COPY` and of the staging table after `rn`).
fn case_columns<'w, W: CaseFields>(w: &'w mut W, env: &Envelope<Case>) -> &'w mut W {
    let c = &env.data;
    w.uuid(env.id)
        .text(c.row_id.as_str())
        .date(c.case_month.first_day())
        .text(c.res_state.as_str())
        .opt_text(c.county_fips_code.as_ref().map(|f| f.as_str()))
        .text(c.age_group.as_str())
        .text(c.sex.as_str())
        .text(c.race.as_str())
        .text(c.ethnicity.as_str())
        .opt_int4(c.case_positive_specimen_interval)
        .opt_int4(c.case_onset_interval)
        .text(c.process.as_str())
        .text(c.exposure_yn.as_str())
        .text(c.current_status.as_str())
        .text(c.symptom_status.as_str())
        .text(c.hosp_yn.as_str())
        .text(c.icu_yn.as_str())
        .text(c.death_yn.as_str())
        .text(c.underlying_conditions_yn.as_str())
        .text(&env.source)
        .timestamptz(&env.occurred_at)
        .timestamptz(&env.ingested_at)
        .opt_timestamptz(env.upstream_updated_at.as_ref())
}

/// Appends one staged CSV row for `event` to `out`. `None` (nothing
/// written) when the sink does not store its schema.
pub(crate) fn stage_row(rn: usize, event: &Event, out: &mut Vec<u8>) -> Option<Target> {
    let target = Target::of(event)?;
    match event {
        Event::Case(env) => {
            let mut line = Line::new(out);
            line.plain(rn);
            case_columns(&mut line, env);
            line.opt_text(env.data.res_county.as_deref()).end();
        }
        Event::CountryDay(env) => {
            let d = &env.data;
            Line::new(out)
                .plain(rn)
                .plain(env.id)
                .text(d.country_code.as_str())
                .text(&d.country)
                .text(d.who_region.as_str())
                .plain(d.date_reported)
                .opt_plain(d.new_cases)
                .plain(d.cumulative_cases)
                .opt_plain(d.new_deaths)
                .plain(d.cumulative_deaths)
                .text(&env.source)
                .text(&ts(&env.ingested_at))
                .end();
        }
        Event::OutbreakNews(env) => {
            let n = &env.data;
            Line::new(out)
                .plain(rn)
                .plain(env.id)
                .text(n.url.as_str())
                .text(&n.title)
                .plain(n.published_on)
                .text(&n.disease)
                .text_array(&n.countries)
                .text(&n.summary)
                .text(n.content_hash.as_str())
                .text(&env.source)
                .text(&ts(&env.ingested_at))
                .end();
        }
        Event::CaseScore(env) => {
            let d = &env.data;
            Line::new(out)
                .plain(rn)
                .plain(env.id)
                .plain(d.case_event_id)
                .text(&d.model_name)
                .text(&d.model_version)
                .plain(d.score)
                .text(&ts(&d.scored_at))
                .text(&ts(&env.ingested_at))
                .opt_text(env.upstream_updated_at.as_ref().map(ts).as_deref())
                .end();
        }
        Event::Other(env) => {
            // A field its schema requires but absent stages as NULL, which
            // the table refuses: the row goes to the DLQ, named.
            let d = &env.data;
            let text = |k: &str| d.get(k).and_then(serde_json::Value::as_str);
            let count = |k: &str| d.get(k).and_then(serde_json::Value::as_u64);
            let json = |k: &str| d.get(k).map(serde_json::Value::to_string);
            Line::new(out)
                .plain(rn)
                .plain(env.id)
                .opt_text(text("model_name"))
                .opt_text(text("model_version"))
                .opt_text(text("window_start"))
                .opt_text(text("window_end"))
                .opt_plain(count("cases"))
                .opt_plain(count("scores"))
                .opt_text(text("status"))
                .opt_text(json("thresholds").as_deref())
                .opt_text(json("features").as_deref())
                .text(&env.source)
                .text(&ts(&env.ingested_at))
                .end();
        }
    }
    Some(target)
}
