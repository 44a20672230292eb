//! What the source parser targets assert: the bytes an upstream serves
//! (a SODA page, the WHO daily CSV, a Disease Outbreak News page) never
//! panic a source, and each parser keeps its own promises.

use vigie_core::health::ContentHash;
use vigie_producers::sources::cdc_cases;
use vigie_producers::sources::who_covid;
use vigie_producers::sources::who_don::{self, Compiled, Selectors};

use crate::text;

/// The SODA page parser: the one-pass parse a poll tries first and the
/// row-by-row parse agree. When every row maps, the one pass gives the
/// same rows (case, `:updated_at`, `:id`); it gives none exactly when a row
/// does not map or the body is no page.
pub fn check_soda_page(bytes: &[u8]) {
    let url = "http://fuzz/resource/n8mc-b4w4.json";
    let rows = cdc_cases::parse_page(bytes, url);
    let fast = cdc_cases::parse_page_one_pass(bytes);
    match (rows, fast) {
        (Ok(page), Some(fast)) => {
            assert_eq!(page.rows.len(), fast.rows.len(), "\n{}", text(bytes));
            for (slow, fast) in page.rows.iter().zip(&fast.rows) {
                let case = slow.case.as_ref().unwrap_or_else(|e| {
                    panic!("one pass maps a row refused alone ({e:?})\n{}", text(bytes))
                });
                assert_eq!(Some(case), fast.case.as_ref().ok(), "\n{}", text(bytes));
                assert_eq!(slow.updated_at, fast.updated_at, "\n{}", text(bytes));
                assert_eq!(slow.id, fast.id, "\n{}", text(bytes));
            }
        }
        (Ok(page), None) => assert!(
            page.rows.iter().any(|r| r.case.is_err()),
            "every row maps, yet no one-pass page\n{}",
            text(bytes)
        ),
        (Err(_), Some(_)) => panic!("a one-pass page of a body that is no page\n{}", text(bytes)),
        (Err(_), None) => {}
    }
}

/// The WHO CSV parser: each line's bytes lie in the body, in order, and a
/// line parsed alone (after the header) gives the same row: no line's
/// reading depends on another's.
pub fn check_who_csv(bytes: &[u8]) {
    let url = "http://fuzz/who.csv";
    let Ok(lines) = who_covid::parse_csv(bytes, url) else {
        return;
    };
    let header = who_covid::HEADER.join(",") + "\n";
    let mut end = 0;
    for line in &lines {
        assert!(
            end <= line.bytes.start && line.bytes.start <= line.bytes.end && line.bytes.end <= bytes.len(),
            "line bytes {:?} after {end} in {} bytes\n{}",
            line.bytes,
            bytes.len(),
            text(bytes)
        );
        end = line.bytes.end;
        let mut alone = header.clone().into_bytes();
        alone.extend_from_slice(&bytes[line.bytes.clone()]);
        let again = who_covid::parse_csv(&alone, url).expect("the header is the file's");
        match (&line.row, again.as_slice()) {
            (Ok(row), [one]) => assert_eq!(
                Some(row),
                one.row.as_ref().ok(),
                "\n{}",
                text(&alone)
            ),
            (Err(_), [] | [_]) => {}
            (row, again) => panic!(
                "{row:?} parses alone to {} rows\n{}",
                again.len(),
                text(&alone)
            ),
        }
    }
}

/// The scraper's extraction, of a listing and of an article: an article's
/// content hash is the one of its title and summary, and its
/// title and disease are not blank.
pub fn check_don_html(bytes: &[u8]) {
    use std::sync::OnceLock;
    static SELECTORS: OnceLock<Compiled> = OnceLock::new();
    let selectors =
        SELECTORS.get_or_init(|| Compiled::new(&Selectors::default()).expect("the defaults compile"));
    let html = String::from_utf8_lossy(bytes);
    let page = url::Url::parse("https://fuzz.example/emergencies/disease-outbreak-news/item/x")
        .expect("a URL");
    // A listing: any links, or none; never a panic.
    let _ = who_don::parse_listing(&html, &page, selectors);
    if let Ok(news) = who_don::parse_article(&html, &page, selectors) {
        assert_eq!(
            news.content_hash,
            ContentHash::of_article(&news.title, &news.summary),
            "\n{html}"
        );
        assert!(!news.title.trim().is_empty() && !news.disease.trim().is_empty(), "\n{html}");
    }
}
