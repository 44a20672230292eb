//! Real-format samples (a SODA page, the WHO daily CSV, outbreak-news
//! pages) parse to the expected typed values; what does not map is refused
//! with a reason naming the field; a changed layout is detected.

use chrono::NaiveDate;
use reqwest::Url;
use vigie_core::health::{AgeGroup, ContentHash, YesNo};
use vigie_producers::sources::who_don::{
    ArticleError, Compiled, Selectors, parse_article, parse_listing,
};
use vigie_producers::sources::{cdc_cases, who_covid, who_don};

const SODA: &[u8] = include_bytes!("fixtures/soda_page.json");
const CSV: &[u8] = include_bytes!("fixtures/who_daily.csv");
const ARTICLE: &str = include_str!("fixtures/don_article.html");
const ARTICLE_NEW_LAYOUT: &str = include_str!("fixtures/don_article_new_layout.html");
const LISTING: &str = include_str!("fixtures/don_listing.html");

#[test]
fn a_soda_page_maps_row_by_row() {
    let page = cdc_cases::parse_page(SODA, "http://x/resource/n8mc-b4w4.json").unwrap();
    assert_eq!(page.rows.len(), 4);
    let first = page.rows[0].case.as_ref().expect("row 0 maps");
    assert_eq!(first.row_id.as_str(), "row-2q7u.hyr6_k9dq");
    assert_eq!(first.case_month.to_string(), "2021-03");
    assert_eq!(first.res_state.as_str(), "CA");
    assert_eq!(first.state_fips_code.as_ref().unwrap().as_str(), "6");
    assert_eq!(first.res_county.as_deref(), Some("LOS ANGELES"));
    assert_eq!(first.county_fips_code.as_ref().unwrap().as_str(), "6037");
    assert_eq!(first.age_group, AgeGroup::Age18To49);
    assert_eq!(first.case_positive_specimen_interval, Some(0));
    assert_eq!(first.case_onset_interval, None);
    assert_eq!(first.hosp_yn, YesNo::No);
    assert_eq!(
        page.rows[0].updated_at.as_deref(),
        Some("2024-01-01T00:00:00.000")
    );

    // Suppressed geography (`NA`), a negative interval, no state FIPS.
    let second = page.rows[1].case.as_ref().expect("row 1 maps");
    assert_eq!(second.res_county, None);
    assert_eq!(second.county_fips_code, None);
    assert_eq!(second.state_fips_code, None);
    assert_eq!(second.case_onset_interval, Some(-1));
    assert_eq!(second.death_yn, YesNo::Yes);

    // An impossible month is refused, naming the field.
    let (reason, error) = page.rows[2].case.as_ref().unwrap_err();
    assert_eq!(*reason, "invalid_value");
    assert!(error.starts_with("case_month:"), "{error}");
    // A number where SODA writes strings: the row is refused alone, its
    // watermark still read.
    let (reason, error) = page.rows[3].case.as_ref().unwrap_err();
    assert_eq!(*reason, "bad_row");
    assert!(
        error.contains("case_month") || error.contains("string"),
        "{error}"
    );
    assert_eq!(
        page.rows[3].updated_at.as_deref(),
        Some("2024-01-01T00:00:00.003")
    );
    assert!(page.rows[3].raw.starts_with(b"{\":id\":\"row-q3mb"));
}

#[test]
fn a_page_that_is_not_a_json_array_is_an_error_naming_the_url() {
    let err = cdc_cases::parse_page(b"<html>busy</html>", "http://x/p")
        .err()
        .expect("not a page");
    assert!(
        err.to_string().starts_with("http://x/p: not a SODA page"),
        "{err}"
    );
}

#[test]
fn the_who_csv_maps_line_by_line() {
    let lines = who_covid::parse_csv(CSV, "http://x/who.csv").unwrap();
    assert_eq!(lines.len(), 6);
    let rows: Vec<_> = lines.iter().map(|l| l.row.as_ref()).collect();
    let af = rows[0].unwrap();
    assert_eq!(
        af.date_reported,
        NaiveDate::from_ymd_opt(2020, 1, 5).unwrap()
    );
    assert_eq!(af.country_code.as_str(), "AF");
    assert_eq!(af.new_cases, None, "a blank cell is no figure, not zero");
    assert_eq!(af.cumulative_cases, 0);
    let bo = rows[1].unwrap();
    assert_eq!(bo.country, "Bolivia (Plurinational State of)");
    assert_eq!(bo.new_cases, Some(3));
    let cd = rows[2].unwrap();
    assert_eq!(cd.country, "Congo, Democratic Republic of the");
    assert_eq!(cd.new_cases, Some(-2), "a correction");
    assert_eq!(cd.cumulative_deaths, 1);
    let error = rows[3].unwrap_err();
    assert!(error.contains("WHO_region"), "{error}");
    assert_eq!(
        &CSV[lines[3].bytes.clone()],
        b"2020-01-05,XX,Nowhere,MOON,1,1,0,0\n"
    );
    // WHO's own code of an entity that is not a country.
    let vessel = rows[4].unwrap();
    assert_eq!(vessel.country_code.as_str(), "XXX");
    assert_eq!(vessel.country, "International commercial vessel");
    assert_eq!(vessel.who_region.as_str(), "OTHER");
    assert_eq!(vessel.cumulative_cases, 712);
    let error = rows[5].unwrap_err();
    assert!(
        error.contains("country code") && error.contains("XYZW"),
        "{error}"
    );
}

