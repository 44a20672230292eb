//! The simulator's HTTP server, driven over real HTTP: wire formats of the
//! three sources, growth limits, article edits, layouts, faults and the
//! `/_sim` control API.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scraper::{Html, Selector};
use serde_json::{Map, Value};
use vigie_simulator::server::{
    CASES_PATH, CasesSim, Endpoint, FaultKind, FaultRule, Manifest, NEWS_PATH, NewsSim,
    RequestRecord, RunningSimulator, SimConfig, Simulator, WHO_CSV_HEADER, WHO_CSV_PATH,
    WHO_FIRST_DATE, WhoSim, row_timestamp,
};
use vigie_simulator::{
    CaseGenConfig, CaseGenerator, CountryDayGenerator, NewsGenerator, content_hash,
};

type Row = Map<String, Value>;

const COLUMNS: [&str; 19] = [
    "case_month",
    "res_state",
    "state_fips_code",
    "res_county",
    "county_fips_code",
    "age_group",
    "sex",
    "race",
    "ethnicity",
    "case_positive_specimen_interval",
    "case_onset_interval",
    "process",
    "exposure_yn",
    "current_status",
    "symptom_status",
    "hosp_yn",
    "icu_yn",
    "death_yn",
    "underlying_conditions_yn",
];

async fn start(config: SimConfig) -> RunningSimulator {
    Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent("vigie-test/1")
        .build()
        .unwrap()
}

fn with_cases(rows: u64) -> SimConfig {
    SimConfig {
        cases: CasesSim {
            rows,
            ..CasesSim::default()
        },
        ..SimConfig::default()
    }
}

fn cases_generator(seed: u64) -> CaseGenerator {
    CaseGenerator::new(CaseGenConfig {
        seed,
        ..CaseGenConfig::default()
    })
    .unwrap()
}

async fn soda_response(sim: &RunningSimulator, query: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(format!("{}{CASES_PATH}", sim.base_url()))
        .query(query)
        .send()
        .await
        .unwrap()
}

async fn soda(sim: &RunningSimulator, query: &[(&str, &str)]) -> Vec<Row> {
    let response = soda_response(sim, query).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|row| row[":id"].as_str().unwrap().to_owned())
        .collect()
}

fn generator_ids(seed: u64, range: std::ops::Range<u64>) -> Vec<String> {
    cases_generator(seed)
        .rows(range)
        .map(|row| row.row_id.to_string())
        .collect()
}

