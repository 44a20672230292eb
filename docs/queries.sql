-- Analytical queries over the health model (infra/postgres/migrations/0001_health.sql,
-- described in docs/data-model.md). They take no parameters and can be pasted into psql.
--
-- Format: each query starts with a `-- name: <snake_case_name>` line, then a one-line
-- `--` description, then one SQL statement. consumers/tests/queries.rs runs every query
-- of this file against a small hand-made data set and checks the named ones' results.
--
-- Yes/no columns of the CDC data use 'Yes', 'No', 'Unknown', 'Missing' and 'NA': rates
-- are computed over the known answers ('Yes' or 'No') only.

-- name: cases_by_state_month
-- Cases and hospitalisation rate by state and month (hospitalised / cases with hosp_yn Yes or No; null when none known).
SELECT
    s.state_code,
    s.name AS state_name,
    hc.case_month,
    count(*) AS cases,
    count(*) FILTER (WHERE hc.hosp_yn IN ('Yes', 'No')) AS hosp_known,
    count(*) FILTER (WHERE hc.hosp_yn = 'Yes') AS hospitalised,
    (count(*) FILTER (WHERE hc.hosp_yn = 'Yes'))::float8
        / nullif(count(*) FILTER (WHERE hc.hosp_yn IN ('Yes', 'No')), 0) AS hosp_rate
FROM health_case AS hc
JOIN dim_state AS s ON s.state_code = hc.res_state
GROUP BY s.state_code, s.name, hc.case_month
ORDER BY s.state_code, hc.case_month;

-- name: deaths_per_country_week
-- Deaths per country and ISO week (sum of new_deaths, null when no day of the week has it), with the WHO region.
WITH weekly AS (
    SELECT
        country_code,
        date_trunc('week', date_reported::timestamp)::date AS week_start,
        count(*) AS days_reported,
        sum(new_deaths)::bigint AS deaths
    FROM country_day
    GROUP BY country_code, date_trunc('week', date_reported::timestamp)
)
SELECT
    c.country_code,
    c.name AS country_name,
    c.who_region,
    to_char(w.week_start, 'IYYY-"W"IW') AS iso_week,
    w.week_start,
    w.days_reported,
    w.deaths
FROM weekly AS w
JOIN dim_country AS c ON c.country_code = w.country_code
ORDER BY c.country_code, w.week_start;

-- name: outbreaks_by_disease
-- Outbreak news per disease: number of articles, of distinct countries mentioned, first and latest publication.
SELECT
    n.disease,
    count(DISTINCT n.event_id) AS articles,
    count(DISTINCT mention.country) AS countries,
    min(n.published_on) AS first_published,
    max(n.published_on) AS latest_published
FROM outbreak_news AS n
LEFT JOIN LATERAL unnest(n.countries) AS mention (country) ON true
GROUP BY n.disease
ORDER BY articles DESC, n.disease;

-- name: case_fatality_by_age
-- Case fatality rate by age group, among cases whose death_yn is known (Yes or No).
SELECT
    age_group,
    count(*) AS known_cases,
    count(*) FILTER (WHERE death_yn = 'Yes') AS deaths,
    (count(*) FILTER (WHERE death_yn = 'Yes'))::float8 / count(*) AS fatality_rate
FROM health_case
WHERE death_yn IN ('Yes', 'No')
GROUP BY age_group
ORDER BY age_group;

-- name: top_counties_by_cases
-- The 10 counties with the most cases, with their state (cases without a county are left out).
SELECT
    c.county_fips,
    c.name AS county_name,
    s.state_code,
    s.name AS state_name,
    count(*) AS cases
FROM health_case AS hc
JOIN dim_county AS c ON c.county_fips = hc.county_fips
JOIN dim_state AS s ON s.state_code = c.state_code
GROUP BY c.county_fips, c.name, s.state_code, s.name
ORDER BY cases DESC, c.county_fips
LIMIT 10;

-- name: score_by_state
-- Mean model score per state and model, over the latest score of each case (scores of unknown cases are left out).
WITH latest AS (
    SELECT DISTINCT ON (case_event_id, model_name, model_version)
        case_event_id,
        model_name,
        model_version,
        score
    FROM case_score
    ORDER BY case_event_id, model_name, model_version, scored_at DESC, ingested_at DESC
)
SELECT
    s.state_code,
    s.name AS state_name,
    l.model_name,
    l.model_version,
    count(*) AS scored_cases,
    avg(l.score) AS mean_score
FROM latest AS l
JOIN health_case AS hc ON hc.event_id = l.case_event_id
JOIN dim_state AS s ON s.state_code = hc.res_state
GROUP BY s.state_code, s.name, l.model_name, l.model_version
ORDER BY s.state_code, l.model_name, l.model_version;

-- name: news_revisions
-- Outbreak articles whose content changed after they were first seen: versions seen, first and last seen.
SELECT
    n.event_id,
    n.url,
    n.title,
    n.disease,
    count(*) AS versions,
    min(v.first_seen_at) AS first_seen_at,
    max(v.first_seen_at) AS last_changed_at
FROM outbreak_news AS n
JOIN outbreak_news_version AS v ON v.event_id = n.event_id
GROUP BY n.event_id
HAVING count(*) > 1
ORDER BY last_changed_at DESC, n.url;

-- name: country_latest_totals
-- Latest cumulative cases and deaths reported by each country, with the date and the WHO region.
SELECT DISTINCT ON (c.country_code)
    c.country_code,
    c.name AS country_name,
    c.who_region,
    cd.date_reported,
    cd.cumulative_cases,
    cd.cumulative_deaths
FROM country_day AS cd
JOIN dim_country AS c ON c.country_code = cd.country_code
ORDER BY c.country_code, cd.date_reported DESC;