#[test]
fn a_csv_with_another_header_is_refused_whole() {
    let err = who_covid::parse_csv(b"date,code\n2020-01-01,AF\n", "http://x/who.csv")
        .expect_err("wrong header");
    let msg = err.to_string();
    assert!(msg.contains("unexpected CSV header `date,code`"), "{msg}");
}

/// The version of an article's content ignores the page around it and
/// follows what the selectors read.
#[test]
fn an_articles_version_is_its_content_not_its_page() {
    let s = Compiled::new(&Selectors::default()).unwrap();
    let v = who_don::article_version(ARTICLE, &s);
    let chrome = ARTICLE.replacen("<head>", "<head><meta name=\"csrf\" content=\"a1b2\">", 1);
    assert_ne!(chrome, ARTICLE);
    assert_eq!(who_don::article_version(&chrome, &s), v);
    let title = ARTICLE.replacen("don-title\">", "don-title\">Updated: ", 1);
    assert_ne!(title, ARTICLE);
    assert_ne!(who_don::article_version(&title, &s), v);
}

#[test]
fn an_article_page_parses_to_its_fields_and_hash() {
    let s = Compiled::new(&Selectors::default()).unwrap();
    let url = Url::parse("http://sim/emergencies/disease-outbreak-news/item/2025-DON570").unwrap();
    let news = parse_article(ARTICLE, &url, &s).unwrap();
    assert_eq!(news.url.as_str(), url.as_str());
    assert_eq!(news.title, "Cholera \u{2013} Chad");
    assert_eq!(
        news.published_on,
        NaiveDate::from_ymd_opt(2025, 6, 12).unwrap()
    );
    assert_eq!(news.disease, "Cholera");
    assert_eq!(news.countries, ["Chad", "Cameroon"]);
    assert_eq!(
        news.summary,
        "Between 1 and 10 June 2025, 312 suspected cases & 7 deaths were reported."
    );
    assert_eq!(
        news.content_hash,
        ContentHash::of_article(&news.title, &news.summary)
    );
}

#[test]
fn a_changed_layout_is_detected_not_parsed_into_garbage() {
    let s = Compiled::new(&Selectors::default()).unwrap();
    let url = Url::parse("http://sim/item/2025-DON570").unwrap();
    match parse_article(ARTICLE_NEW_LAYOUT, &url, &s) {
        Err(ArticleError::Layout(msg)) => assert!(msg.contains("title"), "{msg}"),
        other => panic!("expected a layout error, got {other:?}"),
    }
    let listing = parse_listing(ARTICLE_NEW_LAYOUT, &url, &s);
    assert!(listing.articles.is_empty() && listing.next.is_none());
}

#[test]
fn a_listing_gives_absolute_article_urls_and_the_next_page() {
    let s = Compiled::new(&Selectors::default()).unwrap();
    let page = Url::parse("http://sim/emergencies/disease-outbreak-news/").unwrap();
    let listing = parse_listing(LISTING, &page, &s);
    let urls: Vec<&str> = listing.articles.iter().map(Url::as_str).collect();
    assert_eq!(
        urls,
        [
            "http://sim/emergencies/disease-outbreak-news/item/2025-DON570",
            "http://sim/emergencies/disease-outbreak-news/item/2025-DON569",
        ]
    );
    assert_eq!(
        listing.next.unwrap().as_str(),
        "http://sim/emergencies/disease-outbreak-news/?page=2"
    );
}

#[test]
fn a_bad_selector_is_a_configuration_error_naming_it() {
    let bad = Selectors {
        title: "h1[".into(),
        ..Selectors::default()
    };
    let err = Compiled::new(&bad).unwrap_err().to_string();
    assert!(err.contains("options.selectors.title"), "{err}");
}

#[test]
fn an_article_about_several_regions_lists_no_country() {
    let s = Compiled::new(&Selectors::default()).unwrap();
    let url = Url::parse("http://sim/item/2025-DON021").unwrap();
    let html = ARTICLE.replace("<li>Chad</li><li>Cameroon</li>", "");
    let news = parse_article(&html, &url, &s).expect("a valid article");
    assert!(news.countries.is_empty());
}