async fn get_text(sim: &RunningSimulator, path: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{}{path}", sim.base_url()))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

fn texts(html: &str, css: &str) -> Vec<String> {
    let selector = Selector::parse(css).unwrap();
    Html::parse_document(html)
        .select(&selector)
        .map(|e| e.text().collect())
        .collect()
}

fn attrs(html: &str, css: &str, attr: &str) -> Vec<String> {
    let selector = Selector::parse(css).unwrap();
    Html::parse_document(html)
        .select(&selector)
        .filter_map(|e| e.value().attr(attr).map(str::to_owned))
        .collect()
}

fn article_path(generator: &NewsGenerator, index: u64) -> String {
    let url = generator.url(index);
    url.as_str()
        .strip_prefix(generator.base_url())
        .map(|item| format!("{NEWS_PATH}{item}"))
        .unwrap()
}

/// Polls `condition` every few milliseconds until it holds (10 s at most).
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn soda_rows_have_socrata_keys_and_string_values() {
    let sim = start(with_cases(2_000)).await;
    let generator = cases_generator(42);

    let response = soda_response(&sim, &[("$limit", "300"), ("$select", ":*,*")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let rows: Vec<Row> = response.json().await.unwrap();
    assert_eq!(rows.len(), 300);
    let (mut suppressed, mut intervals) = (0, 0);
    for (index, row) in rows.iter().enumerate() {
        let case = generator.row(index as u64);
        assert!(row.values().all(Value::is_string), "{row:?}");
        for key in row.keys() {
            assert!(
                key.starts_with(':') || COLUMNS.contains(&key.as_str()),
                "{key}"
            );
        }
        assert_eq!(row[":id"], case.row_id.as_str());
        let stamp = row_timestamp(index as u64);
        assert_eq!(row[":created_at"], stamp.as_str());
        assert_eq!(row[":updated_at"], stamp.as_str());
        assert_eq!(row["case_month"], case.case_month.to_string().as_str());
        assert_eq!(row["res_state"], case.res_state.as_str());
        assert_eq!(
            row["state_fips_code"],
            case.state_fips_code.as_ref().unwrap().as_str()
        );
        match &case.res_county {
            Some(county) => assert_eq!(row["res_county"], county.as_str()),
            None => {
                suppressed += 1;
                assert_eq!(row["res_county"], "NA");
                assert_eq!(row["county_fips_code"], "NA");
            }
        }
        assert_eq!(row["age_group"], case.age_group.as_str());
        assert_eq!(row["race"], case.race.as_str());
        assert_eq!(row["process"], case.process.as_str());
        assert_eq!(row["current_status"], case.current_status.as_str());
        assert_eq!(
            row["underlying_conditions_yn"],
            case.underlying_conditions_yn.as_str()
        );
        match case.case_onset_interval {
            Some(weeks) => {
                intervals += 1;
                assert_eq!(row["case_onset_interval"], weeks.to_string().as_str());
            }
            None => assert!(!row.contains_key("case_onset_interval")),
        }
    }
    assert!(suppressed > 0 && intervals > 0);

    // Without $select: the data set's columns only.
    let rows = soda(&sim, &[("$limit", "5")]).await;
    assert!(
        rows.iter()
            .all(|row| !row.keys().any(|k| k.starts_with(':')))
    );
    assert_eq!(rows[0]["res_state"], generator.row(0).res_state.as_str());
    sim.shutdown().await;
}

#[tokio::test]
async fn soda_paging_and_where_cover_rows_in_order() {
    let sim = start(with_cases(2_500)).await;
    let mut all = Vec::new();
    for page in 0.. {
        let offset = (page * 1_000).to_string();
        let rows = soda(
            &sim,
            &[
                ("$limit", "1000"),
                ("$offset", &offset),
                ("$order", ":id"),
                ("$select", ":*,*"),
            ],
        )
        .await;
        if rows.is_empty() {
            break;
        }
        all.extend(ids(&rows));
    }
    assert_eq!(all, generator_ids(42, 0..2_500));

    // Default $limit is 1000.
    assert_eq!(soda(&sim, &[]).await.len(), 1_000);

    let after = format!(":updated_at > '{}'", row_timestamp(1_233));
    let rows = soda(
        &sim,
        &[
            ("$where", &after),
            ("$order", ":updated_at ASC"),
            ("$limit", "10"),
            ("$select", ":*,*"),
        ],
    )
    .await;
    assert_eq!(ids(&rows), generator_ids(42, 1_234..1_244));
    let from = format!(":updated_at >= '{}'", row_timestamp(1_233));
    let rows = soda(
        &sim,
        &[
            ("$where", &from),
            ("$offset", "5"),
            ("$limit", "2"),
            ("$select", ":*,*"),
        ],
    )
    .await;
    assert_eq!(ids(&rows), generator_ids(42, 1_238..1_240));
    // A timestamp past the last row: nothing.
    let past = format!(":updated_at > '{}'", row_timestamp(2_499));
    assert!(soda(&sim, &[("$where", &past)]).await.is_empty());
    sim.shutdown().await;
}

/// With `rows_per_timestamp`, rows share an `:updated_at`, are served by
/// `:id` within it, and the keyset `$where` starts right after a row.
#[tokio::test]
async fn soda_ties_are_served_by_id_and_paged_by_keyset() {
    let mut config = with_cases(30);
    config.cases.rows_per_timestamp = 4;
    let sim = start(config).await;
    let query = [
        ("$limit", "100"),
        ("$select", ":*,*"),
        ("$order", ":updated_at, :id"),
    ];
    let rows = soda(&sim, &query).await;
    assert_eq!(rows.len(), 30);
    let index: std::collections::HashMap<String, u64> =
        generator_ids(42, 0..30).into_iter().zip(0..).collect();
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            let id = row[":id"].as_str().unwrap().to_owned();
            let stamp = row_timestamp(index[&id] / 4);
            assert_eq!(row[":updated_at"], stamp.as_str());
            (stamp, id)
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    let distinct: HashSet<&String> = keys.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), 30);

    // After row 9, by keyset: rows 10 to 14.
    let (ts, id) = &keys[9];
    let after = format!(":updated_at > '{ts}' OR (:updated_at = '{ts}' AND :id > '{id}')");
    let page = soda(
        &sim,
        &[
            ("$where", after.as_str()),
            ("$order", ":updated_at,:id"),
            ("$limit", "5"),
            ("$select", ":*,*"),
        ],
    )
    .await;
    let expected: Vec<&String> = keys[10..15].iter().map(|(_, id)| id).collect();
    let ids = ids(&page);
    assert_eq!(ids.iter().collect::<Vec<_>>(), expected);
    // A quote in the id, written twice: `it's` sorts before every row id.
    let quoted = format!(":updated_at > '{ts}' OR (:updated_at = '{ts}' AND :id > 'it''s')");
    let page = soda(
        &sim,
        &[
            ("$where", quoted.as_str()),
            ("$select", ":*,*"),
            ("$limit", "1"),
        ],
    )
    .await;
    assert_eq!(
        page[0][":id"],
        keys[8].1.as_str(),
        "the timestamp's first row"
    );
    for (key, value) in [
        ("$where", format!("{after} OR 1 = 1")),
        ("$where", quoted.replace("''", "'")),
        ("$where", after.replace(":id >", ":id >=")),
        ("$order", ":updated_at,:id DESC".to_owned()),
    ] {
        let response = soda_response(&sim, &[(key, value.as_str())]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key}={value}");
        let error: Value = response.json().await.unwrap();
        assert!(error["message"].as_str().unwrap().contains(key), "{error}");
    }
    sim.shutdown().await;

    // Rows appear a whole timestamp at a time.
    let mut config = with_cases(30);
    config.cases.rows_per_timestamp = 4;
    config.cases.initial_rows = Some(10);
    let sim = start(config).await;
    assert_eq!(soda(&sim, &query).await.len(), 8);
    assert_eq!(sim.manifest().cases.rows_available, 8);
    sim.shutdown().await;
}

#[tokio::test]
async fn soda_refuses_what_it_does_not_implement() {
    let sim = start(with_cases(100)).await;
    for (key, value) in [
        ("$limit", "50001"),
        ("$limit", "ten"),
        ("$offset", "-1"),
        ("$order", ":id DESC"),
        ("$where", "res_state = 'CA'"),
        ("$select", "res_state, sex"),
        ("res_state", "CA"),
        ("$group", "res_state"),
    ] {
        let response = soda_response(&sim, &[(key, value)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key}={value}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], true);
        assert_eq!(error["code"], "query.compiler.malformed");
        assert!(
            error["message"].as_str().unwrap().contains(key),
            "{key}: {error}"
        );
    }
    assert_eq!(soda(&sim, &[("$limit", "50000")]).await.len(), 100);
    sim.shutdown().await;
}

#[tokio::test]
async fn soda_checks_the_app_token_when_one_is_set() {
    let mut config = with_cases(10);
    config.cases.app_token = Some("good".into());
    let sim = start(config).await;
    let url = format!("{}{CASES_PATH}", sim.base_url());
    let status = |token: Option<&'static str>| {
        let mut request = client().get(&url);
        if let Some(token) = token {
            request = request.header("X-App-Token", token);
        }
        async move { request.send().await.unwrap() }
    };
    let refused = status(Some("bad")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"], true);
    assert_eq!(status(Some("good")).await.status(), StatusCode::OK);
    assert_eq!(status(None).await.status(), StatusCode::OK);
    let by_param = soda_response(&sim, &[("$$app_token", "bad")]).await;
    assert_eq!(by_param.status(), StatusCode::FORBIDDEN);
    sim.shutdown().await;
}

#[tokio::test]
async fn same_request_same_bytes() {
    let a = start(with_cases(5_000)).await;
    let b = start(with_cases(5_000)).await;
    let query = [("$limit", "2000"), ("$offset", "17"), ("$select", ":*,*")];
    let first = soda_response(&a, &query).await.bytes().await.unwrap();
    let again = soda_response(&a, &query).await.bytes().await.unwrap();
    let other = soda_response(&b, &query).await.bytes().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first, other);
    for path in [
        WHO_CSV_PATH.to_owned(),
        format!("{NEWS_PATH}?page=2"),
        article_path(&NewsGenerator::new(42, "http://x.test/don").unwrap(), 4),
    ] {
        let (_, x) = get_text(&a, &path).await;
        let (_, y) = get_text(&b, &path).await;
        assert_eq!(x, y, "{path}");
    }
    let mut other_seed = with_cases(5_000);
    other_seed.seed = 43;
    let c = start(other_seed).await;
    assert_ne!(
        first,
        soda_response(&c, &query).await.bytes().await.unwrap()
    );
    for sim in [a, b, c] {
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn rows_beyond_the_available_ones_are_not_served() {
    let mut config = with_cases(1_000);
    config.cases.initial_rows = Some(100);
    let sim = start(config).await;
    let rows = soda(&sim, &[("$limit", "1000"), ("$select", ":*,*")]).await;
    assert_eq!(ids(&rows), generator_ids(42, 0..100));
    assert!(soda(&sim, &[("$offset", "100")]).await.is_empty());
    let beyond = format!(":updated_at >= '{}'", row_timestamp(500));
    assert!(soda(&sim, &[("$where", &beyond)]).await.is_empty());
    let manifest = sim.manifest();
    assert_eq!(manifest.cases.rows_available, 100);
    assert_eq!(manifest.cases.rows_total, 1_000);
    assert_eq!(manifest.seed, 42);
    sim.shutdown().await;
}

#[tokio::test]
async fn sources_grow_with_time_up_to_their_total() {
    let config = SimConfig {
        cases: CasesSim {
            rows: 40,
            initial_rows: Some(0),
            rows_per_second: 2_000,
            ..CasesSim::default()
        },
        who: WhoSim {
            countries: 3,
            initial_days: 1,
            day_seconds: 0.01,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let sim = start(config).await;
    wait_until("all case rows", || {
        sim.manifest().cases.rows_available == 40
    })
    .await;
    let rows = soda(&sim, &[("$limit", "100")]).await;
    assert_eq!(rows.len(), 40);
    wait_until("a few more days", || sim.manifest().who.days_available >= 4).await;
    let (_, csv) = get_text(&sim, WHO_CSV_PATH).await;
    assert!(csv.lines().count() > 4 * 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_full_page_of_50000_rows() {
    let sim = start(with_cases(60_000)).await;
    let started = Instant::now();
    let response = soda_response(&sim, &[("$limit", "50000"), ("$offset", "10000")]).await;
    let body = response.bytes().await.unwrap();
    let elapsed = started.elapsed();
    let rows: Vec<Row> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), 50_000);
    // Generous: this test binary's own code is not optimised.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn who_csv_has_one_line_per_country_and_day() {
    let config = SimConfig {
        seed: 9,
        who: WhoSim {
            countries: 8,
            initial_days: 12,
            day_seconds: 0.0,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let response = client()
        .get(format!("{}{WHO_CSV_PATH}", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv");
    let body = response.text().await.unwrap();
    assert!(!body.contains('\r'));
    assert_eq!(body.lines().next(), Some(WHO_CSV_HEADER));

    let expected: Vec<_> = CountryDayGenerator::new(9, WHO_FIRST_DATE, 8)
        .unwrap()
        .days(0..12)
        .flatten()
        .collect();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 12 * 8);
    let blank = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    for (record, row) in records.iter().zip(&expected) {
        let fields: Vec<&str> = record.iter().collect();
        assert_eq!(
            fields,
            [
                row.date_reported.format("%Y-%m-%d").to_string().as_str(),
                row.country_code.as_str(),
                row.country.as_str(),
                row.who_region.as_str(),
                blank(row.new_cases).as_str(),
                row.cumulative_cases.to_string().as_str(),
                blank(row.new_deaths).as_str(),
                row.cumulative_deaths.to_string().as_str(),
            ]
        );
    }
    assert_eq!(records[0].get(0), Some("2020-01-03"));
    let manifest = sim.manifest();
    assert_eq!(manifest.who.days_available, 12);
    assert_eq!(manifest.who.rows_available, 96);
    sim.shutdown().await;
}

fn news_config(articles: u64, page_size: usize) -> SimConfig {
    SimConfig {
        news: NewsSim {
            articles,
            page_size,
            ..NewsSim::default()
        },
        ..SimConfig::default()
    }
}

fn news_generator(sim: &RunningSimulator) -> NewsGenerator {
    NewsGenerator::new(sim.config().seed, &format!("{}{NEWS_PATH}", sim.base_url())).unwrap()
}

#[tokio::test]
async fn listing_pages_cover_every_article_once_newest_first() {
    let sim = start(news_config(23, 10)).await;
    let generator = news_generator(&sim);
    let mut hrefs = Vec::new();
    let mut dates = Vec::new();
    let mut page = 1;
    loop {
        let (status, html) = get_text(&sim, &format!("{NEWS_PATH}?page={page}")).await;
        assert_eq!(status, StatusCode::OK);
        let links = attrs(&html, "ul.don-list li.don-item a.don-link", "href");
        let titles = texts(&html, "ul.don-list li.don-item a.don-link");
        let next = attrs(&html, "nav.pagination a[rel=next]", "href");
        for (i, title) in titles.iter().enumerate() {
            assert_eq!(
                *title,
                generator.article(hrefs.len() as u64 + i as u64).title
            );
        }
        dates.extend(attrs(&html, "li.don-item time.don-date", "datetime"));
        hrefs.extend(links.iter().cloned());
        if next.is_empty() {
            assert_eq!(page, 3);
            assert_eq!(links.len(), 3);
            break;
        }
        assert_eq!(links.len(), 10);
        assert_eq!(next, [format!("?page={}", page + 1)]);
        page += 1;
    }
    let expected: Vec<String> = (0..23).map(|i| article_path(&generator, i)).collect();
    assert_eq!(hrefs, expected);
    assert_eq!(hrefs.iter().collect::<HashSet<_>>().len(), 23);
    let expected_dates: Vec<String> = (0..23)
        .map(|i| generator.published_on(i).format("%Y-%m-%d").to_string())
        .collect();
    assert_eq!(dates, expected_dates);
    assert!(dates.windows(2).all(|pair| pair[0] > pair[1]));

    // The default page is the first; past the end is an empty list.
    let (_, first) = get_text(&sim, NEWS_PATH).await;
    assert_eq!(attrs(&first, "a.don-link", "href"), &hrefs[..10]);
    let (status, past) = get_text(&sim, &format!("{NEWS_PATH}?page=9")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(texts(&past, "li.don-item").is_empty());
    assert_eq!(texts(&past, "ul.don-list").len(), 1);
    let (status, _) = get_text(&sim, &format!("{NEWS_PATH}?page=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn article_pages_show_the_article_and_its_revisions() {
    let sim = start(news_config(30, 10)).await;
    let generator = news_generator(&sim);
    let mut several = false;
    for index in 0..30 {
        let article = generator.article(index);
        let (status, html) = get_text(&sim, &article_path(&generator, index)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            texts(&html, "article.don-article h1.don-title"),
            [article.title.as_str()]
        );
        assert_eq!(
            attrs(&html, "time.don-published", "datetime"),
            [article.published_on.format("%Y-%m-%d").to_string()]
        );
        assert_eq!(
            texts(&html, "time.don-published"),
            [article.published_on.format("%-d %B %Y").to_string()]
        );
        assert_eq!(texts(&html, "dd.don-disease"), [article.disease.as_str()]);
        assert_eq!(texts(&html, "dd.don-countries li"), article.countries);
        several |= article.countries.len() > 1;
        let summary = texts(&html, "section.don-summary p");
        assert_eq!(summary, [article.summary.as_str()]);
        let title = &texts(&html, "h1.don-title")[0];
        assert_eq!(content_hash(title, &summary[0]), article.content_hash);
    }
    assert!(several, "some article has several countries");

    // Not published (yet), or unknown: 404.
    let unpublished = article_path(&generator, 30);
    assert_eq!(get_text(&sim, &unpublished).await.0, StatusCode::NOT_FOUND);
    let unknown = format!("{NEWS_PATH}/item/1999-DON999");
    assert_eq!(get_text(&sim, &unknown).await.0, StatusCode::NOT_FOUND);

    // An edit: same URL, new text, new hash.
    let path = article_path(&generator, 3);
    let (_, before) = get_text(&sim, &path).await;
    assert_eq!(sim.edit_article(3), Some(1));
    assert_eq!(sim.edit_article(3), Some(2));
    assert_eq!(sim.edit_article(30), None);
    let (status, after) = get_text(&sim, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(before, after);
    let edited = generator.edited(3, 2);
    let summary = texts(&after, "section.don-summary p").remove(0);
    let title = texts(&after, "h1.don-title").remove(0);
    assert_eq!(summary, edited.summary);
    assert_eq!(content_hash(&title, &summary), edited.content_hash);
    assert_ne!(edited.content_hash, generator.article(3).content_hash);
    assert_eq!(edited.url, generator.url(3));
    let (_, listing) = get_text(&sim, NEWS_PATH).await;
    assert!(attrs(&listing, "a.don-link", "href").contains(&path));
    assert_eq!(
        sim.manifest()
            .news
            .revisions
            .into_iter()
            .collect::<Vec<_>>(),
        [(3, 2)]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_changed_layout_defeats_the_original_selectors() {
    let sim = start(news_config(12, 5)).await;
    let generator = news_generator(&sim);
    let article = article_path(&generator, 1);
    let original_selectors = [
        "ul.don-list",
        "li.don-item",
        "a.don-link",
        "time.don-date",
        "nav.pagination a[rel=next]",
        "article.don-article",
        "h1.don-title",
        "time.don-published",
        "dd.don-disease",
        "dd.don-countries",
        "section.don-summary p",
    ];
    sim.set_layout_changed(true);
    assert!(sim.manifest().news.layout_changed);
    let (_, listing) = get_text(&sim, NEWS_PATH).await;
    let (_, page) = get_text(&sim, &article).await;
    for css in original_selectors {
        assert!(texts(&listing, css).is_empty(), "{css}");
        assert!(texts(&page, css).is_empty(), "{css}");
    }
    // Same data, new markup.
    assert_eq!(
        attrs(
            &listing,
            "div.sf-item-list a.sf-list-vertical__title",
            "href"
        )[1],
        article
    );
    assert_eq!(
        texts(&page, "div.sf-detail-body-wrapper h2.sf-headline"),
        [generator.article(1).title]
    );
    assert_eq!(
        texts(&page, "div.sf-detail-content p"),
        [generator.article(1).summary]
    );
    sim.set_layout_changed(false);
    let (_, listing) = get_text(&sim, NEWS_PATH).await;
    assert_eq!(texts(&listing, "li.don-item").len(), 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn robots_txt_lists_the_disallowed_prefixes() {
    let mut config = news_config(5, 5);
    config.news.robots_disallow = vec![format!("{NEWS_PATH}/item/2025-"), "/private".into()];
    config.news.crawl_delay_seconds = Some(2.5);
    let sim = start(config).await;
    let response = client()
        .get(format!("{}/robots.txt", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        response.text().await.unwrap(),
        format!(
            "User-agent: *\nDisallow: {NEWS_PATH}/item/2025-\nDisallow: /private\nCrawl-delay: 2.5\n"
        )
    );
    assert_eq!(sim.manifest().requests["robots_txt"], 1);
    sim.shutdown().await;
}

fn rule(endpoint: Endpoint, kind: FaultKind, every: u64, times: Option<u64>) -> FaultRule {
    FaultRule {
        endpoint,
        kind,
        every,
        times,
    }
}

#[tokio::test]
async fn too_many_requests_and_server_errors_on_the_configured_requests() {
    let mut config = with_cases(100);
    config.faults = vec![
        rule(
            Endpoint::Cases,
            FaultKind::TooManyRequests {
                retry_after_seconds: 7,
            },
            2,
            Some(2),
        ),
        rule(
            Endpoint::Who,
            FaultKind::ServerError { status: 503 },
            3,
            None,
        ),
    ];
    let sim = start(config).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = soda_response(&sim, &[("$limit", "1")]).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "7");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 429, 200, 429, 200, 200]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_text(&sim, WHO_CSV_PATH).await.0.as_u16());
    }
    assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
    let manifest = sim.manifest();
    assert_eq!(manifest.faults_injected["too_many_requests"], 2);
    assert_eq!(manifest.faults_injected["server_error"], 2);
    assert_eq!(manifest.faults_injected["reset"], 0);
    assert_eq!(manifest.requests["cases"], 6);
    assert_eq!(manifest.requests["who"], 6);
    let log = sim.request_log();
    let faulted: Vec<(u16, Option<&str>)> = log
        .iter()
        .filter(|r| r.fault.is_some())
        .map(|r| (r.status, r.fault.as_deref()))
        .collect();
    assert_eq!(
        faulted,
        [
            (429, Some("too_many_requests")),
            (429, Some("too_many_requests")),
            (503, Some("server_error")),
            (503, Some("server_error")),
        ]
    );
    assert!(
        log.iter()
            .all(|r| r.user_agent.as_deref() == Some("vigie-test/1"))
    );
    assert!(log.windows(2).all(|pair| pair[0].at <= pair[1].at));
    sim.shutdown().await;
}

#[tokio::test]
async fn truncated_and_reset_responses_fail_on_the_client() {
    let mut config = news_config(5, 5);
    config.faults = vec![
        rule(Endpoint::Who, FaultKind::Truncated, 2, Some(1)),
        rule(Endpoint::NewsArticle, FaultKind::Reset, 1, Some(1)),
    ];
    let sim = start(config).await;
    let url = format!("{}{WHO_CSV_PATH}", sim.base_url());
    let full = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let truncated = client().get(&url).send().await.unwrap();
    assert_eq!(truncated.status(), StatusCode::OK);
    assert_eq!(
        truncated.headers()["content-length"],
        full.len().to_string().as_str()
    );
    assert!(truncated.bytes().await.is_err());
    let again = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, full);

    let article = format!(
        "{}{}",
        sim.base_url(),
        article_path(&news_generator(&sim), 0)
    );
    let reset = match client().get(&article).send().await {
        Ok(response) => response.bytes().await.is_err(),
        Err(_) => true,
    };
    assert!(reset, "the reset response must fail");
    let (status, _) = get_text(&sim, &article_path(&news_generator(&sim), 0)).await;
    assert_eq!(status, StatusCode::OK);
    let manifest = sim.manifest();
    assert_eq!(manifest.faults_injected["truncated"], 1);
    assert_eq!(manifest.faults_injected["reset"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn repeat_rows_start_the_page_early() {
    let mut config = with_cases(1_000);
    config.faults = vec![rule(
        Endpoint::Cases,
        FaultKind::RepeatRows { rows: 5 },
        2,
        Some(1),
    )];
    let sim = start(config).await;
    let page = |offset: &'static str| {
        let sim = &sim;
        async move {
            ids(&soda(
                sim,
                &[("$limit", "10"), ("$offset", offset), ("$select", ":*,*")],
            )
            .await)
        }
    };
    assert_eq!(page("0").await, generator_ids(42, 0..10));
    // Starts 5 rows early, still ends where asked: rows 5..10 come twice.
    assert_eq!(page("10").await, generator_ids(42, 5..20));
    assert_eq!(page("20").await, generator_ids(42, 20..30));
    assert_eq!(sim.manifest().faults_injected["repeat_rows"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_responses_are_late_but_correct() {
    let mut config = with_cases(100);
    config.faults = vec![rule(
        Endpoint::Any,
        FaultKind::Slow { delay_ms: 300 },
        1,
        Some(1),
    )];
    let sim = start(config).await;
    let started = Instant::now();
    let slow = soda_response(&sim, &[("$limit", "20")]).await;
    assert_eq!(slow.status(), StatusCode::OK);
    let slow = slow.bytes().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let normal = soda_response(&sim, &[("$limit", "20")])
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(slow, normal);
    assert_eq!(sim.manifest().faults_injected["slow"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn layout_change_fault_is_sticky() {
    let mut config = news_config(12, 5);
    config.faults = vec![rule(
        Endpoint::NewsListing,
        FaultKind::LayoutChange,
        2,
        None,
    )];
    let sim = start(config).await;
    let (_, first) = get_text(&sim, NEWS_PATH).await;
    assert_eq!(texts(&first, "li.don-item").len(), 5);
    let (_, second) = get_text(&sim, NEWS_PATH).await;
    assert!(texts(&second, "li.don-item").is_empty());
    let (_, third) = get_text(&sim, NEWS_PATH).await;
    assert!(texts(&third, "li.don-item").is_empty());
    let (_, article) = get_text(&sim, &article_path(&news_generator(&sim), 0)).await;
    assert!(texts(&article, "h1.don-title").is_empty());
    let manifest = sim.manifest();
    assert!(manifest.news.layout_changed);
    // Injected on the 2nd listing request; the 3rd was not due.
    assert_eq!(manifest.faults_injected["layout_change"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn control_routes_drive_a_separate_process() {
    let sim = start(news_config(10, 5)).await;
    let http = client();
    let base = sim.base_url().to_owned();
    let generator = news_generator(&sim);

    let manifest: Manifest = http
        .get(format!("{base}/_sim/manifest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest, sim.manifest());
    assert_eq!(manifest.news.articles, 10);
    assert_eq!(manifest.cases.rows_total, 100_000);

    let edit = http
        .post(format!("{base}/_sim/news/2/edit"))
        .send()
        .await
        .unwrap();
    assert_eq!(edit.status(), StatusCode::OK);
    let edit: Value = edit.json().await.unwrap();
    assert_eq!(edit, serde_json::json!({"index": 2, "revision": 1}));
    let (_, page) = get_text(&sim, &article_path(&generator, 2)).await;
    assert_eq!(
        texts(&page, "section.don-summary p"),
        [generator.edited(2, 1).summary]
    );
    let missing = http
        .post(format!("{base}/_sim/news/10/edit"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let layout = |state: &'static str| http.post(format!("{base}/_sim/layout/{state}")).send();
    assert_eq!(layout("changed").await.unwrap().status(), StatusCode::OK);
    assert!(sim.manifest().news.layout_changed);
    assert_eq!(layout("original").await.unwrap().status(), StatusCode::OK);
    assert!(!sim.manifest().news.layout_changed);
    assert_eq!(
        layout("sideways").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );

    let added = http
        .post(format!("{base}/_sim/faults"))
        .header("content-type", "application/json")
        .body(r#"{"endpoint":"cases","kind":"server_error","status":502,"every":1,"times":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    assert_eq!(
        soda_response(&sim, &[("$limit", "1")]).await.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        soda_response(&sim, &[("$limit", "1")]).await.status(),
        StatusCode::OK
    );
    for bad in [
        r#"{"endpoint":"cases","kind":"reset","every":0}"#,
        r#"{"endpoint":"who","kind":"repeat_rows","rows":2,"every":1}"#,
        r#"{"endpoint":"cases","kind":"explode","every":1}"#,
        "not json",
    ] {
        let refused = http
            .post(format!("{base}/_sim/faults"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    let log: Vec<RequestRecord> = http
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log, sim.request_log());
    let paths: Vec<&str> = log.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths[1].starts_with(&format!("{CASES_PATH}?")));
    assert_eq!(log[1].status, 502);
    assert_eq!(log[1].fault.as_deref(), Some("server_error"));
    let manifest = sim.manifest();
    assert_eq!(manifest.requests["news_article"], 1);
    assert_eq!(manifest.requests["cases"], 2);
    assert_eq!(manifest.faults_injected["server_error"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(SimConfig::default()).await;
    let base = sim.base_url().to_owned();
    assert_eq!(get_text(&sim, "/robots.txt").await.0, StatusCode::OK);
    sim.shutdown().await;
    let after = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/robots.txt"))
        .send()
        .await;
    assert!(after.is_err());
}

#[tokio::test]
async fn invalid_configurations_do_not_start() {
    let mut config = SimConfig::default();
    config.who.countries = 1_000;
    let error = Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("who.countries"), "{error}");
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_status_and_faults_by_kind() {
    let mut config = with_cases(100);
    config.faults = vec![rule(
        Endpoint::Cases,
        FaultKind::ServerError { status: 503 },
        2,
        Some(1),
    )];
    let sim = start(config).await;
    let registry = prometheus::Registry::new();
    sim.metrics().register(&registry).unwrap();

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(soda_response(&sim, &[("$limit", "1")]).await.status());
    }
    assert_eq!(statuses, [200, 503, 200]);
    assert_eq!(get_text(&sim, WHO_CSV_PATH).await.0, StatusCode::OK);
    assert_eq!(get_text(&sim, "/nowhere").await.0, StatusCode::NOT_FOUND);
    // The control routes are not upstream traffic: not counted.
    assert_eq!(get_text(&sim, "/_sim/manifest").await.0, StatusCode::OK);

    let m = sim.metrics();
    assert_eq!(m.requests("cases", 200), 2);
    assert_eq!(m.requests("cases", 503), 1);
    assert_eq!(m.requests("who", 200), 1);
    assert_eq!(m.requests("not_found", 404), 1);
    assert_eq!(m.faults_injected(Endpoint::Cases, "server_error"), 1);
    assert_eq!(m.faults_injected(Endpoint::Who, "server_error"), 0);

    // As Prometheus scrapes them.
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    for line in [
        r#"vigie_simulator_requests_total{endpoint="cases",status="200"} 2"#,
        r#"vigie_simulator_requests_total{endpoint="cases",status="503"} 1"#,
        r#"vigie_simulator_requests_total{endpoint="who",status="200"} 1"#,
        r#"vigie_simulator_requests_total{endpoint="not_found",status="404"} 1"#,
        r#"vigie_simulator_faults_injected_total{endpoint="cases",kind="server_error"} 1"#,
        // Kinds that never fired are present at 0, where they apply only.
        r#"vigie_simulator_faults_injected_total{endpoint="cases",kind="repeat_rows"} 0"#,
        r#"vigie_simulator_faults_injected_total{endpoint="news_article",kind="layout_change"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("vigie_simulator_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 5, "the /_sim request is not counted:\n{text}");
    assert!(
        !text.contains(r#"endpoint="who",kind="repeat_rows""#),
        "{text}"
    );
    sim.shutdown().await;
}
